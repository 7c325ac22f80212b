//! Test helpers: a running adapter on a real socket in a temp dir, a protocol-v1 client, a real
//! child process standing in for Claude, fixtures.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

use std::path::{Path, PathBuf};
use std::time::Duration;

use atm_core::registry::RegistryConfig;
use atm_core::testing::TestHarness;
use atm_core::{InputAdapter, PluginError, Session};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(5);

/// A real process to stand in for Claude, so process identity comes from the real `/proc`.
pub struct FakeClaude(std::process::Child);

impl FakeClaude {
    pub fn spawn() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FakeClaude {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An adapter running against a real registry, serving a socket in its own temp dir.
pub struct Running {
    pub harness: TestHarness,
    pub socket: PathBuf,
    tasks: Vec<JoinHandle<Result<(), PluginError>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts the adapter `make` builds from `socket = <temp>/hooks.sock`.
    pub async fn start<A: InputAdapter>(
        config: RegistryConfig,
        make: impl FnOnce(&atm_core::toml::Value) -> A,
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

    /// Runs another adapter on the same registry and ingest hub (e.g. the other Claude adapter
    /// on the shared socket).
    pub fn spawn_also<A: InputAdapter>(&mut self, adapter: A) {
        let ctx = self.harness.adapter_context("also");
        self.tasks.push(tokio::spawn(Box::new(adapter).run(ctx)));
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await
    }

    pub async fn sessions(&self) -> Vec<std::sync::Arc<Session>> {
        self.harness.registry.snapshot().await.unwrap().sessions
    }

    /// The one session there must be.
    pub async fn only_session(&self) -> std::sync::Arc<Session> {
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

pub fn socket_table(socket: &Path) -> atm_core::toml::Value {
    let mut t = atm_core::toml::Table::new();
    t.insert(
        "socket".into(),
        atm_core::toml::Value::String(socket.display().to_string()),
    );
    atm_core::toml::Value::Table(t)
}

/// A protocol-v1 client on the ingest socket.
pub struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    seq: u64,
}

impl Client {
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

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture's JSON (as Claude sends it, without `pid` / `tmux_pane`).
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Adds what `atm-hook` adds: the Claude PID and `$TMUX_PANE`.
pub fn with_process(mut data: Value, pid: u32, pane: &str) -> Value {
    let o = data.as_object_mut().unwrap();
    o.insert("pid".into(), json!(pid));
    o.insert("tmux_pane".into(), json!(pane));
    data
}

/// Sets fields of a payload (JSON object merge, one level).
pub fn patch(mut data: Value, fields: Value) -> Value {
    if let (Some(o), Value::Object(f)) = (data.as_object_mut(), fields) {
        o.extend(f);
    }
    data
}
