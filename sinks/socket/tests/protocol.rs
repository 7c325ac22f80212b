//! Protocol v1 conformance over a real socket, against a real registry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use atm_core::control::{ControlRequest, RescanReport};
use atm_core::testing::{wait_for, wait_until};
use common::*;
use serde_json::json;
use sink_socket::SocketConfig;
use tokio::io::AsyncWriteExt;

fn config() -> SocketConfig {
    SocketConfig::default()
}

/// A client that has sent `subscribe` (its first list not read yet).
async fn subscribed(server: &Server) -> Client {
    let mut c = server.connected(None).await;
    c.send("subscribe", json!({})).await;
    c
}

/// The sink on a fresh registry and one client connected to it.
async fn connected() -> (Server, Client) {
    let server = Server::start(config()).await;
    let c = server.connected(None).await;
    (server, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_assigns_or_echoes_client_ids_and_ids_may_repeat() {
    let server = Server::start(config()).await;
    let mut anon = server.client().await;
    let reply = anon.handshake(None).await;
    assert_eq!(reply["type"], "connected");
    assert_eq!(reply["protocol_version"], json!({"major": 1, "minor": 1}));
    assert!(
        reply["client_id"].as_str().unwrap().starts_with("client-"),
        "{reply}"
    );
    // A minor version we do not know is fine; two clients may carry the same label.
    let mut a = server.client().await;
    a.send_raw(b"{\"protocol_version\":{\"major\":1,\"minor\":9},\"type\":\"connect\",\"client_id\":\"tui\"}\n")
        .await;
    assert_eq!(a.recv().await["client_id"], "tui");
    let mut b = server.connected(Some("tui")).await;
    b.send("ping", json!({"seq": 2})).await;
    a.send("ping", json!({"seq": 1})).await;
    assert_eq!(a.recv().await, json!({"type": "pong", "seq": 1}));
    assert_eq!(b.recv().await, json!({"type": "pong", "seq": 2}));
    server.stop().await;
}

#[tokio::test]
async fn a_major_version_mismatch_is_rejected_and_closed() {
    let server = Server::start(config()).await;
    let mut c = server.client().await;
    c.send_raw(b"{\"protocol_version\":{\"major\":2,\"minor\":0},\"type\":\"connect\"}\n")
        .await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "rejected", "{reply}");
    assert_eq!(reply["protocol_version"], json!({"major": 1, "minor": 1}));
    assert!(reply["reason"].as_str().unwrap().contains("2.0"), "{reply}");
    c.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn a_first_message_that_is_not_connect_gets_not_connected_and_closes() {
    let server = Server::start(config()).await;
    for first in [
        b"{\"type\":\"list_sessions\"}\n".as_slice(),
        b"garbage\n",
        b"\xff\xfe{\n",
    ] {
        let mut c = server.client().await;
        c.send_raw(first).await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "not_connected", "{reply}");
        c.expect_closed().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_connect_is_an_error_and_the_connection_stays_open() {
    let server = Server::start(config()).await;
    let mut c = server.connected(Some("x")).await;
    c.send("connect", json!({})).await;
    let reply = c.recv().await;
    assert_eq!(reply["code"], "already_connected", "{reply}");
    assert!(c.sync(5).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn malformed_unknown_and_non_utf8_messages_get_errors_and_stay_open() {
    let (server, mut c) = connected().await;
    let cases: [(&[u8], &str); 9] = [
        (b"not json\n", "parse_error"),
        (b"{\"type\":\n", "parse_error"),
        (b"[1,2,3]\n", "parse_error"),
        (b"{\"no_type\":1}\n", "invalid_message"),
        (b"{\"type\":\"p\xffing\"}\n", "parse_error"),
        (b"{\"type\":\"frobnicate\"}\n", "unknown_type"),
        (
            b"{\"type\":\"ping\",\"protocol_version\":{\"major\":7,\"minor\":0}}\n",
            "bad_version",
        ),
        (b"{\"type\":\"ping\",\"seq\":-1}\n", "invalid_message"),
        (b"{\"type\":\"hook_event\",\"data\":{}}\n", "unknown_type"),
    ];
    for (line, code) in cases {
        c.send_raw(line).await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "error", "{}", String::from_utf8_lossy(line));
        assert_eq!(reply["code"], code, "{}", String::from_utf8_lossy(line));
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Blank lines and CRLF endings are tolerated.
    c.send_raw(b"\n  \r\n{\"type\":\"ping\",\"seq\":9}\r\n")
        .await;
    assert_eq!(c.recv().await, json!({"type": "pong", "seq": 9}));
    server.stop().await;
}

/// A gap between two writes, so that the first part is likely read on its own. Not a wait for
/// anything: the assertions hold either way, the gap only makes the split real.
async fn pause_between_writes() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn a_line_split_across_writes_is_one_message() {
    let server = Server::start(config()).await;
    let mut c = server.client().await;
    let line = atm_core::protocol::client_line("connect", serde_json::Map::new());
    let (head, tail) = line.split_at(7);
    c.send_raw(head).await;
    pause_between_writes().await;
    c.send_raw(tail).await;
    assert_eq!(c.recv().await["type"], "connected");
    // Two messages in one write, the second split mid-character of a UTF-8 id.
    let mut buf =
        b"{\"type\":\"ping\",\"seq\":1}\n{\"type\":\"subscribe\",\"session_id\":\"\xc3".to_vec();
    c.send_raw(&buf).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "seq": 1}));
    pause_between_writes().await;
    buf = b"\xa9t\xc3\xa9\"}\n".to_vec();
    c.send_raw(&buf).await;
    let list = c.recv().await;
    assert!(list_ids(&list).is_empty());
    add_session(&server, "été").await;
    let up = c.recv().await;
    assert_eq!(up["session"]["id"], "été", "{up}");
    server.stop().await;
}

#[tokio::test]
async fn list_sessions_returns_views_in_registry_order() {
    let server = Server::start(config()).await;
    for id in ["s-1", "s-2", "s-3"] {
        add_session(&server, id).await;
    }
    set_cost(&server, "s-2", 1.25).await;
    let c = server.connected(None).await;
    // The sink follows the registry asynchronously: poll until it has caught up.
    let c = tokio::sync::Mutex::new(c);
    let list = wait_for("the sink to list s-2 at $1.25", || async {
        let mut c = c.lock().await;
        c.send("list_sessions", json!({})).await;
        let list = c.recv().await;
        (list["sessions"][1]["cost_usd"] == 1.25).then_some(list)
    })
    .await;
    assert_eq!(list_ids(&list), ["s-1", "s-2", "s-3"]);
    let view = &list["sessions"][1];
    // What is served is atm-core's view of the session: every field it has, no other.
    let s2 = server.harness.registry.get_session("s-2").await.unwrap();
    let core = atm_core::view::SessionView::from_session(&s2, atm_core::chrono::Utc::now());
    let fields = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        fields(view),
        fields(&serde_json::to_value(core).unwrap()),
        "{view}"
    );
    assert_eq!(view["cost_display"], "$1.25");
    let parsed: atm_core::protocol::ServerMessage = serde_json::from_value(list).unwrap();
    assert!(matches!(
        parsed,
        atm_core::protocol::ServerMessage::SessionList { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn subscribe_sends_the_list_then_updates_and_removals_until_unsubscribed() {
    let server = Server::start(config()).await;
    add_session(&server, "a").await;
    let mut c = subscribed(&server).await;
    let first = c.recv().await;
    // The initial list is consistent with what follows: "a" is either in it or announced next.
    let mut mirror = Mirror::default();
    mirror.apply(&first);
    if mirror.sessions.is_empty() {
        mirror.apply(&c.recv().await);
    }
    assert!(mirror.sessions.contains_key("a"), "{mirror:?}");
    add_session(&server, "b").await;
    let up = c.recv().await;
    assert_eq!(up["type"], "session_updated");
    assert_eq!(up["session"]["id"], "b");
    set_cost(&server, "a", 3.5).await;
    let up = c.recv().await;
    assert_eq!(up["session"]["cost_usd"], 3.5, "{up}");
    remove_session(&server, "a").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "session_removed", "session_id": "a"})
    );
    c.send("unsubscribe", json!({})).await;
    assert!(c.sync(1).await.is_empty());
    // A subscriber that sees both changes proves the fan-out has handed them out: nothing may
    // reach the unsubscribed client before its pong.
    let mut witness = subscribed(&server).await;
    witness.recv().await;
    set_cost(&server, "b", 9.0).await;
    add_session(&server, "c").await;
    let mut mirror = Mirror::default();
    while !mirror.sessions.contains_key("c") {
        mirror.apply(&witness.recv().await);
    }
    assert!(c.sync(2).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn subscribe_with_a_filter_sees_only_that_session() {
    let server = Server::start(config()).await;
    add_session(&server, "keep").await;
    add_session(&server, "other").await;
    let c = server.connected(None).await;
    // Wait until the sink knows both sessions, then subscribe to one.
    let c = tokio::sync::Mutex::new(c);
    wait_until("the sink to know both sessions", || async {
        let mut c = c.lock().await;
        c.send("list_sessions", json!({})).await;
        list_ids(&c.recv().await).len() == 2
    })
    .await;
    let mut c = c.into_inner();
    c.send("subscribe", json!({"session_id": "keep"})).await;
    assert_eq!(list_ids(&c.recv().await), ["keep"]);
    set_cost(&server, "other", 1.0).await;
    set_cost(&server, "keep", 2.0).await;
    let up = c.recv().await;
    assert_eq!(up["session"]["id"], "keep", "{up}");
    assert_eq!(up["session"]["cost_usd"], 2.0);
    remove_session(&server, "other").await;
    remove_session(&server, "keep").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "session_removed", "session_id": "keep"})
    );
    // A filter for an unknown id gives an empty list.
    c.send("subscribe", json!({"session_id": "nope"})).await;
    assert!(list_ids(&c.recv().await).is_empty());
    c.send("subscribe", json!({"session_id": 5})).await;
    assert_eq!(c.recv().await["code"], "invalid_message");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_keep_request_order_under_concurrency() {
    let server = Server::start(config()).await;
    add_session(&server, "x").await;
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let mut c = server.connected(None).await;
        tasks.push(tokio::spawn(async move {
            // Pipeline everything, then read: replies must come back in request order.
            let mut expected = Vec::new();
            let mut batch = Vec::new();
            for i in 0..200u64 {
                let seq = client * 1000 + i;
                if i % 50 == 0 {
                    batch.extend(atm_core::protocol::client_line(
                        "list_sessions",
                        serde_json::Map::new(),
                    ));
                    expected.push(None);
                }
                batch.extend(atm_core::protocol::client_line(
                    "ping",
                    json!({"seq": seq}).as_object().unwrap().clone(),
                ));
                expected.push(Some(seq));
            }
            c.writer.write_all(&batch).await.unwrap();
            for want in expected {
                let got = c.recv().await;
                match want {
                    Some(seq) => assert_eq!(got, json!({"type": "pong", "seq": seq})),
                    None => assert_eq!(got["type"], "session_list", "{got}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn discover_without_a_discovery_adapter_answers_zero_counts() {
    let (server, mut c) = connected().await;
    c.send("discover", json!({})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "discovery_complete", "discovered": 0, "failed": 0})
    );
    server.stop().await;
}

#[tokio::test]
async fn discover_asks_the_adapters_and_reports_their_counts() {
    let server = Server::start(config()).await;
    let mut requests = server.harness.control.receiver();
    let adapter = tokio::spawn(async move {
        let mut served = 0;
        while let Some(ControlRequest::Rescan { reply }) = requests.recv().await {
            served += 1;
            let _ = reply.send(RescanReport {
                discovered: 3,
                failed: 1,
                responders: 0,
            });
            if served == 1 {
                return served;
            }
        }
        served
    });
    let mut c = server.connected(None).await;
    c.send("discover", json!({})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "discovery_complete", "discovered": 3, "failed": 1})
    );
    assert_eq!(adapter.await.unwrap(), 1);
    server.stop().await;
}

#[tokio::test]
async fn disconnect_closes_the_connection() {
    let (server, mut c) = connected().await;
    c.send("disconnect", json!({})).await;
    c.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn silence_before_the_handshake_closes_but_idle_clients_stay() {
    let server = Server::start(SocketConfig {
        handshake_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let idle_since = tokio::time::Instant::now();
    let mut idle = subscribed(&server).await;
    idle.recv().await;
    let mut silent = server.client().await;
    // A partial line is not a handshake either.
    silent.send_raw(b"{\"type\":\"conn").await;
    silent.expect_closed().await;
    // What is tested is time itself: the idle client outlives twice the handshake timeout
    // (most of which the silent client's closing already took).
    tokio::time::sleep_until(idle_since + Duration::from_millis(600)).await;
    assert!(idle.sync(1).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_is_refused_while_reading_and_others_are_served() {
    let server = Server::start(config()).await;
    let rss_before = rss_kib();
    let mut big = server.connected(None).await;
    // 200 MiB without a newline, from a background task, in small chunks.
    let mut writer = big.writer;
    let flood = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 200 * 1024 * 1024 {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let reply = tokio::time::timeout(WAIT, async {
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut big.reader, &mut line)
            .await
            .unwrap();
        line
    })
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["code"], "too_large", "{reply}");
    let sent = tokio::time::timeout(WAIT, flood).await.unwrap().unwrap();
    assert!(
        sent < 200 * 1024 * 1024,
        "the daemon kept reading {sent} bytes"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut big.reader, &mut rest),
    )
    .await
    .unwrap()
    .unwrap_or(0);
    assert_eq!(n, 0, "data after too_large");
    let mut other = server.connected(None).await;
    assert!(other.sync(3).await.is_empty());
    if let (Some(before), Some(after)) = (rss_before, rss_kib()) {
        assert!(
            after < before + 64 * 1024,
            "memory grew from {before} KiB to {after} KiB"
        );
    }
    server.stop().await;
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn clients_that_vanish_mid_write_do_not_disturb_others() {
    let server = Server::start(config()).await;
    add_session(&server, "v").await;
    let mut watcher = subscribed(&server).await;
    watcher.recv().await;
    for i in 0..20 {
        let mut c = server.client().await;
        match i % 3 {
            0 => {
                c.send_raw(b"{\"type\":\"connect\",\"client_id\":\"hal")
                    .await
            }
            1 => {
                c.handshake(None).await;
                c.send("subscribe", json!({})).await;
                c.send_raw(b"{\"type\":\"pi").await;
            }
            _ => {
                c.handshake(None).await;
                c.send("list_sessions", json!({})).await;
            }
        }
        drop(c);
    }
    for i in 0..10 {
        set_cost(&server, "v", f64::from(i)).await;
    }
    let mut mirror = Mirror::default();
    let before_pong = watcher.sync(1).await;
    for m in &before_pong {
        mirror.apply(m);
    }
    // Updates may still be in flight: read until the last one arrives.
    while mirror.sessions.get("v") != Some(&9.0) {
        mirror.apply(&watcher.recv().await);
    }
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_clients_get_too_many_clients() {
    let server = Server::start(SocketConfig {
        max_clients: 2,
        ..config()
    })
    .await;
    let mut a = server.connected(None).await;
    let _b = server.connected(None).await;
    let mut c = server.client().await;
    let reply = c.recv().await;
    assert_eq!(reply["code"], "too_many_clients", "{reply}");
    c.expect_closed().await;
    drop(_b);
    // A freed slot is reusable.
    wait_until("the freed slot to be reusable", || async {
        let mut d = server.client().await;
        d.handshake(None).await["type"] == "connected"
    })
    .await;
    assert!(a.sync(1).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_socket_file_is_removed_on_stop_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A stale socket: bound, then its listener closed.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::start_in(
        dir.path(),
        SocketConfig {
            socket: Some(path.display().to_string()),
            ..config()
        },
    )
    .await;
    let mut c = server.connected(None).await;
    assert!(c.sync(1).await.is_empty());
    // A second sink on the same path refuses to steal it.
    let second = sink_socket::SocketSink::new(SocketConfig {
        socket: Some(path.display().to_string()),
        ..config()
    })
    .unwrap();
    let err = atm_core::OutputSink::run(Box::new(second), server.harness.sink_context("socket2"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    server.stop().await;
    assert!(!path.exists(), "socket file left behind");
}
