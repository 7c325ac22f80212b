use std::sync::Arc;

use atm_core::chrono::Utc;
use atm_core::request::{Decision, PendingRequest, RequestRecord, Surface};
use atm_core::{AgentState, Attention, RequestChanges};

use super::*;
use atm_core::registry::REKEYED;

fn id(n: u8) -> RequestId {
    RequestId::parse(&format!("{n:032x}")).unwrap()
}

fn session(sid: &str, open: Option<u8>, log: &[(u8, RequestFate)]) -> Session {
    let mut s = atm_core::testing::claude_session(sid, Utc::now());
    if let Some(n) = open {
        s.state = AgentState::NeedsPermission;
        s.attention = Some(Attention {
            reason: "permission".into(),
            tool: Some("Bash".into()),
            detail: Some("make\0all".into()),
            subagent_id: None,
            suggestions: Vec::new(),
            questions: Vec::new(),
            request: Some(PendingRequest {
                id: id(n),
                asked_at: Utc::now(),
                answerable: true,
            }),
        });
    }
    s.request_log = log
        .iter()
        .map(|(n, fate)| RequestRecord {
            id: id(*n),
            tool: Some("Bash".into()),
            asked_at: Utc::now(),
            ended_at: Utc::now(),
            fate: fate.clone(),
        })
        .collect();
    s
}

fn answered(surface: &str) -> RequestFate {
    RequestFate::Answered {
        decision: Decision::Allow {
            always: false,
            rule: None,
        },
        surface: Surface::new(surface, Some(1000)),
    }
}

fn gone(reason: &str) -> RequestFate {
    RequestFate::Withdrawn {
        reason: reason.into(),
    }
}

/// The tracker and the session as the registry last announced it: each change is built as
/// the registry builds it, saying what it opened and ended compared with that.
#[derive(Default)]
struct Follower {
    tracker: RequestTracker,
    last: Option<Session>,
}

impl Follower {
    fn observe(&mut self, change: SessionChange, s: Session) -> Vec<RequestSignal> {
        let before = match change {
            SessionChange::Removed { .. } => Some(s.clone()),
            _ => self.last.take(),
        };
        let event = SessionEvent {
            seq: 1,
            requests: RequestChanges::between(&change, before.as_ref(), &s, Utc::now()),
            change,
            session: Arc::new(s.clone()),
            previous_state: None,
        };
        self.last = Some(s);
        let mut out = Vec::new();
        self.tracker.observe(&event, &mut out);
        assert!(
            out.iter().all(|(seq, _)| *seq == 1),
            "tagged with the change's seq"
        );
        out.into_iter().map(|(_, s)| s).collect()
    }
}

fn added_sig(n: u8, sid: &str) -> RequestSignal {
    RequestSignal::Added {
        id: id(n).to_string(),
        session_id: sid.into(),
        tool: "Bash".into(),
        // Made portable: the NUL a bus would drop the connection for is gone.
        detail: "make\u{fffd}all".into(),
    }
}

fn resolved_sig(n: u8, sid: &str, fate: &'static str, detail: &str) -> RequestSignal {
    RequestSignal::Resolved {
        id: id(n).to_string(),
        session_id: sid.into(),
        fate,
        detail: detail.into(),
    }
}

#[test]
fn a_request_is_added_once_and_resolved_with_its_logged_fate() {
    let mut t = Follower::default();
    assert_eq!(
        t.observe(SessionChange::Added, session("a", Some(1), &[])),
        [added_sig(1, "a")]
    );
    // Said again (answerable now, or the same wait repeated): nothing new.
    assert!(
        t.observe(SessionChange::Updated, session("a", Some(1), &[]))
            .is_empty()
    );
    let done = session("a", None, &[(1, answered("dbus"))]);
    assert_eq!(
        t.observe(SessionChange::Updated, done.clone()),
        [resolved_sig(1, "a", "answered", "dbus")]
    );
    // The log keeps the entry; later changes do not resolve it again.
    assert!(t.observe(SessionChange::Updated, done).is_empty());
    assert_eq!(t.tracker.open(), 0);
}

#[test]
fn a_superseded_request_resolves_before_the_new_one_is_added() {
    let mut t = Follower::default();
    t.observe(SessionChange::Added, session("a", Some(1), &[]));
    let next = session("a", Some(2), &[(1, gone("superseded by a newer request"))]);
    assert_eq!(
        t.observe(SessionChange::Updated, next),
        [
            resolved_sig(1, "a", "withdrawn", "superseded by a newer request"),
            added_sig(2, "a")
        ]
    );
    assert_eq!(t.tracker.open(), 1);
}

#[test]
fn a_removed_session_withdraws_its_request_but_a_rekey_does_not() {
    let mut t = Follower::default();
    t.observe(SessionChange::Added, session("a", Some(1), &[]));
    let rekey = SessionChange::Removed {
        reason: REKEYED.into(),
    };
    assert!(t.observe(rekey, session("a", Some(1), &[])).is_empty());
    // The same key under its new id, holding the same request.
    assert!(
        t.observe(SessionChange::Added, session("a2", Some(1), &[]))
            .is_empty()
    );
    let ended = SessionChange::Removed {
        reason: "process exited".into(),
    };
    assert_eq!(
        t.observe(ended, session("a2", Some(1), &[])),
        [resolved_sig(
            1,
            "a2",
            "withdrawn",
            "the session ended (process exited)"
        )]
    );
    assert_eq!(t.tracker.open(), 0);
}

#[test]
fn a_wait_that_vanishes_without_a_log_entry_is_withdrawn() {
    let mut t = Follower::default();
    t.observe(SessionChange::Added, session("a", Some(1), &[]));
    assert_eq!(
        t.observe(SessionChange::Updated, session("a", None, &[])),
        [resolved_sig(1, "a", "withdrawn", "the wait ended")]
    );
}

#[test]
fn a_resync_sends_the_difference_and_seeding_sends_nothing() {
    let a = Arc::new(session("a", Some(1), &[]));
    let b = Arc::new(session("b", Some(2), &[]));
    let mut t = RequestTracker::seed(&Snapshot {
        seq: 1,
        sessions: vec![a, b],
    });
    assert_eq!(t.open(), 2);
    // Missed: a's request was answered, b went away, c asked.
    let a = Arc::new(session("a", None, &[(1, answered("atmctl"))]));
    let c = Arc::new(session("c", Some(3), &[]));
    let mut out = Vec::new();
    t.resync(
        &Snapshot {
            seq: 9,
            sessions: vec![a, c],
        },
        &mut out,
    );
    assert!(
        out.iter().all(|(seq, _)| *seq == 9),
        "tagged with the snapshot's seq"
    );
    let out: Vec<RequestSignal> = out.into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        out,
        [
            resolved_sig(1, "a", "answered", "atmctl"),
            resolved_sig(2, "b", "withdrawn", "the session ended"),
            added_sig(3, "c"),
        ]
    );
    assert_eq!(t.open(), 1);
}

#[tokio::test]
async fn a_full_signal_queue_drops_the_newest_and_counts_it() {
    let (mut tx, mut rx) = signal_queue();
    for n in 0..=SIGNAL_CAPACITY {
        let signal = RequestSignal::Added {
            id: n.to_string(),
            session_id: String::new(),
            tool: String::new(),
            detail: String::new(),
        };
        tx.push((1, signal));
    }
    assert_eq!(tx.dropped(), 1);
    let first = rx.recv().await.unwrap();
    assert!(matches!(first, (1, RequestSignal::Added { id, .. }) if id == "0"));
    let mut n = 1;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, SIGNAL_CAPACITY);
}
