//! Reading the hook's stdin: bounded in size ([`super::MAX_RAW_INPUT`]) and in time
//! ([`super::STDIN_WAIT`]), so that neither a runaway tool output nor a caller that never closes
//! the pipe can hold the agent up.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::remaining;

/// What came in on stdin.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// The whole input, at most [`MAX_INPUT`] bytes.
    Complete(Vec<u8>),
    /// More than [`MAX_INPUT`] bytes (drained and dropped), or the caller did not close stdin
    /// within [`STDIN_WAIT`]: nothing usable.
    Unusable,
}

/// Reads all of `source` (at most `limit` bytes kept), waiting at most `wait` in total for data.
pub fn read_input<R: Read + AsFd>(mut source: R, limit: usize, wait: Duration) -> Input {
    let deadline = Instant::now() + wait;
    let mut kept = Vec::new();
    // Larger than `Stdin`'s own 8 KiB buffer, so reads bypass it and never leave bytes buffered
    // where `poll` on the descriptor cannot see them.
    let mut chunk = vec![0u8; 64 * 1024];
    let mut overflow = false;
    loop {
        let Some(left) = remaining(deadline) else {
            return Input::Unusable;
        };
        let mut fds = [rustix::event::PollFd::new(
            &source,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Input::Unusable,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            // Not pollable (never seen for pipes, files or ttys): fall back to plain reads.
            Err(_) => {}
        }
        match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) if overflow => {}
            Ok(n) => {
                if kept.len() + n > limit {
                    overflow = true;
                    kept = Vec::new();
                } else {
                    kept.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Input::Unusable,
        }
    }
    if overflow {
        Input::Unusable
    } else {
        Input::Complete(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::super::STDIN_WAIT;
    use super::*;

    #[test]
    fn reads_input_within_the_limit_and_drops_more() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"{\"a\":1}").unwrap();
        let f = std::fs::File::open(&small).unwrap();
        assert_eq!(
            read_input(f, 16, STDIN_WAIT),
            Input::Complete(b"{\"a\":1}".to_vec())
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100_000]).unwrap();
        let f = std::fs::File::open(&big).unwrap();
        assert_eq!(read_input(f, 99_999, STDIN_WAIT), Input::Unusable);
        let f = std::fs::File::open(&big).unwrap();
        assert!(
            matches!(read_input(f, 100_000, STDIN_WAIT), Input::Complete(v) if v.len() == 100_000)
        );
    }

    #[test]
    fn stdin_that_never_closes_is_given_up() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let start = Instant::now();
        assert_eq!(
            read_input(reader, 16, Duration::from_millis(50)),
            Input::Unusable
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
