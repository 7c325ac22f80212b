//! `gemini`: Gemini CLI hook events as atm sessions (harness `gemini`).
//!
//! Gemini CLI runs `atm-hook --agent gemini` for each hook event configured in its
//! `settings.json`; `atm-hook` adds the Gemini PID and `$TMUX_PANE`, sends the JSON as a
//! `hook_event` with `"agent":"gemini"` (routed to `hook_event:gemini`) and prints nothing
//! (Gemini reads a hook's stdout as its decision, so it must stay silent).
//!
//! This crate is a translator: [`translate`] is the pure mapping of every documented Gemini
//! hook event; [`GeminiHooks`] hands it to atm-core's generic ingest adapter, which serves the
//! route, resolves the process identity, applies to the registry and counts.

pub mod translate;

use atm_core::ingest::IngestMessage;
use atm_core::ingest_adapter::{Translation, Translator};
use atm_core::model::Harness;
use atm_core::protocol::WireError;

pub use translate::translate;

/// Gemini CLI's hook events, for the generic ingest adapter.
#[derive(Debug, Default)]
pub struct GeminiHooks;

impl Translator for GeminiHooks {
    const ROUTES: &'static [&'static str] = &["hook_event:gemini"];
    const HARNESS: &'static str = Harness::GEMINI;
    const AGENT: &'static str = "Gemini CLI";

    fn translate(&self, msg: &IngestMessage) -> Result<Translation, WireError> {
        translate(msg.data())
    }
}

atm_core::register_translator! {
    "gemini", GeminiHooks,
    adapter: GeminiAdapter,
    description: "Gemini CLI hook events (BeforeTool, Notification ToolPermission, AfterAgent, ...) sent by atm-hook",
    sample_config: include_str!("../sample.toml"),
}
