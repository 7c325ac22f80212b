//! Agent-supplied text made safe to show to people.
//!
//! A Bash command, a file path, a question, the first prompt or an error comes from an agent,
//! and atm shows it in notifications, status bars and web pages. Two kinds of content in such
//! text must not reach a screen as they came:
//!
//! - characters that change how the rest is shown: terminal escapes, line breaks that make a
//!   second, forged line, bidi overrides that make `ls \u{202E}txt.exe` display as
//!   `ls exe.txt`, and invisible zero-width characters. [`neutralise`] turns each into a space.
//! - secrets the agent happened to handle: an API key in a `curl` command, a password in a
//!   database URL, a private key it printed. A notification shows on a lock screen and a
//!   status bar in a screen share. [`mask_secrets`] replaces them with [`REDACTED`].
//!
//! [`safe_preview`] does both and then cuts. Masking comes before the cut, because a secret cut
//! short could fall below its pattern's minimum length and show half of itself unmasked.
//!
//! What masking keeps: only the secret is replaced by `[redacted]`. Whatever says what it was
//! stays in front of it: a token's well-known prefix (`sk-ant-[redacted]`, `ghp_[redacted]`,
//! `AKIA[redacted]`), the key and separator of an assignment (`GITHUB_TOKEN=[redacted]`,
//! `--password [redacted]`), the scheme and user of a URL (`https://me:[redacted]@host`),
//! `Bearer [redacted]`, and the BEGIN and END lines of a PEM private key. A JWT has no prefix
//! that says more than "base64", so it becomes `[redacted]` whole. Masking errs on the side of
//! hiding: `token: x` in prose is masked too.
//!
//! Cost: both run on every hook event's detail. [`neutralise`] is one pass over the characters
//! and borrows when nothing changes; [`mask_secrets`] is one pass of a [`RegexSet`] of all
//! patterns, and only the patterns that matched are run again to find where. The `regex`
//! crate matches in time linear in the text, so no agent text can make this slow.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use crate::text::{is_portable, truncate_chars};

/// What a masked secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// `text` made safe to show: [`neutralise`]d, [`mask_secrets`]ed, then cut to at most
/// `max_chars` characters (by characters, with `…` as the last one when cut).
///
/// Not [`crate::text::one_line_preview`]: that cuts while it flattens, before masking could
/// see the whole secret, and leaves bidi and zero-width characters in.
pub fn safe_preview(text: &str, max_chars: usize) -> String {
    let flat = neutralise(text);
    truncate_chars(&mask_secrets(&flat), max_chars)
}

/// Whether `c` is invisible yet changes how text is shown: the bidi marks, embeddings,
/// overrides and isolates (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), the
/// zero-width space, joiners and word joiner (U+200B..U+200D, U+2060), the invisible
/// operators beside it (U+2061..U+2064) and the byte order mark (U+FEFF).
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Whether [`neutralise`] turns `c` into a space: whitespace, a control character (C0, DEL,
/// C1), a noncharacter (not [`is_portable`]) or an invisible format character.
fn is_gap(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_whitespace() || c.is_ascii_control();
    }
    c.is_whitespace() || !is_portable(c) || is_invisible_format(c)
}

/// `text` on one line with nothing that changes how it is shown: every control character
/// (C0 including tab, newline, CR and ESC; DEL; C1), noncharacter, bidi control, zero-width
/// character and whitespace becomes a space, runs of them one space, and none is left at
/// either end. Borrowed (from `text`) when that changes nothing but the ends.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    let text = text.trim_matches(is_gap);
    let mut after_space = false;
    let clean = text.chars().all(|c| {
        let ok = if c == ' ' { !after_space } else { !is_gap(c) };
        after_space = c == ' ';
        ok
    });
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if is_gap(c) {
            gap = true;
        } else {
            if gap {
                out.push(' ');
                gap = false;
            }
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What a candidate's secret must also satisfy to be masked.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// The pattern is specific enough.
    Always,
    /// The secret looks generated: it holds a digit (a generated token almost always does;
    /// `sk-learn-tutorial-for-beginners` and `Bearer authentication` do not), or it is at
    /// least this long, which words and names of things hardly are.
    Generated(usize),
}

/// One kind of secret. `pattern` has exactly one capture group: the secret, which is what is
/// replaced; the rest of the match is kept.
struct Rule {
    pattern: &'static str,
    check: Check,
}

/// The key names whose value is a secret (case-insensitive). A name matches when it holds one
/// of these not followed by a letter: `GITHUB_TOKEN`, `db_password2`, `clientSecret`,
/// `token_file`, but not `tokenizer`, `max_tokens` or `passwordless`.
macro_rules! secret_word {
    () => {
        r"(?i:password|passwd|secret|secret[_-]?key|token|api[_-]?key|access[_-]?key|private[_-]?key)"
    };
}

/// A value: quoted (to the closing quote, or to the end of the text when there is none) or up
/// to the next whitespace or quote. A value masked before is taken alone, so that masking
/// masked text again changes nothing (`{"token":[redacted]}` keeps its brace).
macro_rules! value {
    () => {
        r#"(\[redacted\]|"[^"]*"?|'[^']*'?|[^\s"']+)"#
    };
}

/// Earlier rules win when two matches start at the same place; otherwise the leftmost wins.
const RULES: &[Rule] = &[
    // A PEM private key, to its END line or to the end of the text.
    Rule {
        pattern: r"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----\s*((?s:.*?))\s*(?:-----END[ A-Z0-9]*PRIVATE KEY-----|\z)",
        check: Check::Always,
    },
    // The password of a URL: scheme://user:password@host.
    Rule {
        pattern: r"(?i:[a-z][a-z0-9+.-]*)://[^\s:/@]*:([^\s/@]+)@",
        check: Check::Always,
    },
    // An Authorization header, whatever its scheme.
    Rule {
        pattern: r#"(?-u:\b)(?i:authorization)["']?\s*[:=]\s*(?:(?i:bearer|basic|token|digest)\s+)?([^\s"']+)"#,
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)(?i:bearer)\s+([A-Za-z0-9._~+/=-]{8,})",
        check: Check::Generated(24),
    },
    // KEY=value, KEY = value, KEY: value, "key": value, --password=value, export FOO_TOKEN=value.
    Rule {
        pattern: concat!(
            r"[A-Za-z0-9_.-]*",
            secret_word!(),
            r#"(?:[0-9_.-][A-Za-z0-9_.-]*)?(?:["']?\s*=\s*|["']\s*:\s*|:\s+)"#,
            value!()
        ),
        check: Check::Always,
    },
    // --token value, -password value: the name ends with the word, the value is no flag.
    Rule {
        pattern: concat!(
            r"(?:^|\s)--?[A-Za-z0-9_-]*?",
            secret_word!(),
            r#"\s+(\[redacted\]|"[^"]*"?|'[^']*'?|[^\s"'-][^\s"']*)"#
        ),
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)sk-ant-([A-Za-z0-9_-]{20,})",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)sk-([A-Za-z0-9_-]{20,})",
        check: Check::Generated(40),
    },
    Rule {
        pattern: r"(?-u:\b)gh[pousr]_([A-Za-z0-9]{20,})",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)github_pat_([A-Za-z0-9_]{20,})",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)xox[abposr]-([A-Za-z0-9-]{10,})",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)(?:AKIA|ASIA)([0-9A-Z]{16})(?-u:\b)",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)glpat-([A-Za-z0-9_-]{20,})",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)npm_([A-Za-z0-9]{36,})",
        check: Check::Always,
    },
    Rule {
        pattern: r"(?-u:\b)AIza([0-9A-Za-z_-]{35,})",
        check: Check::Always,
    },
    // A JWT: three base64url segments, the first a JSON object (`{"` is `eyJ`).
    Rule {
        pattern: r"(?-u:\b)(eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
        check: Check::Always,
    },
];

struct Compiled {
    /// All of [`RULES`] at once: which of them match anywhere, in one pass.
    any: RegexSet,
    /// Each of [`RULES`], to find where.
    each: Vec<Regex>,
}

static COMPILED: LazyLock<Result<Compiled, regex::Error>> = LazyLock::new(|| {
    Ok(Compiled {
        any: RegexSet::new(RULES.iter().map(|r| r.pattern))?,
        each: RULES
            .iter()
            .map(|r| Regex::new(r.pattern))
            .collect::<Result<_, _>>()?,
    })
});

/// One secret found: the whole match (for overlaps) and the part replaced.
struct Hit {
    whole: Range<usize>,
    secret: Range<usize>,
    rule: usize,
}

/// `text` with every recognisable secret replaced by [`REDACTED`] (what is kept in front of
/// it is said in the module docs): tokens by their well-known prefixes (`sk-ant-`, `sk-`,
/// `ghp_` and the other GitHub ones, `github_pat_`, `xoxb-` and the other Slack ones, `AKIA`,
/// `glpat-`, `npm_`, `AIza`), JWTs, `Authorization:` headers and `Bearer` tokens, values of
/// keys and flags whose name says password, secret, token or API, access or private key, the
/// passwords of URLs and PEM private keys. Borrowed when nothing was masked.
///
/// Should the patterns ever fail to compile (a test checks they do), the whole text is
/// `[redacted]`: hiding too much beats showing a secret.
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    let Ok(compiled) = &*COMPILED else {
        return Cow::Owned(REDACTED.to_owned());
    };
    let matched = compiled.any.matches(text);
    if !matched.matched_any() {
        return Cow::Borrowed(text);
    }
    let mut hits = Vec::new();
    for i in matched.iter() {
        let (Some(rule), Some(re)) = (RULES.get(i), compiled.each.get(i)) else {
            continue;
        };
        for caps in re.captures_iter(text) {
            let (Some(whole), Some(secret)) = (caps.get(0), caps.get(1)) else {
                continue;
            };
            let accepted = match rule.check {
                Check::Always => true,
                Check::Generated(long) => {
                    secret.len() >= long || secret.as_str().bytes().any(|b| b.is_ascii_digit())
                }
            };
            if accepted {
                hits.push(Hit {
                    whole: whole.range(),
                    secret: secret.range(),
                    rule: i,
                });
            }
        }
    }
    if hits.is_empty() {
        return Cow::Borrowed(text);
    }
    // Leftmost first; of those starting together the longest, then the earlier rule.
    hits.sort_by_key(|h| (h.whole.start, Reverse(h.whole.end), h.rule));
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut covered = 0;
    for hit in hits {
        if hit.whole.start < covered {
            continue;
        }
        out.push_str(text.get(copied..hit.secret.start).unwrap_or_default());
        out.push_str(REDACTED);
        copied = hit.secret.end;
        covered = hit.whole.end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn every_pattern_compiles() {
        let compiled = COMPILED.as_ref().unwrap();
        assert_eq!(compiled.each.len(), RULES.len());
        for (rule, re) in RULES.iter().zip(&compiled.each) {
            assert_eq!(re.captures_len(), 2, "one secret group in {}", rule.pattern);
        }
    }

    const GH36: &str = "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";

    /// (input, expected) for every kind of secret.
    fn masked_cases() -> Vec<(String, String)> {
        let mut cases: Vec<(String, String)> = [
            (
                "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz012345 ok",
                "key sk-ant-[redacted] ok",
            ),
            ("sk-proj-Ab12Cd34Ef56Gh78Ij90Kl", "sk-[redacted]"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                "github_pat_[redacted]",
            ),
            ("xoxb-1234567890-abcdefghij", "xoxb-[redacted]"),
            ("xoxp-1234567890-abcdefghij", "xoxp-[redacted]"),
            ("xoxa-2-1234567890-abcdefgh", "xoxa-[redacted]"),
            ("aws AKIAIOSFODNN7EXAMPLE", "aws AKIA[redacted]"),
            ("glpat-Ab12Cd34Ef56Gh78Ij90", "glpat-[redacted]"),
            (
                "npm_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
                "npm_[redacted]",
            ),
            (
                "maps?key=AIzaSyA-1234567890abcdefghijklmnopqrstu",
                "maps?key=AIza[redacted]",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U!",
                "jwt [redacted]!",
            ),
            (
                "curl -H 'Authorization: Bearer abc.def-123' https://api",
                "curl -H 'Authorization: Bearer [redacted]' https://api",
            ),
            (
                "authorization=Basic dXNlcjpwYXNz",
                "authorization=Basic [redacted]",
            ),
            ("Bearer 0123456789abcdef", "Bearer [redacted]"),
            (
                "bearer abcdefghijklmnopqrstuvwxyzAB",
                "bearer [redacted]",
            ),
            (
                "sk-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN",
                "sk-[redacted]",
            ),
            (
                "export GITHUB_TOKEN=abc123 && gh pr list",
                "export GITHUB_TOKEN=[redacted] && gh pr list",
            ),
            (
                "mysql --password=hunter2 db",
                "mysql --password=[redacted] db",
            ),
            (
                "gh auth login --token abc123def",
                "gh auth login --token [redacted]",
            ),
            ("tool -api-key 'a b c' run", "tool -api-key [redacted] run"),
            ("DB_PASSWORD: s3cr3t", "DB_PASSWORD: [redacted]"),
            (r#"{"api_key":"abc 123"}"#, r#"{"api_key":[redacted]}"#),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG",
                "aws_secret_access_key = [redacted]",
            ),
            ("apiKey=xyz", "apiKey=[redacted]"),
            ("clientSecret: 'a b c'", "clientSecret: [redacted]"),
            ("secretKey=abc", "secretKey=[redacted]"),
            ("PASSWD=\"unterminated to the end", "PASSWD=[redacted]"),
            (
                "git clone https://user:hunter2@example.com/r.git",
                "git clone https://user:[redacted]@example.com/r.git",
            ),
            (
                "redis://:pw@localhost:6379",
                "redis://:[redacted]@localhost:6379",
            ),
            (
                "k -----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc=\n-----END RSA PRIVATE KEY----- done",
                "k -----BEGIN RSA PRIVATE KEY-----\n[redacted]\n-----END RSA PRIVATE KEY----- done",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXk cut off",
                "-----BEGIN OPENSSH PRIVATE KEY----- [redacted]",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIE",
                "-----BEGIN PRIVATE KEY-----\n[redacted]",
            ),
            (
                "Ünïcode password=geheim ü ключ:sk-ant-api03-AbCdEfGhIjKlMnOpQrSt",
                "Ünïcode password=[redacted] ü ключ:sk-ant-[redacted]",
            ),
            (
                "two ghp_aB3dE5gH7jK9mN1pQ3sT and glpat-Ab12Cd34Ef56Gh78Ij90",
                "two ghp_[redacted] and glpat-[redacted]",
            ),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        for p in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            cases.push((
                format!("git push {p}{GH36}"),
                format!("git push {p}[redacted]"),
            ));
        }
        cases
    }

    #[test]
    fn masks_every_kind_of_secret() {
        for (input, expected) in masked_cases() {
            assert_eq!(mask_secrets(&input), expected, "input: {input:?}");
            // Masking what is already masked changes nothing.
            assert_eq!(mask_secrets(&expected), expected, "again: {expected:?}");
        }
    }

    #[test]
    fn leaves_lookalikes_alone() {
        for input in [
            "pip install sk-learn",
            "scikit-learn and sk-learn-tutorial-for-beginners",
            "task-1234567890123456789012345",
            "mask-Ab12Cd34Ef56Gh78Ij90Kl12",
            "vim src/password_reset.rs",
            "cat tokenizer.json",
            "train --tokenizer tokenizer.json",
            "tokenizer: bert",
            "max_tokens=4096 --max-tokens 4096",
            "passwordless login",
            "git clone git@github.com:foo/bar.git",
            "git clone https://github.com/foo/bar.git",
            "ssh://git@host:22/repo and http://localhost:8080/x@y",
            "error[E0308]: src/token.rs:42:5",
            "the bearer of bad news; Bearer authentication is used",
            "AKIA is a prefix, eyJ alone, ghp_short",
            "npm_config_cache=/tmp npm_package_dependencies_typescript",
            "PWD=/home/me",
            "kubectl delete secret my-secret",
            "-----BEGIN PUBLIC KEY----- MIIB",
            "日本語のパス/ファイル.rs",
            "",
        ] {
            let out = mask_secrets(input);
            assert!(matches!(out, Cow::Borrowed(_)), "{input:?} became {out:?}");
        }
    }

    #[test]
    fn neutralises_every_class_of_character() {
        let mut chars: Vec<char> = vec!['\0', '\x07', '\x1b', '\r', '\n', '\t', '\x0b', '\x0c'];
        chars.extend(['\x7f', '\u{80}', '\u{85}', '\u{9b}', '\u{9f}']);
        chars.extend(['\u{061C}', '\u{200E}', '\u{200F}']);
        chars.extend('\u{202A}'..='\u{202E}');
        chars.extend('\u{2066}'..='\u{2069}');
        chars.extend(['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}']);
        chars.extend(['\u{2028}', '\u{2029}', '\u{A0}', '\u{3000}', '\u{FFFE}']);
        for c in chars {
            let input = format!("a{c}b");
            assert_eq!(neutralise(&input), "a b", "U+{:04X}", u32::from(c));
            assert_eq!(
                neutralise(&format!("{c}x{c}{c}")),
                "x",
                "U+{:04X}",
                u32::from(c)
            );
        }
        assert_eq!(
            neutralise("a \t\n\u{202E}\u{200B} b\r\n\r\nc  d"),
            "a b c d"
        );
        assert_eq!(neutralise("\u{1b}[31mred\u{1b}[0m\u{7}"), "[31mred [0m");
    }

    #[test]
    fn neutralise_borrows_when_nothing_changes() {
        for clean in ["ls -la /tmp", "日本語 パス 🦀", "x", ""] {
            assert!(matches!(neutralise(clean), Cow::Borrowed(s) if s == clean));
        }
        // Only the ends: still borrowed, from inside the input.
        assert!(matches!(
            neutralise("  cargo test \n"),
            Cow::Borrowed("cargo test")
        ));
        assert!(matches!(neutralise("a  b"), Cow::Owned(_)));
        assert!(matches!(neutralise("a\tb"), Cow::Owned(_)));
    }

    #[test]
    fn a_bidi_override_cannot_disguise_a_command() {
        let out = safe_preview("ls \u{202E}txt.exe", 80);
        assert_eq!(out, "ls txt.exe");
        let attack = "rm -rf \u{2067}/\u{2069} \u{2066}# safe\u{2069}\u{200F}";
        let out = safe_preview(attack, 80);
        assert_eq!(out, "rm -rf / # safe");
        assert!(!out.chars().any(is_invisible_format));
    }

    #[test]
    fn preview_masks_before_it_cuts() {
        // Cut first, `token=abc…` would show the start of the secret.
        assert_eq!(safe_preview("token=abcdefghijkl", 10), "token=[re…");
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(
            safe_preview(pem, 200),
            "-----BEGIN EC PRIVATE KEY----- [redacted] -----END EC PRIVATE KEY-----"
        );
        assert_eq!(
            safe_preview("Authorization:\n  Bearer\tabc123def456", 200),
            "Authorization: Bearer [redacted]"
        );
    }

    #[test]
    fn preview_cuts_by_characters() {
        assert_eq!(safe_preview("日本語のパスとファイル名", 5), "日本語の…");
        assert_eq!(safe_preview("🦀🦀🦀", 3), "🦀🦀🦀");
        assert_eq!(safe_preview("🦀🦀🦀", 2), "🦀…");
        assert_eq!(safe_preview("", 10), "");
        assert_eq!(safe_preview("\n\t \u{200B}", 10), "");
        assert_eq!(safe_preview("anything", 0), "");
        let text = "é日🦀 ü\u{202E}x ghp_aB3dE5gH7jK9mN1pQ3sT5vW7 \u{301}ñ";
        let full = safe_preview(text, usize::MAX);
        assert_eq!(full, "é日🦀 ü x ghp_[redacted] \u{301}ñ");
        let n = full.chars().count();
        for max in 0..=n + 2 {
            let out = safe_preview(text, max);
            assert!(out.chars().count() <= max, "{max}: {out:?}");
            if max >= n {
                assert_eq!(out, full);
            } else if max > 0 {
                assert!(out.ends_with('…'));
            }
        }
    }

    /// 64 KiB, the largest detail atm keeps, built to make a backtracking matcher (or a
    /// quadratic way of finding every match) take seconds or worse.
    #[test]
    fn large_inputs_take_linear_time() {
        const SIZE: usize = 64 * 1024;
        fn fill(unit: &str) -> String {
            unit.repeat(SIZE / unit.len() + 1)
                .chars()
                .take(SIZE)
                .collect()
        }
        let started = Instant::now();
        let mut masked_units = 0;
        for unit in [
            "a",
            "sk-",
            "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "password",
            "password=",
            "token: ",
            "--token ",
            "a_token_",
            "\"",
            "https://u:",
            "x://",
            "eyJaaaaaaaaaaaa.",
            "-----BEGIN PRIVATE KEY-----",
            "Bearer ",
            "AKIA",
            "é日🦀\u{202E}\n",
            "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7 ",
        ] {
            let input = fill(unit);
            let t = Instant::now();
            let out = safe_preview(&input, 200);
            assert!(out.chars().count() <= 200);
            let masked = mask_secrets(&input);
            masked_units += usize::from(masked.contains(REDACTED));
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "{unit:?} took {:?}",
                t.elapsed()
            );
        }
        // Some of them are secrets, and all of each is masked, not only the first.
        let ghp = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7 ".repeat(SIZE / 29);
        let masked = mask_secrets(&ghp);
        assert_eq!(
            masked.matches("ghp_[redacted]").count(),
            ghp.matches("ghp_aB3dE5gH7jK9mN1pQ3sT5vW7").count()
        );
        assert!(masked_units >= 5);
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
