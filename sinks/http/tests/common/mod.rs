//! A real `http` sink on a loopback port with a real registry, and a small HTTP/1.1 client over
//! raw TCP (requests, and a server-sent-events reader), shared by the tests and the benchmark.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use atm_core::PluginError;
use atm_core::testing::TestHarness;
use serde_json::Value;
use sink_http as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Running {
    pub harness: TestHarness,
    pub task: tokio::task::JoinHandle<Result<(), PluginError>>,
    pub addr: SocketAddr,
    pub token: String,
}

/// Starts the sink on `127.0.0.1:0` with `extra` TOML keys, waiting until it answers.
pub async fn start(dir: &Path, extra: &str) -> Running {
    let harness = TestHarness::new(dir).await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{extra}",
        dir.join("web-token").display()
    );
    let cfg = atm_core::testing::config_table(&text);
    let Some(reg) = atm_core::plugin::find(atm_core::plugin::PluginKind::Sink, "http") else {
        panic!("the http sink is not registered");
    };
    let atm_core::plugin::PluginFactory::Sink(factory) = reg.factory else {
        panic!("http is not a sink");
    };
    let sink = factory(&cfg).unwrap();
    let ctx = harness.sink_context("http");
    let task = tokio::spawn(sink.run(ctx));
    let url_file = harness
        .env
        .runtime_dir
        .join(atm_core::paths::WEB_ADDRESS_FILE);
    let url = atm_core::testing::wait_for("the sink to say where it listens", || {
        let f = url_file.clone();
        async move {
            std::fs::read_to_string(&f)
                .ok()
                .filter(|u| u.ends_with('\n'))
        }
    })
    .await;
    let addr = atm_tests::board_addr(&url);
    let token = std::fs::read_to_string(dir.join("web-token"))
        .unwrap()
        .trim()
        .to_owned();
    Running {
        harness,
        task,
        addr,
        token,
    }
}

/// [`start`] with the private Unix socket `<dir>/run/web.sock` too, waiting until it exists;
/// returns its path beside the running sink.
pub async fn start_with_unix_socket(dir: &Path) -> (Running, std::path::PathBuf) {
    let sock = dir.join("run/web.sock");
    let r = start(dir, &format!("unix_socket = \"{}\"\n", sock.display())).await;
    atm_core::testing::wait_until("the socket", || {
        let s = sock.clone();
        async move { s.exists() }
    })
    .await;
    (r, sock)
}

impl Running {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub async fn get(&self, path: &str) -> Response {
        request(
            self.addr,
            "GET",
            path,
            &[("authorization", &self.bearer())],
            b"",
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        request(
            self.addr,
            "POST",
            path,
            &[
                ("authorization", &self.bearer()),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .await
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The raw request bytes for `method path` with `headers` and `body`.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection; the whole response (de-chunked).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    send_raw(addr, &raw_request(method, path, headers, body)).await
}

pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read everything (a refused large head).
    let _ = s.write_all(bytes).await;
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("a response within 10 s");
    parse_response(&all)
}

fn parse_response(all: &[u8]) -> Response {
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(all)));
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &all[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut c = Chunks::default();
        c.buf.extend_from_slice(rest);
        let mut out = Vec::new();
        while let Some(piece) = c.next_chunk() {
            if piece.is_empty() {
                break;
            }
            out.extend_from_slice(&piece);
        }
        out
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

/// An incremental decoder of a chunked body.
#[derive(Default)]
pub struct Chunks {
    pub buf: Vec<u8>,
}

impl Chunks {
    /// The next complete chunk (empty: the last one), or `None` when more bytes are needed.
    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let line_end = self.buf.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&self.buf[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        let start = line_end + 2;
        if self.buf.len() < start + size + 2 {
            return None;
        }
        let chunk = self.buf[start..start + size].to_vec();
        self.buf.drain(..start + size + 2);
        Some(chunk)
    }
}

/// A live `/events` stream.
pub struct Sse {
    pub stream: TcpStream,
    chunks: Chunks,
    text: String,
}

/// One server-sent event: its name and its data as JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

impl Sse {
    /// Opens `/events` with `auth` (`authorization` header value), checking the response head.
    pub async fn open(addr: SocketAddr, auth: &str) -> Sse {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {auth}\r\naccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(
                stream.read(&mut b).await.unwrap(),
                1,
                "stream closed in head"
            );
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"), "{head}");
        Sse {
            stream,
            chunks: Chunks::default(),
            text: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); panics after 10 s.
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), self.next_inner())
            .await
            .expect("an event within 10 s")
    }

    async fn next_inner(&mut self) -> Event {
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if !name.is_empty() {
                    return Event {
                        name,
                        data: serde_json::from_str(&data).unwrap(),
                    };
                }
            }
            while let Some(chunk) = self.chunks.next_chunk() {
                assert!(!chunk.is_empty(), "the stream ended");
                self.text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            if self.text.contains("\n\n") {
                continue;
            }
            let mut buf = [0u8; 65536];
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream closed");
            self.chunks.buf.extend_from_slice(&buf[..n]);
        }
    }

    /// Events until one named `name` whose data satisfies `pred`.
    pub async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Event {
        loop {
            let e = self.next().await;
            if e.name == name && pred(&e.data) {
                return e;
            }
        }
    }
}
