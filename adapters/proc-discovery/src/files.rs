//! Claude Code's session files, watched with inotify so a change is seen when it happens.
//!
//! Claude rewrites `sessions/<pid>.json` whenever the process changes state (`busy`, `idle`,
//! `waiting`), including when no hook fires: Esc while it works, a declined permission. A scan
//! every interval would see that up to an interval late and wake the daemon for nothing the rest
//! of the time, so the adapter watches each sessions dir it knows of and runs a pass as soon as a
//! file in one changes (events that arrive together are drained into one pass).
//!
//! Bounded: at most [`MAX_DIRS`] directories are watched (one per distinct `CLAUDE_CONFIG_DIR`);
//! a dir that does not exist yet is tried again at the next pass. If inotify is unavailable the
//! adapter keeps scanning on its interval only.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use atm_core::tokio::io::unix::AsyncFd;
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

/// Directories watched at most.
pub const MAX_DIRS: usize = 64;

pub struct SessionFilesWatch {
    fd: AsyncFd<OwnedFd>,
    watched: HashSet<PathBuf>,
}

impl SessionFilesWatch {
    /// An inotify instance with nothing watched yet.
    pub fn new() -> std::io::Result<Self> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        Ok(Self {
            fd: atm_core::liveness::async_owned_fd(fd)?,
            watched: HashSet::new(),
        })
    }

    /// Starts watching the dirs in `dirs` not watched yet (those that exist now).
    pub fn watch(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        for dir in dirs {
            if self.watched.len() >= MAX_DIRS || self.watched.contains(&dir) {
                continue;
            }
            let flags = WatchFlags::CLOSE_WRITE
                | WatchFlags::MODIFY
                | WatchFlags::MOVED_TO
                | WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::ONLYDIR
                | WatchFlags::DONT_FOLLOW;
            if inotify::add_watch(self.fd.get_ref(), &dir, flags).is_ok() {
                self.watched.insert(dir);
            }
        }
    }

    /// How many dirs are watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Resolves when something changed in a watched dir, after draining every event queued so
    /// far (so a burst of writes costs one pass).
    pub async fn changed(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut any = false;
            loop {
                let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
                match reader.next() {
                    Ok(_) => {
                        any = true;
                        // Drain the rest of this read's buffer.
                        while reader.next().is_ok() {}
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(_) => {
                        guard.clear_ready();
                        break;
                    }
                }
            }
            if any {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_in_a_watched_dir_is_seen_and_unwatched_dirs_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = dir.path().join("sessions");
        std::fs::create_dir(&sessions).unwrap();
        let mut w = SessionFilesWatch::new().unwrap();
        w.watch([sessions.clone(), dir.path().join("missing")]);
        assert_eq!(w.watched(), 1, "a missing dir is not watched (yet)");
        std::fs::write(dir.path().join("elsewhere.json"), b"{}").unwrap();
        let quiet =
            atm_core::tokio::time::timeout(std::time::Duration::from_millis(200), w.changed())
                .await;
        assert!(
            quiet.is_err(),
            "a write outside the watched dir is not a change"
        );
        std::fs::write(sessions.join("123.json"), b"{\"status\":\"idle\"}").unwrap();
        std::fs::write(sessions.join("123.json"), b"{\"status\":\"busy\"}").unwrap();
        atm_core::tokio::time::timeout(std::time::Duration::from_secs(10), w.changed())
            .await
            .expect("the write is seen");
        let drained =
            atm_core::tokio::time::timeout(std::time::Duration::from_millis(200), w.changed())
                .await;
        assert!(drained.is_err(), "both writes were drained into one change");
    }
}
