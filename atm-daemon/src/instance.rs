//! One atmd per user: the instance lock, and the runtime dir kept in place while atmd runs.
//!
//! The lock is held twice. `atmd.lock` in the runtime dir says which pid serves the sockets
//! there (what earlier versions held). But the runtime dir can be deleted under a running atmd
//! (a `/tmp` cleaner, a logout, a user's `rm -rf`): that lock then lives on an unlinked file no
//! later atmd sees, and a second atmd would start beside the first. So atmd also locks
//! `atmd.lock` in its state dir, next to the snapshot that two daemons must never share, and a
//! daemon starts only with both.
//!
//! [`RuntimeDirKeeper`] watches the runtime dir with inotify for its own deletion or move and
//! for entries removed from it. inotify costs nothing while nothing happens; checking the dir
//! every second instead would wake the idle daemon once a second, twice its whole idle budget,
//! and a slower check would miss the one-second promise. On an event (or when SIGHUP asks) it
//! recreates the dir (`0700`, never through a symlink: [`atm_core::paths::ensure_private_dir`]),
//! takes the lock in it again and raises the [`RebindSignal`], on which every listener binds
//! its socket again.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use atm_core::unix_socket::RebindSignal;
use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// After a failed recreation (another user took the path, a full disk), try again this often.
const RETRY: Duration = Duration::from_secs(5);

/// The runtime dir and the state dir, each held exclusively by this daemon through a lock on
/// its `atmd.lock`.
pub struct InstanceLock {
    pub dir: PathBuf,
    runtime: File,
    _state: File,
}

/// Creates (0700) and locks the runtime dir, and locks the state dir. A second daemon gets an
/// error naming the first.
pub fn claim(runtime_dir: &Path, state_dir: &Path) -> anyhow::Result<InstanceLock> {
    atm_core::paths::ensure_private_dir(runtime_dir)?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    let state = lock_in(state_dir)?;
    let runtime = lock_in(runtime_dir)?;
    Ok(InstanceLock {
        dir: runtime_dir.to_owned(),
        runtime,
        _state: state,
    })
}

/// Locks `dir/atmd.lock` (never through a symlink) and writes our pid into it.
fn lock_in(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(atm_core::paths::LOCK_FILE);
    let mut file = atm_core::paths::no_follow(
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
    .open(&path)
    .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                "another atmd".to_owned()
            } else {
                format!("another atmd (pid {pid})")
            };
            anyhow::bail!(
                "{who} is already running for {}; stop it first{}, or set XDG_RUNTIME_DIR and \
                 XDG_STATE_HOME to run a separate instance",
                dir.display(),
                if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (kill {pid})")
                }
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Keeps the runtime dir, its lock and (through the [`RebindSignal`]) its sockets in place.
pub struct RuntimeDirKeeper {
    check: Arc<Notify>,
    cancel: CancellationToken,
    task: JoinHandle<InstanceLock>,
}

impl RuntimeDirKeeper {
    pub fn start(lock: InstanceLock, rebind: RebindSignal) -> Self {
        // Watched before this returns, so nothing done to the dir from now on goes unseen.
        let watch = match DirWatch::new(&lock.dir) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(dir = %lock.dir.display(), error = %e,
                    "cannot watch the runtime dir; if it is deleted, send SIGHUP to recreate it");
                None
            }
        };
        let check = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(keep(lock, watch, rebind, check.clone(), cancel.clone()));
        Self {
            check,
            cancel,
            task,
        }
    }

    /// Checks the dir, the lock and the sockets now (SIGHUP).
    pub fn check_now(&self) {
        self.check.notify_one();
    }

    /// Stops watching and hands the lock back, to be released last.
    pub async fn stop(self) -> Option<InstanceLock> {
        self.cancel.cancel();
        self.task.await.ok()
    }
}

async fn keep(
    mut lock: InstanceLock,
    watch: Option<DirWatch>,
    rebind: RebindSignal,
    check: Arc<Notify>,
    cancel: CancellationToken,
) -> InstanceLock {
    let mut retry_at = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return lock,
            () = check.notified() => {}
            changed = changed_opt(watch.as_ref()) => if let Err(e) = changed {
                warn!(error = %e, "watching the runtime dir failed");
            },
            () = sleep_until_opt(retry_at) => {}
        }
        retry_at = None;
        match restore(&mut lock) {
            Ok(recreated) => {
                if recreated {
                    warn!(dir = %lock.dir.display(),
                        "the runtime dir was deleted while atmd ran; recreated it, its lock and its sockets");
                }
                if let Some(w) = &watch
                    && let Err(e) = w.add(&lock.dir)
                {
                    warn!(error = %e, "cannot watch the recreated runtime dir");
                }
                rebind.raise();
            }
            Err(e) => {
                error!(dir = %lock.dir.display(), error = %e, retry_in = ?RETRY,
                    "the runtime dir is gone and cannot be recreated; clients cannot reach atmd");
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

/// Recreates the runtime dir and its lock if either is gone; true when something was.
fn restore(lock: &mut InstanceLock) -> anyhow::Result<bool> {
    let existed = std::fs::symlink_metadata(&lock.dir).is_ok_and(|m| m.is_dir());
    atm_core::paths::ensure_private_dir(&lock.dir)?;
    let path = lock.dir.join(atm_core::paths::LOCK_FILE);
    let held = lock.runtime.metadata().ok().map(|m| (m.dev(), m.ino()));
    let there = std::fs::symlink_metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    if existed && held.is_some() && held == there {
        return Ok(false);
    }
    lock.runtime = lock_in(&lock.dir)?;
    Ok(true)
}

/// An inotify watch on the runtime dir: its deletion or move, and entries removed from it.
struct DirWatch {
    fd: AsyncFd<OwnedFd>,
}

impl DirWatch {
    fn new(dir: &Path) -> std::io::Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        // Deprecated because a type's descriptor could change or be closed under the reactor;
        // an `OwnedFd` that only this struct holds does neither, and the safe call keeps the
        // workspace free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        let watch = Self { fd };
        watch.add(dir)?;
        Ok(watch)
    }

    /// Watches `dir` (again, after it was recreated: the old watch ended with the old dir).
    fn add(&self, dir: &Path) -> std::io::Result<()> {
        use inotify::WatchFlags as W;
        let flags = W::DELETE_SELF | W::MOVE_SELF | W::DELETE | W::MOVED_FROM | W::ONLYDIR;
        inotify::add_watch(self.fd.get_ref(), dir, flags | W::DONT_FOLLOW)?;
        Ok(())
    }

    /// Resolves once something happened to the dir (all queued events read).
    async fn changed(&self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
            let mut any = false;
            loop {
                match reader.next() {
                    Ok(_) => any = true,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            guard.clear_ready();
            if any {
                return Ok(());
            }
        }
    }
}

async fn changed_opt(watch: Option<&DirWatch>) -> std::io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_lock_outlives_a_deleted_runtime_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, state) = (tmp.path().join("run"), tmp.path().join("state"));
        let _first = claim(&run, &state).unwrap();
        std::fs::remove_dir_all(&run).unwrap();
        // The runtime dir's lock went with the dir; the state dir's still refuses.
        let err = claim(&run, &state).err().unwrap().to_string();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_deleted_runtime_dir_is_recreated_privately_with_its_lock_and_listeners_told() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (run, state) = (tmp.path().join("run"), tmp.path().join("state"));
        let rebind = RebindSignal::default();
        let listener =
            atm_core::unix_socket::PrivateListener::bind(&run.join("q.sock"), rebind.subscribe())
                .unwrap();
        let mut listener = listener;
        let accepting = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let keeper = RuntimeDirKeeper::start(claim(&run, &state).unwrap(), rebind);
        std::fs::remove_dir_all(&run).unwrap();
        atm_core::testing::wait_until("the socket to be bound again", || async {
            run.join("q.sock").exists() && run.join("atmd.lock").exists()
        })
        .await;
        let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // The recreated lock is held: a second claim is refused by it too.
        let lock = File::open(run.join("atmd.lock")).unwrap();
        assert!(lock.try_lock().is_err());
        // And the rebound socket is served.
        std::os::unix::net::UnixStream::connect(run.join("q.sock")).unwrap();
        accepting.await.unwrap().unwrap();
        assert!(keeper.stop().await.is_some());
    }
}
