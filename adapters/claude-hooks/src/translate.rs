//! Claude Code hook JSON -> `AgentEvent`, as a pure function.
//!
//! [`translate`] does no I/O and holds no state, so every hook event of `claude-code.md` is
//! covered by unit tests and the function can be fuzzed. What needs the outside world (the
//! process identity from `/proc`) is left to atm-core's generic ingest adapter, which gets
//! everything it needs in a [`Translation`]; what depends on the session's current state is the
//! state machine's.
//!
//! Parsing is lenient by design: only `session_id` and `hook_event_name` are required, unknown
//! fields are ignored, unknown event names become `Activity` (accepted and counted), and a field
//! of the wrong type is treated as absent rather than failing the event.

use atm_core::event::{AgentEvent, StartSource};
use atm_core::fields::{self, Object};
use atm_core::ingest_adapter::Translation;
use atm_core::protocol::WireError;
use atm_core::registry::limits;
use atm_core::request::{Question, QuestionOption};
use atm_core::serde_json::Value;
use atm_core::text::{one_line_preview, truncate_chars};

use crate::{background, suggestions};

pub use atm_core::fields::PREVIEW_CHARS;

/// Hook events that only mean "something happened": they move `last_activity`, nothing else.
pub const ACTIVITY_EVENTS: &[&str] = &[
    "PostToolBatch",
    "TaskCreated",
    "TaskCompleted",
    "TeammateIdle",
    "InstructionsLoaded",
    "ConfigChange",
    "FileChanged",
    "WorktreeCreate",
    "WorktreeRemove",
    "Setup",
    "UserPromptExpansion",
    "MessageDisplay",
];

/// Every hook event name the translator knows (the rest are accepted as unknown activity).
pub const KNOWN_EVENTS: &[&str] = &[
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "PermissionDenied",
    "Notification",
    "Stop",
    "StopFailure",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "CwdChanged",
    "Elicitation",
    "SessionEnd",
];

/// Translates one hook payload (Claude's hook JSON plus `pid` / `tmux_pane`).
///
/// Fails only when `data` is not an object or `session_id` / `hook_event_name` are missing,
/// empty or not strings; everything else is optional.
pub fn translate(data: &Value) -> Result<Translation, WireError> {
    fields::object(data, "Claude's hook JSON").and_then(translate_object)
}

/// [`translate`] for a payload already known to be an object.
pub fn translate_object(obj: &Object) -> Result<Translation, WireError> {
    let session_id = fields::session_id(obj)?;
    let event_name = truncate_chars(fields::required_str(obj, "hook_event_name")?, 64);
    let subagent_id = fields::opt_str(obj, "agent_id").map(|a| truncate_chars(a, limits::ID));
    let event = match event_name.as_str() {
        "SessionStart" => Some(AgentEvent::SessionStarted {
            source: StartSource::parse(fields::opt_str(obj, "source").unwrap_or("")),
            model: fields::model_id(obj, "model"),
        }),
        "UserPromptSubmit" => Some(AgentEvent::PromptSubmitted {
            // Claude resumes by itself when background work ends, with a prompt of its own
            // (`<task-notification>...`): a turn starts, but those are not the user's words.
            prompt: fields::opt_str(obj, "prompt")
                .filter(|p| !p.trim_start().starts_with("<task-notification>"))
                .map(|p| one_line_preview(p, limits::FIRST_PROMPT)),
        }),
        "PreToolUse" => Some(tool_started(obj)),
        "PermissionRequest" if tool_name(obj) == "AskUserQuestion" => Some(tool_started(obj)),
        "PermissionRequest" => {
            let tool = tool_name(obj);
            Some(AgentEvent::PermissionRequested {
                detail: tool_detail(&tool, obj.get("tool_input")),
                tool,
                suggestions: suggestions::permission_suggestions(obj.get("permission_suggestions")),
            })
        }
        "PostToolUse" | "PostToolUseFailure" => Some(AgentEvent::ToolFinished {
            tool: fields::opt_str(obj, "tool_name").map(str::to_owned),
        }),
        "PermissionDenied" => Some(AgentEvent::ToolFinished {
            tool: fields::opt_str(obj, "tool_name").map(str::to_owned),
        }),
        "Notification" => Some(notification(obj)),
        // A subagent's Stop is noise: the parent's turn goes on.
        "Stop" if subagent_id.is_some() => None,
        "Stop" => Some(background::turn_end(obj.get("background_tasks"))),
        "StopFailure" => Some(AgentEvent::TurnFailed {
            error: stop_error(obj),
        }),
        "SubagentStart" | "SubagentStop" => Some(match &subagent_id {
            Some(agent_id) if event_name == "SubagentStart" => AgentEvent::SubagentStarted {
                agent_id: agent_id.clone(),
            },
            Some(agent_id) => AgentEvent::SubagentStopped {
                agent_id: agent_id.clone(),
            },
            // Without an agent id there is nothing to track.
            None => activity(&event_name),
        }),
        "PreCompact" => Some(AgentEvent::Compacting),
        "PostCompact" => Some(AgentEvent::CompactFinished),
        "CwdChanged" => Some(
            match fields::opt_str(obj, "new_cwd").or_else(|| fields::opt_str(obj, "cwd")) {
                Some(cwd) => AgentEvent::CwdChanged {
                    cwd: cwd.to_owned(),
                },
                None => activity(&event_name),
            },
        ),
        "Elicitation" => Some(AgentEvent::InputRequested {
            reason: "elicitation".to_owned(),
            tool: fields::opt_str(obj, "mcp_server_name").map(str::to_owned),
            detail: preview(fields::opt_str(obj, "message")),
        }),
        "SessionEnd" => {
            let reason = fields::opt_str(obj, "reason").unwrap_or("other");
            Some(AgentEvent::SessionEnded {
                continues: matches!(reason, "clear" | "resume"),
                reason: truncate_chars(reason, limits::NAME),
            })
        }
        other => Some(activity(other)),
    };
    let known = KNOWN_EVENTS.contains(&event_name.as_str())
        || ACTIVITY_EVENTS.contains(&event_name.as_str());
    Ok(Translation {
        session_id,
        pid: fields::pid(obj),
        tmux_pane: fields::tmux_pane(obj),
        cwd: fields::opt_str(obj, "cwd").map(str::to_owned),
        subagent_id,
        turn_id: None,
        event,
        known,
        want_reply: false,
        event_name,
    }
    // Every hook of one turn carries the same `prompt_id` (2.1.332), a turn id.
    .with_turn_id(fields::opt_str(obj, "prompt_id")))
}

fn activity(what: &str) -> AgentEvent {
    AgentEvent::Activity {
        what: what.to_owned(),
    }
}

fn preview(text: Option<&str>) -> Option<String> {
    text.map(|t| one_line_preview(t, PREVIEW_CHARS))
        .filter(|p| !p.is_empty())
}

fn tool_name(obj: &Object) -> String {
    fields::opt_str(obj, "tool_name")
        .map(|t| truncate_chars(t, limits::NAME))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn tool_started(obj: &Object) -> AgentEvent {
    let tool = tool_name(obj);
    let input = obj.get("tool_input");
    match tool.as_str() {
        "AskUserQuestion" => AgentEvent::QuestionsAsked {
            detail: tool_detail(&tool, input),
            questions: questions(input),
            tool,
        },
        "ExitPlanMode" => AgentEvent::InputRequested {
            reason: "plan_approval".to_owned(),
            detail: tool_detail(&tool, input),
            tool: Some(tool),
        },
        _ => AgentEvent::ToolStarted {
            detail: tool_detail(&tool, input),
            tool,
        },
    }
}

/// A short preview of what a tool call is about: the question or plan of the tools that ask,
/// else the command, file, URL, pattern or query ([`fields::CLAUDE_STYLE_INPUT_KEYS`]).
pub fn tool_detail(tool: &str, input: Option<&Value>) -> Option<String> {
    let specific = match (tool, input.and_then(Value::as_object)) {
        ("AskUserQuestion", Some(obj)) => first_question(obj),
        ("ExitPlanMode", Some(obj)) => fields::opt_str(obj, "plan"),
        _ => None,
    };
    match specific {
        Some(text) => preview(Some(text)),
        None => fields::claude_style_tool_detail(input),
    }
}

/// AskUserQuestion's questions and their choices (`questions: [{question, header, options:
/// [{label, description}], multiSelect}]`); entries without a question are skipped.
fn questions(input: Option<&Value>) -> Vec<Question> {
    let Some(list) = input
        .and_then(Value::as_object)
        .and_then(|o| o.get("questions"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .filter_map(|q| {
            let options = q
                .get("options")
                .and_then(Value::as_array)
                .map(|os| {
                    os.iter()
                        .filter_map(Value::as_object)
                        .filter_map(|o| {
                            Some(QuestionOption {
                                label: fields::opt_str(o, "label")?.to_owned(),
                                description: fields::opt_str(o, "description").map(str::to_owned),
                            })
                        })
                        .take(limits::QUESTION_OPTIONS)
                        .collect()
                })
                .unwrap_or_default();
            Some(Question {
                question: fields::opt_str(q, "question")?.to_owned(),
                header: fields::opt_str(q, "header").map(str::to_owned),
                options,
                multi_select: q.get("multiSelect").and_then(Value::as_bool) == Some(true),
            })
        })
        .take(limits::QUESTIONS)
        .collect()
}

/// AskUserQuestion's `questions[0].question` (older versions: a top-level `question`).
fn first_question(obj: &Object) -> Option<&str> {
    obj.get("questions")
        .and_then(Value::as_array)
        .and_then(|qs| qs.first())
        .and_then(Value::as_object)
        .and_then(|q| fields::opt_str(q, "question"))
        .or_else(|| fields::opt_str(obj, "question"))
}

/// Maps a Notification to an event. The ones that echo a wait (`permission_prompt` about 6 s
/// after `PermissionRequest`, `idle_prompt` 60 s after a question) are reminders: the state
/// machine keeps the richer attention (tool, command) when the session already waits.
fn notification(obj: &Object) -> AgentEvent {
    let message = fields::opt_str(obj, "message");
    let kind = match fields::opt_str(obj, "notification_type") {
        Some(k) => k,
        // Versions before `notification_type` existed said it only in the message.
        None => infer_notification_type(message.unwrap_or("")),
    };
    match kind {
        "permission_prompt" => {
            let tool = message.and_then(tool_from_permission_message);
            let event = AgentEvent::PermissionRequested {
                detail: if tool.is_some() {
                    None
                } else {
                    preview(message)
                },
                tool: tool.unwrap_or_else(|| "unknown".to_owned()),
                suggestions: Vec::new(),
            };
            AgentEvent::reminder(event)
        }
        "elicitation_dialog" | "agent_needs_input" => {
            let reason = if kind == "elicitation_dialog" {
                "elicitation"
            } else {
                "input"
            };
            let event = AgentEvent::InputRequested {
                reason: reason.to_owned(),
                tool: None,
                detail: preview(message),
            };
            AgentEvent::reminder(event)
        }
        "idle_prompt" => AgentEvent::reminder(AgentEvent::TurnFinished),
        other => AgentEvent::Notification {
            kind: truncate_chars(other, limits::NAME),
            message: preview(message),
        },
    }
}

fn infer_notification_type(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("needs your permission") {
        "permission_prompt"
    } else if m.contains("waiting for your input") {
        "idle_prompt"
    } else {
        "notification"
    }
}

/// "Claude needs your permission to use Bash" -> "Bash".
fn tool_from_permission_message(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("permission to use ")?;
    let tool = rest
        .split(|c: char| c.is_whitespace())
        .next()?
        .trim_end_matches(['.', ',', '!', '?']);
    (!tool.is_empty()).then(|| truncate_chars(tool, limits::NAME))
}

/// StopFailure's `error`: a word (`rate_limit`), or an object with `type` / `message`.
fn stop_error(obj: &Object) -> String {
    let text = match obj.get("error") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.as_str()),
        Some(Value::Object(e)) => {
            fields::opt_str(e, "type").or_else(|| fields::opt_str(e, "message"))
        }
        _ => None,
    };
    one_line_preview(text.unwrap_or("unknown"), limits::NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::protocol::ErrorCode;
    use atm_core::serde_json::json;
    use proptest::prelude::*;

    const ID: &str = "8e11bfb5-7dc2-432b-9206-928fa5c35731";

    fn hook(name: &str, extra: Value) -> Value {
        let mut v = json!({
            "session_id": ID,
            "transcript_path": "/home/u/.claude/projects/-home-u-app/x.jsonl",
            "cwd": "/home/u/app",
            "hook_event_name": name,
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }

    fn translated(name: &str, extra: Value) -> Translation {
        translate(&hook(name, extra)).unwrap()
    }

    #[test]
    fn the_prompt_id_is_the_turn() {
        let id = "791b120b-48fa-479a-83e8-aa91019e21c4";
        let t = translated("PreToolUse", json!({"prompt_id": id, "tool_name": "Bash"}));
        assert_eq!(t.turn_id.as_deref(), Some(id));
        for odd in [json!({}), json!({"prompt_id": ""}), json!({"prompt_id": 5})] {
            assert_eq!(translated("Stop", odd).turn_id, None);
        }
        let long = "p".repeat(10_000);
        let t = translated("Stop", json!({"prompt_id": long}));
        assert!(t.turn_id.unwrap().chars().count() <= limits::ID);
    }

    fn event(name: &str, extra: Value) -> AgentEvent {
        translated(name, extra).event.unwrap()
    }

    #[test]
    fn session_start_carries_source_and_model() {
        for (src, want) in [
            ("startup", StartSource::Startup),
            ("resume", StartSource::Resume),
            ("clear", StartSource::Clear),
            ("compact", StartSource::Compact),
            ("fork", StartSource::Fork),
            ("brand-new", StartSource::Other),
        ] {
            assert_eq!(
                event(
                    "SessionStart",
                    json!({"source": src, "model": "claude-opus-4-6"})
                ),
                AgentEvent::SessionStarted {
                    source: want,
                    model: Some("claude-opus-4-6".into())
                }
            );
        }
        assert_eq!(
            event("SessionStart", json!({"model": {"id": "m"}})),
            AgentEvent::SessionStarted {
                source: StartSource::Other,
                model: Some("m".into())
            }
        );
    }

    #[test]
    fn facts_come_from_common_fields() {
        let t = translated(
            "UserPromptSubmit",
            json!({"pid": 42, "tmux_pane": "%3", "prompt": "fix\nthe  bug"}),
        );
        assert_eq!(t.session_id.as_str(), ID);
        assert_eq!(t.pid, Some(42));
        assert_eq!(t.tmux_pane.as_deref(), Some("%3"));
        assert_eq!(t.cwd.as_deref(), Some("/home/u/app"));
        assert!(t.known && t.subagent_id.is_none());
        assert!(!matches!(t.event, Some(AgentEvent::Reminder { .. })));
        assert_eq!(
            t.event,
            Some(AgentEvent::PromptSubmitted {
                prompt: Some("fix the bug".into())
            })
        );
        use atm_core::ingest_adapter::Translator;
        assert_eq!(<crate::ClaudeHooks as Translator>::HARNESS, "claude");
    }

    #[test]
    fn tools_carry_a_short_preview() {
        assert_eq!(
            event(
                "PreToolUse",
                json!({"tool_name": "Bash", "tool_input": {"command": "cargo  test\n-q", "description": "Run tests"}})
            ),
            AgentEvent::ToolStarted {
                tool: "Bash".into(),
                detail: Some("cargo test -q".into())
            }
        );
        let long = "é".repeat(500);
        let AgentEvent::PermissionRequested { tool, detail, .. } = event(
            "PermissionRequest",
            json!({"tool_name": "Write", "tool_input": {"file_path": long, "content": "x"}}),
        ) else {
            panic!("not a permission request");
        };
        assert_eq!(tool, "Write");
        assert_eq!(detail.unwrap().chars().count(), PREVIEW_CHARS);
        for (tool, input, want) in [
            (
                "WebFetch",
                json!({"url": "https://x.dev", "prompt": "p"}),
                "https://x.dev",
            ),
            (
                "Grep",
                json!({"pattern": "fn main", "path": "src"}),
                "fn main",
            ),
            ("WebSearch", json!({"query": "tokio"}), "tokio"),
            (
                "Task",
                json!({"description": "Find callers", "prompt": "long"}),
                "Find callers",
            ),
        ] {
            assert_eq!(tool_detail(tool, Some(&input)).as_deref(), Some(want));
        }
        assert_eq!(tool_detail("mcp__x__y", Some(&json!({"n": 1}))), None);
        assert_eq!(tool_detail("Bash", Some(&json!(null))), None);
        assert_eq!(
            event("PreToolUse", json!({})),
            AgentEvent::ToolStarted {
                tool: "unknown".into(),
                detail: None
            }
        );
    }

    #[test]
    fn questions_and_plans_need_input() {
        let question = json!({"tool_name": "AskUserQuestion", "tool_input": {"questions": [
            {"question": "Which database?", "header": "DB", "options": [], "multiSelect": false}
        ]}});
        let plan = json!({"tool_name": "ExitPlanMode", "tool_input": {"plan": "# Plan\n1. do"}});
        let elicitation = json!({"mcp_server_name": "github", "message": "Pick a repo"});
        // A question arrives as PreToolUse, then as PermissionRequest: the same wait.
        for name in ["PreToolUse", "PermissionRequest"] {
            assert_eq!(
                event(name, question.clone()),
                atm_core::testing::database_question(Some("DB"), &[]),
                "{name}"
            );
        }
        let with_choices = json!({"tool_name": "AskUserQuestion", "tool_input": {"questions": [
            {"question": "Pick", "options": [{"label": "A", "description": "first"}, {"label": 3}, "x"],
             "multiSelect": true},
            {"header": "no question"}, "not an object"
        ]}});
        let AgentEvent::QuestionsAsked { questions, .. } = event("PermissionRequest", with_choices)
        else {
            panic!("not a question")
        };
        assert_eq!(
            questions,
            vec![Question {
                question: "Pick".into(),
                header: None,
                options: vec![QuestionOption {
                    label: "A".into(),
                    description: Some("first".into())
                }],
                multi_select: true,
            }]
        );
        for (name, extra, reason, tool, detail) in [
            (
                "PreToolUse",
                plan,
                "plan_approval",
                "ExitPlanMode",
                "# Plan 1. do",
            ),
            (
                "Elicitation",
                elicitation,
                "elicitation",
                "github",
                "Pick a repo",
            ),
        ] {
            assert_eq!(
                event(name, extra),
                AgentEvent::InputRequested {
                    reason: reason.into(),
                    tool: Some(tool.into()),
                    detail: Some(detail.into())
                },
                "{reason}"
            );
        }
    }

    #[test]
    fn tool_completion_and_denial_finish_the_tool() {
        for (name, extra) in [
            ("PostToolUse", json!({"tool_name": "Bash"})),
            (
                "PostToolUseFailure",
                json!({"tool_name": "Bash", "error": "x"}),
            ),
            (
                "PermissionDenied",
                json!({"tool_name": "Bash", "reason": "r"}),
            ),
        ] {
            assert_eq!(
                event(name, extra),
                AgentEvent::ToolFinished {
                    tool: Some("Bash".into()),
                },
                "{name}"
            );
        }
    }

    #[test]
    fn notifications_map_by_type() {
        let n = |v: Value| translate(&hook("Notification", v)).unwrap();
        // A reminder of the permission dialog of `tool` (the message names no more).
        let asks_again = |tool: &str| {
            Some(AgentEvent::reminder(AgentEvent::PermissionRequested {
                tool: tool.into(),
                detail: None,
                suggestions: Vec::new(),
            }))
        };
        let t = n(json!({"notification_type": "permission_prompt",
                         "message": "Claude needs your permission to use Bash"}));
        assert_eq!(t.event, asks_again("Bash"));
        let reminded = |t: Translation| match t.event {
            Some(AgentEvent::Reminder { of }) => *of,
            other => panic!("not a reminder: {other:?}"),
        };
        let t = n(json!({"notification_type": "elicitation_dialog", "message": "Sign in"}));
        assert!(
            matches!(reminded(t), AgentEvent::InputRequested { ref reason, .. } if reason == "elicitation")
        );
        let t = n(json!({"notification_type": "agent_needs_input", "message": "?"}));
        assert!(
            matches!(reminded(t), AgentEvent::InputRequested { ref reason, .. } if reason == "input")
        );
        let t = n(
            json!({"notification_type": "idle_prompt", "message": "Claude is waiting for your input"}),
        );
        assert_eq!(
            t.event,
            Some(AgentEvent::reminder(AgentEvent::TurnFinished))
        );
        let t = n(json!({"notification_type": "auth_success", "message": "ok"}));
        assert!(!matches!(t.event, Some(AgentEvent::Reminder { .. })));
        assert_eq!(
            t.event,
            Some(AgentEvent::Notification {
                kind: "auth_success".into(),
                message: Some("ok".into())
            })
        );
        // Older versions: no notification_type, only the message.
        let t = n(json!({"message": "Claude needs your permission to use WebFetch."}));
        assert_eq!(t.event, asks_again("WebFetch"));
        let t = n(json!({"message": "Claude is waiting for your input"}));
        assert_eq!(
            t.event,
            Some(AgentEvent::reminder(AgentEvent::TurnFinished))
        );
        let t = n(json!({}));
        assert!(matches!(t.event, Some(AgentEvent::Notification { .. })));
    }

    #[test]
    fn stop_is_ignored_inside_a_subagent() {
        let t = translated("Stop", json!({"agent_id": "a1", "agent_type": "Explore"}));
        assert_eq!(t.event, None);
        assert_eq!(t.subagent_id.as_deref(), Some("a1"));
        assert_eq!(
            event("Stop", json!({"stop_hook_active": false})),
            AgentEvent::TurnFinished
        );
    }

    #[test]
    fn stop_failure_carries_the_error() {
        for (extra, error) in [
            (json!({"error": "rate_limit"}), "rate_limit"),
            (
                json!({"error": {"type": "overloaded", "message": "m"}}),
                "overloaded",
            ),
            (json!({}), "unknown"),
        ] {
            assert_eq!(
                event("StopFailure", extra),
                AgentEvent::TurnFailed {
                    error: error.into()
                },
                "{error}"
            );
        }
    }

    #[test]
    fn subagents_are_children() {
        let t = translated(
            "SubagentStart",
            json!({"agent_id": "a1", "agent_type": "Explore"}),
        );
        assert_eq!(t.subagent_id.as_deref(), Some("a1"));
        assert_eq!(
            t.event,
            Some(AgentEvent::SubagentStarted {
                agent_id: "a1".into(),
            })
        );
        assert_eq!(
            event("SubagentStop", json!({"agent_id": "a1"})),
            AgentEvent::SubagentStopped {
                agent_id: "a1".into()
            }
        );
        assert!(matches!(
            event("SubagentStop", json!({})),
            AgentEvent::Activity { .. }
        ));
    }

    #[test]
    fn compaction_cwd_and_end() {
        assert_eq!(
            event("PreCompact", json!({"trigger": "auto"})),
            AgentEvent::Compacting
        );
        assert_eq!(event("PostCompact", json!({})), AgentEvent::CompactFinished);
        assert_eq!(
            event("CwdChanged", json!({"old_cwd": "/a", "new_cwd": "/b"})),
            AgentEvent::CwdChanged { cwd: "/b".into() }
        );
        for (reason, continues) in [
            ("clear", true),
            ("resume", true),
            ("logout", false),
            ("prompt_input_exit", false),
            ("other", false),
        ] {
            assert_eq!(
                event("SessionEnd", json!({"reason": reason})),
                AgentEvent::SessionEnded {
                    reason: reason.into(),
                    continues
                }
            );
        }
    }

    #[test]
    fn listed_and_unknown_events_are_activity() {
        for name in ACTIVITY_EVENTS {
            let t = translate(&hook(name, json!({}))).unwrap();
            assert!(t.known, "{name}");
            assert_eq!(t.event, Some(activity(name)));
        }
        let t = translate(&hook("SomethingFromTheFuture", json!({"x": [1]}))).unwrap();
        assert!(!t.known);
        assert_eq!(t.event, Some(activity("SomethingFromTheFuture")));
    }

    #[test]
    fn bad_payloads_fail_with_invalid_message() {
        for data in [
            json!("text"),
            json!([1]),
            json!(null),
            json!({"hook_event_name": "Stop"}),
            json!({"session_id": 7, "hook_event_name": "Stop"}),
            json!({"session_id": "", "hook_event_name": "Stop"}),
            json!({"session_id": ID}),
            json!({"session_id": ID, "hook_event_name": ["Stop"]}),
        ] {
            assert_eq!(
                translate(&data).unwrap_err().code,
                ErrorCode::InvalidMessage,
                "{data}"
            );
        }
    }

    #[test]
    fn ill_typed_optional_fields_are_ignored() {
        let t = translate(&hook(
            "PreToolUse",
            json!({"tool_name": 5, "tool_input": "rm -rf /tmp/x", "cwd": 3, "pid": true,
                   "tmux_pane": 9, "agent_id": {"x": 1}}),
        ))
        .unwrap();
        assert_eq!(t.cwd, None);
        assert_eq!(t.pid, None);
        assert_eq!(t.tmux_pane, None);
        assert_eq!(t.subagent_id, None);
        assert_eq!(
            t.event,
            Some(AgentEvent::ToolStarted {
                tool: "unknown".into(),
                detail: Some("rm -rf /tmp/x".into())
            })
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        atm_core::testing::arb_json(&[
            "session_id",
            "hook_event_name",
            "tool_name",
            "tool_input",
            "agent_id",
            "message",
            "questions",
        ])
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            let _ = translate(&v);
        }

        #[test]
        fn any_event_name_with_a_session_is_accepted(
            name in ".{1,80}",
            extra in arb_json(),
        ) {
            let mut data = hook(&name, json!({}));
            if let (Some(o), Value::Object(e)) = (data.as_object_mut(), extra) {
                for (k, v) in e {
                    if k != "session_id" && k != "hook_event_name" {
                        o.insert(k, v);
                    }
                }
            }
            let t = translate(&data);
            prop_assert!(t.is_ok(), "{:?}", t);
        }
    }
}
