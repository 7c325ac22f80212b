//! The pi adapter end to end: a real Unix socket, a real registry, a real child process as the
//! pi PID, and the message sequence the pi-atm extension sends over one persistent connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adapter_pi as _; // links the plugin registration for the contract test
use adapter_pi::{PiAdapter, PiStats};
use atm_core::testing::TestHarness;
use atm_core::{InputAdapter, PluginError, Session};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// A real process standing in for pi, so process identity comes from the real `/proc`.
struct FakePi(std::process::Child);

impl FakePi {
    fn spawn() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FakePi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Running {
    harness: TestHarness,
    socket: std::path::PathBuf,
    stats: Arc<PiStats>,
    task: JoinHandle<Result<(), PluginError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        let socket = dir.path().join("hooks.sock");
        let adapter = PiAdapter::from_config(&socket_table(&socket)).unwrap();
        let stats = adapter.stats();
        let task = tokio::spawn(Box::new(adapter).run(harness.adapter_context("pi")));
        let deadline = tokio::time::Instant::now() + WAIT;
        while UnixStream::connect(&socket).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            harness,
            socket,
            stats,
            task,
            _dir: dir,
        }
    }

    async fn sessions(&self) -> Vec<Arc<Session>> {
        self.harness.registry.snapshot().await.unwrap().sessions
    }

    async fn stop(self) {
        self.harness.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("stops within 2 s")
            .expect("did not panic");
        assert!(result.is_ok(), "{result:?}");
        assert!(!self.socket.exists(), "socket left behind");
    }
}

fn socket_table(socket: &Path) -> atm_core::toml::Value {
    let mut t = atm_core::toml::Table::new();
    t.insert(
        "socket".into(),
        atm_core::toml::Value::String(socket.display().to_string()),
    );
    atm_core::toml::Value::Table(t)
}

/// The extension's side: one persistent connection, `connect` first.
struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    seq: u64,
}

impl Client {
    async fn connect(path: &Path) -> Self {
        let (read, write) = UnixStream::connect(path).await.unwrap().into_split();
        let mut c = Self {
            lines: BufReader::new(read).lines(),
            write,
            seq: 0,
        };
        c.send_line(
            br#"{"protocol_version":{"major":1,"minor":0},"type":"connect","client_id":"pi-atm-4242"}"#,
        )
        .await;
        let hello = c.next_reply().await.expect("connected");
        assert_eq!(hello["type"], "connected", "{hello}");
        c
    }

    async fn send_line(&mut self, line: &[u8]) {
        let mut v = line.to_vec();
        v.push(b'\n');
        self.write.write_all(&v).await.unwrap();
    }

    async fn next_reply(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a reply within 5 s")
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Sends `ping` and returns every reply before its `pong`: messages on one connection are
    /// handled in order, so everything sent before has been applied.
    async fn sync(&mut self) -> Vec<Value> {
        self.seq += 1;
        let seq = self.seq;
        self.send_line(format!(r#"{{"type":"ping","seq":{seq}}}"#).as_bytes())
            .await;
        let mut before = Vec::new();
        loop {
            let reply = self.next_reply().await.expect("connection open");
            if reply["type"] == "pong" && reply["seq"] == seq {
                return before;
            }
            before.push(reply);
        }
    }
}

fn fixture_lines() -> Vec<Value> {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/session.jsonl"
    ))
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn expectations() -> Vec<Value> {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/session.expect.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn contract() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("contract.sock");
    atm_core::testing::check_adapter_contract("pi", socket_table(&socket), dir.path()).await;
}

#[tokio::test]
async fn a_pi_session_over_one_persistent_connection() {
    let run = Running::start().await;
    let pi = FakePi::spawn();
    let mut client = Client::connect(&run.socket).await;
    let steps = fixture_lines();
    let expects = expectations();
    assert_eq!(steps.len(), expects.len());
    for (i, (mut msg, expect)) in steps.into_iter().zip(expects).enumerate() {
        msg["data"]["pid"] = json!(pi.pid());
        let step = format!("step {i} ({})", msg["data"]["event"]);
        client.send_line(&serde_json::to_vec(&msg).unwrap()).await;
        let replies = client.sync().await;
        assert!(replies.is_empty(), "{step}: {replies:?}");
        let sessions = run.sessions().await;
        if let Some(n) = expect.get("sessions") {
            assert_eq!(json!(sessions.len()), *n, "{step}");
            continue;
        }
        assert_eq!(sessions.len(), 1, "{step}: {sessions:#?}");
        let s = &sessions[0];
        assert_eq!(s.harness.as_str(), "pi", "{step}");
        assert_eq!(s.process.map(|p| p.pid), Some(pi.pid()), "{step}");
        assert_eq!(s.tmux_pane.as_deref(), Some("%12"), "{step}");
        for (key, want) in expect.as_object().unwrap() {
            let got = match key.as_str() {
                "id" if want == "pending" => {
                    json!(if s.id.is_pending() { "pending" } else { "real" })
                }
                "id" => json!(s.id.as_str()),
                "state" => json!(s.state.as_str()),
                "activity" => json!(s.activity),
                "model_id" => json!(s.model_id),
                "first_prompt" => json!(s.first_prompt),
                "attention" => match &s.attention {
                    None => Value::Null,
                    Some(a) => json!({"reason": a.reason, "tool": a.tool, "detail": a.detail}),
                },
                other => panic!("unknown expectation {other}"),
            };
            assert_eq!(got, *want, "{step}: {key}");
        }
        if i == 10 {
            // The context event's usage: cost summed over requests, context = last request.
            assert!((s.usage.cost_usd - 0.0407544).abs() < 1e-9, "{:?}", s.usage);
            assert_eq!(s.usage.context_tokens, 10750);
        }
    }
    assert_eq!(PiStats::get(&run.stats.bad_messages), 0);
    assert!(PiStats::get(&run.stats.applied) >= 12);
    run.stop().await;
}

#[tokio::test]
async fn without_session_id_or_pid_the_peer_process_is_the_session() {
    let run = Running::start().await;
    let mut client = Client::connect(&run.socket).await;
    // No session id, no pid: the connection's peer (this test process) is taken as pi.
    client
        .send_line(br#"{"type":"pi_event","data":{"event":"agent_start","payload":{}}}"#)
        .await;
    assert!(client.sync().await.is_empty());
    let sessions = run.sessions().await;
    assert_eq!(sessions.len(), 1);
    let me = std::process::id();
    assert_eq!(sessions[0].id.as_str(), format!("pending-{me}"));
    assert_eq!(sessions[0].process.map(|p| p.pid), Some(me));
    assert_eq!(sessions[0].state.as_str(), "working");
    run.stop().await;
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_connection_keeps_working() {
    let run = Running::start().await;
    let mut client = Client::connect(&run.socket).await;
    let bad: Vec<(&[u8], &str)> = vec![
        (
            b"{\"type\":\"pi_event\",\"data\":{\"event\":\"agent_st",
            "parse_error",
        ), // truncated
        (b"not json at all", "parse_error"),
        (
            b"{\"type\":\"pi_event\",\"data\":\"\xff\xfe\"}",
            "parse_error",
        ), // not UTF-8
        (br#"{"type":"pi_event"}"#, "invalid_message"),
        (br#"{"type":"pi_event","data":[1,2]}"#, "invalid_message"),
        (
            br#"{"type":"pi_event","data":{"payload":{}}}"#,
            "invalid_message",
        ),
        (
            br#"{"type":"pi_event","data":{"event":"agent_start","payload":7,"session_id":"s"}}"#,
            "invalid_message",
        ),
    ];
    for (line, code) in &bad {
        client.send_line(line).await;
        let replies = client.sync().await;
        assert_eq!(
            replies.len(),
            1,
            "{:?}: {replies:?}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(replies[0]["type"], "error");
        assert_eq!(
            replies[0]["code"],
            *code,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert!(run.sessions().await.is_empty());
    // The same connection still carries good events.
    client
        .send_line(br#"{"type":"pi_event","data":{"event":"agent_end","session_id":"s-ok","pid":4000000}}"#)
        .await;
    assert!(client.sync().await.is_empty());
    let sessions = run.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].state.as_str(), "idle");
    assert_eq!(PiStats::get(&run.stats.bad_messages), 4);

    // An oversized line is refused while reading (never buffered whole) and closes only
    // that connection; a new connection works.
    let mut big = br#"{"type":"pi_event","data":{"event":"context","session_id":"s-ok","payload":{"messages":[""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 10));
    big.extend(br#""]}}}"#);
    client.send_line(&big).await;
    let reply = client.next_reply().await.expect("an error before close");
    assert_eq!(reply["code"], "too_large");
    assert!(client.next_reply().await.is_none(), "connection closed");
    let mut again = Client::connect(&run.socket).await;
    again
        .send_line(br#"{"type":"pi_event","data":{"event":"agent_start","session_id":"s-ok","pid":4000000}}"#)
        .await;
    assert!(again.sync().await.is_empty());
    assert_eq!(run.sessions().await[0].state.as_str(), "working");
    run.stop().await;
}
