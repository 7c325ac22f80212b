//! `list_sessions` of 10,000 sessions, end to end over the real socket: request written ->
//! whole `session_list` line read. Run with `cargo bench -p sink-socket --bench list_sessions`.
//!
//! Every list is rendered when asked (the sink caches no views). Reported: lists right after a
//! change, back-to-back lists of an unchanged registry, and lists a second apart (as a status
//! bar polling idle sessions would ask), plus the process's memory per session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use atm_core::testing::TestHarness;
use atm_core::{
    AgentEvent, EventEnvelope, EventSource, Harness, OutputSink, SessionId, StartSource,
    UsageUpdate,
};
use sink_socket::{SocketConfig, SocketSink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

const SESSIONS: usize = 10_000;
const ROUNDS: usize = 20;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

const REQUEST: &[u8] =
    b"{\"type\":\"list_sessions\",\"protocol_version\":{\"major\":1,\"minor\":0}}\n";

/// The event source of bench session `i`.
fn source(i: usize) -> EventSource {
    EventSource::new(
        Harness::claude(),
        SessionId::new(format!("{i:08x}-7dc2-432b-9206-928fa5c35731")),
        "bench",
    )
}

/// Changes session `i` (its cost), so the list that follows reflects a change.
async fn set_cost(harness: &TestHarness, i: usize, cost: f64) {
    harness
        .registry
        .update_usage(
            source(i),
            UsageUpdate {
                cost_usd: Some(cost),
                ..UsageUpdate::default()
            },
        )
        .await
        .unwrap();
}

/// `min, median, max` of sorted timings, in milliseconds.
fn spread(sorted: &[Duration]) -> String {
    let ms = |i: usize| sorted[i].as_secs_f64() * 1000.0;
    format!(
        "min {:.2} ms, median {:.2} ms, max {:.2} ms",
        ms(0),
        ms(sorted.len() / 2),
        ms(sorted.len() - 1)
    )
}

/// One `list_sessions`, from the request written to the whole reply line read.
async fn timed_list(
    w: &mut OwnedWriteHalf,
    r: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> Duration {
    line.clear();
    let t = Instant::now();
    w.write_all(REQUEST).await.unwrap();
    r.read_until(b'\n', line).await.unwrap();
    let took = t.elapsed();
    assert!(line.len() > SESSIONS * 100, "a whole list");
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    run().await;
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::new(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_kib();
    let fill = Instant::now();
    for i in 0..SESSIONS {
        let mut source = source(i);
        source.cwd = Some(format!("/home/user/src/project-{i}"));
        source.tmux_pane = Some(format!("%{i}"));
        let reg = &harness.registry;
        reg.apply_event(EventEnvelope::now(
            source.clone(),
            AgentEvent::SessionStarted {
                source: StartSource::Startup,
                model: Some("claude-opus-4-6".into()),
            },
        ))
        .await
        .unwrap();
        reg.update_usage(
            source,
            UsageUpdate {
                model_name: Some("Opus 4.6".into()),
                cost_usd: Some(0.42),
                context_tokens: Some(84_000),
                context_window_size: Some(200_000),
                context_used_percentage: Some(42.0),
                lines_added: Some(12),
                lines_removed: Some(3),
                ..UsageUpdate::default()
            },
        )
        .await
        .unwrap();
    }
    let fill = fill.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_registry = rss_kib();
    let path = dir.path().join("bench.sock");
    let sink = Box::new(
        SocketSink::new(SocketConfig {
            socket: Some(path.display().to_string()),
            ..SocketConfig::default()
        })
        .unwrap(),
    );
    let ctx = harness.sink_context("socket");
    let task = tokio::spawn(async move { sink.run(ctx).await });
    while UnixStream::connect(&path).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the fan-out take in everything, then weigh it before any client buffer exists.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let registry_kib = with_registry.saturating_sub(baseline);
    let sink_kib = rss_kib().saturating_sub(with_registry);

    let stream = UnixStream::connect(&path).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut line = Vec::with_capacity(32 << 20);
    w.write_all(b"{\"type\":\"connect\",\"protocol_version\":{\"major\":1,\"minor\":0}}\n")
        .await
        .unwrap();
    r.read_until(b'\n', &mut line).await.unwrap();
    // Wait until the sink has seen every session.
    loop {
        line.clear();
        w.write_all(REQUEST).await.unwrap();
        r.read_until(b'\n', &mut line).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        if v["sessions"].as_array().map(Vec::len) == Some(SESSIONS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bytes = line.len();

    // Back to back, after every session changed once.
    for i in 0..SESSIONS {
        set_cost(&harness, i, 0.5).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut back_to_back = Vec::new();
    for _ in 0..ROUNDS {
        back_to_back.push(timed_list(&mut w, &mut r, &mut line).await);
    }
    back_to_back.sort();
    // One session changed before each list.
    let mut after_change = Vec::new();
    for round in 0..ROUNDS {
        set_cost(&harness, round, 1.0).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        after_change.push(timed_list(&mut w, &mut r, &mut line).await);
    }
    after_change.sort();
    // A second apart.
    let mut apart = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        apart.push(timed_list(&mut w, &mut r, &mut line).await);
    }
    apart.sort();

    println!("list_sessions of {SESSIONS} sessions over the socket (request -> whole line read)");
    println!(
        "  fill: {:.2} s for {} registry events",
        fill.as_secs_f64(),
        SESSIONS * 2
    );
    println!(
        "  reply: {:.1} MiB ({} bytes per session)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes / SESSIONS
    );
    println!(
        "  one change before each list:  {} ({ROUNDS} rounds)",
        spread(&after_change)
    );
    println!(
        "  unchanged, back to back:      {} ({ROUNDS} rounds)",
        spread(&back_to_back)
    );
    println!(
        "  unchanged, a second apart:    {} (5 rounds)",
        spread(&apart)
    );
    println!(
        "  memory (RSS) for {SESSIONS} sessions: registry {:.2} KiB per session, socket sink {:.2} KiB per session",
        registry_kib as f64 / SESSIONS as f64,
        sink_kib as f64 / SESSIONS as f64
    );
    harness.cancel.cancel();
    let _ = task.await;
}
