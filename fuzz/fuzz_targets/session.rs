//! A session whose text fields are cut from the fuzzer's bytes (split at 0x1F, each piece
//! converted lossily, as the wire decoder would), shared by the renderer targets. The fields are
//! filled by atm-core's `testing::text::session_with_texts`, as the renderers' property tests
//! fill them.

use atm_core::AgentState;
use atm_core::testing::text::session_with_texts;

pub fn from_bytes(data: &[u8]) -> atm_core::Session {
    let mut parts = data
        .split(|&b| b == 0x1F)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = move || parts.next();
    let harness = next().unwrap_or_default();
    let id = next().unwrap_or_default();
    let state = match data.first().map(|b| b % 5) {
        Some(0) => AgentState::Starting,
        Some(1) => AgentState::Working,
        Some(2) => AgentState::NeedsPermission,
        Some(3) => AgentState::NeedsInput,
        _ => AgentState::Idle,
    };
    session_with_texts(harness, id, state, next)
}
