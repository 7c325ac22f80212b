//! opencode server events -> `AgentEvent`, as pure functions.
//!
//! An opencode server (`opencode serve`, or the TUI's own server) publishes its bus on
//! `GET /event` as Server-Sent Events whose `data` is `{"type": "...", "properties": {...}}`
//! (`/global/event` wraps the same object as `{"directory": ..., "payload": {...}}`; both are
//! read). [`parse`] checks the bytes, [`translate`] maps one event; neither does I/O, so both
//! are unit-tested and fuzzed.
//!
//! Events that say nothing about a session's state (`server.*`, `lsp.*`, `file.*`, text
//! deltas, ...) translate to `None`. Field access is lenient: only the event type and, for
//! session events, the session id are required.

use atm_core::event::{AgentEvent, StartSource};
use atm_core::model::{PermissionSuggestion, SessionId, UsageUpdate};
use atm_core::registry::limits;
use atm_core::serde_json::{Map, Value};
use atm_core::text::one_line_preview;

pub use atm_core::fields::PREVIEW_CHARS;

/// Why an event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event data is not valid UTF-8 (at byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("event data is not JSON: {0}")]
    NotJson(String),
    #[error("event data is not a JSON object with a string `type`")]
    NoType,
    #[error("`{event_type}` event has no usable session id")]
    NoSession { event_type: String },
    #[error("`{event_type}` event has a session id longer than {max} characters")]
    SessionIdTooLong { event_type: String, max: usize },
}

/// One translated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// opencode's event type (`session.idle`, ...).
    pub event_type: String,
    pub session_id: SessionId,
    /// The session's directory, when the event carries it.
    pub cwd: Option<String>,
    /// The parent session, for a subagent's (child) session, when the event carries it.
    pub parent_id: Option<String>,
    /// Events that repeat while a tool runs (`running` tool parts, `busy` status) are
    /// [`AgentEvent::Reminder`]s: when the session already waits on its user, the state machine
    /// keeps the wait rather than letting an echo of the tool that asked clear it.
    pub event: AgentEvent,
    /// opencode's id of the permission request the event asks (`per_...`), which an answer
    /// given through atm is posted to (`POST /permission/{id}/reply`).
    pub request_id: Option<String>,
}

/// Decodes one SSE event's data into JSON, unwrapping the `/global/event` envelope.
pub fn parse(data: &[u8]) -> Result<Value, EventError> {
    let text = std::str::from_utf8(data).map_err(|e| EventError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let value: Value =
        atm_core::serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    Ok(value)
}

/// Reads the body of `GET /session/status` (`{"<session id>": {"type": "busy"}, ...}`) as the
/// `session.status` events it amounts to. Entries that do not translate are left out.
pub fn parse_statuses(body: &[u8]) -> Result<Vec<Translation>, EventError> {
    let value = parse(body)?;
    let Some(map) = value.as_object() else {
        return Err(EventError::NotJson(
            "`/session/status` did not answer a JSON object".to_owned(),
        ));
    };
    Ok(map
        .iter()
        .filter_map(|(id, status)| {
            let mut props = Map::new();
            props.insert("sessionID".to_owned(), Value::String(id.clone()));
            props.insert("status".to_owned(), status.clone());
            event_for("session.status", &props).ok().flatten()
        })
        .collect())
}

/// Translates one event. `Ok(None)`: the event is valid but means nothing for a session.
pub fn translate(event: &Value) -> Result<Option<Translation>, EventError> {
    let Some(obj) = event.as_object() else {
        return Err(EventError::NoType);
    };
    // `/global/event`: {"directory": ..., "payload": {"type", "properties"}}.
    let (obj, directory) = match obj.get("payload").and_then(Value::as_object) {
        Some(inner) if !obj.contains_key("type") => (inner, str_field(obj, "directory")),
        _ => (obj, None),
    };
    let Some(event_type) = obj.get("type").and_then(Value::as_str) else {
        return Err(EventError::NoType);
    };
    let empty = Map::new();
    let props = obj
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut t = match event_for(event_type, props)? {
        Some(t) => t,
        None => return Ok(None),
    };
    if t.cwd.is_none() {
        t.cwd = directory.map(|d| atm_core::text::truncate_chars(d, limits::PATH));
    }
    Ok(Some(t))
}

fn event_for(ty: &str, p: &Map<String, Value>) -> Result<Option<Translation>, EventError> {
    let info = p.get("info").and_then(Value::as_object);
    let part = p.get("part").and_then(Value::as_object);
    let mut cwd = None;
    let mut yields = false;
    let parent_id = info
        .and_then(|i| str_field(i, "parentID"))
        .map(|p| one_line_preview(p, limits::ID));
    let (session, event) = match ty {
        "session.created" => {
            let info = info.unwrap_or(p);
            cwd = str_field(info, "directory").map(str::to_owned);
            (
                str_field(info, "id").or_else(|| str_field(p, "sessionID")),
                AgentEvent::SessionStarted {
                    source: StartSource::Startup,
                    model: None,
                },
            )
        }
        // The session's running totals: cost in dollars (opencode sums its messages' costs).
        "session.updated" => match usage_event(info, session_usage, "id", p, &mut cwd) {
            Some(found) => found,
            None => return Ok(None),
        },
        "session.deleted" => (
            info.and_then(|i| str_field(i, "id"))
                .or_else(|| str_field(p, "sessionID")),
            AgentEvent::SessionEnded {
                reason: "deleted".to_owned(),
                continues: false,
            },
        ),
        "session.status" => {
            let status = p.get("status").and_then(Value::as_object);
            let event = match status.and_then(|s| str_field(s, "type")) {
                Some("busy") => {
                    yields = true;
                    AgentEvent::PromptSubmitted { prompt: None }
                }
                Some("idle") => AgentEvent::TurnFinished,
                Some("retry") => AgentEvent::Notification {
                    kind: "retry".to_owned(),
                    message: status
                        .and_then(|s| str_field(s, "message"))
                        .map(|m| one_line_preview(m, PREVIEW_CHARS)),
                },
                _ => return Ok(None),
            };
            (str_field(p, "sessionID"), event)
        }
        "session.idle" => (str_field(p, "sessionID"), AgentEvent::TurnFinished),
        "session.error" => {
            let Some(session) = str_field(p, "sessionID") else {
                // A server-wide error: no session to mark.
                return Ok(None);
            };
            (
                Some(session),
                AgentEvent::TurnFailed {
                    error: error_text(p.get("error")),
                },
            )
        }
        "session.compacted" => (str_field(p, "sessionID"), AgentEvent::CompactFinished),
        // `permission.asked` (current) and `permission.updated` (before 1.0) carry the same
        // request in two shapes.
        "permission.asked" | "permission.updated" => {
            let tool = str_field(p, "permission")
                .or_else(|| str_field(p, "type"))
                .or_else(|| p.get("tool").and_then(Value::as_str))
                .unwrap_or("permission");
            (
                str_field(p, "sessionID"),
                AgentEvent::PermissionRequested {
                    tool: one_line_preview(tool, limits::NAME),
                    detail: permission_detail(p),
                    suggestions: always_rule(p),
                },
            )
        }
        // Granted or rejected, the wait is over and the agent goes on.
        "permission.replied" => (
            str_field(p, "sessionID"),
            AgentEvent::ToolFinished { tool: None },
        ),
        "question.asked" => {
            let first = p
                .get("questions")
                .and_then(Value::as_array)
                .and_then(|q| q.first());
            let detail = first
                .and_then(|q| q.get("question").or_else(|| q.get("header")))
                .and_then(Value::as_str)
                .map(|q| one_line_preview(q, PREVIEW_CHARS))
                .filter(|q| !q.is_empty());
            (
                str_field(p, "sessionID"),
                AgentEvent::InputRequested {
                    reason: "question".to_owned(),
                    tool: Some("question".to_owned()),
                    detail,
                },
            )
        }
        "question.replied" | "question.rejected" => (
            str_field(p, "sessionID"),
            AgentEvent::ToolFinished {
                tool: Some("question".to_owned()),
            },
        ),
        "message.part.updated" => {
            let Some(part) = part else {
                return Ok(None);
            };
            if str_field(part, "type") != Some("tool") {
                // Text, reasoning and step parts stream many times a second: not state.
                return Ok(None);
            }
            let Some(tool) = str_field(part, "tool") else {
                return Ok(None);
            };
            let tool = one_line_preview(tool, limits::NAME);
            let state = part.get("state").and_then(Value::as_object);
            let event = match state.and_then(|s| str_field(s, "status")) {
                Some("running") => {
                    yields = true;
                    AgentEvent::ToolStarted {
                        detail: state.and_then(tool_detail),
                        tool,
                    }
                }
                Some("completed") => AgentEvent::ToolFinished { tool: Some(tool) },
                Some("error") => AgentEvent::ToolFinished { tool: Some(tool) },
                _ => return Ok(None),
            };
            (
                str_field(part, "sessionID").or_else(|| str_field(p, "sessionID")),
                event,
            )
        }
        "message.updated" => {
            let assistant = info.filter(|i| str_field(i, "role") == Some("assistant"));
            match usage_event(assistant, assistant_usage, "sessionID", p, &mut cwd) {
                Some(found) => found,
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let Some(session) = session else {
        return Err(EventError::NoSession {
            event_type: ty.to_owned(),
        });
    };
    if session.chars().count() > limits::ID {
        return Err(EventError::SessionIdTooLong {
            event_type: ty.to_owned(),
            max: limits::ID,
        });
    }
    Ok(Some(Translation {
        event_type: ty.to_owned(),
        session_id: SessionId::new(session),
        cwd: cwd.map(|c| atm_core::text::truncate_chars(&c, limits::PATH)),
        parent_id,
        request_id: matches!(event, AgentEvent::PermissionRequested { .. })
            .then(|| str_field(p, "id"))
            .flatten()
            .filter(|id| is_request_id(id))
            .map(str::to_owned),
        event: if yields {
            AgentEvent::reminder(event)
        } else {
            event
        },
    }))
}

/// The usage update `usage` reads from `info` (a session's or an assistant message's) as the
/// event, for the session `info[id_key]` names or else the event's `sessionID`; `None` (nothing
/// to apply) without `info` or when it carries no usage. `cwd` is set to the update's directory.
fn usage_event<'a>(
    info: Option<&'a Map<String, Value>>,
    usage: fn(&Map<String, Value>) -> UsageUpdate,
    id_key: &str,
    p: &'a Map<String, Value>,
    cwd: &mut Option<String>,
) -> Option<(Option<&'a str>, AgentEvent)> {
    let info = info?;
    let update = usage(info);
    cwd.clone_from(&update.cwd);
    if update.is_empty() {
        return None;
    }
    let session = str_field(info, id_key).or_else(|| str_field(p, "sessionID"));
    Some((session, AgentEvent::UsageUpdated(Box::new(update))))
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// `name: message` of an opencode error object (`{"name": "APIError", "data": {"message"}}`).
fn error_text(error: Option<&Value>) -> String {
    let Some(e) = error.and_then(Value::as_object) else {
        return "error".to_owned();
    };
    let name = str_field(e, "name").unwrap_or("error");
    let message = e
        .get("data")
        .and_then(|d| d.get("message"))
        .and_then(Value::as_str);
    let text = match message {
        Some(m) if !m.trim().is_empty() => format!("{name}: {m}"),
        _ => name.to_owned(),
    };
    one_line_preview(&text, PREVIEW_CHARS)
}

/// What opencode offers to remember with an "always" answer: the request's `always` patterns
/// (`["echo *"]`), as one rule. Answering "always" through atm posts `reply: "always"`.
fn always_rule(p: &Map<String, Value>) -> Vec<PermissionSuggestion> {
    let patterns: Vec<&str> = p
        .get("always")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if patterns.is_empty() {
        return Vec::new();
    }
    vec![PermissionSuggestion {
        label: one_line_preview(
            &format!("always allow {}", patterns.join(", ")),
            PREVIEW_CHARS,
        ),
        rule: atm_core::serde_json::json!({"always": patterns}),
    }]
}

/// An opencode request id as it may be put in a URL path: `per_` and letters or digits.
fn is_request_id(id: &str) -> bool {
    id.len() <= 64 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The command, patterns or title a permission request is about.
fn permission_detail(p: &Map<String, Value>) -> Option<String> {
    let meta = p.get("metadata").and_then(Value::as_object);
    let text = meta
        .and_then(|m| str_field(m, "command"))
        .map(str::to_owned)
        .or_else(|| {
            let patterns: Vec<&str> = p
                .get("patterns")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(Value::as_str)
                .take(8)
                .collect();
            (!patterns.is_empty()).then(|| patterns.join(" "))
        })
        .or_else(|| str_field(p, "title").map(str::to_owned))
        .or_else(|| str_field(p, "pattern").map(str::to_owned))?;
    Some(one_line_preview(&text, PREVIEW_CHARS)).filter(|t| !t.is_empty())
}

/// A running tool's title (opencode's own summary) or its command / path / pattern.
fn tool_detail(state: &Map<String, Value>) -> Option<String> {
    let input = state.get("input").and_then(Value::as_object);
    str_field(state, "title")
        .or_else(|| {
            let input = input?;
            ["command", "filePath", "path", "url", "pattern", "query"]
                .iter()
                .find_map(|k| str_field(input, k))
        })
        .map(|t| one_line_preview(t, PREVIEW_CHARS))
        .filter(|t| !t.is_empty())
}

/// Cost, model, title and directory from a session's info (`session.updated`, `GET /session`).
fn session_usage(info: &Map<String, Value>) -> UsageUpdate {
    UsageUpdate {
        cost_usd: info
            .get("cost")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0),
        model_id: info
            .get("model")
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(|m| one_line_preview(m, limits::NAME)),
        cwd: str_field(info, "directory").map(str::to_owned),
        title: str_field(info, "title").map(|t| one_line_preview(t, PREVIEW_CHARS)),
        ..UsageUpdate::default()
    }
}

/// One session of `GET /session`, as the resynchronisation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSession {
    pub id: SessionId,
    pub parent_id: Option<String>,
    pub cwd: Option<String>,
    /// `time.updated`, milliseconds since the epoch.
    pub updated_ms: u64,
    pub usage: UsageUpdate,
}

/// Reads `GET /session` (an array of session infos), newest last. Entries without an id are
/// left out.
pub fn parse_sessions(body: &[u8]) -> Result<Vec<ListedSession>, EventError> {
    let value = parse(body)?;
    let Some(list) = value.as_array() else {
        return Err(EventError::NotJson(
            "`/session` did not answer a JSON array".to_owned(),
        ));
    };
    let mut out: Vec<ListedSession> = list
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|info| {
            let id = str_field(info, "id").filter(|i| i.chars().count() <= limits::ID)?;
            let usage = session_usage(info);
            Some(ListedSession {
                id: SessionId::new(id),
                parent_id: str_field(info, "parentID").map(|p| one_line_preview(p, limits::ID)),
                cwd: usage
                    .cwd
                    .as_deref()
                    .map(|c| atm_core::text::truncate_chars(c, limits::PATH)),
                updated_ms: info
                    .get("time")
                    .and_then(|t| t.get("updated"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                usage,
            })
        })
        .collect();
    out.sort_by_key(|s| s.updated_ms);
    Ok(out)
}

/// Reads `GET /permission` or `GET /question` (arrays of pending requests, shaped as the
/// properties of `permission.asked` / `question.asked`) as those events.
pub fn parse_pending(body: &[u8], event_type: &str) -> Result<Vec<Translation>, EventError> {
    let value = parse(body)?;
    let Some(list) = value.as_array() else {
        return Err(EventError::NotJson(format!(
            "the pending `{event_type}` list is not a JSON array"
        )));
    };
    Ok(list
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|props| event_for(event_type, props).ok().flatten())
        .collect())
}

/// Model, context and directory from an assistant message. Its `cost` is per message, so it is
/// not reported (the session total would need every message).
fn assistant_usage(info: &Map<String, Value>) -> UsageUpdate {
    let mut u = UsageUpdate {
        model_id: str_field(info, "modelID").map(|m| one_line_preview(m, limits::NAME)),
        cwd: info
            .get("path")
            .and_then(|p| p.get("cwd"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        ..UsageUpdate::default()
    };
    if let Some(tokens) = info.get("tokens").and_then(Value::as_object) {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64);
        let input = n(tokens.get("input"));
        let output = n(tokens.get("output"));
        let cache = tokens.get("cache");
        let read = n(cache.and_then(|c| c.get("read")));
        let write = n(cache.and_then(|c| c.get("write")));
        // A message still streaming reports zeros: that is no measurement.
        let context = [input, read, write]
            .iter()
            .flatten()
            .fold(0u64, |a, b| a.saturating_add(*b));
        if context > 0 {
            u.context_tokens = Some(context);
            u.input_tokens = input;
            u.output_tokens = output;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use atm_core::serde_json::json;

    fn tr(v: Value) -> Option<Translation> {
        translate(&v).unwrap()
    }

    fn ev(v: Value) -> AgentEvent {
        tr(v).unwrap().event
    }

    #[test]
    fn session_lifecycle() {
        let t = tr(json!({"type": "session.created", "properties": {"info": {
            "id": "ses_1", "projectID": "p", "directory": "/home/u/app", "title": "New session", "version": "1.0.3",
            "time": {"created": 1, "updated": 1}}}}))
        .unwrap();
        assert_eq!(t.session_id.as_str(), "ses_1");
        assert_eq!(t.cwd.as_deref(), Some("/home/u/app"));
        assert!(matches!(t.event, AgentEvent::SessionStarted { .. }));
        assert_eq!(
            ev(json!({"type": "session.deleted", "properties": {"info": {"id": "ses_1"}}})),
            AgentEvent::SessionEnded {
                reason: "deleted".into(),
                continues: false
            }
        );
        assert_eq!(
            ev(json!({"type": "session.idle", "properties": {"sessionID": "ses_1"}})),
            AgentEvent::TurnFinished
        );
        let busy = tr(json!({"type": "session.status", "properties": {"sessionID": "s", "status": {"type": "busy"}}})).unwrap();
        assert_eq!(
            busy.event,
            AgentEvent::reminder(AgentEvent::PromptSubmitted { prompt: None })
        );
        assert_eq!(
            ev(
                json!({"type": "session.status", "properties": {"sessionID": "s", "status": {"type": "idle"}}})
            ),
            AgentEvent::TurnFinished
        );
        assert!(matches!(
            ev(
                json!({"type": "session.status", "properties": {"sessionID": "s", "status": {"type": "retry", "attempt": 2, "message": "overloaded"}}})
            ),
            AgentEvent::Notification { .. }
        ));
        assert_eq!(
            ev(
                json!({"type": "session.error", "properties": {"sessionID": "s", "error": {"name": "APIError", "data": {"message": "rate limited", "isRetryable": true}}}})
            ),
            AgentEvent::TurnFailed {
                error: "APIError: rate limited".into()
            }
        );
        assert_eq!(
            ev(json!({"type": "session.compacted", "properties": {"sessionID": "s"}})),
            AgentEvent::CompactFinished
        );
        // What names no session, or only updates its info, applies nothing.
        for ignored in [
            json!({"type": "session.updated", "properties": {"info": {"id": "ses_1"}}}),
            json!({"type": "session.error", "properties": {"error": {"name": "UnknownError"}}}),
        ] {
            assert_eq!(tr(ignored.clone()), None, "{ignored}");
        }
    }

    #[test]
    fn permissions_and_questions() {
        assert_eq!(
            ev(
                json!({"type": "permission.asked", "properties": {"id": "per_1", "sessionID": "s",
                "permission": "bash", "patterns": ["rm -rf build"], "metadata": {"command": "rm -rf build"},
                "always": ["rm *"], "tool": {"messageID": "msg_1", "callID": "call_1"}}})
            ),
            AgentEvent::PermissionRequested {
                tool: "bash".into(),
                detail: Some("rm -rf build".into()),
                suggestions: vec![PermissionSuggestion {
                    label: "always allow rm *".into(),
                    rule: json!({"always": ["rm *"]}),
                }]
            }
        );
        let asked = translate(
            &json!({"type": "permission.asked", "properties": {"id": "per_1",
            "sessionID": "s", "permission": "bash"}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(asked.request_id.as_deref(), Some("per_1"));
        // An id that could leave its URL path is no id.
        let bad = translate(
            &json!({"type": "permission.asked", "properties": {"id": "../session",
            "sessionID": "s", "permission": "bash"}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(bad.request_id, None);
        assert_eq!(
            ev(
                json!({"type": "permission.updated", "properties": {"id": "per_1", "type": "edit",
                "sessionID": "s", "messageID": "m", "title": "Edit src/main.rs", "metadata": {}, "time": {"created": 1}}})
            ),
            AgentEvent::PermissionRequested {
                tool: "edit".into(),
                detail: Some("Edit src/main.rs".into()),
                suggestions: Vec::new()
            }
        );
        assert_eq!(
            ev(
                json!({"type": "permission.replied", "properties": {"sessionID": "s", "requestID": "per_1", "reply": "reject"}})
            ),
            AgentEvent::ToolFinished { tool: None }
        );
        assert_eq!(
            ev(
                json!({"type": "permission.replied", "properties": {"sessionID": "s", "permissionID": "per_1", "response": "once"}})
            ),
            AgentEvent::ToolFinished { tool: None }
        );
        assert_eq!(
            ev(
                json!({"type": "question.asked", "properties": {"id": "que_1", "sessionID": "s",
                "questions": [{"question": "Which database?", "header": "DB", "options": [{"label": "pg"}]}]}})
            ),
            AgentEvent::InputRequested {
                reason: "question".into(),
                tool: Some("question".into()),
                detail: Some("Which database?".into())
            }
        );
        assert_eq!(
            ev(
                json!({"type": "question.rejected", "properties": {"sessionID": "s", "requestID": "que_1"}})
            ),
            AgentEvent::ToolFinished {
                tool: Some("question".into()),
            }
        );
    }

    #[test]
    fn tool_parts_and_messages() {
        let part = |status: &str| {
            json!({"type": "message.part.updated", "properties": {"part": {
                "id": "prt_1", "sessionID": "s", "messageID": "m", "type": "tool", "callID": "c", "tool": "bash",
                "state": {"status": status, "input": {"command": "cargo test"}, "time": {"start": 1}}}}})
        };
        assert_eq!(tr(part("pending")), None);
        let running = tr(part("running")).unwrap();
        assert_eq!(
            running.event,
            AgentEvent::reminder(AgentEvent::ToolStarted {
                tool: "bash".into(),
                detail: Some("cargo test".into())
            })
        );
        assert_eq!(
            ev(part("completed")),
            AgentEvent::ToolFinished {
                tool: Some("bash".into()),
            }
        );
        assert_eq!(
            ev(part("error")),
            AgentEvent::ToolFinished {
                tool: Some("bash".into()),
            }
        );
        assert_eq!(
            tr(
                json!({"type": "message.part.updated", "properties": {"part": {"sessionID": "s", "type": "text", "text": "hi"}, "delta": "hi"}})
            ),
            None
        );
        let msg = tr(json!({"type": "message.updated", "properties": {"info": {
            "id": "msg_1", "sessionID": "s", "role": "assistant", "modelID": "claude-sonnet-4-5", "providerID": "anthropic",
            "path": {"cwd": "/home/u/app", "root": "/home/u/app"}, "cost": 0.01,
            "tokens": {"input": 120, "output": 40, "reasoning": 0, "cache": {"read": 9000, "write": 300}}}}}))
        .unwrap();
        let AgentEvent::UsageUpdated(u) = msg.event else {
            panic!()
        };
        assert_eq!(u.model_id.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(u.context_tokens, Some(9420));
        assert_eq!(msg.cwd.as_deref(), Some("/home/u/app"));
        assert_eq!(
            tr(
                json!({"type": "message.updated", "properties": {"info": {"sessionID": "s", "role": "user"}}})
            ),
            None
        );
    }

    #[test]
    fn global_envelope_and_ignored_events() {
        let t = tr(json!({"directory": "/srv/x", "payload": {"type": "session.idle", "properties": {"sessionID": "s"}}})).unwrap();
        assert_eq!(t.cwd.as_deref(), Some("/srv/x"));
        for ty in [
            "server.connected",
            "server.heartbeat",
            "lsp.updated",
            "file.edited",
            "future.thing",
        ] {
            assert_eq!(tr(json!({"type": ty, "properties": {}})), None, "{ty}");
        }
    }

    #[test]
    fn session_status_bodies() {
        let got = parse_statuses(
            br#"{"ses_a": {"type": "busy"}, "ses_b": {"type": "retry", "attempt": 1, "message": "x", "next": 5}, "ses_c": 7}"#,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].session_id.as_str(), "ses_a");
        assert_eq!(
            got[0].event,
            AgentEvent::reminder(AgentEvent::PromptSubmitted { prompt: None })
        );
        assert!(parse_statuses(b"{}").unwrap().is_empty());
        assert!(parse_statuses(b"[]").is_err());
        assert!(parse_statuses(b"{\"ses_a\":").is_err());
        assert!(parse_statuses(b"\xff").is_err());
    }

    #[test]
    fn malformed_events_are_errors() {
        assert!(matches!(
            parse(b"\xff{}"),
            Err(EventError::NotUtf8 { valid_up_to: 0 })
        ));
        assert!(matches!(parse(b"{\"type\":"), Err(EventError::NotJson(_))));
        assert!(parse(b"{}").is_ok());
        for bad in [json!([]), json!({}), json!({"type": 3}), json!("x")] {
            assert_eq!(translate(&bad), Err(EventError::NoType), "{bad}");
        }
        assert!(matches!(
            translate(&json!({"type": "session.idle", "properties": {}})),
            Err(EventError::NoSession { .. })
        ));
        assert!(matches!(
            translate(
                &json!({"type": "session.idle", "properties": {"sessionID": "x".repeat(limits::ID + 1)}})
            ),
            Err(EventError::SessionIdTooLong { .. })
        ));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const TYPES: &[&str] = &[
            "session.created",
            "session.deleted",
            "session.status",
            "session.idle",
            "session.error",
            "session.compacted",
            "permission.asked",
            "permission.updated",
            "permission.replied",
            "question.asked",
            "question.replied",
            "message.part.updated",
            "message.updated",
        ];

        fn json_value() -> impl Strategy<Value = Value> {
            atm_core::testing::arb_json(&[
                "sessionID",
                "info",
                "part",
                "state",
                "status",
                "type",
                "tool",
                "id",
                "tokens",
                "questions",
                "patterns",
            ])
        }

        proptest! {
            #[test]
            fn never_panics(ty in proptest::sample::select(TYPES), props in json_value()) {
                let _ = translate(&json!({"type": ty, "properties": props}));
            }

            #[test]
            fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(v) = parse(&bytes) {
                    let _ = translate(&v);
                }
            }
        }
    }
}
