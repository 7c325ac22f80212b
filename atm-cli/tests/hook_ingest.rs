//! The real `atm-hook` against atm-core's real ingest socket (the one `atmd` serves): the framing
//! is accepted, messages are routed by type and agent, the peer is the hook itself, and a
//! status line asking for a reply gets the daemon's view of the session into its default line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atm_core::ingest::{IngestHandler, IngestHub, IngestLimits, IngestMessage};
use atm_core::model::{AgentState, Harness, Session, SessionId, SessionKey};
use atm_core::protocol::{ServerMessage, WireError};
use atm_core::view::SessionView;
use serde_json::Value;
use tokio::sync::mpsc;

const HOOK: &str = env!("CARGO_BIN_EXE_atm-hook");

/// Records every message; answers a `want_reply` status line with a session in `needs_input`.
struct Recorder {
    seen: mpsc::UnboundedSender<IngestMessage>,
}

#[async_trait]
impl IngestHandler for Recorder {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let wants = msg.raw.body.get("want_reply") == Some(&Value::Bool(true));
        let reply = (msg.raw.kind == "status_update" && wants).then(|| {
            let now = chrono::Utc::now();
            let id = SessionId::new("s1");
            let key = SessionKey::Id {
                harness: Harness::claude(),
                id: id.clone(),
            };
            let mut s = Session::new(key, id, None, "test", now);
            s.state = AgentState::NeedsInput;
            ServerMessage::SessionUpdated {
                session: Box::new(SessionView::from_session(&s, now).into_owned()),
            }
        });
        let _ = self.seen.send(msg);
        Ok(reply)
    }
}

/// Runs atm-hook off the async workers; returns its output and pid.
async fn hook(args: &[&str], input: &str, socket: &Path) -> (Output, u32) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let input = input.to_owned();
    let socket: PathBuf = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let child = common::spawn_with_input(
            Command::new(HOOK)
                .args(&args)
                .env("ATM_HOOKS_SOCKET", &socket)
                .env("TMUX_PANE", "%9"),
            input.as_bytes(),
        );
        let pid = child.id();
        (child.wait_with_output().unwrap(), pid)
    })
    .await
    .unwrap()
}

async fn next(rx: &mut mpsc::UnboundedReceiver<IngestMessage>) -> IngestMessage {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no message reached the ingest socket")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_and_statusline_through_the_real_ingest_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hooks.sock");
    let hub = IngestHub::new(IngestLimits::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _claude = hub
        .attach(
            &socket,
            &["hook_event", "status_update"],
            Arc::new(Recorder { seen: tx.clone() }),
        )
        .unwrap();
    let _codex = hub
        .attach(
            &socket,
            &["hook_event:codex"],
            Arc::new(Recorder { seen: tx }),
        )
        .unwrap();

    let event = r#"{"session_id":"s1","hook_event_name":"PermissionRequest","tool_name":"Bash","tool_input":{"command":"rm -rf target"}}"#;
    let (out, pid) = hook(&[], event, &socket).await;
    assert!(out.status.success() && out.stdout.is_empty());
    let msg = next(&mut rx).await;
    assert_eq!(msg.raw.kind, "hook_event");
    assert_eq!(msg.peer.pid, Some(pid));
    let data = &msg.raw.body["data"];
    assert_eq!(data["hook_event_name"], "PermissionRequest");
    assert_eq!(data["tmux_pane"], "%9");
    assert_eq!(data["pid"], std::process::id());

    let (out, _) = hook(
        &["--agent", "codex"],
        r#"{"type":"agent-turn-complete"}"#,
        &socket,
    )
    .await;
    assert!(out.status.success() && out.stdout.is_empty());
    let msg = next(&mut rx).await;
    assert_eq!(msg.raw.str_field("agent"), Some("codex"));

    // The daemon's answer reaches the default status line; a loaded machine may miss the 50 ms
    // budget now and then, so one of a few tries must show it.
    let status = r#"{"session_id":"s1","model":{"display_name":"Sonnet 4.5"},"context_window":{"used_percentage":12.5}}"#;
    let mut lines = Vec::new();
    for _ in 0..5 {
        let (out, _) = hook(&["statusline"], status, &socket).await;
        assert!(out.status.success());
        assert_eq!(next(&mut rx).await.raw.kind, "status_update");
        lines.push(String::from_utf8(out.stdout).unwrap());
        if lines.last().is_some_and(|l| l.contains("needs input")) {
            break;
        }
    }
    common::assert_last_try(&lines, "Sonnet 4.5 · 12% · $0.00 · needs input\n");
}
