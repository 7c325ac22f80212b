//! The gemini adapter against a real registry: realistic Gemini CLI hook payloads, sent the way
//! `atm-hook --agent gemini` sends them, through the real shared ingest socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapter_gemini::{GeminiAdapter, GeminiConfig, GeminiStats};
use atm_core::serde_json::{self, Value, json};
use atm_core::testing::{TestHarness, check_adapter_contract};
use atm_core::{InputAdapter, PluginError, Session};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A real process standing in for Gemini CLI, so process identity comes from the real `/proc`.
struct FakeGemini(std::process::Child);

impl FakeGemini {
    fn spawn() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Running {
    harness: TestHarness,
    socket: PathBuf,
    stats: Arc<GeminiStats>,
    task: JoinHandle<Result<(), PluginError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        let socket = dir.path().join("hooks.sock");
        let adapter = GeminiAdapter::new(GeminiConfig {
            socket: Some(socket.display().to_string()),
        });
        let stats = adapter.stats();
        let task = tokio::spawn(Box::new(adapter).run(harness.adapter_context("gemini")));
        Self {
            harness,
            socket,
            stats,
            task,
            _dir: dir,
        }
    }

    async fn client(&self) -> Client {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(s) = UnixStream::connect(&self.socket).await {
                let (r, w) = s.into_split();
                return Client {
                    r: BufReader::new(r),
                    w,
                };
            }
            assert!(tokio::time::Instant::now() < deadline, "never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sessions(&self) -> Vec<Arc<Session>> {
        self.harness.registry.snapshot().await.unwrap().sessions
    }

    /// Polls (up to 5 s) until `pred` holds for the sessions.
    async fn wait_until(&self, what: &str, pred: impl Fn(&[Arc<Session>]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = self.sessions().await;
            if pred(&all) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never held; sessions: {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.harness.cancel.cancel();
        let r = tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert!(!self.socket.exists(), "the socket is removed on stop");
    }
}

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    /// Sends Gemini's hook JSON as `atm-hook --agent gemini` does (adding pid and pane).
    async fn send_hook(&mut self, mut data: Value, pid: Option<u32>) {
        if let Some(pid) = pid {
            data["pid"] = json!(pid);
            data["tmux_pane"] = json!("%7");
        }
        let line = json!({"protocol_version": {"major": 1, "minor": 0}, "type": "hook_event", "agent": "gemini", "data": data});
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    async fn read(&mut self) -> Value {
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.r.read_line(&mut line))
            .await
            .expect("a reply")
            .unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

fn attention_json(s: &Session) -> Value {
    match &s.attention {
        None => Value::Null,
        Some(a) => json!({"reason": a.reason, "tool": a.tool, "detail": a.detail}),
    }
}

fn matches(all: &[Arc<Session>], expect: &serde_json::Map<String, Value>) -> bool {
    if let Some(n) = expect.get("sessions")
        && all.len() as u64 != n.as_u64().unwrap()
    {
        return false;
    }
    if all.len() != 1 {
        return expect.len() == 1 && expect.contains_key("sessions");
    }
    let s = &all[0];
    expect.iter().all(|(k, v)| match k.as_str() {
        "sessions" => true,
        "id" => s.id.as_str() == v,
        "harness" => s.harness.as_str() == v,
        "state" => s.state.as_str() == v,
        "attention" => attention_json(s) == *v,
        "activity" => {
            s.activity
                .as_deref()
                .map(Value::from)
                .unwrap_or(Value::Null)
                == *v
        }
        "first_prompt" => {
            s.first_prompt
                .as_deref()
                .map(Value::from)
                .unwrap_or(Value::Null)
                == *v
        }
        other => panic!("unknown expectation key {other}"),
    })
}

#[tokio::test]
async fn replays_every_fixture_in_a_realistic_order() {
    let run = Running::start().await;
    let gemini = FakeGemini::spawn();
    let pid = gemini.0.id();
    let mut client = run.client().await;
    let replay = fixture("replay.json");
    let mut used = std::collections::HashSet::new();
    for step in replay["steps"].as_array().unwrap() {
        let name = step["fixture"].as_str().unwrap();
        used.insert(name.to_owned());
        client.send_hook(fixture(name), Some(pid)).await;
        let expect = step["expect"].as_object().unwrap();
        run.wait_until(name, |all| matches(all, expect)).await;
        if let [s] = run.sessions().await.as_slice() {
            assert_eq!(s.harness.as_str(), "gemini");
            assert_eq!(s.pid(), Some(pid), "{name}: the real Gemini process");
            assert_eq!(s.tmux_pane.as_deref(), Some("%7"));
            assert_eq!(s.cwd.as_deref(), Some("/home/dev/src/webapp"));
        }
    }
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            n == "replay.json" || used.contains(&n),
            "fixture {n} is not replayed"
        );
    }
    assert_eq!(GeminiStats::get(&run.stats.unknown_events), 1);
    assert_eq!(GeminiStats::get(&run.stats.bad_messages), 0);
    run.stop().await;
}

#[tokio::test]
async fn every_fixture_translates_with_the_right_known_flag() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        if n == "replay.json" {
            continue;
        }
        let t = adapter_gemini::translate(&fixture(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(t.known, !n.contains("unknown"), "{n}");
    }
}

#[tokio::test]
async fn a_permission_without_a_pid_still_makes_a_gemini_session() {
    let run = Running::start().await;
    let mut client = run.client().await;
    client
        .send_hook(fixture("Notification.ToolPermission.exec.json"), None)
        .await;
    run.wait_until("needs_permission", |all| {
        all.len() == 1 && all[0].state.as_str() == "needs_permission" && all[0].process.is_none()
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn bad_input_gets_error_replies_and_the_connection_keeps_serving() {
    let run = Running::start().await;
    let mut c = run.client().await;
    let env = |data: &str| {
        format!(r#"{{"type":"hook_event","agent":"gemini","data":{data}}}"#).into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "parse_error"),
        (
            br#"{"type":"hook_event","agent":"gemini","data":{"session_id":"x""#.to_vec(),
            "parse_error",
        ),
        (
            b"{\"type\":\"hook_event\",\"agent\":\"gemini\",\"data\":{\"session_id\":\"\xff\"}}"
                .to_vec(),
            "parse_error",
        ),
        (
            br#"{"type":"hook_event","agent":"gemini"}"#.to_vec(),
            "invalid_message",
        ),
        (env("\"text\""), "invalid_message"),
        (
            env(r#"{"hook_event_name":"AfterAgent"}"#),
            "invalid_message",
        ),
        (
            env(r#"{"session_id":"g","hook_event_name":7}"#),
            "invalid_message",
        ),
        (
            env(&format!(
                r#"{{"session_id":"{}","hook_event_name":"AfterAgent"}}"#,
                "x".repeat(300)
            )),
            "invalid_message",
        ),
        (
            br#"{"type":"hook_event","agent":"geminy","data":{}}"#.to_vec(),
            "unknown_type",
        ),
    ];
    for (line, code) in cases {
        c.send_raw(&[line.as_slice(), b"\n"].concat()).await;
        let reply = c.read().await;
        assert_eq!(reply["type"], "error", "{}", String::from_utf8_lossy(&line));
        assert_eq!(
            reply["code"],
            code,
            "{}: {reply}",
            String::from_utf8_lossy(&line)
        );
    }
    c.send_hook(fixture("BeforeAgent.json"), None).await;
    run.wait_until("served after errors", |all| {
        all.len() == 1 && all[0].state.as_str() == "working"
    })
    .await;
    assert_eq!(GeminiStats::get(&run.stats.bad_messages), 5);

    // An oversized line is refused and closes that connection; others keep being served.
    let mut huge = fixture("BeforeAgent.json");
    huge["prompt"] = json!("p".repeat(2 * 1024 * 1024));
    let line = json!({"type": "hook_event", "agent": "gemini", "data": huge});
    // The daemon may close before the whole line is written: a broken pipe is expected.
    let _ = c.w.write_all(format!("{line}\n").as_bytes()).await;
    assert_eq!(c.read().await["code"], "too_large");
    let mut other = run.client().await;
    other.send_hook(fixture("AfterAgent.json"), None).await;
    run.wait_until("idle", |all| {
        all.len() == 1 && all[0].state.as_str() == "idle"
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn keeps_the_plugin_contract() {
    use adapter_gemini as _;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("contract.sock");
    let mut t = atm_core::toml::Table::new();
    t.insert("socket".into(), sock.display().to_string().into());
    check_adapter_contract("gemini", atm_core::toml::Value::Table(t), dir.path()).await;
}

#[test]
fn config_rejects_unknown_keys_and_defaults_the_socket() {
    let parse = |s: &str| {
        GeminiAdapter::from_config(&atm_core::toml::Value::Table(
            atm_core::toml::from_str(s).unwrap(),
        ))
    };
    assert!(parse("").is_ok());
    let err = parse("sockt = \"/x\"").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("sockt"));
    let cfg = GeminiConfig::default();
    assert_eq!(
        cfg.socket_path(Path::new("/run/atm")),
        Path::new("/run/atm/hooks.sock")
    );
}

/// Every field of every fixture removed or replaced by a value of another type (or a huge or
/// multi-byte string): the translator never panics, and only the fields it cannot work without
/// make it refuse the payload, with `invalid_message`.
#[test]
fn every_fixture_survives_mutated_fields() {
    let replacements = [
        Value::Null,
        json!(5),
        json!(-1.5),
        json!(true),
        json!([]),
        json!({}),
        json!(""),
        json!("é".repeat(100_000)),
    ];
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        if n == "replay.json" {
            continue;
        }
        let original = fixture(&n);
        for key in original.as_object().unwrap().keys() {
            let mut variants = vec![{
                let mut v = original.clone();
                v.as_object_mut().unwrap().remove(key);
                v
            }];
            for r in &replacements {
                let mut v = original.clone();
                v[key.as_str()] = r.clone();
                variants.push(v);
            }
            for v in variants {
                if let Err(e) = adapter_gemini::translate(&v) {
                    assert_eq!(
                        e.code,
                        atm_core::protocol::ErrorCode::InvalidMessage,
                        "{n}/{key}"
                    );
                    assert!(
                        ["session_id", "hook_event_name"].contains(&key.as_str()),
                        "{n}: `{key}` is not required: {e}"
                    );
                }
            }
        }
    }
}
