//! The shared ingest socket (`hooks.sock`).
//!
//! Agents' hook clients (`atm-hook`, the original bash hook, other agents' hooks) all write to
//! one socket so that no client needs configuration. Several adapters can serve it: each
//! attaches to a path with the message routes it handles (`hook_event`, `status_update`,
//! `hook_event:codex`, `pi_event`, ...). The first attachment binds the socket; the last one to
//! go removes it. A message whose top-level `agent` field is set routes to `type:agent`.
//!
//! Every connection is checked with `SO_PEERCRED` (other users are refused), lines are capped at
//! 1 MiB while reading, a connection that sends nothing for 10 s is closed, and one that then
//! goes quiet for the idle timeout (60 s by default) is closed unless it said `connect` (a
//! persistent client such as the pi extension). The number of open connections is bounded:
//! when full, the persistent connection quiet the longest makes room, else the newcomer gets
//! `too_many_clients`, logged at warn once a minute with the fix (`slots`). Messages on
//! one connection are handled in order; connections never wait on each other. Each connection
//! reads ahead of the message being handled (at most 4096 messages, and 16 MiB of lines across
//! the whole socket), so a burst lands at once while memory stays bounded; past the budget,
//! reading pauses: the kernel's socket buffer, then the writer, waits.
//!
//! The parts: [`IngestHub`] (`hub`) binds sockets and keeps each one's route table;
//! `connection` serves one accepted connection (read ahead, decode, route, reply);
//! [`IngestStats`] (`stats`) are the counters adapters keep. Binding privately and checking
//! peers are general Unix-socket helpers ([`crate::unix_socket`]). This module knows nothing of
//! plugins: the generic adapter on top of it is [`crate::ingest_adapter`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::protocol::{RawMessage, ServerMessage, WireError};

mod connection;
mod hub;
mod slots;
mod stats;

pub use crate::unix_socket::Peer;
pub use hub::{IngestAttachment, IngestHub};
pub use stats::{IngestStats, IngestStatsBoard};

/// One accepted ingest message.
#[derive(Debug, Clone)]
pub struct IngestMessage {
    pub raw: RawMessage,
    pub peer: Peer,
    /// Cancelled when the client's side of the connection is gone (it closed or died): a
    /// handler that waits on the client's behalf (for a decision) stops then.
    pub client_gone: tokio_util::sync::CancellationToken,
}

impl IngestMessage {
    /// True when the client waits for a decision on the request its event opens
    /// (`"await_decision": true`, protocol 1.1): it gets a `decision` or `request_closed`.
    pub fn awaits_decision(&self) -> bool {
        self.raw.body.get("await_decision") == Some(&serde_json::Value::Bool(true))
    }

    /// True when the client asked for an answer (`"want_reply": true`), e.g. the session's view.
    pub fn wants_reply(&self) -> bool {
        self.raw.body.get("want_reply") == Some(&serde_json::Value::Bool(true))
    }

    /// The message's `data` (the agent's payload), `null` when it has none: a translator then
    /// refuses a missing payload the way it refuses a malformed one.
    pub fn data(&self) -> &serde_json::Value {
        static NULL: serde_json::Value = serde_json::Value::Null;
        self.raw.body.get("data").unwrap_or(&NULL)
    }
}

/// What an adapter implements to serve routes on the ingest socket.
#[async_trait]
pub trait IngestHandler: Send + Sync + 'static {
    /// Handles one message. `Ok(Some(reply))` is written back (e.g. the session's view, for a
    /// client that asked for it); an error is sent back as an `error` line. Either way the
    /// connection stays open.
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError>;
}

/// Route -> handler, for one socket: filled by the hub, read by each connection.
type Routes =
    std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<dyn IngestHandler>>>;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another process is already serving {path}; stop the other atmd or configure a different socket"
    )]
    InUse { path: PathBuf },
    #[error("route `{route}` on {path} is already served by another adapter")]
    RouteTaken { route: String, path: PathBuf },
}

/// Limits for one ingest socket.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Open connections at most; when full, the persistent connection quiet the longest makes
    /// room, else a newcomer gets `too_many_clients`.
    pub max_connections: usize,
    pub first_message_timeout: Duration,
    /// A connection that has not said `connect` is closed after this long without a complete
    /// line (after its first one).
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Messages one connection may have read ahead of the one being handled.
    pub read_ahead_messages: usize,
    /// Bytes of read-ahead lines across all connections of one socket (at least `MAX_LINE`).
    pub read_ahead_bytes: usize,
}

impl IngestLimits {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// A minute: far more than any hook client needs between two lines, short enough that
    /// abandoned connections give their slots back soon.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            write_timeout: Duration::from_secs(2),
            read_ahead_messages: 4096,
            read_ahead_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The ingest socket an adapter serves: its configured `socket` (with `~/` and `$VAR` expanded),
/// else the shared `hooks.sock` in the runtime dir, where `atm-hook` looks without configuration.
pub fn socket_path(configured: Option<&str>, runtime_dir: &Path) -> PathBuf {
    match configured {
        Some(s) => crate::paths::expand(s),
        None => runtime_dir.join(crate::paths::HOOKS_SOCKET),
    }
}
