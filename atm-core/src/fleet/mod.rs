//! One view of several machines: what the `nats` sink publishes and the `nats` adapter reads.
//!
//! Both plugins share this module, so neither depends on the other: the key layout of the
//! key-value bucket, the JSON of its values, the messages that carry an answer to the host that
//! owns a request, and (with the `nats` feature) the connection settings and how to connect
//! ([`connect`]).
//!
//! # Keys
//!
//! Every key starts with its host's id, so a NATS account per host can be allowed to write
//! `$KV.<bucket>.<host>.>` and nothing else:
//!
//! - `<host>.host`: the host's heartbeat ([`HostEntry`]), put every `heartbeat`;
//! - `<host>.s.<session>`: one session ([`SessionEntry`]); `<session>` is the session's stable
//!   key escaped into `[A-Za-z0-9_]` ([`session_token`]).
//!
//! A session's removal is a delete of its key. Values are JSON, at most [`MAX_ENTRY`] bytes.
//!
//! # Answers
//!
//! A hub that answers a request of host `h` sends a [`DecideRequest`] to
//! `<subject_prefix>.<h>.decide` and waits for the [`DecideReply`] (NATS request/reply).

#[cfg(feature = "nats")]
mod connect;
#[cfg(feature = "nats")]
pub use connect::{
    BucketCreation, BucketError, BucketSettings, ConnectError, NatsConnection, Opened, connect,
    connect_and_open, host_keys, open_bucket,
};

use serde::{Deserialize, Serialize};

use crate::host::HostId;
use crate::model::{Session, SessionKey};
use crate::request::{DecideError, Decision};

/// Version of the entry format; an entry of another version is refused, never guessed at.
pub const ENTRY_VERSION: u32 = 1;
/// The largest value a hub accepts (a session with a full request log and questions is a few
/// KiB; this leaves room and still bounds what one bad publisher can make a hub parse).
pub const MAX_ENTRY: usize = 256 * 1024;
/// The key suffix of a host's heartbeat.
pub const HOST_KEY: &str = "host";

/// The key of `host`'s heartbeat.
pub fn host_key(host: &HostId) -> String {
    format!("{host}.{HOST_KEY}")
}

/// The key of `host`'s session `key`.
pub fn session_kv_key(host: &HostId, key: &SessionKey) -> String {
    format!("{host}.s.{}", session_token(key))
}

/// The subject `host` answers decisions on.
pub fn decide_subject(prefix: &str, host: &HostId) -> String {
    format!("{prefix}.{host}.decide")
}

/// Escapes text into `[A-Za-z0-9_]`: letters and digits stay, every other byte is `_XX`.
fn escape(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
}

/// A session key as one key-value key token: `p_<harness>__<pid>__<start>`, `i_<harness>__<id>`,
/// `r_<host>__<key>`. Escaped text never holds `__`, so the mapping is injective.
pub fn session_token(key: &SessionKey) -> String {
    let mut out = String::new();
    match key {
        SessionKey::Process {
            harness,
            pid,
            start_time,
        } => {
            out.push_str("p_");
            escape(harness.as_str(), &mut out);
            out.push_str(&format!("__{pid}__{start_time}"));
        }
        SessionKey::Id { harness, id } => {
            out.push_str("i_");
            escape(harness.as_str(), &mut out);
            out.push_str("__");
            escape(id.as_str(), &mut out);
        }
        SessionKey::Remote { host, key } => {
            out.push_str("r_");
            escape(host.as_str(), &mut out);
            out.push_str("__");
            out.push_str(&session_token(key));
        }
    }
    out
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Host(HostId),
    Session(HostId),
}

/// Reads a key of the bucket: whose it is, and whether it is a heartbeat or a session.
pub fn parse_key(key: &str) -> Option<KeyKind> {
    let (host, rest) = key.split_once('.')?;
    let host = HostId::parse(host).ok()?;
    if rest == HOST_KEY {
        Some(KeyKind::Host(host))
    } else if rest.starts_with("s.") && rest.len() > 2 {
        Some(KeyKind::Session(host))
    } else {
        None
    }
}

/// A host's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEntry {
    pub v: u32,
    pub host: HostId,
    /// How often the host says it will beat (milliseconds): a hub may judge it by this.
    pub heartbeat_ms: u64,
    /// Its sessions when it beat.
    pub sessions: usize,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// One session of a host, as it published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub v: u32,
    pub host: HostId,
    pub session: Session,
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("value of {len} bytes is over the {MAX_ENTRY}-byte limit")]
    TooLarge { len: usize },
    #[error("value is not UTF-8 text")]
    NotUtf8,
    #[error("value is not a valid entry: {0}")]
    Invalid(String),
    #[error(
        "entry version {0} is not {ENTRY_VERSION}: this daemon and the publisher differ in version"
    )]
    Version(u32),
    #[error("entry names host {entry} but its key belongs to host {key}")]
    WrongHost { key: String, entry: String },
}

fn check_size(value: &[u8]) -> Result<&str, EntryError> {
    if value.len() > MAX_ENTRY {
        return Err(EntryError::TooLarge { len: value.len() });
    }
    std::str::from_utf8(value).map_err(|_| EntryError::NotUtf8)
}

/// Decodes a session value found under a key of `key_host`.
pub fn decode_session(key_host: &HostId, value: &[u8]) -> Result<SessionEntry, EntryError> {
    decode(key_host, value, |e| (e.v, &e.host))
}

/// Decodes a heartbeat value found under a key of `key_host`.
pub fn decode_host(key_host: &HostId, value: &[u8]) -> Result<HostEntry, EntryError> {
    decode(key_host, value, |e| (e.v, &e.host))
}

/// Decodes an entry and checks the version and host that `stamp` reads from it.
fn decode<T: serde::de::DeserializeOwned>(
    key_host: &HostId,
    value: &[u8],
    stamp: fn(&T) -> (u32, &HostId),
) -> Result<T, EntryError> {
    let text = check_size(value)?;
    let e: T = serde_json::from_str(text).map_err(|e| EntryError::Invalid(e.to_string()))?;
    let (v, host) = stamp(&e);
    check(v, key_host, host)?;
    Ok(e)
}

fn check(v: u32, key_host: &HostId, host: &HostId) -> Result<(), EntryError> {
    if v != ENTRY_VERSION {
        return Err(EntryError::Version(v));
    }
    if key_host != host {
        return Err(EntryError::WrongHost {
            key: key_host.to_string(),
            entry: host.to_string(),
        });
    }
    Ok(())
}

/// What a host publishes of `s`: everything, or (`include_text` off) without the text people
/// typed or the agent shows (the first prompt, the title, the preview of a command, questions,
/// suggestions): the view of a fleet need not carry prompts across machines.
pub fn published(s: &Session, include_text: bool) -> Session {
    let mut s = s.clone();
    if !include_text {
        s.first_prompt = None;
        s.title = None;
        if let Some(a) = s.attention.as_mut() {
            a.detail = None;
            a.questions.clear();
            a.suggestions.clear();
        }
    }
    s
}

/// A decision for host `host`'s request, sent by a hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecideRequest {
    pub v: u32,
    /// The host the request belongs to (a host refuses what is not its own).
    pub host: HostId,
    pub request_id: String,
    pub decision: Decision,
    /// Where the answer was given (`atmctl`, `dbus`, ...) and by which uid, on `from`.
    pub surface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The hub that sends it.
    pub from: HostId,
}

/// What the owning host answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DecideReply {
    /// Delivered to the agent.
    Decided { session_id: String },
    /// Refused: `code` is a protocol-v1 error code (`not_found`, `already_answered`,
    /// `not_answerable`, `invalid_message`, `internal`), `message` says why.
    Refused { code: String, message: String },
}

impl DecideReply {
    /// The reply for a refusal.
    pub fn refused(e: &DecideError) -> Self {
        let code = crate::protocol::WireError::from(e.clone())
            .code
            .as_str()
            .to_owned();
        Self::Refused {
            code,
            message: e.to_string(),
        }
    }

    /// The refusal as the hub's caller hears it.
    pub fn to_error(code: &str, message: String, request_id: &str) -> DecideError {
        match code {
            "not_found" => DecideError::NotFound(request_id.to_owned()),
            "already_answered" => DecideError::AlreadyAnswered(message),
            "not_answerable" => DecideError::NotAnswerable(request_id.to_owned()),
            _ => DecideError::Invalid(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Harness, SessionId};

    fn host(s: &str) -> HostId {
        HostId::parse(s).unwrap()
    }

    #[test]
    fn keys_start_with_the_host_and_stay_one_token_per_part() {
        let h = host("devbox");
        let p = SessionKey::Process {
            harness: Harness::claude(),
            pid: 12,
            start_time: 34,
        };
        assert_eq!(session_kv_key(&h, &p), "devbox.s.p_claude__12__34");
        let i = SessionKey::Id {
            harness: Harness::new("my.agent"),
            id: SessionId::new("a b/*>.c"),
        };
        let k = session_kv_key(&h, &i);
        assert_eq!(k, "devbox.s.i_my_2Eagent__a_20b_2F_2A_3E_2Ec");
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        );
        assert_eq!(k.matches('.').count(), 2, "{k}");
        assert_eq!(parse_key(&k), Some(KeyKind::Session(h.clone())));
        assert_eq!(parse_key("devbox.host"), Some(KeyKind::Host(h)));
        for bad in ["devbox", "devbox.x", "devbox.s.", "a*b.host", ".host"] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
        // Two ids that differ only where escaping happens stay apart.
        let a = SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new("x_2E"),
        };
        let b = SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new("x."),
        };
        assert_ne!(session_token(&a), session_token(&b));
    }

    #[test]
    fn values_are_checked_for_size_text_shape_version_and_host() {
        let h = host("devbox");
        let s = crate::testing_session();
        let good = serde_json::to_vec(&SessionEntry {
            v: ENTRY_VERSION,
            host: h.clone(),
            session: s.clone(),
        })
        .unwrap();
        assert_eq!(decode_session(&h, &good).unwrap().session, s);
        assert!(matches!(
            decode_session(&host("other"), &good),
            Err(EntryError::WrongHost { .. })
        ));
        assert_eq!(
            decode_session(&h, &[0xff, 0xfe, b'{']),
            Err(EntryError::NotUtf8)
        );
        assert!(matches!(
            decode_session(&h, &vec![b' '; MAX_ENTRY + 1]),
            Err(EntryError::TooLarge { .. })
        ));
        for bad in [&b"{"[..], b"[]", b"{\"v\":1}", b"null", b""] {
            assert!(
                matches!(decode_session(&h, bad), Err(EntryError::Invalid(_))),
                "{bad:?}"
            );
        }
        let v2 = String::from_utf8(good)
            .unwrap()
            .replacen("\"v\":1", "\"v\":2", 1);
        assert_eq!(
            decode_session(&h, v2.as_bytes()),
            Err(EntryError::Version(2))
        );
    }

    #[test]
    fn text_stays_home_unless_asked_for() {
        let mut s = crate::testing_session();
        s.first_prompt = Some("deploy the secret thing".into());
        s.attention = Some(crate::model::Attention {
            reason: "permission".into(),
            tool: Some("Bash".into()),
            detail: Some("curl -H token".into()),
            ..Default::default()
        });
        let stripped = published(&s, false);
        assert_eq!(stripped.first_prompt, None);
        let a = stripped.attention.unwrap();
        assert_eq!((a.tool.as_deref(), a.detail), (Some("Bash"), None));
        assert_eq!(published(&s, true), s);
    }
}
