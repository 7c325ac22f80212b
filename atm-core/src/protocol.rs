//! Protocol v1 framing and messages (`shared/docs/protocol-v1.md`), shared by the query socket,
//! the ingest socket and the clients.
//!
//! Lines are JSON objects separated by `\n` (a trailing `\r` is tolerated). The 1 MiB line limit
//! is enforced by the codec while reading, so a peer that never sends a newline cannot make us
//! buffer more than the limit.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::view::SessionView;

/// Longest line either side may send.
pub const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u32,
    pub minor: u32,
}

impl ProtocolVersion {
    /// 1.1 added pending requests (in views, `decide`, `decided`, `request_resolved`, and the
    /// ingest socket's `decision` and `request_closed`): additions only, so 1.0 clients work on.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 1 };

    /// Compatible iff the major numbers are equal.
    pub fn is_compatible(self) -> bool {
        self.major == Self::CURRENT.major
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Stable error codes clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ParseError,
    UnknownType,
    TooLarge,
    BadVersion,
    NotConnected,
    AlreadyConnected,
    InvalidMessage,
    RegistryFull,
    TooManyClients,
    NotFound,
    /// A `decide` for a request that was already answered (or has otherwise ended).
    AlreadyAnswered,
    /// A `decide` for a request nothing can deliver an answer to.
    NotAnswerable,
    /// A `decide` for a request of another machine that could not be asked.
    HostUnreachable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParseError => "parse_error",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::BadVersion => "bad_version",
            Self::NotConnected => "not_connected",
            Self::AlreadyConnected => "already_connected",
            Self::InvalidMessage => "invalid_message",
            Self::RegistryFull => "registry_full",
            Self::TooManyClients => "too_many_clients",
            Self::NotFound => "not_found",
            Self::AlreadyAnswered => "already_answered",
            Self::NotAnswerable => "not_answerable",
            Self::HostUnreachable => "host_unreachable",
            Self::Internal => "internal",
        }
    }
}

/// A message that could not be accepted, with its stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a client is told when the registry refuses its message.
impl From<crate::registry::RegistryError> for WireError {
    fn from(e: crate::registry::RegistryError) -> Self {
        use crate::registry::RegistryError;
        let code = match &e {
            RegistryError::RegistryFull { .. } => ErrorCode::RegistryFull,
            RegistryError::Invalid { .. } => ErrorCode::InvalidMessage,
            RegistryError::SessionNotFound(_) => ErrorCode::NotFound,
            RegistryError::ChannelClosed => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

/// What a client is told when its decision is refused.
impl From<crate::request::DecideError> for WireError {
    fn from(e: crate::request::DecideError) -> Self {
        use crate::request::DecideError;
        let code = match &e {
            DecideError::NotFound(_) => ErrorCode::NotFound,
            DecideError::AlreadyAnswered(_) | DecideError::Ended { .. } => {
                ErrorCode::AlreadyAnswered
            }
            DecideError::NotAnswerable(_) => ErrorCode::NotAnswerable,
            DecideError::Invalid(_) => ErrorCode::InvalidMessage,
            DecideError::Unreachable { .. } => ErrorCode::HostUnreachable,
        };
        Self::new(code, e.to_string())
    }
}

/// A decoded line: its `type`, its version (if it carried one) and the whole object.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    pub kind: String,
    pub version: Option<ProtocolVersion>,
    pub body: Map<String, Value>,
}

impl RawMessage {
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }
}

/// Decodes one line (without its `\n`). Checks: UTF-8, JSON object, a string `type`, and a
/// compatible `protocol_version` when present (absent means the current version: the original
/// hook script and hand-written scripts omit it).
pub fn decode_line(line: &[u8]) -> Result<RawMessage, WireError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(WireError::new(
            ErrorCode::TooLarge,
            format!(
                "line of {} bytes exceeds the {MAX_LINE}-byte limit",
                line.len()
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        WireError::new(
            ErrorCode::ParseError,
            format!("line is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        WireError::new(
            ErrorCode::ParseError,
            format!("line is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(WireError::new(
            ErrorCode::ParseError,
            "a message must be a JSON object",
        ));
    };
    let kind = match body.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                "field `type` must be a string",
            ));
        }
        None => {
            return Err(WireError::new(
                ErrorCode::InvalidMessage,
                "missing field `type`",
            ));
        }
    };
    let version = match body.get("protocol_version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<ProtocolVersion>(v.clone()).map_err(|_| {
                WireError::new(
                    ErrorCode::BadVersion,
                    "`protocol_version` must be {\"major\":N,\"minor\":N}",
                )
            })?,
        ),
    };
    if let Some(v) = version
        && !v.is_compatible()
    {
        return Err(WireError::new(
            ErrorCode::BadVersion,
            format!(
                "protocol version {v} is not supported (this daemon speaks {})",
                ProtocolVersion::CURRENT
            ),
        ));
    }
    Ok(RawMessage {
        kind,
        version,
        body,
    })
}

/// What the daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Connected {
        protocol_version: ProtocolVersion,
        client_id: String,
    },
    Rejected {
        reason: String,
        protocol_version: ProtocolVersion,
    },
    SessionList {
        sessions: Vec<SessionView<'static>>,
    },
    SessionUpdated {
        session: Box<SessionView<'static>>,
    },
    SessionRemoved {
        session_id: String,
    },
    Pong {
        seq: u64,
    },
    Error {
        message: String,
        code: ErrorCode,
    },
    DiscoveryComplete {
        discovered: u64,
        failed: u64,
    },
    /// Ingest (1.1): the answer to a waiting hook's request, to hand to the agent.
    Decision {
        request_id: crate::request::RequestId,
        verdict: crate::request::Verdict,
    },
    /// Ingest (1.1): no answer will come for the hook's request (`reason`); the agent's own
    /// flow goes on. `request_id` is absent when no request was opened.
    RequestClosed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<crate::request::RequestId>,
        reason: String,
    },
    /// Query (1.1): a `decide` was accepted and delivered to the waiting agent.
    Decided {
        request_id: crate::request::RequestId,
        session_id: String,
    },
    /// Query (1.1), to subscribers: a request ended (answered through atm, or withdrawn).
    RequestResolved {
        request_id: crate::request::RequestId,
        session_id: String,
        #[serde(flatten)]
        fate: crate::request::RequestFate,
    },
}

impl ServerMessage {
    pub fn error(e: &WireError) -> Self {
        Self::Error {
            message: e.message.clone(),
            code: e.code,
        }
    }

    /// The message as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"type":"error","message":"cannot encode reply","code":"internal"}"#.to_vec()
        });
        v.push(b'\n');
        v
    }
}

/// A client message, as a line ready to send (`\n` included).
pub fn client_line(kind: &str, fields: Map<String, Value>) -> Vec<u8> {
    let mut body = Map::new();
    body.insert(
        "protocol_version".to_owned(),
        serde_json::json!({"major": ProtocolVersion::CURRENT.major, "minor": ProtocolVersion::CURRENT.minor}),
    );
    body.insert("type".to_owned(), Value::String(kind.to_owned()));
    body.extend(fields);
    let mut v = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    v.push(b'\n');
    v
}

/// The line codec both sockets use: `\n`-separated, at most [`MAX_LINE`] bytes, enforced while
/// reading.
pub fn line_codec() -> tokio_util::codec::AnyDelimiterCodec {
    tokio_util::codec::AnyDelimiterCodec::new_with_max_length(
        b"\n".to_vec(),
        b"\n".to_vec(),
        MAX_LINE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_keep_stable_codes() {
        use crate::registry::RegistryError;
        let full = WireError::from(RegistryError::RegistryFull { max: 3 });
        assert_eq!(full.code, ErrorCode::RegistryFull);
        assert!(full.message.contains("max_sessions"), "{}", full.message);
        assert_eq!(
            WireError::from(RegistryError::ChannelClosed).code,
            ErrorCode::Internal
        );
        assert_eq!(
            WireError::from(RegistryError::SessionNotFound("x".into())).code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn decodes_and_rejects_with_stable_codes() {
        let ok =
            decode_line(br#"{"protocol_version":{"major":1,"minor":3},"type":"ping","seq":4}"#)
                .unwrap();
        assert_eq!(ok.kind, "ping");
        assert_eq!(ok.version, Some(ProtocolVersion { major: 1, minor: 3 }));
        let crlf = decode_line(b"{\"type\":\"ping\"}\r").unwrap();
        assert_eq!(crlf.version, None);
        let cases: [(&[u8], ErrorCode); 7] = [
            (b"not json", ErrorCode::ParseError),
            (b"{\"type\":", ErrorCode::ParseError),
            (b"[1,2]", ErrorCode::ParseError),
            (b"{\"type\":5}", ErrorCode::InvalidMessage),
            (b"{\"x\":1}", ErrorCode::InvalidMessage),
            (
                b"{\"type\":\"ping\",\"protocol_version\":{\"major\":2,\"minor\":0}}",
                ErrorCode::BadVersion,
            ),
            (
                b"{\"type\":\"ping\",\"protocol_version\":\"1.0\"}",
                ErrorCode::BadVersion,
            ),
        ];
        for (line, code) in cases {
            assert_eq!(
                decode_line(line).unwrap_err().code,
                code,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let bad_utf8 = b"{\"type\":\"p\xffing\"}";
        assert_eq!(
            decode_line(bad_utf8).unwrap_err().code,
            ErrorCode::ParseError
        );
        let huge = vec![b' '; MAX_LINE + 1];
        assert_eq!(decode_line(&huge).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn server_messages_round_trip() {
        let msgs = [
            ServerMessage::Connected {
                protocol_version: ProtocolVersion::CURRENT,
                client_id: "client-1".into(),
            },
            ServerMessage::Pong { seq: 7 },
            ServerMessage::SessionRemoved {
                session_id: "abc".into(),
            },
            ServerMessage::Error {
                message: "x".into(),
                code: ErrorCode::TooLarge,
            },
            ServerMessage::DiscoveryComplete {
                discovered: 2,
                failed: 0,
            },
        ];
        for m in msgs {
            let line = m.to_line();
            assert_eq!(*line.last().unwrap(), b'\n');
            let back: ServerMessage = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, m);
        }
        let err = String::from_utf8(ServerMessage::Pong { seq: 1 }.to_line()).unwrap();
        assert_eq!(err, "{\"type\":\"pong\",\"seq\":1}\n");
    }

    #[test]
    fn client_lines_carry_the_version() {
        let line = client_line(
            "ping",
            serde_json::json!({"seq": 3}).as_object().unwrap().clone(),
        );
        let m = decode_line(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(m.kind, "ping");
        assert_eq!(m.version, Some(ProtocolVersion::CURRENT));
        assert_eq!(m.body["seq"], 3);
    }
}
