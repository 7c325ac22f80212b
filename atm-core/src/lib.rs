//! atm-core: what every part of atm shares.
//!
//! - [`model`]: sessions, identity, states, usage; [`view`]: the wire view clients read.
//! - [`event`]: the agent-neutral `AgentEvent` vocabulary adapters translate into.
//! - [`state`]: the state machine as pure functions: the transition, what an event does to a
//!   record, re-keying. [`limits`]: what one session may hold,
//!   enforced by [`sanitize`].
//! - [`registry`]: the actor that owns every session, and its cheap `RegistryHandle`.
//! - [`plugin`]: the `InputAdapter` / `OutputSink` traits and `register_plugin!`.
//! - [`registry_follow`], [`coalesce`]: how a sink follows the registry (snapshot, changes, resync) and
//!   the bounded latest-per-key queue between it and anything slower; [`sink_stats`]: the
//!   counters a sink shows of its progress and its outages; [`session_table`]: the latest
//!   version of every session, in registry order, for sinks that fan changes out.
//! - [`protocol`], [`ingest`], [`control`], [`paths`], [`process`], [`persist`], [`text`]:
//!   the wire format, the shared ingest socket, sink-to-adapter requests, file locations,
//!   process identity, snapshots and text cutting; [`unix_socket`]: private sockets and peer
//!   checks for every listener.
//! - [`ingest_adapter`]: the one adapter every hook-style agent uses; an agent supplies a
//!   [`ingest_adapter::Translator`]. [`fields`]: the lenient JSON field readers translators share.
//! - [`lines`], [`follow`], [`ready`]: for adapters whose input is not the ingest socket:
//!   bounded line reading, following a growing file, and saying "I am serving".
//!
//! - [`tmux`]: where a session's pane is, whether it is watched, and taking the user there
//!   (`atmctl focus`, notify's Focus action and tmux marks share it).
//! - [`trust`]: the check every client makes before talking to a daemon socket.
//! - [`redact`]: agent-supplied text made safe to show people: display-changing characters
//!   neutralised, secrets masked.
//!
//! Plugin crates depend on this crate only.

pub mod coalesce;
pub mod control;
pub mod duration;
pub mod event;
pub mod fields;
pub mod fleet;
pub mod follow;
pub mod host;
pub mod ingest;
pub mod ingest_adapter;
pub mod limits;
pub mod lines;
pub mod liveness;
pub mod model;
pub mod paths;
pub mod persist;
pub mod plugin;
pub mod process;
pub mod protocol;
pub mod ready;
pub mod redact;
pub mod registry;
pub mod registry_follow;
pub mod request;
pub mod sanitize;
pub mod screen;
pub mod session_table;
pub mod sink_stats;
pub mod state;
pub mod text;
pub mod timer;
pub mod tmux;
pub mod trust;
pub mod unix_socket;
pub mod view;
pub mod warn_rate;

#[cfg(feature = "testing")]
pub mod testing;

/// A plain session for this crate's unit tests.
#[cfg(test)]
pub(crate) fn testing_session() -> model::Session {
    let key = model::SessionKey::Id {
        harness: model::Harness::claude(),
        id: model::SessionId::new("t"),
    };
    model::Session::new(
        key,
        model::SessionId::new("t"),
        None,
        "test",
        chrono::Utc::now(),
    )
}

// Re-exported for `register_plugin!` and for plugin crates, so they need no direct dependency.
pub use async_trait::async_trait;
pub use chrono;
pub use inventory;
pub use serde;
pub use serde_json;
pub use tokio;
pub use tokio_util;
pub use toml;
pub use tracing;

pub use event::{AgentEvent, EventEnvelope, EventSource, StartSource};
pub use host::HostId;
pub use model::{
    AgentState, Attention, Harness, ProcessIdentity, Session, SessionId, SessionKey, Usage,
    UsageUpdate,
};
pub use plugin::{AdapterContext, ConfigError, InputAdapter, OutputSink, PluginError, SinkContext};
pub use registry::{
    ApplyOutcome, Discovered, Registry, RegistryConfig, RegistryError, RegistryHandle,
    RequestChanges, SessionChange, SessionEvent, Snapshot,
};
pub use sink_stats::SinkStats;
pub use view::SessionView;
