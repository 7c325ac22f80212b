//! A `/metrics` scrape with 10,000 sessions: `Metrics::encode` of a real registry's sessions
//! (followed by `Metrics::run`), against a reference measured in the same process, interleaved:
//! serializing the same 10,000 sessions' views to JSON, as `atmctl list --json` and the socket
//! sink's `session_list` do. Run with `cargo bench -p sink-http --bench metrics_encode`.
//!
//! Target (issue 17): a scrape of 10,000 sessions takes at most 50 ms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use atm_core::testing::TestHarness;
use atm_core::{
    AgentEvent, EventEnvelope, EventSource, Harness, SessionId, SessionView, StartSource,
    UsageUpdate,
};
use sink_http::metrics::{MAX_SESSION_SERIES, Metrics, MetricsConfig};

const SESSIONS: usize = 10_000;
const ROUNDS: usize = 101;

fn source(i: usize) -> EventSource {
    let harness = if i.is_multiple_of(5) {
        Harness::new(Harness::CODEX)
    } else {
        Harness::claude()
    };
    let mut s = EventSource::new(
        harness,
        SessionId::new(format!("{i:08x}-7dc2-432b-9206-928fa5c35731")),
        "bench",
    );
    s.cwd = Some(format!("/home/user/src/project-{}", i % 300));
    s
}

/// 10,000 sessions: all with cost and context, a tenth waiting on a permission, half working,
/// the rest idle.
async fn fill(h: &TestHarness) {
    for i in 0..SESSIONS {
        let reg = &h.registry;
        let src = source(i);
        let event = |e| EventEnvelope::now(src.clone(), e);
        reg.apply_event(event(AgentEvent::SessionStarted {
            source: StartSource::Startup,
            model: Some("claude-opus-4-6".into()),
        }))
        .await
        .unwrap();
        reg.update_usage(
            src.clone(),
            UsageUpdate {
                cost_usd: Some(0.01 * (i % 500) as f64),
                context_tokens: Some(84_000),
                context_window_size: Some(200_000),
                context_used_percentage: Some((i % 100) as f64),
                ..UsageUpdate::default()
            },
        )
        .await
        .unwrap();
        reg.apply_event(event(AgentEvent::PromptSubmitted { prompt: None }))
            .await
            .unwrap();
        let next = match i % 10 {
            0 => AgentEvent::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("cargo test".into()),
                suggestions: Vec::new(),
            },
            1..=5 => continue,
            _ => AgentEvent::TurnFinished,
        };
        reg.apply_event(event(next)).await.unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Times `encode` and the JSON reference, alternating which goes first.
fn measure(
    m: &Metrics,
    sessions: &[std::sync::Arc<atm_core::Session>],
) -> (Vec<Duration>, Vec<Duration>, usize, usize) {
    let mut ours = Vec::with_capacity(ROUNDS);
    let mut reference = Vec::with_capacity(ROUNDS);
    let (mut text_len, mut json_len) = (0, 0);
    for round in 0..ROUNDS {
        let mut run_ours = || {
            let t = Instant::now();
            let text = m.encode().unwrap();
            ours.push(t.elapsed());
            text_len = text.len();
        };
        let mut run_reference = || {
            let t = Instant::now();
            let now = chrono::Utc::now();
            let views: Vec<SessionView<'_>> = sessions
                .iter()
                .map(|s| SessionView::from_session(s, now))
                .collect();
            let json = serde_json::to_vec(&views).unwrap();
            reference.push(t.elapsed());
            json_len = json.len();
        };
        if round.is_multiple_of(2) {
            run_ours();
            run_reference();
        } else {
            run_reference();
            run_ours();
        }
    }
    ours.sort();
    reference.sort();
    (ours, reference, text_len, json_len)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let h = TestHarness::new(dir.path()).await;
    let t = Instant::now();
    fill(&h).await;
    let filled = t.elapsed();
    let sessions = h.sessions().await;
    assert_eq!(sessions.len(), SESSIONS);
    let seq = h.registry.snapshot().await.unwrap().seq;

    println!(
        "/metrics encode of {SESSIONS} sessions (registry filled in {:.1} s)",
        filled.as_secs_f64()
    );
    println!();
    println!(
        "| per-session series | encode p50 / p99 | JSON of the views (reference) p50 / p99 | ratio of p50s | text size | target |"
    );
    println!("|---|---|---|---|---|---|");
    for series in [100, MAX_SESSION_SERIES] {
        let m = Metrics::new(MetricsConfig {
            host: "bench".into(),
            sink: "http".into(),
            max_session_series: series,
        });
        let ctx = h.sink_context("http");
        let stop = ctx.cancel.clone();
        let task = tokio::spawn({
            let m = m.clone();
            async move { m.run(&ctx).await }
        });
        let until = Instant::now() + Duration::from_secs(30);
        while m.stats().applied_seq() < seq {
            assert!(Instant::now() < until, "the metrics never caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (ours, reference, text_len, json_len) =
            tokio::task::block_in_place(|| measure(&m, &sessions));
        let p50 = percentile(&ours, 0.5);
        println!(
            "| {series} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} | {:.0} KiB (JSON {:.1} MiB) | ≤ 50 ms |",
            p50,
            percentile(&ours, 0.99),
            percentile(&reference, 0.5),
            percentile(&reference, 0.99),
            p50 / percentile(&reference, 0.5),
            text_len as f64 / 1024.0,
            json_len as f64 / (1024.0 * 1024.0),
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }
    println!();
    println!("{ROUNDS} rounds each, interleaved (which goes first alternates).");
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    h.cancel.cancel();
}
