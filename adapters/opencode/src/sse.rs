//! A bounded Server-Sent Events parser.
//!
//! The SSE crates we looked at buffer a line or an event without limit, and a misbehaving or
//! hostile server could then make the daemon grow without bound. This parser keeps memory
//! bounded: lines are framed by tokio-util's `AnyDelimiterCodec`, which refuses a line longer
//! than the limit *while reading* and discards the rest of it; an event whose `data` adds up to
//! more than the limit is dropped whole and reported as [`SseItem::Oversized`], and reading goes
//! on with the next event.
//!
//! Only what the opencode stream uses is interpreted: `data:` lines (joined with `\n`) and the
//! blank line that ends an event. `event:`, `id:`, `retry:` and comments are accepted and
//! ignored. Bytes are not required to be UTF-8 here: that is the JSON decoder's concern, so a
//! non-UTF-8 event is skipped by the consumer, not by the framing.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder};

/// The default cap for one line and for one event's data: 1 MiB, as for protocol lines.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What the parser produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// One complete event's data (the `data:` lines joined with `\n`), as raw bytes.
    Event(Bytes),
    /// An event that exceeded the size limit and was dropped.
    Oversized,
}

/// Incremental SSE parser: feed it the body's bytes as they come.
#[derive(Debug)]
pub struct SseParser {
    lines: AnyDelimiterCodec,
    max_event: usize,
    data: BytesMut,
    has_data: bool,
    oversized: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser that drops lines and events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            lines: AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_event),
            max_event,
            data: BytesMut::new(),
            has_data: false,
            oversized: false,
        }
    }

    /// Consumes what it can of `buf` (complete lines; an over-long line is discarded as it
    /// arrives) and returns the events completed by it, in order.
    pub fn feed(&mut self, buf: &mut BytesMut) -> Vec<SseItem> {
        let mut out = Vec::new();
        loop {
            match self.lines.decode(buf) {
                Ok(Some(line)) => {
                    if let Some(item) = self.line(&line) {
                        out.push(item);
                    }
                }
                Ok(None) => break,
                Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => self.drop_event(),
                // The codec reports no other error when decoding from memory; treat one as a
                // broken line all the same.
                Err(AnyDelimiterCodecError::Io(_)) => self.drop_event(),
            }
        }
        out
    }

    /// Bytes held for the event being assembled (for tests of the memory bound).
    pub fn buffered(&self) -> usize {
        self.data.len()
    }

    fn drop_event(&mut self) {
        self.oversized = true;
        self.data = BytesMut::new();
        self.has_data = false;
    }

    fn line(&mut self, line: &[u8]) -> Option<SseItem> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(b":") {
            return None;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" || self.oversized {
            return None;
        }
        let extra = value.len() + usize::from(self.has_data);
        if self.data.len() + extra > self.max_event {
            self.drop_event();
            return None;
        }
        if self.has_data {
            self.data.extend_from_slice(b"\n");
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
        None
    }

    fn dispatch(&mut self) -> Option<SseItem> {
        if std::mem::take(&mut self.oversized) {
            return Some(SseItem::Oversized);
        }
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseItem::Event(std::mem::take(&mut self.data).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(p: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            out.extend(p.feed(&mut buf));
        }
        out
    }

    fn ev(s: &str) -> SseItem {
        SseItem::Event(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn events_lines_and_comments() {
        let mut p = SseParser::default();
        let out = feed_all(
            &mut p,
            &[
                b": hello\n\ndata: {\"a\":1}\n\n",
                b"event: message\r\nid: 7\r\nretry: 10\r\ndata:x\r\ndata: y\r\n\r\n",
                b"data\n\n\n\n",
            ],
        );
        assert_eq!(out, vec![ev("{\"a\":1}"), ev("x\ny"), ev("")]);
    }

    #[test]
    fn split_anywhere() {
        let text = b"data: {\"type\":\"session.idle\"}\n\ndata: two\n\n";
        for cut in 0..text.len() {
            let mut p = SseParser::default();
            let out = feed_all(&mut p, &[&text[..cut], &text[cut..]]);
            assert_eq!(
                out,
                vec![ev("{\"type\":\"session.idle\"}"), ev("two")],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_lines_and_events_are_dropped_and_reading_goes_on() {
        let mut p = SseParser::new(16);
        // One line over the limit, delivered in pieces: never held whole.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"data: ");
        let mut out = Vec::new();
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 10]);
            out.extend(p.feed(&mut buf));
            assert!(buf.len() <= 32, "buffer grew to {}", buf.len());
        }
        buf.extend_from_slice(b"\n\ndata: ok\n\n");
        out.extend(p.feed(&mut buf));
        assert_eq!(out, vec![SseItem::Oversized, ev("ok")]);
        // Many short data lines adding up past the limit.
        let out = feed_all(
            &mut p,
            &[b"data: 12345\ndata: 12345\ndata: 12345\n\ndata: b\n\n"],
        );
        assert_eq!(out, vec![SseItem::Oversized, ev("b")]);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn non_utf8_passes_through_as_bytes() {
        let mut p = SseParser::default();
        let out = feed_all(&mut p, &[b"data: \xff\xfe\n\n"]);
        assert_eq!(out, vec![SseItem::Event(Bytes::from_static(b"\xff\xfe"))]);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..32)) {
            let mut p = SseParser::new(40);
            let mut buf = BytesMut::new();
            for c in &chunks {
                buf.extend_from_slice(c);
                for item in p.feed(&mut buf) {
                    if let SseItem::Event(d) = item {
                        prop_assert!(d.len() <= 40);
                    }
                }
                prop_assert!(buf.len() <= 40 + 64 + 1);
                prop_assert!(p.buffered() <= 40);
            }
        }
    }
}
