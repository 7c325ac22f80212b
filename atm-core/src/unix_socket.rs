//! Unix-socket helpers every listener in atm shares: bind a socket only its owner can use, and
//! check who is on the other end of an accepted connection.
//!
//! The ingest hub, the query socket of the socket sink and out-of-tree plugins all listen on
//! sockets in the runtime dir. Each one must refuse other users the same way, so the two checks
//! live here once, apart from any one listener's protocol.
//!
//! The runtime dir can vanish under a running daemon (a cleaner of `/tmp`, a logout that
//! removes `$XDG_RUNTIME_DIR`, a user's `rm -rf`). The daemon notices, recreates it privately
//! and raises a [`RebindSignal`]; every [`PrivateListener`] then binds its path again if its
//! socket file is gone or is no longer the one it bound, so clients find the sockets within a
//! moment and connections already open carry on untouched.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The pause after a failed accept (out of file descriptors, usually) before the next one.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

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

/// Raised by the daemon when its runtime dir was recreated (or a socket file in it removed):
/// every listener subscribed through a [`RebindWatch`] checks its socket file.
#[derive(Debug, Clone)]
pub struct RebindSignal(Arc<watch::Sender<u64>>);

impl Default for RebindSignal {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl RebindSignal {
    /// Tells every subscribed listener to check its socket file now.
    pub fn raise(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> RebindWatch {
        RebindWatch(Some(self.0.subscribe()))
    }
}

/// A listener's end of the [`RebindSignal`]. The default one never fires (a listener outside a
/// daemon, in a test or a tool, has nobody to recreate its directory).
#[derive(Debug, Clone, Default)]
pub struct RebindWatch(Option<watch::Receiver<u64>>);

impl RebindWatch {
    /// Resolves when the signal is raised; never, if there is no daemon behind it.
    async fn raised(&mut self) {
        if let Some(rx) = &mut self.0
            && rx.changed().await.is_ok()
        {
            return;
        }
        self.0 = None;
        std::future::pending::<()>().await;
    }
}

/// A Unix socket bound with [`bind_private`] that stays reachable at its path: when the
/// [`RebindWatch`] fires and the file at the path is gone or another one, it binds again.
/// Dropping it removes the socket file if it is still the one it bound.
#[derive(Debug)]
pub struct PrivateListener {
    listener: UnixListener,
    path: PathBuf,
    inode: Option<(u64, u64)>,
    rebind: RebindWatch,
}

fn inode_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl PrivateListener {
    pub fn bind(path: &Path, rebind: RebindWatch) -> Result<Self, BindError> {
        let listener = bind_private(path)?;
        Ok(Self {
            listener,
            inode: inode_of(path),
            path: path.to_owned(),
            rebind,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection. Rebinds in between when told to (see the module docs).
    pub async fn accept(&mut self) -> std::io::Result<UnixStream> {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => return accepted.map(|(s, _)| s),
                () = self.rebind.raised() => self.rebind_if_gone(),
            }
        }
    }

    /// The next connection from this user, with its peer, or `None` once `cancel` fires. A
    /// failed accept (EMFILE and friends) is logged and retried after a pause instead of
    /// spinning; a connection from another user is refused ([`check_peer`]). `what` names the
    /// socket in log lines. What every accept loop in atm starts with.
    pub async fn accept_own(
        &mut self,
        cancel: &CancellationToken,
        what: &str,
    ) -> Option<(UnixStream, Peer)> {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return None,
                a = self.accept() => a,
            };
            match accepted {
                Ok(stream) => {
                    if let Some(peer) = check_peer(&stream, what) {
                        return Some((stream, peer));
                    }
                }
                Err(e) => {
                    warn!(socket = what, error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }

    /// Binds the path again if the socket file there is not the one this listener bound.
    fn rebind_if_gone(&mut self) {
        if self.inode.is_some() && inode_of(&self.path) == self.inode {
            return;
        }
        match bind_private(&self.path) {
            Ok(listener) => {
                self.listener = listener;
                self.inode = inode_of(&self.path);
                info!(path = %self.path.display(), "socket file was gone; listening again");
            }
            Err(BindError::InUse) => warn!(
                path = %self.path.display(),
                "socket file was replaced by one another process serves; not taking it back"
            ),
            Err(BindError::Io(e)) => warn!(
                path = %self.path.display(),
                error = %e,
                "socket file was gone and cannot be bound again"
            ),
        }
    }
}

impl Drop for PrivateListener {
    fn drop(&mut self) {
        if self.inode.is_some() && inode_of(&self.path) == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
