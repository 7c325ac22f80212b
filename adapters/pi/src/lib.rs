//! `pi`: the pi coding agent's sessions, from atm's pi extension.
//!
//! pi (`@mariozechner/pi-coding-agent`) has no hook programs; it has an extension API. The
//! `pi-atm` extension published with `atm` 0.2.3+ subscribes to pi's events and sends each one
//! over a persistent connection to the ingest socket as a protocol-v1 `pi_event` message:
//!
//! - [`translate`]: the pure translator (every event the extension forwards, fuzzed);
//! - [`adapter`]: the plugin that serves the `pi_event` route on the shared ingest socket.

pub mod adapter;
pub mod translate;

pub use adapter::{PiAdapter, PiConfig, PiStats};
pub use translate::{Translation, translate, translate_from};

atm_core::register_plugin! {
    adapter "pi",
    description: "pi coding agent events (pi_event) sent by the pi-atm extension",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(PiAdapter::from_config(cfg)?)),
}
