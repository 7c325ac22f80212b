//! `gemini`: Gemini CLI hook events as atm sessions (harness `gemini`).
//!
//! Gemini CLI runs `atm-hook --agent gemini` for each hook event configured in its
//! `settings.json`; `atm-hook` adds the Gemini PID and `$TMUX_PANE`, sends the JSON as a
//! `hook_event` with `"agent":"gemini"` (routed to `hook_event:gemini`) and prints nothing
//! (Gemini reads a hook's stdout as its decision, so it must stay silent).
//!
//! This crate is a translator: [`translate`] is the pure mapping of every documented Gemini
//! hook event; [`GeminiHooks`] hands it to atm-core's generic ingest adapter, which serves the
//! route, resolves the process identity, applies to the registry and counts. Beside it,
//! atm-core's pane watcher reads the panes of active Gemini sessions ([`screen::SCREEN`]), for the moves Gemini fires no
//! hook for (an approval answered, Esc), and reports what they show as discovery hints.

pub mod screen;
pub mod translate;

use atm_core::model::Harness;

pub use translate::translate;

atm_core::translator! {
    /// Gemini CLI's hook events, for the generic ingest adapter, and its pane's screen.
    pub struct GeminiHooks as "gemini", adapter GeminiAdapter;
    harness: Harness::GEMINI, agent: "Gemini CLI",
    routes: &["hook_event:gemini"],
    description: "Gemini CLI hook events (BeforeTool, Notification ToolPermission, AfterAgent, ...) sent by atm-hook, and its pane's screen for what no hook tells",
    screen: screen::SCREEN,
    translate: |msg| translate(msg.data()),
}
