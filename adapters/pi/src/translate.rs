//! pi extension envelope -> `AgentEvent`, as a pure function.
//!
//! atm's pi extension (`extension/atm.ts`, installed by `atmctl setup pi`) sends, per pi event
//! atm uses, the protocol-v1 message
//! `{"type":"pi_event","data":{"event","payload","session_id","pid","tmux_pane","cwd"}}` where
//! `event` is pi's own snake_case event name (or one of the extension's own `atm_*` events) and
//! `payload` the part of pi's event object atm reads. [`translate`] reads that `data` envelope.
//! It does no I/O and holds no state, so it is unit-tested event by event and fuzzed. The older
//! `pi-atm` extension of the published `atm` 0.2.x crates sent pi's whole event objects
//! (`input`, `tool_call`, `context`, ...); those are still understood.
//!
//! Parsing is lenient like the original daemon's: only the envelope's shape and an attributable
//! session (a `session_id`, else a `pid`) are required; identifier-like fields may be strings,
//! numbers or objects with an `id` (pi has sent all three); unknown events become activity.

use atm_core::event::{AgentEvent, StartSource};
use atm_core::ingest_adapter::Translation;
use atm_core::model::{SessionId, UsageUpdate};
use atm_core::protocol::{ErrorCode, WireError};
use atm_core::registry::limits;
use atm_core::serde_json::{Map, Value};
use atm_core::text::one_line_preview;

pub use atm_core::fields::PREVIEW_CHARS;

/// Every event name the translator knows (the rest are accepted as unknown activity).
pub const KNOWN_EVENTS: &[&str] = &[
    "session_start",
    "session_shutdown",
    "agent_start",
    "agent_end",
    "input",
    "tool_call",
    "tool_execution_start",
    "tool_execution_end",
    "tool_result",
    "session_before_compact",
    "session_compact",
    "model_select",
    "context",
    "atm_needs_input_open",
    "atm_needs_input_resolved",
    "atm_idle",
    "atm_usage",
    "before_agent_start",
    // Declared by pi, forwarded by nobody today: activity only.
    "session_before_switch",
    "session_switch",
    "session_before_fork",
    "session_fork",
    "session_before_tree",
    "session_tree",
    "resources_discover",
    "before_provider_request",
    "after_provider_response",
    "turn_start",
    "turn_end",
    "message_start",
    "message_update",
    "message_end",
    "tool_execution_update",
    "user_bash",
];

/// `session_start` / `session_shutdown` reasons that mean "another conversation follows in the
/// same pi process" (`/new`, `/resume`, `/fork`, extension reload), not "pi exited".
const CONTINUING_REASONS: &[&str] = &["new", "resume", "fork", "reload", "switch"];

/// Translates the `data` envelope of one `pi_event` message.
pub fn translate(data: &Value) -> Result<Translation, WireError> {
    translate_from(data, None)
}

/// [`translate`], with the PID of the connection's peer as the fallback for an envelope that
/// names no `pid` (the extension runs inside pi, so the peer is the pi process).
pub fn translate_from(data: &Value, peer_pid: Option<u32>) -> Result<Translation, WireError> {
    let Value::Object(env) = data else {
        return Err(invalid(
            "field `data` must be a JSON object: the pi extension's {event, payload, session_id, pid} envelope",
        ));
    };
    let event_name = match env.get("event") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            atm_core::text::truncate_chars(s.trim(), limits::NAME)
        }
        Some(_) => return Err(invalid("field `data.event` must be a non-empty string")),
        None => return Err(invalid("missing field `data.event` (pi's event name)")),
    };
    let empty = Map::new();
    let payload = match env.get("payload") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => &empty,
        Some(_) => return Err(invalid("field `data.payload` must be a JSON object")),
    };
    let pid = pid(env.get("pid")).or(peer_pid);
    let session_id = match env.get("session_id").and_then(stringish) {
        Some(id) if id.chars().count() > limits::ID => {
            return Err(invalid(format!(
                "field `data.session_id` is longer than {} characters",
                limits::ID
            )));
        }
        Some(id) => SessionId::new(id),
        None => match pid {
            Some(p) => SessionId::pending(p),
            None => {
                return Err(invalid(
                    "the event has neither `data.session_id` nor `data.pid`: it cannot be attributed to a session",
                ));
            }
        },
    };
    let tmux_pane = env
        .get("tmux_pane")
        .and_then(stringish)
        .map(|p| atm_core::text::truncate_chars(p.trim(), limits::NAME));
    let known = KNOWN_EVENTS.contains(&event_name.as_str());
    let event = if known {
        event_for(&event_name, payload)
    } else {
        Some(AgentEvent::Activity {
            what: event_name.clone(),
        })
    };
    let cwd = match env.get("cwd") {
        Some(Value::String(c)) if c.starts_with('/') && c.chars().count() <= limits::PATH => {
            Some(c.clone())
        }
        _ => None,
    };
    Ok(Translation {
        event_name,
        session_id,
        pid,
        tmux_pane,
        cwd,
        subagent_id: None,
        turn_id: None,
        event,
        known,
        want_reply: false,
    })
}

fn event_for(name: &str, p: &Map<String, Value>) -> Option<AgentEvent> {
    let reason = p.get("reason").and_then(stringish);
    Some(match name {
        "session_start" => match reason.as_deref() {
            // An extension reload keeps the conversation: nothing starts.
            Some("reload") => AgentEvent::Activity {
                what: "session_start:reload".to_owned(),
            },
            Some("new") => started(StartSource::Clear, p),
            Some(r) => started(StartSource::parse(r), p),
            None => started(StartSource::Startup, p),
        },
        "session_shutdown" => {
            let reason = reason.unwrap_or_else(|| "shutdown".to_owned());
            AgentEvent::SessionEnded {
                continues: CONTINUING_REASONS.contains(&reason.as_str()),
                reason: one_line_preview(&reason, limits::NAME),
            }
        }
        "agent_start" => AgentEvent::PromptSubmitted { prompt: None },
        // pi is about to run the agent on this prompt (an `input` an extension handled never
        // gets here, so it cannot leave the session working).
        "before_agent_start" => AgentEvent::PromptSubmitted {
            prompt: p
                .get("prompt")
                .and_then(Value::as_str)
                .map(|t| one_line_preview(t, limits::FIRST_PROMPT))
                .filter(|t| !t.is_empty()),
        },
        "agent_end" => match p.get("stopReason").and_then(Value::as_str) {
            Some("error") => AgentEvent::TurnFailed {
                error: p
                    .get("errorMessage")
                    .and_then(Value::as_str)
                    .map(|e| one_line_preview(e, PREVIEW_CHARS))
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "error".to_owned()),
            },
            _ => AgentEvent::TurnFinished,
        },
        // The extension saw pi waiting at its prompt (after start, after a /compact).
        "atm_idle" => AgentEvent::TurnFinished,
        "atm_usage" => {
            let update = session_usage(p);
            if update.is_empty() {
                return None;
            }
            AgentEvent::UsageUpdated(Box::new(update))
        }
        "input" => match p.get("source").and_then(stringish).as_deref() {
            // Prompts typed by the user or sent over pi's RPC mode; an extension's own
            // injected input is not a user prompt.
            Some("interactive" | "rpc") | None => AgentEvent::PromptSubmitted {
                prompt: p
                    .get("text")
                    .and_then(Value::as_str)
                    .map(|t| one_line_preview(t, limits::FIRST_PROMPT))
                    .filter(|t| !t.is_empty()),
            },
            Some(_) => AgentEvent::Activity {
                what: "input".to_owned(),
            },
        },
        "tool_call" => {
            let tool = tool_name(p)?;
            let detail = p.get("input").and_then(input_preview);
            if p.get("needs_user_input").and_then(Value::as_bool) == Some(true) {
                AgentEvent::PermissionRequested {
                    tool,
                    detail,
                    suggestions: Vec::new(),
                }
            } else {
                AgentEvent::ToolStarted { tool, detail }
            }
        }
        // pi fires `tool_execution_start` first, then the (blocking) `tool_call` handlers, where
        // a permission gate asks; atm's extension forwards the start, the old one `tool_call`.
        "tool_execution_start" => AgentEvent::ToolStarted {
            tool: tool_name(p)?,
            detail: p.get("args").and_then(input_preview),
        },
        // Paired with `tool_execution_end`, which is the one used.
        "tool_result" => return None,
        "tool_execution_end" => AgentEvent::ToolFinished { tool: tool_name(p) },
        "session_before_compact" => AgentEvent::Compacting,
        "session_compact" => AgentEvent::CompactFinished,
        "model_select" => {
            let update = model_update(p.get("model"));
            if update.is_empty() {
                return None;
            }
            AgentEvent::UsageUpdated(Box::new(update))
        }
        "context" => {
            let update = context_usage(p.get("messages"));
            if update.is_empty() {
                return None;
            }
            AgentEvent::UsageUpdated(Box::new(update))
        }
        // The extension wraps pi's dialogs (`ctx.ui.confirm`, `select`, `input`, `editor`); pi
        // has no permission event of its own. A dialog opened while a tool call is in flight
        // is a permission gate for it (pi's permission-gate examples ask from `tool_call`);
        // any other dialog asks the user something.
        "atm_needs_input_open" => {
            let title = p
                .get("title")
                .and_then(Value::as_str)
                .map(|t| one_line_preview(t, PREVIEW_CHARS))
                .filter(|t| !t.is_empty());
            match tool_name(p) {
                Some(tool) => AgentEvent::PermissionRequested {
                    tool,
                    detail: p.get("input").and_then(input_preview).or(title),
                    suggestions: Vec::new(),
                },
                // The old extension sent only a title: its dialogs were permission gates.
                None if p.get("dialog").is_none() => AgentEvent::PermissionRequested {
                    tool: "dialog".to_owned(),
                    detail: title,
                    suggestions: Vec::new(),
                },
                None => AgentEvent::InputRequested {
                    reason: p
                        .get("dialog")
                        .and_then(stringish)
                        .map(|d| one_line_preview(&d, limits::NAME))
                        .unwrap_or_else(|| "dialog".to_owned()),
                    tool: None,
                    detail: title,
                },
            }
        }
        // Answered: back to work, or to the prompt when pi was idle (a command's dialog).
        "atm_needs_input_resolved" => {
            if p.get("idle").and_then(Value::as_bool) == Some(true) {
                AgentEvent::TurnFinished
            } else {
                AgentEvent::ToolFinished { tool: None }
            }
        }
        other => AgentEvent::Activity {
            what: other.to_owned(),
        },
    })
}

/// A start, with the model the extension read from `ctx.model` (`payload.model.id`).
fn started(source: StartSource, p: &Map<String, Value>) -> AgentEvent {
    AgentEvent::SessionStarted {
        source,
        model: p
            .get("model")
            .and_then(|m| m.get("id"))
            .and_then(stringish)
            .map(|m| one_line_preview(&m, limits::NAME))
            .filter(|m| !m.is_empty()),
    }
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidMessage, message)
}

/// An identifier-like value: a non-empty string, a number, or an object carrying one under a
/// usual key (pi has sent `{"id": ...}` objects where a string was expected).
fn stringish(v: &Value) -> Option<String> {
    stringish_depth(v, 0)
}

fn stringish_depth(v: &Value, depth: u8) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        // One level of nesting is what pi sends; deeper is refused so a hostile payload cannot
        // make the lookup recurse.
        Value::Object(m) if depth == 0 => ["id", "session_id", "sessionId", "name", "value"]
            .iter()
            .find_map(|k| m.get(*k).and_then(|v| stringish_depth(v, depth + 1))),
        _ => None,
    }
}

fn pid(v: Option<&Value>) -> Option<u32> {
    let pid = match v? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    };
    pid.filter(|p| *p > 0)
}

fn tool_name(p: &Map<String, Value>) -> Option<String> {
    p.get("toolName")
        .and_then(stringish)
        .map(|t| one_line_preview(&t, limits::NAME))
        .filter(|t| !t.is_empty())
}

/// A one-line preview of a tool's input: the command, path, URL, pattern or query when there
/// is one, else nothing (a JSON dump would be noise).
fn input_preview(input: &Value) -> Option<String> {
    let obj = input.as_object()?;
    ["command", "path", "file_path", "url", "pattern", "query"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .map(|s| one_line_preview(s, PREVIEW_CHARS))
        .filter(|s| !s.is_empty())
}

/// The model pi switched to. The provider (`anthropic`, `openai-codex`) has no field of its own
/// in the session model, so it is left out rather than folded into the id.
fn model_update(model: Option<&Value>) -> UsageUpdate {
    let mut u = UsageUpdate::default();
    let Some(model) = model else {
        return u;
    };
    u.model_id = stringish(model).map(|m| one_line_preview(&m, limits::NAME));
    u.model_name = model
        .get("name")
        .and_then(Value::as_str)
        .map(|m| one_line_preview(m, limits::NAME))
        .filter(|m| !m.is_empty());
    u
}

/// Usage from the extension's `atm_usage`: the session's totals as pi's footer counts them
/// (`session`: cost and tokens over every assistant message of the session), the context in
/// use (`context`) and the model.
fn session_usage(p: &Map<String, Value>) -> UsageUpdate {
    let mut u = model_update(p.get("model"));
    let num = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0)
    };
    let count = |v: Option<&Value>| v.and_then(Value::as_u64);
    if let Some(s) = p.get("session") {
        u.cost_usd = num(s.get("cost"));
        u.input_tokens = count(s.get("input"));
        u.output_tokens = count(s.get("output"));
    }
    if let Some(c) = p.get("context") {
        u.context_tokens = count(c.get("tokens"));
        u.context_window_size = count(c.get("contextWindow"));
        u.context_used_percentage = num(c.get("percent")).map(|x| x.min(100.0));
    }
    u
}

/// Usage from a `context` event's `messages` (sent by the old extension only: it comes before
/// each request, so its cost lags one request): cost is the sum over assistant messages (pi's
/// `usage.cost.total` is per request), the context size is the last request's total tokens.
fn context_usage(messages: Option<&Value>) -> UsageUpdate {
    let mut u = UsageUpdate::default();
    let Some(messages) = messages.and_then(Value::as_array) else {
        return u;
    };
    let mut cost = 0.0_f64;
    let mut any_cost = false;
    for usage in messages.iter().filter_map(|m| m.get("usage")) {
        if let Some(c) = usage
            .get("cost")
            .and_then(|c| c.get("total"))
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0)
        {
            cost += c;
            any_cost = true;
        }
    }
    if any_cost && cost.is_finite() {
        u.cost_usd = Some(cost);
    }
    if let Some(last) = messages.iter().rev().find(|m| m.get("usage").is_some()) {
        let usage = &last["usage"];
        let n = |k: &str| usage.get(k).and_then(Value::as_u64);
        u.context_tokens = n("totalTokens").or_else(|| {
            let parts = [n("input"), n("output"), n("cacheRead"), n("cacheWrite")];
            parts.iter().any(Option::is_some).then(|| {
                parts
                    .iter()
                    .flatten()
                    .fold(0u64, |a, b| a.saturating_add(*b))
            })
        });
        u.input_tokens = n("input");
        u.output_tokens = n("output");
        u.model_id = last
            .get("model")
            .and_then(Value::as_str)
            .map(|m| one_line_preview(m, limits::NAME))
            .filter(|m| !m.is_empty());
    }
    u
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use atm_core::serde_json::json;
    use atm_core::testing::fixtures::check_refused;

    fn t(v: Value) -> Translation {
        translate(&v).unwrap()
    }

    fn ev(name: &str, payload: Value) -> Option<AgentEvent> {
        t(json!({"event": name, "payload": payload, "session_id": "s1", "pid": 42})).event
    }

    #[test]
    fn session_lifecycle() {
        assert_eq!(
            ev(
                "session_start",
                json!({"type": "session_start", "reason": "startup"})
            ),
            Some(AgentEvent::SessionStarted {
                source: StartSource::Startup,
                model: None
            })
        );
        assert_eq!(
            ev(
                "session_start",
                json!({"reason": "startup", "model": {"id": "fake-sonnet", "name": "Fake"}})
            ),
            Some(AgentEvent::SessionStarted {
                source: StartSource::Startup,
                model: Some("fake-sonnet".into())
            })
        );
        let start = |source| AgentEvent::SessionStarted {
            source,
            model: None,
        };
        assert_eq!(
            ev("session_start", json!({})),
            Some(start(StartSource::Startup))
        );
        assert_eq!(
            ev("session_start", json!({"reason": "new"})),
            Some(start(StartSource::Clear))
        );
        assert_eq!(
            ev("session_start", json!({"reason": "resume"})),
            Some(start(StartSource::Resume))
        );
        assert!(matches!(
            ev("session_start", json!({"reason": "reload"})),
            Some(AgentEvent::Activity { .. })
        ));
        assert_eq!(
            ev("session_shutdown", json!({"reason": "quit"})),
            Some(AgentEvent::SessionEnded {
                reason: "quit".into(),
                continues: false
            })
        );
        assert_eq!(
            ev("session_shutdown", json!({"reason": "new"})),
            Some(AgentEvent::SessionEnded {
                reason: "new".into(),
                continues: true
            })
        );
        assert_eq!(
            ev("session_shutdown", json!(null)),
            Some(AgentEvent::SessionEnded {
                reason: "shutdown".into(),
                continues: false
            })
        );
    }

    #[test]
    fn turns_prompts_and_tools() {
        assert_eq!(
            ev("agent_start", json!({})),
            Some(AgentEvent::PromptSubmitted { prompt: None })
        );
        assert_eq!(
            ev("agent_end", json!({"messages": []})),
            Some(AgentEvent::TurnFinished)
        );
        assert_eq!(
            ev(
                "input",
                json!({"text": "fix\nthe  build", "source": "interactive"})
            ),
            Some(AgentEvent::PromptSubmitted {
                prompt: Some("fix the build".into())
            })
        );
        assert!(matches!(
            ev("input", json!({"text": "x", "source": "extension"})),
            Some(AgentEvent::Activity { .. })
        ));
        assert_eq!(
            ev(
                "tool_call",
                json!({"toolName": "bash", "toolCallId": "c1", "input": {"command": "cargo test"}})
            ),
            Some(AgentEvent::ToolStarted {
                tool: "bash".into(),
                detail: Some("cargo test".into())
            })
        );
        assert_eq!(
            ev(
                "tool_call",
                json!({"toolName": "bash", "input": {"command": "rm -rf x"}, "needs_user_input": true})
            ),
            Some(AgentEvent::PermissionRequested {
                tool: "bash".into(),
                detail: Some("rm -rf x".into()),
                suggestions: Vec::new()
            })
        );
        // A tool event without a tool name is dropped, not turned into a phantom tool.
        assert_eq!(ev("tool_call", json!({"input": {}})), None);
        assert_eq!(
            ev(
                "tool_execution_start",
                json!({"toolName": "bash", "args": {"command": "sleep 2"}})
            ),
            Some(AgentEvent::ToolStarted {
                tool: "bash".into(),
                detail: Some("sleep 2".into())
            })
        );
        assert_eq!(
            ev("before_agent_start", json!({"prompt": "fix\nit"})),
            Some(AgentEvent::PromptSubmitted {
                prompt: Some("fix it".into())
            })
        );
        assert_eq!(
            ev("agent_end", json!({"stopReason": "aborted"})),
            Some(AgentEvent::TurnFinished)
        );
        assert_eq!(
            ev(
                "agent_end",
                json!({"stopReason": "error", "errorMessage": "429 rate limited"})
            ),
            Some(AgentEvent::TurnFailed {
                error: "429 rate limited".into()
            })
        );
        assert_eq!(ev("atm_idle", json!({})), Some(AgentEvent::TurnFinished));
        assert_eq!(ev("tool_result", json!({"toolName": "ls"})), None);
        assert_eq!(
            ev(
                "tool_execution_end",
                json!({"toolName": "ls", "isError": true})
            ),
            Some(AgentEvent::ToolFinished {
                tool: Some("ls".into()),
            })
        );
        assert_eq!(
            ev("session_before_compact", json!({})),
            Some(AgentEvent::Compacting)
        );
        assert_eq!(
            ev("session_compact", json!({})),
            Some(AgentEvent::CompactFinished)
        );
    }

    #[test]
    fn dialogs_are_permission_waits() {
        assert_eq!(
            ev(
                "atm_needs_input_open",
                json!({"title": "Allow `rm -rf /tmp/cache`?"})
            ),
            Some(AgentEvent::PermissionRequested {
                tool: "dialog".into(),
                detail: Some("Allow `rm -rf /tmp/cache`?".into()),
                suggestions: Vec::new()
            })
        );
        assert_eq!(
            ev("atm_needs_input_resolved", json!({})),
            Some(AgentEvent::ToolFinished { tool: None })
        );
        // atm's extension: a dialog during a tool call gates that tool; the command is shown.
        assert_eq!(
            ev(
                "atm_needs_input_open",
                json!({"dialog": "confirm", "title": "Run this command?", "toolName": "bash",
                       "toolCallId": "t1", "input": {"command": "rm -f x"}})
            ),
            Some(AgentEvent::PermissionRequested {
                tool: "bash".into(),
                detail: Some("rm -f x".into()),
                suggestions: Vec::new()
            })
        );
        assert_eq!(
            ev(
                "atm_needs_input_open",
                json!({"dialog": "select", "title": "Pick a session", "message": null})
            ),
            Some(AgentEvent::InputRequested {
                reason: "select".into(),
                tool: None,
                detail: Some("Pick a session".into())
            })
        );
        assert_eq!(
            ev(
                "atm_needs_input_resolved",
                json!({"dialog": "select", "idle": true})
            ),
            Some(AgentEvent::TurnFinished)
        );
        assert_eq!(
            ev(
                "atm_needs_input_resolved",
                json!({"dialog": "confirm", "idle": false})
            ),
            Some(AgentEvent::ToolFinished { tool: None })
        );
    }

    #[test]
    fn session_usage_and_cwd_from_the_extension() {
        let Some(AgentEvent::UsageUpdated(u)) = ev(
            "atm_usage",
            json!({"session": {"cost": 0.011565, "input": 3600, "output": 51, "cacheRead": 0, "cacheWrite": 0},
                   "context": {"tokens": 1229, "contextWindow": 128000, "percent": 0.96},
                   "model": {"id": "fake-sonnet", "name": "Fake Sonnet", "provider": "fake"}}),
        ) else {
            panic!("atm_usage")
        };
        assert_eq!(u.cost_usd, Some(0.011565));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(3600), Some(51)));
        assert_eq!(
            (u.context_tokens, u.context_window_size),
            (Some(1229), Some(128000))
        );
        assert_eq!(u.context_used_percentage, Some(0.96));
        assert_eq!(u.model_name.as_deref(), Some("Fake Sonnet"));
        assert_eq!(ev("atm_usage", json!({})), None);
        // After a compaction pi does not know the context size: `tokens: null` leaves it alone.
        let Some(AgentEvent::UsageUpdated(u)) = ev(
            "atm_usage",
            json!({"session": {"cost": 1.5}, "context": {"tokens": null, "percent": null}}),
        ) else {
            panic!("atm_usage")
        };
        assert_eq!((u.cost_usd, u.context_tokens), (Some(1.5), None));

        let with_cwd =
            |cwd: Value| t(json!({"event": "atm_idle", "session_id": "s", "cwd": cwd})).cwd;
        assert_eq!(with_cwd(json!("/home/me/p")).as_deref(), Some("/home/me/p"));
        assert_eq!(with_cwd(json!("relative")), None);
        assert_eq!(with_cwd(json!(5)), None);
        assert_eq!(
            with_cwd(json!(format!("/{}", "x".repeat(limits::PATH)))),
            None
        );
    }

    #[test]
    fn usage_from_model_select_and_context() {
        let Some(AgentEvent::UsageUpdated(u)) = ev(
            "model_select",
            json!({"provider": {"id": "anthropic"}, "model": {"id": "claude-sonnet-4-5", "name": "Claude Sonnet 4.5"}}),
        ) else {
            panic!("model_select")
        };
        assert_eq!(u.model_id.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(u.model_name.as_deref(), Some("Claude Sonnet 4.5"));
        assert_eq!(ev("model_select", json!({})), None);

        let msgs = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "model": "gpt-5", "usage": {"input": 1000, "output": 50, "totalTokens": 1050, "cost": {"total": 0.25}}},
            {"role": "toolResult"},
            {"role": "assistant", "model": "gpt-5", "usage": {"input": 1200, "output": 30, "cacheRead": 800, "cost": {"total": 0.5}}},
        ]);
        let Some(AgentEvent::UsageUpdated(u)) = ev("context", json!({"messages": msgs})) else {
            panic!("context")
        };
        assert_eq!(u.cost_usd, Some(0.75));
        assert_eq!(u.context_tokens, Some(2030));
        assert_eq!(u.model_id.as_deref(), Some("gpt-5"));
        assert_eq!(ev("context", json!({"messages": [{"role": "user"}]})), None);
        assert_eq!(ev("context", json!({"messages": "x"})), None);
    }

    #[test]
    fn identity_fields_are_lenient() {
        let x = t(
            json!({"event": "agent_start", "session_id": {"id": "abc"}, "pid": "77", "tmux_pane": "%3"}),
        );
        assert_eq!(x.session_id.as_str(), "abc");
        assert_eq!(x.pid, Some(77));
        assert_eq!(x.tmux_pane.as_deref(), Some("%3"));
        // Before the extension learns the id: pending-<pid>, re-keyed by the registry later.
        let y = t(json!({"event": "agent_start", "pid": 77}));
        assert_eq!(y.session_id.as_str(), "pending-77");
        let z = t(json!({"event": "agent_start", "session_id": 12345, "pid": -1}));
        assert_eq!((z.session_id.as_str(), z.pid), ("12345", None));
    }

    #[test]
    fn unknown_events_are_activity() {
        let x = t(json!({"event": "future_thing", "session_id": "s"}));
        assert!(!x.known);
        assert_eq!(
            x.event,
            Some(AgentEvent::Activity {
                what: "future_thing".into()
            })
        );
        assert!(t(json!({"event": "turn_start", "session_id": "s"})).known);
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        check_refused(
            translate,
            [
                json!("x"),
                json!([]),
                json!({}),
                json!({"event": 5, "session_id": "s"}),
                json!({"event": " ", "session_id": "s"}),
                json!({"event": "agent_start", "payload": [1], "session_id": "s"}),
                json!({"event": "agent_start"}),
                json!({"event": "agent_start", "session_id": "", "pid": null}),
                json!({"event": "agent_start", "session_id": "x".repeat(limits::ID + 1)}),
                json!({"event": "agent_start", "session_id": {"id": {"id": "deep"}}}),
            ],
        );
    }

    #[test]
    fn long_and_multibyte_text_is_cut_by_characters() {
        let title = "é".repeat(10_000);
        let Some(AgentEvent::PermissionRequested { detail, .. }) =
            ev("atm_needs_input_open", json!({"title": title}))
        else {
            panic!()
        };
        assert_eq!(detail.unwrap().chars().count(), PREVIEW_CHARS);
        let x = t(json!({"event": "日本".repeat(500), "session_id": "s"}));
        assert_eq!(x.event_name.chars().count(), limits::NAME);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            atm_core::testing::arb_json(&[
                "event",
                "payload",
                "session_id",
                "pid",
                "toolName",
                "messages",
                "usage",
            ])
        }

        proptest! {
            #[test]
            fn never_panics(v in json_value()) {
                let _ = translate(&v);
            }

            #[test]
            fn any_event_name_with_any_payload(name in prop::sample::select(KNOWN_EVENTS), payload in json_value()) {
                let out = translate(&json!({"event": name, "payload": payload, "session_id": "s"}));
                if payload.is_object() || payload.is_null() {
                    prop_assert!(out.is_ok());
                }
            }
        }
    }
}
