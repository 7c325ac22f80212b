//! `codex`: Codex CLI sessions from its hooks and its `notify` program (harness `codex`).
//!
//! Codex runs `atm-hook --agent codex` for each hook in `~/.codex/hooks.json` (JSON on stdin)
//! and `atm-hook --agent codex --notify <json>` as its `notify` program (JSON as the argument);
//! either way `atm-hook` adds the Codex PID and `$TMUX_PANE` and sends a `hook_event` with
//! `"agent":"codex"`, which the ingest hub routes to `hook_event:codex`. A client may also send
//! a notify payload as `{"type":"codex_notify","data":{...}}`.
//!
//! This crate is a translator: [`translate`] is the pure mapping of both payload shapes;
//! [`CodexHooks`] hands it to atm-core's generic ingest adapter, which serves the routes,
//! resolves the process identity, applies to the registry and counts. Beside it, atm-core's
//! pane watcher reads a starting Codex's pane ([`screen::SCREEN`]): Codex fires no hook while
//! it waits at its first prompt.

pub mod screen;
pub mod translate;

use atm_core::model::Harness;

pub use translate::translate;

atm_core::translator! {
    /// Codex's hook and notify payloads, for the generic ingest adapter.
    pub struct CodexHooks as "codex", adapter CodexAdapter;
    harness: Harness::CODEX, agent: "Codex",
    /// `hook_event` with `"agent":"codex"` (hooks and notify through `atm-hook`), and
    /// `codex_notify` for a client that sends a notify payload under its own type.
    routes: &["hook_event:codex", "codex_notify"],
    description: "Codex CLI hook events and notify turn completions sent by atm-hook, and its pane's screen while it starts",
    screen: screen::SCREEN,
    translate: |msg| translate(msg.data()),
}
