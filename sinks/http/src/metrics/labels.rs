//! Label values: what text from agents and plugins may become a Prometheus label, and how many
//! distinct values one label may take.
//!
//! Every label value that comes from outside atm's own code (a session id, a harness or adapter
//! name, an answering surface's name) goes through [`clean`]: characters that are not valid in
//! every medium ([`atm_core::text::is_portable`]: control characters, NUL, noncharacters) become
//! U+FFFD, and the value is cut to [`MAX_VALUE_CHARS`] characters. The encoder escapes `\`, `"`
//! and newlines on top of that, so no value can end a label or a line.
//!
//! A label whose values come from outside also gets a [`LabelCap`]: the first `max` distinct
//! values keep their name, every later one is reported as [`OTHER`]. A client that invents a new
//! surface name per request, or an out-of-tree adapter per session, cannot grow the number of
//! series without bound.

use std::borrow::Cow;
use std::collections::HashSet;

use atm_core::text::{is_portable, truncate_chars};

/// The longest label value kept, in characters (a UUID session id is 36).
pub const MAX_VALUE_CHARS: usize = 64;

/// What a value beyond a label's cap is reported as.
pub const OTHER: &str = "other";

/// What an empty value is reported as (an empty label value means "no label" to Prometheus, so
/// two different series could merge).
pub const UNKNOWN: &str = "unknown";

/// `value` made safe as a label value: non-portable characters replaced, cut to
/// [`MAX_VALUE_CHARS`] characters (with `…`), never empty. Borrowed when nothing changed.
pub fn clean(value: &str) -> Cow<'_, str> {
    if value.is_empty() {
        return Cow::Borrowed(UNKNOWN);
    }
    let fits = value.len() <= MAX_VALUE_CHARS || value.chars().count() <= MAX_VALUE_CHARS;
    if fits && value.chars().all(is_portable) {
        return Cow::Borrowed(value);
    }
    let cut = if fits {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(truncate_chars(value, MAX_VALUE_CHARS))
    };
    Cow::Owned(
        cut.chars()
            .map(|c| if is_portable(c) { c } else { '\u{FFFD}' })
            .collect(),
    )
}

/// At most `max` distinct values of one label; later ones are [`OTHER`].
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: HashSet<String>,
    /// Values that were reported as [`OTHER`] (counted per call, not per distinct value).
    overflowed: u64,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: HashSet::new(),
            overflowed: 0,
        }
    }

    /// The label value for `value`: [`clean`]ed, or [`OTHER`] once `max` others were seen.
    pub fn value(&mut self, value: &str) -> String {
        let cleaned = clean(value);
        if self.seen.contains(cleaned.as_ref()) {
            return cleaned.into_owned();
        }
        if self.seen.len() < self.max {
            let owned = cleaned.into_owned();
            self.seen.insert(owned.clone());
            return owned;
        }
        self.overflowed += 1;
        OTHER.to_owned()
    }

    /// How often a value was reported as [`OTHER`].
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_values_pass_and_hostile_ones_are_made_safe() {
        assert!(matches!(clean("claude"), Cow::Borrowed("claude")));
        assert_eq!(clean(""), UNKNOWN);
        assert_eq!(
            clean("a\nb\r\0c\u{7f}"),
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}"
        );
        // Quotes and backslashes stay: the encoder escapes them.
        assert_eq!(clean(r#"x"y\z"#), r#"x"y\z"#);
        let huge = "é".repeat(10_000);
        let cut = clean(&huge);
        assert_eq!(cut.chars().count(), MAX_VALUE_CHARS);
        assert!(cut.ends_with('…'));
        // Exactly the limit is not cut.
        let exact = "x".repeat(MAX_VALUE_CHARS);
        assert_eq!(clean(&exact), exact);
        // Lossy-decoded bytes are valid UTF-8 already; their replacement characters stay.
        let lossy = String::from_utf8_lossy(b"ab\xff\xfe\ncd");
        assert_eq!(clean(&lossy), "ab\u{FFFD}\u{FFFD}\u{FFFD}cd");
    }

    #[test]
    fn a_cap_keeps_the_first_values_and_reports_later_ones_as_other() {
        let mut cap = LabelCap::new(2);
        assert_eq!(cap.value("a"), "a");
        assert_eq!(cap.value("b"), "b");
        assert_eq!(cap.value("c"), OTHER);
        assert_eq!(cap.value("a"), "a", "known values keep their name");
        assert_eq!(cap.value("d"), OTHER);
        assert_eq!(cap.overflowed(), 2);
        // Two raw values that clean to the same label share one slot.
        let mut cap = LabelCap::new(1);
        assert_eq!(cap.value("x\n"), "x\u{FFFD}");
        assert_eq!(cap.value("x\r"), "x\u{FFFD}");
    }
}
