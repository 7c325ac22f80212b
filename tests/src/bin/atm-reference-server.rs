//! The reference server the load benchmark measures `atmd` against.
//!
//! It does the least a monitor must do and nothing else: parse each hook line, keep the latest
//! view per session, serialize it once, and write it to every subscriber. No registry actor, no
//! state machine, no persistence, no backpressure policy (a subscriber whose queue is full simply
//! misses updates). Running it in the same benchmark run as `atmd` turns absolute figures, which
//! mislead on a shared 2-core machine, into ratios that hold.
//!
//! Usage: `atm-reference-server <hooks.sock> <query.sock>`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use atm_core::chrono::Utc;
use atm_core::{Harness, Session, SessionId, SessionKey, SessionView};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

type Line = Arc<Vec<u8>>;

#[derive(Default)]
struct State {
    latest: HashMap<String, Line>,
    subscribers: Vec<mpsc::Sender<Line>>,
}

fn view_line(kind: &str, data: &Value) -> Option<(String, Line)> {
    let id = data.get("session_id")?.as_str()?.to_owned();
    let now = Utc::now();
    let key = SessionKey::Id {
        harness: Harness::claude(),
        id: SessionId::new(id.clone()),
    };
    let mut s = Session::new(key, SessionId::new(id.clone()), None, "reference", now);
    if kind == "hook_event" {
        s.state = atm_core::AgentState::Working;
        s.activity = data
            .get("tool_name")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let msg = serde_json::json!({"type": "session_updated", "session": SessionView::from_session(&s, now)});
    let mut line = serde_json::to_vec(&msg).ok()?;
    line.push(b'\n');
    Some((id, Arc::new(line)))
}

async fn ingest(stream: UnixStream, state: Arc<Mutex<State>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(data) = v.get("data") else { continue };
        let Some((id, out)) = view_line(kind, data) else {
            continue;
        };
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.latest.insert(id, out.clone());
        st.subscribers.retain(|s| !s.is_closed());
        for s in &st.subscribers {
            let _ = s.try_send(out.clone());
        }
    }
}

async fn query(stream: UnixStream, state: Arc<Mutex<State>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "connect" => {
                let _ = write
                    .write_all(b"{\"type\":\"connected\",\"protocol_version\":{\"major\":1,\"minor\":0},\"client_id\":\"ref\"}\n")
                    .await;
            }
            "subscribe" | "list_sessions" => {
                let subscribe = v.get("type").and_then(Value::as_str) == Some("subscribe");
                let (list, rx) = {
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    let sessions: Vec<Value> = st
                        .latest
                        .values()
                        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
                        .map(|m| m["session"].clone())
                        .collect();
                    let rx = subscribe.then(|| {
                        let (tx, rx) = mpsc::channel(65_536);
                        st.subscribers.push(tx);
                        rx
                    });
                    (
                        serde_json::json!({"type": "session_list", "sessions": sessions}),
                        rx,
                    )
                };
                let mut out = serde_json::to_vec(&list).unwrap_or_default();
                out.push(b'\n');
                if write.write_all(&out).await.is_err() {
                    return;
                }
                if let Some(mut rx) = rx {
                    while let Some(line) = rx.recv().await {
                        if write.write_all(&line).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            }
            _ => {}
        }
    }
}

async fn serve(listener: UnixListener, state: Arc<Mutex<State>>, ingest_side: bool) {
    while let Ok((stream, _)) = listener.accept().await {
        let st = state.clone();
        if ingest_side {
            tokio::spawn(ingest(stream, st));
        } else {
            tokio::spawn(query(stream, st));
        }
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(hooks), Some(query_path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: atm-reference-server <hooks.sock> <query.sock>");
        return std::process::ExitCode::from(2);
    };
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        return std::process::ExitCode::FAILURE;
    };
    rt.block_on(async {
        let state = Arc::new(Mutex::new(State::default()));
        let _ = std::fs::remove_file(hooks);
        let _ = std::fs::remove_file(query_path);
        let (Ok(h), Ok(q)) = (UnixListener::bind(hooks), UnixListener::bind(query_path)) else {
            eprintln!("cannot bind sockets");
            return std::process::ExitCode::FAILURE;
        };
        tokio::join!(serve(h, state.clone(), true), serve(q, state, false));
        std::process::ExitCode::SUCCESS
    })
}
