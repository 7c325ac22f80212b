//! A real Prometheus (Debian's `prometheus` package) scrapes what [`Metrics::encode`] writes,
//! served with [`CONTENT_TYPE`] on loopback, loads `dist/grafana/alerts.yml`, and answers every
//! dashboard query over that data.
//!
//! The scrape is served by a few lines of HTTP here, not by the sink's server, so that this
//! test is about the format and the queries only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atm_core::testing::wait::wait_until_within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tests::every_family;
use super::*;

/// The Prometheus server this test started; killed (by its PID, through `Child`) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `/metrics` from `m` until the test ends.
async fn serve(m: Metrics) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = m.encode().unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from Prometheus at `port`: the JSON body, or `None` while it is not up.
async fn get(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.ok()?;
    let text = String::from_utf8_lossy(&resp);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

async fn query(port: u16, promql: &str) -> Option<serde_json::Value> {
    get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_metrics_loads_the_alerts_and_answers_the_dashboard() {
    let target = serve(every_family()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/grafana/alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: atm\n    static_configs:\n      - targets: [\"{target}\"]\n",
        rules.canonicalize().unwrap().display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let log = dir.path().join("prometheus.log");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start prometheus ({e}): apt-get install prometheus (.ci/run does)")
        });
    let server = std::sync::Mutex::new(Server(child));

    // Up, scraped without error, and the series are there.
    wait_until_within(
        Duration::from_secs(60),
        "Prometheus scrapes /metrics",
        || async {
            if let Ok(Some(status)) = server.lock().unwrap().0.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            let Some(v) = get(port, "/api/v1/targets").await else {
                return false;
            };
            v["data"]["activeTargets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["health"] == "up"))
        },
    )
    .await;
    let targets = get(port, "/api/v1/targets").await.unwrap();
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(t["lastError"], "", "{t}");
    let v = query(
        port,
        "atm_sessions{state=\"idle\",harness=\"claude\",host=\"box-1\"}",
    )
    .await
    .unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
    let v = query(
        port,
        "atm_requests_ended_total{surface=\"http\",outcome=\"allow\"}",
    )
    .await
    .unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");

    // The alert rules loaded and evaluate without error.
    wait_until_within(
        Duration::from_secs(30),
        "the alert rules evaluate",
        || async {
            let Some(v) = get(port, "/api/v1/rules").await else {
                return false;
            };
            let rules: Vec<&serde_json::Value> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            rules.len() == 2
                && rules
                    .iter()
                    .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
        },
    )
    .await;

    // Every dashboard query runs.
    for (title, promql) in super::dist_tests::dashboard_queries() {
        let v = query(port, &promql).await.unwrap();
        assert_eq!(v["status"], "success", "{title}: {promql}: {v}");
    }
    let v = query(port, "sum by (state) (atm_sessions)").await.unwrap();
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 5, "{v}");
}
