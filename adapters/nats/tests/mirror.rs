//! The hub side against a real nats-server: values put into the bucket (as a host's sink would,
//! or broken) become mirrored sessions, deletes remove them, silence makes them stale and then
//! removes them, and bad values are refused without stopping the watch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use adapter_nats::{NatsAdapter, NatsAdapterConfig};
use atm_core::fleet::{
    ENTRY_VERSION, HostEntry, NatsConnection, SessionEntry, host_key, session_kv_key,
};
use atm_core::testing::nats::NatsServer;
use atm_core::testing::{TestHarness, wait_until};
use atm_core::{AgentState, HostId, RegistryConfig, Session, SessionId, SessionKey};

fn host(s: &str) -> HostId {
    HostId::parse(s).unwrap()
}

fn config(server: &NatsServer) -> NatsAdapterConfig {
    NatsAdapterConfig {
        connection: NatsConnection {
            servers: vec![server.url()],
            ..Default::default()
        },
        stale_after: Duration::from_secs(2),
        remove_after: Duration::from_secs(5),
        decide_timeout: Duration::from_secs(2),
        bucket_creation: Default::default(),
    }
}

/// [`config`] with hosts that do not go stale during a test.
fn patient(server: &NatsServer) -> NatsAdapterConfig {
    NatsAdapterConfig {
        stale_after: Duration::from_secs(60),
        remove_after: Duration::from_secs(120),
        ..config(server)
    }
}

async fn hub(dir: &std::path::Path) -> TestHarness {
    TestHarness::with_config(
        dir,
        RegistryConfig {
            cleanup_interval: Duration::ZERO,
            host: host("hub"),
            ..RegistryConfig::default()
        },
    )
    .await
}

/// A nats-server with the fleet's bucket, and a hub daemon (fields drop in this order: the
/// hub before the server, the server before its directory).
struct Fleet {
    h: TestHarness,
    kv: async_nats::jetstream::kv::Store,
    server: NatsServer,
    _dir: tempfile::TempDir,
}

async fn start_fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let kv = bucket(&server).await;
    let h = hub(dir.path()).await;
    Fleet {
        h,
        kv,
        server,
        _dir: dir,
    }
}

impl Fleet {
    /// Starts the hub's adapter with `config` of this fleet's server.
    async fn start(
        &self,
        config: fn(&NatsServer) -> NatsAdapterConfig,
    ) -> tokio::task::JoinHandle<Result<(), atm_core::PluginError>> {
        let adapter = NatsAdapter::new(config(&self.server));
        self.h.start_adapter("nats", Box::new(adapter)).await
    }
}

async fn bucket(server: &NatsServer) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(server.url()).await.unwrap();
    let cfg = NatsConnection {
        servers: vec![server.url()],
        ..Default::default()
    };
    let settings = atm_core::fleet::BucketSettings { replicas: 1 };
    atm_core::fleet::open_bucket(&client, &cfg, Some(settings))
        .await
        .unwrap()
}

fn session(id: &str, state: AgentState) -> Session {
    let key = SessionKey::Id {
        harness: atm_core::Harness::claude(),
        id: SessionId::new(id),
    };
    let mut s = Session::new(key, SessionId::new(id), None, "claude-hooks", chrono_now());
    s.state = state;
    s
}

fn chrono_now() -> atm_core::chrono::DateTime<atm_core::chrono::Utc> {
    atm_core::chrono::Utc::now()
}

async fn put_session(kv: &async_nats::jetstream::kv::Store, h: &str, s: &Session) {
    let entry = SessionEntry {
        v: ENTRY_VERSION,
        host: host(h),
        session: s.clone(),
    };
    kv.put(
        session_kv_key(&host(h), &s.key),
        serde_json::to_vec(&entry).unwrap().into(),
    )
    .await
    .unwrap();
}

async fn beat(kv: &async_nats::jetstream::kv::Store, h: &str) {
    let entry = HostEntry {
        v: ENTRY_VERSION,
        host: host(h),
        heartbeat_ms: 200,
        sessions: 1,
        at: chrono_now(),
    };
    kv.put(
        host_key(&host(h)),
        serde_json::to_vec(&entry).unwrap().into(),
    )
    .await
    .unwrap();
}

async fn remote_states(h: &TestHarness) -> Vec<(String, String, AgentState, bool)> {
    h.sessions()
        .await
        .iter()
        .filter(|s| s.is_remote())
        .map(|s| {
            (
                s.host.to_string(),
                s.id.to_string(),
                s.state,
                s.remote.is_some_and(|r| r.stale),
            )
        })
        .collect()
}

#[tokio::test]
async fn values_in_the_bucket_become_mirrored_sessions_and_deletes_remove_them() {
    let fleet = start_fleet().await;
    let Fleet { h, kv, .. } = &fleet;
    // A value that was there before the hub started is delivered too.
    put_session(kv, "devbox", &session("early", AgentState::Idle)).await;
    let task = fleet.start(patient).await;
    wait_until("the early session is mirrored", || async {
        remote_states(h).await == [("devbox".into(), "early".into(), AgentState::Idle, false)]
    })
    .await;
    let mut s = session("s1", AgentState::Working);
    put_session(kv, "devbox", &s).await;
    s.state = AgentState::NeedsPermission;
    put_session(kv, "devbox", &s).await;
    // Its own host's entries are never mirrored.
    put_session(kv, "hub", &session("mine", AgentState::Working)).await;
    wait_until("s1 waits for permission at the hub", || async {
        remote_states(h).await.contains(&(
            "devbox".into(),
            "s1".into(),
            AgentState::NeedsPermission,
            false,
        ))
    })
    .await;
    kv.delete(session_kv_key(&host("devbox"), &s.key))
        .await
        .unwrap();
    wait_until("s1 is removed", || async {
        remote_states(h).await.iter().all(|r| r.1 != "s1")
    })
    .await;
    assert!(h.sessions().await.iter().all(|s| s.id.as_str() != "mine"));
    h.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_silent_host_goes_stale_comes_back_and_is_removed_after_longer() {
    let fleet = start_fleet().await;
    let Fleet { h, kv, .. } = &fleet;
    let _task = fleet.start(config).await;
    put_session(kv, "runner", &session("job", AgentState::Working)).await;
    beat(kv, "runner").await;
    wait_until("job is mirrored", || async {
        remote_states(h).await == [("runner".into(), "job".into(), AgentState::Working, false)]
    })
    .await;
    wait_until("job goes stale after 2 s of silence", || async {
        remote_states(h).await == [("runner".into(), "job".into(), AgentState::Working, true)]
    })
    .await;
    beat(kv, "runner").await;
    wait_until("a heartbeat makes it fresh again", || async {
        remote_states(h).await == [("runner".into(), "job".into(), AgentState::Working, false)]
    })
    .await;
    wait_until("5 s of silence removes it", || async {
        remote_states(h).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn bad_values_are_refused_and_the_watch_goes_on() {
    let fleet = start_fleet().await;
    let Fleet { h, kv, .. } = &fleet;
    let _task = fleet.start(patient).await;
    let key = |id: &str| session_kv_key(&host("devbox"), &session(id, AgentState::Idle).key);
    let good = session("good", AgentState::Idle);
    let mut wrong_host = serde_json::to_value(SessionEntry {
        v: ENTRY_VERSION,
        host: host("devbox"),
        session: session("liar", AgentState::Idle),
    })
    .unwrap();
    wrong_host["host"] = "other".into();
    let mut v2 = wrong_host.clone();
    v2["host"] = "devbox".into();
    v2["v"] = 2.into();
    let bad: Vec<(String, Vec<u8>)> = vec![
        (key("a"), b"{not json".to_vec()),
        (
            key("b"),
            b"{\"v\":1,\"host\":\"devbox\",\"session\":{\"id\":3}}".to_vec(),
        ),
        (key("c"), vec![0xff, 0xfe, 0xfd]),
        (key("d"), Vec::new()),
        (key("e"), serde_json::to_vec(&wrong_host).unwrap()),
        (key("f"), serde_json::to_vec(&v2).unwrap()),
        ("devbox.nonsense".to_owned(), b"{}".to_vec()),
        ("devbox.host".to_owned(), b"[]".to_vec()),
    ];
    // A bucket atm created refuses what a hub would refuse for its size (the hub checks again,
    // for buckets made otherwise).
    let oversized = kv
        .put(key("g"), vec![b' '; atm_core::fleet::MAX_ENTRY + 10].into())
        .await;
    assert!(oversized.is_err(), "{oversized:?}");
    for (k, v) in bad {
        kv.put(k, v.into()).await.unwrap();
    }
    put_session(kv, "devbox", &good).await;
    wait_until(
        "the good session after the bad values is mirrored",
        || async {
            remote_states(h).await == [("devbox".into(), "good".into(), AgentState::Idle, false)]
        },
    )
    .await;
}

#[tokio::test]
async fn the_sample_builds_and_the_plugin_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path(), "");
    let cfg = atm_core::testing::config_table(&format!("servers = [\"{}\"]", server.url()));
    atm_core::testing::check_adapter_contract("nats", cfg, dir.path()).await;
}

#[test]
fn config_errors_name_their_key() {
    let sample = atm_core::testing::config_table(
        &include_str!("../sample.toml").replace("[[adapter]]\ntype = \"nats\"\n", ""),
    );
    let c = NatsAdapterConfig::from_toml(&sample).unwrap();
    assert_eq!(c.stale_after, Duration::from_secs(30));
    assert_eq!(c.remove_after, Duration::from_secs(600));
    let cases = [
        ("stale_after = \"1ms\"", "stale_after"),
        (
            "stale_after = \"1min\"\nremove_after = \"30s\"",
            "remove_after",
        ),
        ("decide_timeout = \"1h\"", "decide_timeout"),
        ("replicas = 0", "replicas"),
        ("stale = \"1s\"", "stale"),
        ("bucket = \"a b\"", "bucket"),
    ];
    atm_core::testing::assert_refused_with_key(NatsAdapterConfig::from_toml, &cases);
}
