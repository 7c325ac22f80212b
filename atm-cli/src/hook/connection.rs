//! The exchange with the daemon: one fresh connection to the ingest socket, one line written,
//! at most one line read back, every step cut off at the shared deadline ([`super::BUDGET`]).
//! The connect itself is the clients' shared trusted connect in atm-core.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use super::{MAX_INPUT, remaining};

/// Sends `line` on a fresh connection to `socket` within `deadline`; with `want_reply`, returns
/// the first line the daemon answers. Any failure or timeout gives `None`.
pub fn send(socket: &Path, line: &[u8], deadline: Instant, want_reply: bool) -> Option<Vec<u8>> {
    let mut stream = connect(socket, deadline)?;
    // Small lines fit in the socket buffer and return at once; a daemon that stopped reading
    // makes a big line block, which the write timeout cuts off.
    let mut written = 0;
    while written < line.len() {
        stream.set_write_timeout(Some(remaining(deadline)?)).ok()?;
        match stream.write(line.get(written..)?) {
            Ok(0) => return None,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if !want_reply {
        return None;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    read_reply_line(&mut stream, deadline)
}

/// Connects through the clients' one trusted connect ([`atm_core::trust::connect`]: send
/// timeout set before connecting, then the directory and the peer checked before a byte is
/// sent). A socket that is not to be trusted (another user's directory or process) is the one
/// thing atm-hook reports, once, on stderr: the user must hear that someone else may be posing
/// as atmd to read their events.
fn connect(socket: &Path, deadline: Instant) -> Option<UnixStream> {
    match atm_core::trust::connect(socket, remaining(deadline)?) {
        Ok(stream) => Some(stream),
        Err(e @ atm_core::trust::ConnectError::Untrusted(_)) => {
            let _ = writeln!(std::io::stderr(), "atm-hook: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Reads one `\n`-terminated line (at most [`MAX_INPUT`] bytes) before `deadline`.
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
