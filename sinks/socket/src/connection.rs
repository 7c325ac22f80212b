//! One client connection: a reader that speaks protocol v1 and a writer that drains the
//! connection's [`Outbox`].
//!
//! They are separate tasks so that a client that does not read can never stop us reading its
//! requests (and the reverse), and so that the fan-out only ever touches the outbox. Replies go
//! through the same outbox as pushed updates, which keeps every reply in request order.

use std::sync::Arc;
use std::time::Duration;

use atm_core::protocol::{
    ErrorCode, ProtocolVersion, RawMessage, ServerMessage, WireError, decode_line, line_codec,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::outbox::{Item, Outbox, Work};
use crate::render::ListJob;
use crate::table::Shared;

/// Longest client id we keep, in characters.
const MAX_CLIENT_ID: usize = 128;

/// Serves one accepted (and peer-checked) connection until it ends.
/// `handshaken` is set once the client has said hello: until then the accept loop may evict the
/// connection to make room.
pub(crate) async fn serve(
    stream: UnixStream,
    uid: u32,
    shared: Arc<Shared>,
    stop: CancellationToken,
    handshaken: Arc<std::sync::atomic::AtomicBool>,
) {
    let conn = shared.new_connection_id();
    let (read, write) = stream.into_split();
    let outbox = Arc::new(Outbox::new(shared.config.queue_policy()));
    let writer = tokio::spawn(run_writer(
        write,
        outbox.clone(),
        shared.clone(),
        stop.clone(),
    ));
    let mut reader = Reader {
        conn,
        uid,
        handshaken,
        frames: FramedRead::new(read, line_codec()),
        outbox: outbox.clone(),
        shared: shared.clone(),
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = reader.run() => {}
    }
    shared.unsubscribe(conn, &outbox);
    // Let the writer flush what the reader queued (a final error, say), bounded by its timeout.
    outbox.push_now(Item::Close);
    let grace = shared.config.write_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, writer).await.is_err() {
        outbox.abort();
    }
    stop.cancel();
    debug!(conn, "query connection closed");
}

struct Reader {
    conn: u64,
    /// The peer's user (checked to be ours at accept), recorded with every decision it makes.
    uid: u32,
    handshaken: Arc<std::sync::atomic::AtomicBool>,
    frames: FramedRead<OwnedReadHalf, tokio_util::codec::AnyDelimiterCodec>,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
}

/// What a line read from the client turned out to be.
enum Next {
    Line(Bytes),
    /// The connection is over (EOF, error, or an oversized line already answered).
    End,
}

impl Reader {
    async fn run(&mut self) {
        let deadline = atm_core::plugin::duration::deadline_after(
            tokio::time::Instant::now(),
            self.shared.config.handshake_timeout,
        );
        let Ok(first) = tokio::time::timeout_at(deadline, self.handshake()).await else {
            debug!(conn = self.conn, "no handshake within the timeout; closed");
            return;
        };
        if !first {
            return;
        }
        self.handshaken
            .store(true, std::sync::atomic::Ordering::Relaxed);
        while let Next::Line(line) = self.next_line().await {
            match decode_line(&line) {
                Ok(raw) => {
                    if !self.handle(raw).await {
                        return;
                    }
                }
                Err(e) => {
                    debug!(conn = self.conn, code = e.code.as_str(), error = %e.message, "bad query message");
                    if !self.error(&e).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reads the next non-blank line; answers an oversized one with `too_large`.
    async fn next_line(&mut self) -> Next {
        loop {
            match self.frames.next().await {
                None => return Next::End,
                Some(Ok(line)) if line.iter().all(u8::is_ascii_whitespace) => {}
                Some(Ok(line)) => return Next::Line(line),
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    debug!(conn = self.conn, "query line too large; closing");
                    let e = WireError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "line exceeds the {}-byte limit",
                            atm_core::protocol::MAX_LINE
                        ),
                    );
                    self.outbox
                        .push_now(Item::Line(line(&ServerMessage::error(&e))));
                    return Next::End;
                }
                Some(Err(e)) => {
                    debug!(conn = self.conn, error = %e, "query read failed");
                    return Next::End;
                }
            }
        }
    }

    /// The first message. `true` when the client is connected.
    async fn handshake(&mut self) -> bool {
        let Next::Line(first) = self.next_line().await else {
            return false;
        };
        let raw = match decode_line(&first) {
            Ok(raw) => raw,
            Err(e) if e.code == ErrorCode::BadVersion && is_connect(&first) => {
                let reason = format!("{}; upgrade the client or the daemon", e.message);
                info!(conn = self.conn, %reason, "client rejected");
                self.outbox
                    .push_now(Item::Line(line(&ServerMessage::Rejected {
                        reason,
                        protocol_version: ProtocolVersion::CURRENT,
                    })));
                return false;
            }
            Err(e) => {
                let e = WireError::new(
                    ErrorCode::NotConnected,
                    format!("the first message must be `connect` ({})", e.message),
                );
                self.outbox
                    .push_now(Item::Line(line(&ServerMessage::error(&e))));
                return false;
            }
        };
        if raw.kind != "connect" {
            let e = WireError::new(
                ErrorCode::NotConnected,
                format!(
                    "the first message must be `connect`, not `{}`",
                    atm_core::text::truncate_chars(&raw.kind, 64)
                ),
            );
            self.outbox
                .push_now(Item::Line(line(&ServerMessage::error(&e))));
            return false;
        }
        let client_id = match raw.str_field("client_id") {
            Some(id) if !id.trim().is_empty() => atm_core::text::truncate_chars(id, MAX_CLIENT_ID),
            _ => self.shared.assign_client_id(),
        };
        debug!(conn = self.conn, client_id, "query client connected");
        self.reply(ServerMessage::Connected {
            protocol_version: ProtocolVersion::CURRENT,
            client_id,
        })
        .await
    }

    /// Handles one message after the handshake. `false` ends the connection.
    async fn handle(&mut self, raw: RawMessage) -> bool {
        match raw.kind.as_str() {
            "list_sessions" => {
                if !self.outbox.wait_for_space().await {
                    return false;
                }
                // Taken and queued under the table lock, so that for a subscriber the list sits
                // in the stream exactly where it was taken: no update it lacks is queued before it.
                let table = self.shared.read_table();
                self.outbox.push_now(Item::List(table.list(None)));
                true
            }
            "subscribe" => {
                let filter = match raw.body.get("session_id") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(id)) => Some(id.clone()),
                    Some(_) => {
                        return self
                            .error(&WireError::new(
                                ErrorCode::InvalidMessage,
                                "`session_id` must be a string",
                            ))
                            .await;
                    }
                };
                if !self.outbox.wait_for_space().await {
                    return false;
                }
                self.shared.subscribe(self.conn, &self.outbox, filter);
                true
            }
            "unsubscribe" => {
                self.shared.unsubscribe(self.conn, &self.outbox);
                true
            }
            "ping" => match raw.body.get("seq") {
                None | Some(Value::Null) => self.reply(ServerMessage::Pong { seq: 0 }).await,
                Some(v) => match v.as_u64() {
                    Some(seq) => self.reply(ServerMessage::Pong { seq }).await,
                    None => {
                        self.error(&WireError::new(
                            ErrorCode::InvalidMessage,
                            "`seq` must be a non-negative integer",
                        ))
                        .await
                    }
                },
            },
            "discover" => {
                let report = self
                    .shared
                    .control
                    .rescan(self.shared.config.discover_timeout)
                    .await;
                self.reply(ServerMessage::DiscoveryComplete {
                    discovered: report.discovered,
                    failed: report.failed,
                })
                .await
            }
            "decide" => self.decide(&raw).await,
            "disconnect" => false,
            "connect" => {
                self.error(&WireError::new(
                    ErrorCode::AlreadyConnected,
                    "this connection has already sent `connect`",
                ))
                .await
            }
            "hook_event" | "status_update" => {
                self.error(&WireError::new(
                    ErrorCode::UnknownType,
                    format!(
                        "`{}` belongs on the ingest socket ({}), not the query socket",
                        raw.kind,
                        atm_core::paths::HOOKS_SOCKET
                    ),
                ))
                .await
            }
            other => {
                let e = WireError::new(
                    ErrorCode::UnknownType,
                    format!(
                        "unknown message type `{}`",
                        atm_core::text::truncate_chars(other, 64)
                    ),
                );
                self.error(&e).await
            }
        }
    }

    /// `decide` (1.1): `request_id`, the decision (`decision`: `allow` with `always` and
    /// `rule`, `deny` with `message` and `interrupt`, `answer` with `answers`) and an optional
    /// `surface` name for the audit trail; answered `decided`, or an error saying why not.
    async fn decide(&mut self, raw: &RawMessage) -> bool {
        let Some(id) = raw
            .str_field("request_id")
            .and_then(atm_core::request::RequestId::parse)
        else {
            return self
                .error(&WireError::new(
                    ErrorCode::InvalidMessage,
                    "`request_id` must be a request's 32-hex-digit id (`atmctl pending` lists them)",
                ))
                .await;
        };
        let decision: atm_core::request::Decision =
            match serde_json::from_value(Value::Object(raw.body.clone())) {
                Ok(d) => d,
                Err(e) => {
                    let e = WireError::new(
                        ErrorCode::InvalidMessage,
                        format!(
                            "bad decision ({e}): `decision` is `allow` (with `always`, `rule`), \
                             `deny` (with `message`, `interrupt`) or `answer` (with `answers`)"
                        ),
                    );
                    return self.error(&e).await;
                }
            };
        let surface =
            atm_core::request::Surface::new(surface_name(raw.str_field("surface")), Some(self.uid));
        match self.shared.registry.decide(id, decision, surface).await {
            Ok(Ok(d)) => {
                self.reply(ServerMessage::Decided {
                    request_id: d.request_id,
                    session_id: d.session_id.as_str().to_owned(),
                })
                .await
            }
            Ok(Err(e)) => self.error(&WireError::from(e)).await,
            Err(e) => self.error(&WireError::from(e)).await,
        }
    }

    async fn reply(&self, msg: ServerMessage) -> bool {
        self.outbox.push_reply(Item::Line(line(&msg))).await
    }

    async fn error(&self, e: &WireError) -> bool {
        self.reply(ServerMessage::error(e)).await
    }
}

/// The surface a client names for the audit trail (`atmctl`, `waybar`, ...): letters, digits,
/// `-`, `_` and `.`, at most 32; `socket` when it names none (or nothing usable).
fn surface_name(asked: Option<&str>) -> String {
    let name: String = asked
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    if name.is_empty() {
        "socket".to_owned()
    } else {
        name
    }
}

fn line(msg: &ServerMessage) -> Bytes {
    Bytes::from(msg.to_line())
}

/// Whether a line that failed to decode was meant as a `connect` (to answer `rejected`).
fn is_connect(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| {
            v.get("type")
                .and_then(Value::as_str)
                .map(|t| t == "connect")
        })
        .unwrap_or(false)
}

/// Writes what the outbox holds until the connection closes. A write blocked longer than the
/// write timeout disconnects the client: it has stopped reading.
async fn run_writer(
    mut write: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let timeout = shared.config.write_timeout;
    loop {
        let outcome = match outbox.next_work() {
            Work::Idle => {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = outbox.wait_for_work() => continue,
                }
            }
            Work::Close => {
                let _ = tokio::time::timeout(timeout, write.shutdown()).await;
                break;
            }
            Work::Lines(mut lines) => write_bounded(&mut write, &mut lines, timeout, &stop).await,
            Work::List(job) => write_list(&mut write, job, timeout, &stop).await,
            Work::Resync => {
                let Some(job) = shared.take_resync(&outbox) else {
                    continue;
                };
                debug!(
                    sessions = job.len(),
                    resyncs = outbox.resyncs(),
                    "resyncing a subscriber that fell behind"
                );
                write_list(&mut write, job, timeout, &stop).await
            }
        };
        match outcome {
            Written::All => {}
            Written::Stopped => break,
            Written::Failed(e) => {
                debug!(error = %e, "query client went away");
                break;
            }
            Written::TimedOut => {
                info!(
                    timeout_ms = timeout.as_millis() as u64,
                    "query client stopped reading; disconnected"
                );
                break;
            }
        }
    }
    outbox.abort();
    stop.cancel();
}

enum Written {
    All,
    Stopped,
    Failed(std::io::Error),
    TimedOut,
}

/// Renders and writes a list piece by piece (see [`ListJob::into_pieces`]). Large lists are
/// rendered on the blocking pool, [`RENDER_AHEAD`] pieces at once, so rendering uses every core
/// and overlaps the writes while no worker thread is held up. The write timeout applies to
/// each piece: it bounds how long a client may stop reading, not how long a large reply takes.
async fn write_list(
    write: &mut OwnedWriteHalf,
    job: ListJob,
    timeout: Duration,
    stop: &CancellationToken,
) -> Written {
    let pieces = job.into_pieces();
    if let [only] = pieces.as_slice() {
        return write_bounded(write, &mut only.render().as_slice(), timeout, stop).await;
    }
    let mut rendered = futures_util::stream::iter(pieces)
        .map(|piece| tokio::task::spawn_blocking(move || piece.render()))
        .buffered(RENDER_AHEAD);
    while let Some(piece) = rendered.next().await {
        let Ok(piece) = piece else {
            return Written::Failed(std::io::Error::other("rendering a session list failed"));
        };
        match write_bounded(write, &mut piece.as_slice(), timeout, stop).await {
            Written::All => {}
            other => return other,
        }
    }
    Written::All
}

/// Pieces of a list rendered ahead of the one being written.
const RENDER_AHEAD: usize = 3;

/// Writes all of `buf` unless it takes longer than `timeout` or the connection is stopped.
async fn write_bounded(
    write: &mut OwnedWriteHalf,
    buf: &mut impl bytes::Buf,
    timeout: Duration,
    stop: &CancellationToken,
) -> Written {
    tokio::select! {
        () = stop.cancelled() => Written::Stopped,
        r = tokio::time::timeout(timeout, write.write_all_buf(buf)) => match r {
            Ok(Ok(())) => Written::All,
            Ok(Err(e)) => Written::Failed(e),
            Err(_) => Written::TimedOut,
        },
    }
}
