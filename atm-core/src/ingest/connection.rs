//! One ingest socket's accept loop and the serving of each accepted connection: read lines
//! ahead into a bounded queue, decode, answer `connect`/`ping`, route the rest to the handler of
//! their route, and write replies in order. Shaped for fairness: one connection's flood or
//! stalled reader never delays another's events (see [`serve_connection`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::slots::{Held, Slot, Slots};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{IngestLimits, IngestMessage, Peer, Routes};
use crate::protocol::{
    ErrorCode, ProtocolVersion, ServerMessage, WireError, decode_line, line_codec,
};
use crate::unix_socket::PrivateListener;
use crate::warn_rate::RateLimitedWarn;

/// The routes of one socket already warned about as unrouted: a user who ran `atmctl setup`
/// for an agent whose adapter is off learns it once, at warn, with the fix; every later message
/// of that route is logged at debug. Bounded: past the cap, new routes are only debug-logged.
#[derive(Default)]
struct UnroutedWarnings(Mutex<HashSet<String>>);

impl UnroutedWarnings {
    const MAX_ROUTES: usize = 64;

    /// True the first time `route` is seen (and while there is room to remember it).
    fn first_time(&self, route: &str) -> bool {
        let mut seen = match self.0.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.contains(route) || seen.len() >= Self::MAX_ROUTES {
            return false;
        }
        seen.insert(route.to_owned())
    }
}

/// How to make atm serve `route` (`kind` or `kind:agent`).
fn unrouted_fix(route: &str) -> String {
    match route.split_once(':') {
        Some((_, agent)) if !agent.is_empty() => format!(
            "enable its adapter: add `[[adapter]]` with `type = \"{agent}\"` to plugins.toml \
             (`atmd plugins` lists the adapters), then restart atmd"
        ),
        _ => "enable the adapter for that agent in plugins.toml (`atmd plugins` lists the \
              adapters), then restart atmd"
            .to_owned(),
    }
}

pub(super) async fn accept_loop(
    mut socket: PrivateListener,
    routes: Weak<Routes>,
    cancel: CancellationToken,
    limits: IngestLimits,
) {
    let warnings = Arc::new(UnroutedWarnings::default());
    let oversize = Arc::new(Mutex::new(RateLimitedWarn::default()));
    let mut slots = Slots::new(limits.max_connections, cancel.clone());
    let budget = Arc::new(Semaphore::new(
        limits.read_ahead_bytes.max(crate::protocol::MAX_LINE + 1),
    ));
    while let Some((stream, peer)) = socket.accept_own(&cancel, "ingest").await {
        let Some(held) = slots.take().await else {
            let line = ServerMessage::error(&WireError::new(
                ErrorCode::TooManyClients,
                format!(
                    "more than {} open ingest connections; raise `max_ingest_connections` in \
                     [daemon]",
                    limits.max_connections
                ),
            ))
            .to_line();
            let _ = stream.try_write(&line);
            drop(stream);
            slots.refused();
            continue;
        };
        let routes = Served {
            routes: routes.clone(),
            warnings: warnings.clone(),
            oversize: oversize.clone(),
        };
        let budget = budget.clone();
        tokio::spawn(async move {
            let Held { permit, slot } = held;
            tokio::select! {
                () = slot.cancel.cancelled() => {}
                () = serve_connection(stream, peer, routes, limits, budget, slot.clone()) => {}
            }
            // Marks the slot free for the accept loop's bookkeeping.
            slot.cancel.cancel();
            drop(permit);
        });
    }
}

/// A socket's routes, and what was already said about messages none of them takes.
struct Served {
    routes: Weak<Routes>,
    warnings: Arc<UnroutedWarnings>,
    /// Lines over the limit: each one loses an event, so each is a warning (once a minute).
    oversize: Arc<Mutex<RateLimitedWarn>>,
}

/// What the reader hands the handler, in arrival order (replies must keep that order).
enum Work {
    /// One raw line, decoded by the handler: the reader stays a cheap split-and-queue loop, so
    /// a burst is taken off the socket as fast as the client writes it, and what waits in the
    /// queue is the line's bytes (one shared read buffer), not a parsed tree per message.
    Line(bytes::Bytes),
    /// A line over the limit: say so (reply and log), then close the connection.
    TooLarge(ServerMessage),
}

/// Serves one connection as two halves: a reader that splits lines ahead into a bounded queue,
/// and a handler that decodes and applies them in order and writes the replies. Reading ahead
/// lets a burst land without waiting for the registry's answer to each event; the shared
/// `budget` (bytes of queued lines, across every connection on the socket) bounds what is
/// buffered, and no connection holds more than its [`fair_share`] of it. A client that stops
/// reading its replies is cut off after the write timeout ([`Replies::send`]), so it cannot
/// keep its share either.
async fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    routes: Served,
    limits: IngestLimits,
    budget: Arc<Semaphore>,
    slot: Arc<Slot>,
) {
    let (read, write) = stream.into_split();
    let mut replies = Replies {
        write,
        gone: false,
        timeout: limits.write_timeout,
    };
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Work, Permits)>(limits.read_ahead_messages.max(1));
    // No connection may hold more than its share of the socket's budget, so one client that
    // floods (or stops reading its replies) leaves room for every other.
    let share = Arc::new(Semaphore::new(fair_share(limits.read_ahead_bytes)));
    let reader_slot = slot.clone();
    // Cancelled when the reader ends (the client closed or died), however it ends.
    let client_gone = CancellationToken::new();
    let reader_done = client_gone.clone().drop_guard();
    let reader = async move {
        let _reader_done = reader_done;
        let mut frames = FramedRead::new(read, line_codec());
        let mut first = true;
        // One idle timer per connection, re-armed only when it fires: a timeout per line cost
        // a timer-wheel insert and removal on every hook event of a burst.
        let idle = tokio::time::sleep(limits.idle_timeout);
        tokio::pin!(idle);
        loop {
            // The first line must come within the first-message timeout, every later one within
            // the idle timeout, except on a persistent connection (see `slots`).
            let next = if first {
                match tokio::time::timeout(limits.first_message_timeout, frames.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        debug!("ingest connection sent nothing; closed");
                        return;
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    n = frames.next() => n,
                    () = &mut idle, if !reader_slot.is_persistent() => {
                        let quiet = reader_slot.idle_for();
                        // Said `connect` meanwhile (the handler runs behind the reader), or a
                        // line came since the timer was set: wait for the rest of the timeout.
                        if reader_slot.is_persistent() || quiet < limits.idle_timeout {
                            let rest = limits.idle_timeout.saturating_sub(quiet);
                            match tokio::time::Instant::now().checked_add(rest) {
                                Some(at) => idle.as_mut().reset(at),
                                // Unreachable: the timeout is at most 24 h.
                                None => return,
                            }
                            continue;
                        }
                        debug!(timeout = ?limits.idle_timeout, "ingest connection idle; closed");
                        return;
                    }
                }
            };
            first = false;
            reader_slot.touch();
            let line = match next {
                None => return,
                Some(Ok(line)) => line,
                Some(Err(tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    let e = WireError::new(
                        ErrorCode::TooLarge,
                        format!("line exceeds the {}-byte limit", crate::protocol::MAX_LINE),
                    );
                    let _ = tx
                        .send((Work::TooLarge(ServerMessage::error(&e)), None))
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
            // Lines are at most MAX_LINE bytes and both budgets are larger, so this always fits.
            let cost = u32::try_from(line.len().max(1)).unwrap_or(u32::MAX);
            let Ok(own) = share.clone().acquire_many_owned(cost).await else {
                return;
            };
            let Ok(shared) = budget.clone().acquire_many_owned(cost).await else {
                return;
            };
            if tx
                .send((Work::Line(line), Some((own, shared))))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let handler = async move {
        while let Some((work, permit)) = rx.recv().await {
            let line = match work {
                Work::Line(line) => line,
                Work::TooLarge(msg) => {
                    warn_too_large(&routes.oversize, peer);
                    let _ = replies.send(&msg).await;
                    return;
                }
            };
            let raw = match decode_line(&line) {
                Ok(raw) => raw,
                Err(e) => {
                    debug!(code = e.code.as_str(), error = %e.message, "bad ingest line");
                    if replies.send(&ServerMessage::error(&e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            // The line's bytes are no longer needed: give its budget back before handling.
            drop((line, permit));
            let answer = match raw.kind.as_str() {
                "ping" => {
                    let seq = raw
                        .body
                        .get("seq")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    Some(ServerMessage::Pong { seq })
                }
                "connect" => Some({
                    slot.mark_persistent();
                    ServerMessage::Connected {
                        protocol_version: ProtocolVersion::CURRENT,
                        client_id: raw.str_field("client_id").unwrap_or("hook").to_owned(),
                    }
                }),
                "disconnect" => return,
                _ => {
                    let msg = IngestMessage {
                        raw,
                        peer,
                        client_gone: client_gone.clone(),
                    };
                    let awaits = msg.awaits_decision();
                    // A client waiting for a decision sends nothing while it waits.
                    if awaits {
                        slot.mark_persistent();
                    }
                    let answer = handle_message(msg, &routes).await;
                    // A waiting client is always answered, so it never waits past the end.
                    match answer {
                        None if awaits => Some(ServerMessage::RequestClosed {
                            request_id: None,
                            reason: "this event opens no request to decide".to_owned(),
                        }),
                        other => other,
                    }
                }
            };
            if let Some(answer) = answer
                && replies.send(&answer).await.is_err()
            {
                return;
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

/// Logs a line refused for its size (warn once a minute; each one lost an event).
fn warn_too_large(oversize: &Mutex<RateLimitedWarn>, peer: Peer) {
    let mut oversize = match oversize.lock() {
        Ok(w) => w,
        Err(poisoned) => poisoned.into_inner(),
    };
    oversize.say(|suppressed| {
        format!(
            "refused an ingest line over the {}-byte limit (too_large) and closed its \
             connection, so that event is lost{suppressed}; atm-hook strips tool output and \
             transcripts first, so the line came from another client (pid {:?}): make it send \
             smaller events",
            crate::protocol::MAX_LINE,
            peer.pid
        )
    });
}

/// Routes one message to its handler; returns the reply to write, if any.
async fn handle_message(msg: IngestMessage, served: &Served) -> Option<ServerMessage> {
    let route = match msg.raw.str_field("agent") {
        Some(agent) => format!("{}:{agent}", msg.raw.kind),
        None => msg.raw.kind.clone(),
    };
    let handler = served
        .routes
        .upgrade()
        .and_then(|r| r.read().ok().and_then(|t| t.get(&route).cloned()));
    let Some(handler) = handler else {
        let e = WireError::new(
            ErrorCode::UnknownType,
            format!("no adapter on this socket handles `{route}`"),
        );
        if served.warnings.first_time(&route) {
            warn!(
                route,
                fix = %unrouted_fix(&route),
                "an agent sent an event no adapter on this socket handles; its events are \
                 dropped until the adapter is enabled (logged once per route)"
            );
        } else {
            debug!(route, "unrouted ingest message");
        }
        return Some(ServerMessage::error(&e));
    };
    match handler.handle(msg).await {
        Ok(answer) => answer,
        Err(e) => {
            debug!(code = e.code.as_str(), error = %e.message, route, "ingest message rejected");
            Some(ServerMessage::error(&e))
        }
    }
}

/// Bytes of read-ahead one connection may hold: an eighth of the socket's budget, and never
/// less than one line of the largest size.
fn fair_share(read_ahead_bytes: usize) -> usize {
    (read_ahead_bytes / 8).max(crate::protocol::MAX_LINE + 1)
}

/// Read-ahead bytes a queued line holds: its connection's share and the socket's budget.
type Permits = Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>;

/// The client is there but has not read its replies for the write timeout.
struct Stuck;

/// The writing half of a connection, and whether its client is still there to read.
struct Replies {
    write: tokio::net::unix::OwnedWriteHalf,
    gone: bool,
    timeout: Duration,
}

impl Replies {
    /// Writes one reply. A client that closed is not an error (hook clients often close right
    /// after writing; the rest of what they sent is still handled, unanswered). A client that
    /// is there but does not read within the write timeout is `Stuck`: the caller cuts it off,
    /// so it holds no budget while others wait.
    async fn send(&mut self, msg: &ServerMessage) -> Result<(), Stuck> {
        if self.gone {
            return Ok(());
        }
        match tokio::time::timeout(self.timeout, self.write.write_all(&msg.to_line())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.gone = true;
                Ok(())
            }
            Err(_) => {
                warn!(
                    timeout = ?self.timeout,
                    "an ingest client does not read its replies; connection closed so it holds \
                     no share of the socket's read-ahead (a hook client must read or close)"
                );
                Err(Stuck)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrouted_route_is_warned_about_once_and_the_memory_is_bounded() {
        let w = UnroutedWarnings::default();
        assert!(w.first_time("hook_event:codex"));
        assert!(!w.first_time("hook_event:codex"));
        assert!(w.first_time("hook_event:gemini"));
        for i in 0..200 {
            w.first_time(&format!("hook_event:agent{i}"));
        }
        assert!(!w.first_time("hook_event:one-too-many"));
        let remembered = w.0.lock().unwrap().len();
        assert_eq!(remembered, UnroutedWarnings::MAX_ROUTES);
    }

    #[test]
    fn the_fix_names_the_adapter_when_the_route_names_the_agent() {
        let fix = unrouted_fix("hook_event:codex");
        assert!(fix.contains(r#"type = "codex""#), "{fix}");
        assert!(fix.contains("plugins.toml"), "{fix}");
        for bare in ["teleport", "hook_event:"] {
            let fix = unrouted_fix(bare);
            assert!(fix.contains("atmd plugins"), "{fix}");
            assert!(!fix.contains("type ="), "{fix}");
        }
    }
}
