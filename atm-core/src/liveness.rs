//! Event-driven liveness: a session's process exit is seen the moment the kernel reports it.
//!
//! Polling `/proc` notices an exit only at the next pass (up to the scan interval late) and wakes
//! the daemon even when nothing happens. Instead, [`ExitWatcher`] follows the registry and holds a
//! pidfd (`pidfd_open(2)`) for every session's process; a pidfd becomes readable when its process
//! exits, so the watcher sleeps until an agent exits and then asks the registry to drop the
//! sessions whose process is gone (`cleanup_stale`, the same path as the janitor, which re-checks
//! `/proc` and so never removes a live session on a stale signal).
//!
//! Bounded: at most [`MAX_WATCHED`] processes hold a pidfd (each is one file descriptor); sessions
//! beyond that, and processes a pidfd cannot be opened for (another PID namespace, an old kernel),
//! fall back to the janitor's periodic check. Exits are reported through a queue of
//! [`EXIT_QUEUE`] entries; when it is full an exit is dropped, which loses nothing, because the
//! cleanup already queued removes every dead process at once.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::model::{ProcessIdentity, Session};
use crate::registry::{RegistryError, RegistryHandle, SessionChange};
use crate::registry_follow::{Followed, RegistryFollower};

/// Processes watched by pidfd at most; the rest are left to the janitor.
pub const MAX_WATCHED: usize = 512;

/// Pending exit reports at most (overflow: dropped; one cleanup covers them all).
pub const EXIT_QUEUE: usize = 64;

/// Follows the registry and removes a session as soon as its process exits.
pub struct ExitWatcher {
    registry: RegistryHandle,
    cancel: CancellationToken,
}

impl ExitWatcher {
    pub fn new(registry: RegistryHandle, cancel: CancellationToken) -> Self {
        Self { registry, cancel }
    }

    /// Runs until cancelled or the registry stops.
    pub async fn run(self) {
        let (exits_tx, mut exits) = mpsc::channel::<ProcessIdentity>(EXIT_QUEUE);
        let mut watches = Watches::new(exits_tx);
        let Ok((snapshot, mut follower)) =
            RegistryFollower::start(self.registry.clone(), self.cancel.clone()).await
        else {
            return;
        };
        watches.resync(&snapshot.sessions);
        loop {
            tokio::select! {
                biased;
                Some(p) = exits.recv() => {
                    watches.forget(p);
                    self.cleanup(p).await;
                }
                followed = follower.next() => match followed {
                    None => break,
                    Some(Followed::Resync { snapshot, .. }) => watches.resync(&snapshot.sessions),
                    Some(Followed::Changes(changes)) => {
                        for ev in changes {
                            match (&ev.change, ev.session.process) {
                                (SessionChange::Removed { .. }, Some(p)) => watches.forget(p),
                                (SessionChange::Added | SessionChange::Updated, Some(p)) => {
                                    watches.watch(p);
                                }
                                (_, None) => {}
                            }
                        }
                    }
                },
                Some(_) = watches.tasks.join_next(), if !watches.tasks.is_empty() => {}
            }
        }
        watches.tasks.abort_all();
    }

    async fn cleanup(&self, p: ProcessIdentity) {
        match self.registry.cleanup_stale().await {
            Ok(removed) if !removed.is_empty() => {
                debug!(pid = p.pid, removed = removed.len(), "agent process exited");
            }
            Ok(_) | Err(RegistryError::ChannelClosed) => {}
            Err(e) => warn!(error = %e, "cleanup after a process exit failed"),
        }
    }
}

/// The processes watched by pidfd: one task each, which reports the exit on `exits`.
struct Watches {
    watched: HashMap<ProcessIdentity, AbortHandle>,
    tasks: JoinSet<()>,
    exits: mpsc::Sender<ProcessIdentity>,
    over_limit_logged: bool,
}

impl Watches {
    fn new(exits: mpsc::Sender<ProcessIdentity>) -> Self {
        Self {
            watched: HashMap::new(),
            tasks: JoinSet::new(),
            exits,
            over_limit_logged: false,
        }
    }

    /// Watches exactly the processes of `sessions` (after a resync).
    fn resync(&mut self, sessions: &[Arc<Session>]) {
        let live: Vec<ProcessIdentity> = sessions.iter().filter_map(|s| s.process).collect();
        self.watched.retain(|p, h| {
            let keep = live.contains(p);
            if !keep {
                h.abort();
            }
            keep
        });
        for p in live {
            self.watch(p);
        }
    }

    fn forget(&mut self, p: ProcessIdentity) {
        if let Some(h) = self.watched.remove(&p) {
            h.abort();
        }
    }

    fn watch(&mut self, p: ProcessIdentity) {
        if self.watched.contains_key(&p) {
            return;
        }
        if self.watched.len() >= MAX_WATCHED {
            if !self.over_limit_logged {
                self.over_limit_logged = true;
                warn!(
                    limit = MAX_WATCHED,
                    "more agent processes than pidfd watches; the rest are checked by the periodic cleanup"
                );
            }
            return;
        }
        let Some(fd) = open_pidfd(p) else {
            // Already gone, or not ours to watch: the cleanup decides, with `/proc`.
            let _ = self.exits.try_send(p);
            return;
        };
        let exits = self.exits.clone();
        let handle = self.tasks.spawn(async move {
            if let Ok(fd) = async_owned_fd(fd) {
                // Readable means exited; an error means the fd is unusable: let cleanup look.
                let _ = fd.readable().await;
            }
            let _ = exits.try_send(p);
        });
        self.watched.insert(p, handle);
    }
}

/// Registers `fd` with the runtime's reactor (a pidfd, an inotify fd: anything that polls).
///
/// `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` may hand out another descriptor
/// later; an `OwnedFd` owns exactly one for its whole life, which is the contract the unsafe
/// `AsyncFd::register` asks for (and atm forbids `unsafe`).
pub fn async_owned_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    #[allow(deprecated)]
    AsyncFd::new(fd)
}

/// A pidfd for `p`, if `p` is still the process it names (its start time matches after the open,
/// so a reused PID is never watched in its place).
fn open_pidfd(p: ProcessIdentity) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(p.pid).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()?;
    (crate::process::identity(p.pid) == Some(p)).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_is_refused_for_a_reused_or_dead_pid() {
        let me = crate::process::identity(std::process::id()).unwrap();
        assert!(open_pidfd(me).is_some());
        let reused = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(open_pidfd(reused).is_none());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(open_pidfd(ProcessIdentity { pid, start_time: 1 }).is_none());
    }
}
