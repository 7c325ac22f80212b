//! Persistence of the registry: a JSON snapshot at `$XDG_STATE_HOME/atm/sessions.json`.
//!
//! Written atomically (a temporary file renamed over the old one; not fsynced, see [`save`])
//! after a short debounce and on shutdown, so a restart, even after `kill -9`, loses at most the
//! last debounce window of changes. On load, only sessions whose process still lives (or, with no
//! process, that are not yet expired) come back. A snapshot that cannot be read is moved aside
//! with a warning (each to its own `corrupt-<time>` name), never a crash. Temporary files a
//! killed write left behind are removed at load. The snapshot is never read through a symlink.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::duration::deadline_after;
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
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(err)?;
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
    if let Some(dir) = path.parent() {
        remove_stale_temp_files(dir);
    }
    let bytes = match read_snapshot(path) {
        Ok(b) => b,
        Err(Unreadable::Missing) => return Vec::new(),
        Err(Unreadable::Aside(why)) => {
            move_aside(path, why);
            return Vec::new();
        }
        Err(Unreadable::Io(e)) => {
            warn!(path = %path.display(), error = %e, "cannot read session snapshot; starting empty");
            return Vec::new();
        }
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

/// Prefix of the temporary files [`save`] writes before renaming one over the snapshot.
const TEMP_PREFIX: &str = ".sessions.json.tmp";

enum Unreadable {
    Missing,
    /// Not a snapshot we wrote: moved aside for the user to inspect.
    Aside(&'static str),
    Io(std::io::Error),
}

/// Reads the snapshot without following a symlink and without reading more than
/// [`MAX_SNAPSHOT_BYTES`].
fn read_snapshot(path: &Path) -> Result<Vec<u8>, Unreadable> {
    let file = crate::paths::no_follow(std::fs::File::options().read(true)).open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unreadable::Missing),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Unreadable::Aside(
                "a symbolic link, which atmd does not follow",
            ));
        }
        Err(e) => return Err(Unreadable::Io(e)),
    };
    let meta = file.metadata().map_err(Unreadable::Io)?;
    if !meta.is_file() {
        return Err(Unreadable::Aside("not a regular file"));
    }
    if meta.len() > MAX_SNAPSHOT_BYTES {
        return Err(Unreadable::Aside("larger than any snapshot atmd writes"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SNAPSHOT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::Io)?;
    if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(Unreadable::Aside("larger than any snapshot atmd writes"));
    }
    Ok(bytes)
}

/// Removes the temporary files of writes that never finished (atmd killed mid-write): ours, with
/// [`TEMP_PREFIX`], and `.tmpXXXXXX` ones older versions wrote. Only regular files, never through
/// a link. Called before the registry starts writing, so no write of ours is in flight.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let legacy = name.len() == ".tmp".len() + 6
            && name
                .strip_prefix(".tmp")
                .is_some_and(|r| r.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !(legacy || name.starts_with(TEMP_PREFIX)) {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                debug!(path = %entry.path().display(), "removed a snapshot temp file a killed write left")
            }
            Err(e) => {
                warn!(path = %entry.path().display(), error = %e, "cannot remove a stale snapshot temp file")
            }
        }
    }
}

/// Moves an unreadable snapshot to `sessions.json.corrupt-<time>`, never over an earlier copy:
/// a hard link fails rather than replace an existing name, so two bad snapshots in one second
/// get `-1`, `-2`, ... suffixes.
fn move_aside(path: &Path, why: &str) {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S").to_string();
    let mut result = Err(std::io::Error::other("no free name"));
    let mut aside = PathBuf::new();
    for n in 0..1000u32 {
        let suffix = if n == 0 {
            format!("json.corrupt-{stamp}")
        } else {
            format!("json.corrupt-{stamp}-{n}")
        };
        aside = path.with_extension(suffix);
        result = std::fs::hard_link(path, &aside);
        match &result {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            _ => break,
        }
    }
    let result = result.and_then(|()| std::fs::remove_file(path));
    match result {
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
            let soonest = deadline_after(Instant::now(), self.debounce);
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
            self.due = Some(deadline_after(Instant::now(), self.debounce));
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

    fn corrupt_copies(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("corrupt"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn two_unreadable_snapshots_in_one_second_keep_both_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let expiry = Duration::from_secs(60);
        for body in ["first {", "second {"] {
            std::fs::write(&path, body).unwrap();
            assert!(load(&path, Path::new("/proc"), expiry, 10).is_empty());
        }
        let copies = corrupt_copies(dir.path());
        assert_eq!(copies.len(), 2, "{copies:?}");
        let mut bodies: Vec<String> = copies
            .iter()
            .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["first {", "second {"]);
        assert!(!path.exists());
    }

    #[test]
    fn temp_files_of_killed_writes_are_removed_at_load_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        save(&path, &[]).unwrap();
        let stale = [".tmpAb12Cd", ".sessions.json.tmpXyZ987"];
        for n in stale {
            std::fs::write(dir.path().join(n), vec![b'{'; 4096]).unwrap();
        }
        let kept = [".tmp-not-ours-too-long", "notes.txt", ".tmpab"];
        for n in kept {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        // A directory that looks like a temp file is not ours to delete.
        std::fs::create_dir(dir.path().join(".tmpDir123")).unwrap();
        load(&path, Path::new("/proc"), Duration::from_secs(60), 10);
        for n in stale {
            assert!(!dir.path().join(n).exists(), "{n} left behind");
        }
        for n in kept {
            assert!(dir.path().join(n).exists(), "{n} removed");
        }
        assert!(dir.path().join(".tmpDir123").is_dir());
        assert!(path.exists(), "the snapshot itself stays");
    }

    #[test]
    fn a_symlinked_snapshot_is_moved_aside_not_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere.json");
        let key = crate::model::SessionKey::Id {
            harness: crate::model::Harness::claude(),
            id: "linked".into(),
        };
        let id = crate::model::SessionId::new("linked");
        let session = Session::new(key, id, None, "test", Utc::now());
        save(&elsewhere, &[Arc::new(session)]).unwrap();
        let path = dir.path().join("sessions.json");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let loaded = load(&path, Path::new("/proc"), Duration::from_secs(3600), 10);
        assert!(loaded.is_empty(), "read through the link: {loaded:?}");
        assert!(elsewhere.exists(), "the link's target is untouched");
        assert_eq!(corrupt_copies(dir.path()).len(), 1);
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "the link is moved aside"
        );
    }
}
