//! The fleet at a hub (issue 18): 50 simulated hosts with 20 sessions each write the
//! JetStream bucket at 10 updates per second per host, and the real `atmd` hub (the `nats`
//! adapter and the socket sink) mirrors them. Measured:
//!
//! - **convergence**: from a host's `put` until the hub's query socket sends the updated
//!   session (p50, p99, max; the issue asks p99 at most 250 ms), against a reference taken in
//!   the same run on the same puts: a raw JetStream watcher in this process seeing the value
//!   (what NATS alone costs);
//! - **restart**: a real `nats` sink (in this process, a registry of 20 sessions, 5 of them
//!   ended and 5 new while it was stopped) starting again, until the hub lists exactly its
//!   sessions (the issue asks at most 1 s); median of several rounds;
//! - **hub cost**: the hub's CPU time over the steady phase (as a share of one core, and per
//!   remote session) and its resident memory per remote session (after the load, against
//!   before).
//!
//! A simulated host writes what a `nats` sink writes (the same keys and entry JSON, a heartbeat
//! every 5 s), over a NATS connection of its own. Run: `cargo build --release -p atm-daemon
//! -p atm-cli --bins` then `cargo bench -p atm-tests --bench fleet` (`./scripts/bench`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark, not the daemon

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atm_core::fleet::{
    ENTRY_VERSION, HostEntry, NatsConnection, SessionEntry, host_key, session_kv_key,
};
use atm_core::testing::nats::NatsServer;
use atm_core::{AgentState, HostId, Session, SessionId, SessionKey};
use atm_tests::{Daemon, subscribe_stamped};
use futures_util::StreamExt;
use serde_json::Value;

const HOSTS: usize = 50;
const SESSIONS: usize = 20;
const UPDATES_PER_SEC: u64 = 10;
const STEADY: Duration = Duration::from_secs(10);
const RESTARTS: usize = 7;

type Sent = Arc<Mutex<HashMap<(String, String, u64), Instant>>>;

fn host(i: usize) -> HostId {
    HostId::parse(&format!("h{i:03}")).unwrap()
}

fn session(h: &HostId, j: usize) -> Session {
    let id = format!("{h}-s{j:02}");
    let key = SessionKey::Id {
        harness: atm_core::Harness::claude(),
        id: SessionId::new(id.clone()),
    };
    let mut s = Session::new(
        key,
        SessionId::new(id),
        None,
        "claude-hooks",
        atm_core::chrono::Utc::now(),
    );
    s.host = h.clone();
    s.state = AgentState::Working;
    s.cwd = Some(format!("/home/dev/src/project-{j}"));
    s.model_name = Some("Opus".into());
    s.activity = Some("Bash".into());
    s
}

fn value(h: &HostId, s: &Session) -> bytes::Bytes {
    serde_json::to_vec(&SessionEntry {
        v: ENTRY_VERSION,
        host: h.clone(),
        session: s.clone(),
    })
    .unwrap()
    .into()
}

fn beat(h: &HostId) -> bytes::Bytes {
    serde_json::to_vec(&HostEntry {
        v: ENTRY_VERSION,
        host: h.clone(),
        heartbeat_ms: 5000,
        sessions: SESSIONS,
        at: atm_core::chrono::Utc::now(),
    })
    .unwrap()
    .into()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `p50 …, p99 …, max …` of sorted latencies.
fn percentiles(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(sorted, 0.5),
        pct(sorted, 0.99),
        pct(sorted, 1.0)
    )
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn hub_count(hub: &Daemon) -> usize {
    hub.client()
        .list()
        .iter()
        .filter(|s| s["remote"] == true)
        .count()
}

async fn open(url: &str) -> (async_nats::Client, async_nats::jetstream::kv::Store) {
    let client = async_nats::connect(url).await.unwrap();
    let cfg = NatsConnection {
        servers: vec![url.to_owned()],
        ..Default::default()
    };
    let settings = atm_core::fleet::BucketSettings { replicas: 1 };
    let kv = atm_core::fleet::open_bucket(&client, &cfg, Some(settings))
        .await
        .unwrap();
    (client, kv)
}

fn main() {
    let rt = atm_tests::bench_runtime();
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let url = server.url();
    let hub = Daemon::start(&format!(
        "[daemon]\nhost = \"hub\"\nlog = \"info\"\n\n[[sink]]\ntype = \"socket\"\n\n\
         [[adapter]]\ntype = \"nats\"\nservers = [\"{url}\"]\n"
    ));
    let hub_pid = hub.pid() as u32;
    rt.block_on(open(&url)); // the bucket exists before the hosts write
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = atm_tests::proc_status_kib(hub_pid, "VmRSS:");

    // Load: every host's sessions and heartbeat.
    let hosts: Vec<(HostId, async_nats::Client, async_nats::jetstream::kv::Store)> =
        rt.block_on(async {
            let mut v = Vec::new();
            for i in 0..HOSTS {
                let (c, kv) = open(&url).await;
                v.push((host(i), c, kv));
            }
            v
        });
    let loaded = Instant::now();
    rt.block_on(async {
        for (h, _, kv) in &hosts {
            for j in 0..SESSIONS {
                let s = session(h, j);
                kv.put(session_kv_key(h, &s.key), value(h, &s))
                    .await
                    .unwrap();
            }
            kv.put(host_key(h), beat(h)).await.unwrap();
        }
    });
    atm_core::testing::wait_until_blocking_within(
        Duration::from_secs(60),
        "the hub mirrors every host's sessions",
        || hub_count(&hub) == HOSTS * SESSIONS,
    );
    let load_took = loaded.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss_loaded = atm_tests::proc_status_kib(hub_pid, "VmRSS:");

    // Steady: 10 updates per second per host, each stamped with a sequence number.
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let updates = subscribe_stamped(&hub.query_socket());
    let reference: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (sent, reference) = (sent.clone(), reference.clone());
        let kv = hosts[0].2.clone();
        rt.spawn(async move {
            let mut w = kv.watch(">").await.unwrap();
            while let Some(Ok(e)) = w.next().await {
                let at = Instant::now();
                let Ok(v) = serde_json::from_slice::<Value>(&e.value) else {
                    continue;
                };
                let s = &v["session"];
                let (Some(h), Some(id), Some(seq)) = (
                    v["host"].as_str(),
                    s["id"].as_str(),
                    s["usage"]["output_tokens"].as_u64(),
                ) else {
                    continue;
                };
                let key = (h.to_owned(), id.to_owned(), seq);
                if let Some(t) = sent.lock().unwrap().get(&key) {
                    reference.lock().unwrap().push(at.duration_since(*t));
                }
            }
        })
    };
    let hub_latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (sent, lat) = (sent.clone(), hub_latencies.clone());
        std::thread::spawn(move || {
            while let Ok((at, line)) = updates.recv_timeout(STEADY + Duration::from_secs(5)) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["type"] != "session_updated" {
                    continue;
                }
                let s = &v["session"];
                let (Some(h), Some(id), Some(seq)) = (
                    s["host"].as_str(),
                    s["id"].as_str(),
                    s["output_tokens"].as_u64(),
                ) else {
                    continue;
                };
                if let Some(t) = sent
                    .lock()
                    .unwrap()
                    .get(&(h.to_owned(), id.to_owned(), seq))
                {
                    lat.lock().unwrap().push(at.duration_since(*t));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = cpu_secs(hub_pid);
    let wall0 = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, (h, _, kv)) in hosts.iter().enumerate() {
            let (h, kv, sent) = (h.clone(), kv.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                // Spread the hosts over the first period.
                tokio::time::sleep(Duration::from_millis((i as u64 * 100) / HOSTS as u64)).await;
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / UPDATES_PER_SEC));
                let mut sessions: Vec<Session> = (0..SESSIONS).map(|j| session(&h, j)).collect();
                let end = Instant::now() + STEADY;
                let mut seq = 0u64;
                let mut last_beat = Instant::now();
                while Instant::now() < end {
                    tick.tick().await;
                    seq += 1;
                    let s = &mut sessions[seq as usize % SESSIONS];
                    s.usage.output_tokens = seq;
                    s.state = if seq.is_multiple_of(2) {
                        AgentState::Working
                    } else {
                        AgentState::Idle
                    };
                    s.last_activity = atm_core::chrono::Utc::now();
                    let key = (h.to_string(), s.id.to_string(), seq);
                    sent.lock().unwrap().insert(key, Instant::now());
                    kv.put(session_kv_key(&h, &s.key), value(&h, s))
                        .await
                        .unwrap();
                    if last_beat.elapsed() >= Duration::from_secs(5) {
                        kv.put(host_key(&h), beat(&h)).await.unwrap();
                        last_beat = Instant::now();
                    }
                }
                seq
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        println!("updates sent: {total}");
    });
    let cpu = cpu_secs(hub_pid) - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    watcher.abort();
    drop(reader);
    let mut hub_lat = hub_latencies.lock().unwrap().clone();
    let mut ref_lat = reference.lock().unwrap().clone();
    hub_lat.sort();
    ref_lat.sort();
    let sent_n = sent.lock().unwrap().len();

    // Restart: a real sink, 20 sessions, 5 ended and 5 new while it was stopped.
    let restarts = rt.block_on(restart_rounds(&url, &hub));

    let remote = (HOSTS * SESSIONS) as f64;
    println!(
        "\n### Fleet at a hub ({HOSTS} hosts x {SESSIONS} sessions, {UPDATES_PER_SEC} updates/s per host)\n"
    );
    println!("| measure | value |\n|---|---|");
    println!(
        "| initial load ({} sessions) mirrored in | {:.0} ms |",
        HOSTS * SESSIONS,
        load_took.as_secs_f64() * 1000.0
    );
    println!(
        "| convergence at the hub's socket (n={}/{sent_n}) | {} |",
        hub_lat.len(),
        percentiles(&hub_lat)
    );
    println!(
        "| reference: raw JetStream watcher (n={}) | {} |",
        ref_lat.len(),
        percentiles(&ref_lat)
    );
    println!(
        "| host restart converged (median of {RESTARTS}, max) | {:.0} ms, {:.0} ms |",
        pct(&restarts, 0.5),
        pct(&restarts, 1.0)
    );
    println!(
        "| hub CPU, steady phase | {:.1}% of a core ({:.4}% per remote session) |",
        cpu / wall * 100.0,
        cpu / wall * 100.0 / remote
    );
    println!(
        "| hub memory (RSS) | {} KiB before, {} KiB with {} remote sessions: {:.1} KiB per session |",
        rss_before,
        rss_loaded,
        HOSTS * SESSIONS,
        rss_loaded.saturating_sub(rss_before) as f64 / remote
    );
    drop(hub);
    drop(server);
}

/// Rounds of a real `nats` sink restarting; each the time until the hub lists exactly the
/// host's sessions.
async fn restart_rounds(url: &str, hub: &Daemon) -> Vec<Duration> {
    use atm_core::testing::TestHarness;
    use atm_core::{AgentEvent, EventSource, OutputSink, RegistryConfig, StartSource};
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::with_config(
        dir.path(),
        RegistryConfig {
            cleanup_interval: Duration::ZERO,
            host: HostId::parse("restarter").unwrap(),
            ..RegistryConfig::default()
        },
    )
    .await;
    let cfg = sink_nats::NatsSinkConfig {
        connection: NatsConnection {
            servers: vec![url.to_owned()],
            ..Default::default()
        },
        heartbeat: Duration::from_secs(5),
        include_text: false,
        queue_capacity: 1024,
        bucket_creation: atm_core::fleet::BucketCreation {
            create_bucket: false,
            replicas: 1,
        },
    };
    let src = |id: &str| EventSource::new(atm_core::Harness::claude(), SessionId::new(id), "bench");
    let started = || AgentEvent::SessionStarted {
        source: StartSource::Startup,
        model: None,
    };
    let mut next = 0usize;
    let mut live: Vec<String> = Vec::new();
    for _ in 0..SESSIONS {
        let id = format!("r{next}");
        next += 1;
        harness.apply(src(&id), started()).await;
        live.push(id);
    }
    let expected = |live: &[String]| {
        let mut v = live.to_vec();
        v.sort();
        v
    };
    let listed = |hub: &Daemon| {
        let mut v: Vec<String> = hub
            .client()
            .list()
            .iter()
            .filter(|s| s["host"] == "restarter")
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    let mut took = Vec::new();
    for round in 0..=RESTARTS {
        let cancel = atm_core::tokio_util::sync::CancellationToken::new();
        let mut ctx = harness.sink_context("nats");
        ctx.cancel = cancel.clone();
        let t0 = Instant::now();
        let sink = Box::new(sink_nats::NatsSink::new(cfg.clone()));
        let task = tokio::spawn(async move { sink.run(ctx).await });
        let want = expected(&live);
        loop {
            if listed(hub) == want {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the hub never converged"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if round > 0 {
            took.push(t0.elapsed()); // round 0 warms up (first connect, bucket lookup)
        }
        cancel.cancel();
        let _ = task.await;
        // While it is stopped: 5 sessions end, 5 start.
        for _ in 0..5 {
            let id = live.remove(0);
            harness
                .apply(
                    src(&id),
                    AgentEvent::SessionEnded {
                        reason: "exit".into(),
                        continues: false,
                    },
                )
                .await;
            let id = format!("r{next}");
            next += 1;
            harness.apply(src(&id), started()).await;
            live.push(id);
        }
    }
    took.sort();
    took
}
