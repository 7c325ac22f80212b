//! `opencode`: opencode sessions, from a running opencode server's event stream.
//!
//! - [`sse`]: a bounded Server-Sent Events parser (memory never grows past the event limit);
//! - [`translate`]: opencode bus events -> `AgentEvent`, pure and fuzzed;
//! - [`discover`]: an opencode process's listening port and pane, from `/proc`;
//! - `server`: following one server (stream, resynchronisation, the end of its sessions);
//! - `url`: where a server's event stream is; [`stats`]: the adapter's counters;
//! - [`adapter`]: the plugin: a configured `url`, or the servers of the opencode processes found.

pub mod adapter;
mod answer;
pub mod discover;
mod server;
pub mod sse;
pub mod stats;
pub mod translate;
mod url;

pub use adapter::{OpencodeAdapter, OpencodeConfig};
pub use stats::OpencodeStats;
pub use translate::{
    EventError, ListedSession, Translation, parse, parse_pending, parse_sessions, parse_statuses,
    translate,
};

atm_core::register_plugin! {
    adapter "opencode",
    description: "opencode sessions from a running opencode server's SSE event stream",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(OpencodeAdapter::from_config(cfg)?)),
}
