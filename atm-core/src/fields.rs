//! Lenient field access for agents' JSON, shared by every translator.
//!
//! Agents' hook payloads gain and lose fields between versions, so only the fields a translator
//! cannot work without (`data`, `session_id`, the event name) are checked strictly; every other
//! field is read when it has the expected type and ignored otherwise. Failures are
//! [`WireError`]s with stable codes, because they go back to the client as `error` lines. The
//! `pid` and `tmux_pane` readers read what `atm-hook` adds to every payload it forwards.

use serde_json::{Map, Value};

use crate::model::SessionId;
use crate::protocol::{ErrorCode, WireError};
use crate::registry::limits;

/// A JSON object, as serde_json represents one.
pub type Object = Map<String, Value>;

/// Characters an attention detail keeps of what it previews (a command, file, URL, pattern,
/// question): one line of a notification or a status bar, for every agent alike.
pub const PREVIEW_CHARS: usize = 120;

/// `data` (an agent's payload) as the object it must be; `what` names what it should hold, for
/// the error (`"Claude's hook JSON"`).
pub fn object<'a>(data: &'a Value, what: &str) -> Result<&'a Object, WireError> {
    data.as_object().ok_or_else(|| {
        WireError::new(
            ErrorCode::InvalidMessage,
            format!("field `data` must be a JSON object holding {what}"),
        )
    })
}

/// The `data` of an ingest message, of any JSON type, for a translator that checks its shape
/// itself; `what` names what it should hold, for the error when it is missing.
pub fn data<'a>(body: &'a Object, what: &str) -> Result<&'a Value, WireError> {
    body.get("data").ok_or_else(|| {
        WireError::new(
            ErrorCode::InvalidMessage,
            format!("missing field `data` ({what})"),
        )
    })
}

/// The `data` object of an ingest message (`hook_event`, `status_update`, ...). `what` names
/// what it should hold, for the error (`"Claude's hook JSON"`).
pub fn data_object<'a>(body: &'a Object, what: &str) -> Result<&'a Object, WireError> {
    data(body, what).and_then(|data| object(data, what))
}

/// A string field the adapter cannot work without: present, a string, not empty.
pub fn required_str<'a>(obj: &'a Object, key: &str) -> Result<&'a str, WireError> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(WireError::new(
            ErrorCode::InvalidMessage,
            format!("field `data.{key}` is empty"),
        )),
        Some(other) => Err(WireError::new(
            ErrorCode::InvalidMessage,
            format!(
                "field `data.{key}` must be a string, not {}",
                json_type(other)
            ),
        )),
        None => Err(WireError::new(
            ErrorCode::InvalidMessage,
            format!("missing field `data.{key}`"),
        )),
    }
}

/// Claude's `session_id`. Longer ids than the registry keeps are refused rather than cut, so
/// two different ids can never be merged into one session by truncation.
pub fn session_id(obj: &Object) -> Result<SessionId, WireError> {
    let id = required_str(obj, "session_id")?;
    if id.chars().count() > limits::ID {
        return Err(WireError::new(
            ErrorCode::InvalidMessage,
            format!(
                "field `data.session_id` is longer than {} characters",
                limits::ID
            ),
        ));
    }
    Ok(SessionId::new(id))
}

/// An optional non-empty string field; other types count as absent.
pub fn opt_str<'a>(obj: &'a Object, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// An optional object field; other types (including `null`) count as absent.
pub fn opt_object<'a>(obj: &'a Object, key: &str) -> Option<&'a Object> {
    obj.get(key).and_then(Value::as_object)
}

/// An optional non-negative integer. Floats with a finite non-negative value are accepted
/// (rounded), because some writers emit `12.0` for counts; anything else counts as absent.
pub fn opt_u64(obj: &Object, key: &str) -> Option<u64> {
    let v = obj.get(key)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            // Saturating float-to-int cast: an absurd value becomes u64::MAX, never UB.
            .map(|f| f.round() as u64)
    })
}

/// An optional finite number; anything else counts as absent.
pub fn opt_f64(obj: &Object, key: &str) -> Option<f64> {
    obj.get(key)
        .and_then(Value::as_f64)
        .filter(|f| f.is_finite())
}

/// The agent's PID as `atm-hook` adds it: a positive integer, or a string of digits (shell
/// scripts); `null`, absent or anything else means unknown.
pub fn pid(obj: &Object) -> Option<u32> {
    let pid = match obj.get("pid")? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    };
    pid.filter(|p| *p > 0)
}

/// `$TMUX_PANE` as `atm-hook` adds it (`%5`); empty or `null` means not in tmux.
pub fn tmux_pane(obj: &Object) -> Option<String> {
    opt_str(obj, "tmux_pane").map(|p| p.trim().to_owned())
}

/// A model named either as a string or as an object with an `id` (agents have sent both).
pub fn model_id(obj: &Object, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(m) => opt_str(m, "id").map(str::to_owned),
        _ => None,
    }
}

/// The `tool_input` keys that say what a tool call is about, in order of preference, as Claude
/// Code names them; Codex took Claude's tool names and argument keys, so both read these.
/// Agents with their own argument names (Gemini, pi, opencode) keep their own lists.
pub const CLAUDE_STYLE_INPUT_KEYS: &[&str] = &[
    "command",
    "file_path",
    "notebook_path",
    "url",
    "pattern",
    "query",
    "path",
    "description",
    "prompt",
];

/// [`tool_input_preview`] with the [`CLAUDE_STYLE_INPUT_KEYS`] and [`PREVIEW_CHARS`].
pub fn claude_style_tool_detail(input: Option<&Value>) -> Option<String> {
    tool_input_preview(input, CLAUDE_STYLE_INPUT_KEYS, PREVIEW_CHARS)
}

/// A one-line preview (at most `chars` characters) of what a tool call is about: its input when
/// that is a string, else the first of `keys` that the input object has as a non-blank string.
pub fn tool_input_preview(input: Option<&Value>, keys: &[&str], chars: usize) -> Option<String> {
    let text = match input? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => keys.iter().find_map(|k| opt_str(o, k))?,
        _ => return None,
    };
    Some(crate::text::one_line_preview(text, chars)).filter(|p| !p.is_empty())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn required_fields_explain_what_is_wrong() {
        let o = obj(json!({"session_id": 5, "e": "", "ok": "x"}));
        let e = required_str(&o, "session_id").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert!(e.message.contains("must be a string, not a number"), "{e}");
        assert!(required_str(&o, "e").unwrap_err().message.contains("empty"));
        assert!(
            required_str(&o, "missing")
                .unwrap_err()
                .message
                .contains("missing")
        );
        assert_eq!(required_str(&o, "ok").unwrap(), "x");
        let long = obj(json!({"session_id": "x".repeat(limits::ID + 1)}));
        assert_eq!(
            session_id(&long).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn data_must_be_an_object() {
        for body in [json!({}), json!({"data": "x"}), json!({"data": null})] {
            assert_eq!(
                data_object(&obj(body), "x").unwrap_err().code,
                ErrorCode::InvalidMessage
            );
        }
        assert!(data_object(&obj(json!({"data": {}})), "x").is_ok());
    }

    #[test]
    fn models_and_tool_previews_are_lenient() {
        let o = obj(json!({"m": "gpt-5", "o": {"id": "opus"}, "n": 5, "e": ""}));
        assert_eq!(model_id(&o, "m").as_deref(), Some("gpt-5"));
        assert_eq!(model_id(&o, "o").as_deref(), Some("opus"));
        assert_eq!(model_id(&o, "n"), None);
        assert_eq!(model_id(&o, "e"), None);
        let keys = ["command", "path"];
        let p = |v: Value| tool_input_preview(Some(&v), &keys, 5);
        assert_eq!(
            p(json!({"path": "/a", "command": "ls -la /tmp"})).as_deref(),
            Some("ls -…")
        );
        assert_eq!(
            p(json!({"command": " ", "path": "/a"})).as_deref(),
            Some("/a")
        );
        assert_eq!(p(json!("echo\nhi")).as_deref(), Some("echo…"));
        assert_eq!(p(json!({"other": "x"})), None);
        assert_eq!(p(json!(7)), None);
        assert_eq!(p(json!("  ")), None);
        assert_eq!(tool_input_preview(None, &keys, 5), None);
        let input = json!({"prompt": "p", "path": "/a", "notebook_path": "/n.ipynb"});
        assert_eq!(
            claude_style_tool_detail(Some(&input)).as_deref(),
            Some("/n.ipynb")
        );
    }

    #[test]
    fn optional_fields_are_lenient() {
        let o = obj(json!({
            "pid": 1234, "spid": " 77 ", "neg": -1, "zero": 0, "big": 1u64 << 40,
            "f": 12.0, "nan_like": "12", "pane": "%5", "blank": "  ", "null": null,
        }));
        assert_eq!(pid(&o), Some(1234));
        let p = |k: &str| pid(&obj(json!({ "pid": o[k].clone() })));
        assert_eq!(p("spid"), Some(77));
        assert_eq!(p("neg"), None);
        assert_eq!(p("zero"), None);
        assert_eq!(p("big"), None);
        assert_eq!(p("null"), None);
        assert_eq!(opt_u64(&o, "f"), Some(12));
        assert_eq!(opt_u64(&o, "nan_like"), None);
        assert_eq!(opt_u64(&o, "neg"), None);
        assert_eq!(opt_str(&o, "blank"), None);
        assert_eq!(
            tmux_pane(&obj(json!({"tmux_pane": "%5"}))),
            Some("%5".into())
        );
        assert_eq!(tmux_pane(&obj(json!({"tmux_pane": null}))), None);
    }
}
