//! The `socket` sink: atm's query socket, the protocol-v1 server that the published `atm` clients
//! (the TUI, `atm list`, `atm status`), `atmctl` and scripts read
//! (`shared/docs/protocol-v1.md`).
//!
//! Shape, and why:
//! - [`table`]: ONE fan-out task follows the registry (`atm_core::registry_follow`) and hands every
//!   change, rendered once ([`render`]) into a shared line, to the subscribers. Per-subscriber
//!   work is a reference-count increment, so 1,000 subscribers cost what one does.
//! - [`outbox`]: every connection has a bounded queue (atm-core's coalescing queue) with a
//!   stated overflow policy (replies wait, updates queue, then a resync), so one slow client
//!   never delays another client, the fan-out, or the registry.
//! - [`connection`]: per connection a reader (protocol, handshake, limits) and a writer (batched
//!   vectored writes, write timeout). Idle clients are never dropped once connected.
//!
//! The socket is created `0600` (a stale file is replaced only when nothing answers on it) and
//! every peer's uid is checked; connections beyond `max_clients` get `too_many_clients`.

mod connection;
mod outbox;
mod render;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atm_core::coalesce::{Overflow, QueuePolicy, ResyncAt};
use atm_core::plugin::{ConfigError, OutputSink, PluginError, SinkContext, duration};
use atm_core::protocol::{ErrorCode, ServerMessage, WireError};
use atm_core::unix_socket::{BindError, PrivateListener};
use atm_core::warn_rate::RateLimitedWarn;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use atm_core::async_trait;

use crate::table::Shared;

atm_core::register_plugin! {
    sink "socket",
    description: "The query socket (protocol v1) that atm clients, atmctl and scripts read",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(SocketSink::new(atm_core::plugin::parse_config(cfg)?)?)),
}

/// Configuration of the `socket` sink. Every key is optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Socket path (`~/` and `$VAR` expanded). Default: `$ATM_SOCKET`, else
    /// `<runtime dir>/atm.sock`.
    pub socket: Option<String>,
    /// Open connections at most (1 to 65536); more get `too_many_clients` and are closed.
    pub max_clients: usize,
    /// Items (lines or lists) queued per connection before updates start to coalesce (1 to
    /// 1048576).
    pub queue_capacity: usize,
    /// Sessions a lagging subscriber may have pending in coalesced form before it is resynced.
    /// 0 (the default): the first overflow resyncs, so a client gets every update or a fresh
    /// `session_list`, never a silently thinned stream. At most 1048576.
    pub max_coalesced: usize,
    /// How long coalesced updates may wait before the subscriber is resynced instead (0 to 1 h).
    #[serde(with = "duration::Within::<0, 3_600_000>")]
    pub max_coalesce_age: Duration,
    /// A write blocked this long disconnects the client (100 ms to 10 min).
    #[serde(with = "duration::Within::<100, 600_000>")]
    pub write_timeout: Duration,
    /// A client that has not sent `connect` within this is disconnected (100 ms to 1 h).
    #[serde(with = "duration::Within::<100, 3_600_000>")]
    pub handshake_timeout: Duration,
    /// How long `discover` waits for the discovery adapters (100 ms to 10 min).
    #[serde(with = "duration::Within::<100, 600_000>")]
    pub discover_timeout: Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            socket: None,
            max_clients: 1000,
            queue_capacity: 16_384,
            // Every update or a resync: a coalesced stream would lose intermediate states
            // without the client knowing. Raise it for clients that only want the latest.
            max_coalesced: 0,
            max_coalesce_age: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            discover_timeout: Duration::from_secs(5),
        }
    }
}

impl SocketConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("max_clients", self.max_clients),
            ("queue_capacity", self.queue_capacity),
        ] {
            if value == 0 {
                return Err(ConfigError::for_key(
                    key,
                    format!("`{key}` must be at least 1"),
                ));
            }
        }
        // Upper bounds, so that a typo cannot make the sink hold (or try to allocate) millions.
        for (key, value, max) in [
            ("max_clients", self.max_clients, 65_536),
            ("queue_capacity", self.queue_capacity, 1_048_576),
            ("max_coalesced", self.max_coalesced, 1_048_576),
        ] {
            if value > max {
                return Err(ConfigError::for_key(
                    key,
                    format!("`{key}` = {value} is out of range: use a number up to {max}"),
                ));
            }
        }
        for (key, value) in [
            ("write_timeout", self.write_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::for_key(
                    key,
                    format!("`{key}` must be above zero"),
                ));
            }
        }
        Ok(())
    }

    /// The overflow policy of each connection's queue (see `outbox`): `queue_capacity` items in
    /// order, then updates coalesced per session up to `max_coalesced` sessions and
    /// `max_coalesce_age`, then a resync after what is queued (replies are never dropped).
    pub(crate) fn queue_policy(&self) -> QueuePolicy {
        QueuePolicy {
            ordered: self.queue_capacity.max(1),
            max_keys: self.max_coalesced,
            max_age: Some(self.max_coalesce_age),
            on_overflow: Overflow::Resync,
            resync: ResyncAt::AfterQueued,
        }
    }

    /// Where to listen: `socket`, else `$ATM_SOCKET`, else `<runtime_dir>/atm.sock`.
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        if let Some(s) = &self.socket {
            return atm_core::paths::expand(s);
        }
        match std::env::var_os("ATM_SOCKET") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => runtime_dir.join(atm_core::paths::QUERY_SOCKET),
        }
    }
}

/// The query socket server.
#[derive(Debug)]
pub struct SocketSink {
    config: SocketConfig,
}

impl SocketSink {
    pub fn new(config: SocketConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }
}

#[async_trait]
impl OutputSink for SocketSink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        let listener = PrivateListener::bind(&path, ctx.env.rebind.clone()).map_err(|e| match e {
            BindError::InUse => PluginError::Other(format!(
                "another process is already serving {}; stop the other atmd or set `socket` in the [[sink]] table",
                path.display()
            )),
            BindError::Io(e) => PluginError::io(format!("cannot listen on {}", path.display()), e),
        })?;
        info!(path = %path.display(), "query socket listening");

        let shared = Arc::new(Shared::new(
            self.config,
            ctx.control.clone(),
            ctx.registry.clone(),
        ));
        let connections = TaskTracker::new();
        let stop = ctx.cancel.child_token();
        let result = tokio::select! {
            r = shared.clone().run(ctx.registry.clone(), stop.clone()) => r,
            () = accept_loop(listener, shared.clone(), stop.clone(), &connections) => Ok(()),
        };
        stop.cancel();
        connections.close();
        // Connections end promptly on cancel; never let one hold up the daemon's shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
        info!(path = %path.display(), "query socket closed");
        result
    }
}

/// How long a new connection waits for an evicted one to release its place.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Connections that have not completed the handshake, oldest first: the ones evicted when the
/// client limit is reached. Bounded: finished and handshaken entries are pruned as it grows.
#[derive(Default)]
struct PendingHandshakes {
    queue: std::collections::VecDeque<(CancellationToken, Arc<std::sync::atomic::AtomicBool>)>,
}

impl PendingHandshakes {
    fn track(
        &mut self,
        stop: &CancellationToken,
        max: usize,
    ) -> Arc<std::sync::atomic::AtomicBool> {
        if self.queue.len() >= max {
            self.queue.retain(|(t, done)| {
                !t.is_cancelled() && !done.load(std::sync::atomic::Ordering::Relaxed)
            });
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.queue.push_back((stop.clone(), done.clone()));
        done
    }

    /// Closes the oldest connection still waiting for its handshake; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((token, done)) = self.queue.pop_front() {
            if !token.is_cancelled() && !done.load(std::sync::atomic::Ordering::Relaxed) {
                debug!("client limit reached: closing the oldest connection that never said hello");
                token.cancel();
                return true;
            }
        }
        false
    }
}

async fn accept_loop(
    mut listener: PrivateListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connections: &TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_clients));
    let mut pending = PendingHandshakes::default();
    let mut refusals = RateLimitedWarn::default();
    while let Some((stream, peer)) = listener.accept_own(&stop, "query").await {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            // Full: a connection that never said hello yields its place to this one, so idle
            // or abandoned connections can never lock real clients out.
            Err(_) if pending.evict_oldest() => {
                tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            let line = ServerMessage::error(&WireError::new(
                ErrorCode::TooManyClients,
                format!(
                    "more than {} open connections; raise `max_clients` in the socket sink's table",
                    shared.config.max_clients
                ),
            ))
            .to_line();
            let _ = stream.try_write(&line);
            let max = shared.config.max_clients;
            refusals.say(|suppressed| {
                format!(
                    "query connection refused: too many clients (all {max} in use){suppressed}; \
                     raise `max_clients` in the socket sink's table"
                )
            });
            continue;
        };
        let shared = shared.clone();
        let conn_stop = stop.child_token();
        let handshaken = pending.track(&conn_stop, shared.config.max_clients);
        connections.spawn(async move {
            connection::serve(stream, peer.uid, shared, conn_stop, handshaken).await;
            drop(permit);
        });
    }
}
