//! The shared ingest socket (`hooks.sock`).
//!
//! Agents' hook clients (`atm-hook`, the original bash hook, other agents' hooks) all write to
//! one socket so that no client needs configuration. Several adapters can serve it: each
//! attaches to a path with the message routes it handles (`hook_event`, `status_update`,
//! `hook_event:codex`, `pi_event`, ...). The first attachment binds the socket; the last one to
//! go removes it. A message whose top-level `agent` field is set routes to `type:agent`.
//!
//! Every connection is checked with `SO_PEERCRED` (other users are refused), lines are capped at
//! 1 MiB while reading, a connection that sends nothing for 10 s is closed, and the number of
//! open connections is bounded (extra ones get `too_many_clients` and are closed). Messages on
//! one connection are handled in order; connections never wait on each other. Each connection
//! reads ahead of the message being handled (at most 4096 messages, and 16 MiB of lines across
//! the whole socket), so a burst lands at once while memory stays bounded; past the budget,
//! reading pauses: the kernel's socket buffer, then the writer, waits.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::protocol::{
    ErrorCode, ProtocolVersion, RawMessage, ServerMessage, WireError, decode_line, line_codec,
};

/// Who sent a message, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
}

/// One accepted ingest message.
#[derive(Debug, Clone)]
pub struct IngestMessage {
    pub raw: RawMessage,
    pub peer: Peer,
}

/// What an adapter implements to serve routes on the ingest socket.
#[async_trait]
pub trait IngestHandler: Send + Sync + 'static {
    /// Handles one message. `Ok(Some(reply))` is written back (e.g. the session's view, for a
    /// client that asked for it); an error is sent back as an `error` line. Either way the
    /// connection stays open.
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError>;
}

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
    pub max_connections: usize,
    pub first_message_timeout: Duration,
    pub write_timeout: Duration,
    /// Messages one connection may have read ahead of the one being handled.
    pub read_ahead_messages: usize,
    /// Bytes of read-ahead lines across all connections of one socket (at least `MAX_LINE`).
    pub read_ahead_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            first_message_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            read_ahead_messages: 4096,
            read_ahead_bytes: 16 * 1024 * 1024,
        }
    }
}

type Routes = RwLock<HashMap<String, Arc<dyn IngestHandler>>>;

struct Listener {
    path: PathBuf,
    routes: Arc<Routes>,
    cancel: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            debug!(path = %self.path.display(), error = %e, "cannot remove ingest socket");
        }
        info!(path = %self.path.display(), "ingest socket closed");
    }
}

/// Keeps routes attached; dropping it detaches them (and closes the socket if it was the last).
pub struct IngestAttachment {
    listener: Arc<Listener>,
    routes: Vec<String>,
}

impl IngestAttachment {
    pub fn path(&self) -> &Path {
        &self.listener.path
    }
}

impl Drop for IngestAttachment {
    fn drop(&mut self) {
        if let Ok(mut r) = self.listener.routes.write() {
            for route in &self.routes {
                r.remove(route);
            }
        }
    }
}

/// The daemon's registry of ingest sockets, shared by every adapter's context.
#[derive(Clone, Default)]
pub struct IngestHub {
    listeners: Arc<Mutex<HashMap<PathBuf, Weak<Listener>>>>,
    limits: IngestLimits,
}

impl std::fmt::Debug for IngestHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngestHub")
    }
}

impl IngestHub {
    pub fn new(limits: IngestLimits) -> Self {
        Self {
            listeners: Arc::default(),
            limits,
        }
    }

    /// Serves `routes` on the socket at `path` with `handler`, binding the socket if no other
    /// adapter has yet.
    pub fn attach(
        &self,
        path: &Path,
        routes: &[&str],
        handler: Arc<dyn IngestHandler>,
    ) -> Result<IngestAttachment, IngestError> {
        let mut listeners = match self.listeners.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let listener = match listeners.get(path).and_then(Weak::upgrade) {
            Some(l) => l,
            None => {
                let l = Arc::new(self.bind(path)?);
                listeners.insert(path.to_owned(), Arc::downgrade(&l));
                l
            }
        };
        listeners.retain(|_, w| w.strong_count() > 0);
        let mut table = match listener.routes.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(taken) = routes.iter().find(|r| table.contains_key(**r)) {
            return Err(IngestError::RouteTaken {
                route: (*taken).to_owned(),
                path: path.to_owned(),
            });
        }
        for r in routes {
            table.insert((*r).to_owned(), handler.clone());
        }
        drop(table);
        Ok(IngestAttachment {
            listener,
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    fn bind(&self, path: &Path) -> Result<Listener, IngestError> {
        let socket = bind_private(path).map_err(|e| match e {
            BindError::InUse => IngestError::InUse {
                path: path.to_owned(),
            },
            BindError::Io(source) => IngestError::Bind {
                path: path.to_owned(),
                source,
            },
        })?;
        info!(path = %path.display(), "ingest socket listening");
        let routes: Arc<Routes> = Arc::default();
        let cancel = CancellationToken::new();
        tokio::spawn(accept_loop(
            socket,
            Arc::downgrade(&routes),
            cancel.clone(),
            self.limits,
        ));
        Ok(Listener {
            path: path.to_owned(),
            routes,
            cancel,
        })
    }
}

/// Why a socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another process answers on the path.
    InUse,
    Io(std::io::Error),
}

/// Binds a Unix socket with mode 0600. A leftover socket file is replaced only when nothing
/// answers on it; if something does, returns [`BindError::InUse`].
pub fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse);
        }
        std::fs::remove_file(path).map_err(BindError::Io)?;
        debug!(path = %path.display(), "replaced stale socket file");
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(BindError::Io)?;
    }
    let listener = UnixListener::bind(path).map_err(BindError::Io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(BindError::Io)?;
    Ok(listener)
}

/// Checks the peer of an accepted connection: same uid as us. Logs and returns `None` otherwise.
pub fn check_peer(stream: &UnixStream, what: &str) -> Option<Peer> {
    let me = crate::paths::uid();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me => Some(Peer {
            pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
            uid: cred.uid(),
        }),
        Ok(cred) => {
            warn!(
                socket = what,
                peer_uid = cred.uid(),
                peer_pid = cred.pid(),
                "refused a connection from another user"
            );
            None
        }
        Err(e) => {
            warn!(socket = what, error = %e, "cannot read peer credentials; connection refused");
            None
        }
    }
}

async fn accept_loop(
    socket: UnixListener,
    routes: Weak<Routes>,
    cancel: CancellationToken,
    limits: IngestLimits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let budget = Arc::new(Semaphore::new(
        limits.read_ahead_bytes.max(crate::protocol::MAX_LINE + 1),
    ));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = socket.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "ingest accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(peer) = check_peer(&stream, "ingest") else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let line = ServerMessage::error(&WireError::new(
                ErrorCode::TooManyClients,
                format!(
                    "more than {} open ingest connections",
                    limits.max_connections
                ),
            ))
            .to_line();
            let _ = stream.try_write(&line);
            drop(stream);
            continue;
        };
        let routes = routes.clone();
        let cancel = cancel.clone();
        let budget = budget.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_connection(stream, peer, routes, limits, budget) => {}
            }
            drop(permit);
        });
    }
}

/// What the reader hands the handler, in arrival order (replies must keep that order).
enum Work {
    /// One raw line, decoded by the handler: the reader stays a cheap split-and-queue loop, so
    /// a burst is taken off the socket as fast as the client writes it, and what waits in the
    /// queue is the line's bytes (one shared read buffer), not a parsed tree per message.
    Line(bytes::Bytes),
    /// Reply, then close the connection.
    Close(Option<ServerMessage>),
}

/// Serves one connection as two halves: a reader that splits lines ahead into a bounded queue,
/// and a handler that decodes and applies them in order and writes the replies. Reading ahead
/// lets a burst land without waiting for the registry's answer to each event; the shared
/// `budget` (bytes of queued lines, across every connection on the socket) bounds what is
/// buffered.
async fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    routes: Weak<Routes>,
    limits: IngestLimits,
    budget: Arc<Semaphore>,
) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Work, Option<OwnedSemaphorePermit>)>(
        limits.read_ahead_messages.max(1),
    );
    let reader = async move {
        let mut frames = FramedRead::new(read, line_codec());
        let mut first = true;
        loop {
            let next = if first {
                match tokio::time::timeout(limits.first_message_timeout, frames.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        debug!("ingest connection sent nothing; closed");
                        return;
                    }
                }
            } else {
                frames.next().await
            };
            first = false;
            let line = match next {
                None => return,
                Some(Ok(line)) => line,
                Some(Err(tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    let e = WireError::new(
                        ErrorCode::TooLarge,
                        format!("line exceeds the {}-byte limit", crate::protocol::MAX_LINE),
                    );
                    debug!("ingest line too large; connection closed");
                    let _ = tx
                        .send((Work::Close(Some(ServerMessage::error(&e))), None))
                        .await;
                    return;
                }
                Some(Err(e)) => {
                    debug!(error = %e, "ingest read failed");
                    return;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Lines are at most MAX_LINE bytes and the budget is larger, so this always fits.
            let cost = u32::try_from(line.len().max(1)).unwrap_or(u32::MAX);
            let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                return;
            };
            if tx.send((Work::Line(line), Some(permit))).await.is_err() {
                return;
            }
        }
    };
    let handler = async move {
        while let Some((work, permit)) = rx.recv().await {
            let line = match work {
                Work::Line(line) => line,
                Work::Close(msg) => {
                    if let Some(msg) = msg {
                        reply(&mut write, &msg, limits).await;
                    }
                    return;
                }
            };
            let raw = match decode_line(&line) {
                Ok(raw) => raw,
                Err(e) => {
                    debug!(code = e.code.as_str(), error = %e.message, "bad ingest line");
                    reply(&mut write, &ServerMessage::error(&e), limits).await;
                    continue;
                }
            };
            // The line's bytes are no longer needed: give its budget back before handling.
            drop((line, permit));
            match raw.kind.as_str() {
                "ping" => {
                    let seq = raw
                        .body
                        .get("seq")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    reply(&mut write, &ServerMessage::Pong { seq }, limits).await;
                }
                "connect" => {
                    let connected = ServerMessage::Connected {
                        protocol_version: ProtocolVersion::CURRENT,
                        client_id: raw.str_field("client_id").unwrap_or("hook").to_owned(),
                    };
                    reply(&mut write, &connected, limits).await;
                }
                "disconnect" => return,
                _ => handle_message(&mut write, raw, peer, &routes, limits).await,
            }
        }
    };
    tokio::pin!(handler);
    tokio::select! {
        // The client stopped sending: answer what it sent, then close.
        () = reader => handler.await,
        // The handler closed the connection (`disconnect`, a line too large): stop reading.
        () = &mut handler => {}
    }
}

async fn handle_message(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    raw: RawMessage,
    peer: Peer,
    routes: &Weak<Routes>,
    limits: IngestLimits,
) {
    let route = match raw.str_field("agent") {
        Some(agent) => format!("{}:{agent}", raw.kind),
        None => raw.kind.clone(),
    };
    let handler = routes
        .upgrade()
        .and_then(|r| r.read().ok().and_then(|t| t.get(&route).cloned()));
    let Some(handler) = handler else {
        let e = WireError::new(
            ErrorCode::UnknownType,
            format!("no adapter on this socket handles `{route}`"),
        );
        debug!(route, "unrouted ingest message");
        reply(write, &ServerMessage::error(&e), limits).await;
        return;
    };
    match handler.handle(IngestMessage { raw, peer }).await {
        Ok(None) => {}
        Ok(Some(answer)) => reply(write, &answer, limits).await,
        Err(e) => {
            debug!(code = e.code.as_str(), error = %e.message, route, "ingest message rejected");
            reply(write, &ServerMessage::error(&e), limits).await;
        }
    }
}

async fn reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    msg: &ServerMessage,
    limits: IngestLimits,
) {
    // Hook clients often close right after writing: a failed reply is not an error.
    let _ = tokio::time::timeout(limits.write_timeout, write.write_all(&msg.to_line())).await;
}

impl From<IngestError> for crate::plugin::PluginError {
    fn from(e: IngestError) -> Self {
        use crate::plugin::{ConfigError, PluginError};
        match e {
            IngestError::Bind { path, source } => {
                PluginError::io(format!("cannot listen on {}", path.display()), source)
            }
            // Two adapters claiming one route on one socket is a configuration mistake.
            e @ IngestError::RouteTaken { .. } => {
                PluginError::Config(ConfigError::for_key("socket", e.to_string()))
            }
            e @ IngestError::InUse { .. } => PluginError::Other(e.to_string()),
        }
    }
}

/// Counters an ingest adapter keeps (shared between the adapter and its handler), summarised at
/// debug level when it stops. Counters an adapter has no use for stay at zero.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Events applied to the registry.
    pub applied: std::sync::atomic::AtomicU64,
    /// Events with a name this version does not know (accepted as activity).
    pub unknown_events: std::sync::atomic::AtomicU64,
    /// Events deliberately dropped (duplicates, subagent noise).
    pub ignored: std::sync::atomic::AtomicU64,
    /// Messages refused as malformed.
    pub bad_messages: std::sync::atomic::AtomicU64,
    /// Well-formed events the registry refused (full, shutting down).
    pub registry_errors: std::sync::atomic::AtomicU64,
}

impl IngestStats {
    pub fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs the counters once, when the adapter stops.
    pub fn log_summary(&self, adapter: &str) {
        debug!(
            adapter,
            applied = Self::get(&self.applied),
            unknown_events = Self::get(&self.unknown_events),
            ignored = Self::get(&self.ignored),
            bad_messages = Self::get(&self.bad_messages),
            registry_errors = Self::get(&self.registry_errors),
            "ingest adapter stopped"
        );
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
