//! Following a file that another program appends to (a log, a `--stream-json` transcript), line
//! by line, the way `tail -F` does.
//!
//! The file is polled rather than watched (no inotify): an adapter follows a handful of files,
//! and a read at end of file costs one syscall per [`FollowOptions::poll_interval`]. The follower
//! keeps working across what happens to log files:
//! - **not there yet**: it waits for the file to appear, then reads it from its start;
//! - **truncated** (shorter than what was read): it reads again from the start;
//! - **replaced** (rotated: the path now names another file): it finishes the old file, then
//!   reads the new one from its start.
//!
//! Memory is bounded: one read buffer and one line of at most [`FollowOptions::max_line`] bytes;
//! longer and non-UTF-8 lines are reported and skipped as [`crate::lines::LineReader`] does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::lines::{LineBuffer, LineError};

/// How a [`FileFollower`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowOptions {
    /// Longest line, in bytes.
    pub max_line: usize,
    /// How often to look for new data at end of file.
    pub poll_interval: Duration,
    /// Read a file that exists when following starts from its start (`true`) or only what is
    /// appended from now on (`false`, like `tail -F -n 0`). Files that appear later, or replace
    /// the followed one, are always read from their start.
    pub from_start: bool,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            max_line: crate::protocol::MAX_LINE,
            poll_interval: Duration::from_millis(250),
            from_start: false,
        }
    }
}

/// Which file a path named: a rotated file keeps its inode, its replacement has another.
type FileId = (u64, u64);

struct Open {
    file: tokio::fs::File,
    id: FileId,
    /// Bytes read so far; a file shorter than this was truncated.
    position: u64,
}

/// Yields the lines appended to one file. Drop it to stop following.
pub struct FileFollower {
    path: PathBuf,
    options: FollowOptions,
    open: Option<Open>,
    /// With `from_start = false`: the file and its length when following started. Only that
    /// file is read from that offset; any other is read from its start.
    skip: Option<(FileId, u64)>,
    chunk: Vec<u8>,
    /// The unprocessed part of `chunk`.
    pending: std::ops::Range<usize>,
    lines: LineBuffer,
}

impl FileFollower {
    /// Follows `path`. With `from_start = false`, what the file holds now is skipped (its
    /// length is taken here, synchronously: one `stat`).
    pub fn new(path: impl Into<PathBuf>, options: FollowOptions) -> Self {
        let path = path.into();
        let skip = if options.from_start {
            None
        } else {
            std::fs::metadata(&path)
                .ok()
                .map(|meta| (file_id(&meta), meta.len()))
        };
        Self {
            path,
            options,
            open: None,
            skip,
            chunk: vec![0; 64 * 1024],
            pending: 0..0,
            lines: LineBuffer::new(options.max_line),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next complete line, waiting for one to be written. A recoverable error
    /// ([`LineError::is_recoverable`]) is one bad line; [`LineError::Io`] means the file cannot
    /// be read (permissions, a directory at the path).
    pub async fn next_line(&mut self) -> Result<String, LineError> {
        loop {
            if let Some(data) = self.chunk.get(self.pending.clone())
                && !data.is_empty()
            {
                let (taken, line) = self.lines.take(data);
                self.pending.start += taken;
                if let Some(line) = line {
                    return line;
                }
                continue;
            }
            let Some(open) = self.open.as_mut() else {
                if !self.reopen().await? {
                    tokio::time::sleep(self.options.poll_interval).await;
                }
                continue;
            };
            let read = open.file.read(&mut self.chunk).await?;
            if read > 0 {
                open.position += read as u64;
                self.pending = 0..read;
                continue;
            }
            // End of file: wait for more, unless the file was truncated or replaced.
            let truncated = open.file.metadata().await?.len() < open.position;
            let replaced = match tokio::fs::metadata(&self.path).await {
                Ok(meta) => file_id(&meta) != open.id,
                // Rotated away and not recreated yet: keep the old file, it may still grow.
                Err(_) => false,
            };
            if truncated {
                tracing::debug!(path = %self.path.display(), "followed file truncated; reading from its start");
                open.file.rewind().await?;
                open.position = 0;
                self.lines.clear();
            } else if replaced {
                tracing::debug!(path = %self.path.display(), "followed file replaced; reading the new one");
                self.open = None;
                if let Some(last) = self.lines.finish() {
                    return last;
                }
            } else {
                tokio::time::sleep(self.options.poll_interval).await;
            }
        }
    }

    /// Opens the file at the path. `Ok(false)`: it does not exist (yet).
    async fn reopen(&mut self) -> Result<bool, LineError> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(LineError::Io(e)),
        };
        let meta = file.metadata().await?;
        if meta.is_dir() {
            return Err(LineError::Io(std::io::Error::other(format!(
                "{} is a directory, not a file to follow",
                self.path.display()
            ))));
        }
        let mut position = 0;
        if let Some((id, len)) = self.skip.take()
            && id == file_id(&meta)
        {
            position = file
                .seek(std::io::SeekFrom::Start(len.min(meta.len())))
                .await?;
        }
        self.open = Some(Open {
            file,
            id: file_id(&meta),
            position,
        });
        Ok(true)
    }
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const WAIT: Duration = Duration::from_secs(10);

    fn options(from_start: bool) -> FollowOptions {
        FollowOptions {
            max_line: 16,
            poll_interval: Duration::from_millis(5),
            from_start,
        }
    }

    /// A fresh temp dir, and the path of a file `name` in it (not created yet).
    fn file_in_new_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }

    fn append(path: &Path, data: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
    }

    async fn next(f: &mut FileFollower) -> Result<String, String> {
        tokio::time::timeout(WAIT, f.next_line())
            .await
            .expect("no line within the deadline")
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn follows_appends_from_the_end_and_waits_for_whole_lines() {
        let (_dir, path) = file_in_new_dir("log");
        append(&path, b"old line\n");
        let mut f = FileFollower::new(&path, options(false));
        let pending = tokio::time::timeout(Duration::from_millis(30), f.next_line()).await;
        assert!(pending.is_err(), "the existing line must be skipped");
        append(&path, b"new ");
        append(&path, b"line\nsecond\n");
        assert_eq!(next(&mut f).await, Ok("new line".to_owned()));
        assert_eq!(next(&mut f).await, Ok("second".to_owned()));

        let mut from_start = FileFollower::new(&path, options(true));
        assert_eq!(next(&mut from_start).await, Ok("old line".to_owned()));
    }

    #[tokio::test]
    async fn waits_for_a_missing_file_then_reads_it_whole() {
        let (_dir, path) = file_in_new_dir("later.log");
        let mut f = FileFollower::new(&path, options(false));
        let pending = tokio::time::timeout(Duration::from_millis(30), f.next_line()).await;
        assert!(pending.is_err());
        append(&path, b"first\n");
        assert_eq!(next(&mut f).await, Ok("first".to_owned()));
    }

    #[tokio::test]
    async fn truncation_and_rotation_restart_at_the_new_start() {
        let (dir, path) = file_in_new_dir("log");
        append(&path, b"");
        let mut f = FileFollower::new(&path, options(false));
        append(&path, b"one\n");
        assert_eq!(next(&mut f).await, Ok("one".to_owned()));
        // Truncated (copytruncate rotation), then shorter content written.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, b"ab\n");
        assert_eq!(next(&mut f).await, Ok("ab".to_owned()));
        // Rotated: the old file gets a last line (without newline), a new file takes the path.
        append(&path, b"tail of old");
        std::fs::rename(&path, dir.path().join("log.1")).unwrap();
        append(&path, b"fresh\n");
        assert_eq!(next(&mut f).await, Ok("tail of old".to_owned()));
        assert_eq!(next(&mut f).await, Ok("fresh".to_owned()));
    }

    #[tokio::test]
    async fn oversized_and_non_utf8_lines_are_reported_and_skipped() {
        let (_dir, path) = file_in_new_dir("log");
        let mut f = FileFollower::new(&path, options(true));
        append(&path, &[b'x'; 100]);
        append(&path, b"\nbad \xff\nok\n");
        assert!(
            next(&mut f)
                .await
                .is_err_and(|e| e.contains("longer than 16"))
        );
        assert!(next(&mut f).await.is_err_and(|e| e.contains("not UTF-8")));
        assert_eq!(next(&mut f).await, Ok("ok".to_owned()));
    }

    #[tokio::test]
    async fn a_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FileFollower::new(dir.path(), options(true));
        let err = tokio::time::timeout(WAIT, f.next_line()).await.unwrap();
        assert!(matches!(err, Err(LineError::Io(_))), "{err:?}");
    }
}
