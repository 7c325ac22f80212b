//! Shared helpers: a socket sink on a real registry, and a line-oriented protocol client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use atm_core::testing::{TestHarness, wait_until};
use atm_core::{AgentEvent, EventSource, Harness, OutputSink, SessionId, StartSource, UsageUpdate};
use serde_json::{Value, json};
use sink_socket::{SocketConfig, SocketSink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub harness: TestHarness,
    pub path: PathBuf,
    pub task: JoinHandle<Result<(), atm_core::PluginError>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// A sink with `config` (its `socket` set to a path in a fresh temp dir).
    pub async fn start(config: SocketConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(dir.path(), config).await;
        s._dir = Some(dir);
        s
    }

    pub async fn start_in(dir: &Path, config: SocketConfig) -> Server {
        Self::start_with_harness(TestHarness::new(dir).await, dir, config).await
    }

    pub async fn start_with_harness(
        harness: TestHarness,
        dir: &Path,
        mut config: SocketConfig,
    ) -> Server {
        let path = match &config.socket {
            Some(p) => PathBuf::from(p),
            None => dir.join("q.sock"),
        };
        config.socket = Some(path.display().to_string());
        let sink = Box::new(SocketSink::new(config).unwrap());
        let ctx = harness.sink_context("socket");
        let task = tokio::spawn(async move { sink.run(ctx).await });
        wait_until("the query socket comes up", || async {
            assert!(!task.is_finished(), "sink stopped while starting");
            UnixStream::connect(&path).await.is_ok()
        })
        .await;
        Server {
            harness,
            path,
            task,
            _dir: None,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.path).await
    }

    /// A connected client (handshake done).
    pub async fn connected(&self, id: Option<&str>) -> Client {
        let mut c = self.client().await;
        let reply = c.handshake(id).await;
        assert_eq!(reply["type"], "connected", "{reply}");
        c
    }

    pub async fn stop(self) {
        self.harness.cancel.cancel();
        let r = tokio::time::timeout(WAIT, self.task).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "sink did not stop cleanly: {r:?}"
        );
    }
}

pub fn source(id: &str) -> EventSource {
    EventSource::new(Harness::claude(), SessionId::new(id), "test")
}

pub async fn add_session(server: &Server, id: &str) {
    let started = AgentEvent::SessionStarted {
        source: StartSource::Startup,
        model: None,
    };
    server.harness.apply(source(id), started).await;
}

/// Sets a session's cost: an update whose content says which one it is.
pub async fn set_cost(server: &Server, id: &str, cost: f64) {
    set_cost_in(&server.harness.registry, id, cost).await;
}

/// [`set_cost`] through a registry handle (for tasks that outlive a borrow of the server).
pub async fn set_cost_in(registry: &atm_core::RegistryHandle, id: &str, cost: f64) {
    registry
        .update_usage(
            source(id),
            UsageUpdate {
                cost_usd: Some(cost),
                ..UsageUpdate::default()
            },
        )
        .await
        .unwrap();
}

pub async fn remove_session(server: &Server, id: &str) {
    server.harness.registry.remove(id, "test").await.unwrap();
}

pub struct Client {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).await.unwrap();
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::with_capacity(1 << 16, r),
            writer: w,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// Sends a message with the current protocol version.
    pub async fn send(&mut self, kind: &str, fields: Value) {
        let fields = fields.as_object().cloned().unwrap_or_default();
        let line = atm_core::protocol::client_line(kind, fields);
        self.send_raw(&line).await;
    }

    pub async fn handshake(&mut self, id: Option<&str>) -> Value {
        match id {
            Some(id) => self.send("connect", json!({"client_id": id})).await,
            None => self.send("connect", json!({})).await,
        }
        self.recv().await
    }

    /// The next message, or `None` at EOF. Panics after [`WAIT`].
    pub async fn try_recv(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("no message within the timeout")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        assert_eq!(line.last(), Some(&b'\n'), "unterminated line");
        Some(serde_json::from_slice(&line).unwrap())
    }

    pub async fn recv(&mut self) -> Value {
        self.try_recv().await.expect("connection closed")
    }

    /// Asserts the daemon closes the connection (EOF) without sending more.
    pub async fn expect_closed(&mut self) {
        if let Some(v) = self.try_recv().await {
            panic!("expected the connection to close, got {v}");
        }
    }

    /// Pings and returns every message received before the pong.
    pub async fn sync(&mut self, seq: u64) -> Vec<Value> {
        self.send("ping", json!({"seq": seq})).await;
        let mut before = Vec::new();
        loop {
            let m = self.recv().await;
            if m["type"] == "pong" && m["seq"] == seq {
                return before;
            }
            before.push(m);
        }
    }
}

/// The ids in a `session_list`.
pub fn list_ids(msg: &Value) -> Vec<String> {
    assert_eq!(msg["type"], "session_list", "{msg}");
    msg["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// What a subscriber believes: id -> cost, maintained from lists, updates and removals.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mirror {
    pub sessions: std::collections::BTreeMap<String, f64>,
    pub lists: usize,
    pub updates: usize,
}

impl Mirror {
    pub fn apply(&mut self, msg: &Value) {
        match msg["type"].as_str().unwrap() {
            "session_list" => {
                self.lists += 1;
                self.sessions.clear();
                for s in msg["sessions"].as_array().unwrap() {
                    self.sessions.insert(
                        s["id"].as_str().unwrap().to_owned(),
                        s["cost_usd"].as_f64().unwrap(),
                    );
                }
            }
            "session_updated" => {
                self.updates += 1;
                let s = &msg["session"];
                self.sessions.insert(
                    s["id"].as_str().unwrap().to_owned(),
                    s["cost_usd"].as_f64().unwrap(),
                );
            }
            "session_removed" => {
                self.updates += 1;
                self.sessions.remove(msg["session_id"].as_str().unwrap());
            }
            other => panic!("unexpected message {other}: {msg}"),
        }
    }
}

/// The registry's truth in the same shape.
pub async fn truth(server: &Server) -> std::collections::BTreeMap<String, f64> {
    server
        .harness
        .sessions()
        .await
        .iter()
        .map(|s| (s.id.as_str().to_owned(), s.usage.cost_usd))
        .collect()
}
