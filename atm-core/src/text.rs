//! Text helpers. Everything user-visible is cut by characters, never bytes, so that a
//! multi-byte working directory or model name can never panic a slice or split a character.
//!
//! Text from agents is kept exactly as it came inside atm (an id must match the next event's
//! id), and made valid for its medium where it leaves: [`portable`] for D-Bus strings and
//! notifications (no NUL, control characters or noncharacters, which make a bus drop the
//! connection or a client reject the whole reply), [`OneLinePerEvent`] for the log (a newline
//! in an id cannot start a forged log line).

use std::borrow::Cow;
use std::io::Write;

/// Whether `c` is valid in every medium atm writes text to: not a control character (C0, DEL,
/// C1; NUL included) and not a Unicode noncharacter (U+FDD0..U+FDEF and the last two code
/// points of every plane, such as U+FFFE), which D-Bus libraries refuse.
pub fn is_portable(c: char) -> bool {
    let n = u32::from(c);
    !(c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE)
}

/// `s` with every character that is not [`is_portable`] replaced by U+FFFD (`�`), so it is
/// valid as a D-Bus string and as notification text. Borrowed when nothing needed replacing.
pub fn portable(s: &str) -> Cow<'_, str> {
    if s.chars().all(is_portable) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if is_portable(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    }
}

/// A log writer that keeps one event on one line: in each write (the log formatter writes one
/// whole event per call) every `\n` but a final one, every `\r` and every NUL are written as
/// the two characters `\n`, `\r`, `\0`. Ids and reasons from agents are logged as they came,
/// so without this a session id holding a newline could forge log lines.
#[derive(Debug)]
pub struct OneLinePerEvent<W>(pub W);

impl<W: Write> OneLinePerEvent<W> {
    fn write_escaped(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, &b"\n"[..]),
            _ => (buf, &b""[..]),
        };
        let mut start = 0;
        for (i, b) in body.iter().enumerate() {
            let escape: &[u8] = match b {
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                0 => b"\\0",
                _ => continue,
            };
            self.0.write_all(body.get(start..i).unwrap_or_default())?;
            self.0.write_all(escape)?;
            start = i + 1;
        }
        self.0.write_all(body.get(start..).unwrap_or_default())?;
        self.0.write_all(end)
    }
}

impl<W: Write> Write for OneLinePerEvent<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_escaped(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write_escaped(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Returns at most `max` characters of `s`, with `…` as the last character when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some(_) => {
            let mut out: String = s.chars().take(max - 1).collect();
            out.push('…');
            out
        }
    }
}

/// The first `n` characters of `s` (no ellipsis): the wire's `id_short`.
pub fn prefix_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        None => s,
        Some((byte, _)) => &s[..byte],
    }
}

/// A one-line preview: control characters, noncharacters and runs of whitespace become one
/// space, then the
/// result is cut to `max` characters. Used for command and prompt previews in attention reasons.
pub fn one_line_preview(s: &str, max: usize) -> String {
    let mut flat = String::with_capacity(s.len().min(max * 4));
    let mut last_space = true;
    for c in s.chars() {
        if c.is_whitespace() || !is_portable(c) {
            if !last_space {
                flat.push(' ');
                last_space = true;
            }
        } else {
            flat.push(c);
            last_space = false;
        }
        // Stop early on huge inputs: we never need more than max + 1 characters.
        if flat.len() > max * 4 + 8 && flat.chars().count() > max {
            break;
        }
    }
    truncate_chars(flat.trim_end(), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_by_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo wörld", 5), "héll…");
        assert_eq!(truncate_chars("日本語のパス", 3), "日本…");
        assert_eq!(truncate_chars("🦀🦀", 2), "🦀🦀");
        assert_eq!(truncate_chars("abc", 0), "");
        assert_eq!(prefix_chars("ünïcödé-id", 4), "ünïc");
        assert_eq!(prefix_chars("ab", 8), "ab");
    }

    #[test]
    fn preview_flattens_whitespace() {
        assert_eq!(
            one_line_preview("cargo  test\n--all\t-q", 40),
            "cargo test --all -q"
        );
        assert_eq!(one_line_preview("\u{1b}[31mred", 40), "[31mred");
        let long = "x".repeat(10_000);
        assert_eq!(one_line_preview(&long, 10).chars().count(), 10);
    }

    #[test]
    fn portable_replaces_what_a_bus_or_a_notification_server_refuses() {
        assert!(matches!(portable("/home/ü/src 日本"), Cow::Borrowed(_)));
        assert_eq!(portable("a\0b"), "a\u{FFFD}b");
        assert_eq!(portable("x\u{FFFE}y\u{FFFF}"), "x\u{FFFD}y\u{FFFD}");
        assert_eq!(
            portable("\u{FDD0}\u{FDEF}\u{1FFFE}\u{10FFFF}"),
            "\u{FFFD}".repeat(4)
        );
        assert_eq!(
            portable("tab\tnl\ndel\u{7f}c1\u{85}"),
            "tab\u{FFFD}nl\u{FFFD}del\u{FFFD}c1\u{FFFD}"
        );
        // The neighbours of the noncharacter ranges stay.
        assert_eq!(
            portable("\u{FDCF}\u{FDF0}\u{FFFD}\u{FFFC}"),
            "\u{FDCF}\u{FDF0}\u{FFFD}\u{FFFC}"
        );
        assert_eq!(one_line_preview("a\0b\u{FFFE}c", 10), "a b c");
    }

    fn escaped(input: &[u8]) -> Vec<u8> {
        let mut w = OneLinePerEvent(Vec::new());
        w.write_all(input).unwrap();
        w.0
    }

    #[test]
    fn one_event_stays_one_log_line() {
        assert_eq!(escaped(b"plain line\n"), b"plain line\n");
        assert_eq!(
            escaped(b"INFO session removed id=evil\nERROR forged\n"),
            b"INFO session removed id=evil\\nERROR forged\n"
        );
        assert_eq!(escaped(b"a\rb\0c"), b"a\\rb\\0c");
        assert_eq!(escaped(b""), b"");
        assert_eq!(escaped(b"\n"), b"\n");
        // Not UTF-8, ANSI colours and tabs pass through untouched.
        assert_eq!(escaped(b"\xff\x1b[1mx\t\n"), b"\xff\x1b[1mx\t\n");
    }
}
