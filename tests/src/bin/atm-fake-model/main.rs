//! A fake model server for the real-agent suite: the real agent CLIs talk to it instead of a
//! model provider, on loopback inside the test's network namespace.
//!
//! It speaks just enough of each provider's streaming API for an agent to run a turn, and its
//! replies are scripted by words in the user's last prompt, so a test drives a real agent through
//! a scenario by typing into its pane:
//!
//! - `RUN <command>` (up to the end of the line): the model calls the agent's shell tool with
//!   `<command>`; after the tool's result comes back it answers `FAKE-DONE`.
//! - `BG <command>` (up to the end of the line): like `RUN`, but Claude Code's `Bash` is asked
//!   to run it in the background (`run_in_background`), so the turn ends while it still runs.
//! - `AGENT <prompt>` (up to the end of the line): Claude Code's `Agent` tool is called to run a
//!   subagent with `<prompt>` as its task (in the background, Claude's default).
//! - `ASK <question>` (up to the end of the line): Claude Code's `AskUserQuestion` is called
//!   with `<question>` and two choices, `Postgres` and `SQLite`; the answer that comes back is
//!   logged (`result=`).
//! - `NAP`: the model takes 5 s to answer `FAKE-NAP` (a subagent that works a while).
//! - `SLOW`: the model takes 60 s to answer (streaming keep-alives), so the agent stays working
//!   long enough to be interrupted.
//! - anything else: the model answers `FAKE-REPLY` at once.
//!
//! Usage: `atm-fake-model --port-file PATH [--listen 127.0.0.1:0]`. It writes the bound address
//! to `PATH` once it is listening, and logs one line per request to stderr.
//!
//! Providers: Anthropic Messages (`POST /v1/messages`, used by Claude Code, and by pi through a
//! custom provider with `"api": "anthropic-messages"`) and OpenAI Responses
//! (`POST /v1/responses`, used by Codex CLI; see [`openai`]), OpenAI Chat Completions
//! (`POST /v1/chat/completions`, used by opencode through a custom provider; see [`chat`]), and
//! the Gemini API (`POST /v1beta/models/<model>:streamGenerateContent`, used by Gemini CLI; see
//! [`gemini`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test tool

mod chat;
mod gemini;
mod openai;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
}

/// One request as every API's handler reads it: its number, the tools offered, the user's
/// last words, whether the conversation carries a tool's result, and the scripted reply.
pub struct Request {
    pub id: u64,
    pub tools: Vec<Value>,
    pub text: String,
    pub tool_result: bool,
    pub reply: Reply,
}

impl Request {
    /// Counts the request and reads `body[conversation]` (the API's list of messages) with that
    /// API's `last_user_text`.
    pub fn read(
        counters: &Counters,
        body: &Value,
        conversation: &str,
        last_user_text: fn(&[Value]) -> (String, bool),
    ) -> Self {
        let id = counters.requests.fetch_add(1, Ordering::Relaxed);
        let messages = body[conversation].as_array().cloned().unwrap_or_default();
        let tools = body["tools"].as_array().cloned().unwrap_or_default();
        let (text, tool_result) = last_user_text(&messages);
        let reply = script(&text, tool_result);
        Self {
            id,
            tools,
            text,
            tool_result,
            reply,
        }
    }

    /// The start of the user's words, for the request's log line.
    pub fn text_preview(&self) -> String {
        self.text.chars().take(120).collect()
    }
}

/// What the scripted model does for one request.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Text(&'static str),
    Slow,
    Shell(String),
    /// A shell command the agent should run in the background (Claude's `run_in_background`);
    /// agents without that option run it like [`Reply::Shell`].
    BackgroundShell(String),
    /// A subagent with this task (Claude's `Agent` tool).
    Subagent(String),
    /// An answer after 5 s.
    Nap,
    /// A question for the user (Claude's `AskUserQuestion`).
    Ask(String),
}

/// The user's own words in an Anthropic `messages` list: the text blocks of the last user
/// message that are not Claude Code's injected `<system-reminder>`s, and whether that message
/// carries a tool result.
fn last_user_text(messages: &[Value]) -> (String, bool) {
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return (String::new(), false);
    };
    match &last["content"] {
        Value::String(s) => (s.clone(), false),
        Value::Array(blocks) => {
            let tool_result = blocks.iter().any(|b| b["type"] == "tool_result");
            let text = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .filter(|t| !t.trim_start().starts_with("<system-reminder>"))
                .collect::<Vec<_>>()
                .join("\n");
            (text, tool_result)
        }
        _ => (String::new(), false),
    }
}

/// The text of the tool results in the last user message (what the agent's tool answered).
fn tool_result_text(messages: &[Value]) -> String {
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    let Some(blocks) = last["content"].as_array() else {
        return String::new();
    };
    blocks
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn script(text: &str, tool_result: bool) -> Reply {
    // A message that carries a tool's result and no words of the user's continues the turn; one
    // with words (typed after a declined tool, say) is a new request.
    if tool_result && text.trim().is_empty() {
        return Reply::Text("FAKE-DONE");
    }
    if let Some(task) = rest_of_line(text, "AGENT ") {
        return Reply::Subagent(task);
    }
    if let Some(q) = rest_of_line(text, "ASK ") {
        return Reply::Ask(q);
    }
    if text.contains("NAP") {
        return Reply::Nap;
    }
    if let Some(cmd) = rest_of_line(text, "BG ") {
        return Reply::BackgroundShell(cmd);
    }
    if let Some(cmd) = rest_of_line(text, "RUN ") {
        return Reply::Shell(cmd);
    }
    if text.contains("SLOW") {
        return Reply::Slow;
    }
    Reply::Text("FAKE-REPLY")
}

/// What follows the first `word` in `text` up to the end of its line, trimmed: a command's
/// argument (`RUN touch x`).
fn rest_of_line(text: &str, word: &str) -> Option<String> {
    let pos = text.find(word)?;
    let rest = text[pos + word.len()..].lines().next().unwrap_or("");
    Some(rest.trim().to_owned())
}

fn event(name: &str, data: Value) -> SseItem {
    Ok(Event::default().event(name).data(data.to_string()))
}

/// One server-sent event, as every API's stream here is built of.
type SseItem = Result<Event, Infallible>;

/// A model's streamed reply, whatever the API: `first` at once, `rest` after `delay` (a slow
/// model works for a while between the two), with keep-alives every second meanwhile.
fn streamed_reply(first: Vec<SseItem>, rest: Vec<SseItem>, delay: Duration) -> Response {
    let later = stream::once(async move {
        tokio::time::sleep(delay).await;
        stream::iter(rest)
    })
    .flatten();
    Sse::new(stream::iter(first).chain(later))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(1)))
        .into_response()
}

/// The text of a message's `content`: the string, or the `text` of its parts of type
/// `part_type` (`text`, `input_text`), one a line.
fn content_text(content: &Value, part_type: &str) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == part_type)
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The Anthropic stream of one assistant message, as the events sent at once and the ones sent
/// after the model's delay: `blocks` are (content_block_start's block, its deltas).
fn anthropic_events(
    id: u64,
    model: &str,
    blocks: Vec<(Value, Vec<Value>)>,
    stop_reason: &str,
) -> (Vec<SseItem>, Vec<SseItem>) {
    let first = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_fake_{id}"), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 1200, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    )];
    let mut rest = Vec::new();
    for (index, (block, deltas)) in blocks.into_iter().enumerate() {
        rest.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        for delta in deltas {
            rest.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        rest.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    rest.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": 25}}),
    ));
    rest.push(event("message_stop", json!({"type": "message_stop"})));
    (first, rest)
}

async fn anthropic_messages(
    State(counters): State<&'static Counters>,
    Json(body): Json<Value>,
) -> Response {
    let id = counters.requests.fetch_add(1, Ordering::Relaxed);
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let (text, tool_result) = last_user_text(&messages);
    let reply = script(&text, tool_result);
    let has_tool = |name: &str| {
        body["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == name))
    };
    // Claude Code's shell tool is `Bash`, pi's is `bash` (whose input has no `description`).
    let shell_tool = body["tools"].as_array().and_then(|tools| {
        tools
            .iter()
            .filter_map(|t| t["name"].as_str())
            .find(|n| *n == "Bash" || *n == "bash")
            .map(str::to_owned)
    });
    eprintln!(
        "request {id}: model={model} tool_result={tool_result} reply={reply:?} text={:?} result={:?} tools={:?}",
        text.chars().take(120).collect::<String>(),
        tool_result_text(&messages)
            .chars()
            .take(400)
            .collect::<String>(),
        body["tools"].as_array().map(|tools| tools
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect::<Vec<_>>())
    );
    let text_block = |s: &str| {
        (
            json!({"type": "text", "text": ""}),
            vec![json!({"type": "text_delta", "text": s})],
        )
    };
    let background = matches!(reply, Reply::BackgroundShell(_));
    let (blocks, stop, delay) = match reply {
        Reply::Shell(cmd) | Reply::BackgroundShell(cmd) if shell_tool.is_some() => {
            let tool = shell_tool.unwrap_or_default();
            let input = match (tool.as_str(), background) {
                ("Bash", true) => {
                    json!({"command": cmd, "description": "Run the scripted command in the background",
                           "run_in_background": true})
                }
                ("Bash", false) => {
                    json!({"command": cmd, "description": "Run the scripted command"})
                }
                _ => json!({"command": cmd}),
            };
            (
                vec![(
                    json!({"type": "tool_use", "id": format!("toolu_fake_{id}"), "name": tool, "input": {}}),
                    vec![json!({"type": "input_json_delta", "partial_json": input.to_string()})],
                )],
                "tool_use",
                Duration::ZERO,
            )
        }
        Reply::Subagent(task) if has_tool("Agent") => (
            vec![(
                json!({"type": "tool_use", "id": format!("toolu_fake_{id}"), "name": "Agent", "input": {}}),
                vec![json!({"type": "input_json_delta", "partial_json": json!({
                    "description": "Scripted subagent", "prompt": task,
                    "subagent_type": "general-purpose", "run_in_background": true}).to_string()})],
            )],
            "tool_use",
            Duration::ZERO,
        ),
        Reply::Ask(question) if has_tool("AskUserQuestion") => (
            vec![(
                json!({"type": "tool_use", "id": format!("toolu_fake_{id}"), "name": "AskUserQuestion", "input": {}}),
                vec![
                    json!({"type": "input_json_delta", "partial_json": json!({"questions": [{
                    "question": question, "header": "Database", "multiSelect": false,
                    "options": [{"label": "Postgres", "description": "A database server"},
                                {"label": "SQLite", "description": "One file"}]}]}).to_string()}),
                ],
            )],
            "tool_use",
            Duration::ZERO,
        ),
        Reply::Ask(_) => (
            vec![text_block("FAKE-NO-ASK-TOOL")],
            "end_turn",
            Duration::ZERO,
        ),
        Reply::Subagent(_) => (
            vec![text_block("FAKE-NO-AGENT-TOOL")],
            "end_turn",
            Duration::ZERO,
        ),
        Reply::Nap => (
            vec![text_block("FAKE-NAP")],
            "end_turn",
            Duration::from_secs(5),
        ),
        Reply::Shell(_) | Reply::BackgroundShell(_) => (
            vec![text_block("FAKE-NO-SHELL-TOOL")],
            "end_turn",
            Duration::ZERO,
        ),
        Reply::Slow => (
            vec![text_block("FAKE-SLOW-REPLY")],
            "end_turn",
            Duration::from_secs(60),
        ),
        Reply::Text(t) => (vec![text_block(t)], "end_turn", Duration::ZERO),
    };
    let (first, rest) = anthropic_events(id, &model, blocks, stop);
    streamed_reply(first, rest, delay)
}

async fn count_tokens() -> Json<Value> {
    Json(json!({"input_tokens": 1200}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut port_file = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .expect("--listen ADDR")
                    .parse()
                    .expect("an address")
            }
            "--port-file" => port_file = Some(args.next().expect("--port-file PATH")),
            other => panic!(
                "unknown argument {other:?}; usage: atm-fake-model --port-file PATH [--listen ADDR]"
            ),
        }
    }
    let counters: &'static Counters = Box::leak(Box::default());
    let app = Router::new()
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/responses", post(openai::responses))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1beta/models/{model_method}", post(gemini::models_call))
        .route("/v1beta/models", get(gemini::models))
        .fallback(|req: axum::extract::Request| async move {
            eprintln!("unhandled: {} {}", req.method(), req.uri());
            axum::http::StatusCode::NOT_FOUND
        })
        .with_state(counters);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    if let Some(p) = port_file {
        let tmp = format!("{p}.tmp");
        std::fs::write(&tmp, addr.to_string()).expect("write port file");
        std::fs::rename(&tmp, &p).expect("rename port file");
    }
    eprintln!("atm-fake-model listening on {addr}");
    axum::serve(listener, app).await.expect("serve");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_script_the_reply() {
        assert_eq!(
            script("please RUN touch /tmp/x\nthanks", false),
            Reply::Shell("touch /tmp/x".into())
        );
        assert_eq!(script("", true), Reply::Text("FAKE-DONE"));
        assert_eq!(
            script("please BG sleep 3", false),
            Reply::BackgroundShell("sleep 3".into())
        );
        assert_eq!(
            script("be SLOW", true),
            Reply::Slow,
            "words after a tool result"
        );
        assert_eq!(script("be SLOW", false), Reply::Slow);
        assert_eq!(script("hello", false), Reply::Text("FAKE-REPLY"));
        assert_eq!(
            script("start AGENT take a NAP", false),
            Reply::Subagent("take a NAP".into())
        );
        assert_eq!(script("take a NAP", false), Reply::Nap);
    }

    #[test]
    fn system_reminders_are_not_the_users_words() {
        let messages = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>RUN rm -rf /</system-reminder>"},
            {"type": "text", "text": "hello"}]})];
        assert_eq!(last_user_text(&messages), ("hello".into(), false));
    }
}
