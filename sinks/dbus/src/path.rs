//! Object paths for sessions: `/io/github/atm/Monitor1/sessions/<segment>`, derived from the
//! registry's stable session key so a path never changes while its session lives (not even when
//! the agent's session id changes on `/clear` or resume).
//!
//! D-Bus path elements may only hold `[A-Za-z0-9_]`. Free text (the harness name, an id) is
//! escaped byte by byte: ASCII letters and digits stay, every other byte becomes `_XX` (two
//! uppercase hex digits), `_` included. An escaped text therefore never contains `__`, which
//! makes `__` a safe separator and the mapping injective:
//!
//! - process key: `<harness>__<pid>_<start_time>`, e.g. `claude__48213_991823`
//! - id key:      `<harness>__id__<id>`, e.g. `claude__id__5f0c_2D11`
//! - a session mirrored from another host: `<host>__remote__<its key's element>`, e.g.
//!   `devbox__remote__claude__48213_991823`

use atm_core::SessionKey;

/// The manager object, which also serves `org.freedesktop.DBus.ObjectManager`.
pub const MANAGER_PATH: &str = "/io/github/atm/Monitor1";
/// The parent of every session object.
pub const SESSIONS_PATH: &str = "/io/github/atm/Monitor1/sessions";

/// Escapes any text into characters valid in a D-Bus path element (see the module docs).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The path element for a session key.
pub fn segment(key: &SessionKey) -> String {
    match key {
        SessionKey::Process {
            harness,
            pid,
            start_time,
        } => format!("{}__{pid}_{start_time}", escape(harness.as_str())),
        SessionKey::Id { harness, id } => {
            format!("{}__id__{}", escape(harness.as_str()), escape(id.as_str()))
        }
        // `__remote__` cannot start the tail of a local key (digits or `id`), and the escaped
        // host holds no `__`: still injective.
        SessionKey::Remote { host, key } => {
            format!("{}__remote__{}", escape(host.as_str()), segment(key))
        }
    }
}

/// The full object path for a session key.
pub fn session_path(key: &SessionKey) -> String {
    format!("{SESSIONS_PATH}/{}", segment(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::{Harness, SessionId};
    use std::collections::HashSet;

    fn valid_element(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }

    #[test]
    fn paths_are_readable_for_ordinary_keys() {
        let k = SessionKey::Process {
            harness: Harness::claude(),
            pid: 48213,
            start_time: 991823,
        };
        assert_eq!(
            session_path(&k),
            "/io/github/atm/Monitor1/sessions/claude__48213_991823"
        );
        let k = SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new("5f0c-11"),
        };
        assert_eq!(segment(&k), "claude__id__5f0c_2D11");
    }

    #[test]
    fn hostile_text_gives_valid_object_paths() {
        let texts = [
            "",
            "_",
            "__",
            "a/b",
            "../..",
            "ünïcödé ✓",
            "tab\there",
            "nul\0byte",
            "id__x",
            &"x".repeat(300),
        ];
        for h in texts {
            for id in texts {
                let k = SessionKey::Id {
                    harness: Harness::new(h),
                    id: SessionId::new(id),
                };
                let seg = segment(&k);
                assert!(valid_element(&seg), "{seg:?}");
                let path = session_path(&k);
                assert!(
                    zbus::ObjectPath::try_from(path.as_str()).is_ok(),
                    "{path:?} is not a valid object path"
                );
            }
        }
    }

    #[test]
    fn escaping_never_produces_a_double_underscore() {
        for t in ["_", "__", "a_b", "_x_", "\u{5f}\u{5f}"] {
            assert!(!escape(t).contains("__"), "{t:?} -> {}", escape(t));
        }
    }

    #[test]
    fn distinct_keys_get_distinct_paths() {
        // Texts chosen to collide under naive schemes (separator inside a name, escapes that
        // look like pids, an id that looks like a process key).
        let names = [
            "a", "a_", "a_1", "a__1", "a_5F", "_5F", "id", "a__id", "1_2", "",
        ];
        let mut keys = Vec::new();
        for h in names {
            for id in names {
                keys.push(SessionKey::Id {
                    harness: Harness::new(h),
                    id: SessionId::new(id),
                });
            }
            for (pid, st) in [(1, 2), (12, 3), (1, 23), (0, 0)] {
                keys.push(SessionKey::Process {
                    harness: Harness::new(h),
                    pid,
                    start_time: st,
                });
            }
        }
        let paths: HashSet<String> = keys.iter().map(session_path).collect();
        assert_eq!(paths.len(), keys.len());
    }
}
