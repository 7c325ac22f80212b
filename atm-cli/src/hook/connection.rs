//! The exchange with the daemon: one fresh connection to the ingest socket, one line written,
//! then what the daemon says read until it closes, every step cut off at the shared deadline
//! ([`super::BUDGET`]). The connect itself is the clients' shared trusted connect in atm-core.
//!
//! Shaped so that load alone never loses or reorders an event:
//! - **The daemon's close is the acknowledgement.** atmd closes a hook connection once it has
//!   applied everything on it. Waiting for that close (within the budget) means that when
//!   the agent runs its hooks one after another, each event is in the registry before the
//!   next hook starts: two events on two connections can otherwise be handled in either order
//!   (a `PermissionRequest` overtaken by the prompt before it leaves the session "working").
//! - **A full socket is retried.** `too_many_clients` is answered at once, before the line
//!   is read; the hook tries again (a slot frees as soon as any connection ends, or when the
//!   daemon evicts an idle persistent one) until the budget is spent. atmd logs the refusals.
//! - **A late start still sends.** A process preempted past its deadline before it could even
//!   connect still gets one minimal attempt at connecting and writing, which costs nothing
//!   when the daemon is there: a small line goes into the socket buffer at once.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{MAX_INPUT, MIN_SLICE, remaining};

/// Pause between two attempts on a full socket.
const RETRY_PAUSE: Duration = Duration::from_millis(2);

/// Sends `line` on a fresh connection to `socket` within `deadline`; with `want_reply`, returns
/// the first line the daemon answers. Any failure or timeout gives `None`.
pub fn send(socket: &Path, line: &[u8], deadline: Instant, want_reply: bool) -> Option<Vec<u8>> {
    let (mut stream, first) = exchange(socket, line, deadline, End::HalfClose)?;
    if want_reply {
        return first;
    }
    // A reply line (an error the daemon logs anyway) was read: wait for the close itself.
    if first.is_some() {
        wait_for_close(&mut stream, deadline);
    }
    None
}

/// Sends `line` like [`send`] (connect and write within `deadline`), but keeps the connection
/// open and waits until `wait_until` for the daemon's one reply: a decision on a request,
/// which comes when a person answers.
pub fn wait_for_reply(
    socket: &Path,
    line: &[u8],
    deadline: Instant,
    wait_until: Instant,
) -> Option<Vec<u8>> {
    exchange(socket, line, deadline, End::StayOpenUntil(wait_until)).and_then(|(_, first)| first)
}

/// How the client side of an exchange goes on once its line is written.
enum End {
    /// Closes its write side (the usual end of a hook's message) and reads the reply within
    /// the exchange's deadline.
    HalfClose,
    /// Never half-closes (the daemon takes a closed write side for a client that has gone,
    /// and stops waiting for it) and reads the reply until this time.
    StayOpenUntil(Instant),
}

/// Connects, writes `line` and reads the daemon's first line, as `end` says. A full socket
/// (`too_many_clients`) is tried again within `deadline`.
fn exchange(
    socket: &Path,
    line: &[u8],
    deadline: Instant,
    end: End,
) -> Option<(UnixStream, Option<Vec<u8>>)> {
    loop {
        let mut stream = connect(socket, deadline)?;
        write_line(&mut stream, line, deadline)?;
        let reply_until = match end {
            End::HalfClose => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                deadline
            }
            End::StayOpenUntil(until) => until,
        };
        let first = read_reply_line(&mut stream, reply_until);
        if first.as_deref().is_some_and(is_too_many_clients) {
            std::thread::sleep(RETRY_PAUSE.min(remaining(deadline)?));
            continue;
        }
        return Some((stream, first));
    }
}

/// Time for the next step: what is left of the budget, or one minimal slice when it is spent
/// (a step that does not block, as connecting and writing a small line to a live daemon do,
/// still succeeds; one that would block fails at once).
fn slice(deadline: Instant) -> Duration {
    remaining(deadline).unwrap_or(MIN_SLICE)
}

/// Writes the whole line. Small lines fit in the socket buffer and return at once; a daemon
/// that stopped reading makes a big line block, which the write timeout cuts off.
fn write_line(stream: &mut UnixStream, line: &[u8], deadline: Instant) -> Option<()> {
    let mut written = 0;
    let mut first = true;
    while written < line.len() {
        let timeout = if first {
            slice(deadline)
        } else {
            remaining(deadline)?
        };
        first = false;
        stream.set_write_timeout(Some(timeout)).ok()?;
        match stream.write(line.get(written..)?) {
            Ok(0) => return None,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(())
}

/// Whether a line from the daemon is its `too_many_clients` refusal.
fn is_too_many_clients(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .is_ok_and(|v| v["type"] == "error" && v["code"] == "too_many_clients")
}

/// Connects through the clients' one trusted connect ([`atm_core::trust::connect`]: send
/// timeout set before connecting, then the directory and the peer checked before a byte is
/// sent). A socket that is not to be trusted (another user's directory or process) is the one
/// thing atm-hook reports, once, on stderr: the user must hear that someone else may be posing
/// as atmd to read their events.
fn connect(socket: &Path, deadline: Instant) -> Option<UnixStream> {
    match atm_core::trust::connect(socket, slice(deadline)) {
        Ok(stream) => Some(stream),
        Err(e @ atm_core::trust::ConnectError::Untrusted(_)) => {
            let _ = writeln!(std::io::stderr(), "atm-hook: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Reads one `\n`-terminated line (at most [`MAX_INPUT`] bytes) before `deadline`. `None` when
/// the daemon closes first (the usual end of a hook's exchange) or time runs out.
fn read_reply_line(stream: &mut UnixStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                let got = chunk.get(..n)?;
                if let Some(end) = got.iter().position(|&b| b == b'\n') {
                    reply.extend_from_slice(got.get(..end)?);
                    return Some(reply);
                }
                reply.extend_from_slice(got);
                if reply.len() > MAX_INPUT {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Reads and discards until the daemon closes or `deadline`.
fn wait_for_close(stream: &mut UnixStream, deadline: Instant) {
    let mut chunk = [0u8; 4096];
    while let Some(left) = remaining(deadline) {
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_refusal_for_a_full_socket_is_retried() {
        assert!(is_too_many_clients(
            br#"{"type":"error","code":"too_many_clients","message":"more than 4"}"#
        ));
        assert!(!is_too_many_clients(
            br#"{"type":"error","code":"parse_error","message":"x"}"#
        ));
        assert!(!is_too_many_clients(b"not json"));
        assert!(!is_too_many_clients(br#"{"type":"session_updated"}"#));
    }
}
