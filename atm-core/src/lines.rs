//! Reading newline-delimited text safely, for adapters whose input is not the ingest socket
//! (a FIFO, a child's stdout, a socket of their own, a followed log file).
//!
//! Every line is bounded: a line longer than the limit is reported as [`LineError::TooLong`]
//! and skipped up to its newline without being held in memory, and a line that is not UTF-8 is
//! reported as [`LineError::NotUtf8`]; in both cases the next read starts at the next line, so
//! one bad line never costs the ones after it. The splitting itself ([`LineBuffer`]) does no
//! I/O, so [`LineReader`] (any `AsyncBufRead`) and [`crate::follow::FileFollower`] (a file
//! that grows) share it.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::protocol::{ErrorCode, WireError};

/// A line that could not be read, and why.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is longer than `max` bytes (its newline not counted). The rest of it has been
    /// skipped: the next read returns the next line.
    #[error("line longer than {max} bytes; skipped to the next line")]
    TooLong { max: usize },
    /// The line is not UTF-8 (first bad byte at `valid_up_to`). The next read returns the next
    /// line.
    #[error("line is not UTF-8 (first bad byte at offset {valid_up_to}); skipped")]
    NotUtf8 { valid_up_to: usize },
    /// Reading failed; the source is not usable any more.
    #[error("cannot read input: {0}")]
    Io(#[from] std::io::Error),
}

impl LineError {
    /// Whether reading can go on with the next line (true for a bad line, false for I/O).
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

impl From<&LineError> for WireError {
    /// The protocol-v1 error for a client that sent this line.
    fn from(e: &LineError) -> Self {
        let code = match e {
            LineError::TooLong { .. } => ErrorCode::TooLarge,
            LineError::NotUtf8 { .. } => ErrorCode::ParseError,
            LineError::Io(_) => ErrorCode::Internal,
        };
        WireError::new(code, e.to_string())
    }
}

/// The I/O-free core: collects bytes into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineBuffer {
    line: Vec<u8>,
    max: usize,
    /// Inside a line already reported as too long: drop bytes until its newline.
    skipping: bool,
}

impl LineBuffer {
    pub fn new(max: usize) -> Self {
        Self {
            line: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// Takes bytes from the start of `data`, at most up to and including the first newline.
    /// Returns how many bytes were taken, and the line (without its `\n` or `\r\n`) or error
    /// once one is complete. An oversized line is reported as soon as it passes the limit.
    pub fn take(&mut self, data: &[u8]) -> (usize, Option<Result<String, LineError>>) {
        let newline = data.iter().position(|&b| b == b'\n');
        let end = newline.map_or(data.len(), |i| i + 1);
        let Some(chunk) = data.get(..newline.unwrap_or(data.len())) else {
            return (end, None);
        };
        if self.skipping {
            if newline.is_some() {
                self.skipping = false;
            }
            return (end, None);
        }
        // `max + 1` leaves room for a `\r` before the newline.
        if self.line.len() + chunk.len() > self.max.saturating_add(1) {
            self.line = Vec::new();
            self.skipping = newline.is_none();
            return (end, Some(Err(LineError::TooLong { max: self.max })));
        }
        self.line.extend_from_slice(chunk);
        if newline.is_none() {
            return (end, None);
        }
        (end, Some(self.complete()))
    }

    /// At end of input: the last line if it had no newline (`None` when nothing is pending).
    pub fn finish(&mut self) -> Option<Result<String, LineError>> {
        let skipped = std::mem::take(&mut self.skipping);
        if self.line.is_empty() || skipped {
            self.line.clear();
            return None;
        }
        Some(self.complete())
    }

    /// Forgets a partial line (the file it came from was truncated or replaced).
    pub fn clear(&mut self) {
        self.line.clear();
        self.skipping = false;
    }

    fn complete(&mut self) -> Result<String, LineError> {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        }
        String::from_utf8(line).map_err(|e| LineError::NotUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }
}

/// Reads bounded lines from any `AsyncBufRead`.
///
/// [`LineReader::next_line`] is cancel-safe: dropping it (in a `select!` with a cancellation
/// token) loses no bytes, because the line in progress lives in the reader, not the future.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buffer: LineBuffer,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Lines of at most `max` bytes (e.g. [`crate::protocol::MAX_LINE`]).
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buffer: LineBuffer::new(max),
        }
    }

    /// The next line; `Ok(None)` at end of input. After a recoverable error
    /// ([`LineError::is_recoverable`]) the next call returns the line after the bad one.
    pub async fn next_line(&mut self) -> Result<Option<String>, LineError> {
        loop {
            let data = self.inner.fill_buf().await?;
            if data.is_empty() {
                return self.buffer.finish().transpose();
            }
            let (taken, line) = self.buffer.take(data);
            self.inner.consume(taken);
            if let Some(line) = line {
                return line.map(Some);
            }
        }
    }

    /// The source, e.g. to reach the write half of a socket.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn read_all(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        // A tiny buffer, so lines and limits straddle reads.
        let mut reader = LineReader::new(BufReader::with_capacity(3, input), max);
        let mut out = Vec::new();
        loop {
            match reader.next_line().await {
                Ok(Some(line)) => out.push(Ok(line)),
                Ok(None) => return out,
                Err(e) => {
                    assert!(e.is_recoverable());
                    out.push(Err(e.to_string()));
                }
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_last_one_without_newline() {
        let got = read_all(b"one\ntwo\r\n\nthree", 8).await;
        let want: Vec<Result<String, String>> = ["one", "two", "", "three"]
            .into_iter()
            .map(|s| Ok(s.to_owned()))
            .collect();
        assert_eq!(got, want);
        assert!(read_all(b"", 8).await.is_empty());
    }

    #[tokio::test]
    async fn oversized_lines_are_reported_once_and_skipped_to_the_next() {
        let input = b"12345678\n123456789\nok\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nlast\n";
        let got = read_all(input, 8).await;
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], Ok("12345678".to_owned()));
        assert!(got[1].as_ref().is_err_and(|e| e.contains("longer than 8")));
        assert_eq!(got[2], Ok("ok".to_owned()));
        assert!(got[3].is_err());
        assert_eq!(got[4], Ok("last".to_owned()));
        // An oversized last line without a newline: one error, nothing after it.
        let got = read_all(b"ok\nxxxxxxxxxxxxxxxxxx", 8).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[1].is_err());
    }

    #[tokio::test]
    async fn non_utf8_and_truncated_utf8_lines_are_errors_then_reading_goes_on() {
        // A lone continuation byte, and a multi-byte character cut by the end of the line.
        let input = b"a\x80b\n\xe2\x82\nfine \xe2\x82\xac\n";
        let got = read_all(input, 64).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].as_ref().is_err_and(|e| e.contains("offset 1")));
        assert!(got[1].as_ref().is_err_and(|e| e.contains("not UTF-8")));
        assert_eq!(got[2], Ok("fine \u{20ac}".to_owned()));
        // Truncated at end of input.
        let got = read_all(b"ok\n\xe2\x82", 64).await;
        assert!(got[1].is_err(), "{got:?}");
    }

    #[tokio::test]
    async fn errors_map_to_wire_codes() {
        let too_long = WireError::from(&LineError::TooLong { max: 1 });
        assert_eq!(too_long.code, ErrorCode::TooLarge);
        let bad = WireError::from(&LineError::NotUtf8 { valid_up_to: 0 });
        assert_eq!(bad.code, ErrorCode::ParseError);
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = LineReader::new(BufReader::new(rx), 64);
        use tokio::io::AsyncWriteExt;
        tx.write_all(b"par").await.unwrap();
        // The read is dropped while the line is incomplete.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), reader.next_line()).await;
        assert!(pending.is_err());
        tx.write_all(b"tial\n").await.unwrap();
        assert_eq!(
            reader.next_line().await.unwrap().as_deref(),
            Some("partial")
        );
        drop(tx);
        assert_eq!(reader.next_line().await.unwrap(), None);
    }
}
