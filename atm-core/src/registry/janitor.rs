//! The janitor: removes sessions whose process exited and silent sessions with no process.
//!
//! It runs as its own task, tracked by a cancellation token (a child of the token given to
//! [`Registry::start_in`](super::Registry::start_in), in the daemon part of its cancellation
//! tree), and stops when that token is cancelled or the registry stops. The `/proc` reads
//! happen off the actor; the actor only re-checks, under its own order, that a session judged
//! stale has not spoken since.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{RegistryError, RegistryHandle};
use crate::model::{Session, SessionKey};

/// The janitor's task and the token that stops it.
#[derive(Debug)]
pub struct Janitor {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Janitor {
    /// Starts the janitor (none when `every` is zero), stopped by `cancel`.
    pub(super) fn start(
        handle: RegistryHandle,
        every: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let task = (!every.is_zero()).then(|| tokio::spawn(run(handle, every, cancel.clone())));
        Self { cancel, task }
    }

    /// True while the janitor's task runs.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Cancels the janitor and waits for its task to end.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            warn!(error = %e, "the registry janitor ended abnormally");
        }
    }
}

/// Every `every`, removes stale sessions; ends on cancellation or when the registry stops.
async fn run(handle: RegistryHandle, every: Duration, cancel: CancellationToken) {
    loop {
        // One wake-up per round (`crate::timer`): the janitor runs in an idle daemon too.
        tokio::select! {
            () = cancel.cancelled() => return,
            () = crate::timer::sleep_until(tokio::time::Instant::now() + every) => {}
        }
        let removed = tokio::select! {
            () = cancel.cancelled() => return,
            removed = handle.cleanup_stale() => removed,
        };
        match removed {
            Ok(removed) if !removed.is_empty() => {
                debug!(count = removed.len(), "removed stale sessions")
            }
            Ok(_) => {}
            Err(RegistryError::ChannelClosed) => return,
            Err(e) => warn!(error = %e, "stale-session cleanup failed"),
        }
    }
}

/// The sessions that are stale at `now`, with the removal reason: "process exited" for a
/// session whose process is gone, "expired" for one with no process that has been silent for
/// longer than `expiry`. Reads `/proc` (under `proc_root`) once per session with a process.
pub(super) fn judge(
    sessions: &[Arc<Session>],
    proc_root: &Path,
    expiry: Duration,
    now: DateTime<Utc>,
) -> Vec<(SessionKey, String)> {
    sessions
        .iter()
        .filter_map(|s| {
            if s.is_remote() {
                return None; // The mirror keeps remote sessions, by their host's heartbeat.
            }
            let reason = match s.process {
                Some(p) if !crate::process::is_alive_in(proc_root, p) => "process exited",
                None if silent(s, expiry, now) => "expired",
                _ => return None,
            };
            Some((s.key.clone(), reason.to_owned()))
        })
        .collect()
}

/// True when a session judged stale still is: what can have changed since the judgement is
/// new activity (a process that exited stays exited).
pub(super) fn still_stale(s: &Session, expiry: Duration, now: DateTime<Utc>) -> bool {
    s.process.is_some() || silent(s, expiry, now)
}

fn silent(s: &Session, expiry: Duration, now: DateTime<Utc>) -> bool {
    let expiry = chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::MAX);
    now - s.last_activity > expiry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Harness, ProcessIdentity, SessionId};

    #[test]
    fn stale_means_exited_or_silent_without_a_process() {
        let now = Utc::now();
        let expiry = Duration::from_secs(60);
        let dir = tempfile::tempdir().unwrap();
        let mk = |id: &str, process: Option<ProcessIdentity>, silent_for: i64| {
            let key = SessionKey::Id {
                harness: Harness::claude(),
                id: SessionId::new(id),
            };
            let mut s = Session::new(key, SessionId::new(id), process, "t", now);
            s.last_activity = now - chrono::Duration::seconds(silent_for);
            Arc::new(s)
        };
        // An empty proc root: every process is gone.
        let gone = ProcessIdentity {
            pid: 4242,
            start_time: 1,
        };
        let sessions = [
            mk("fresh", None, 10),
            mk("silent", None, 61),
            mk("exited", Some(gone), 0),
        ];
        let judged = judge(&sessions, dir.path(), expiry, now);
        let reasons: Vec<(&str, &str)> = judged
            .iter()
            .map(|(k, r)| match k {
                SessionKey::Id { id, .. } => (id.as_str(), r.as_str()),
                SessionKey::Process { .. } | SessionKey::Remote { .. } => ("?", r.as_str()),
            })
            .collect();
        assert_eq!(
            reasons,
            [("silent", "expired"), ("exited", "process exited")]
        );
        assert!(!still_stale(&sessions[0], expiry, now));
        assert!(still_stale(&sessions[1], expiry, now));
        assert!(still_stale(&sessions[2], expiry, now));
    }
}
