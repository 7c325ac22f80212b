//! `pi`: the pi coding agent's sessions, from atm's pi extension.
//!
//! pi (`@mariozechner/pi-coding-agent`) has no hook programs; it has an extension API. atm's pi
//! extension (`extension/atm.ts`, installed by `atmctl setup pi`) subscribes to pi's events and
//! sends what atm needs over a persistent connection to the ingest socket as protocol-v1
//! `pi_event` messages.
//!
//! This crate is a translator: [`translate`] is the pure mapping of every event the extension
//! forwards (fuzzed); [`PiEvents`] hands it to atm-core's generic ingest adapter, which serves
//! the routes, answers `connect`/`ping`, resolves the process identity, applies and counts.

pub mod translate;

use atm_core::fields;
use atm_core::model::Harness;

pub use translate::{translate, translate_from};

atm_core::translator! {
    /// The pi extension's events, for the generic ingest adapter.
    pub struct PiEvents as "pi", adapter PiAdapter;
    harness: Harness::PI, agent: "pi",
    /// `pi_event`, and `pi_event:pi` for a client that sets `"agent":"pi"`.
    routes: &["pi_event", "pi_event:pi"],
    description: "pi coding agent events (pi_event) sent by atm's pi extension (atmctl setup pi)",
    // The extension runs inside pi, so the connection's peer is the pi process: its PID is
    // the fallback for an envelope that names none.
    translate: |msg| fields::data(&msg.raw.body, "the pi extension's event envelope")
        .and_then(|data| translate_from(data, msg.peer.pid)),
}
