//! Load benchmark: a protocol-v1 load generator against the real `atmd`, always beside the
//! reference server (`atm-reference-server`) in the same run, so figures are ratios that hold on a
//! noisy 2-core machine.
//!
//! Run: `./scripts/bench` (builds the release binaries, then `cargo bench -p atm-tests --bench load`).
//! Scenarios (pick with `ATM_BENCH=burst,stuck,instructions,latency,scale,idle`; default all):
//! - burst: 20,000 hook events over 4 connections, 5 subscribers, sessions backed by live
//!   processes; send rate, events applied per second, updates and resyncs per subscriber, and
//!   whether every subscriber ends with the right final state.
//! - stuck: the same burst with one extra subscriber that never reads.
//! - latency: 1,000 events/s paced, with 5 and with 100 subscribers; hook line written ->
//!   `session_updated` read, p50/p99/max.
//!
//! burst, stuck and latency run `ATM_BENCH_ROUNDS` rounds (default 7), the reference server and
//! atmd alternating which goes first, and report the median of the per-round ratios.
//! `ATM_BENCH_BASELINE=/path/to/older/atmd` adds that build as a third server in every round
//! (the three take turns going first) and reports the median of atmd / baseline too: how a change
//! is shown not to make atmd slower, measured in one process on the same noisy machine.
//! - instructions: 16,000 burst events with atmd under callgrind (valgrind): instructions per
//!   event, atmd against the baseline build; deterministic where wall-clock rates are not.
//! - one-per-event: 2,000 events, each on its own connection (as atm-hook does).
//! - scale: 10,000 sessions and 1,000 subscribers; memory per session, `list_sessions` time.
//! - idle: RSS and wake-ups per second of an idle atmd with the default plugins (95 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark, not the daemon

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atm_tests::proc_status_kib;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let p = dir.join(name);
    if !p.exists() {
        eprintln!(
            "{} is missing: build it first with `cargo build --release -p atm-daemon -p atm-cli -p atm-tests` (or run ./scripts/bench)",
            p.display()
        );
        std::process::exit(2);
    }
    p
}

struct Server {
    name: &'static str,
    child: Child,
    hooks: PathBuf,
    query: PathBuf,
    _dir: tempfile::TempDir,
}

thread_local! {
    /// The session bus the next atmd started on this thread gets (`None`: no bus at all).
    static SESSION_BUS: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

impl Server {
    fn atmd(config_extra: &str, default_plugins: bool) -> Server {
        Server::atmd_from(
            release_bin("atmd"),
            "atmd",
            config_extra,
            default_plugins,
            None,
        )
    }

    /// The build named by `ATM_BENCH_BASELINE`, if any.
    fn baseline_bin() -> Option<PathBuf> {
        let path = PathBuf::from(std::env::var_os("ATM_BENCH_BASELINE")?);
        if !path.is_file() {
            eprintln!(
                "ATM_BENCH_BASELINE={} is not a file: point it at an atmd binary",
                path.display()
            );
            std::process::exit(2);
        }
        Some(path)
    }

    fn atmd_from(
        bin: PathBuf,
        name: &'static str,
        config_extra: &str,
        default_plugins: bool,
        callgrind_out: Option<&Path>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let config = dir.path().join("plugins.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nlog = \"warn\"\n[[adapter]]\ntype = \"claude-hooks\"\n[[adapter]]\ntype = \"claude-statusline\"\n[[sink]]\ntype = \"socket\"\n# 1,000 subscribers plus the measuring clients.\nmax_clients = 1100\n{config_extra}"
            ),
        )
        .unwrap();
        let mut cmd = match callgrind_out {
            Some(out) => {
                let mut c = Command::new("valgrind");
                c.arg("--tool=callgrind")
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg("--dump-instr=no")
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        if !default_plugins {
            cmd.arg("--config").arg(&config);
        }
        cmd.env("XDG_RUNTIME_DIR", &run)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("HOME", dir.path())
            .env_remove("ATM_SOCKET")
            .env_remove("ATM_CONFIG")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        // ATM_BENCH_LOG=1 shows atmd's warnings, to explain a failed scenario.
        if std::env::var_os("ATM_BENCH_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        if let Some(bus) = SESSION_BUS.with(|b| b.borrow().clone()) {
            cmd.env("DBUS_SESSION_BUS_ADDRESS", bus);
        }
        let child = cmd.spawn().unwrap();
        let s = Server {
            name,
            child,
            hooks: run.join("atm/hooks.sock"),
            query: run.join("atm/atm.sock"),
            _dir: dir,
        };
        s.wait_ready();
        s
    }

    fn reference() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks.sock");
        let query = dir.path().join("atm.sock");
        let child = Command::new(release_bin("atm-reference-server"))
            .arg(&hooks)
            .arg(&query)
            .spawn()
            .unwrap();
        let s = Server {
            name: "reference",
            child,
            hooks,
            query,
            _dir: dir,
        };
        s.wait_ready();
        s
    }

    /// Server `which` of a comparison: 0 the reference, 1 atmd, 2 the baseline build (see
    /// [`order`]).
    fn compared(which: usize, baseline: &Option<PathBuf>) -> Server {
        match (which, baseline) {
            (0, _) => Server::reference(),
            (2, Some(bin)) => Server::atmd_from(bin.clone(), "baseline", "", false, None),
            _ => Server::atmd("", false),
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.query).is_ok()
                && std::os::unix::net::UnixStream::connect(&self.hooks).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not start", self.name);
    }

    fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
    }

    fn context_switches(&self) -> u64 {
        let mut total = 0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) {
            for t in tasks.flatten() {
                let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                for l in s.lines() {
                    if l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                    {
                        total += l
                            .split_whitespace()
                            .nth(1)
                            .and_then(|x| x.parse::<u64>().ok())
                            .unwrap_or(0);
                    }
                }
            }
        }
        total
    }
}

impl Server {
    /// Stops the server with SIGTERM (a clean exit, so callgrind writes its counts) and waits.
    fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hook_line(session: usize, seq: u64, pid: Option<u32>) -> Vec<u8> {
    let mut data = json!({
        "hook_event_name": "PreToolUse",
        "session_id": format!("bench-{session}"),
        "tool_name": format!("T{seq}"),
        "tool_input": {"command": "cargo test"},
        "cwd": "/tmp",
    });
    if let Some(pid) = pid {
        data["pid"] = json!(pid);
    }
    let mut l = serde_json::to_vec(
        &json!({"protocol_version": {"major": 1, "minor": 0}, "type": "hook_event", "data": data}),
    )
    .unwrap();
    l.push(b'\n');
    l
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    updates: u64,
    resyncs: u64,
    /// Latest activity (`T<seq>`) per session.
    latest: HashMap<String, String>,
    /// Receive time of each seq (latency scenarios).
    received: HashMap<u64, Instant>,
}

async fn connect(
    query: &Path,
    filter: Option<&str>,
) -> (
    BufReader<tokio::net::unix::OwnedReadHalf>,
    tokio::net::unix::OwnedWriteHalf,
) {
    let s = UnixStream::connect(query).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"{\"protocol_version\":{\"major\":1,\"minor\":0},\"type\":\"connect\",\"client_id\":\"bench\"}\n").await.unwrap();
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let sub = match filter {
        Some(id) => format!(
            "{{\"protocol_version\":{{\"major\":1,\"minor\":0}},\"type\":\"subscribe\",\"session_id\":\"{id}\"}}\n"
        ),
        None => {
            "{\"protocol_version\":{\"major\":1,\"minor\":0},\"type\":\"subscribe\"}\n".to_owned()
        }
    };
    w.write_all(sub.as_bytes()).await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    (r, w)
}

fn apply_line(seen: &mut Seen, line: &str, record_times: bool) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    match v["type"].as_str() {
        Some("session_updated") => {
            seen.updates += 1;
            let s = &v["session"];
            if let (Some(id), Some(act)) = (s["id"].as_str(), s["activity_detail"].as_str()) {
                if record_times
                    && let Some(seq) = act.strip_prefix('T').and_then(|x| x.parse::<u64>().ok())
                {
                    seen.received.entry(seq).or_insert_with(Instant::now);
                }
                seen.latest.insert(id.to_owned(), act.to_owned());
            }
        }
        Some("session_list") => {
            seen.resyncs += 1;
            seen.latest.clear();
            for s in v["sessions"].as_array().into_iter().flatten() {
                if let (Some(id), Some(act)) = (s["id"].as_str(), s["activity_detail"].as_str()) {
                    seen.latest.insert(id.to_owned(), act.to_owned());
                }
            }
        }
        _ => {}
    }
}

fn spawn_subscriber(
    query: PathBuf,
    record_times: bool,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut r, _w) = connect(&query, None).await;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => apply_line(&mut *seen.lock().await, &line, record_times),
            }
        }
    })
}

struct Burst {
    send_rate: f64,
    applied_rate: f64,
    updates: Vec<u64>,
    resyncs: Vec<u64>,
    correct: Vec<bool>,
    rss_mib: f64,
    cpu_s: f64,
}

async fn burst(
    server: &Server,
    events: u64,
    conns: usize,
    subs: usize,
    stuck: usize,
    pids: &[u32],
) -> Burst {
    let sessions = pids.len();
    let seen: Vec<Arc<Mutex<Seen>>> = (0..subs).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = seen
        .iter()
        .map(|s| spawn_subscriber(server.query.clone(), false, s.clone()))
        .collect();
    let mut stuck_conns = Vec::new();
    for _ in 0..stuck {
        stuck_conns.push(connect(&server.query, None).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu0 = server.cpu_ticks();
    // Expected final activity per session: connection c owns sessions k with k % conns == c.
    let mut expected = HashMap::new();
    let per_conn: Vec<Vec<Vec<u8>>> = (0..conns)
        .map(|c| {
            let mut lines = Vec::new();
            let mut seq = c as u64;
            while seq < events {
                // Session k belongs to connection k % conns, so its events arrive in order.
                let k = ((seq as usize / conns) % (sessions / conns)) * conns + c;
                lines.push(hook_line(k, seq, Some(pids[k])));
                seq += conns as u64;
            }
            lines
        })
        .collect();
    for lines in &per_conn {
        for line in lines {
            let v: Value = serde_json::from_slice(line).unwrap();
            let k = v["data"]["session_id"].as_str().unwrap().to_owned();
            expected.insert(k, v["data"]["tool_name"].as_str().unwrap().to_owned());
        }
    }
    let start = Instant::now();
    let writers: Vec<_> = per_conn
        .into_iter()
        .map(|lines| {
            let hooks = server.hooks.clone();
            tokio::spawn(async move {
                let mut s = UnixStream::connect(&hooks).await.unwrap();
                let mut buf = Vec::with_capacity(64 * 1024);
                for l in lines {
                    buf.extend_from_slice(&l);
                    if buf.len() > 32 * 1024 {
                        s.write_all(&buf).await.unwrap();
                        buf.clear();
                    }
                }
                s.write_all(&buf).await.unwrap();
                s.flush().await.unwrap();
                // Keep the connection until the server has read everything.
                s
            })
        })
        .collect();
    let mut conns_open = Vec::new();
    for w in writers {
        conns_open.push(w.await.unwrap());
    }
    let send_time = start.elapsed();
    // Wait until every subscriber shows the expected final state (or 20 s, longer for a big
    // burst under callgrind).
    let deadline = Instant::now() + Duration::from_secs(20).max(Duration::from_millis(events * 3));
    let mut correct = vec![false; subs];
    let mut applied_at = send_time;
    while Instant::now() < deadline {
        for (i, s) in seen.iter().enumerate() {
            if !correct[i] {
                let s = s.lock().await;
                correct[i] = expected.iter().all(|(k, v)| s.latest.get(k) == Some(v));
            }
        }
        if correct.iter().all(|c| *c) {
            applied_at = start.elapsed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_s = (server.cpu_ticks() - cpu0) as f64 / 100.0;
    let rss_mib = server.rss_kib() as f64 / 1024.0;
    drop(conns_open);
    drop(stuck_conns);
    for t in &tasks {
        t.abort();
    }
    let mut updates = Vec::new();
    let mut resyncs = Vec::new();
    for s in &seen {
        let s = s.lock().await;
        updates.push(s.updates);
        resyncs.push(s.resyncs);
    }
    Burst {
        send_rate: events as f64 / send_time.as_secs_f64(),
        applied_rate: events as f64 / applied_at.as_secs_f64(),
        updates,
        resyncs,
        correct,
        rss_mib,
        cpu_s,
    }
}

/// CPU instructions atmd executes per hook event in a burst, counted by callgrind: the same
/// count for the same binary and input whatever else the machine does, so it shows a 5% change
/// that wall-clock rates on a shared machine cannot. Compared with the baseline build when one is
/// given. Skipped without valgrind.
async fn instructions(baseline: &Option<PathBuf>, pids: &[u32]) {
    const EVENTS: u64 = 16_000;
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("\n## instructions: skipped (valgrind is not installed)");
        return;
    }
    let rounds = rounds().min(3);
    println!(
        "\n## instructions: {EVENTS} hook events, 4 connections, 5 subscribers, under callgrind; {rounds} rounds"
    );
    println!("| round | server | instructions per event | all final states right |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let mut per_event = [0.0f64; 2];
        let mut servers: Vec<(usize, &'static str, Option<PathBuf>)> = vec![
            (0, "atmd", Some(release_bin("atmd"))),
            (1, "baseline", baseline.clone()),
        ];
        // Taking turns going first, as in the other comparisons.
        if round % 2 == 0 {
            servers.reverse();
        }
        for (i, name, bin) in servers {
            let Some(bin) = bin else { continue };
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("callgrind.out");
            let server = Server::atmd_from(bin, name, "", false, Some(&out));
            let b = burst(&server, EVENTS, 4, 5, 0, pids).await;
            server.terminate();
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let total: f64 = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(f64::NAN);
            per_event[i] = total / EVENTS as f64;
            let right = b.correct.iter().all(|c| *c);
            println!("| {round} | {name} | {:.0} | {right} |", per_event[i]);
        }
        if baseline.is_some() {
            ratios.push(per_event[0] / per_event[1]);
        }
    }
    if !ratios.is_empty() {
        println!(
            "atmd instructions / baseline build, per round: {}",
            list(&ratios)
        );
        println!(
            "median: {:.2} (target <= 1.05: not slower)",
            median(&ratios)
        );
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// Paced events; returns latencies (send -> receive, every subscriber) and how many were missed.
async fn latency(
    server: &Server,
    rate: u64,
    seconds: u64,
    subs: usize,
    pids: &[u32],
) -> (Vec<Duration>, u64) {
    let seen: Vec<Arc<Mutex<Seen>>> = (0..subs).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = seen
        .iter()
        .map(|s| spawn_subscriber(server.query.clone(), true, s.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = rate * seconds;
    let mut sent: Vec<Instant> = Vec::with_capacity(total as usize);
    let mut s = UnixStream::connect(&server.hooks).await.unwrap();
    let start = Instant::now();
    let base = 1_000_000u64;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let k = (i as usize) % pids.len();
        let line = hook_line(k, base + i, Some(pids[k]));
        sent.push(Instant::now());
        s.write_all(&line).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for t in &tasks {
        t.abort();
    }
    let mut lat = Vec::new();
    let mut missed = 0;
    for sub in &seen {
        let sub = sub.lock().await;
        for (i, t0) in sent.iter().enumerate() {
            match sub.received.get(&(base + i as u64)) {
                Some(t1) => lat.push(t1.saturating_duration_since(*t0)),
                None => missed += 1,
            }
        }
    }
    lat.sort();
    (lat, missed)
}

async fn one_per_event(server: &Server, events: u64, pids: &[u32]) -> f64 {
    let start = Instant::now();
    for i in 0..events {
        let k = (i as usize) % pids.len();
        let mut s = UnixStream::connect(&server.hooks).await.unwrap();
        s.write_all(&hook_line(k, 2_000_000 + i, Some(pids[k])))
            .await
            .unwrap();
    }
    events as f64 / start.elapsed().as_secs_f64()
}

async fn scale(server: &Server, sessions: usize, subscribers: usize) -> (f64, Vec<Duration>, f64) {
    let mut subs = Vec::new();
    for i in 0..subscribers {
        // Each subscriber follows one session (a filter), as a status-bar widget would.
        subs.push(
            connect(
                &server.query,
                Some(&format!("bench-{}", i * (sessions / subscribers))),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = server.rss_kib();
    let mut s = UnixStream::connect(&server.hooks).await.unwrap();
    let mut buf = Vec::new();
    for k in 0..sessions {
        buf.extend_from_slice(&hook_line(k, k as u64, None));
    }
    s.write_all(&buf).await.unwrap();
    // Wait until all sessions are listed.
    let s2 = UnixStream::connect(&server.query).await.unwrap();
    let (r, mut w) = s2.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"{\"protocol_version\":{\"major\":1,\"minor\":0},\"type\":\"connect\"}\n")
        .await
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut times = Vec::new();
    while Instant::now() < deadline {
        line.clear();
        let t0 = Instant::now();
        w.write_all(
            b"{\"protocol_version\":{\"major\":1,\"minor\":0},\"type\":\"list_sessions\"}\n",
        )
        .await
        .unwrap();
        r.read_line(&mut line).await.unwrap();
        let took = t0.elapsed();
        let n = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["sessions"].as_array().map(Vec::len))
            .unwrap_or(0);
        if n >= sessions {
            times.push(took);
            if times.len() >= 7 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = server.rss_kib();
    times.sort();
    let per_session = (rss1.saturating_sub(rss0) as f64 * 1024.0) / sessions as f64;
    drop(subs);
    (per_session, times, rss1 as f64 / 1024.0)
}

/// Rounds per comparative scenario (`ATM_BENCH_ROUNDS`, default 7). One round of a scenario on
/// a shared 2-core machine can be off by 2x either way; the median of interleaved rounds holds.
fn rounds() -> usize {
    std::env::var("ATM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(7)
}

/// The order of the servers in a round: with two, alternating; with a baseline, each of the three
/// goes first, second and last in turn. Slow drift of the machine favours none of them.
fn order(round: usize, baseline: &Option<PathBuf>) -> Vec<usize> {
    if baseline.is_none() {
        return if round % 2 == 1 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
    }
    let first = round % 3;
    (0..3).map(|i| (first + i) % 3).collect()
}

/// The closing lines of a comparative scenario: atmd against the reference, and against the
/// baseline build when there is one.
fn report_ratios(
    what: &str,
    ratios: &[f64],
    target: &str,
    baseline_ratios: &[f64],
    baseline_target: &str,
) {
    println!("atmd {what} / reference, per round: {}", list(ratios));
    println!("median: {:.2} ({target})", median(ratios));
    if !baseline_ratios.is_empty() {
        println!(
            "atmd {what} / baseline build, per round: {}",
            list(baseline_ratios)
        );
        println!("median: {:.2} ({baseline_target})", median(baseline_ratios));
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn list(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn wanted(name: &str) -> bool {
    match std::env::var("ATM_BENCH") {
        Ok(list) if !list.is_empty() => list.split(',').any(|x| x.trim() == name),
        _ => true,
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let rt = atm_tests::bench_runtime();
    let sessions = 200;
    let agents: Vec<Child> = (0..sessions)
        .map(|_| Command::new("sleep").arg("3600").spawn().unwrap())
        .collect();
    let pids: Vec<u32> = agents.iter().map(Child::id).collect();
    println!(
        "# atm load benchmark: {} cores, {sessions} sessions backed by live processes",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    rt.block_on(async {
        let rounds = rounds();
        let baseline = Server::baseline_bin();
        if wanted("burst") || wanted("stuck") {
            for (label, stuck) in [("burst", 0usize), ("stuck", 1)] {
                if !wanted(label) {
                    continue;
                }
                println!("\n## {label}: 20,000 hook events, 4 connections, 5 subscribers{}; {rounds} rounds, servers alternating", if stuck > 0 { " + 1 that never reads" } else { "" });
                println!("| round | server | send rate (ev/s) | applied (ev/s) | updates per subscriber | resyncs | all final states right | RSS MiB | CPU s |");
                println!("|---|---|---|---|---|---|---|---|---|");
                let (mut ratios, mut baseline_ratios) = (Vec::new(), Vec::new());
                let mut cpu_ratios = Vec::new();
                let mut all_right = true;
                for round in 1..=rounds {
                    let mut rate = [0.0f64; 3];
                    let mut cpu = [0.0f64; 3];
                    for which in order(round, &baseline) {
                        let server = Server::compared(which, &baseline);
                        let b = burst(&server, 20_000, 4, 5, stuck, &pids).await;
                        let right = b.correct.iter().all(|c| *c);
                        // The reference drops updates for a full queue by design; only atmd
                        // must deliver everything.
                        if which == 1 {
                            all_right &= right && b.updates.iter().zip(&b.resyncs).all(|(u, r)| *u == 20_000 || *r > 0);
                        }
                        println!(
                            "| {round} | {} | {:.0} | {:.0} | {:?} | {:?} | {right} | {:.1} | {:.2} |",
                            server.name, b.send_rate, b.applied_rate, b.updates, b.resyncs, b.rss_mib, b.cpu_s
                        );
                        rate[which] = b.send_rate;
                        cpu[which] = b.cpu_s;
                    }
                    ratios.push(rate[1] / rate[0]);
                    if baseline.is_some() {
                        baseline_ratios.push(rate[1] / rate[2]);
                        cpu_ratios.push(cpu[1] / cpu[2].max(1e-9));
                    }
                }
                report_ratios("send rate", &ratios, "target >= 0.90", &baseline_ratios, "target >= 0.95: not slower");
                if !cpu_ratios.is_empty() {
                    // CPU time spent on the same 20,000 events: far steadier than a wall-clock
                    // rate when the machine is busy with other work.
                    println!("atmd CPU s / baseline build CPU s, per round: {}", list(&cpu_ratios));
                    println!("median: {:.2} (target <= 1.05: not slower)", median(&cpu_ratios));
                }
                println!("every atmd subscriber got every update or a resync, and the right final states: {all_right}");
            }
        }
        if wanted("instructions") {
            instructions(&baseline, &pids).await;
        }
        if wanted("latency") {
            for subs in [5usize, 100] {
                println!("\n## latency: 1,000 events/s for 3 s, {subs} subscribers (hook line written -> session_updated read); {rounds} rounds, servers alternating");
                println!("| round | server | p50 ms | p99 ms | max ms | missed |");
                println!("|---|---|---|---|---|---|");
                let (mut ratios, mut baseline_ratios) = (Vec::new(), Vec::new());
                for round in 1..=rounds {
                    let mut p99 = [Duration::ZERO; 3];
                    for which in order(round, &baseline) {
                        let server = Server::compared(which, &baseline);
                        let (lat, missed) = latency(&server, 1000, 3, subs, &pids).await;
                        println!("| {round} | {} | {} | {} | {} | {missed} |", server.name, ms(pct(&lat, 0.5)), ms(pct(&lat, 0.99)), ms(pct(&lat, 1.0)));
                        p99[which] = pct(&lat, 0.99);
                    }
                    ratios.push(p99[1].as_secs_f64() / p99[0].as_secs_f64().max(1e-9));
                    if baseline.is_some() {
                        baseline_ratios.push(p99[1].as_secs_f64() / p99[2].as_secs_f64().max(1e-9));
                    }
                }
                report_ratios("p99", &ratios, "target <= 1.50", &baseline_ratios, "target <= 1.05: not slower");
            }
        }
        if wanted("one-per-event") {
            println!("\n## one connection per event (as atm-hook does): 2,000 events");
            println!("| server | events/s |");
            println!("|---|---|");
            for server in [Server::reference(), Server::atmd("", false)] {
                println!("| {} | {:.0} |", server.name, one_per_event(&server, 2000, &pids).await);
            }
        }
        if wanted("scale") {
            println!("\n## scale: 10,000 sessions, 1,000 subscribers (atmd)");
            let server = Server::atmd("", false);
            let (per_session, times, rss) = scale(&server, 10_000, 1_000).await;
            println!("| memory per session | list_sessions p50 | list_sessions max | RSS MiB |");
            println!("|---|---|---|---|");
            println!("| {:.0} B | {} ms | {} ms | {rss:.1} |", per_session, ms(pct(&times, 0.5)), ms(pct(&times, 1.0)));
        }
        if wanted("idle") {
            // Steady idle: past the start, and past the first reconnection attempts of the D-Bus
            // sinks when there is no session bus (their backoff doubles to 30 s). With a private
            // session bus, as on a desktop, and without one. Discovery paces itself by the agents
            // it sees: on a machine that runs agents, run this in a PID namespace of its own
            // (`unshare --pid --fork --mount-proc`) to measure the idle pace.
            let bus = atm_core::testing::PrivateBus::start();
            for (what, address) in [("a private session bus", Some(bus.address.clone())), ("no session bus", None)] {
                println!("\n## idle: atmd with the default plugins, 30 s after 65 s of warm-up, {what}");
                SESSION_BUS.with(|b| *b.borrow_mut() = address);
                let server = Server::atmd("", true);
                tokio::time::sleep(Duration::from_secs(65)).await;
                let (c0, t0, w0) = (server.cpu_ticks(), Instant::now(), server.context_switches());
                tokio::time::sleep(Duration::from_secs(30)).await;
                let secs = t0.elapsed().as_secs_f64();
                let cpu = (server.cpu_ticks() - c0) as f64 / 100.0 / secs * 100.0;
                let wakeups = (server.context_switches() - w0) as f64 / secs;
                let anon = proc_status_kib(server.child.id(), "RssAnon:") as f64 / 1024.0;
                println!("| RSS MiB (anonymous) | CPU % of one core | wake-ups/s (context switches, all threads) |");
                println!("|---|---|---|");
                println!("| {:.1} ({anon:.1}) | {cpu:.2} | {wakeups:.2} |", server.rss_kib() as f64 / 1024.0);
            }
            SESSION_BUS.with(|b| *b.borrow_mut() = None);
        }
    });
    for mut c in agents {
        let _ = c.kill();
        let _ = c.wait();
    }
}
