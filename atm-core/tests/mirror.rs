//! Sessions of other hosts in the registry ([`atm_core::registry::Mirror`]) and decisions for
//! their requests, forwarded to the link that owns them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use atm_core::registry::{Decided, Mirror};
use atm_core::request::{DecideError, Decision, PendingRequest, RequestId, Surface};
use atm_core::{
    AgentEvent, AgentState, ApplyOutcome, Attention, EventEnvelope, EventSource, Harness, HostId,
    ProcessIdentity, Registry, RegistryConfig, RegistryHandle, Session, SessionChange, SessionId,
    SessionKey, StartSource,
};

fn host(s: &str) -> HostId {
    HostId::parse(s).unwrap()
}

async fn start() -> RegistryHandle {
    Registry::start(RegistryConfig {
        cleanup_interval: Duration::ZERO,
        host: host("hub"),
        ..RegistryConfig::default()
    })
    .await
    .handle
}

/// A session as host `devbox` would publish it: keyed by its own process there.
fn remote_session(id: &str, pid: u32, state: AgentState) -> Session {
    let key = SessionKey::Process {
        harness: Harness::claude(),
        pid,
        start_time: 9,
    };
    let process = Some(ProcessIdentity { pid, start_time: 9 });
    let mut s = Session::new(
        key,
        SessionId::new(id),
        process,
        "claude-hooks",
        chrono::Utc::now(),
    );
    s.state = state;
    s.tmux_pane = Some("%3".into());
    s.host = host("devbox");
    s
}

fn mirror(s: Session) -> Mirror {
    Mirror::Session {
        host: host("devbox"),
        session: Box::new(s),
    }
}

#[tokio::test]
async fn a_remote_session_is_kept_as_its_host_said_and_apart_from_local_ones() {
    let reg = start().await;
    assert_eq!(reg.host().as_str(), "hub");
    let (_, mut rx) = reg.subscribe().await.unwrap();
    // A local session with the same id as the remote one.
    let local = EventSource::new(Harness::claude(), SessionId::new("same"), "test");
    reg.apply_event(EventEnvelope::now(
        local.clone(),
        AgentEvent::SessionStarted {
            source: StartSource::Startup,
            model: None,
        },
    ))
    .await
    .unwrap();
    let published = remote_session("same", 77, AgentState::Working);
    let out = reg.mirror(mirror(published.clone())).await.unwrap();
    assert_eq!(out, ApplyOutcome::Added);
    let all = reg.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0].host.as_str(),
        "hub",
        "local sessions carry the local host"
    );
    assert!(!all[0].is_remote());
    let remote = &all[1];
    assert_eq!(
        (remote.host.as_str(), remote.state),
        ("devbox", AgentState::Working)
    );
    assert_eq!(remote.process, None, "a remote PID is never watched here");
    assert_eq!(remote.tmux_pane, None, "a remote pane is not a pane here");
    assert!(matches!(remote.key, SessionKey::Remote { .. }));

    // A local event for id `same` lands on the local session, never on the remote one.
    reg.apply_event(EventEnvelope::now(local, AgentEvent::TurnFinished))
        .await
        .unwrap();
    let all = reg.get_all_sessions().await.unwrap();
    assert_eq!(all[0].state, AgentState::Idle);
    assert_eq!(all[1].state, AgentState::Working);

    // The same view again changes nothing; a new state is an update.
    let again = reg.mirror(mirror(published.clone())).await.unwrap();
    assert_eq!(again, ApplyOutcome::Unchanged);
    let mut idle = published;
    idle.state = AgentState::Idle;
    let moved = reg.mirror(mirror(idle)).await.unwrap();
    assert_eq!(moved, ApplyOutcome::Updated);

    // Stale, then fresh again, then gone.
    let stale = Mirror::Stale {
        host: host("devbox"),
        stale: true,
    };
    assert_eq!(
        reg.mirror(stale.clone()).await.unwrap(),
        ApplyOutcome::Updated
    );
    assert_eq!(reg.mirror(stale).await.unwrap(), ApplyOutcome::Unchanged);
    let all = reg.get_all_sessions().await.unwrap();
    assert!(all[1].remote.unwrap().stale);
    assert!(!all[0].remote.is_some_and(|r| r.stale));
    let view = atm_core::SessionView::from_session(&all[1], chrono::Utc::now());
    assert!(view.stale && view.remote);
    assert_eq!(view.host, "devbox");
    let gone = Mirror::Gone {
        host: host("devbox"),
        key: remote_session("same", 77, AgentState::Idle).key,
        reason: "ended on devbox".into(),
    };
    assert_eq!(reg.mirror(gone).await.unwrap(), ApplyOutcome::Removed);
    assert_eq!(reg.get_all_sessions().await.unwrap().len(), 1);

    // Every change went through the one change stream.
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push((e.session.is_remote(), e.change));
    }
    assert!(kinds.contains(&(true, SessionChange::Added)));
    assert!(kinds.contains(&(
        true,
        SessionChange::Removed {
            reason: "ended on devbox".into()
        }
    )));
}

#[tokio::test]
async fn its_own_host_is_ignored_and_a_gone_host_takes_its_sessions() {
    let reg = start().await;
    let own = Mirror::Session {
        host: host("hub"),
        session: Box::new(remote_session("mine", 1, AgentState::Idle)),
    };
    assert_eq!(reg.mirror(own).await.unwrap(), ApplyOutcome::Ignored);
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        reg.mirror(mirror(remote_session(id, 10 + i as u32, AgentState::Idle)))
            .await
            .unwrap();
    }
    assert_eq!(reg.get_all_sessions().await.unwrap().len(), 3);
    let gone = Mirror::HostGone {
        host: host("devbox"),
        reason: "host devbox not heard for 10m".into(),
    };
    assert_eq!(reg.mirror(gone).await.unwrap(), ApplyOutcome::Removed);
    assert!(reg.get_all_sessions().await.unwrap().is_empty());
}

fn waiting(id: &str, request: &RequestId) -> Session {
    let mut s = remote_session(id, 5, AgentState::NeedsPermission);
    s.attention = Some(Attention {
        reason: "permission".into(),
        tool: Some("Bash".into()),
        request: Some(PendingRequest {
            id: request.clone(),
            asked_at: chrono::Utc::now(),
            answerable: true,
        }),
        ..Default::default()
    });
    s
}

#[tokio::test]
async fn a_decision_for_a_remote_request_goes_to_the_link_and_its_answer_back() {
    let reg = start().await;
    let request = RequestId::generate().unwrap();
    reg.mirror(mirror(waiting("w", &request))).await.unwrap();
    let allow = Decision::Allow {
        always: false,
        rule: None,
    };
    // No link yet: the hub says the host cannot be reached, and why.
    let refused = reg
        .decide(
            request.clone(),
            allow.clone(),
            Surface::new("atmctl", Some(1)),
        )
        .await
        .unwrap()
        .unwrap_err();
    match &refused {
        DecideError::Unreachable { host, reason, .. } => {
            assert_eq!(host, "devbox");
            assert!(reason.contains("nats"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(refused.to_string().contains("devbox"));

    let mut link = reg.link_remote().await.unwrap();
    let answering = tokio::spawn(async move {
        let d = link.recv().await.unwrap();
        assert_eq!(d.host.as_str(), "devbox");
        assert_eq!(d.surface.name, "atmctl");
        let _ = d.reply.send(Ok(Decided {
            request_id: d.request.clone(),
            session_id: SessionId::new("w"),
        }));
        link
    });
    let decided = reg
        .decide(request.clone(), allow, Surface::new("atmctl", Some(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decided.session_id.as_str(), "w");
    // The hub decided nothing itself: the session waits until its host says otherwise.
    let s = reg.get_session("w").await.unwrap();
    assert_eq!(s.state, AgentState::NeedsPermission);
    let link = answering.await.unwrap();

    // A link that stopped: unreachable again.
    drop(link);
    let refused = reg
        .decide(
            request,
            Decision::Deny {
                message: None,
                interrupt: false,
            },
            Surface::new("atmctl", None),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(refused, DecideError::Unreachable { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn remote_sessions_are_not_persisted_nor_expired_by_the_janitor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.json");
    let reg = Registry::start(RegistryConfig {
        cleanup_interval: Duration::ZERO,
        silence_expiry: Duration::from_secs(1),
        snapshot_path: Some(path.clone()),
        host: host("hub"),
        ..RegistryConfig::default()
    })
    .await
    .handle;
    let mut old = remote_session("old", 3, AgentState::Idle);
    old.last_activity = chrono::Utc::now() - chrono::Duration::hours(3);
    reg.mirror(mirror(old)).await.unwrap();
    assert!(reg.cleanup_stale().await.unwrap().is_empty());
    reg.shutdown().await.unwrap();
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(!saved.contains("\"old\""), "{saved}");
}
