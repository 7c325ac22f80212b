//! Unix-socket helpers every listener in atm shares: bind a socket only its owner can use, and
//! check who is on the other end of an accepted connection.
//!
//! The ingest hub, the query socket of the socket sink and out-of-tree plugins all listen on
//! sockets in the runtime dir. Each one must refuse other users the same way, so the two checks
//! live here once, apart from any one listener's protocol.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

/// Who is on the other end of a connection, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
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
/// `what` names the socket in the log line.
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
