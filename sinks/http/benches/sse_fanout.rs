//! The web board's live stream under load, end to end through the real release `atmd`: many
//! `/events` clients connected while status lines arrive on the hooks socket at a fixed rate;
//! the latency from the hook line written to the change read at a client, for timed SSE
//! clients and, in the same run on the same changes (interleaved by construction), for timed
//! protocol-v1 subscribers of the socket sink. Also: atmd's memory per connected SSE client,
//! and the bytes of the board's first load.
//!
//! Scenarios: `ATM_BENCH_SSE=CLIENTSxRATE,...` (default `1000x1000,1000x100,100x1000`), each
//! for `ATM_BENCH_SSE_SECS` seconds (default 5). Of the clients, 8 are timed (they scan every
//! byte for the change's marker); the others read and discard, as a browser tab that draws
//! nothing would. 8 socket subscribers are timed the same way.
//!
//! Run: `cargo build --release -p atm-daemon -p atm-cli --bins` then
//! `cargo bench -p sink-http --bench sse_fanout` (`./scripts/bench` does both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark, not the daemon

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atm_tests::{Daemon, FakeAgent, basic_config, hook, proc_status_kib, status};
use serde_json::json;

const TIMED: usize = 8;
/// Sessions the updates go round (so coalescing per session is possible).
const SESSIONS: usize = 20;

/// First time each marker (a cost, `"cost_usd":N.0`) was seen by one client.
type Seen = Arc<Mutex<Vec<Option<Instant>>>>;

/// Scans `read` for `"cost_usd":N` and records when each N was first seen.
fn scan(mut read: impl Read, seen: Seen, first_bytes: Arc<AtomicUsize>) {
    const NEEDLE: &[u8] = b"\"cost_usd\":";
    let mut buf = vec![0u8; 256 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut counted = false;
    loop {
        let n = match read.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        if !counted {
            first_bytes.fetch_add(1, Ordering::Relaxed);
            counted = true;
        }
        carry.extend_from_slice(&buf[..n]);
        let mut i = 0;
        let mut found = Vec::new();
        while let Some(p) = carry[i..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
            let start = i + p + NEEDLE.len();
            let digits = carry[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if start + digits >= carry.len() {
                i += p; // the number may go on in the next read
                break;
            }
            if let Ok(k) = std::str::from_utf8(&carry[start..start + digits])
                .unwrap_or("")
                .parse::<usize>()
            {
                found.push(k);
            }
            i = start + digits;
        }
        if !found.is_empty() {
            let mut s = seen.lock().unwrap();
            for k in found {
                if let Some(slot) = s.get_mut(k)
                    && slot.is_none()
                {
                    *slot = Some(at);
                }
            }
        }
        carry.drain(..i.min(carry.len()));
        if carry.len() > 64 {
            let keep = carry.len() - 64;
            carry.drain(..keep);
        }
    }
}

fn sse_stream(addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let req =
        format!("GET /events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s
}

fn socket_stream(d: &Daemon) -> UnixStream {
    let mut sub = UnixStream::connect(d.query_socket()).unwrap();
    for mut msg in [
        json!({"type": "connect", "client_id": "bench"}),
        json!({"type": "subscribe"}),
    ] {
        msg["protocol_version"] = json!({"major": 1, "minor": 0});
        sub.write_all(format!("{msg}\n").as_bytes()).unwrap();
    }
    sub
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies (ms) of every marker each client saw, and the share of markers seen.
fn latencies(sent: &[Instant], clients: &[Seen]) -> (Vec<f64>, f64) {
    let mut all = Vec::new();
    let mut seen = 0usize;
    for c in clients {
        let c = c.lock().unwrap();
        for (k, t) in c.iter().enumerate().skip(1) {
            if let (Some(t), Some(s)) = (t, sent.get(k)) {
                all.push(t.saturating_duration_since(*s).as_secs_f64() * 1000.0);
                seen += 1;
            }
        }
    }
    all.sort_by(f64::total_cmp);
    let share = seen as f64 / ((sent.len().saturating_sub(1)) * clients.len()).max(1) as f64;
    (all, share)
}

fn get_bytes(addr: SocketAddr, path: &str, cookie: &str) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\ncookie: atm_web={cookie}\r\naccept-encoding: gzip, br\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert!(all.starts_with(b"HTTP/1.1 200"), "{path}");
    all.len()
}

/// [`Daemon::start_with_hooks`], logging warnings only (the harness asks for debug, which at
/// thousands of lines a second would measure the logger).
fn quiet_daemon(config: &str) -> Daemon {
    // `env` runs atmd with RUST_LOG replaced.
    let d = Daemon::start_wrapped(config, vec!["env".into(), "RUST_LOG=warn".into()]);
    d.wait_for_socket(&d.hooks_socket());
    d
}

fn scenario(clients: usize, rate: usize, secs: u64) {
    let config = basic_config(&format!(
        "[[sink]]\ntype = \"http\"\nlisten = \"127.0.0.1:0\"\nmax_clients = {}\n",
        clients + 100
    ))
    .replacen("log = \"debug\"", "log = \"warn\"\nworker_threads = 2", 1);
    let d = quiet_daemon(&config);
    let atm_tests::WebBoard { addr, token, .. } = d.web_board();
    let pid = d.pid() as u32;

    // The sessions, before anyone connects.
    let agents: Vec<FakeAgent> = (0..SESSIONS).map(|_| FakeAgent::spawn()).collect();
    let start_lines: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            hook(
                json!({"hook_event_name": "SessionStart", "session_id": format!("bench-{i}"),
                "cwd": "/w", "pid": a.pid(), "source": "startup"}),
            )
        })
        .collect();
    d.send_hooks(&start_lines);
    d.wait_sessions("the sessions", |s| s.len() == SESSIONS);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = proc_status_kib(pid, "VmRSS:");

    // The clients: timed ones on threads, the rest drained by one thread each batch.
    let total = rate * secs as usize + 1;
    let started = Arc::new(AtomicUsize::new(0));
    let mut sse_timed = Vec::new();
    let mut socket_timed = Vec::new();
    for _ in 0..TIMED {
        let seen: Seen = Arc::new(Mutex::new(vec![None; total]));
        let s = sse_stream(addr, &token);
        let (seen2, st) = (seen.clone(), started.clone());
        std::thread::spawn(move || scan(s, seen2, st));
        sse_timed.push(seen);
        let seen: Seen = Arc::new(Mutex::new(vec![None; total]));
        let s = socket_stream(&d);
        let (seen2, st) = (seen.clone(), Arc::new(AtomicUsize::new(0)));
        std::thread::spawn(move || scan(s, seen2, st));
        socket_timed.push(seen);
    }
    let drained = clients.saturating_sub(TIMED);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let drain_started = started.clone();
    let drainers = std::thread::spawn({
        let token = token.clone();
        move || {
            rt.block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut tasks = Vec::new();
                for _ in 0..drained {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let req = format!(
                        "GET /events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n"
                    );
                    s.write_all(req.as_bytes()).await.unwrap();
                    let st = drain_started.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut first = true;
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if first {
                                st.fetch_add(1, Ordering::Relaxed);
                                first = false;
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        }
    });
    atm_core::testing::wait_until_blocking_within(
        Duration::from_secs(60),
        "every client's snapshot",
        || started.load(Ordering::Relaxed) >= clients,
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss_connected = proc_status_kib(pid, "VmRSS:");
    let per_client = (rss_connected.saturating_sub(rss_before)) as f64 * 1024.0 / clients as f64;

    // The load: status lines at `rate` per second, each a new cost on the next session.
    let mut hooks = UnixStream::connect(d.hooks_socket()).unwrap();
    let mut sent = vec![Instant::now(); total];
    let t0 = Instant::now();
    let mut peak_rss = rss_connected;
    for (k, slot) in sent.iter_mut().enumerate().skip(1) {
        let due = t0 + Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let i = k % SESSIONS;
        let line = status(
            json!({"session_id": format!("bench-{i}"), "pid": agents[i].pid(),
            "cost": {"total_cost_usd": k}}),
        );
        let mut bytes = serde_json::to_vec(&line).unwrap();
        bytes.push(b'\n');
        *slot = Instant::now();
        hooks.write_all(&bytes).unwrap();
        if k % rate == 0 {
            peak_rss = peak_rss.max(proc_status_kib(pid, "VmRSS:"));
        }
    }
    let sending = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (sse, sse_share) = latencies(&sent, &sse_timed);
    let (sock, sock_share) = latencies(&sent, &socket_timed);
    let ratio = pct(&sse, 0.99) / pct(&sock, 0.99);
    println!(
        "| {clients} | {rate}/s ({:.1} s) | {:.1} / {:.1} ms ({:.0}% seen) | {:.1} / {:.1} ms ({:.0}% seen) | {ratio:.2}x | {:.1} KiB | {} MiB |",
        sending.as_secs_f64(),
        pct(&sse, 0.5),
        pct(&sse, 0.99),
        sse_share * 100.0,
        pct(&sock, 0.5),
        pct(&sock, 0.99),
        sock_share * 100.0,
        per_client / 1024.0,
        peak_rss / 1024,
    );
    drop(hooks);
    drop(d);
    let _ = drainers.join();
}

fn main() {
    let scenarios =
        std::env::var("ATM_BENCH_SSE").unwrap_or_else(|_| "1000x1000,1000x100,100x1000".to_owned());
    let secs = std::env::var("ATM_BENCH_SSE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    // First load: the page, its script and its style, as a logged-in browser fetches them.
    {
        let d = Daemon::start(&basic_config(
            "[[sink]]\ntype = \"http\"\nlisten = \"127.0.0.1:0\"\n",
        ));
        let board = d.web_board();
        let bytes: usize = ["/", "/board.js", "/board.css"]
            .iter()
            .map(|p| get_bytes(board.addr, p, &board.token))
            .sum();
        println!(
            "\nFirst load of the board: {bytes} bytes transferred (page, script, style, with headers; uncompressed; assets {} bytes)\n",
            sink_http::first_load_bytes()
        );
    }

    println!(
        "| SSE clients | hook lines | SSE p50 / p99 | socket p50 / p99 | p99 SSE/socket | atmd memory per SSE client | atmd peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in scenarios.split(',') {
        let Some((c, r)) = s.split_once('x') else {
            panic!("ATM_BENCH_SSE: CLIENTSxRATE, e.g. 1000x1000");
        };
        scenario(c.trim().parse().unwrap(), r.trim().parse().unwrap(), secs);
    }
}
