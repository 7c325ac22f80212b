//! `codex`: Codex CLI sessions from its Claude-style hooks and its `notify` program (harness
//! `codex`).
//!
//! - [`translate`]: the pure translator. Hooks reuse `adapter-claude-hooks`' translator (Codex
//!   copied Claude Code's hook contract); the notify payload (`agent-turn-complete`) is mapped
//!   here.
//! - [`adapter`]: the plugin that serves `hook_event:codex` and `codex_notify` on the shared
//!   ingest socket.

pub mod adapter;
pub mod translate;

pub use adapter::{CodexAdapter, CodexConfig, CodexStats};
pub use translate::translate;

atm_core::register_plugin! {
    adapter "codex",
    description: "Codex CLI hook events and notify turn completions sent by atm-hook",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(CodexAdapter::from_config(cfg)?)),
}
