//! The Gemini API (`POST /v1beta/models/<model>:streamGenerateContent?alt=sse`, and
//! `:generateContent` / `:countTokens`), used by Gemini CLI when `GOOGLE_GEMINI_BASE_URL` points
//! at the fake (Gemini CLI 0.61 then picks its "gateway" auth and sends `GEMINI_API_KEY`, if
//! any, as `x-goog-api-key`).
//!
//! The request carries the conversation as `contents` (`role` `user`/`model`, `parts` with
//! `text`, `functionCall`, `functionResponse`) and the tools as `tools[].functionDeclarations`.
//! The reply is a stream of `GenerateContentResponse` chunks (`data: {...}` lines): the
//! model's parts, then `finishReason` `STOP` with `usageMetadata`. Gemini CLI's side requests
//! (routing, "next speaker" checks, loop detection) come as `generateContent` without tools
//! and get a plain, well-formed answer.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

use crate::{Counters, Reply, Request};

/// The model name Gemini CLI is told to use (`--model` / settings); the fake answers any.
pub const MODEL: &str = "gemini-2.5-flash";

/// Gemini CLI's shell tool.
pub const SHELL_TOOL: &str = "run_shell_command";

/// The user's own words in `contents` and whether the last turn is a tool's result: the last
/// text part of the last `user` content. Gemini CLI puts its session context
/// (`<session_context>`) in a text part of its own, and after a cancelled turn it merges the
/// cancelled prompt and the next one into one content, the newest last.
pub fn last_user_text(contents: &[Value]) -> (String, bool) {
    let Some(last) = contents.last() else {
        return (String::new(), false);
    };
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    let tool_result =
        last["role"] == "user" && parts.iter().any(|p| p.get("functionResponse").is_some());
    if tool_result {
        return (String::new(), true);
    }
    let Some(user) = contents.iter().rev().find(|c| c["role"] == "user") else {
        return (String::new(), false);
    };
    let text = user["parts"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["text"].as_str())
                .rfind(|t| !t.trim_start().starts_with('<'))
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    (text, false)
}

/// True when `tools` declares Gemini CLI's shell tool.
fn has_shell(tools: &[Value]) -> bool {
    tools.iter().any(|t| {
        t["functionDeclarations"]
            .as_array()
            .is_some_and(|ds| ds.iter().any(|d| d["name"] == SHELL_TOOL))
    })
}

fn chunk(parts: Value, finish: Option<&str>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    let mut out = json!({"modelVersion": MODEL, "responseId": "fake"});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(f);
        out["usageMetadata"] = json!({"promptTokenCount": 1200, "candidatesTokenCount": 25,
                                      "totalTokenCount": 1225});
    }
    out["candidates"] = json!([candidate]);
    out
}

fn data(v: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(v.to_string()))
}

/// What the model says for one request: its parts and how long it takes.
fn reply_parts(id: u64, reply: Reply, shell: bool) -> (Value, Duration) {
    match reply {
        Reply::Shell(cmd) | Reply::BackgroundShell(cmd) if shell => (
            json!([{"functionCall": {"id": format!("call_fake_{id}"), "name": SHELL_TOOL,
                                     "args": {"command": cmd,
                                              "description": "Run the scripted command"}}}]),
            Duration::ZERO,
        ),
        Reply::Shell(_) | Reply::BackgroundShell(_) => {
            (json!([{"text": "FAKE-NO-SHELL-TOOL"}]), Duration::ZERO)
        }
        Reply::Nap => (json!([{"text": "FAKE-NAP"}]), Duration::from_secs(5)),
        Reply::Subagent(_) => (json!([{"text": "FAKE-NO-AGENT-TOOL"}]), Duration::ZERO),
        Reply::Ask(_) => (json!([{"text": "FAKE-NO-ASK-TOOL"}]), Duration::ZERO),
        Reply::Slow => (
            json!([{"text": "FAKE-SLOW-REPLY"}]),
            Duration::from_secs(60),
        ),
        Reply::Text(t) => (json!([{"text": t}]), Duration::ZERO),
    }
}

/// `POST /v1beta/models/{model}:{method}`.
pub async fn models_call(
    State(counters): State<&'static Counters>,
    Path(model_method): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let request = Request::read(counters, &body, "contents", last_user_text);
    let (model, method) = model_method
        .split_once(':')
        .unwrap_or((model_method.as_str(), ""));
    let shell = has_shell(&request.tools);
    eprintln!(
        "request {}: gemini {method} model={model} tool_result={} reply={:?} shell={shell} text={:?}",
        request.id,
        request.tool_result,
        request.reply,
        request.text_preview()
    );
    match method {
        "countTokens" => Json(json!({"totalTokens": 1200})).into_response(),
        "streamGenerateContent" => {
            let (parts, delay) = reply_parts(request.id, request.reply, shell);
            let last = chunk(parts, Some("STOP"));
            let later = stream::once(async move {
                tokio::time::sleep(delay).await;
                stream::iter(vec![data(&last)])
            })
            .flatten();
            Sse::new(later)
                .keep_alive(KeepAlive::new().interval(Duration::from_secs(1)))
                .into_response()
        }
        // Side requests: routing and checks ask for JSON (`responseMimeType`), the rest for
        // words. An empty object is valid JSON for each of them and means "nothing to do".
        _ => {
            let wants_json = body["generationConfig"]["responseMimeType"] == "application/json";
            let (parts, _) = if wants_json {
                (json!([{"text": side_json(&body)}]), Duration::ZERO)
            } else if request.tools.is_empty() {
                (json!([{"text": "FAKE-SIDE"}]), Duration::ZERO)
            } else {
                reply_parts(request.id, request.reply, shell)
            };
            Json(chunk(parts, Some("STOP"))).into_response()
        }
    }
}

/// A side request's JSON answer: the fields its `responseJsonSchema` requires, as the
/// plainest values (for the next-speaker check: the user speaks next).
fn side_json(body: &Value) -> String {
    let schema = body["generationConfig"]
        .get("responseJsonSchema")
        .or(body["generationConfig"].get("responseSchema"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = serde_json::Map::new();
    for (k, v) in schema["properties"].as_object().into_iter().flatten() {
        let value = match k.as_str() {
            "next_speaker" => json!("user"),
            "model_choice" => json!("flash"),
            _ => match v["type"].as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("boolean") => json!(false),
                Some("number" | "integer") => json!(0),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!("fake"),
            },
        };
        out.insert(k.clone(), value);
    }
    Value::Object(out).to_string()
}

/// `GET /v1beta/models`: the one model the fake serves.
pub async fn models() -> Json<Value> {
    Json(json!({"models": [{"name": format!("models/{MODEL}"), "displayName": "Fake Gemini"}]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_words_and_tool_results() {
        let mut contents = vec![
            json!({"role": "user", "parts": [{"text": "<session_context>RUN rm -rf /</session_context>"}]}),
            json!({"role": "user", "parts": [{"text": "RUN rm x"}, {"text": "please RUN touch /tmp/x"}]}),
        ];
        assert_eq!(
            last_user_text(&contents),
            ("please RUN touch /tmp/x".into(), false)
        );
        contents.push(
            json!({"role": "model", "parts": [{"functionCall": {"name": SHELL_TOOL, "args": {}}}]}),
        );
        contents.push(json!({"role": "user", "parts": [{"functionResponse": {"name": SHELL_TOOL, "response": {}}}]}));
        assert_eq!(last_user_text(&contents), (String::new(), true));
        assert_eq!(last_user_text(&[]), (String::new(), false));
    }

    #[test]
    fn side_requests_get_the_fields_their_schema_asks_for() {
        let body = json!({"generationConfig": {"responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {
                "reasoning": {"type": "string"}, "next_speaker": {"type": "string"}}}}});
        let got: Value = serde_json::from_str(&side_json(&body)).unwrap();
        assert_eq!(got, json!({"reasoning": "fake", "next_speaker": "user"}));
        assert!(has_shell(&[
            json!({"functionDeclarations": [{"name": SHELL_TOOL}]})
        ]));
        assert!(!has_shell(&[
            json!({"functionDeclarations": [{"name": "read_file"}]})
        ]));
    }
}
