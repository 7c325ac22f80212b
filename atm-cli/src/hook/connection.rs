//! The exchange with the daemon: one fresh connection to the ingest socket, one line written,
//! at most one line read back, every step cut off at the shared deadline ([`super::BUDGET`]).
//! Raw syscalls for `connect` so that its timeout is set before connecting.

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

/// Connects with the send timeout set first: on Linux it also bounds `connect` on a Unix socket
/// whose accept queue is full (a daemon that stopped accepting).
fn connect(socket: &Path, deadline: Instant) -> Option<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let addr = SocketAddrUnix::new(socket).ok()?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Send,
        Some(remaining(deadline)?),
    )
    .ok()?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => {
                remaining(deadline)?;
            }
            Err(_) => return None,
        }
    }
    Some(UnixStream::from(fd))
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
