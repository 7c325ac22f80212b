//! Fan-out under pressure: stuck and slow subscribers, resyncs, registry lag, bursts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use atm_core::RegistryConfig;
use atm_core::testing::TestHarness;
use common::*;
use serde_json::json;
use sink_socket::SocketConfig;

/// Reads until the subscriber's mirror equals the registry's truth, or fails after [`WAIT`].
async fn converge(c: &mut Client, mirror: &mut Mirror, server: &Server) {
    let want = truth(server).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while mirror.sessions != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriber never converged: {mirror:?} vs {want:?}"
        );
        mirror.apply(&c.recv().await);
    }
}

async fn subscribe(server: &Server) -> (Client, Mirror) {
    let mut c = server.connected(None).await;
    c.send("subscribe", json!({})).await;
    let mut m = Mirror::default();
    m.apply(&c.recv().await);
    (c, m)
}

/// `n` subscribers, subscribed one after the other.
async fn subscribers(server: &Server, n: usize) -> Vec<(Client, Mirror)> {
    let mut subs = Vec::with_capacity(n);
    for _ in 0..n {
        subs.push(subscribe(server).await);
    }
    subs
}

/// `n` subscribers, each read by a task of its own running `read` on it.
async fn spawn_readers<T, Fut>(
    server: &Server,
    n: usize,
    read: impl Fn(Client, Mirror) -> Fut,
) -> Vec<tokio::task::JoinHandle<T>>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let subs = subscribers(server, n).await;
    subs.into_iter()
        .map(|(c, m)| tokio::spawn(read(c, m)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_never_costs_the_others_an_update() {
    // Queues large enough that the (slow, debug-built) healthy readers never need coalescing:
    // what is tested is that the stuck one costs them nothing.
    let server = Server::start(SocketConfig {
        write_timeout: Duration::from_secs(1),
        queue_capacity: 4096,
        ..SocketConfig::default()
    })
    .await;
    for s in 0..10 {
        add_session(&server, &format!("s{s}")).await;
    }
    // Subscribes, then never reads again.
    let (stuck, _) = subscribe(&server).await;
    let readers = spawn_readers(&server, 2, |mut c, mut m| async move {
        // Every update, in order per session: costs go 1, 2, 3... for each.
        let mut last = std::collections::HashMap::<String, f64>::new();
        let mut seen = 0;
        while seen < 3000 {
            let msg = c.recv().await;
            if msg["type"] == "session_list" {
                m.apply(&msg);
                continue;
            }
            assert_eq!(msg["type"], "session_updated", "{msg}");
            let id = msg["session"]["id"].as_str().unwrap().to_owned();
            let cost = msg["session"]["cost_usd"].as_f64().unwrap();
            let prev = last.insert(id.clone(), cost).unwrap_or(0.0);
            assert_eq!(cost, prev + 1.0, "{id} skipped an update");
            seen += 1;
        }
        assert_eq!(m.lists, 1, "a healthy subscriber was resynced");
        seen
    })
    .await;
    for round in 1..=300 {
        for s in 0..10 {
            set_cost(&server, &format!("s{s}"), f64::from(round)).await;
        }
    }
    for r in readers {
        assert_eq!(tokio::time::timeout(WAIT, r).await.unwrap().unwrap(), 3000);
    }
    // The stuck one is disconnected once a write has been blocked for the write timeout,
    // rather than buffered without bound. (Its last line may be cut: it was mid-write.) It is
    // closed when writing to it fails; blank lines are ignored by the server, so probing with
    // them adds nothing to what it queues.
    let mut stuck = stuck;
    let probe = tokio::sync::Mutex::new(&mut stuck.writer);
    atm_core::testing::wait_until("the stuck subscriber to be disconnected", || async {
        tokio::io::AsyncWriteExt::write_all(*probe.lock().await, b"\n")
            .await
            .is_err()
    })
    .await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut stuck.reader, &mut rest),
    )
    .await;
    assert!(read.is_ok(), "the stuck subscriber was never disconnected");
    assert!(
        rest.len() < 3000 * 1000,
        "it received everything: {}",
        rest.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_is_coalesced_then_resynced() {
    let server = Server::start(SocketConfig {
        queue_capacity: 1,
        max_coalesced: 2,
        write_timeout: Duration::from_secs(60),
        ..SocketConfig::default()
    })
    .await;
    for s in 0..20 {
        add_session(&server, &format!("lag-{s}")).await;
    }
    let (mut slow, mut mirror) = subscribe(&server).await;
    // Not reading: the kernel buffer fills, then the queue, then the coalesced set.
    for round in 1..=200 {
        for s in 0..20 {
            set_cost(&server, &format!("lag-{s}"), f64::from(round)).await;
        }
    }
    remove_session(&server, "lag-3").await;
    converge(&mut slow, &mut mirror, &server).await;
    assert!(
        mirror.lists >= 2,
        "expected a resync list after falling behind ({} lists, {} updates)",
        mirror.lists,
        mirror.updates
    );
    assert!(!mirror.sessions.contains_key("lag-3"));
    // After the resync it receives updates normally again.
    set_cost(&server, "lag-0", 999.0).await;
    converge(&mut slow, &mut mirror, &server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_lag_ends_with_every_subscriber_right() {
    // A one-slot registry broadcast: the fan-out is likely to lag during a burst and must
    // resynchronise; whether or not it does, every subscriber must end right.
    let dir = tempfile::tempdir().unwrap();
    let harness_config = RegistryConfig {
        broadcast_capacity: 1,
        cleanup_interval: Duration::ZERO,
        ..RegistryConfig::default()
    };
    let server = Server::start_with_harness(
        TestHarness::with_config(dir.path(), harness_config).await,
        dir.path(),
        SocketConfig::default(),
    )
    .await;
    let mut subs = subscribers(&server, 3).await;
    let mut producers = Vec::new();
    for p in 0..4 {
        let registry = server.harness.registry.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..250u32 {
                let id = format!("p{p}-{}", i % 25);
                let _ = registry
                    .update_usage(
                        source(&id),
                        atm_core::UsageUpdate {
                            cost_usd: Some(f64::from(i)),
                            ..Default::default()
                        },
                    )
                    .await;
                if i % 50 == 49 {
                    let _ = registry.remove(&format!("p{p}-0"), "test").await;
                }
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    for (c, m) in &mut subs {
        converge(c, m, &server).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_every_subscriber_completely_or_by_resync() {
    let server = Server::start(SocketConfig::default()).await;
    let readers = spawn_readers(&server, 5, |mut c, mut m| async move {
        // Read concurrently with the burst; stop at the marker session. Coalescing may skip
        // intermediate states but never delivers an older state after a newer one.
        let mut last = std::collections::HashMap::<String, f64>::new();
        while !m.sessions.contains_key("done") {
            let msg = c.recv().await;
            if msg["type"] == "session_list" {
                last.clear();
            } else if msg["type"] == "session_updated" {
                let id = msg["session"]["id"].as_str().unwrap().to_owned();
                let cost = msg["session"]["cost_usd"].as_f64().unwrap();
                let prev = last.insert(id.clone(), cost).unwrap_or(0.0);
                assert!(cost > prev || id == "done", "{id}: {cost} after {prev}");
            }
            m.apply(&msg);
        }
        (c, m)
    })
    .await;
    let mut producers = Vec::new();
    for p in 0..4 {
        let registry = server.harness.registry.clone();
        producers.push(tokio::spawn(async move {
            for i in 1..=1000u32 {
                set_cost_in(&registry, &format!("b{p}-{}", i % 50), f64::from(i)).await;
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    add_session(&server, "done").await;
    for r in readers {
        let (mut c, mut m) = tokio::time::timeout(WAIT, r).await.unwrap().unwrap();
        converge(&mut c, &mut m, &server).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_asked_for_by_a_subscriber_never_undo_its_updates() {
    let server = Server::start(SocketConfig::default()).await;
    let (mut c, mut mirror) = subscribe(&server).await;
    let producer = {
        let registry = server.harness.registry.clone();
        tokio::spawn(async move {
            for i in 1..=2000u32 {
                set_cost_in(&registry, &format!("m{}", i % 10), f64::from(i)).await;
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Ask for lists throughout the burst; every message, list or update, must show each
    // session's cost going up, never back.
    let mut highest = std::collections::HashMap::<String, f64>::new();
    let mut check = |msg: &serde_json::Value| {
        let sessions: Vec<&serde_json::Value> = match msg["type"].as_str() {
            Some("session_list") => msg["sessions"].as_array().unwrap().iter().collect(),
            Some("session_updated") => vec![&msg["session"]],
            _ => Vec::new(),
        };
        for s in sessions {
            let id = s["id"].as_str().unwrap().to_owned();
            let cost = s["cost_usd"].as_f64().unwrap();
            let top = highest.entry(id.clone()).or_insert(cost);
            assert!(cost >= *top, "{id} went back from {top} to {cost}");
            *top = cost;
        }
    };
    let mut seq = 0;
    while !producer.is_finished() {
        seq += 1;
        for m in c.sync(seq).await {
            check(&m);
            mirror.apply(&m);
        }
        c.send("list_sessions", json!({})).await;
    }
    producer.await.unwrap();
    let want = truth(&server).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while mirror.sessions != want {
        assert!(tokio::time::Instant::now() < deadline, "never converged");
        let m = c.recv().await;
        if m["type"] != "pong" {
            check(&m);
            mirror.apply(&m);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_is_prompt_with_a_stuck_subscriber() {
    let server = Server::start(SocketConfig {
        write_timeout: Duration::from_secs(600),
        ..SocketConfig::default()
    })
    .await;
    add_session(&server, "w").await;
    let (_stuck, _) = subscribe(&server).await;
    for i in 0..3000 {
        set_cost(&server, "w", f64::from(i)).await;
    }
    let path = server.path.clone();
    let started = std::time::Instant::now();
    server.stop().await;
    // The contract allows 2 s; the 600 s write timeout must not hold the sink up.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!path.exists());
}
