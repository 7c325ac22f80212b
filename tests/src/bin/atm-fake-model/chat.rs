//! OpenAI Chat Completions (`POST /v1/chat/completions`, streaming SSE), used by opencode
//! through a custom provider (`"npm": "@ai-sdk/openai-compatible"` with `options.baseURL`).
//!
//! opencode's request carries the conversation as `messages` (`system`, `user` with a string
//! or `text` parts, `assistant` with `tool_calls`, `tool` results) and its tools as `tools`
//! (`{"type": "function", "function": {"name": "bash", ...}}`). The reply is the chunk stream
//! the AI SDK parses: a `delta` with the text or one tool call, a last chunk with the
//! `finish_reason` and `usage`, then `[DONE]`. opencode's side requests (the session title) have
//! no tools and get a plain text answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::{Counters, Reply, Request, SseItem, content_text, streamed_reply};

/// The user's own words in a Chat Completions `messages` list, and whether the conversation's
/// last message is a tool's result (the model's turn goes on).
pub fn last_user_text(messages: &[Value]) -> (String, bool) {
    if messages.last().is_some_and(|m| m["role"] == "tool") {
        return (String::new(), true);
    }
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return (String::new(), false);
    };
    (content_text(&last["content"], "text"), false)
}

/// The name of the shell tool among `tools` (`bash` in opencode).
fn shell_tool(tools: &[Value]) -> Option<String> {
    tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .find(|n| n.eq_ignore_ascii_case("bash") || *n == "shell")
        .map(str::to_owned)
}

fn chunk(id: u64, delta: Value, finish: Option<&str>) -> Value {
    json!({"id": format!("chatcmpl-fake-{id}"), "object": "chat.completion.chunk",
           "created": 0, "model": "fake-chat",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn sse(data: &Value) -> SseItem {
    Ok(Event::default().data(data.to_string()))
}

pub async fn completions(
    State(counters): State<&'static Counters>,
    Json(body): Json<Value>,
) -> Response {
    let request = Request::read(counters, &body, "messages", last_user_text);
    let shell = shell_tool(&request.tools);
    eprintln!(
        "request {}: chat model={} tool_result={} reply={:?} shell={shell:?} tools={} text={:?}",
        request.id,
        body["model"],
        request.tool_result,
        request.reply,
        request.tools.len(),
        request.text_preview()
    );
    let Request {
        id, tools, reply, ..
    } = request;
    let text_delta = |t: &str| json!({"role": "assistant", "content": t});
    let (delta, finish, delay) = match (reply, shell) {
        // A request without tools is one of opencode's side requests (the session's title).
        _ if tools.is_empty() => (text_delta("FAKE-TITLE"), "stop", Duration::ZERO),
        (Reply::Shell(cmd) | Reply::BackgroundShell(cmd), Some(tool)) => {
            let args = json!({"command": cmd, "description": "Run the scripted command"});
            (
                json!({"role": "assistant", "tool_calls": [{"index": 0,
                    "id": format!("call_fake_{id}"), "type": "function",
                    "function": {"name": tool, "arguments": args.to_string()}}]}),
                "tool_calls",
                Duration::ZERO,
            )
        }
        (Reply::Shell(_) | Reply::BackgroundShell(_), None) => {
            (text_delta("FAKE-NO-SHELL-TOOL"), "stop", Duration::ZERO)
        }
        (Reply::Slow, _) => (
            text_delta("FAKE-SLOW-REPLY"),
            "stop",
            Duration::from_secs(60),
        ),
        (Reply::Nap, _) => (text_delta("FAKE-NAP"), "stop", Duration::from_secs(5)),
        (Reply::Subagent(_), _) => (text_delta("FAKE-NO-AGENT-TOOL"), "stop", Duration::ZERO),
        (Reply::Ask(_), _) => (text_delta("FAKE-NO-ASK-TOOL"), "stop", Duration::ZERO),
        (Reply::Text(t), _) => (text_delta(t), "stop", Duration::ZERO),
    };
    let first = vec![sse(&chunk(
        id,
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    let mut last = chunk(id, json!({}), Some(finish));
    last["usage"] = json!({"prompt_tokens": 1200, "completion_tokens": 25, "total_tokens": 1225});
    let rest = vec![
        sse(&chunk(id, delta, None)),
        sse(&last),
        Ok(Event::default().data("[DONE]")),
    ];
    streamed_reply(first, rest, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_words_and_tool_results() {
        let messages = vec![
            json!({"role": "system", "content": "RUN rm -rf /"}),
            json!({"role": "user", "content": [{"type": "text", "text": "please RUN touch x"}]}),
        ];
        assert_eq!(
            last_user_text(&messages),
            ("please RUN touch x".into(), false)
        );
        let mut after = messages.clone();
        after.push(json!({"role": "assistant", "tool_calls": []}));
        after.push(json!({"role": "tool", "tool_call_id": "c", "content": "ok"}));
        assert_eq!(last_user_text(&after), (String::new(), true));
        let tools = [json!({"type": "function", "function": {"name": "bash"}})];
        assert_eq!(shell_tool(&tools).as_deref(), Some("bash"));
    }
}
