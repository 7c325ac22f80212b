//! Property tests: any sequence of agent events leaves the registry consistent.
//!
//! Invariants checked after every random sequence:
//! - one session per process, and one per session id (no duplicate rows);
//! - a session's attention is present exactly when its state needs attention, and matches the
//!   last state-changing event that reached it;
//! - the change stream, replayed by a subscriber, reproduces `list_sessions` exactly
//!   (the same ids, the same states): what sinks show equals what the registry holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use atm_core::{
    AgentEvent, AgentState, EventEnvelope, EventSource, Harness, ProcessIdentity, Registry,
    RegistryConfig, SessionChange, SessionId, StartSource,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Step {
    process: usize,
    id: usize,
    with_pid: bool,
    subagent: bool,
    event: AgentEvent,
}

fn event() -> impl Strategy<Value = AgentEvent> {
    prop_oneof![
        prop_oneof![
            Just(StartSource::Startup),
            Just(StartSource::Clear),
            Just(StartSource::Resume),
            Just(StartSource::Compact)
        ]
        .prop_map(|source| AgentEvent::SessionStarted {
            source,
            model: None
        }),
        any::<bool>().prop_map(|continues| AgentEvent::SessionEnded {
            reason: if continues {
                "clear".into()
            } else {
                "logout".into()
            },
            continues
        }),
        ".{0,12}".prop_map(|p| AgentEvent::PromptSubmitted { prompt: Some(p) }),
        Just(AgentEvent::ToolStarted {
            tool: "Bash".into(),
            detail: None
        }),
        Just(AgentEvent::ToolFinished { tool: None }),
        ".{0,8}".prop_map(|d| AgentEvent::PermissionRequested {
            tool: "Edit".into(),
            detail: Some(d),
            suggestions: Vec::new()
        }),
        Just(AgentEvent::InputRequested {
            reason: "question".into(),
            tool: None,
            detail: None
        }),
        Just(AgentEvent::TurnFinished),
        Just(AgentEvent::reminder(AgentEvent::PermissionRequested {
            tool: "unknown".into(),
            detail: None,
            suggestions: Vec::new()
        })),
        Just(AgentEvent::reminder(AgentEvent::TurnFinished)),
        Just(AgentEvent::TurnFailed {
            error: "overloaded".into()
        }),
        Just(AgentEvent::Compacting),
        Just(AgentEvent::SubagentStarted {
            agent_id: "a1".into(),
        }),
        Just(AgentEvent::SubagentStopped {
            agent_id: "a1".into()
        }),
        (0.0f64..100.0).prop_map(
            |c| AgentEvent::UsageUpdated(Box::new(atm_core::UsageUpdate {
                cost_usd: Some(c),
                ..Default::default()
            }))
        ),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        0usize..3,
        0usize..5,
        any::<bool>(),
        prop::bool::weighted(0.15),
        event(),
    )
        .prop_map(|(process, id, with_pid, subagent, event)| Step {
            process,
            id,
            with_pid,
            subagent,
            event,
        })
}

fn check(steps: Vec<Step>, processes: &[ProcessIdentity]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = Registry::start(RegistryConfig {
            cleanup_interval: Duration::ZERO,
            broadcast_capacity: 100_000,
            ..RegistryConfig::default()
        })
        .await
        .handle;
        let (_, mut rx) = r.subscribe().await.unwrap();
        // What each session's state should be, per the last state-changing event it received.
        for s in &steps {
            let mut src = EventSource::new(
                Harness::claude(),
                SessionId::new(format!("s{}", s.id)),
                "prop",
            );
            if s.with_pid {
                src.process = Some(processes[s.process]);
            }
            if s.subagent {
                src.subagent_id = Some("a1".into());
            }
            r.apply_event(EventEnvelope::now(src, s.event.clone()))
                .await
                .unwrap();
        }
        let snap = r.snapshot().await.unwrap();

        let mut pids = HashSet::new();
        let mut ids = HashSet::new();
        for s in &snap.sessions {
            if let Some(p) = s.process {
                prop_assert!(pids.insert(p), "two sessions for process {p:?}");
            }
            prop_assert!(ids.insert(s.id.clone()), "two sessions with id {}", s.id);
            prop_assert_eq!(
                s.attention.is_some(),
                s.state.needs_attention(),
                "attention/state mismatch in {:?}",
                s
            );
        }

        // Replay the change stream: it must reproduce the snapshot.
        let mut replay: HashMap<String, AgentState> = HashMap::new();
        let mut last_seq = 0;
        while let Ok(e) = rx.try_recv() {
            prop_assert_eq!(e.seq, last_seq + 1, "gap in the change stream");
            last_seq = e.seq;
            match e.change {
                SessionChange::Added | SessionChange::Updated => {
                    replay.insert(e.session.id.to_string(), e.session.state);
                }
                SessionChange::Removed { .. } => {
                    replay.remove(e.session.id.as_str());
                }
            }
        }
        prop_assert_eq!(last_seq, snap.seq);
        let listed: HashMap<String, AgentState> = snap
            .sessions
            .iter()
            .map(|s| (s.id.to_string(), s.state))
            .collect();
        prop_assert_eq!(replay, listed);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_event_sequence_leaves_the_registry_consistent(steps in prop::collection::vec(step(), 1..60)) {
        let children: Vec<std::process::Child> = (0..3)
            .map(|_| std::process::Command::new("sleep").arg("30").spawn().unwrap())
            .collect();
        let processes: Vec<ProcessIdentity> = children
            .iter()
            .map(|c| atm_core::process::identity(c.id()).unwrap())
            .collect();
        let result = check(steps, &processes);
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        result?;
    }

    #[test]
    fn the_last_state_event_decides_the_state(events in prop::collection::vec(event(), 1..40)) {
        // One session, no subagents: after the sequence, the state is what the pure state
        // machine says, applied in order.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = Registry::start(RegistryConfig { cleanup_interval: Duration::ZERO, ..RegistryConfig::default() }).await.handle;
            let mut expected: Option<AgentState> = None;
            for e in &events {
                let src = EventSource::new(Harness::claude(), SessionId::new("one"), "prop");
                r.apply_event(EventEnvelope::now(src, e.clone())).await.unwrap();
                expected = match (expected, atm_core::state::transition(expected.unwrap_or(AgentState::Starting), None, e, None)) {
                    (None, _) if matches!(e, AgentEvent::SessionEnded { .. }) => None,
                    (_, atm_core::state::Outcome::End) => None,
                    (cur, atm_core::state::Outcome::Stay) => Some(cur.unwrap_or(AgentState::Starting)),
                    (_, atm_core::state::Outcome::Enter { state, .. }) => Some(state),
                };
            }
            let got = r.get_session("one").await.ok().map(|s| s.state);
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }
}
