//! Text helpers. Everything user-visible is cut by characters, never bytes, so that a
//! multi-byte working directory or model name can never panic a slice or split a character.

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

/// A one-line preview: control characters and runs of whitespace become one space, then the
/// result is cut to `max` characters. Used for command and prompt previews in attention reasons.
pub fn one_line_preview(s: &str, max: usize) -> String {
    let mut flat = String::with_capacity(s.len().min(max * 4));
    let mut last_space = true;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
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
}
