//! A session whose text fields are cut from the fuzzer's bytes (split at 0x1F, each piece
//! converted lossily, as the wire decoder would), shared by the renderer targets.

use atm_core::{AgentState, Attention, Harness, Session, SessionId, SessionKey};

pub fn from_bytes(data: &[u8]) -> Session {
    let mut parts = data
        .split(|&b| b == 0x1F)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = || parts.next();
    let harness = Harness::new(next().unwrap_or_default());
    let id = next().unwrap_or_default();
    let key = SessionKey::Id {
        harness,
        id: SessionId::new(id.clone()),
    };
    let at = atm_core::chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let mut s = Session::new(key, SessionId::new(id), None, "fuzz", at);
    s.state = match data.first().map(|b| b % 5) {
        Some(0) => AgentState::Starting,
        Some(1) => AgentState::Working,
        Some(2) => AgentState::NeedsPermission,
        Some(3) => AgentState::NeedsInput,
        _ => AgentState::Idle,
    };
    s.cwd = next();
    s.git.project_root = next();
    s.git.branch = next();
    s.tmux_pane = next();
    s.model_name = next();
    s.activity = next();
    s.first_prompt = next();
    s.last_error = next();
    let (tool, detail) = (next(), next());
    s.attention = next().map(|reason| Attention {
        reason,
        tool,
        detail,
        subagent_id: None,
    });
    s
}
