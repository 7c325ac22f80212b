//! The service on a real private bus, fed through a real registry, checked with a zbus client
//! and with `busctl` / `gdbus`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::Duration;

use atm_core::{AgentEvent, UsageUpdate};
use common::*;
use sink_dbus as _;
use zbus::OwnedVariant;

const SESSION_IFACE: &str = "io.github.atm.Monitor1.Session";

/// A status line carrying only the cost.
fn cost(usd: f64) -> UsageUpdate {
    UsageUpdate {
        cost_usd: Some(usd),
        ..Default::default()
    }
}

/// The session's PropertiesChanged for a new cost, and nothing else.
fn cost_changed(usd: f64) -> SignalBody {
    SignalBody::PropertiesChanged(
        SESSION_IFACE.into(),
        vec![("CostUsd".into(), OwnedVariant::from(usd))],
    )
}

fn changed_names(s: &Signal) -> Vec<String> {
    match &s.body {
        SignalBody::PropertiesChanged(_, c) => c.iter().map(|(n, _)| n.clone()).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_appear_and_vanish_with_their_sessions() {
    let (t, mut rec) = OnPrivateBus::recording().await;
    let conn = &t.conn;

    let s1 = source("sess-one", 101);
    t.apply(&s1, started()).await;
    let added = rec.until(|s| s.member == "InterfacesAdded").await;
    let path = "/io/github/atm/Monitor1/sessions/claude__101_1101";
    assert_eq!(
        added.body,
        SignalBody::InterfacesAdded(path.into(), vec![SESSION_IFACE.into()])
    );
    assert_eq!(
        added.path, "/io/github/atm/Monitor1",
        "sent by the object manager"
    );
    let objects = managed(conn).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(str_prop(&objects[path], "Id"), "sess-one");
    assert_eq!(str_prop(&objects[path], "Harness"), "claude");
    assert_eq!(str_prop(&objects[path], "Model"), "claude-opus");

    // busctl sees the object and its typed properties.
    let tree = t.busctl(&["tree", SERVICE]).await;
    assert!(tree.contains("claude__101_1101"), "{tree}");
    let intro = t
        .busctl(&["introspect", SERVICE, path, SESSION_IFACE])
        .await;
    for line in [
        (".Pid", "property", "u", "101"),
        (".Id", "property", "s", "\"sess-one\""),
        (".CostUsd", "property", "d", "0"),
        (".StartedAt", "property", "x", ""),
    ] {
        assert!(
            intro.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() >= 3
                    && cols[0] == line.0
                    && cols[1] == line.1
                    && cols[2] == line.2
                    && (line.3.is_empty() || cols.get(3) == Some(&line.3))
            }),
            "{line:?} not in\n{intro}"
        );
    }

    let s2 = source("sess-two", 102);
    t.start_session(&s2, 2).await;

    t.apply(&s1, ended()).await;
    let removed = rec.until(|s| s.member == "InterfacesRemoved").await;
    assert_eq!(
        removed.body,
        SignalBody::InterfacesRemoved(path.into(), vec![SESSION_IFACE.into()])
    );
    wait_for_sessions(conn, 1).await;
    let objects = managed(conn).await;
    assert_eq!(objects.len(), 1);
    assert!(!objects.contains_key(path));
    let tree = t.busctl(&["tree", SERVICE]).await;
    assert!(!tree.contains("claude__101_1101"), "{tree}");
    assert!(tree.contains("claude__102_1102"), "{tree}");

    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_changed_carries_only_the_changed_properties() {
    let t = OnPrivateBus::start().await;
    let s = source("props", 201);
    let mut rec = t.record_after_start(&s).await;
    let path = "/io/github/atm/Monitor1/sessions/claude__201_1201";

    // A status line: data, not activity, so LastActivity stays.
    t.usage(&s, cost(1.5)).await;
    let sig = rec.until(|s| s.member == "PropertiesChanged").await;
    assert_eq!(sig.path, path);
    assert_eq!(sig.body, cost_changed(1.5));

    t.usage(
        &s,
        UsageUpdate {
            context_used_percentage: Some(42.0),
            branch: Some("main".into()),
            cost_usd: Some(1.5),
            ..Default::default()
        },
    )
    .await;
    let sig = rec.until(|s| s.member == "PropertiesChanged").await;
    assert_eq!(changed_names(&sig), ["Branch", "ContextPercent"]);

    // The property itself, read back with gdbus.
    let out = t
        .gdbus_call(
            path,
            "org.freedesktop.DBus.Properties.Get",
            &[SESSION_IFACE, "Branch"],
        )
        .await;
    assert_eq!(out.trim(), "(<'main'>,)");

    // An update that changes nothing sends nothing: the next signal is the next real change.
    t.usage(&s, cost(1.5)).await;
    t.usage(&s, cost(2.0)).await;
    let sig = rec.next().await;
    assert_eq!(changed_names(&sig), ["CostUsd"]);
    assert_eq!(sig.body, cost_changed(2.0));

    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_arrive_in_order() {
    let (t, mut rec) = OnPrivateBus::recording().await;

    let s = source("order", 301);
    t.apply(&s, started()).await;
    t.apply(&s, prompt()).await;
    t.apply(&s, permission("Bash", "rm -rf build")).await;
    t.apply(
        &s,
        AgentEvent::ToolStarted {
            tool: "Bash".into(),
            detail: None,
        },
    )
    .await;
    t.apply(&s, AgentEvent::TurnFinished).await;
    t.apply(&s, ended()).await;

    let mut seen = Vec::new();
    loop {
        let sig = rec.next().await;
        let done = sig.member == "InterfacesRemoved";
        match &sig.body {
            SignalBody::PropertiesChanged(iface, changed) if iface == "io.github.atm.Monitor1" => {
                for (name, v) in changed {
                    seen.push(format!("{name}={}", u32::try_from(v).unwrap()));
                }
            }
            SignalBody::PropertiesChanged(_, _) => {
                let names = changed_names(&sig);
                if names.iter().any(|n| n == "State") {
                    seen.push("PropertiesChanged(State)".into());
                }
            }
            SignalBody::StateChanged(args) => seen.push(format!("StateChanged{args:?}")),
            SignalBody::AttentionNeeded(args) => seen.push(format!("AttentionNeeded{args:?}")),
            SignalBody::InterfacesAdded(..) => seen.push("InterfacesAdded".into()),
            SignalBody::InterfacesRemoved(..) => seen.push("InterfacesRemoved".into()),
            SignalBody::RequestAdded(_) => seen.push("RequestAdded".into()),
            SignalBody::RequestResolved([.., fate, detail]) => {
                seen.push(format!("RequestResolved({fate}, {detail})"));
            }
            SignalBody::Other => {}
        }
        if done {
            break;
        }
    }
    // Count changes come after the change that caused them.
    let after_removed = async {
        let sig = rec.next().await;
        match sig.body {
            SignalBody::PropertiesChanged(_, c) => c.into_iter().map(|(n, _)| n).collect(),
            _ => Vec::new(),
        }
    };
    let last: Vec<String> = after_removed.await;
    assert_eq!(last, ["SessionCount"]);
    // Request signals have a queue of their own, and each is sent right after the signals of
    // the change it is about.
    let at = |what: &str| seen.iter().position(|s| s == what).unwrap();
    assert_eq!(at("RequestAdded"), at("AttentionCount=1") + 1, "{seen:#?}");
    let resolved = "RequestResolved(withdrawn, answered in the terminal)";
    assert_eq!(at(resolved), at("AttentionCount=0") + 1, "{seen:#?}");
    seen.retain(|s| !s.starts_with("Request"));
    assert_eq!(
        seen,
        [
            "InterfacesAdded",
            "SessionCount=1",
            "PropertiesChanged(State)",
            r#"StateChanged["order", "starting", "working", ""]"#,
            "PropertiesChanged(State)",
            r#"StateChanged["order", "working", "needs_permission", "permission"]"#,
            r#"AttentionNeeded["order", "permission", "Bash: rm -rf build"]"#,
            "AttentionCount=1",
            "PropertiesChanged(State)",
            r#"StateChanged["order", "needs_permission", "working", ""]"#,
            "AttentionCount=0",
            "PropertiesChanged(State)",
            r#"StateChanged["order", "working", "idle", ""]"#,
            "InterfacesRemoved",
        ]
    );

    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_methods_and_properties_answer_over_the_bus() {
    let t = OnPrivateBus::start().await;
    let conn = &t.conn;
    // An adapter that answers rescans.
    let mut control = t
        .harness()
        .adapter_context("fake-discovery")
        .control_requests();
    tokio::spawn(async move {
        while let Some(atm_core::control::ControlRequest::Rescan { reply }) = control.recv().await {
            let _ = reply.send(atm_core::control::RescanReport {
                discovered: 3,
                failed: 1,
                responders: 0,
            });
        }
    });
    let a = source("alpha", 401);
    let b = source("beta", 402);
    t.apply(&a, started()).await;
    t.apply(&b, started()).await;
    t.apply(&b, permission("Edit", "src/main.rs")).await;
    wait_for_sessions(conn, 2).await;
    let monitor = MonitorProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    wait_until("AttentionCount 1", || {
        let m = monitor.clone();
        async move { m.attention_count().await.ok() == Some(1) }
    })
    .await;

    // ListSessions matches the registry (what the socket sink's list_sessions serves).
    let listed = monitor.list_sessions().await.unwrap();
    let mut ids: Vec<_> = listed.keys().cloned().collect();
    ids.sort();
    let mut expected: Vec<String> = t
        .harness()
        .sessions()
        .await
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(str_prop(&listed["beta"], "State"), "needs_permission");
    assert_eq!(str_prop(&listed["beta"], "AttentionReason"), "permission");
    assert_eq!(str_prop(&listed["beta"], "Tool"), "Edit");
    assert_eq!(listed["beta"].len(), 20);
    // The request it waits on (not answerable: nothing waits for an answer here).
    assert_eq!(str_prop(&listed["beta"], "RequestId").len(), 32);
    assert_eq!(str_prop(&listed["alpha"], "RequestId"), "");

    let (path, props) = monitor.get_session("alpha").await.unwrap();
    assert_eq!(
        path.as_str(),
        "/io/github/atm/Monitor1/sessions/claude__401_1401"
    );
    assert_eq!(str_prop(&props, "Id"), "alpha");
    let err = monitor.get_session("nope").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("io.github.atm.Monitor1.Error.NotFound"),
        "{err}"
    );

    assert_eq!(monitor.rescan().await.unwrap(), (3, 1));

    // The same through the command-line tools.
    let out = t
        .busctl(&["call", SERVICE, MANAGER, "io.github.atm.Monitor1", "Rescan"])
        .await;
    assert_eq!(out.trim(), "uu 3 1");
    let out = t
        .busctl(&[
            "get-property",
            SERVICE,
            MANAGER,
            "io.github.atm.Monitor1",
            "SessionCount",
            "AttentionCount",
        ])
        .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["u", "2", "u", "1"]
    );
    let out = t
        .gdbus_call(MANAGER, "io.github.atm.Monitor1.GetSession", &["beta"])
        .await;
    assert!(
        out.starts_with("(objectpath '/io/github/atm/Monitor1/sessions/claude__402_1402', {"),
        "{out}"
    );
    assert!(out.contains("'State': <'needs_permission'>"), "{out}");
    let out = t
        .gdbus_call(MANAGER, "io.github.atm.Monitor1.ListSessions", &[])
        .await;
    assert!(
        out.contains("'alpha': {") && out.contains("'beta': {"),
        "{out}"
    );

    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_session_keeps_its_path_and_changes_its_id() {
    let t = OnPrivateBus::start().await;
    let mut rec = t.record_after_start(&source("before-clear", 501)).await;
    let conn = &t.conn;

    // /clear: the same process continues under a new id.
    let new = source("after-clear", 501);
    t.apply(
        &new,
        AgentEvent::SessionStarted {
            source: atm_core::StartSource::Clear,
            model: None,
        },
    )
    .await;
    // The Id changes on the same object; no object is removed or added for it.
    let path = "/io/github/atm/Monitor1/sessions/claude__501_1501";
    loop {
        let sig = rec.next().await;
        assert!(
            !matches!(
                sig.body,
                SignalBody::InterfacesAdded(..) | SignalBody::InterfacesRemoved(..)
            ),
            "a re-key must not replace the object: {sig:?}"
        );
        if changed_names(&sig).contains(&"Id".to_owned()) {
            assert_eq!(sig.path, path);
            break;
        }
    }
    let objects = managed(conn).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(str_prop(&objects[path], "Id"), "after-clear");
    let monitor = MonitorProxy::new(conn).await.unwrap();
    assert!(monitor.get_session("before-clear").await.is_err());
    assert_eq!(
        monitor.get_session("after-clear").await.unwrap().0.as_str(),
        path
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_tied_to_its_process_later_keeps_its_path() {
    let t = OnPrivateBus::start().await;
    let conn = &t.conn;
    // First heard of without a process (keyed by id)...
    let no_pid = atm_core::EventSource::new(
        atm_core::Harness::claude(),
        atm_core::SessionId::new("hook-first"),
        "test",
    );
    t.start_session(&no_pid, 1).await;
    let path = "/io/github/atm/Monitor1/sessions/claude__id__hook_2Dfirst";
    assert!(managed(conn).await.contains_key(path));
    let mut rec = Recorder::new(conn).await;

    // ...then with its process: same object, Pid filled in.
    t.apply(&source("hook-first", 1201), prompt()).await;
    let sig = rec
        .until(|s| s.member == "PropertiesChanged" && s.path == path)
        .await;
    assert!(changed_names(&sig).contains(&"Pid".to_owned()), "{sig:?}");
    let objects = managed(conn).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(u32::try_from(&objects[path]["Pid"]).unwrap(), 1201);

    // Its end (now reported under the process key) removes that same object.
    t.apply(&source("hook-first", 1201), ended()).await;
    let removed = rec.until(|s| s.member == "InterfacesRemoved").await;
    assert_eq!(
        removed.body,
        SignalBody::InterfacesRemoved(path.into(), vec![SESSION_IFACE.into()])
    );
    wait_for_sessions(conn, 0).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_tiny_queues_ends_in_the_registry_state() {
    // Shows the sink's lag / coalescing warnings when this test fails.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    // A broadcast of 2 and a queue of 2: the burst below lags and coalesces.
    let registry = atm_core::RegistryConfig {
        broadcast_capacity: 2,
        cleanup_interval: Duration::ZERO,
        ..Default::default()
    };
    let t = OnPrivateBus::start_with(registry, |cfg| cfg.queue_capacity = 2).await;
    let conn = &t.conn;

    burst(t.harness(), "burst", 1300, 40, |i| i % 2 == 0).await;
    let snapshot = t.harness().registry.snapshot().await.unwrap();
    assert_eq!(snapshot.sessions.len(), 4);
    let mut expected: Vec<(String, String)> = snapshot
        .sessions
        .iter()
        .map(|s| (s.id.to_string(), s.state.to_string()))
        .collect();
    expected.sort();
    wait_until("the bus shows the registry's final state", || {
        let conn = conn.clone();
        let expected = expected.clone();
        async move {
            let mut seen: Vec<(String, String)> = managed(&conn)
                .await
                .values()
                .map(|p| (str_prop(p, "Id"), str_prop(p, "State")))
                .collect();
            seen.sort();
            seen == expected
        }
    })
    .await;
    t.stop().await;
}
