//! A fleet's hub: sessions mirrored from other hosts count under their own `host`, the daemon's
//! own series under the hub's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use atm_core::host::HostId;
use atm_core::model::{AgentState, Harness, Session, SessionKey};
use atm_core::registry::{SessionChange, Snapshot};
use chrono::{DateTime, Duration, Utc};

use super::tests::{
    allow, answered, event, expect_series, get, metrics, scrape_with_hosts, session, t0,
};

/// A session `id` that runs on `host`, mirrored to this hub.
fn remote(id: &str, host: &str, state: AgentState, since: DateTime<Utc>) -> Session {
    let mut s = session(id, state, since);
    s.host = HostId::parse(host).unwrap();
    s.cwd = Some("/home/dev/atm".into());
    s
}

#[test]
fn mirrored_sessions_count_under_their_own_host_and_the_daemon_under_its_own() {
    let m = metrics(100);
    let t = t0();
    let local = session("a", AgentState::Idle, t);
    let far = remote("r1", "far-2", AgentState::Working, t);
    m.load(&Snapshot {
        seq: 1,
        sessions: vec![Arc::new(local.clone()), Arc::new(far.clone())],
    });
    // r1 waits on its user after 60 s of work, having spent a dollar, and answered a request.
    let mut far2 = far.clone();
    far2.state = AgentState::NeedsPermission;
    far2.state_since = t + Duration::seconds(60);
    far2.usage.cost_usd += 1.0;
    far2.request_log.push(answered(1, t, 5, "http", allow()));
    // A codex session appears on a third host.
    let mut other = remote("r2", "near-3", AgentState::Idle, t);
    other.harness = Harness::new("codex");
    other.key = SessionKey::Id {
        harness: other.harness.clone(),
        id: other.id.clone(),
    };
    m.apply(&[
        event(
            2,
            SessionChange::Updated,
            Some(&far),
            &far2,
            Some(AgentState::Working),
        ),
        event(3, SessionChange::Added, None, &other, None),
    ]);
    let (text, v) = scrape_with_hosts(&m);
    let at = |name: &str, labels: &[(&str, &str)]| get(&v, name, labels);

    let n = |host: &str, state: &str, harness: &str| {
        at(
            "atm_sessions",
            &[("host", host), ("state", state), ("harness", harness)],
        )
    };
    assert_eq!(n("box-1", "idle", "claude"), Some(1.0));
    assert_eq!(n("box-1", "needs_permission", "claude"), Some(0.0));
    assert_eq!(n("far-2", "needs_permission", "claude"), Some(1.0));
    assert_eq!(n("near-3", "idle", "codex"), Some(1.0));
    assert_eq!(
        n("box-1", "idle", "codex"),
        None,
        "no group without sessions"
    );

    // The wait is far-2's; the hub has none of its own.
    let longest = at("atm_longest_wait_seconds", &[("host", "far-2")]).unwrap();
    assert!((3400.0..3600.0).contains(&longest), "{longest}");
    assert_eq!(
        at("atm_longest_wait_seconds", &[("host", "box-1")]),
        Some(0.0)
    );

    let left = [
        ("host", "far-2"),
        ("state", "working"),
        ("harness", "claude"),
    ];
    assert_eq!(at("atm_state_duration_seconds_sum", &left), Some(60.0));
    assert_eq!(
        at(
            "atm_cost_usd_total",
            &[("host", "far-2"), ("harness", "claude")]
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "atm_requests_ended_total",
            &[("host", "far-2"), ("surface", "http"), ("outcome", "allow")]
        ),
        Some(1.0)
    );
    assert_eq!(
        at(
            "atm_request_wait_seconds_sum",
            &[
                ("host", "far-2"),
                ("harness", "claude"),
                ("outcome", "answered")
            ]
        ),
        Some(5.0)
    );
    assert_eq!(
        at(
            "atm_session_changes_total",
            &[("host", "near-3"), ("source", "test"), ("change", "added")]
        ),
        Some(1.0)
    );
    let per_session = [
        ("host", "far-2"),
        ("session", "r1"),
        ("harness", "claude"),
        ("project", "atm"),
    ];
    assert_eq!(
        at("atm_session_cost_usd", &per_session),
        Some(far2.usage.cost_usd)
    );

    // What the daemon says of itself carries the hub's host, once.
    assert_eq!(at("atm_registry_seq", &[("host", "box-1")]), Some(3.0));
    assert_eq!(
        at("atm_session_series_omitted", &[("host", "box-1")]),
        Some(0.0)
    );
    assert_eq!(
        at(
            "atm_sink_resyncs_total",
            &[("host", "box-1"), ("sink", "http-metrics")]
        ),
        Some(0.0)
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(line.matches("host=").count(), 1, "one host label: {line}");
    }
}

#[test]
fn hosts_beyond_the_cap_share_one_series() {
    let m = metrics(0);
    let sessions: Vec<_> = (0..super::table::MAX_HOSTS + 3)
        .map(|i| {
            Arc::new(remote(
                &format!("s{i}"),
                &format!("h{i}"),
                AgentState::Idle,
                t0(),
            ))
        })
        .collect();
    m.load(&Snapshot { seq: 1, sessions });
    let (_, v) = scrape_with_hosts(&m);
    let hosts: std::collections::BTreeSet<_> = v
        .keys()
        .filter(|(name, _)| name == "atm_sessions")
        .filter_map(|(_, l)| l.iter().find(|(k, _)| k == "host").map(|(_, h)| h.clone()))
        .collect();
    assert_eq!(
        hosts.len(),
        super::table::MAX_HOSTS + 1,
        "the cap and `other`"
    );
    expect_series(
        &v,
        "atm_sessions",
        &[("host", "other"), ("state", "idle"), ("harness", "claude")],
        Some(3.0),
    );
    expect_series(
        &v,
        "atm_label_values_capped_total",
        &[("host", "box-1")],
        Some(3.0),
    );
}
