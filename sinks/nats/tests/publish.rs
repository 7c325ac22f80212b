//! The host side against a real nats-server: this host's sessions in the bucket (and only
//! theirs, without their text unless asked), the heartbeat, answers from a hub applied once,
//! and a server that goes away and comes back without anything lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::BTreeMap;
use std::time::Duration;

use atm_core::fleet::{
    DecideReply, DecideRequest, ENTRY_VERSION, NatsConnection, decide_subject, decode_host,
    decode_session, host_key,
};
use atm_core::request::{Decision, RequestEnd};
use atm_core::testing::nats::NatsServer;
use atm_core::testing::{TestHarness, wait_until};
use atm_core::{
    AgentEvent, EventEnvelope, EventSource, Harness, HostId, RegistryConfig, SessionId, StartSource,
};
use futures_util::StreamExt;
use sink_nats::{NatsSink, NatsSinkConfig};

fn host(s: &str) -> HostId {
    HostId::parse(s).unwrap()
}

fn config(url: String) -> NatsSinkConfig {
    NatsSinkConfig {
        connection: NatsConnection {
            servers: vec![url],
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        heartbeat: Duration::from_millis(300),
        include_text: false,
        queue_capacity: 64,
        bucket_creation: Default::default(),
    }
}

async fn devbox(dir: &std::path::Path) -> TestHarness {
    TestHarness::with_config(
        dir,
        RegistryConfig {
            cleanup_interval: Duration::ZERO,
            host: host("devbox"),
            ..RegistryConfig::default()
        },
    )
    .await
}

fn start_sink(h: &TestHarness, cfg: NatsSinkConfig) -> tokio::task::JoinHandle<()> {
    let ctx = h.sink_context("nats");
    tokio::spawn(async move {
        use atm_core::OutputSink;
        let r = Box::new(NatsSink::new(cfg)).run(ctx).await;
        assert!(r.is_ok(), "{r:?}");
    })
}

fn src(id: &str) -> EventSource {
    EventSource::new(Harness::claude(), SessionId::new(id), "test")
}

fn started() -> AgentEvent {
    AgentEvent::SessionStarted {
        source: StartSource::Startup,
        model: None,
    }
}

/// What the bucket holds now: key -> raw value (deleted keys left out).
/// What the bucket holds now; empty when the server does not answer within 3 s (a poll then
/// asks again on a fresh connection: a read hung across a server restart was seen once).
async fn contents(url: &str) -> BTreeMap<String, Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(3), read_bucket(url))
        .await
        .unwrap_or_default()
}

async fn read_bucket(url: &str) -> BTreeMap<String, Vec<u8>> {
    let Ok(client) = async_nats::connect(url).await else {
        return BTreeMap::new();
    };
    let js = async_nats::jetstream::new(client);
    let Ok(kv) = js.get_key_value("atm").await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    let Ok(mut keys) = kv.keys().await else {
        return out;
    };
    while let Some(Ok(k)) = keys.next().await {
        if let Ok(Some(v)) = kv.get(&k).await {
            out.insert(k, v.to_vec());
        }
    }
    out
}

/// The ids of the sessions in the bucket, with their state.
async fn published(url: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = contents(url)
        .await
        .iter()
        .filter(|(k, _)| k.contains(".s."))
        .map(|(_, v)| {
            let e = decode_session(&host("devbox"), v).unwrap();
            (e.session.id.to_string(), e.session.state.to_string())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn this_hosts_sessions_and_heartbeat_are_in_the_bucket_without_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let h = devbox(dir.path()).await;
    h.apply(src("a"), started()).await;
    let sink = start_sink(&h, config(server.url()));
    let url = server.url();
    wait_until("session a is published", || async {
        published(&url).await == [("a".into(), "starting".into())]
    })
    .await;
    h.apply(
        src("a"),
        AgentEvent::PromptSubmitted {
            prompt: Some("deploy with the secret token".into()),
        },
    )
    .await;
    h.apply(src("b"), started()).await;
    wait_until("a works and b is published", || async {
        published(&url).await
            == [
                ("a".into(), "working".into()),
                ("b".into(), "starting".into()),
            ]
    })
    .await;
    let all = contents(&url).await;
    let text = String::from_utf8(all.values().flatten().copied().collect()).unwrap();
    assert!(
        !text.contains("secret token"),
        "prompt text left the host: {text}"
    );
    let beat = decode_host(&host("devbox"), &all[&host_key(&host("devbox"))]).unwrap();
    assert_eq!(beat.heartbeat_ms, 300);
    // Heartbeats keep coming.
    let first = beat.at;
    wait_until("a later heartbeat", || async {
        let all = contents(&url).await;
        decode_host(&host("devbox"), &all[&host_key(&host("devbox"))])
            .unwrap()
            .at
            > first
    })
    .await;
    h.apply(
        src("b"),
        AgentEvent::SessionEnded {
            reason: "exit".into(),
            continues: false,
        },
    )
    .await;
    wait_until("b's key is deleted", || async {
        published(&url).await == [("a".into(), "working".into())]
    })
    .await;
    h.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), sink)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_server_gone_for_a_while_loses_nothing_and_the_daemon_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(dir.path(), "");
    let url = server.url();
    let h = devbox(dir.path()).await;
    h.apply(src("stays"), started()).await;
    h.apply(src("ends"), started()).await;
    let _sink = start_sink(&h, config(url.clone()));
    wait_until("both sessions are published", || async {
        published(&url).await.len() == 2
    })
    .await;
    server.kill();
    // While NATS is gone the registry answers at once and takes every change.
    for i in 0..50 {
        let t = std::time::Instant::now();
        h.apply(src(&format!("new{i}")), started()).await;
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "the registry waited for NATS"
        );
    }
    h.apply(
        src("ends"),
        AgentEvent::SessionEnded {
            reason: "exit".into(),
            continues: false,
        },
    )
    .await;
    h.apply(src("stays"), AgentEvent::TurnFinished).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    wait_until("the bucket has what the host has", || async {
        let p = published(&url).await;
        p.len() == 51
            && p.contains(&("stays".into(), "idle".into()))
            && !p.iter().any(|(id, _)| id == "ends")
    })
    .await;
}

#[tokio::test]
async fn a_hub_s_answer_is_applied_once_and_refusals_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let url = server.url();
    let h = devbox(dir.path()).await;
    let _sink = start_sink(&h, config(url.clone()));
    let awaiting = h
        .registry
        .apply_awaiting(EventEnvelope::now(
            src("w"),
            AgentEvent::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("cargo publish".into()),
                suggestions: Vec::new(),
            },
        ))
        .await
        .unwrap();
    let (request, verdict) = awaiting.wait.unwrap();
    let client = async_nats::connect(url.clone()).await.unwrap();
    let subject = decide_subject("atm", &host("devbox"));
    wait_until("the sink answers on its subject", || async {
        client
            .request(subject.clone(), b"{}".to_vec().into())
            .await
            .is_ok()
    })
    .await;
    let ask = |req: &DecideRequest| {
        let client = client.clone();
        let subject = subject.clone();
        let payload = serde_json::to_vec(req).unwrap();
        async move {
            let m = client.request(subject, payload.into()).await.unwrap();
            serde_json::from_slice::<DecideReply>(&m.payload).unwrap()
        }
    };
    let mut req = DecideRequest {
        v: ENTRY_VERSION,
        host: host("devbox"),
        request_id: request.to_string(),
        decision: Decision::Allow {
            always: false,
            rule: None,
        },
        surface: "atmctl".into(),
        uid: Some(1000),
        from: host("hub"),
    };
    let first = ask(&req).await;
    assert_eq!(
        first,
        DecideReply::Decided {
            session_id: "w".into()
        }
    );
    match verdict.await.unwrap() {
        RequestEnd::Decided(_) => {}
        other => panic!("{other:?}"),
    }
    // A retried request (a hub that timed out) gets the same reply, and nothing twice.
    assert_eq!(ask(&req).await, first);
    let s = h.registry.get_session("w").await.unwrap();
    assert_eq!(s.request_log.len(), 1);
    assert_eq!(
        serde_json::to_value(&s.request_log[0].fate).unwrap()["surface"]["name"],
        "atmctl@hub"
    );
    // Refusals name their reason.
    req.request_id = "0".repeat(32);
    assert!(matches!(ask(&req).await, DecideReply::Refused { code, .. } if code == "not_found"));
    req.host = host("other");
    assert!(
        matches!(ask(&req).await, DecideReply::Refused { message, .. } if message.contains("not other"))
    );
    for bad in [
        &b"{not json"[..],
        &[0xff, 0xfe][..],
        &vec![b' '; 70 * 1024][..],
    ] {
        let m = client
            .request(subject.clone(), bad.to_vec().into())
            .await
            .unwrap();
        let r: DecideReply = serde_json::from_slice(&m.payload).unwrap();
        assert!(matches!(r, DecideReply::Refused { code, .. } if code == "invalid_message"));
    }
}

#[tokio::test]
async fn the_sample_builds_and_the_plugin_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let cfg = atm_core::testing::config_table(&format!(
        "servers = [\"{}\"]\nheartbeat = \"1s\"",
        server.url()
    ));
    atm_core::testing::check_sink_contract("nats", cfg, dir.path()).await;
}

#[test]
fn config_errors_name_their_key() {
    let sample = atm_core::testing::config_table(
        &include_str!("../sample.toml").replace("[[sink]]\ntype = \"nats\"\n", ""),
    );
    let c = NatsSinkConfig::from_toml(&sample).unwrap();
    assert!(!c.include_text);
    assert_eq!(c.heartbeat, Duration::from_secs(5));
    let cases = [
        ("heartbeat = \"1ms\"", "heartbeat"),
        ("queue_capacity = 0", "queue_capacity"),
        ("replicas = 9", "replicas"),
        ("heartbeet = \"1s\"", "heartbeet"),
        ("token_file = \"a\"\nnkey_file = \"b\"", "user"),
        ("password = \"inline\"", "password"),
    ];
    atm_core::testing::assert_refused_with_key(NatsSinkConfig::from_toml, &cases);
}
