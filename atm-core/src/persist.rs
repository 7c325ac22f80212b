//! Persistence of the registry: a JSON snapshot at `$XDG_STATE_HOME/atm/sessions.json`.
//!
//! Written atomically (temporary file, fsync, rename) after a short debounce and on shutdown, so
//! a restart, even after `kill -9`, loses at most the last debounce window of changes. On load,
//! only sessions whose process still lives (or, with no process, that are not yet expired) come
//! back. A snapshot that cannot be read is moved aside with a warning, never a crash.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::model::Session;

/// Bumped when the file's meaning changes; older files are moved aside, not misread.
pub const SNAPSHOT_VERSION: u32 = 1;
/// A snapshot larger than this is not a snapshot we wrote: it is moved aside unread.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct SnapshotFile<S> {
    version: u32,
    saved_at: chrono::DateTime<Utc>,
    sessions: S,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write snapshot {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode snapshot: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Writes the snapshot atomically (a new file renamed over the old one).
///
/// Not `fsync`ed: the snapshot exists to carry live sessions across an atmd restart or crash,
/// and the page cache survives both. What an fsync would add is survival of a power loss or
/// kernel crash, after which every agent process is gone and nothing in the snapshot would be
/// restored anyway (a file left torn by one is moved aside at load). Syncing several times a
/// second under load cost the event path measurable latency.
pub fn save(path: &Path, sessions: &[Arc<Session>]) -> Result<(), PersistError> {
    let file = SnapshotFile {
        version: SNAPSHOT_VERSION,
        saved_at: Utc::now(),
        sessions,
    };
    let err = |source| PersistError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    // Streamed through a small buffer: serializing 10,000 sessions into one Vec first would
    // allocate tens of MiB at every save, which the allocator keeps long after.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
    serde_json::to_writer(&mut out, &file).map_err(|e| {
        if e.is_io() {
            err(std::io::Error::from(e))
        } else {
            PersistError::Encode(e)
        }
    })?;
    out.flush().map_err(err)?;
    drop(out);
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Loads the snapshot, keeping live sessions (at most `max`). Never fails: an unreadable file is
/// moved aside to `sessions.json.corrupt-<time>` and an empty registry starts.
pub fn load(path: &Path, proc_root: &Path, silence_expiry: Duration, max: usize) -> Vec<Session> {
    let bytes = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read session snapshot; starting empty");
            return Vec::new();
        }
        Ok(m) if m.len() > MAX_SNAPSHOT_BYTES => {
            move_aside(path, "larger than any snapshot atmd writes");
            return Vec::new();
        }
        Ok(_) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read session snapshot; starting empty");
                return Vec::new();
            }
        },
    };
    let file: SnapshotFile<Vec<Session>> = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            move_aside(path, &e.to_string());
            return Vec::new();
        }
    };
    if file.version != SNAPSHOT_VERSION {
        move_aside(path, &format!("unknown snapshot version {}", file.version));
        return Vec::new();
    }
    let expiry = chrono::Duration::from_std(silence_expiry).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let total = file.sessions.len();
    let kept: Vec<Session> = file
        .sessions
        .into_iter()
        .filter(|s| match s.process {
            Some(p) => crate::process::is_alive_in(proc_root, p),
            None => now - s.last_activity <= expiry,
        })
        .take(max)
        .collect();
    debug!(total, kept = kept.len(), "snapshot loaded");
    kept
}

fn move_aside(path: &Path, why: &str) {
    let aside = path.with_extension(format!(
        "json.corrupt-{}",
        Utc::now().format("%Y%m%dT%H%M%S")
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => warn!(
            path = %path.display(),
            moved_to = %aside.display(),
            reason = why,
            "session snapshot is unreadable; moved it aside and starting empty"
        ),
        Err(e) => warn!(
            path = %path.display(),
            reason = why,
            error = %e,
            "session snapshot is unreadable and could not be moved aside; starting empty"
        ),
    }
}

/// Writes start at most this often, however busy the registry: each one serializes every
/// session, and under a stream of changes a write per debounce period took CPU from the events.
pub(crate) const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// The debounced writer the registry actor drives. A change is written `debounce` after it, or
/// [`MIN_WRITE_INTERVAL`] after the previous write started if that is later. At most one write
/// runs at a time; changes made during a write schedule another.
pub(crate) struct Writer {
    path: Option<PathBuf>,
    debounce: Duration,
    due: Option<Instant>,
    last_write: Option<Instant>,
    in_flight: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn new(path: Option<PathBuf>, debounce: Duration) -> Self {
        Self {
            path,
            debounce,
            due: None,
            last_write: None,
            in_flight: None,
        }
    }

    pub(crate) fn mark_dirty(&mut self) {
        if self.path.is_some() && self.due.is_none() {
            let soonest = Instant::now() + self.debounce;
            self.due = Some(match self.last_write {
                Some(last) => soonest.max(last + MIN_WRITE_INTERVAL),
                None => soonest,
            });
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.due
    }

    pub(crate) fn write_in_background(&mut self, sessions: Vec<Arc<Session>>) {
        let Some(path) = self.path.clone() else {
            self.due = None;
            return;
        };
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            // Try again shortly; the running write has older data.
            self.due = Some(Instant::now() + self.debounce);
            return;
        }
        self.due = None;
        self.last_write = Some(Instant::now());
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = save(&path, &sessions) {
                warn!(error = %e, "session snapshot not saved");
            }
        }));
    }

    pub(crate) async fn flush_now(&mut self, sessions: Vec<Arc<Session>>) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.await;
        }
        let Some(path) = self.path.clone() else {
            return;
        };
        self.due = None;
        let result = tokio::task::spawn_blocking(move || save(&path, &sessions)).await;
        match result {
            Ok(Ok(())) => debug!("final session snapshot saved"),
            Ok(Err(e)) => warn!(error = %e, "final session snapshot not saved"),
            Err(e) => warn!(error = %e, "final session snapshot task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writes_follow_the_debounce_but_come_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let debounce = Duration::from_millis(250);
        let mut w = Writer::new(Some(dir.path().join("sessions.json")), debounce);
        let t0 = Instant::now();
        w.mark_dirty();
        assert_eq!(w.deadline(), Some(t0 + debounce));
        // More changes before the write do not postpone it.
        tokio::time::advance(Duration::from_millis(100)).await;
        w.mark_dirty();
        assert_eq!(w.deadline(), Some(t0 + debounce));
        tokio::time::advance(Duration::from_millis(150)).await;
        let wrote_at = Instant::now();
        w.write_in_background(Vec::new());
        assert_eq!(w.deadline(), None);
        // The next change waits for the minimum interval, not just the debounce.
        w.mark_dirty();
        assert_eq!(w.deadline(), Some(wrote_at + MIN_WRITE_INTERVAL));
        // After a quiet spell, the debounce alone applies again.
        w.flush_now(Vec::new()).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        w.mark_dirty();
        assert_eq!(w.deadline(), Some(Instant::now() + debounce));
    }
}
