//! Latency of the D-Bus sink: 1,000 state changes per second through the real registry for
//! about 5 s, a zbus client subscribed to `StateChanged` on a private bus, measuring the time
//! from calling `apply_event` to receiving the signal. Target: p99 at most 5 ms.
//!
//! A second, plain registry subscriber (what the socket sink is) measures the same changes, to
//! show that the D-Bus traffic does not delay the other sinks.
//!
//! Run: `cargo bench -p sink-dbus --bench signals`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atm_core::testing::{PrivateBus, TestHarness};
use atm_core::{
    AgentEvent, EventEnvelope, EventSource, Harness, OutputSink, ProcessIdentity, SessionId,
};
use futures_util::StreamExt;
use tokio::time::Instant;
use zbus::MessageStream;
use zbus::connection::Builder;

const RATE_PER_SEC: u64 = 1000;
const SECONDS: u64 = 5;
const SESSIONS: u32 = 20;

type SentTimes = Arc<Mutex<HashMap<String, VecDeque<Instant>>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    bench().await;
}

fn report(name: &str, mut lat: Vec<Duration>, expected: usize) {
    lat.sort_unstable();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{name}: {} of {expected} received; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let config = sink_dbus::DbusConfig {
        address: Some(bus.address.clone()),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..sink_dbus::DbusConfig::default()
    };
    let sink: Box<dyn OutputSink> = Box::new(sink_dbus::DbusSink::new(config));
    let sink = tokio::spawn(sink.run(harness.sink_context("dbus")));

    let sources: Vec<EventSource> = (0..SESSIONS)
        .map(|i| {
            let mut s = EventSource::new(
                Harness::claude(),
                SessionId::new(format!("bench-{i}")),
                "bench",
            );
            s.process = Some(ProcessIdentity {
                pid: 10_000 + i,
                start_time: 1,
            });
            s
        })
        .collect();
    for s in &sources {
        let e = AgentEvent::SessionStarted {
            source: atm_core::StartSource::Startup,
            model: None,
        };
        harness
            .registry
            .apply_event(EventEnvelope::now(s.clone(), e))
            .await
            .unwrap();
    }

    // The D-Bus subscriber.
    let conn = Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let mut stream = MessageStream::for_match_rule(
        "type='signal',interface='io.github.atm.Monitor1',member='StateChanged'",
        &conn,
        None,
    )
    .await
    .unwrap();
    // Wait for the service (and its snapshot) to be on the bus.
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dbus
        .name_has_owner("io.github.atm.Monitor".try_into().unwrap())
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the service never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent: SentTimes = Arc::default();
    let sent_plain: SentTimes = Arc::default();
    let total = usize::try_from(RATE_PER_SEC * SECONDS).unwrap();

    let dbus_rx = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total);
            while lat.len() < total {
                let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_secs(5), stream.next()).await
                else {
                    break;
                };
                let now = Instant::now();
                let (id, ..): (String, String, String, String) = msg.body().deserialize().unwrap();
                if let Some(at) = sent
                    .lock()
                    .unwrap()
                    .get_mut(&id)
                    .and_then(VecDeque::pop_front)
                {
                    lat.push(now - at);
                }
            }
            lat
        })
    };

    // A plain registry subscriber, like the socket sink.
    let (_, mut changes) = harness.registry.subscribe().await.unwrap();
    let plain_rx = {
        let sent = sent_plain.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total);
            while lat.len() < total {
                let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await
                else {
                    break;
                };
                let now = Instant::now();
                if let Some(at) = sent
                    .lock()
                    .unwrap()
                    .get_mut(ev.session.id.as_str())
                    .and_then(VecDeque::pop_front)
                {
                    lat.push(now - at);
                }
            }
            lat
        })
    };

    let start = Instant::now();
    let period = Duration::from_nanos(1_000_000_000 / RATE_PER_SEC);
    for k in 0..total {
        tokio::time::sleep_until(start + period * u32::try_from(k).unwrap()).await;
        let i = k % sources.len();
        let s = &sources[i];
        // Each session alternates working / idle, so every event is a state change.
        let round = k / sources.len();
        let event = if round.is_multiple_of(2) {
            AgentEvent::PromptSubmitted { prompt: None }
        } else {
            AgentEvent::TurnFinished
        };
        let id = s.session_id.to_string();
        let now = Instant::now();
        sent.lock()
            .unwrap()
            .entry(id.clone())
            .or_default()
            .push_back(now);
        sent_plain
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push_back(now);
        harness
            .registry
            .apply_event(EventEnvelope::now(s.clone(), event))
            .await
            .unwrap();
    }
    let elapsed = start.elapsed();
    let dbus_lat = dbus_rx.await.unwrap();
    let plain_lat = plain_rx.await.unwrap();
    println!(
        "sent {total} state changes in {:.2} s ({:.0}/s) over {SESSIONS} sessions",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    report(
        "D-Bus StateChanged (apply -> signal received)",
        dbus_lat,
        total,
    );
    report(
        "plain registry subscriber (apply -> received)",
        plain_lat,
        total,
    );

    harness.cancel.cancel();
    let _ = sink.await;
}
