//! The protocol-v1 line atm-hook forwards: the agent's JSON without the fields no adapter reads
//! ([`STRIPPED_FIELDS`]), plus the agent's PID and tmux pane, within the daemon's line limit.
//! For a hook Codex's background daemon runs, those are its TUI's ([`super::codex_daemon`]).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::MAX_INPUT;
use super::agent_process::{AgentKind, find_agent_pid};
use super::codex_daemon::{self, CodexProcess};

/// Event fields removed before forwarding: none of the adapters reads them (checked against
/// claude-hooks, codex and gemini) and each can be megabytes. `tool_response` keeps its `error`
/// (Gemini's failed-tool signal) and `llm_request` its `model` (Gemini's `BeforeModel` is the
/// only hook that names the model); the rest go whole.
pub const STRIPPED_FIELDS: &[&str] = &[
    "tool_response",
    "prompt_response",
    "llm_request",
    "llm_response",
    "input-messages",
    "last-assistant-message",
];

/// What the hook waits for after sending its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Nothing but the daemon's close (every hook event).
    None,
    /// The session's view (`"want_reply": true`, the status line's default line).
    Session,
    /// A decision on the request the event opens (`"await_decision": true`,
    /// [`super::decision`]).
    Decision,
}

/// Builds the protocol-v1 line for `input` (a JSON object), without [`STRIPPED_FIELDS`] and with
/// `pid` and `tmux_pane` added. `None` when the input is not a JSON object or the line would
/// still exceed the daemon's limit.
pub fn event_line(kind: &str, input: &[u8], agent: Option<&str>, reply: Reply) -> Option<Vec<u8>> {
    let data: Map<String, Value> = serde_json::from_slice(input).ok()?;
    event_line_of(kind, data, agent, reply)
}

/// [`event_line`] for an event already parsed.
pub fn event_line_of(
    kind: &str,
    mut data: Map<String, Value>,
    agent: Option<&str>,
    reply: Reply,
) -> Option<Vec<u8>> {
    strip_large_fields(&mut data);
    let kind_of_agent = AgentKind::from_name(agent);
    let proc_root = Path::new("/proc");
    let pid = find_agent_pid(proc_root, parent_pid()?, kind_of_agent);
    let own_pane = || std::env::var_os("TMUX_PANE").and_then(|p| p.into_string().ok());
    let (pid, pane) = if kind_of_agent == AgentKind::Codex {
        let cwd = data.get("cwd").and_then(Value::as_str).map(PathBuf::from);
        let prompt = data.get("prompt").and_then(Value::as_str);
        match codex_daemon::resolve_with_screens(proc_root, pid, cwd.as_deref(), prompt) {
            CodexProcess::Own => (Some(pid), own_pane()),
            CodexProcess::Tui { pid, tmux_pane } => (Some(pid), tmux_pane),
            // The daemon's PID and pane are not the session's.
            CodexProcess::Unknown => (None, None),
        }
    } else {
        (Some(pid), own_pane())
    };
    match pid {
        Some(pid) => data.insert("pid".to_owned(), Value::from(pid)),
        None => data.remove("pid"),
    };
    match pane {
        Some(pane) => data.insert("tmux_pane".to_owned(), Value::String(pane)),
        None => data.remove("tmux_pane"),
    };
    let mut fields = Map::new();
    if let Some(agent) = agent {
        fields.insert("agent".to_owned(), Value::String(agent.to_owned()));
    }
    match reply {
        Reply::None => {}
        Reply::Session => {
            fields.insert("want_reply".to_owned(), Value::Bool(true));
        }
        Reply::Decision => {
            fields.insert("await_decision".to_owned(), Value::Bool(true));
        }
    }
    fields.insert("data".to_owned(), Value::Object(data));
    let line = atm_core::protocol::client_line(kind, fields);
    (line.len() <= MAX_INPUT).then_some(line)
}

/// How much of the first of Codex's `input-messages` is kept: enough for the codex adapter to
/// tell Codex's own title-generation thread (its one message is Codex's title instruction)
/// from a user's turn.
pub const KEPT_INPUT_CHARS: usize = 120;

/// Removes [`STRIPPED_FIELDS`] from an event, keeping `tool_response.error` when it is set,
/// `llm_request.model` and the start of the first `input-messages` entry.
pub fn strip_large_fields(data: &mut Map<String, Value>) {
    for field in STRIPPED_FIELDS {
        let Some(value) = data.remove(*field) else {
            continue;
        };
        if *field == "input-messages"
            && let Some(first) = value.get(0).and_then(Value::as_str)
        {
            let kept: String = first.chars().take(KEPT_INPUT_CHARS).collect();
            data.insert((*field).to_owned(), Value::Array(vec![Value::String(kept)]));
        }
        if *field == "llm_request"
            && let Some(model) = value.get("model").filter(|m| m.is_string())
        {
            let mut kept = Map::new();
            kept.insert("model".to_owned(), model.clone());
            data.insert((*field).to_owned(), Value::Object(kept));
            continue;
        }
        if *field == "tool_response"
            && let Value::Object(mut response) = value
            && let Some(error) = response.remove("error").filter(|e| !e.is_null())
        {
            let mut kept = Map::new();
            kept.insert("error".to_owned(), error);
            data.insert((*field).to_owned(), Value::Object(kept));
        }
    }
}

fn parent_pid() -> Option<u32> {
    rustix::process::getppid().and_then(|p| u32::try_from(p.as_raw_nonzero().get()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_large_fields_keeping_the_tool_error() {
        let mut data = json!({
            "session_id": "s",
            "tool_input": {"command": "ls"},
            "tool_response": {"llmContent": "x".repeat(100), "error": "ENOENT"},
            "prompt_response": "long answer",
            "llm_request": {"messages": []},
            "llm_response": {"candidates": []},
            "input-messages": ["a".repeat(1000), "more"],
            "last-assistant-message": "b"
        });
        strip_large_fields(data.as_object_mut().unwrap());
        assert_eq!(
            data,
            json!({"session_id": "s", "tool_input": {"command": "ls"},
                "tool_response": {"error": "ENOENT"},
                "input-messages": ["a".repeat(KEPT_INPUT_CHARS)]})
        );
        for messages in [json!([]), json!([3]), json!("text")] {
            let mut data = json!({"session_id": "s", "input-messages": messages});
            strip_large_fields(data.as_object_mut().unwrap());
            assert_eq!(data, json!({"session_id": "s"}));
        }
        // Gemini's BeforeModel: the model stays, the conversation goes.
        let mut data = json!({"session_id": "s", "llm_request": {"model": "gemini-2.5-flash",
            "messages": [{"role": "user", "content": "x".repeat(1000)}], "config": {}}});
        strip_large_fields(data.as_object_mut().unwrap());
        assert_eq!(
            data,
            json!({"session_id": "s", "llm_request": {"model": "gemini-2.5-flash"}})
        );
        for response in [json!({"error": null, "x": 1}), json!("text"), json!({})] {
            let mut data = json!({"session_id": "s", "tool_response": response});
            strip_large_fields(data.as_object_mut().unwrap());
            assert_eq!(data, json!({"session_id": "s"}));
        }
    }

    #[test]
    fn event_line_adds_pid_and_refuses_non_objects() {
        let line = event_line(
            "hook_event",
            br#"{"session_id":"s","pid":"bogus"}"#,
            Some("codex"),
            Reply::None,
        )
        .unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "hook_event");
        assert_eq!(v["agent"], "codex");
        assert_eq!(v["protocol_version"], json!({"major":1,"minor":1}));
        assert!(v["data"]["pid"].as_u64().unwrap() > 0);
        assert_eq!(v["data"]["session_id"], "s");
        assert!(v.get("want_reply").is_none());
        for bad in [&b""[..], b"[1]", b"\"s\"", b"{", b"\xff\xfe", b"null"] {
            assert!(
                event_line("hook_event", bad, None, Reply::None).is_none(),
                "{bad:?}"
            );
        }
    }
}
