//! [`Metrics::run`] against a real registry: events applied as an adapter would, a permission
//! asked and answered through the registry, a follower made to lag, cancellation, and events
//! sent through a real ingest socket to a real ingest adapter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atm_core::event::{AgentEvent, EventEnvelope, EventSource, StartSource};
use atm_core::fields;
use atm_core::ingest::IngestMessage;
use atm_core::ingest_adapter::{Translation, Translator};
use atm_core::model::{Harness, SessionId, UsageUpdate};
use atm_core::protocol::WireError;
use atm_core::registry::RegistryConfig;
use atm_core::request::{Decision, Surface};
use atm_core::testing::TestHarness;
use atm_core::testing::ingest::RunningAdapter;
use atm_core::testing::wait::wait_until;

use super::tests::{metrics, strict_check};
use super::*;

fn source(id: &str) -> EventSource {
    EventSource::new(Harness::claude(), SessionId::new(id), "claude-hooks")
}

async fn start(h: &TestHarness, id: &str) {
    h.apply(
        source(id),
        AgentEvent::SessionStarted {
            source: StartSource::Startup,
            model: None,
        },
    )
    .await;
}

/// The value of the one sample of `name` whose line contains every part of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|part| l.contains(part)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn caught_up(h: &TestHarness, m: &Metrics) {
    let seq = h.registry.snapshot().await.unwrap().seq;
    let stats = m.stats();
    wait_until("the metrics follow the registry", || {
        let stats = stats.clone();
        async move { stats.applied_seq() >= seq }
    })
    .await;
}

#[tokio::test]
async fn run_follows_a_real_registry_through_a_permission_answered_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHarness::new(dir.path()).await;
    start(&h, "before").await;
    let m = metrics(100);
    let ctx = h.sink_context("http");
    let task = tokio::spawn({
        let m = m.clone();
        async move { m.run(&ctx).await }
    });
    caught_up(&h, &m).await;

    start(&h, "s1").await;
    h.apply(
        source("s1"),
        AgentEvent::PromptSubmitted {
            prompt: Some("secret prompt".into()),
        },
    )
    .await;
    h.registry
        .update_usage(
            source("s1"),
            UsageUpdate {
                cost_usd: Some(0.75),
                context_used_percentage: Some(30.0),
                ..UsageUpdate::default()
            },
        )
        .await
        .unwrap();
    let awaiting = h
        .registry
        .apply_awaiting(EventEnvelope::now(
            source("s1"),
            AgentEvent::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("rm -rf /tmp/x".into()),
                suggestions: Vec::new(),
            },
        ))
        .await
        .unwrap();
    let (id, _end) = awaiting.wait.expect("a request opened");
    caught_up(&h, &m).await;
    let text = m.encode().unwrap();
    strict_check(&text);
    assert_eq!(
        value(
            &text,
            "atm_sessions",
            &["state=\"needs_permission\"", "harness=\"claude\""]
        ),
        Some(1.0)
    );
    assert!(value(&text, "atm_session_waiting_seconds", &["session=\"s1\""]).is_some());

    h.registry
        .decide(
            id,
            Decision::Allow {
                always: false,
                rule: None,
            },
            Surface::new("http", Some(1000)),
        )
        .await
        .unwrap()
        .unwrap();
    h.apply(source("s1"), AgentEvent::TurnFinished).await;
    h.apply(
        source("before"),
        AgentEvent::SessionEnded {
            reason: "exit".into(),
            continues: false,
        },
    )
    .await;
    caught_up(&h, &m).await;
    let text = m.encode().unwrap();
    strict_check(&text);
    assert!(
        !text.contains("secret prompt") && !text.contains("rm -rf"),
        "{text}"
    );
    let ended = ["surface=\"http\"", "outcome=\"allow\""];
    assert_eq!(value(&text, "atm_requests_ended_total", &ended), Some(1.0));
    let answered = ["outcome=\"answered\""];
    assert_eq!(
        value(&text, "atm_request_wait_seconds_count", &answered),
        Some(1.0)
    );
    let left = ["state=\"needs_permission\""];
    assert_eq!(
        value(&text, "atm_state_duration_seconds_count", &left),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "atm_cost_usd_total", &["harness=\"claude\""]),
        Some(0.75)
    );
    assert_eq!(
        value(&text, "atm_session_context_ratio", &["session=\"s1\""]),
        Some(0.3)
    );
    assert_eq!(value(&text, "atm_sessions", &["state=\"idle\""]), Some(1.0));
    assert_eq!(
        value(&text, "atm_sessions", &["state=\"starting\""]),
        Some(0.0),
        "`before` ended"
    );
    assert!(value(&text, "atm_session_cost_usd", &["session=\"before\""]).is_none());

    h.cancel.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("run ends when cancelled")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_falls_behind_resyncs_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHarness::with_config(
        dir.path(),
        RegistryConfig {
            broadcast_capacity: 4,
            ..RegistryConfig::default()
        },
    )
    .await;
    let m = metrics(100);
    let ctx = h.sink_context("http");
    let task = tokio::spawn({
        let m = m.clone();
        async move { m.run(&ctx).await }
    });
    caught_up(&h, &m).await;
    // Hold the table so the follower cannot take changes in while the registry makes 20.
    {
        let held = m.0.shared.table.lock().unwrap();
        for i in 0..20 {
            let h = &h;
            // The registry is another task: these complete while the follower is stuck.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(start(h, &format!("s{i}")))
            });
        }
        drop(held);
    }
    caught_up(&h, &m).await;
    let text = m.encode().unwrap();
    let sink = ["sink=\"http-metrics\""];
    assert!(
        value(&text, "atm_sink_resyncs_total", &sink).unwrap() >= 1.0,
        "{text}"
    );
    assert!(value(&text, "atm_sink_missed_changes_total", &sink).unwrap() >= 1.0);
    assert_eq!(
        value(&text, "atm_sessions", &["state=\"starting\""]),
        Some(20.0)
    );
    h.cancel.cancel();
    task.await.unwrap().unwrap();
}

/// A hook-style agent for the test: `{"session_id", "event"}` with `start` or `stop`.
#[derive(Debug, Default)]
struct TestHooks;

impl Translator for TestHooks {
    const ROUTES: &'static [&'static str] = &["metrics_test_event"];
    const HARNESS: &'static str = "claude";
    const AGENT: &'static str = "Test Agent";

    fn translate(&self, msg: &IngestMessage) -> Result<Translation, WireError> {
        let data = fields::data_object(&msg.raw.body, "test JSON")?;
        let id = fields::session_id(data)?;
        let event = match fields::required_str(data, "event")? {
            "start" => AgentEvent::SessionStarted {
                source: StartSource::Startup,
                model: None,
            },
            _ => AgentEvent::TurnFinished,
        };
        Ok(Translation::new("test", id, event))
    }
}

#[tokio::test]
async fn events_through_a_real_ingest_socket_are_counted_by_adapter() {
    let (run, _stats) =
        RunningAdapter::start_translator::<TestHooks>(RegistryConfig::default()).await;
    let m = metrics(100);
    let ctx = run.harness.sink_context("http");
    let task = tokio::spawn({
        let m = m.clone();
        async move { m.run(&ctx).await }
    });
    let mut client = run.client().await;
    for event in ["start", "stop", "stop"] {
        client
            .send(
                "metrics_test_event",
                serde_json::json!({"session_id": "s1", "event": event}),
                serde_json::json!({}),
            )
            .await;
    }
    // No session id: the translator refuses it.
    client
        .send(
            "metrics_test_event",
            serde_json::json!({"event": "start"}),
            serde_json::json!({}),
        )
        .await;
    client.sync().await;
    caught_up(&run.harness, &m).await;
    let text = m.encode().unwrap();
    strict_check(&text);
    // `test` is the adapter's instance name in the harness.
    let applied = ["adapter=\"test\"", "outcome=\"applied\""];
    assert_eq!(
        value(&text, "atm_adapter_events_total", &applied),
        Some(3.0),
        "{text}"
    );
    let malformed = ["adapter=\"test\"", "outcome=\"malformed\""];
    assert_eq!(
        value(&text, "atm_adapter_events_total", &malformed),
        Some(1.0)
    );
    let changes = ["source=\"test\"", "change=\"added\""];
    assert_eq!(
        value(&text, "atm_session_changes_total", &changes),
        Some(1.0)
    );
    run.harness.cancel.cancel();
    task.await.unwrap().unwrap();
    run.stop().await;
}
