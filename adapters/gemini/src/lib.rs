//! `gemini`: Gemini CLI hook events as atm sessions (harness `gemini`).
//!
//! Gemini CLI runs `atm-hook --agent gemini` for each hook event configured in its
//! `settings.json`; the hook JSON reaches this adapter on the shared ingest socket.
//!
//! - [`translate`]: the pure translator (every documented Gemini hook event);
//! - [`adapter`]: the plugin that serves the `hook_event:gemini` route.

pub mod adapter;
pub mod translate;

pub use adapter::{GeminiAdapter, GeminiConfig, GeminiStats};
pub use translate::{Translation, translate};

atm_core::register_plugin! {
    adapter "gemini",
    description: "Gemini CLI hook events (BeforeTool, Notification ToolPermission, AfterAgent, ...) sent by atm-hook",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(GeminiAdapter::from_config(cfg)?)),
}
