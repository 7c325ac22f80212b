//! The service on a real private bus, fed through a real registry, checked with a zbus client
//! and with `busctl` / `gdbus`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::Duration;

use atm_core::testing::{PrivateBus, TestHarness};
use atm_core::{AgentEvent, UsageUpdate};
use common::*;
use sink_dbus as _;
use zbus::OwnedVariant;

const SESSION_IFACE: &str = "io.github.atm.Monitor1.Session";

fn changed_names(s: &Signal) -> Vec<String> {
    match &s.body {
        SignalBody::PropertiesChanged(_, c) => c.iter().map(|(n, _)| n.clone()).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_appear_and_vanish_with_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    wait_for_sessions(&conn, 0).await;
    let mut rec = Recorder::new(&conn).await;

    let s1 = source("sess-one", 101);
    apply(&harness, &s1, started()).await;
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
    let objects = managed(&conn).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(str_prop(&objects[path], "Id"), "sess-one");
    assert_eq!(str_prop(&objects[path], "Harness"), "claude");
    assert_eq!(str_prop(&objects[path], "Model"), "claude-opus");

    // busctl sees the object and its typed properties.
    let tree = run_async(
        "busctl",
        vec![
            format!("--address={}", bus.address),
            "tree".into(),
            SERVICE.into(),
        ],
    )
    .await;
    assert!(tree.contains("claude__101_1101"), "{tree}");
    let intro = run_async(
        "busctl",
        vec![
            format!("--address={}", bus.address),
            "introspect".into(),
            SERVICE.into(),
            path.into(),
            SESSION_IFACE.into(),
        ],
    )
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
    apply(&harness, &s2, started()).await;
    wait_for_sessions(&conn, 2).await;

    apply(&harness, &s1, ended()).await;
    let removed = rec.until(|s| s.member == "InterfacesRemoved").await;
    assert_eq!(
        removed.body,
        SignalBody::InterfacesRemoved(path.into(), vec![SESSION_IFACE.into()])
    );
    wait_for_sessions(&conn, 1).await;
    let objects = managed(&conn).await;
    assert_eq!(objects.len(), 1);
    assert!(!objects.contains_key(path));
    let tree = run_async(
        "busctl",
        vec![
            format!("--address={}", bus.address),
            "tree".into(),
            SERVICE.into(),
        ],
    )
    .await;
    assert!(!tree.contains("claude__101_1101"), "{tree}");
    assert!(tree.contains("claude__102_1102"), "{tree}");

    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_changed_carries_only_the_changed_properties() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    let s = source("props", 201);
    apply(&harness, &s, started()).await;
    wait_for_sessions(&conn, 1).await;
    let mut rec = Recorder::new(&conn).await;
    let path = "/io/github/atm/Monitor1/sessions/claude__201_1201";

    // A status line: data, not activity, so LastActivity stays.
    harness
        .registry
        .update_usage(
            s.clone(),
            UsageUpdate {
                cost_usd: Some(1.5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sig = rec.until(|s| s.member == "PropertiesChanged").await;
    assert_eq!(sig.path, path);
    assert_eq!(
        sig.body,
        SignalBody::PropertiesChanged(
            SESSION_IFACE.into(),
            vec![("CostUsd".into(), OwnedVariant::from(1.5f64))]
        )
    );

    harness
        .registry
        .update_usage(
            s.clone(),
            UsageUpdate {
                context_used_percentage: Some(42.0),
                branch: Some("main".into()),
                cost_usd: Some(1.5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sig = rec.until(|s| s.member == "PropertiesChanged").await;
    assert_eq!(changed_names(&sig), ["Branch", "ContextPercent"]);

    // The property itself, read back with gdbus.
    let out = run_async(
        "gdbus",
        vec![
            "call".into(),
            "--address".into(),
            bus.address.clone(),
            "--dest".into(),
            SERVICE.into(),
            "--object-path".into(),
            path.into(),
            "--method".into(),
            "org.freedesktop.DBus.Properties.Get".into(),
            SESSION_IFACE.into(),
            "Branch".into(),
        ],
    )
    .await;
    assert_eq!(out.trim(), "(<'main'>,)");

    // An update that changes nothing sends nothing: the next signal is the next real change.
    harness
        .registry
        .update_usage(
            s.clone(),
            UsageUpdate {
                cost_usd: Some(1.5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    harness
        .registry
        .update_usage(
            s.clone(),
            UsageUpdate {
                cost_usd: Some(2.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sig = rec.next().await;
    assert_eq!(changed_names(&sig), ["CostUsd"]);
    assert_eq!(
        sig.body,
        SignalBody::PropertiesChanged(
            SESSION_IFACE.into(),
            vec![("CostUsd".into(), OwnedVariant::from(2.0f64))]
        )
    );

    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    wait_for_sessions(&conn, 0).await;
    let mut rec = Recorder::new(&conn).await;

    let s = source("order", 301);
    apply(&harness, &s, started()).await;
    apply(&harness, &s, prompt()).await;
    apply(&harness, &s, permission("Bash", "rm -rf build")).await;
    apply(
        &harness,
        &s,
        AgentEvent::ToolStarted {
            tool: "Bash".into(),
            detail: None,
        },
    )
    .await;
    apply(&harness, &s, AgentEvent::TurnFinished).await;
    apply(&harness, &s, ended()).await;

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

    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_methods_and_properties_answer_over_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    // An adapter that answers rescans.
    let mut control = harness.adapter_context("fake-discovery").control_requests();
    tokio::spawn(async move {
        while let Some(atm_core::control::ControlRequest::Rescan { reply }) = control.recv().await {
            let _ = reply.send(atm_core::control::RescanReport {
                discovered: 3,
                failed: 1,
                responders: 0,
            });
        }
    });
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    let a = source("alpha", 401);
    let b = source("beta", 402);
    apply(&harness, &a, started()).await;
    apply(&harness, &b, started()).await;
    apply(&harness, &b, permission("Edit", "src/main.rs")).await;
    wait_for_sessions(&conn, 2).await;
    let monitor = MonitorProxy::builder(&conn)
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
    let mut expected: Vec<String> = harness
        .registry
        .snapshot()
        .await
        .unwrap()
        .sessions
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(str_prop(&listed["beta"], "State"), "needs_permission");
    assert_eq!(str_prop(&listed["beta"], "AttentionReason"), "permission");
    assert_eq!(str_prop(&listed["beta"], "Tool"), "Edit");
    assert_eq!(listed["beta"].len(), 15);

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
    let addr = format!("--address={}", bus.address);
    let out = run_async(
        "busctl",
        vec![
            addr.clone(),
            "call".into(),
            SERVICE.into(),
            MANAGER.into(),
            "io.github.atm.Monitor1".into(),
            "Rescan".into(),
        ],
    )
    .await;
    assert_eq!(out.trim(), "uu 3 1");
    let out = run_async(
        "busctl",
        vec![
            addr.clone(),
            "get-property".into(),
            SERVICE.into(),
            MANAGER.into(),
            "io.github.atm.Monitor1".into(),
            "SessionCount".into(),
            "AttentionCount".into(),
        ],
    )
    .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["u", "2", "u", "1"]
    );
    let out = run_async(
        "gdbus",
        vec![
            "call".into(),
            "--address".into(),
            bus.address.clone(),
            "--dest".into(),
            SERVICE.into(),
            "--object-path".into(),
            MANAGER.into(),
            "--method".into(),
            "io.github.atm.Monitor1.GetSession".into(),
            "beta".into(),
        ],
    )
    .await;
    assert!(
        out.starts_with("(objectpath '/io/github/atm/Monitor1/sessions/claude__402_1402', {"),
        "{out}"
    );
    assert!(out.contains("'State': <'needs_permission'>"), "{out}");
    let out = run_async(
        "gdbus",
        vec![
            "call".into(),
            "--address".into(),
            bus.address.clone(),
            "--dest".into(),
            SERVICE.into(),
            "--object-path".into(),
            MANAGER.into(),
            "--method".into(),
            "io.github.atm.Monitor1.ListSessions".into(),
        ],
    )
    .await;
    assert!(
        out.contains("'alpha': {") && out.contains("'beta': {"),
        "{out}"
    );

    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_session_keeps_its_path_and_changes_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    let old = source("before-clear", 501);
    apply(&harness, &old, started()).await;
    wait_for_sessions(&conn, 1).await;
    let mut rec = Recorder::new(&conn).await;

    // /clear: the same process continues under a new id.
    let new = source("after-clear", 501);
    apply(
        &harness,
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
    let objects = managed(&conn).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(str_prop(&objects[path], "Id"), "after-clear");
    let monitor = MonitorProxy::new(&conn).await.unwrap();
    assert!(monitor.get_session("before-clear").await.is_err());
    assert_eq!(
        monitor.get_session("after-clear").await.unwrap().0.as_str(),
        path
    );
    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_tied_to_its_process_later_keeps_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    // First heard of without a process (keyed by id)...
    let no_pid = atm_core::EventSource::new(
        atm_core::Harness::claude(),
        atm_core::SessionId::new("hook-first"),
        "test",
    );
    apply(&harness, &no_pid, started()).await;
    wait_for_sessions(&conn, 1).await;
    let path = "/io/github/atm/Monitor1/sessions/claude__id__hook_2Dfirst";
    assert!(managed(&conn).await.contains_key(path));
    let mut rec = Recorder::new(&conn).await;

    // ...then with its process: same object, Pid filled in.
    apply(&harness, &source("hook-first", 1201), prompt()).await;
    let sig = rec
        .until(|s| s.member == "PropertiesChanged" && s.path == path)
        .await;
    assert!(changed_names(&sig).contains(&"Pid".to_owned()), "{sig:?}");
    let objects = managed(&conn).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(u32::try_from(&objects[path]["Pid"]).unwrap(), 1201);

    // Its end (now reported under the process key) removes that same object.
    apply(&harness, &source("hook-first", 1201), ended()).await;
    let removed = rec.until(|s| s.member == "InterfacesRemoved").await;
    assert_eq!(
        removed.body,
        SignalBody::InterfacesRemoved(path.into(), vec![SESSION_IFACE.into()])
    );
    wait_for_sessions(&conn, 0).await;
    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_tiny_queues_ends_in_the_registry_state() {
    // Shows the sink's lag / coalescing warnings when this test fails.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    // A broadcast of 2 and a queue of 2: the burst below lags and coalesces.
    let harness = TestHarness::with_config(
        dir.path(),
        atm_core::RegistryConfig {
            broadcast_capacity: 2,
            cleanup_interval: Duration::ZERO,
            ..Default::default()
        },
    )
    .await;
    let mut cfg = config(&bus.address);
    cfg.queue_capacity = 2;
    let sink = start_sink(&harness, cfg);
    let conn = client(&bus.address).await;
    wait_for_sessions(&conn, 0).await;

    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let registry = harness.registry.clone();
        tasks.push(tokio::spawn(async move {
            let s = source(&format!("burst-{i}"), 1300 + i);
            for round in 0..40u32 {
                let e = match round % 3 {
                    0 => prompt(),
                    1 => permission("Bash", &format!("step {round}")),
                    _ => AgentEvent::TurnFinished,
                };
                registry
                    .apply_event(atm_core::EventEnvelope::now(s.clone(), e))
                    .await
                    .unwrap();
            }
            if i % 2 == 0 {
                registry
                    .apply_event(atm_core::EventEnvelope::now(s, ended()))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snapshot = harness.registry.snapshot().await.unwrap();
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
    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}
