//! `opencode`: opencode sessions, from a running opencode server's event stream.
//!
//! - [`sse`]: a bounded Server-Sent Events parser (memory never grows past the event limit);
//! - [`translate`]: opencode bus events -> `AgentEvent`, pure and fuzzed;
//! - [`adapter`]: the plugin that follows `<url>/event` and reconnects with backoff.

pub mod adapter;
pub mod sse;
pub mod translate;

pub use adapter::{OpencodeAdapter, OpencodeConfig, OpencodeStats};
pub use translate::{EventError, Translation, parse, parse_statuses, translate};

atm_core::register_plugin! {
    adapter "opencode",
    description: "opencode sessions from a running opencode server's SSE event stream",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(OpencodeAdapter::from_config(cfg)?)),
}
