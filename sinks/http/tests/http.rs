//! The `http` sink on a real loopback port with a real registry: the plugin contract, the token
//! (401 with nothing said), the POST checks, the limits (body, head, malformed JSON), the JSON
//! API against what atmctl prints, answers reaching the waiter, `/metrics`, the Unix socket,
//! a bind failure, and the live stream (snapshot, changes, a stuck client not slowing another).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::{Duration, Instant};

use atm_core::model::PermissionSuggestion;
use atm_core::request::{RequestEnd, Verdict};
use atm_core::{AgentEvent, EventEnvelope, EventSource, Harness, SessionId, StartSource};
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn source(id: &str) -> EventSource {
    EventSource::new(Harness::claude(), SessionId::new(id), "test")
}

async fn started(r: &Running, id: &str) {
    r.harness
        .apply(
            source(id),
            AgentEvent::SessionStarted {
                source: StartSource::Startup,
                model: None,
            },
        )
        .await;
}

fn permission() -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: "Bash".into(),
        detail: Some("make all".into()),
        suggestions: vec![PermissionSuggestion {
            label: "allow Bash(make:*) for this session".into(),
            rule: json!({"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "make:*"}]}),
        }],
    }
}

/// Opens a permission request on session `id`; its id and the channel its waiter reads.
async fn ask(r: &Running, id: &str) -> (String, tokio::sync::oneshot::Receiver<RequestEnd>) {
    let awaiting = r
        .harness
        .registry
        .apply_awaiting(EventEnvelope::now(source(id), permission()))
        .await
        .unwrap();
    let (rid, rx) = awaiting.wait.expect("the event opens a request");
    (rid.to_string(), rx)
}

async fn verdict(rx: tokio::sync::oneshot::Receiver<RequestEnd>) -> Verdict {
    match tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("an answer within 5 s")
        .unwrap()
    {
        RequestEnd::Decided(v) => v,
        other => panic!("not decided: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_sink_keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        dir.path().join("t").display()
    );
    atm_core::testing::check_sink_contract(
        "http",
        atm_core::testing::config_table(&text),
        dir.path(),
    )
    .await;
    assert!(
        !dir.path()
            .join("run")
            .join(atm_core::paths::WEB_ADDRESS_FILE)
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_but_healthz_wants_the_token_and_says_nothing_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "").await;
    let health = request(r.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));

    let wrong = format!("Bearer {}", "0".repeat(32));
    let wrong_cookie = format!("atm_web={}", "0".repeat(32));
    for path in [
        "/events",
        "/api/sessions",
        "/api/pending",
        "/metrics",
        "/board.js",
    ] {
        for headers in [
            vec![],
            vec![("authorization", wrong.as_str())],
            vec![("cookie", wrong_cookie.as_str())],
            vec![("authorization", "Basic dXNlcjpwYXNz")],
        ] {
            let resp = request(r.addr, "GET", path, &headers, b"").await;
            assert_eq!(resp.status, 401, "{path} {headers:?}");
            assert!(resp.body.is_empty(), "401 says nothing: {}", resp.text());
        }
    }
    let id = "0".repeat(32);
    let resp = request(
        r.addr,
        "POST",
        &format!("/api/requests/{id}/decision"),
        &[("content-type", "application/json")],
        br#"{"decision":"allow"}"#,
    )
    .await;
    assert_eq!(resp.status, 401);
    // The page without the token is the login form, which holds nothing.
    let page = request(r.addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("name=\"token\""), "{}", page.text());
    assert!(!page.text().contains(&r.token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_http_only_cookie_and_cookie_posts_need_origin_and_the_csrf_header() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "").await;
    let form = |t: &str| format!("token={t}");
    let origin = format!("http://{}", "127.0.0.1");
    let bad = request(
        r.addr,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &origin),
        ],
        form("nope").as_bytes(),
    )
    .await;
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    let cross = request(
        r.addr,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        form(&r.token).as_bytes(),
    )
    .await;
    assert_eq!(cross.status, 403);
    let ok = request(
        r.addr,
        "POST",
        "/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &origin),
        ],
        form(&r.token).as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("location"), Some("/"));
    let cookie = ok.header("set-cookie").unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();

    // The cookie opens the board and its API...
    let board = request(r.addr, "GET", "/", &[("cookie", &pair)], b"").await;
    assert!(board.text().contains("board.js"), "{}", board.text());
    let csp = board.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let api = request(r.addr, "GET", "/api/sessions", &[("cookie", &pair)], b"").await;
    assert_eq!(api.status, 200);
    // ...but a POST with it needs our Origin and the CSRF header.
    started(&r, "s1").await;
    let focus = "/api/sessions/s1/focus";
    for (headers, want) in [
        (vec![("cookie", pair.as_str())], 403),
        (
            vec![("cookie", pair.as_str()), ("origin", origin.as_str())],
            403,
        ),
        (
            vec![
                ("cookie", pair.as_str()),
                ("origin", "http://evil.example"),
                ("x-atm-csrf", "1"),
            ],
            403,
        ),
        // Allowed through: the session has no pane, which is the answer.
        (
            vec![
                ("cookie", pair.as_str()),
                ("origin", origin.as_str()),
                ("x-atm-csrf", "1"),
            ],
            409,
        ),
    ] {
        let resp = request(r.addr, "POST", focus, &headers, b"").await;
        assert_eq!(resp.status, want, "{headers:?}: {}", resp.text());
    }
    // A bearer POST from another site's page is refused too.
    let resp = request(
        r.addr,
        "POST",
        focus,
        &[
            ("authorization", &r.bearer()),
            ("origin", "http://evil.example"),
        ],
        b"",
    )
    .await;
    assert_eq!(resp.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_heads_and_malformed_json_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "max_body_bytes = 1024\n").await;
    started(&r, "s1").await;
    let (rid, mut rx) = ask(&r, "s1").await;
    let path = format!("/api/requests/{rid}/decision");
    let big = json!({"decision": "deny", "message": "x".repeat(4096)});
    assert_eq!(r.post_json(&path, &big).await.status, 413);
    for body in [
        &b"{\"decision\":"[..],
        b"not json",
        b"{\"decision\":\"maybe\"}",
        b"\xff\xfe\x00",
        b"[]",
    ] {
        let resp = request(
            r.addr,
            "POST",
            &path,
            &[
                ("authorization", &r.bearer()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(resp.status, 400, "{body:?}: {}", resp.text());
        assert!(resp.json()["error"].is_string());
    }
    // No content type is a client error as well, never a decision.
    let resp = request(
        r.addr,
        "POST",
        &path,
        &[("authorization", &r.bearer())],
        br#"{"decision":"allow"}"#,
    )
    .await;
    assert_eq!(resp.status, 400);
    assert!(rx.try_recv().is_err(), "nothing reached the waiter");

    // A request head over 16 KiB: 431, and the server keeps serving.
    let huge = "a".repeat(20_000);
    let resp = request(r.addr, "GET", "/healthz", &[("x-big", &huge)], b"").await;
    assert_eq!(resp.status, 431);
    let many: Vec<(String, String)> = (0..200).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let resp = request(r.addr, "GET", "/healthz", &many, b"").await;
    assert!(resp.status >= 400, "{}", resp.status);
    // Garbage instead of HTTP is closed with a 400.
    let resp = send_raw(r.addr, b"\x00\x01\x02 nonsense\r\n\r\n").await;
    assert_eq!(resp.status, 400);
    assert_eq!(r.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_is_what_atmctl_prints_and_answers_reach_the_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "").await;
    started(&r, "s1").await;
    started(&r, "s2").await;
    let (rid, rx) = ask(&r, "s1").await;
    let (rid2, rx2) = ask(&r, "s2").await;

    let sessions = r.get("/api/sessions").await;
    assert_eq!(sessions.status, 200);
    assert_eq!(
        sessions.header("content-type"),
        Some("application/json"),
        "{:?}",
        sessions.headers
    );
    let sessions = sessions.json();
    let ids: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1", "s2"]);
    // The same view the socket sends atmctl: it parses as a SessionView.
    let view: atm_core::SessionView = serde_json::from_value(sessions[0].clone()).unwrap();
    assert_eq!(view.state, atm_core::AgentState::NeedsPermission);
    let pending = r.get("/api/pending").await.json();
    let expected: Vec<Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(atm_core::view::pending_of)
        .collect();
    let strip = |v: &Value| {
        let mut v = v.clone();
        for p in v.as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("asked_at");
        }
        v
    };
    assert_eq!(strip(&pending), strip(&json!(expected)));
    assert_eq!(pending[0]["id"], rid.as_str());
    assert_eq!(pending[0]["tool"], "Bash");

    // Always allow, with the offered rule.
    let path = format!("/api/requests/{rid}/decision");
    let resp = r
        .post_json(&path, &json!({"decision": "allow", "always": true}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["session_id"], "s1");
    let v = verdict(rx).await;
    assert!(format!("{v:?}").contains("make:*"), "{v:?}");
    // Twice: refused with the reason.
    let again = r.post_json(&path, &json!({"decision": "allow"})).await;
    assert!(matches!(again.status, 404 | 409), "{}", again.text());
    assert!(again.json()["error"].is_string());
    // Deny with a message.
    let resp = r
        .post_json(
            &format!("/api/requests/{rid2}/decision"),
            &json!({"decision": "deny", "message": "use the Makefile target"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = verdict(rx2).await;
    assert!(
        format!("{v:?}").contains("use the Makefile target"),
        "{v:?}"
    );
    // The audit trail names the surface.
    atm_core::testing::wait_until("the audit trail names the surface", || async {
        let log = r.get("/api/sessions").await.json();
        log[1]["request_log"][0]["surface"]["name"] == "http"
    })
    .await;
    // Not a request id.
    let resp = r
        .post_json("/api/requests/zz/decision", &json!({"decision": "allow"}))
        .await;
    assert_eq!(resp.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_behind_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "").await;
    let resp = r.get("/metrics").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(resp.text().contains("# TYPE "), "{}", resp.text());
    assert!(!resp.text().contains(&r.token));
    assert_eq!(
        request(r.addr, "GET", "/metrics", &[], b"").await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_is_a_snapshot_then_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "").await;
    started(&r, "before").await;
    let mut sse = Sse::open(r.addr, &r.bearer()).await;
    let snap = sse.next().await;
    assert_eq!(snap.name, "snapshot");
    assert_eq!(snap.data["sessions"][0]["id"], "before");
    assert!(snap.data["host"].is_string());
    let seq = snap.data["seq"].as_u64().unwrap();
    started(&r, "after").await;
    let e = sse
        .until("session", |d| d["session"]["id"] == "after")
        .await;
    assert!(e.data["seq"].as_u64().unwrap() > seq);
    let _ = ask(&r, "after").await;
    let e = sse
        .until("session", |d| d["session"]["state"] == "needs_permission")
        .await;
    assert_eq!(e.data["session"]["attention"]["tool"], "Bash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_never_slows_another_and_is_resynced_when_it_reads_again() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "client_queue = 4\nclient_coalesced = 8\n").await;
    // The stuck client: opened, then never read (its socket buffers fill up).
    let mut stuck = Sse::open(r.addr, &r.bearer()).await;
    let mut live = Sse::open(r.addr, &r.bearer()).await;
    assert_eq!(live.next().await.name, "snapshot");
    // Big sessions, so that the stuck client's socket buffers fill quickly.
    let long = "x".repeat(2000);
    let started_at = Instant::now();
    for i in 0..3000u32 {
        let id = format!("s{}", i % 50);
        r.harness
            .apply(
                source(&id),
                AgentEvent::PromptSubmitted {
                    prompt: Some(format!("{long}{i}")),
                },
            )
            .await;
        if i % 500 == 499 {
            // The live client catches up with each burst (change by change, or through a
            // snapshot when it fell behind) while the stuck one reads nothing.
            let now = r.harness.registry.snapshot().await.unwrap().seq;
            while live.next().await.data["seq"].as_u64().unwrap() < now {}
        }
    }
    let took = started_at.elapsed();
    assert!(took < Duration::from_secs(30), "fan-out slowed: {took:?}");
    // The stuck client reads again: after what its socket buffers held, a fresh snapshot, not
    // the 3,000 changes.
    let mut saw_snapshot_after_start = false;
    for _ in 0..3000 {
        let e = stuck.next().await;
        if e.name == "snapshot" && e.data["sessions"].as_array().unwrap().len() == 50 {
            saw_snapshot_after_start = true;
            break;
        }
    }
    assert!(saw_snapshot_after_start, "the stuck client was resynced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let harness = atm_core::testing::TestHarness::new(dir.path()).await;
    let cfg = atm_core::testing::config_table(&format!(
        "listen = \"{addr}\"\ntoken_file = \"{}\"\n",
        dir.path().join("t").display()
    ));
    let reg = atm_core::plugin::find(atm_core::plugin::PluginKind::Sink, "http").unwrap();
    let atm_core::plugin::PluginFactory::Sink(factory) = reg.factory else {
        panic!()
    };
    let e = factory(&cfg)
        .unwrap()
        .run(harness.sink_context("http"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&addr.to_string()), "{e}");
    assert!(e.contains("another program uses it"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_is_private_and_answers_with_the_peer_uid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (r, sock) = start_with_unix_socket(dir.path()).await;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    started(&r, "s1").await;
    let (rid, rx) = ask(&r, "s1").await;
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let body = br#"{"decision":"allow"}"#;
    let req = raw_request(
        "POST",
        &format!("/api/requests/{rid}/decision"),
        &[
            ("authorization", &r.bearer()),
            ("content-type", "application/json"),
        ],
        body,
    );
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let _ = verdict(rx).await;
    let surface = atm_core::testing::wait_for("the answer in the audit trail", || async {
        let log = r.get("/api/sessions").await.json();
        let s = log[0]["request_log"][0]["surface"].clone();
        (!s.is_null()).then_some(s)
    })
    .await;
    assert_eq!(surface["name"], "http");
    assert_eq!(surface["uid"], atm_core::paths::uid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_with_its_choice_and_a_wrong_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), "").await;
    started(&r, "q1").await;
    let awaiting = r
        .harness
        .registry
        .apply_awaiting(EventEnvelope::now(
            source("q1"),
            atm_core::testing::database_question(Some("DB"), &["Postgres", "SQLite"]),
        ))
        .await
        .unwrap();
    let (rid, rx) = awaiting.wait.expect("a question opens a request");
    let pending = r.get("/api/pending").await.json();
    assert_eq!(pending[0]["questions"][0]["options"][1]["label"], "SQLite");
    let path = format!("/api/requests/{rid}/decision");
    let wrong = r
        .post_json(&path, &json!({"decision": "answer", "answers": ["a", "b"]}))
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.text());
    assert!(wrong.json()["error"].is_string());
    let ok = r
        .post_json(&path, &json!({"decision": "answer", "answers": ["SQLite"]}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let v = verdict(rx).await;
    assert!(format!("{v:?}").contains("SQLite"), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_outlives_the_header_timeout_on_keepalive_comments() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        dir.path(),
        "header_timeout = \"300ms\"\nkeepalive = \"1s\"\n",
    )
    .await;
    let mut sse = Sse::open(r.addr, &r.bearer()).await;
    assert_eq!(sse.next().await.name, "snapshot");
    // Three keep-alive comments later the stream still carries changes.
    let mut buf = [0u8; 256];
    let mut comments = 0;
    while comments < 3 {
        let n = tokio::time::timeout(Duration::from_secs(5), sse.stream.read(&mut buf))
            .await
            .expect("a keep-alive within 5 s")
            .unwrap();
        assert!(n > 0, "the stream closed while idle");
        comments += String::from_utf8_lossy(&buf[..n])
            .matches(": keepalive")
            .count();
    }
    started(&r, "late").await;
    sse.until("session", |d| d["session"]["id"] == "late").await;
}
