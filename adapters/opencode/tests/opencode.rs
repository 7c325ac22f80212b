//! The opencode adapter end to end: a real HTTP server written here (a tokio `TcpListener` on
//! 127.0.0.1 serving `text/event-stream`), the real adapter, a real registry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

mod common;

use std::time::Duration;

use adapter_opencode as _; // links the plugin registration for the contract test
use adapter_opencode::OpencodeStats;
use atm_core::testing::ingest::{check_replay_step, replay_session};
use common::{Conn, Running, SID, SseServer, WAIT, config, free_port, read_request, status};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A stream server, the adapter following it (events up to `max_event_bytes`), and the adapter's
/// first connection.
async fn connected(max_event_bytes: Option<usize>) -> (SseServer, Running, Conn) {
    let mut server = SseServer::start().await;
    let run = Running::start(&server.url(), max_event_bytes).await;
    let conn = server.next_conn().await;
    (server, run, conn)
}

/// Sends `id` busy on `conn` and waits until the registry shows it working.
async fn busy(run: &Running, conn: &mut Conn, id: &str) {
    conn.send(&status(id, "busy")).await;
    run.wait_for_state(id, "working").await;
}

#[tokio::test]
async fn contract_without_url() {
    let dir = tempfile::tempdir().unwrap();
    let reg = atm_core::plugin::find(atm_core::plugin::PluginKind::Adapter, "opencode").unwrap();
    let sample = atm_core::testing::sample_table(reg);
    atm_core::testing::check_adapter_contract("opencode", sample, dir.path()).await;
}

#[tokio::test]
async fn contract_while_the_server_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port().await);
    atm_core::testing::check_adapter_contract("opencode", config(&url), dir.path()).await;
}

#[tokio::test]
async fn replays_a_realistic_session() {
    let (_server, run, mut conn) = connected(None).await;
    assert!(
        conn.request.starts_with("GET /event HTTP/1.1\r\n"),
        "{}",
        conn.request
    );
    assert!(
        conn.request
            .to_ascii_lowercase()
            .contains("accept: text/event-stream"),
        "{}",
        conn.request
    );
    let steps: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/session.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut received = 0;
    for (i, step) in steps.iter().enumerate() {
        conn.send(&step["event"]).await;
        received += 1;
        let step_name = format!("step {i} ({})", step["event"]["type"]);
        // Every event is read before the next is checked: no assertion races the stream.
        let deadline = tokio::time::Instant::now() + WAIT;
        while OpencodeStats::get(&run.stats.events) < received {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{step_name}: not read"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let expect = step["expect"].as_object().unwrap();
        let sessions = run.sessions().await;
        let Some(s) = replay_session(&sessions, expect, &step_name) else {
            continue;
        };
        assert_eq!(s.id.as_str(), SID, "{step_name}");
        assert_eq!(s.harness.as_str(), "opencode", "{step_name}");
        assert_eq!(s.process, None, "{step_name}");
        if let Err(e) = check_replay_step(&sessions, expect) {
            panic!("{step_name}: {e}");
        }
    }
    assert_eq!(OpencodeStats::get(&run.stats.malformed), 0);
    assert_eq!(OpencodeStats::get(&run.stats.connections), 1);
    run.stop().await;
}

#[tokio::test]
async fn connects_once_the_server_appears() {
    let port = free_port().await;
    let run = Running::start(&format!("http://127.0.0.1:{port}"), None).await;
    // Several attempts fail while nothing listens; none of them ends the adapter.
    run.wait_for_failed_attempts(3).await;
    assert!(!run.task.is_finished());
    assert_eq!(OpencodeStats::get(&run.stats.connections), 0);
    let mut server = SseServer::on(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let mut conn = server.next_conn().await;
    busy(&run, &mut conn, "ses_late").await;
    run.stop().await;
}

#[tokio::test]
async fn reconnects_after_the_server_drops_the_stream() {
    let (mut server, run, mut conn) = connected(None).await;
    busy(&run, &mut conn, "ses_a").await;
    drop(conn);
    // A new connection comes; events on it keep flowing.
    let mut conn = server.next_conn().await;
    conn.send(&status("ses_a", "idle")).await;
    run.wait_for_state("ses_a", "idle").await;
    // The server going away half-way through an event: the fragment is dropped with the
    // connection, and the next connection starts clean.
    conn.send_raw(b"data: {\"type\":\"session.status\",\"properties\":{\"sessi")
        .await;
    drop(conn);
    let mut conn = server.next_conn().await;
    busy(&run, &mut conn, "ses_a").await;
    assert_eq!(OpencodeStats::get(&run.stats.connections), 3);
    assert_eq!(OpencodeStats::get(&run.stats.malformed), 0);
    run.stop().await;
}

#[tokio::test]
async fn bad_events_are_skipped_and_the_stream_goes_on() {
    let (_server, run, mut conn) = connected(Some(1024)).await;
    // Oversized: one long data line (never held whole), then many data lines adding up.
    let mut huge =
        b"data: {\"type\":\"session.idle\",\"properties\":{\"sessionID\":\"ses_x\",\"pad\":\""
            .to_vec();
    huge.extend(std::iter::repeat_n(b'x', 64 * 1024));
    huge.extend(b"\"}}\n\n");
    conn.send_raw(&huge).await;
    let mut many = Vec::new();
    for _ in 0..40 {
        many.extend(b"data: 0123456789012345678901234567890123456789\n");
    }
    many.extend(b"\n");
    conn.send_raw(&many).await;
    // Malformed: not UTF-8, not JSON, truncated JSON, no type, no session id.
    conn.send_raw(
        b"data: {\"type\":\"session.idle\",\"properties\":{\"sessionID\":\"\xff\xfe\"}}\n\n",
    )
    .await;
    conn.send_raw(b"data: hello there\n\n").await;
    conn.send_raw(
        b"data: {\"type\":\"session.status\",\"properties\":{\"sessionID\":\"ses_x\"\n\n",
    )
    .await;
    conn.send_raw(b"data: {\"properties\":{}}\n\n").await;
    conn.send_raw(b"data: {\"type\":\"session.idle\",\"properties\":{}}\n\n")
        .await;
    // Noise the parser must accept: comments, other fields, CRLF endings.
    conn.send_raw(b": keep-alive\r\nevent: message\r\nid: 9\r\n\r\n")
        .await;
    // And then a good event, which must still be read and applied.
    busy(&run, &mut conn, "ses_ok").await;
    assert_eq!(OpencodeStats::get(&run.stats.oversized), 2);
    assert_eq!(OpencodeStats::get(&run.stats.malformed), 5);
    assert_eq!(OpencodeStats::get(&run.stats.connections), 1);
    let sessions = run.sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    run.stop().await;
}

#[tokio::test]
async fn a_server_that_is_not_opencode_is_retried_not_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let run = Running::start(&format!("http://127.0.0.1:{port}"), None).await;
    // Two wrong answers: a 404 and a 200 that is not an event stream.
    for answer in [
        &b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi"[..],
    ] {
        let (mut s, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        read_request(&mut s).await;
        s.write_all(answer).await.unwrap();
    }
    // Then the real thing.
    let mut server = SseServer::on(listener);
    let mut conn = server.next_conn().await;
    busy(&run, &mut conn, "ses_b").await;
    assert_eq!(OpencodeStats::get(&run.stats.connections), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_reconnection_resynchronises_from_the_session_status() {
    let (mut server, run, mut conn) = connected(None).await;
    for id in ["ses_done", "ses_asking", "ses_still"] {
        conn.send(&status(id, "busy")).await;
    }
    conn.send(&json!({"type": "permission.asked", "properties": {"id": "per_1", "sessionID": "ses_asking", "permission": "edit", "patterns": ["src/a.rs"]}}))
        .await;
    run.wait_for_state("ses_asking", "needs_permission").await;
    run.wait_for_state("ses_still", "working").await;
    // While the stream is down, ses_done and ses_asking finish, ses_new starts; ses_still
    // goes on. Only /session/status tells.
    server.set_status(json!({"ses_still": {"type": "busy"}, "ses_new": {"type": "busy"}}));
    drop(conn);
    let _conn = server.next_conn().await;
    run.wait_for_state("ses_new", "working").await;
    run.wait_for_state("ses_done", "idle").await;
    run.wait_for_state("ses_asking", "idle").await;
    run.wait_for_state("ses_still", "working").await;
    run.stop().await;
}

#[tokio::test]
async fn a_failed_resynchronisation_is_asked_again_while_the_events_are_followed() {
    let mut server = SseServer::start().await;
    // A server that has just started: its stream is open, its session status not answered.
    server.fail_status(true);
    server.set_status(json!({"ses_before": {"type": "busy"}}));
    let run = Running::start(&server.url(), None).await;
    let mut conn = server.next_conn().await;
    conn.send(&status("ses_live", "busy")).await;
    run.wait_for_state("ses_live", "working").await;
    assert!(
        !run.sessions()
            .await
            .iter()
            .any(|s| s.id.as_str() == "ses_before"),
        "the status was not answered yet"
    );
    // It answers: what only the status tells arrives, on the same stream.
    server.fail_status(false);
    run.wait_for_state("ses_before", "working").await;
    conn.send(&status("ses_live", "idle")).await;
    run.wait_for_state("ses_live", "idle").await;
    assert_eq!(OpencodeStats::get(&run.stats.connections), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_busy_status_does_not_clear_a_pending_permission() {
    let (mut server, run, mut conn) = connected(None).await;
    conn.send(&json!({"type": "permission.asked", "properties": {"id": "per_1", "sessionID": "ses_p", "permission": "bash", "patterns": ["make"]}}))
        .await;
    run.wait_for_state("ses_p", "needs_permission").await;
    server.set_status(json!({"ses_p": {"type": "busy"}}));
    drop(conn);
    let mut conn = server.next_conn().await;
    conn.send(&status("ses_p", "busy")).await;
    busy(&run, &mut conn, "ses_marker").await;
    run.wait_for_state("ses_p", "needs_permission").await;
    run.stop().await;
}

#[tokio::test]
async fn a_configured_server_that_exits_takes_its_sessions_along() {
    let (server, run, mut conn) = connected(None).await;
    busy(&run, &mut conn, "ses_gone").await;
    // The server exits: its stream ends and its port refuses connections.
    drop(conn);
    drop(server);
    run.wait_for("the session removed", |all| {
        !all.iter().any(|s| s.id.as_str() == "ses_gone")
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn a_dropped_stream_of_a_live_server_keeps_its_sessions() {
    let (mut server, run, mut conn) = connected(None).await;
    busy(&run, &mut conn, "ses_kept").await;
    server.set_status(json!({"ses_kept": {"type": "busy"}}));
    drop(conn);
    let mut conn = server.next_conn().await;
    busy(&run, &mut conn, "ses_marker").await;
    run.wait_for_state("ses_kept", "working").await;
    run.stop().await;
}
