//! Gemini CLI hook JSON -> `AgentEvent`, as a pure function.
//!
//! [`translate`] does no I/O and holds no state, so every hook event is covered by unit tests and
//! the function can be fuzzed; the adapter adds what needs the outside world (the process
//! identity from `/proc`). Only `session_id` and `hook_event_name` are required: Gemini CLI's
//! hooks are young and gain fields between versions, so every other field is read when it has
//! the expected type and ignored otherwise, and unknown event names are accepted as activity.
//!
//! | Gemini hook | event |
//! |---|---|
//! | `SessionStart` (`source`: startup/resume/clear) | `SessionStarted` |
//! | `SessionEnd` (`reason`) | `SessionEnded` (`clear` continues in the same process) |
//! | `BeforeAgent` (`prompt`) | `PromptSubmitted`: working |
//! | `AfterAgent` | `TurnFinished`: idle |
//! | `BeforeTool` (`tool_name`, `tool_input`) | `ToolStarted`; `ask_user` -> `InputRequested` |
//! | `AfterTool` (`tool_response.error`) | `ToolFinished` |
//! | `Notification` `ToolPermission` (`details`) | `PermissionRequested` (`ask_user` -> `InputRequested`) |
//! | `BeforeModel` (`llm_request.model`) | `UsageUpdated` with the model |
//! | `PreCompress`, `AfterModel`, `BeforeToolSelection`, unknown | `Activity` |

use atm_core::event::{AgentEvent, StartSource};
use atm_core::fields::{self, Object, opt_str as text};
use atm_core::ingest_adapter::Translation;
use atm_core::model::UsageUpdate;
use atm_core::protocol::WireError;
use atm_core::registry::limits;
use atm_core::serde_json::Value;
use atm_core::text::{one_line_preview, truncate_chars};

pub use atm_core::fields::PREVIEW_CHARS;

/// Gemini's tool that asks the user a question: a wait for input, not a tool run.
pub const ASK_USER_TOOL: &str = "ask_user";

/// The hook events that say something about a session's state, in the order `atmctl setup
/// gemini` installs them (the one list both read).
pub const KNOWN_EVENTS: &[&str] = &[
    "SessionStart",
    "SessionEnd",
    "BeforeAgent",
    "AfterAgent",
    "BeforeTool",
    "AfterTool",
    "Notification",
    "PreCompress",
    "BeforeModel",
];

/// Hook events that are activity only and not installed by `atmctl setup` (`AfterModel` fires
/// for every streamed chunk). Any other name is accepted as unknown activity.
pub const ACTIVITY_EVENTS: &[&str] = &["AfterModel", "BeforeToolSelection"];

/// Translates one hook payload: Gemini's hook JSON plus the `pid` / `tmux_pane` that `atm-hook`
/// adds. Fails only when `data` is not an object or `session_id` / `hook_event_name` are
/// missing, empty, not strings or absurdly long.
pub fn translate(data: &Value) -> Result<Translation, WireError> {
    let obj = fields::object(data, "Gemini CLI's hook JSON")?;
    let session_id = fields::session_id(obj)?;
    let event_name = truncate_chars(fields::required_str(obj, "hook_event_name")?, 64);
    let event = match event_name.as_str() {
        "SessionStart" => AgentEvent::SessionStarted {
            // The reference documents `source`; early builds sent `trigger`.
            source: StartSource::parse(text(obj, "source").or(text(obj, "trigger")).unwrap_or("")),
            model: None,
        },
        "SessionEnd" => {
            let reason = text(obj, "reason")
                .or(text(obj, "trigger"))
                .unwrap_or("other");
            AgentEvent::SessionEnded {
                // `/clear` starts a new session id in the same process.
                continues: reason == "clear",
                reason: truncate_chars(reason, limits::NAME),
            }
        }
        "BeforeAgent" => AgentEvent::PromptSubmitted {
            prompt: text(obj, "prompt").map(|p| one_line_preview(p, limits::FIRST_PROMPT)),
        },
        "AfterAgent" => AgentEvent::TurnFinished,
        "BeforeTool" => before_tool(obj),
        "AfterTool" => AgentEvent::ToolFinished {
            tool: text(obj, "tool_name").map(|t| truncate_chars(t, limits::NAME)),
        },
        "Notification" => notification(obj),
        // Gemini CLI 0.61 fires PreCompress (`trigger` `auto`) before every model request,
        // before it checks whether the history is over its threshold, and fires nothing when it
        // compresses or not: the hook says "may compress", never "compressing". `manual`
        // (`/compress`) has no end signal either, so a state would stick. Activity only.
        "PreCompress" => AgentEvent::Activity {
            what: "PreCompress".to_owned(),
        },
        // The one hook that names the model: `llm_request.model` (atm-hook keeps only that).
        "BeforeModel" => before_model(obj),
        other => AgentEvent::Activity {
            what: other.to_owned(),
        },
    };
    Ok(Translation::new(event_name, session_id, event)
        .with_hook_fields(obj)
        .known_among(&[KNOWN_EVENTS, ACTIVITY_EVENTS]))
}

/// The model of the request Gemini is about to send, as a usage update (no state change).
fn before_model(obj: &Object) -> AgentEvent {
    let model = obj
        .get("llm_request")
        .and_then(Value::as_object)
        .and_then(|r| text(r, "model"))
        .map(|m| one_line_preview(m, limits::NAME))
        .filter(|m| !m.is_empty());
    match model {
        Some(model) => AgentEvent::UsageUpdated(Box::new(UsageUpdate {
            model_id: Some(model),
            ..UsageUpdate::default()
        })),
        None => AgentEvent::Activity {
            what: "BeforeModel".to_owned(),
        },
    }
}

fn before_tool(obj: &Object) -> AgentEvent {
    let tool = tool_name(obj);
    let input = obj.get("tool_input").and_then(Value::as_object);
    if tool == ASK_USER_TOOL {
        return AgentEvent::InputRequested {
            reason: "question".to_owned(),
            detail: input.and_then(first_question),
            tool: Some(tool),
        };
    }
    AgentEvent::ToolStarted {
        detail: input.and_then(tool_detail),
        tool,
    }
}

/// `ToolPermission` is the confirmation dialog: it fires only when Gemini really asks (never for
/// an auto-approved call), so it is the immediate "needs permission" signal. Its `details` are
/// the confirmation details: `type` (`exec`, `edit`, `mcp`, `info`, `ask_user`) and the
/// command, file, tool or URLs asked about.
fn notification(obj: &Object) -> AgentEvent {
    let kind = text(obj, "notification_type").unwrap_or("unknown");
    let message = text(obj, "message");
    let details = obj.get("details").and_then(Value::as_object);
    if kind != "ToolPermission" {
        return AgentEvent::Notification {
            kind: truncate_chars(kind, limits::NAME),
            message: message.map(preview),
        };
    }
    let details_type = details.and_then(|d| text(d, "type")).unwrap_or("");
    if details_type == ASK_USER_TOOL {
        return AgentEvent::InputRequested {
            reason: "question".to_owned(),
            tool: Some(ASK_USER_TOOL.to_owned()),
            detail: details.and_then(first_question).or(message.map(preview)),
        };
    }
    let tool = match details_type {
        "exec" => "run_shell_command".to_owned(),
        "edit" => "edit".to_owned(),
        "info" => "web_fetch".to_owned(),
        "mcp" => details
            .and_then(|d| text(d, "toolName").or(text(d, "serverName")))
            .map_or_else(|| "mcp".to_owned(), |t| truncate_chars(t, limits::NAME)),
        "" => "unknown".to_owned(),
        other => truncate_chars(other, limits::NAME),
    };
    AgentEvent::PermissionRequested {
        tool,
        detail: details.and_then(permission_detail).or(message.map(preview)),
        suggestions: Vec::new(),
    }
}

/// What the permission is about, from the confirmation details.
fn permission_detail(details: &Object) -> Option<String> {
    const KEYS: [&str; 6] = [
        "command",
        "filePath",
        "fileName",
        "prompt",
        "toolDisplayName",
        "title",
    ];
    if let Some(url) = details
        .get("urls")
        .and_then(Value::as_array)
        .and_then(|u| u.first())
        .and_then(Value::as_str)
    {
        return Some(preview(url));
    }
    KEYS.iter().find_map(|k| text(details, k)).map(preview)
}

/// A short preview of what a tool call is about, by Gemini's argument names.
pub fn tool_detail(input: &Object) -> Option<String> {
    const KEYS: [&str; 10] = [
        "command",
        "file_path",
        "absolute_path",
        "path",
        "dir_path",
        "pattern",
        "query",
        "url",
        "prompt",
        "description",
    ];
    KEYS.iter().find_map(|k| text(input, k)).map(preview)
}

/// `ask_user`'s `questions[0].question`, or a top-level `question`.
fn first_question(obj: &Object) -> Option<String> {
    obj.get("questions")
        .and_then(Value::as_array)
        .and_then(|qs| qs.first())
        .and_then(Value::as_object)
        .and_then(|q| text(q, "question"))
        .or(text(obj, "question"))
        .map(preview)
}

fn tool_name(obj: &Object) -> String {
    text(obj, "tool_name").map_or_else(|| "unknown".to_owned(), |t| truncate_chars(t, limits::NAME))
}

fn preview(s: &str) -> String {
    one_line_preview(s, PREVIEW_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::serde_json::json;
    use atm_core::testing::fixtures::check_refused;

    fn event(v: Value) -> AgentEvent {
        translate(&v).unwrap().event.unwrap()
    }

    fn base(name: &str) -> Value {
        json!({"session_id": "g-1", "hook_event_name": name, "cwd": "/w", "timestamp": "2026-01-01T00:00:00Z"})
    }

    fn with(name: &str, extra: Value) -> Value {
        let mut v = base(name);
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }

    #[test]
    fn lifecycle_events() {
        assert_eq!(
            event(with("SessionStart", json!({"source": "resume"}))),
            AgentEvent::SessionStarted {
                source: StartSource::Resume,
                model: None
            }
        );
        assert_eq!(
            event(with("SessionStart", json!({"trigger": "clear"}))),
            AgentEvent::SessionStarted {
                source: StartSource::Clear,
                model: None
            }
        );
        assert_eq!(
            event(with("SessionEnd", json!({"reason": "exit"}))),
            AgentEvent::SessionEnded {
                reason: "exit".into(),
                continues: false
            }
        );
        assert_eq!(
            event(with("SessionEnd", json!({"reason": "clear"}))),
            AgentEvent::SessionEnded {
                reason: "clear".into(),
                continues: true
            }
        );
        assert_eq!(
            event(base("SessionEnd")),
            AgentEvent::SessionEnded {
                reason: "other".into(),
                continues: false
            }
        );
        assert_eq!(event(base("AfterAgent")), AgentEvent::TurnFinished);
        for trigger in ["auto", "manual"] {
            assert_eq!(
                event(with("PreCompress", json!({"trigger": trigger}))),
                AgentEvent::Activity {
                    what: "PreCompress".into()
                },
                "fires before every request, compressing or not"
            );
        }
        let AgentEvent::UsageUpdated(u) = event(with(
            "BeforeModel",
            json!({"llm_request": {"model": "gemini-2.5-flash"}}),
        )) else {
            panic!("BeforeModel carries the model")
        };
        assert_eq!(u.model_id.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(
            event(with("BeforeAgent", json!({"prompt": "fix\nthe   bug"}))),
            AgentEvent::PromptSubmitted {
                prompt: Some("fix the bug".into())
            }
        );
    }

    #[test]
    fn tools_and_permissions() {
        let finished = AgentEvent::ToolFinished {
            tool: Some("read_file".into()),
        };
        for (name, extra, want) in [
            (
                "BeforeTool",
                json!({"tool_name": "run_shell_command", "tool_input": {"command": "npm test", "description": "run tests"}}),
                AgentEvent::ToolStarted {
                    tool: "run_shell_command".into(),
                    detail: Some("npm test".into()),
                },
            ),
            (
                "BeforeTool",
                json!({"tool_name": "ask_user", "tool_input": {"questions": [{"question": "Which DB?"}]}}),
                AgentEvent::InputRequested {
                    reason: "question".into(),
                    tool: Some("ask_user".into()),
                    detail: Some("Which DB?".into()),
                },
            ),
            (
                "AfterTool",
                json!({"tool_name": "read_file", "tool_response": {"llmContent": "", "error": "ENOENT"}}),
                finished.clone(),
            ),
            (
                "AfterTool",
                json!({"tool_name": "read_file", "tool_response": {"llmContent": "x", "error": null}}),
                finished,
            ),
        ] {
            assert_eq!(event(with(name, extra.clone())), want, "{extra}");
        }

        let permission = |tool: &str, detail: Option<&str>| AgentEvent::PermissionRequested {
            tool: tool.into(),
            detail: detail.map(Into::into),
            suggestions: Vec::new(),
        };
        let asked =
            |details: Value| json!({"notification_type": "ToolPermission", "details": details});
        let exec = json!({"notification_type": "ToolPermission", "message": "Tool Shell requires execution",
                          "details": {"type": "exec", "title": "Confirm Shell Command", "command": "rm -rf build", "rootCommand": "rm"}});
        for (notification, want) in [
            (exec, permission("run_shell_command", Some("rm -rf build"))),
            (
                asked(json!({"type": "edit", "fileName": "a.rs", "filePath": "/w/a.rs"})),
                permission("edit", Some("/w/a.rs")),
            ),
            (
                asked(json!({"type": "mcp", "serverName": "gh", "toolName": "create_issue"})),
                permission("create_issue", None),
            ),
            (
                asked(json!({"type": "info", "urls": ["https://example.com"]})),
                permission("web_fetch", Some("https://example.com")),
            ),
            (
                json!({"notification_type": "ToolPermission", "message": "Tool X requires confirmation"}),
                permission("unknown", Some("Tool X requires confirmation")),
            ),
            (
                asked(json!({"type": "ask_user", "questions": [{"question": "Ship it?"}]})),
                AgentEvent::InputRequested {
                    reason: "question".into(),
                    tool: Some("ask_user".into()),
                    detail: Some("Ship it?".into()),
                },
            ),
            (
                json!({"notification_type": "SomethingNew", "message": "hi"}),
                AgentEvent::Notification {
                    kind: "SomethingNew".into(),
                    message: Some("hi".into()),
                },
            ),
        ] {
            assert_eq!(
                event(with("Notification", notification.clone())),
                want,
                "{notification}"
            );
        }
    }

    #[test]
    fn unknown_and_model_events_are_activity() {
        for name in [
            "BeforeModel",
            "PreCompress",
            "AfterModel",
            "BeforeToolSelection",
            "SomeFutureEvent",
        ] {
            let t = translate(&base(name)).unwrap();
            assert_eq!(
                t.event,
                Some(AgentEvent::Activity {
                    what: name.to_owned()
                })
            );
            assert_eq!(t.known, name != "SomeFutureEvent");
        }
    }

    #[test]
    fn identity_fields_are_lenient() {
        let t = translate(&with(
            "AfterAgent",
            json!({"pid": "4242", "tmux_pane": " %3 ", "cwd": "/w"}),
        ))
        .unwrap();
        assert_eq!(
            (t.pid, t.tmux_pane.as_deref(), t.cwd.as_deref()),
            (Some(4242), Some("%3"), Some("/w"))
        );
        for bad_pid in [
            json!(-1),
            json!(0),
            json!(null),
            json!("x"),
            json!(1u64 << 40),
        ] {
            let t = translate(&with("AfterAgent", json!({ "pid": bad_pid }))).unwrap();
            assert_eq!(t.pid, None);
        }
        let t = translate(&with(
            "BeforeTool",
            json!({"tool_name": 5, "tool_input": "x"}),
        ))
        .unwrap();
        assert_eq!(
            t.event,
            Some(AgentEvent::ToolStarted {
                tool: "unknown".into(),
                detail: None
            })
        );
        use atm_core::ingest_adapter::Translator;
        assert_eq!(<crate::GeminiHooks as Translator>::HARNESS, "gemini");
    }

    #[test]
    fn malformed_payloads_are_refused_with_a_reason() {
        check_refused(
            translate,
            [
                json!("just a string"),
                json!([1, 2]),
                json!({}),
                json!({"session_id": "g"}),
                json!({"hook_event_name": "AfterAgent"}),
                json!({"session_id": "", "hook_event_name": "AfterAgent"}),
                json!({"session_id": 7, "hook_event_name": "AfterAgent"}),
                json!({"session_id": "g", "hook_event_name": null}),
                json!({"session_id": "g", "hook_event_name": 7}),
                json!({"session_id": "x".repeat(limits::ID + 1), "hook_event_name": "AfterAgent"}),
            ],
        );
    }

    #[test]
    fn long_and_multibyte_fields_are_cut_by_characters() {
        let long = "é".repeat(10_000);
        let t = translate(&with(
            "BeforeTool",
            json!({"tool_name": long, "tool_input": {"command": long}}),
        ))
        .unwrap();
        let Some(AgentEvent::ToolStarted { tool, detail }) = t.event else {
            panic!("{:?}", t.event)
        };
        assert_eq!(tool.chars().count(), limits::NAME);
        assert_eq!(detail.unwrap().chars().count(), PREVIEW_CHARS);
        let t = translate(&with(&long, json!({}))).unwrap();
        assert_eq!(t.event_name.chars().count(), 64);
        assert!(!t.known);
    }
}
