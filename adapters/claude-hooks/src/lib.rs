//! `claude-hooks`: Claude Code hook events as atm sessions.
//!
//! Claude Code runs `atm-hook` for each hook event; `atm-hook` adds the Claude PID and
//! `$TMUX_PANE` and sends the JSON to the shared ingest socket as a protocol-v1 `hook_event`
//! (by default `hooks.sock`, shared with the status-line adapter).
//!
//! This crate is a translator: [`translate`] is the pure mapping of every event of
//! `claude-code.md` (fuzzed); [`ClaudeHooks`] hands it to atm-core's generic ingest adapter,
//! which serves the routes, resolves the process identity, applies to the registry and counts.

mod background;
pub mod suggestions;
pub mod translate;

use atm_core::fields;
use atm_core::model::Harness;

pub use translate::{translate, translate_object};

atm_core::translator! {
    /// Claude Code's hook events, for the generic ingest adapter.
    pub struct ClaudeHooks as "claude-hooks", adapter ClaudeHooksAdapter;
    harness: Harness::CLAUDE, agent: "Claude Code",
    /// `hook_event` (what `atm-hook` sends), and `hook_event:claude`, where a client that sets
    /// `"agent":"claude"` is routed.
    routes: &["hook_event", "hook_event:claude"],
    description: "Claude Code hook events (PermissionRequest, Stop, ...) sent by atm-hook",
    // atm-hook waits on `PermissionRequest` and prints the decision made through atm.
    answerable: true,
    translate: |msg| fields::data_object(&msg.raw.body, "Claude's hook JSON").and_then(translate_object),
}
