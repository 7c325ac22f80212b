//! What a real opencode 1.18.33 sent (recorded from `opencode serve` driven by the fake model;
//! see the README's Fixtures), replayed into the real adapter and a real registry: as the event
//! stream, and as the state found on connecting to a server that already waits on a permission.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

mod common;

use adapter_opencode::OpencodeStats;
use common::{Running, SseServer};

const SID: &str = "ses_dc81990ebffePeoFvzVaNxP0HL";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/real-1.18.33/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn the_real_stream_ends_waiting_on_the_bash_permission_with_the_cost() {
    let mut server = SseServer::start().await;
    let run = Running::start(&server.url(), None).await;
    let mut conn = server.next_conn().await;
    let events = fixture("events.sse");
    let count = events.lines().filter(|l| l.starts_with("data: ")).count() as u64;
    conn.send_raw(events.as_bytes()).await;
    run.wait_for("every event read", |_| {
        OpencodeStats::get(&run.stats.events) >= count
    })
    .await;
    assert_eq!(OpencodeStats::get(&run.stats.malformed), 0);
    run.wait_for_state(SID, "needs_permission").await;
    let sessions = run.sessions().await;
    let s = sessions.iter().find(|s| s.id.as_str() == SID).unwrap();
    assert_eq!(s.activity.as_deref(), Some("Permission"), "{s:#?}");
    assert_eq!(s.cwd.as_deref(), Some("/tmp/oc1/proj"));
    assert_eq!(s.model_id.as_deref(), Some("fake-chat"));
    // The first turn's cost, from `session.updated` (1200 in, 25 out at $3 / $15 per Mtok).
    assert!((s.usage.cost_usd - 0.003975).abs() < 1e-9, "{:?}", s.usage);
    assert_eq!(s.title.as_deref(), Some("FAKE-TITLE"));
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    run.stop().await;
}

#[tokio::test]
async fn connecting_to_a_server_that_waits_on_a_permission_shows_it() {
    let mut server = SseServer::start().await;
    server.set_status(serde_json::from_str(&fixture("session-status.json")).unwrap());
    server.set_body("/session", &fixture("session.json"));
    server.set_body("/permission", &fixture("permission.json"));
    let run = Running::start(&server.url(), None).await;
    let _conn = server.next_conn().await;
    run.wait_for_state(SID, "needs_permission").await;
    let sessions = run.sessions().await;
    let s = sessions.iter().find(|s| s.id.as_str() == SID).unwrap();
    assert_eq!(s.cwd.as_deref(), Some("/tmp/oc1/proj"));
    assert!((s.usage.cost_usd - 0.003975).abs() < 1e-9, "{:?}", s.usage);
    assert_eq!(s.title.as_deref(), Some("FAKE-TITLE"));
    run.stop().await;
}
