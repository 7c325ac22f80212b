//! Whether a client may talk to a daemon socket: the one check every client makes before it
//! sends a byte (`atm-hook`, `atmctl`, anything new that connects).
//!
//! The daemon refuses other users on its side, but a client that connects to a path it did not
//! check can be talking to another user's process: with `XDG_RUNTIME_DIR` unset the runtime dir
//! is `/tmp/atm-$UID`, a name anyone can take first, or a symlink anyone can re-point. So a
//! client trusts a socket only when
//!
//! - the directory holding it is a real directory (or a link we own to one) owned by us that
//!   neither group nor others can write to, so no one else can have placed or swapped the
//!   socket (atmd creates its runtime dir `0700`; a directory of ours that others may only read
//!   or enter, such as a `0755` temporary directory, cannot be tampered with, so it is accepted),
//!   and
//! - the process at the other end (`SO_PEERCRED`, read after `connect` and before any write)
//!   runs as us or as root. This is what closes the gap between checking the directory and
//!   connecting: whatever was swapped in, the peer is who it is.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::NotPrivate;

/// Why a client will not talk to a socket. The messages say what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "refusing {socket}: its directory {dir} is owned by uid {owner}, not by you (uid {me}), so another user may be posing as atmd; remove {dir} (or set XDG_RUNTIME_DIR to a directory you own) and restart atmd"
    )]
    DirOwner {
        socket: PathBuf,
        dir: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error(
        "refusing {socket}: its directory {dir} has mode {mode:03o}, so other users can replace the socket; atm only talks to sockets in a private directory: run `chmod 700 {dir}`"
    )]
    DirMode {
        socket: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "refusing {socket}: {dir} is a symbolic link owned by uid {owner}, not by you (uid {me}), so another user can re-point it; remove it and restart atmd"
    )]
    DirLink {
        socket: PathBuf,
        dir: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error(
        "refusing {socket}: the process serving it runs as uid {peer}, not as you (uid {me}) or root, so it is not your atmd; remove the socket's directory and restart atmd"
    )]
    Peer { socket: PathBuf, peer: u32, me: u32 },
    #[error("cannot check {path} before connecting: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks the directory holding `socket` (see the module doc).
pub fn check_socket_dir(socket: &Path) -> Result<(), TrustError> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |source| TrustError::Io {
        path: dir.to_owned(),
        source,
    };
    let me = crate::paths::uid();
    let link = std::fs::symlink_metadata(dir).map_err(io)?;
    if link.file_type().is_symlink() && link.uid() != me {
        return Err(TrustError::DirLink {
            socket: socket.to_owned(),
            dir: dir.to_owned(),
            owner: link.uid(),
            me,
        });
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    match crate::paths::check_private(&meta, me) {
        Ok(_) => Ok(()),
        Err(NotPrivate::Owner(owner)) => Err(TrustError::DirOwner {
            socket: socket.to_owned(),
            dir: dir.to_owned(),
            owner,
            me,
        }),
        Err(NotPrivate::Writable(mode)) => Err(TrustError::DirMode {
            socket: socket.to_owned(),
            dir: dir.to_owned(),
            mode,
        }),
    }
}

/// Checks who is at the other end of a connected `socket`: us or root. Call after connecting
/// and before writing anything.
pub fn check_socket_peer(socket: &Path, stream: impl AsFd) -> Result<(), TrustError> {
    let cred = rustix::net::sockopt::socket_peercred(&stream).map_err(|e| TrustError::Io {
        path: socket.to_owned(),
        source: e.into(),
    })?;
    let peer = cred.uid.as_raw();
    let me = crate::paths::uid();
    if peer == me || peer == 0 {
        Ok(())
    } else {
        Err(TrustError::Peer {
            socket: socket.to_owned(),
            peer,
            me,
        })
    }
}

/// Why [`connect`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Something answers, but it is not to be trusted; the client must say so.
    #[error(transparent)]
    Untrusted(TrustError),
    /// No socket, nothing answering, or no answer in time (`WouldBlock`): the daemon is not
    /// running or is stuck.
    #[error("cannot connect to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConnectError {
    /// The I/O error's kind, when the failure was not a refusal.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            Self::Untrusted(TrustError::Io { source, .. }) => Some(source.kind()),
            Self::Untrusted(_) => None,
        }
    }
}

/// Connects to a daemon socket the way every client must: `connect` bounded by `timeout` (the
/// send timeout is set before connecting, which on Linux also bounds a connect to a daemon whose
/// accept queue is full), then the directory and the peer checked before anything is sent. The
/// stream comes back with no timeouts set beyond the send timeout.
pub fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream, ConnectError> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let io = |source: std::io::Error| ConnectError::Io {
        path: socket.to_owned(),
        source,
    };
    let addr = SocketAddrUnix::new(socket).map_err(|e| io(e.into()))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io(e.into()))?;
    // A zero timeout means "none" to the kernel.
    let timeout = timeout.max(Duration::from_millis(1));
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Send,
        Some(timeout),
    )
    .map_err(|e| io(e.into()))?;
    let started = std::time::Instant::now();
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) if started.elapsed() < timeout => {}
            Err(e) => return Err(io(e.into())),
        }
    }
    let stream = UnixStream::from(fd);
    // Checked once something answers (nothing is sent before), so that a missing or dead
    // daemon reads as "not running" whatever its directory looks like.
    check_socket_dir(socket).map_err(ConnectError::Untrusted)?;
    check_socket_peer(socket, &stream).map_err(ConnectError::Untrusted)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Creates `path` as a directory only its owner may enter (what atm makes).
    fn private_dir(path: &Path) {
        std::fs::create_dir(path).unwrap();
        chmod(path, 0o700);
    }

    #[test]
    fn a_private_dir_is_trusted_and_an_open_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("atm");
        private_dir(&dir);
        let socket = dir.join("hooks.sock");
        check_socket_dir(&socket).unwrap();
        // Others may read or enter (nothing to tamper with there), never write.
        for mode in [0o755, 0o750, 0o711] {
            chmod(&dir, mode);
            check_socket_dir(&socket).unwrap();
        }
        for mode in [0o770, 0o722, 0o777, 0o1777] {
            chmod(&dir, mode);
            let err = check_socket_dir(&socket).unwrap_err();
            assert!(matches!(err, TrustError::DirMode { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod 700"), "{err}");
        }
    }

    #[test]
    fn a_missing_dir_is_not_found_not_distrusted() {
        let tmp = tempfile::tempdir().unwrap();
        let err = check_socket_dir(&tmp.path().join("gone/hooks.sock")).unwrap_err();
        assert!(
            matches!(&err, TrustError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
    }

    #[test]
    fn our_own_link_to_a_private_dir_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        private_dir(&real);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        check_socket_dir(&link.join("atm.sock")).unwrap();
        // The target decides the rest: an open target is refused through the link too.
        chmod(&real, 0o777);
        assert!(check_socket_dir(&link.join("atm.sock")).is_err());
    }

    #[test]
    fn connect_reaches_our_own_listener_and_reports_a_missing_one() {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o700);
        let path = tmp.path().join("q.sock");
        let err = connect(&path, Duration::from_millis(100)).unwrap_err();
        assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound), "{err}");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        connect(&path, Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn a_peer_of_our_own_uid_is_trusted() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        check_socket_peer(Path::new("pair"), &a).unwrap();
    }
}
