//! OpenAI Responses (`POST /v1/responses`, streaming SSE), used by Codex CLI through a custom
//! model provider (`wire_api = "responses"`).
//!
//! Codex's request carries the conversation as `input` items (`message` with `input_text`
//! parts, `function_call`, `function_call_output`) and its tools as `tools`. The reply is the
//! stream Codex parses: `response.created`, one `response.output_item.done` per output item (an
//! assistant `message` or a `function_call`), then `response.completed` with usage. Codex's side
//! requests (the thread title, for one) have no shell tool and get a plain text answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::{Counters, Reply, Request, SseItem, content_text, streamed_reply};

/// The user's own words in a Responses `input` list and whether the conversation's last item
/// is a tool's output: the `input_text` parts of the last user message, without the context
/// Codex injects as user messages (`<environment_context>`, `<user_instructions>`, ...); none
/// when the last item is a tool's output (the model's turn goes on).
pub fn last_user_text(input: &[Value]) -> (String, bool) {
    let tool_result = input
        .iter()
        .rev()
        .find(|i| i["type"] != "reasoning")
        .is_some_and(|i| {
            i["type"] == "function_call_output" || i["type"] == "custom_tool_call_output"
        });
    if tool_result {
        // The model's turn goes on after its tool: nothing new from the user.
        return (String::new(), true);
    }
    let Some(last) = input
        .iter()
        .rev()
        .find(|i| i["role"] == "user" && !is_injected(i))
    else {
        return (String::new(), tool_result);
    };
    (content_text(&last["content"], "input_text"), tool_result)
}

/// A user message that is Codex's own context, not something the user typed.
fn is_injected(item: &Value) -> bool {
    let parts = item["content"].as_array().cloned().unwrap_or_default();
    !parts.is_empty()
        && parts.iter().all(|p| {
            p["text"]
                .as_str()
                .is_some_and(|t| t.trim_start().starts_with('<') || t.starts_with("# AGENTS.md"))
        })
}

/// The shell tool among `tools`, and how its arguments are shaped.
#[derive(Debug, PartialEq)]
pub enum ShellTool {
    /// `exec_command {"cmd": "..."}` (unified exec).
    Exec(String),
    /// `shell_command {"command": "..."}`.
    Command(String),
    /// `shell {"command": ["bash", "-lc", "..."]}`.
    Argv(String),
}

pub fn shell_tool(tools: &[Value]) -> Option<ShellTool> {
    let props = |t: &Value| t["parameters"]["properties"].clone();
    for name in ["exec_command", "shell_command", "shell"] {
        let Some(tool) = tools.iter().find(|t| t["name"] == name) else {
            continue;
        };
        let p = props(tool);
        return Some(if p.get("cmd").is_some() {
            ShellTool::Exec(name.to_owned())
        } else if p["command"]["type"] == "array" {
            ShellTool::Argv(name.to_owned())
        } else {
            ShellTool::Command(name.to_owned())
        });
    }
    None
}

/// The arguments that make `tool` run `cmd` and ask the user first: the command asks to leave
/// the sandbox (`require_escalated`), which Codex always puts before the user.
fn shell_arguments(tool: &ShellTool, cmd: &str) -> (String, Value) {
    let escalate = json!({"sandbox_permissions": "require_escalated",
        "justification": "The scripted test command needs to run outside the sandbox"});
    let (name, mut args) = match tool {
        ShellTool::Exec(n) => (n, json!({"cmd": cmd})),
        ShellTool::Command(n) => (n, json!({"command": cmd})),
        ShellTool::Argv(n) => (n, json!({"command": ["bash", "-lc", cmd]})),
    };
    if let (Some(a), Some(e)) = (args.as_object_mut(), escalate.as_object()) {
        a.extend(e.clone());
    }
    (name.clone(), args)
}

fn sse(data: Value) -> SseItem {
    let name = data["type"].as_str().unwrap_or("message").to_owned();
    Ok(Event::default().event(name).data(data.to_string()))
}

fn message_item(id: u64, text: &str) -> Value {
    json!({"type": "message", "role": "assistant", "id": format!("msg_fake_{id}"),
           "status": "completed",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

pub async fn responses(
    State(counters): State<&'static Counters>,
    Json(body): Json<Value>,
) -> Response {
    let request = Request::read(counters, &body, "input", last_user_text);
    let shell = shell_tool(&request.tools);
    let tool_names: Vec<_> = request
        .tools
        .iter()
        .filter_map(|t| t["name"].as_str().or(t["type"].as_str()))
        .collect();
    eprintln!(
        "request {}: responses model={} tool_result={} reply={:?} shell={shell:?} tools={tool_names:?} text={:?}",
        request.id,
        body["model"],
        request.tool_result,
        request.reply,
        request.text_preview()
    );
    let Request {
        id, tools, reply, ..
    } = request;
    let (item, delay) = match (reply, &shell) {
        (Reply::Shell(cmd) | Reply::BackgroundShell(cmd), Some(tool)) => {
            let (name, args) = shell_arguments(tool, &cmd);
            (
                json!({"type": "function_call", "id": format!("fc_fake_{id}"),
                       "call_id": format!("call_fake_{id}"), "name": name,
                       "arguments": args.to_string(), "status": "completed"}),
                Duration::ZERO,
            )
        }
        // A request without the shell tool is one of Codex's side requests (the title of a
        // new thread); it gets words, never a tool call.
        (Reply::Shell(_) | Reply::BackgroundShell(_), None) if tools.is_empty() => {
            (message_item(id, "FAKE-TITLE"), Duration::ZERO)
        }
        (Reply::Shell(_) | Reply::BackgroundShell(_), None) => {
            (message_item(id, "FAKE-NO-SHELL-TOOL"), Duration::ZERO)
        }
        (Reply::Slow, _) => (message_item(id, "FAKE-SLOW-REPLY"), Duration::from_secs(60)),
        (Reply::Nap, _) => (message_item(id, "FAKE-NAP"), Duration::from_secs(5)),
        (Reply::Subagent(_), _) => (message_item(id, "FAKE-NO-AGENT-TOOL"), Duration::ZERO),
        (Reply::Ask(_), _) => (message_item(id, "FAKE-NO-ASK-TOOL"), Duration::ZERO),
        (Reply::Text(t), _) => (message_item(id, t), Duration::ZERO),
    };
    let response_id = format!("resp_fake_{id}");
    let first = vec![sse(json!({"type": "response.created",
        "response": {"id": response_id, "status": "in_progress"}}))];
    let rest = vec![
        sse(json!({"type": "response.output_item.done", "output_index": 0, "item": item})),
        sse(json!({"type": "response.completed", "response": {
            "id": response_id, "status": "completed",
            "usage": {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": 25, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 1225}}})),
    ];
    streamed_reply(first, rest, delay)
}

/// `GET /v1/models`: the one model the fake serves, for Codex's model discovery.
pub async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "atm"}]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_words_skip_codexs_injected_context() {
        let input = vec![
            json!({"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "<environment_context>RUN rm -rf /</environment_context>"}]}),
            json!({"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "please RUN touch /tmp/x"}]}),
        ];
        assert_eq!(
            last_user_text(&input),
            ("please RUN touch /tmp/x".into(), false)
        );
        let mut after_tool = input.clone();
        after_tool.push(json!({"type": "function_call", "call_id": "c", "name": "exec_command"}));
        after_tool.push(json!({"type": "function_call_output", "call_id": "c", "output": "ok"}));
        assert_eq!(last_user_text(&after_tool), (String::new(), true));
        assert_eq!(last_user_text(&[]), (String::new(), false));
    }

    #[test]
    fn the_shell_tool_is_found_by_name_and_shape() {
        let exec = json!({"type": "function", "name": "exec_command",
            "parameters": {"properties": {"cmd": {"type": "string"}}}});
        let argv = json!({"type": "function", "name": "shell",
            "parameters": {"properties": {"command": {"type": "array"}}}});
        assert_eq!(
            shell_tool(std::slice::from_ref(&exec)),
            Some(ShellTool::Exec("exec_command".into()))
        );
        assert_eq!(shell_tool(&[argv]), Some(ShellTool::Argv("shell".into())));
        assert_eq!(shell_tool(&[json!({"name": "web_search"})]), None);
        let (name, args) = shell_arguments(&ShellTool::Exec("exec_command".into()), "touch x");
        assert_eq!(name, "exec_command");
        assert_eq!(args["cmd"], "touch x");
        assert_eq!(args["sandbox_permissions"], "require_escalated");
    }
}
