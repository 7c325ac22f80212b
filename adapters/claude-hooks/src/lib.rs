//! `claude-hooks`: Claude Code hook events as atm sessions.
//!
//! Claude Code runs `atm-hook` for each hook event; `atm-hook` adds the Claude PID and
//! `$TMUX_PANE` and sends the JSON to the ingest socket as a protocol-v1 `hook_event`. This
//! crate translates those payloads into agent-neutral `AgentEvent`s:
//!
//! - [`translate`]: the pure translator (every event of `claude-code.md`, fuzzed);
//! - [`adapter`]: the plugin that serves the `hook_event` routes on the shared ingest socket;
//! - [`fields`]: lenient field access, shared with the `claude-statusline` adapter.

pub mod adapter;
pub mod fields;
pub mod translate;

pub use adapter::{ClaudeHooksAdapter, ClaudeHooksConfig, HookStats};
pub use translate::{Translation, translate};

atm_core::register_plugin! {
    adapter "claude-hooks",
    description: "Claude Code hook events (PermissionRequest, Stop, ...) sent by atm-hook",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(ClaudeHooksAdapter::from_config(cfg)?)),
}
