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
//! beyond that, and processes a pidfd cannot be opened for (another PID namespace, an old kernel,
//! a sandbox without `pidfd_open`), fall back to the janitor's periodic check. Such a process is
//! remembered as unwatchable until its session goes, so its next events do not try again: a
//! retry per event, each failing into a full cleanup, would read `/proc` for every session on
//! every hook event. Exits are reported through a queue of
//! [`EXIT_QUEUE`] entries; when it is full an exit is dropped, which loses nothing, because the
//! cleanup already queued removes every dead process at once.
//!
//! Started next to the registry by whoever assembles a daemon (`atmd` does, with the janitor's
//! interval as its switch), so that the registry knows nothing of the followers it feeds.

use std::collections::{HashMap, HashSet};
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
    /// Processes no pidfd could be had for (gone already, or not watchable here): left to the
    /// janitor, and not tried again until their session goes. At most [`MAX_WATCHED`].
    unwatchable: HashSet<ProcessIdentity>,
    tasks: JoinSet<()>,
    exits: mpsc::Sender<ProcessIdentity>,
    open: fn(ProcessIdentity) -> Result<AsyncFd<OwnedFd>, Unwatchable>,
    over_limit_logged: bool,
    unsupported_logged: bool,
}

/// Why a process has no pidfd watch.
#[derive(Debug)]
enum Unwatchable {
    /// The process is not (or no longer) the one the session names: the cleanup removes it.
    Gone,
    /// `pidfd_open` or the reactor refused (an old kernel, another PID namespace, a sandbox).
    Unsupported(std::io::Error),
}

impl Watches {
    fn new(exits: mpsc::Sender<ProcessIdentity>) -> Self {
        Self::with_opener(exits, open_pidfd)
    }

    fn with_opener(
        exits: mpsc::Sender<ProcessIdentity>,
        open: fn(ProcessIdentity) -> Result<AsyncFd<OwnedFd>, Unwatchable>,
    ) -> Self {
        Self {
            watched: HashMap::new(),
            unwatchable: HashSet::new(),
            tasks: JoinSet::new(),
            exits,
            open,
            over_limit_logged: false,
            unsupported_logged: false,
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
        self.unwatchable.retain(|p| live.contains(p));
        for p in live {
            self.watch(p);
        }
    }

    fn forget(&mut self, p: ProcessIdentity) {
        if let Some(h) = self.watched.remove(&p) {
            h.abort();
        }
        self.unwatchable.remove(&p);
    }

    fn watch(&mut self, p: ProcessIdentity) {
        if self.watched.contains_key(&p) || self.unwatchable.contains(&p) {
            return;
        }
        if self.watched.len() + self.unwatchable.len() >= MAX_WATCHED {
            if !self.over_limit_logged {
                self.over_limit_logged = true;
                warn!(
                    limit = MAX_WATCHED,
                    "more agent processes than pidfd watches; the rest are checked by the periodic cleanup"
                );
            }
            return;
        }
        let fd = match (self.open)(p) {
            Ok(fd) => fd,
            Err(why) => {
                self.unwatchable.insert(p);
                match why {
                    // The cleanup decides, with `/proc`; once, not on every later event.
                    Unwatchable::Gone => {
                        let _ = self.exits.try_send(p);
                    }
                    Unwatchable::Unsupported(e) if !self.unsupported_logged => {
                        self.unsupported_logged = true;
                        debug!(pid = p.pid, error = %e, "no pidfd for an agent process; its exit is seen by the periodic cleanup");
                    }
                    Unwatchable::Unsupported(_) => {}
                }
                return;
            }
        };
        let exits = self.exits.clone();
        let handle = self.tasks.spawn(async move {
            // Readable means exited; an error means the fd is unusable: let cleanup look.
            let _ = fd.readable().await;
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

/// A pidfd for `p` on the reactor, if `p` is still the process it names (its start time matches
/// after the open, so a reused PID is never watched in its place).
fn open_pidfd(p: ProcessIdentity) -> Result<AsyncFd<OwnedFd>, Unwatchable> {
    let pid = i32::try_from(p.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(Unwatchable::Gone)?;
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Err(Unwatchable::Gone),
        Err(e) => return Err(Unwatchable::Unsupported(e.into())),
    };
    if crate::process::identity(p.pid) != Some(p) {
        return Err(Unwatchable::Gone);
    }
    async_owned_fd(fd).map_err(Unwatchable::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pidfd_is_refused_for_a_reused_or_dead_pid() {
        let me = crate::process::identity(std::process::id()).unwrap();
        assert!(open_pidfd(me).is_ok());
        let reused = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(matches!(open_pidfd(reused), Err(Unwatchable::Gone)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = open_pidfd(ProcessIdentity { pid, start_time: 1 });
        assert!(matches!(dead, Err(Unwatchable::Gone)), "{dead:?}");
    }

    fn unsupported(_: ProcessIdentity) -> Result<AsyncFd<OwnedFd>, Unwatchable> {
        Err(Unwatchable::Unsupported(std::io::Error::from_raw_os_error(
            38, // ENOSYS: a kernel or sandbox without pidfd_open
        )))
    }

    fn gone(_: ProcessIdentity) -> Result<AsyncFd<OwnedFd>, Unwatchable> {
        Err(Unwatchable::Gone)
    }

    const P: ProcessIdentity = ProcessIdentity {
        pid: 4242,
        start_time: 7,
    };

    /// Every event of a session re-announces its process; without a pidfd, each must not become
    /// an exit report (a full `/proc` cleanup per hook event).
    #[tokio::test]
    async fn a_process_without_a_pidfd_is_tried_once_per_session() {
        let (tx, mut rx) = mpsc::channel(EXIT_QUEUE);
        let mut watches = Watches::with_opener(tx, unsupported);
        for _ in 0..100 {
            watches.watch(P);
        }
        assert!(
            rx.try_recv().is_err(),
            "no exit reported for a live process"
        );

        let (tx, mut rx) = mpsc::channel(EXIT_QUEUE);
        let mut watches = Watches::with_opener(tx, gone);
        for _ in 0..100 {
            watches.watch(P);
        }
        assert_eq!(rx.try_recv().ok(), Some(P));
        assert!(rx.try_recv().is_err(), "a gone process is reported once");
        // Its session went and came back: it is looked at again.
        watches.forget(P);
        watches.watch(P);
        assert_eq!(rx.try_recv().ok(), Some(P));
        // A resync without it forgets it too.
        watches.resync(&[]);
        watches.watch(P);
        assert_eq!(rx.try_recv().ok(), Some(P));
    }
}
