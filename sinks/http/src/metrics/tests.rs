//! Metrics fed with sessions and changes, read back with a Prometheus text parser and a strict
//! line check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use atm_core::host::HostId;
use atm_core::model::{AgentState, Harness, Session, SessionId, SessionKey};
use atm_core::registry::{REKEYED, RequestChanges, SessionChange, SessionEvent, Snapshot};
use atm_core::request::{Decision, PendingRequest, RequestFate, RequestId, RequestRecord, Surface};
use atm_core::testing::{claude_session, permission_attention};
use chrono::{DateTime, Duration, Utc};

use super::*;

pub(super) fn t0() -> DateTime<Utc> {
    Utc::now() - Duration::hours(1)
}

pub(super) fn metrics(max_session_series: usize) -> Metrics {
    Metrics::new(MetricsConfig {
        host: "box-1".into(),
        sink: "http".into(),
        max_session_series,
    })
}

/// A session `id` of this daemon (host `box-1`) in `state` since `since`.
pub(super) fn session(id: &str, state: AgentState, since: DateTime<Utc>) -> Session {
    let mut s = claude_session(id, since);
    s.host = HostId::parse("box-1").unwrap();
    s.state = state;
    s.state_since = since;
    s.last_activity = since;
    s
}

/// A change of `s` (which was `before`), numbered `seq`, saying which requests it ended as the
/// registry does.
pub(super) fn event(
    seq: u64,
    change: SessionChange,
    before: Option<&Session>,
    s: &Session,
    previous: Option<AgentState>,
) -> SessionEvent {
    SessionEvent {
        seq,
        requests: RequestChanges::between(&change, before, s, Utc::now()),
        change,
        session: Arc::new(s.clone()),
        previous_state: previous,
    }
}

fn request_id(n: u8) -> RequestId {
    RequestId::parse(&format!("{n:032x}")).unwrap()
}

pub(super) fn answered(
    n: u8,
    asked: DateTime<Utc>,
    secs: i64,
    surface: &str,
    d: Decision,
) -> RequestRecord {
    RequestRecord {
        id: request_id(n),
        tool: Some("Bash".into()),
        asked_at: asked,
        ended_at: asked + Duration::seconds(secs),
        fate: RequestFate::Answered {
            decision: d,
            surface: Surface::new(surface, Some(1000)),
        },
    }
}

pub(super) fn allow() -> Decision {
    Decision::Allow {
        always: false,
        rule: None,
    }
}

/// A parsed scrape: samples by name and sorted labels, after the strict check.
pub(super) type Values = HashMap<(String, Vec<(String, String)>), f64>;

/// Every sample of `m`'s scrape, each with all its labels (`host` included).
pub(super) fn scrape_with_hosts(m: &Metrics) -> (String, Values) {
    let text = m.encode().unwrap();
    strict_check(&text);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                // One entry per bucket, `le` as Rust prints the bound (`60`, `inf`).
                for b in &buckets {
                    let mut l = labels.clone();
                    l.push(("le".to_owned(), b.less_than.to_string()));
                    l.sort();
                    out.insert((format!("{}_bucket", s.metric), l), b.count);
                }
                continue;
            }
            prometheus_parse::Value::Summary(_) => panic!("no summaries"),
        };
        out.insert((s.metric, labels), value);
    }
    (text, out)
}

/// The scrape of a daemon whose sessions are all its own: every sample has `host="box-1"`,
/// which is left out of the labels.
pub(super) fn scrape(m: &Metrics) -> (String, Values) {
    let (text, all) = scrape_with_hosts(m);
    let host = ("host".to_owned(), "box-1".to_owned());
    let out = all
        .into_iter()
        .map(|((name, mut labels), value)| {
            let at = labels.iter().position(|l| *l == host);
            assert!(at.is_some(), "{name} {labels:?} has host box-1");
            labels.retain(|l| *l != host);
            ((name, labels), value)
        })
        .collect();
    (text, out)
}

/// Asserts that the series `name{labels}` in `values` is `want` (`None`: absent).
#[track_caller]
pub(super) fn expect_series(
    values: &Values,
    name: &str,
    labels: &[(&str, &str)],
    want: Option<f64>,
) {
    assert_eq!(get(values, name, labels), want, "{name} {labels:?}");
}

pub(super) fn get(values: &Values, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    values.get(&(name.to_owned(), l)).copied()
}

/// Every line of `text` is a `# HELP`, a `# TYPE` or a sample whose name, labels (with only
/// the format's escapes) and value are well formed; every sample's family has a TYPE line
/// before it, and no series appears twice.
pub(super) fn strict_check(text: &str) {
    assert!(text.ends_with('\n'), "ends with a newline");
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut series = std::collections::HashSet::new();
    let name_ok = |n: &str| {
        let mut cs = n.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name), "help name: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name_ok(name), "type name: {line}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type: {line}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "one TYPE per family: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "no other comments: {line}");
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("sample without value: {line}"),
        };
        assert!(name_ok(name), "sample name: {line}");
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.contains_key(*base))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family) || typed.contains_key(name),
            "sample before its TYPE: {line}"
        );
        // Labels: key="value" pairs, values with only \\, \" and \n escapes.
        let mut chars = rest.chars().peekable();
        let mut labels = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                assert!(name_ok(&key), "label key {key:?}: {line}");
                assert_eq!(chars.next(), Some('"'), "quoted value: {line}");
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(c @ ('\\' | '"' | 'n')) => value.push(c),
                            other => panic!("bad escape {other:?}: {line}"),
                        },
                        Some('"') => break,
                        Some(c) => {
                            assert!(!c.is_control(), "raw control character: {line:?}");
                            value.push(c);
                        }
                        None => panic!("unterminated label value: {line}"),
                    }
                }
                labels.push_str(&format!("{key}={value};"));
                match chars.next() {
                    Some(',') => {}
                    Some('}') => break,
                    other => panic!("after a label {other:?}: {line}"),
                }
            }
        }
        assert_eq!(
            chars.next(),
            Some(' '),
            "one space before the value: {line}"
        );
        let value: String = chars.collect();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value.as_str()),
            "value {value:?}: {line}"
        );
        assert!(
            series.insert(format!("{name}{{{labels}}}")),
            "duplicate series: {line}"
        );
    }
}

#[test]
fn sessions_by_state_and_harness_follow_changes() {
    let m = metrics(100);
    let t = t0();
    let a = session("a", AgentState::Working, t);
    let b = session("b", AgentState::Idle, t);
    m.load(&Snapshot {
        seq: 7,
        sessions: vec![Arc::new(a.clone()), Arc::new(b.clone())],
    });
    let mut c = session("c", AgentState::Starting, t);
    c.harness = Harness::new("codex");
    c.key = SessionKey::Id {
        harness: c.harness.clone(),
        id: c.id.clone(),
    };
    let mut a2 = a.clone();
    a2.state = AgentState::NeedsPermission;
    a2.state_since = t + Duration::seconds(90);
    m.apply(&[
        event(8, SessionChange::Added, None, &c, None),
        event(
            9,
            SessionChange::Updated,
            Some(&a),
            &a2,
            Some(AgentState::Working),
        ),
    ]);
    let (_, v) = scrape(&m);
    let n = |state: &str, harness: &str| {
        get(
            &v,
            "atm_sessions",
            &[("state", state), ("harness", harness)],
        )
    };
    assert_eq!(n("needs_permission", "claude"), Some(1.0));
    assert_eq!(n("idle", "claude"), Some(1.0));
    assert_eq!(
        n("working", "claude"),
        Some(0.0),
        "every state has a series"
    );
    assert_eq!(n("starting", "codex"), Some(1.0));
    expect_series(&v, "atm_registry_seq", &[], Some(9.0));
    // a left `working` after 90 s.
    let left = [("state", "working"), ("harness", "claude")];
    expect_series(&v, "atm_state_duration_seconds_count", &left, Some(1.0));
    expect_series(&v, "atm_state_duration_seconds_sum", &left, Some(90.0));
    expect_series(
        &v,
        "atm_state_duration_seconds_bucket",
        &[left[0], left[1], ("le", "60")],
        Some(0.0),
    );
    expect_series(
        &v,
        "atm_state_duration_seconds_bucket",
        &[left[0], left[1], ("le", "120")],
        Some(1.0),
    );
    // The longest wait is a's (since t + 90 s, about 58 minutes ago).
    let longest = get(&v, "atm_longest_wait_seconds", &[]).unwrap();
    assert!((3400.0..3600.0).contains(&longest), "{longest}");
    let changes = [("source", "test"), ("change", "added")];
    expect_series(&v, "atm_session_changes_total", &changes, Some(1.0));

    // b goes away: its time in idle is observed up to now; it is no longer counted.
    m.apply(&[event(
        10,
        SessionChange::Removed {
            reason: "process exited".into(),
        },
        Some(&b),
        &b,
        Some(AgentState::Idle),
    )]);
    let (_, v) = scrape(&m);
    expect_series(
        &v,
        "atm_sessions",
        &[("state", "idle"), ("harness", "claude")],
        Some(0.0),
    );
    let idle = [("state", "idle"), ("harness", "claude")];
    expect_series(&v, "atm_state_duration_seconds_count", &idle, Some(1.0));
    let secs = get(&v, "atm_state_duration_seconds_sum", &idle).unwrap();
    assert!((3500.0..3700.0).contains(&secs), "{secs}");
}

#[test]
fn ended_requests_count_by_surface_and_outcome_with_their_wait() {
    let m = metrics(100);
    let t = t0();
    let mut a = session("a", AgentState::Working, t);
    // A record from before the metrics started: the baseline, not counted.
    a.request_log.push(answered(1, t, 3, "atmctl", allow()));
    m.load(&Snapshot {
        seq: 1,
        sessions: vec![Arc::new(a.clone())],
    });
    let mut a2 = a.clone();
    a2.request_log.push(answered(2, t, 4, "notify", allow()));
    a2.request_log.push(answered(
        3,
        t,
        40,
        "dbus",
        Decision::Deny {
            message: None,
            interrupt: false,
        },
    ));
    let mut a3 = a2.clone();
    a3.request_log.push(RequestRecord {
        id: request_id(4),
        tool: None,
        asked_at: t,
        ended_at: t + Duration::seconds(700),
        fate: RequestFate::Withdrawn {
            reason: "answered in the terminal".into(),
        },
    });
    // Then it waits again and is removed while waiting: that request ends too.
    let mut a4 = a3.clone();
    a4.state = AgentState::NeedsPermission;
    let mut att = permission_attention("Bash", Some("ls"));
    att.request = Some(PendingRequest {
        id: request_id(5),
        asked_at: Utc::now() - Duration::seconds(10),
        answerable: true,
    });
    a4.attention = Some(att);
    m.apply(&[
        event(
            2,
            SessionChange::Updated,
            Some(&a),
            &a2,
            Some(AgentState::Working),
        ),
        event(
            3,
            SessionChange::Updated,
            Some(&a2),
            &a3,
            Some(AgentState::Working),
        ),
        event(
            4,
            SessionChange::Updated,
            Some(&a3),
            &a4,
            Some(AgentState::Working),
        ),
        // The same record again (an unrelated update) counts nothing.
        event(
            5,
            SessionChange::Updated,
            Some(&a4),
            &a4,
            Some(AgentState::NeedsPermission),
        ),
        event(
            6,
            SessionChange::Removed {
                reason: "ended".into(),
            },
            Some(&a4),
            &a4,
            Some(AgentState::NeedsPermission),
        ),
    ]);
    let (_, v) = scrape(&m);
    let ended = |surface: &str, outcome: &str| {
        get(
            &v,
            "atm_requests_ended_total",
            &[("surface", surface), ("outcome", outcome)],
        )
    };
    assert_eq!(ended("notify", "allow"), Some(1.0));
    assert_eq!(ended("dbus", "deny"), Some(1.0));
    assert_eq!(ended("none", "withdrawn"), Some(2.0));
    assert_eq!(
        ended("atmctl", "allow"),
        None,
        "the baseline is not counted"
    );
    let answered = [("harness", "claude"), ("outcome", "answered")];
    expect_series(&v, "atm_request_wait_seconds_count", &answered, Some(2.0));
    expect_series(&v, "atm_request_wait_seconds_sum", &answered, Some(44.0));
    let withdrawn = [("harness", "claude"), ("outcome", "withdrawn")];
    expect_series(&v, "atm_request_wait_seconds_count", &withdrawn, Some(2.0));
    let sum = get(&v, "atm_request_wait_seconds_sum", &withdrawn).unwrap();
    assert!((709.0..720.0).contains(&sum), "700 s + about 10 s: {sum}");
}

#[test]
fn cost_counts_increases_once_and_survives_a_rekey_and_a_resync() {
    let m = metrics(100);
    let t = t0();
    let mut a = session("a", AgentState::Working, t);
    a.usage.cost_usd = 5.0;
    m.load(&Snapshot {
        seq: 1,
        sessions: vec![Arc::new(a.clone())],
    });
    let mut a2 = a.clone();
    a2.usage.cost_usd = 5.5;
    // /clear: the same process (key) under a new id, reporting a lower cost.
    let mut renamed = a2.clone();
    renamed.id = SessionId::new("a-new");
    renamed.usage.cost_usd = 0.25;
    let mut renamed2 = renamed.clone();
    renamed2.usage.cost_usd = 1.0;
    m.apply(&[
        event(
            2,
            SessionChange::Updated,
            Some(&a),
            &a2,
            Some(AgentState::Working),
        ),
        event(
            3,
            SessionChange::Removed {
                reason: REKEYED.into(),
            },
            Some(&a2),
            &a2,
            None,
        ),
        event(4, SessionChange::Added, Some(&a2), &renamed, None),
        event(
            5,
            SessionChange::Updated,
            Some(&renamed),
            &renamed2,
            Some(AgentState::Working),
        ),
    ]);
    let (_, v) = scrape(&m);
    let cost = get(&v, "atm_cost_usd_total", &[("harness", "claude")]).unwrap();
    assert!((cost - 1.25).abs() < 1e-9, "0.5 then 0.75: {cost}");
    expect_series(
        &v,
        "atm_sessions",
        &[("state", "working"), ("harness", "claude")],
        Some(1.0),
    );
    // The re-key was no state change.
    expect_series(
        &v,
        "atm_state_duration_seconds_count",
        &[("state", "working"), ("harness", "claude")],
        None,
    );

    // A resync: what was spent and answered in the gap is counted, a session gone is dropped.
    let mut renamed3 = renamed2.clone();
    renamed3.usage.cost_usd = 3.0;
    renamed3
        .request_log
        .push(answered(9, t, 2, "socket", allow()));
    let b = session("b", AgentState::Idle, t);
    m.resync(&Snapshot {
        seq: 50,
        sessions: vec![Arc::new(renamed3), Arc::new(b)],
    });
    m.0.own.resynced(12);
    let (_, v) = scrape(&m);
    let cost = get(&v, "atm_cost_usd_total", &[("harness", "claude")]).unwrap();
    assert!((cost - 3.25).abs() < 1e-9, "{cost}");
    expect_series(
        &v,
        "atm_requests_ended_total",
        &[("surface", "socket"), ("outcome", "allow")],
        Some(1.0),
    );
    expect_series(
        &v,
        "atm_sink_resyncs_total",
        &[("sink", "http-metrics")],
        Some(1.0),
    );
    expect_series(
        &v,
        "atm_sink_missed_changes_total",
        &[("sink", "http-metrics")],
        Some(12.0),
    );
    expect_series(&v, "atm_registry_seq", &[], Some(50.0));
    assert_eq!(m.stats().applied_seq(), 50);
}

#[test]
fn a_session_moved_from_its_id_key_to_its_process_key_is_one_session() {
    let m = metrics(100);
    let t = t0();
    let a = session("a", AgentState::Working, t);
    m.load(&Snapshot {
        seq: 1,
        sessions: vec![Arc::new(a.clone())],
    });
    let mut moved = a.clone();
    moved.key = SessionKey::Process {
        harness: Harness::claude(),
        pid: 42,
        start_time: 7,
    };
    moved.state = AgentState::Idle;
    moved.state_since = t + Duration::seconds(20);
    m.apply(&[event(
        2,
        SessionChange::Updated,
        Some(&a),
        &moved,
        Some(AgentState::Working),
    )]);
    let (_, v) = scrape(&m);
    expect_series(
        &v,
        "atm_sessions",
        &[("state", "working"), ("harness", "claude")],
        Some(0.0),
    );
    expect_series(
        &v,
        "atm_sessions",
        &[("state", "idle"), ("harness", "claude")],
        Some(1.0),
    );
    expect_series(
        &v,
        "atm_state_duration_seconds_sum",
        &[("state", "working"), ("harness", "claude")],
        Some(20.0),
    );
}

#[test]
fn per_session_series_are_capped_waiting_sessions_first_and_the_rest_counted() {
    let m = metrics(10);
    let t = t0();
    let mut sessions = Vec::new();
    for i in 0..500 {
        let mut s = session(&format!("s{i:03}"), AgentState::Idle, t);
        s.last_activity = t + Duration::seconds(i);
        s.usage.cost_usd = 0.01 * i as f64;
        s.usage.context_used_percentage = 42.0;
        sessions.push(s);
    }
    // Three waiting sessions, among the least recently active: they get series all the same.
    for i in [1, 2, 3] {
        sessions[i].state = AgentState::NeedsInput;
    }
    m.load(&Snapshot {
        seq: 1,
        sessions: sessions.into_iter().map(Arc::new).collect(),
    });
    let (_, v) = scrape(&m);
    for name in [
        "atm_session_cost_usd",
        "atm_session_context_ratio",
        "atm_session_waiting_seconds",
    ] {
        let ids: Vec<&str> = v
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, l)| l.iter().find(|(k, _)| k == "session").unwrap().1.as_str())
            .collect();
        assert_eq!(ids.len(), 10, "{name}");
        for must in ["s001", "s002", "s003", "s499", "s493"] {
            assert!(ids.contains(&must), "{name} lacks {must}: {ids:?}");
        }
        assert!(!ids.contains(&"s492"), "{name}: {ids:?}");
    }
    expect_series(&v, "atm_session_series_omitted", &[], Some(490.0));
    expect_series(
        &v,
        "atm_sessions",
        &[("state", "idle"), ("harness", "claude")],
        Some(497.0),
    );
    let labels = [
        ("session", "s499"),
        ("harness", "claude"),
        ("project", "unknown"),
    ];
    expect_series(&v, "atm_session_context_ratio", &labels, Some(0.42));
    expect_series(&v, "atm_session_cost_usd", &labels, Some(4.99));
    expect_series(&v, "atm_session_waiting_seconds", &labels, Some(0.0));
    let waiting = get(
        &v,
        "atm_session_waiting_seconds",
        &[
            ("session", "s001"),
            ("harness", "claude"),
            ("project", "unknown"),
        ],
    )
    .unwrap();
    assert!(waiting > 3000.0, "{waiting}");
    // No per-session series at all when asked for none.
    let none = metrics(0);
    none.load(&Snapshot {
        seq: 1,
        sessions: vec![Arc::new(session("x", AgentState::Idle, t))],
    });
    let (text, v) = scrape(&none);
    assert!(!text.contains("session=\""), "{text}");
    expect_series(&v, "atm_session_series_omitted", &[], Some(1.0));
}

/// Sessions, harnesses and surfaces with hostile names (quotes, newlines, NUL, lossy UTF-8,
/// 100,000 characters, an attempt to start a line), more of them than the caps allow.
pub(super) fn hostile_metrics() -> Metrics {
    let m = metrics(100);
    let t = t0();
    let lossy = String::from_utf8_lossy(b"bad\xff\xfe-utf8").into_owned();
    let ids = [
        r#"quote"and\backslash"#.to_owned(),
        "new\nline\r\0nul".to_owned(),
        lossy.clone(),
        "x".repeat(100_000),
        // Cleans to the same label as the one above: one series, the other omitted.
        format!("{}y", "x".repeat(100_000)),
        "}\"} 1\nfake_metric 2".to_owned(),
    ];
    let mut sessions = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut s = session(id, AgentState::Working, t + Duration::seconds(i as i64));
        s.cwd = Some("/home/u/\"evil\"\nproj/".into());
        sessions.push(Arc::new(s));
    }
    // 20 harness names: 16 keep their name, the rest are `other`.
    for i in 0..20 {
        let mut s = session(&format!("h{i}"), AgentState::Idle, t);
        s.harness = Harness::new(format!("agent-{i:02}"));
        s.key = SessionKey::Id {
            harness: s.harness.clone(),
            id: s.id.clone(),
        };
        sessions.push(Arc::new(s));
    }
    m.load(&Snapshot { seq: 1, sessions });
    let surfaces: Vec<Session> = (0..40)
        .map(|i| {
            let mut s = session(&format!("q{i}"), AgentState::Idle, t);
            s.request_log
                .push(answered(i, t, 1, &format!("surface\"{i}\n"), allow()));
            s
        })
        .collect();
    let events: Vec<SessionEvent> = surfaces
        .iter()
        .enumerate()
        .map(|(i, s)| event(2 + i as u64, SessionChange::Added, None, s, None))
        .collect();
    m.apply(&events);
    m
}

#[test]
fn hostile_label_values_are_escaped_cut_and_capped() {
    let (text, v) = scrape(&hostile_metrics());
    assert!(!text.contains("\nfake_metric"), "no injected line");
    let session_ids: Vec<String> = v
        .keys()
        .filter(|(n, _)| n == "atm_session_cost_usd")
        .map(|(_, l)| l.iter().find(|(k, _)| k == "session").unwrap().1.clone())
        .collect();
    // prometheus-parse does not unescape; compare the escaped forms.
    assert!(
        session_ids.iter().any(|s| s == r#"quote\"and\\backslash"#),
        "{session_ids:?}"
    );
    assert!(
        session_ids
            .iter()
            .any(|s| s == "new\u{FFFD}line\u{FFFD}\u{FFFD}nul")
    );
    assert!(session_ids.iter().any(|s| s == "bad\u{FFFD}\u{FFFD}-utf8"));
    assert!(
        session_ids
            .iter()
            .all(|s| s.chars().count() <= MAX_VALUE_CHARS + 8),
        "cut: {session_ids:?}"
    );
    let cut = format!("{}…", "x".repeat(MAX_VALUE_CHARS - 1));
    assert_eq!(
        session_ids.iter().filter(|s| **s == cut).count(),
        1,
        "one series per label set"
    );
    assert!(
        text.contains(r#"project="\"evil\"�proj""#),
        "last part of the path: {text}"
    );
    expect_series(&v, "atm_session_series_omitted", &[], Some(1.0));

    let harnesses: std::collections::BTreeSet<&str> = v
        .keys()
        .filter(|(n, _)| n == "atm_sessions")
        .map(|(_, l)| l.iter().find(|(k, _)| k == "harness").unwrap().1.as_str())
        .collect();
    assert_eq!(harnesses.len(), 16 + 1, "{harnesses:?}");
    assert!(harnesses.contains("other"));
    let surfaces: Vec<&str> = v
        .keys()
        .filter(|(n, _)| n == "atm_requests_ended_total")
        .map(|(_, l)| l.iter().find(|(k, _)| k == "surface").unwrap().1.as_str())
        .collect();
    assert_eq!(surfaces.len(), table::MAX_SURFACES + 1, "{surfaces:?}");
    expect_series(
        &v,
        "atm_requests_ended_total",
        &[("surface", "other"), ("outcome", "allow")],
        Some(8.0),
    );
    assert!(get(&v, "atm_label_values_capped_total", &[]).unwrap() >= 8.0);
}

#[test]
fn counters_handed_in_by_other_plugins_are_reported() {
    let m = metrics(100);
    let stats = Arc::new(atm_core::ingest::IngestStats::default());
    atm_core::ingest::IngestStats::bump(&stats.applied);
    atm_core::ingest::IngestStats::bump(&stats.applied);
    atm_core::ingest::IngestStats::bump(&stats.bad_messages);
    assert!(m.watch_adapter("claude-hooks", stats));
    let sink = atm_core::SinkStats::default();
    sink.applied(33);
    sink.failed();
    assert!(m.watch_sink("dbus", sink));
    m.sink_counters("http-sse").resynced(0);
    m.sink_counters("http-sse").dropped(3);
    for i in 0..MAX_WATCHED - 1 {
        assert!(m.watch_sink(&format!("s{i}"), atm_core::SinkStats::default()));
    }
    assert!(!m.watch_sink("one-too-many", atm_core::SinkStats::default()));
    assert!(
        m.watch_sink("dbus", atm_core::SinkStats::default()),
        "a known name is replaced"
    );
    let (_, v) = scrape(&m);
    let events = |outcome: &str| {
        get(
            &v,
            "atm_adapter_events_total",
            &[("adapter", "claude-hooks"), ("outcome", outcome)],
        )
    };
    assert_eq!(events("applied"), Some(2.0));
    assert_eq!(events("malformed"), Some(1.0));
    assert_eq!(events("ignored"), Some(0.0));
    expect_series(&v, "atm_sink_applied_seq", &[("sink", "dbus")], Some(0.0));
    expect_series(
        &v,
        "atm_sink_resyncs_total",
        &[("sink", "http-sse")],
        Some(1.0),
    );
    expect_series(
        &v,
        "atm_sink_dropped_total",
        &[("sink", "http-sse")],
        Some(3.0),
    );
    assert!(get(&v, "atm_sink_applied_seq", &[("sink", "one-too-many")]).is_none());
}

/// Metrics with every family fed: what the dashboard test checks names against.
pub(super) fn every_family() -> Metrics {
    let m = metrics(100);
    let t = t0();
    let a = session("a", AgentState::Working, t);
    m.load(&Snapshot {
        seq: 1,
        sessions: vec![Arc::new(a.clone())],
    });
    let mut a2 = a.clone();
    a2.state = AgentState::Idle;
    a2.state_since = t + Duration::seconds(5);
    a2.usage.cost_usd = 1.0;
    a2.request_log.push(answered(1, t, 3, "http", allow()));
    m.apply(&[event(
        2,
        SessionChange::Updated,
        Some(&a),
        &a2,
        Some(AgentState::Working),
    )]);
    m.0.own.resynced(1);
    m.0.own.dropped(1);
    m.watch_adapter("claude-hooks", Arc::default());
    m.watch_sink("socket", atm_core::SinkStats::default());
    m
}

#[test]
fn every_declared_name_is_emitted_and_nothing_else() {
    let (text, _) = scrape(&every_family());
    let typed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut p = l.split(' ');
            let (name, kind) = (p.next().unwrap(), p.next().unwrap());
            // Counters are typed by their base name in the 0.0.4 format.
            if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect();
    let declared: std::collections::BTreeSet<String> =
        METRIC_NAMES.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(typed, declared);
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
}
