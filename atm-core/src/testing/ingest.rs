//! Helpers for testing an ingest adapter end to end: the adapter running on a real socket in a
//! temp dir against the real registry, a protocol-v1 client for that socket, and a real child
//! process standing in for the agent (so process identity comes from the real `/proc`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

use super::TestHarness;
use crate::ingest::IngestStats;
use crate::ingest_adapter::{IngestAdapter, Translator};
use crate::model::Session;
use crate::plugin::{InputAdapter, PluginError};
use crate::registry::RegistryConfig;

/// How long a helper waits for anything before failing the test.
pub const WAIT: Duration = Duration::from_secs(5);

/// A real process standing in for an agent, so process identity comes from the real `/proc`.
/// Killed on drop.
pub struct FakeAgent(std::process::Child);

impl FakeAgent {
    pub fn spawn() -> Self {
        Self(
            std::process::Command::new("sleep")
                // Long enough for any test; killed on drop.
                .arg("300")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy of `sleep(1)` at `dir/name`: run as `name 600`, it is a process whose comm, argv[0]
/// and executable say `name`, which discovery takes for that agent (`claude`, `codex`, ...).
pub fn sleep_named(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let exe = dir.join(name);
    let sleep = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sleep(1) is installed");
    std::fs::copy(sleep, &exe).expect("copy sleep(1)");
    exe
}

/// An adapter running against a real registry, serving an ingest socket in its own temp dir.
pub struct RunningAdapter {
    pub harness: TestHarness,
    pub socket: PathBuf,
    tasks: Vec<JoinHandle<Result<(), PluginError>>>,
    _dir: tempfile::TempDir,
}

impl RunningAdapter {
    /// Starts the adapter `make` builds from `socket = <temp>/hooks.sock`.
    pub async fn start<A: InputAdapter>(
        config: RegistryConfig,
        make: impl FnOnce(&crate::toml::Value) -> A,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::with_config(
            dir.path(),
            RegistryConfig {
                cleanup_interval: Duration::ZERO,
                ..config
            },
        )
        .await;
        let socket = dir.path().join("hooks.sock");
        let adapter = make(&socket_table(&socket));
        let ctx = harness.adapter_context("test");
        let task = tokio::spawn(Box::new(adapter).run(ctx));
        let me = Self {
            harness,
            socket,
            tasks: vec![task],
            _dir: dir,
        };
        me.wait_until_listening().await;
        me
    }

    /// The generic ingest adapter with translator `T`, started as [`start`](Self::start)
    /// starts one, and its counters.
    pub async fn start_translator<T: Translator>(
        config: RegistryConfig,
    ) -> (Self, Arc<IngestStats>) {
        let mut stats = None;
        let run = Self::start(config, |cfg| {
            let adapter = IngestAdapter::<T>::from_config(cfg).unwrap();
            stats = Some(adapter.stats());
            adapter
        })
        .await;
        (run, stats.unwrap())
    }

    async fn wait_until_listening(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while UnixStream::connect(&self.socket).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "adapter never listened on {}",
                self.socket.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs another adapter on the same registry and ingest hub (e.g. a second adapter on the
    /// shared socket).
    pub fn spawn_also<A: InputAdapter>(&mut self, adapter: A) {
        let ctx = self.harness.adapter_context("also");
        self.tasks.push(tokio::spawn(Box::new(adapter).run(ctx)));
    }

    pub async fn client(&self) -> IngestClient {
        IngestClient::connect(&self.socket).await
    }

    pub async fn sessions(&self) -> Vec<Arc<Session>> {
        self.harness.sessions().await
    }

    /// Polls until `pred` holds for the registry's sessions; fails the test after [`WAIT`].
    pub async fn wait_until(&self, what: &str, pred: impl Fn(&[Arc<Session>]) -> bool) {
        self.harness.wait_for_sessions(what, pred).await;
    }

    /// The one session there must be.
    pub async fn only_session(&self) -> Arc<Session> {
        let all = self.sessions().await;
        assert_eq!(all.len(), 1, "expected one session, got {all:#?}");
        all[0].clone()
    }

    /// Cancels the adapters and checks they stop cleanly and remove the socket.
    pub async fn stop(self) {
        self.harness.cancel.cancel();
        for task in self.tasks {
            let result = tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .expect("adapter stops within 2 s")
                .expect("adapter did not panic");
            assert!(result.is_ok(), "{result:?}");
        }
        assert!(!self.socket.exists(), "socket left behind");
    }
}

pub fn socket_table(socket: &Path) -> crate::toml::Value {
    let mut t = crate::toml::Table::new();
    t.insert(
        "socket".into(),
        crate::toml::Value::String(socket.display().to_string()),
    );
    crate::toml::Value::Table(t)
}

/// A protocol-v1 client on the ingest socket, as a hook client or agent extension speaks it.
pub struct IngestClient {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    seq: u64,
}

impl IngestClient {
    pub async fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).await.unwrap();
        let (read, write) = stream.into_split();
        Self {
            lines: BufReader::new(read).lines(),
            write,
            seq: 0,
        }
    }

    /// Writes raw bytes as they are (no newline added).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    /// Writes raw bytes, reporting failure instead of panicking (for writes the daemon may cut
    /// short, such as an oversized line it refuses while reading).
    pub async fn try_write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// Writes `events` as the original bash hook did: without `protocol_version`, the PID as a
    /// string, every line ended by CRLF, all in one write. `extra` holds top-level fields for
    /// every message (such as `agent`).
    pub async fn write_original_hooks(
        &mut self,
        events: impl IntoIterator<Item = Value>,
        pid: u32,
        extra: &Value,
    ) {
        let mut burst = Vec::new();
        for mut data in events {
            data["pid"] = json!(pid.to_string());
            let mut msg = json!({"type": "hook_event", "data": data});
            if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            burst.extend(serde_json::to_vec(&msg).unwrap());
            burst.extend_from_slice(b"\r\n");
        }
        self.write_raw(&burst).await;
    }

    /// Writes one line.
    pub async fn send_line(&mut self, line: &[u8]) {
        let mut v = line.to_vec();
        v.push(b'\n');
        self.write_raw(&v).await;
    }

    /// Sends a protocol-v1 message of `kind` with `data`, plus `extra` top-level fields.
    pub async fn send(&mut self, kind: &str, data: Value, extra: Value) {
        let mut msg = json!({
            "protocol_version": {"major": 1, "minor": 0},
            "type": kind,
            "data": data,
        });
        if let (Some(m), Value::Object(e)) = (msg.as_object_mut(), extra) {
            m.extend(e);
        }
        self.send_line(&serde_json::to_vec(&msg).unwrap()).await;
    }

    /// The next reply line, parsed; `None` at end of stream.
    pub async fn next_reply(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a reply within 5 s")
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// A barrier: sends `ping` and returns every reply that came before its `pong`. Messages on
    /// one connection are handled in order, so everything sent before has been applied.
    pub async fn sync(&mut self) -> Vec<Value> {
        self.seq += 1;
        let seq = self.seq;
        self.send_line(format!(r#"{{"type":"ping","seq":{seq}}}"#).as_bytes())
            .await;
        let mut before = Vec::new();
        loop {
            let reply = self
                .next_reply()
                .await
                .expect("connection closed before pong");
            if reply["type"] == "pong" && reply["seq"] == seq {
                return before;
            }
            before.push(reply);
        }
    }

    /// Waits until some adapter serves `kind` on this socket: a message without `data` is
    /// answered `invalid_message` by an adapter and `unknown_type` when none is attached yet.
    pub async fn wait_for_route(&mut self, kind: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.send_line(format!(r#"{{"type":"{kind}"}}"#).as_bytes())
                .await;
            let codes = self.sync_errors().await;
            if codes == ["invalid_message"] {
                return;
            }
            assert_eq!(codes, ["unknown_type"], "probing {kind}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind} never served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sync and require that nothing but the pong came back.
    pub async fn sync_ok(&mut self) {
        let replies = self.sync().await;
        assert!(replies.is_empty(), "unexpected replies: {replies:?}");
    }

    /// Sync and return the error codes that came back.
    pub async fn sync_errors(&mut self) -> Vec<String> {
        self.sync()
            .await
            .into_iter()
            .map(|r| {
                assert_eq!(r["type"], "error", "{r}");
                assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
                r["code"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

/// A session's attention as a replay fixture writes it.
pub fn attention_json(s: &Session) -> Value {
    match &s.attention {
        None => Value::Null,
        Some(a) => json!({"reason": a.reason, "tool": a.tool, "detail": a.detail}),
    }
}

/// The one session replay step `step` is about: `None` for a step that only counts sessions
/// (`"sessions": n`, checked here), else the single session there must be.
pub fn replay_session<'a>(
    sessions: &'a [Arc<Session>],
    expect: &serde_json::Map<String, Value>,
    step: &str,
) -> Option<&'a Arc<Session>> {
    if let Some(n) = expect.get("sessions") {
        assert_eq!(json!(sessions.len()), *n, "{step}");
        return None;
    }
    assert_eq!(sessions.len(), 1, "{step}: {sessions:#?}");
    sessions.first()
}

/// Checks the registry's `sessions` against one step of a replay fixture (`replay.json`):
/// `"sessions"` is how many there are; every other key is a field of the one session there must
/// then be (`id`, `harness`, `state`, `attention`, `activity`, `last_error`, `first_prompt`,
/// `model_id`, `cwd`, `children`). `Err` says what differs; an unknown key fails the test.
pub fn check_replay_step(
    sessions: &[Arc<Session>],
    expect: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    check_replay_fields(sessions, expect, |s, key, want| {
        let got = match key {
            "id" => json!(s.id.as_str()),
            "harness" => json!(s.harness.as_str()),
            "state" => json!(s.state.as_str()),
            "attention" => attention_json(s),
            "activity" => json!(s.activity),
            "last_error" => json!(s.last_error),
            "first_prompt" => json!(s.first_prompt),
            "model_id" => json!(s.model_id),
            "cwd" => json!(s.cwd),
            "children" => json!(s.children),
            other => panic!("unknown expectation key {other}"),
        };
        (got != *want).then(|| format!("{key} is {got}, expected {want}"))
    })
}

/// The rule of every replay check, whatever a session is read from (the registry's sessions,
/// or their views as clients get them): `"sessions"` is how many there are; every other key is
/// a field of the one session there must then be, which `differs` compares with what the step
/// wants, saying how it differs (`None`: it does not).
pub fn check_replay_fields<S>(
    sessions: &[S],
    expect: &serde_json::Map<String, Value>,
    differs: impl Fn(&S, &str, &Value) -> Option<String>,
) -> Result<(), String> {
    if let Some(n) = expect.get("sessions")
        && json!(sessions.len()) != *n
    {
        return Err(format!("{} sessions, expected {n}", sessions.len()));
    }
    let fields: Vec<_> = expect.iter().filter(|(k, _)| *k != "sessions").collect();
    if fields.is_empty() {
        return Ok(());
    }
    let [s] = sessions else {
        return Err(format!("{} sessions, expected one", sessions.len()));
    };
    for (key, want) in fields {
        if let Some(why) = differs(s, key, want) {
            return Err(why);
        }
    }
    Ok(())
}
