//! Test helpers: a minimal opencode server on 127.0.0.1 and the adapter running against a real
//! registry.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

use std::sync::Arc;
use std::time::Duration;

use adapter_opencode::{OpencodeAdapter, OpencodeStats};
use atm_core::testing::TestHarness;
use atm_core::{InputAdapter, PluginError, Session};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(5);
pub const SID: &str = "ses_5c1e2a7f3ffeQ8dJvK2mN4pR6t";

/// A minimal opencode stand-in: every accepted `GET /event` gets SSE headers, then the test
/// writes the stream through the [`Conn`] it receives and drops it to cut the connection.
pub struct SseServer {
    pub port: u16,
    conns: mpsc::Receiver<Conn>,
    /// What `GET /session/status` answers (the sessions that are not idle).
    status: Arc<std::sync::Mutex<String>>,
    /// What other JSON paths answer (`/session`, `/permission`, ...); `[]` when unset.
    bodies: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// While set, `GET /session/status` answers 503 (a server too busy to answer).
    status_fails: Arc<std::sync::atomic::AtomicBool>,
    accept: JoinHandle<()>,
}

pub struct Conn {
    pub stream: TcpStream,
    pub request: String,
}

impl Conn {
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, event: &Value) {
        let line = format!("data: {}\n\n", serde_json::to_string(event).unwrap());
        self.send_raw(line.as_bytes()).await;
    }
}

impl SseServer {
    pub async fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let (tx, conns) = mpsc::channel(8);
        let status = Arc::new(std::sync::Mutex::new("{}".to_owned()));
        let status_body = status.clone();
        let bodies: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> =
            Arc::default();
        let other_bodies = bodies.clone();
        let status_fails = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fails = status_fails.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let request = read_request(&mut stream).await;
                if request.starts_with("GET /session/status ")
                    && fails.load(std::sync::atomic::Ordering::SeqCst)
                {
                    let _ = stream
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    continue;
                }
                let json_body = if request.starts_with("GET /session/status ") {
                    Some(status_body.lock().unwrap().clone())
                } else if request.starts_with("GET /event ")
                    || request.starts_with("GET /global/event ")
                {
                    None
                } else {
                    // The session list, pending permissions and questions: none unless set.
                    let path = request.split(' ').nth(1).unwrap_or("").to_owned();
                    let set = other_bodies.lock().unwrap().get(&path).cloned();
                    Some(set.unwrap_or_else(|| "[]".to_owned()))
                };
                if let Some(body) = json_body {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    continue;
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
                if tx.send(Conn { stream, request }).await.is_err() {
                    return;
                }
            }
        });
        Self {
            port,
            conns,
            status,
            bodies,
            status_fails,
            accept,
        }
    }

    /// Whether `GET /session/status` fails (503) from now on.
    pub fn fail_status(&self, fail: bool) {
        self.status_fails
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// What `GET <path>` answers from now on.
    pub fn set_body(&self, path: &str, body: &str) {
        self.bodies
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.to_owned());
    }

    pub fn set_status(&self, body: Value) {
        *self.status.lock().unwrap() = body.to_string();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the adapter connects within 5 s")
            .unwrap()
    }
}

impl Drop for SseServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 8192 {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub struct Running {
    pub harness: TestHarness,
    pub stats: Arc<OpencodeStats>,
    pub task: JoinHandle<Result<(), PluginError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub async fn start(url: &str, max_event_bytes: Option<usize>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        let mut adapter = OpencodeAdapter::from_config(&config(url)).unwrap();
        if let Some(n) = max_event_bytes {
            adapter = adapter.with_max_event_bytes(n);
        }
        let stats = adapter.stats();
        let task = tokio::spawn(Box::new(adapter).run(harness.adapter_context("opencode")));
        Self {
            harness,
            stats,
            task,
            _dir: dir,
        }
    }

    pub async fn sessions(&self) -> Vec<Arc<Session>> {
        self.harness.registry.snapshot().await.unwrap().sessions
    }

    /// Polls the registry (up to 5 s) until `check` accepts the sessions.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Arc<Session>]) -> bool) {
        self.harness.wait_for_sessions(what, check).await;
    }

    /// Waits until `n` connection attempts have failed in all (each one is logged before it
    /// is counted): the witness that the adapter kept retrying.
    pub async fn wait_for_failed_attempts(&self, n: u64) {
        let stats = &self.stats;
        atm_core::testing::wait_until(&format!("{n} failed connection attempts"), || async move {
            OpencodeStats::get(&stats.failed_attempts) >= n
        })
        .await;
    }

    pub async fn wait_for_state(&self, id: &str, state: &str) {
        self.wait_for(&format!("{id} {state}"), |all| {
            all.iter()
                .any(|s| s.id.as_str() == id && s.state.as_str() == state)
        })
        .await;
    }

    pub async fn stop(self) {
        self.harness.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("stops within 2 s")
            .expect("did not panic");
        assert!(result.is_ok(), "{result:?}");
    }
}

pub fn config(url: &str) -> atm_core::toml::Value {
    let mut t = atm_core::toml::Table::new();
    t.insert("url".into(), atm_core::toml::Value::String(url.to_owned()));
    t.insert(
        "max_backoff".into(),
        atm_core::toml::Value::String("400ms".into()),
    );
    atm_core::toml::Value::Table(t)
}

pub fn status(id: &str, ty: &str) -> Value {
    json!({"type": "session.status", "properties": {"sessionID": id, "status": {"type": ty}}})
}

/// A port nothing listens on (bound, then released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
