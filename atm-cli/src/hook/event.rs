//! The protocol-v1 line atm-hook forwards: the agent's JSON without the fields no adapter reads
//! ([`STRIPPED_FIELDS`]), plus the agent's PID and tmux pane, within the daemon's line limit.

use std::path::Path;

use serde_json::{Map, Value};

use super::MAX_INPUT;
use super::agent_process::{AgentKind, find_agent_pid};

/// Event fields removed before forwarding: none of the adapters reads them (checked against
/// claude-hooks, codex and gemini) and each can be megabytes. `tool_response` keeps its `error`
/// (Gemini's failed-tool signal); the rest go whole.
pub const STRIPPED_FIELDS: &[&str] = &[
    "tool_response",
    "prompt_response",
    "llm_request",
    "llm_response",
    "input-messages",
    "last-assistant-message",
];

/// Builds the protocol-v1 line for `input` (a JSON object), without [`STRIPPED_FIELDS`] and with
/// `pid` and `tmux_pane` added. `None` when the input is not a JSON object or the line would
/// still exceed the daemon's limit.
pub fn event_line(
    kind: &str,
    input: &[u8],
    agent: Option<&str>,
    want_reply: bool,
) -> Option<Vec<u8>> {
    let mut data: Map<String, Value> = serde_json::from_slice(input).ok()?;
    strip_large_fields(&mut data);
    let kind_of_agent = AgentKind::from_name(agent);
    let pid = find_agent_pid(Path::new("/proc"), parent_pid()?, kind_of_agent);
    data.insert("pid".to_owned(), Value::from(pid));
    if let Some(pane) = std::env::var_os("TMUX_PANE").and_then(|p| p.into_string().ok()) {
        data.insert("tmux_pane".to_owned(), Value::String(pane));
    }
    let mut fields = Map::new();
    if let Some(agent) = agent {
        fields.insert("agent".to_owned(), Value::String(agent.to_owned()));
    }
    if want_reply {
        fields.insert("want_reply".to_owned(), Value::Bool(true));
    }
    fields.insert("data".to_owned(), Value::Object(data));
    let line = atm_core::protocol::client_line(kind, fields);
    (line.len() <= MAX_INPUT).then_some(line)
}

/// Removes [`STRIPPED_FIELDS`] from an event, keeping `tool_response.error` when it is set.
pub fn strip_large_fields(data: &mut Map<String, Value>) {
    for field in STRIPPED_FIELDS {
        let Some(value) = data.remove(*field) else {
            continue;
        };
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
            "input-messages": ["a"],
            "last-assistant-message": "b"
        });
        strip_large_fields(data.as_object_mut().unwrap());
        assert_eq!(
            data,
            json!({"session_id": "s", "tool_input": {"command": "ls"},
                "tool_response": {"error": "ENOENT"}})
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
            false,
        )
        .unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "hook_event");
        assert_eq!(v["agent"], "codex");
        assert_eq!(v["protocol_version"], json!({"major":1,"minor":0}));
        assert!(v["data"]["pid"].as_u64().unwrap() > 0);
        assert_eq!(v["data"]["session_id"], "s");
        assert!(v.get("want_reply").is_none());
        for bad in [&b""[..], b"[1]", b"\"s\"", b"{", b"\xff\xfe", b"null"] {
            assert!(
                event_line("hook_event", bad, None, false).is_none(),
                "{bad:?}"
            );
        }
    }
}
