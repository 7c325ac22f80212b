//! Codex CLI payloads -> `AgentEvent`, as a pure function. Codex speaks two shapes:
//!
//! - **Hooks** (`~/.codex/hooks.json`): `session_id` (the thread id), `turn_id`,
//!   `hook_event_name` (Codex 0.171: `SessionStart`, `SessionEnd`, `UserPromptSubmit`,
//!   `PreToolUse`, `PermissionRequest`, `PostToolUse`, `PreCompact`, `PostCompact`,
//!   `SubagentStart`, `SubagentStop`, `Stop`, `Interrupt`, `PreModelRequest`,
//!   `PostModelRequest`), `tool_name`, `tool_input`, `cwd`, `model`, `source`, `agent_id`.
//!   `Interrupt` is the only hook Codex runs when the user presses Esc, at an approval or
//!   while it works: the turn is over, so it is `TurnFinished` like `Stop`. Codex modelled these on
//!   Claude Code's hook contract, field names and meanings included; this crate maps the events
//!   Codex documents with atm-core's shared field readers, and nothing of Claude's that Codex
//!   does not send.
//! - **The `notify` program** (`notify = [...]` in `~/.codex/config.toml`): one JSON argument,
//!   `{"type":"agent-turn-complete","thread-id","turn-id","cwd","input-messages",
//!   "last-assistant-message"}`, which `atm-hook --agent codex --notify` forwards as the `data`
//!   of a `hook_event`. A completed turn is `TurnFinished` (idle) for session `thread-id`, the
//!   same id the hooks call `session_id`. On a thread's first prompt Codex also runs a
//!   title-generation request as a thread of its own, whose notify names a `thread-id` no hook
//!   carries and whose one input message is Codex's title instruction ([`TITLE_PROMPT`]): that
//!   payload is about no session of the user's and is ignored (`event: None`).
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

/// How Codex 0.171's title-generation request begins (its only input message).
pub const TITLE_PROMPT: &str = "Generate a concise, single-line task title";

/// The hook events that say something about a session's state, in the order `atmctl setup
/// codex` installs them: all of Codex 0.171's but the [`ACTIVITY_EVENTS`]. The one list both
/// read, so a hook the translator maps is always one that setup installs.
pub const KNOWN_EVENTS: &[&str] = &[
    "SessionStart",
    "SessionEnd",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PreCompact",
    "PostCompact",
    "SubagentStart",
    "SubagentStop",
    "Stop",
    "Interrupt",
];

/// Hook events Codex sends around every model request: activity only, and not installed by
/// `atmctl setup` (the turn's own hooks already say `working`). Any other name is accepted as
/// unknown activity.
pub const ACTIVITY_EVENTS: &[&str] = &["PreModelRequest", "PostModelRequest"];

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
    let detail = || fields::claude_style_tool_detail(obj.get("tool_input"));
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
            suggestions: Vec::new(),
        },
        "PostToolUse" => AgentEvent::ToolFinished {
            tool: fields::opt_str(obj, "tool_name").map(str::to_owned),
        },
        // Esc ends the turn, at an approval too (no `PostToolUse` or `Stop` follows).
        "Stop" | "Interrupt" => AgentEvent::TurnFinished,
        "SessionEnd" => {
            let reason = fields::opt_str(obj, "reason").unwrap_or("other");
            AgentEvent::SessionEnded {
                continues: matches!(reason, "clear" | "resume"),
                reason: truncate_chars(reason, limits::NAME),
            }
        }
        "SubagentStart" | "SubagentStop" => match fields::opt_str(obj, "agent_id") {
            Some(id) if event_name == "SubagentStart" => AgentEvent::SubagentStarted {
                agent_id: truncate_chars(id, limits::ID),
            },
            Some(id) => AgentEvent::SubagentStopped {
                agent_id: truncate_chars(id, limits::ID),
            },
            None => AgentEvent::Activity {
                what: event_name.clone(),
            },
        },
        "PreCompact" => AgentEvent::Compacting,
        "PostCompact" => AgentEvent::CompactFinished,
        other => AgentEvent::Activity {
            what: other.to_owned(),
        },
    };
    Ok(Translation::new(event_name, session_id, event)
        .with_hook_fields(obj)
        .with_turn_id(fields::opt_str(obj, "turn_id"))
        .known_among(&[KNOWN_EVENTS, ACTIVITY_EVENTS]))
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
    if known && is_title_thread(obj) {
        let mut t = Translation::new(event_name, SessionId::new(thread), AgentEvent::TurnFinished)
            .with_hook_fields(obj);
        t.event = None;
        return Ok(t);
    }
    let event = if known {
        AgentEvent::TurnFinished
    } else {
        AgentEvent::Activity {
            what: event_name.clone(),
        }
    };
    let mut t = Translation::new(event_name, SessionId::new(thread), event)
        .with_hook_fields(obj)
        .with_turn_id(fields::opt_str(obj, "turn-id").or_else(|| fields::opt_str(obj, "turn_id")));
    t.known = known;
    Ok(t)
}

/// True for the notify of Codex's title-generation thread: its one input message is Codex's
/// title instruction. (`atm-hook` forwards the start of the first input message only.)
fn is_title_thread(obj: &Object) -> bool {
    obj.get("input-messages")
        .and_then(Value::as_array)
        .and_then(|m| m.first())
        .and_then(Value::as_str)
        .is_some_and(|m| m.starts_with(TITLE_PROMPT))
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
                detail: Some("rm -f /tmp/x".into()),
                suggestions: Vec::new()
            })
        );
        assert_eq!(t.session_id.as_str(), "s");
        assert_eq!(t.cwd.as_deref(), Some("/w"));
        assert_eq!(t.turn_id.as_deref(), Some("1"));
        let notify = translate(&json!({"type": "agent-turn-complete", "thread-id": "s",
            "turn-id": "01a234e8-3a78", "cwd": "/w"}))
        .unwrap();
        assert_eq!(notify.turn_id.as_deref(), Some("01a234e8-3a78"));
        use atm_core::ingest_adapter::Translator;
        assert_eq!(<crate::CodexHooks as Translator>::HARNESS, "codex");
    }

    #[test]
    fn the_title_generation_threads_notify_is_ignored() {
        let title = json!({"type": "agent-turn-complete", "thread-id": "title-thread",
            "turn-id": "t1", "cwd": "/w", "client": "codex-tui",
            "input-messages": [format!("{TITLE_PROMPT} of at most 36 characters...\n\nUser prompt:\nhello")],
            "pid": 7, "tmux_pane": "%1"});
        let t = translate(&title).unwrap();
        assert_eq!(t.event, None, "no session of the user's: nothing to apply");
        assert!(t.known);
        // The user's own turn is a turn end.
        let mut user = title.clone();
        user["input-messages"] = json!(["hello"]);
        assert_eq!(
            translate(&user).unwrap().event,
            Some(AgentEvent::TurnFinished)
        );
        user["input-messages"] = json!([3]);
        assert_eq!(
            translate(&user).unwrap().event,
            Some(AgentEvent::TurnFinished)
        );
    }

    #[test]
    fn interrupt_session_end_and_subagents_of_codex_0_171() {
        let ev = |name: &str, extra: Value| {
            let mut p =
                json!({"session_id": "s", "turn_id": "t", "hook_event_name": name, "cwd": "/w"});
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            translate(&p).unwrap()
        };
        let t = ev("Interrupt", json!({}));
        assert_eq!(t.event, Some(AgentEvent::TurnFinished));
        assert!(t.known);
        assert_eq!(
            ev("SessionEnd", json!({"reason": "other"})).event,
            Some(AgentEvent::SessionEnded {
                reason: "other".into(),
                continues: false
            })
        );
        assert_eq!(
            ev("SessionEnd", json!({"reason": "clear"})).event,
            Some(AgentEvent::SessionEnded {
                reason: "clear".into(),
                continues: true
            })
        );
        assert_eq!(
            ev(
                "SubagentStart",
                json!({"agent_id": "a1", "agent_type": "worker"})
            )
            .event,
            Some(AgentEvent::SubagentStarted {
                agent_id: "a1".into()
            })
        );
        assert_eq!(
            ev("SubagentStop", json!({"agent_id": "a1"})).event,
            Some(AgentEvent::SubagentStopped {
                agent_id: "a1".into()
            })
        );
        assert_eq!(
            ev("SubagentStop", json!({})).event,
            Some(AgentEvent::Activity {
                what: "SubagentStop".into()
            })
        );
        let t = ev("PreModelRequest", json!({"kind": "sampling"}));
        assert_eq!(
            t.event,
            Some(AgentEvent::Activity {
                what: "PreModelRequest".into()
            })
        );
        assert!(t.known);
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
