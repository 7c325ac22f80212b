//! A session leaves the registry when its process exits, seen by pidfd, without waiting for the
//! janitor's next pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use atm_core::event::{AgentEvent, EventEnvelope, EventSource, StartSource};
use atm_core::liveness::ExitWatcher;
use atm_core::testing::ingest::FakeAgent;
use atm_core::testing::wait_until;
use atm_core::{Harness, Registry, RegistryConfig, SessionChange, SessionId};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn an_exit_removes_the_session_long_before_the_janitor_would() {
    let registry = Registry::start(RegistryConfig {
        // Only the exit watcher can remove the session within the test's deadline.
        cleanup_interval: Duration::from_secs(3600),
        ..RegistryConfig::default()
    })
    .await
    .handle;
    tokio::spawn(ExitWatcher::new(registry.clone(), CancellationToken::new()).run());
    let mut agents: Vec<FakeAgent> = (0..3).map(|_| FakeAgent::spawn()).collect();
    for (i, agent) in agents.iter().enumerate() {
        let mut source = EventSource::new(
            Harness::claude(),
            SessionId::from(format!("s{i}").as_str()),
            "test",
        );
        source.process = atm_core::process::identity(agent.pid());
        assert!(source.process.is_some());
        let event = AgentEvent::SessionStarted {
            source: StartSource::Startup,
            model: None,
        };
        registry
            .apply_event(EventEnvelope::now(source, event))
            .await
            .unwrap();
    }
    let (_, mut changes) = registry.subscribe().await.unwrap();
    let victim = agents.remove(1);
    drop(victim); // kills and reaps it
    let removed = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("a removal within 10 s")
        .unwrap();
    assert_eq!(removed.session.id.as_str(), "s1");
    assert!(
        matches!(&removed.change, SessionChange::Removed { reason } if reason == "process exited"),
        "{:?}",
        removed.change
    );
    wait_until("the two live sessions to stay", || async {
        registry.get_all_sessions().await.unwrap().len() == 2
    })
    .await;
}
