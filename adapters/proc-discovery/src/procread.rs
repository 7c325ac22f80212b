//! Small, bounded readers for the files of one `/proc/<pid>` directory.
//!
//! Every read is capped (a command line or environment can be megabytes; we need its start),
//! and every failure is sorted into "the process is gone" (it exited between the listing and the
//! read: not an error) or "we could not read it" (counted as a failure in the rescan report).
//! `stat` is parsed by the `procfs` crate, which copes with command names holding spaces and
//! parentheses; the rest are NUL-separated lists, split here.

use std::io::{ErrorKind, Read};
use std::path::Path;

use procfs::FromRead;
use procfs::process::Stat;

/// Why a read gave nothing.
#[derive(Debug)]
pub enum ReadError {
    /// The process exited (or the entry was removed) after it was listed.
    Vanished,
    /// It is there but could not be read or parsed.
    Unreadable(std::io::Error),
}

const ESRCH: i32 = 3;

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH) {
            Self::Vanished
        } else {
            Self::Unreadable(e)
        }
    }
}

/// Caps: enough for every field we use, small enough that a hostile process costs nothing.
pub const STAT_CAP: u64 = 4 * 1024;
pub const CMDLINE_CAP: u64 = 16 * 1024;
pub const ENVIRON_CAP: u64 = 256 * 1024;

/// Reads at most `cap` bytes of `path`.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The process's `stat` line, parsed.
pub fn read_stat(dir: &Path) -> Result<Stat, ReadError> {
    let bytes = read_capped(&dir.join("stat"), STAT_CAP)?;
    Stat::from_read(bytes.as_slice()).map_err(|e| {
        ReadError::Unreadable(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("bad stat in {}: {e}", dir.display()),
        ))
    })
}

/// Splits a NUL-separated list (cmdline, environ). Invalid UTF-8 is replaced, never refused;
/// a trailing NUL does not make an empty last item.
pub fn split_nul(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The command line. A process that renamed itself (`process.title = "claude --x"`) may have one
/// string with spaces instead of NUL-separated arguments: then its first word is its `argv[0]`.
/// A single argument that starts with a path (`/opt/my tools/claude`) is left whole.
pub fn read_cmdline(dir: &Path) -> Result<Vec<String>, ReadError> {
    let bytes = read_capped(&dir.join("cmdline"), CMDLINE_CAP)?;
    let mut argv = split_nul(&bytes);
    if argv.len() == 1
        && argv[0].contains(' ')
        && argv[0].split(' ').next().is_some_and(|w| !w.contains('/'))
    {
        let words: Vec<String> = argv[0].split_whitespace().map(str::to_owned).collect();
        argv = words;
    }
    Ok(argv)
}

/// A symlink's target as text (`exe`, `cwd`). `None` when it has none (kernel threads,
/// zombies) or is not UTF-8.
pub fn read_link_text(path: &Path) -> Result<Option<String>, ReadError> {
    match std::fs::read_link(path) {
        Ok(t) => Ok(t.to_str().map(str::to_owned)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_lists_with_odd_bytes_do_not_fail() {
        assert_eq!(split_nul(b"a\0b\0"), vec!["a", "b"]);
        assert_eq!(split_nul(b""), Vec::<String>::new());
        assert_eq!(split_nul(b"\0"), vec![""; 0]);
        assert_eq!(
            split_nul(b"\xff\xfeclaude\0x"),
            vec!["\u{fffd}\u{fffd}claude", "x"]
        );
        assert_eq!(split_nul(b"a\0\0b"), vec!["a", "", "b"]);
    }

    #[test]
    fn missing_files_are_vanished_not_failures() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_stat(&dir.path().join("123")),
            Err(ReadError::Vanished)
        ));
        std::fs::write(dir.path().join("stat"), b"garbage").unwrap();
        assert!(matches!(
            read_stat(dir.path()),
            Err(ReadError::Unreadable(_))
        ));
        std::fs::create_dir(dir.path().join("cmdline")).unwrap();
        assert!(matches!(
            read_cmdline(dir.path()),
            Err(ReadError::Unreadable(_))
        ));
    }

    #[test]
    fn renamed_process_title_splits_into_words() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cmdline"), b"claude --resume x").unwrap();
        assert_eq!(
            read_cmdline(dir.path()).unwrap(),
            vec!["claude", "--resume", "x"]
        );
    }
}
