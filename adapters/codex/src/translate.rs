//! Codex CLI payloads -> `AgentEvent`, as a pure function. Codex speaks two shapes:
//!
//! - **Hooks** (`~/.codex/hooks.json`): `session_id`, `hook_event_name` (`SessionStart`,
//!   `UserPromptSubmit`, `PreToolUse`, `PermissionRequest`, `PostToolUse`, `Stop`, `PreCompact`,
//!   `PostCompact`), `tool_name`, `tool_input`, `cwd`, `model`, `source`. Codex modelled these on
//!   Claude Code's hook contract, field names and meanings included; this crate maps the events
//!   Codex documents with atm-core's shared field readers, and nothing of Claude's that Codex
//!   does not send.
//! - **The `notify` program** (`notify = [...]` in `~/.codex/config.toml`): one JSON argument,
//!   `{"type":"agent-turn-complete","thread-id","turn-id","cwd","input-messages",
//!   "last-assistant-message"}`, which `atm-hook --agent codex --notify` forwards as the `data`
//!   of a `hook_event`. A completed turn is `TurnFinished` (idle) for session `thread-id`, the
//!   same id the hooks call `session_id`.
//!
//! A payload with `hook_event_name` is a hook; one with a string `type` and no
//! `hook_event_name` is a notify payload. Unknown hook events and notify types are accepted as
//! activity and flagged `known: false`.

use atm_core::event::{AgentEvent, StartSource};
use atm_core::fields::{self, Object};
use atm_core::ingest_adapter::Translation;
use atm_core::model::SessionId;
use atm_core::protocol::{ErrorCode, WireError};
use atm_core::registry::limits;
use atm_core::serde_json::Value;
use atm_core::text::{one_line_preview, truncate_chars};

/// The notify payload type Codex sends when a turn ends.
pub const TURN_COMPLETE: &str = "agent-turn-complete";

pub use atm_core::fields::PREVIEW_CHARS;

/// Every hook event Codex sends (the rest are accepted as unknown activity).
pub const KNOWN_EVENTS: &[&str] = &[
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "Stop",
    "PreCompact",
    "PostCompact",
];

/// `tool_input` keys that say what a tool call is about, in order of preference.
const DETAIL_KEYS: &[&str] = &[
    "command",
    "file_path",
    "url",
    "pattern",
    "query",
    "path",
    "description",
    "prompt",
];

/// Translates one Codex payload (hook JSON or notify JSON, plus the `pid` / `tmux_pane` that
/// `atm-hook` adds).
pub fn translate(data: &Value) -> Result<Translation, WireError> {
    fields::object(data, "Codex's hook or notify JSON").and_then(translate_codex_object)
}

/// [`translate`] for a payload already known to be an object.
pub fn translate_codex_object(obj: &Object) -> Result<Translation, WireError> {
    match (obj.get("hook_event_name"), obj.get("type")) {
        (None, Some(Value::String(kind))) => notify(obj, kind),
        (None, _) => Err(invalid(
            "`data` is neither a Codex hook (no `hook_event_name`) nor a notify payload (no string `type`)",
        )),
        (Some(_), _) => hook(obj),
    }
}

fn hook(obj: &Object) -> Result<Translation, WireError> {
    let session_id = fields::session_id(obj)?;
    let event_name = truncate_chars(fields::required_str(obj, "hook_event_name")?, 64);
    let tool = || {
        fields::opt_str(obj, "tool_name")
            .map_or_else(|| "unknown".to_owned(), |t| truncate_chars(t, limits::NAME))
    };
    let detail = || fields::tool_input_preview(obj.get("tool_input"), DETAIL_KEYS, PREVIEW_CHARS);
    let event = match event_name.as_str() {
        "SessionStart" => AgentEvent::SessionStarted {
            source: StartSource::parse(fields::opt_str(obj, "source").unwrap_or("")),
            model: fields::model_id(obj, "model"),
        },
        "UserPromptSubmit" => AgentEvent::PromptSubmitted {
            prompt: fields::opt_str(obj, "prompt")
                .map(|p| one_line_preview(p, limits::FIRST_PROMPT)),
        },
        "PreToolUse" => AgentEvent::ToolStarted {
            tool: tool(),
            detail: detail(),
        },
        "PermissionRequest" => AgentEvent::PermissionRequested {
            tool: tool(),
            detail: detail(),
        },
        "PostToolUse" => AgentEvent::ToolFinished {
            tool: fields::opt_str(obj, "tool_name").map(str::to_owned),
        },
        "Stop" => AgentEvent::TurnFinished,
        "PreCompact" => AgentEvent::Compacting,
        "PostCompact" => AgentEvent::CompactFinished,
        other => AgentEvent::Activity {
            what: other.to_owned(),
        },
    };
    Ok(Translation::new(event_name, session_id, event)
        .with_hook_fields(obj)
        .known_among(KNOWN_EVENTS))
}

fn notify(obj: &Object, kind: &str) -> Result<Translation, WireError> {
    let thread = fields::opt_str(obj, "thread-id")
        .or_else(|| fields::opt_str(obj, "thread_id"))
        .ok_or_else(|| {
            invalid("missing string field `data.thread-id` in a Codex notify payload")
        })?;
    if thread.chars().count() > limits::ID {
        return Err(invalid(format!(
            "field `data.thread-id` is longer than {} characters",
            limits::ID
        )));
    }
    let event_name = truncate_chars(kind, 64);
    let known = kind == TURN_COMPLETE;
    let event = if known {
        AgentEvent::TurnFinished
    } else {
        AgentEvent::Activity {
            what: event_name.clone(),
        }
    };
    let mut t = Translation::new(event_name, SessionId::new(thread), event).with_hook_fields(obj);
    t.known = known;
    Ok(t)
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidMessage, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::serde_json::json;

    #[test]
    fn notify_turn_complete_is_turn_finished_for_the_thread() {
        let t = translate(&json!({
            "type": "agent-turn-complete",
            "thread-id": "0199a213-81c0-7800-8aa1-bbab2a035a53",
            "turn-id": "12",
            "cwd": "/home/dev/src/api",
            "input-messages": ["Rename foo to bar"],
            "last-assistant-message": "Done.",
            "pid": 4242,
            "tmux_pane": "%2"
        }))
        .unwrap();
        assert_eq!(t.event, Some(AgentEvent::TurnFinished));
        assert_eq!(
            t.session_id.as_str(),
            "0199a213-81c0-7800-8aa1-bbab2a035a53"
        );
        assert_eq!((t.pid, t.tmux_pane.as_deref()), (Some(4242), Some("%2")));
        assert_eq!(t.cwd.as_deref(), Some("/home/dev/src/api"));
        assert!(t.known);
    }

    #[test]
    fn unknown_notify_types_are_activity() {
        let t = translate(&json!({"type": "approval-requested", "thread-id": "t"})).unwrap();
        assert_eq!(
            t.event,
            Some(AgentEvent::Activity {
                what: "approval-requested".into()
            })
        );
        assert!(!t.known);
    }

    #[test]
    fn hooks_map_codex_events_with_harness_codex() {
        let t = translate(&json!({
            "session_id": "s", "turn_id": "1", "hook_event_name": "PermissionRequest",
            "model": "gpt-5-codex", "permission_mode": "default", "cwd": "/w",
            "tool_name": "Bash", "tool_input": {"command": "rm -f /tmp/x"}
        }))
        .unwrap();
        assert_eq!(
            t.event,
            Some(AgentEvent::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("rm -f /tmp/x".into())
            })
        );
        assert_eq!(t.session_id.as_str(), "s");
        assert_eq!(t.cwd.as_deref(), Some("/w"));
        use atm_core::ingest_adapter::Translator;
        assert_eq!(<crate::CodexHooks as Translator>::HARNESS, "codex");
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        let cases = [
            json!("agent-turn-complete"),
            json!([]),
            json!({}),
            json!({"type": 5, "thread-id": "t"}),
            json!({"type": "agent-turn-complete"}),
            json!({"type": "agent-turn-complete", "thread-id": ""}),
            json!({"type": "agent-turn-complete", "thread-id": 12}),
            json!({"type": "agent-turn-complete", "thread-id": "x".repeat(limits::ID + 1)}),
            json!({"hook_event_name": "Stop"}),
            json!({"hook_event_name": 3, "session_id": "s"}),
        ];
        for c in cases {
            let e = translate(&c).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{c}");
            assert!(!e.message.is_empty());
        }
    }
}
