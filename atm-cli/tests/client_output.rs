//! `atmctl list|watch|status|get` against a small in-test fake of the query socket: output
//! formats, filters, id resolution and exit codes. (End-to-end tests against the real atmd live
//! in the workspace's `tests` crate.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Output;

use atm_core::protocol::{ProtocolVersion, ServerMessage};
use atm_core::{AgentState, SessionView};
use chrono::Utc;
use common::atmctl_at;
use serde_json::Value;

fn view(id: &str, state: AgentState, cost: f64, cwd: &str) -> SessionView<'static> {
    let mut s = atm_core::testing::claude_session(id, Utc::now());
    s.state = state;
    s.usage.cost_usd = cost;
    s.cwd = Some(cwd.into());
    s.activity = Some("Bash".into());
    SessionView::from_session(&s, Utc::now()).into_owned()
}

fn sessions() -> Vec<SessionView<'static>> {
    vec![
        view(
            "8e11bfb5-7dc2-432b",
            AgentState::Working,
            1.25,
            "/home/u/src/app",
        ),
        view(
            "8e22aaaa-0000-0000",
            AgentState::NeedsPermission,
            0.5,
            "/home/ü/проект",
        ),
        view("77777777-idle", AgentState::Idle, 2.0, "/srv/tools/"),
    ]
}

/// A fake daemon: answers the handshake, `list_sessions`, and `subscribe` (a list, one update,
/// one removal, then it closes). Serves connections until the test ends.
struct FakeDaemon {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeDaemon {
    fn start(sessions: Vec<SessionView<'static>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atm.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let sessions = sessions.clone();
                std::thread::spawn(move || serve(stream, &sessions));
            }
        });
        Self { path, _dir: dir }
    }
}

fn serve(stream: UnixStream, sessions: &[SessionView<'static>]) {
    let mut out = stream.try_clone().unwrap();
    let mut send = |m: ServerMessage| out.write_all(&m.to_line());
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let msg: Value = serde_json::from_str(&line).unwrap();
        let sent = match msg["type"].as_str().unwrap() {
            "connect" => send(ServerMessage::Connected {
                protocol_version: ProtocolVersion::CURRENT,
                client_id: msg["client_id"].as_str().unwrap_or("x").to_owned(),
            }),
            "list_sessions" => send(ServerMessage::SessionList {
                sessions: sessions.to_vec(),
            }),
            "subscribe" => {
                let _ = send(ServerMessage::SessionList {
                    sessions: sessions.to_vec(),
                });
                let mut changed = sessions[0].clone();
                changed.state = AgentState::Idle;
                let _ = send(ServerMessage::SessionUpdated {
                    session: Box::new(changed),
                });
                let _ = send(ServerMessage::SessionRemoved {
                    session_id: sessions[1].id.to_string(),
                });
                return;
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn list_prints_a_table_and_json_and_filters_by_state() {
    let d = FakeDaemon::start(sessions());
    let o = atmctl_at(&d.path, &["list"]);
    assert!(o.status.success(), "{o:?}");
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for word in [
        "ID", "HARNESS", "STATE", "ACTIVITY", "PROJECT", "CTX", "COST", "AGE",
    ] {
        assert!(lines[0].contains(word), "{table}");
    }
    assert!(lines[1].starts_with("8e11bfb5 ") && lines[1].contains("working"));
    assert!(lines[1].contains("app") && lines[1].contains("$1.25") && lines[1].contains("Bash"));
    assert!(lines[2].contains("needs_permission") && lines[2].contains("проект"));
    assert!(
        lines[3].contains("tools"),
        "basename of a path with a trailing slash"
    );

    let o = atmctl_at(&d.path, &["list", "--json"]);
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[0]["id"], "8e11bfb5-7dc2-432b");
    assert_eq!(json[0]["cost_usd"], 1.25);

    let o = atmctl_at(&d.path, &["list", "--json", "--state", "attention"]);
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["state"], "needs_permission");

    let o = atmctl_at(&d.path, &["list", "--state", "idle"]);
    assert_eq!(stdout(&o).lines().count(), 2);

    let o = atmctl_at(&d.path, &["list", "--state", "busy"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs_input"));
}

#[test]
fn an_empty_daemon_lists_nothing_and_status_says_so() {
    let d = FakeDaemon::start(Vec::new());
    let o = atmctl_at(&d.path, &["list"]);
    assert_eq!(stdout(&o), "no sessions\n");
    let o = atmctl_at(&d.path, &["list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        Value::Array(vec![])
    );
    let o = atmctl_at(&d.path, &["status"]);
    assert_eq!(stdout(&o), "no agents\n");
}

#[test]
fn status_is_one_line_of_counts_and_cost() {
    let d = FakeDaemon::start(sessions());
    let o = atmctl_at(&d.path, &["status"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "1 working · 1 needs you · 1 idle · $3.75\n");
}

#[test]
fn get_resolves_ids_and_prefixes() {
    let d = FakeDaemon::start(sessions());
    let o = atmctl_at(&d.path, &["get", "77"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(
        text.contains("77777777-idle") && text.contains("idle"),
        "{text}"
    );
    assert!(text.contains("/srv/tools/"), "{text}");

    let o = atmctl_at(&d.path, &["get", "8e11bfb5-7dc2-432b", "--json"]);
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["state"], "working");

    let o = atmctl_at(&d.path, &["get", "8e"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("matches 2 sessions"));
    let o = atmctl_at(&d.path, &["get", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no session matches"));
}

#[test]
fn watch_prints_one_line_per_change_until_the_daemon_closes() {
    let d = FakeDaemon::start(sessions());
    let o = atmctl_at(&d.path, &["watch"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    // "3 sessions", three sessions, one update, one removal.
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].ends_with("3 sessions"));
    assert!(
        lines[4].contains("8e11bfb5") && lines[4].contains("idle"),
        "{text}"
    );
    assert!(lines[5].ends_with("8e22aaaa  removed"), "{text}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("closed the connection"));

    let o = atmctl_at(&d.path, &["watch", "--json"]);
    let msgs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["session_list", "session_updated", "session_removed"]
    );
}
