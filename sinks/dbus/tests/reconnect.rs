//! A bus that is not there yet, that goes away, or whose name someone else holds: the sink logs,
//! retries with backoff, never fails, and publishes the current sessions once it can.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::Duration;

use atm_core::testing::{PrivateBus, TestHarness};
use common::*;
use sink_dbus as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_comes_up_later_gets_the_current_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let address = format!("unix:path={}", socket.display());
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&address));

    // Sessions change while there is no bus.
    let a = source("early", 701);
    let b = source("gone-before-the-bus", 702);
    apply(&harness, &a, started()).await;
    apply(&harness, &a, prompt()).await;
    apply(&harness, &b, started()).await;
    apply(&harness, &b, ended()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sink.is_finished());

    let _bus = FixedBus::start(&socket);
    let conn = client(&address).await;
    wait_for_sessions(&conn, 1).await;
    let objects = managed(&conn).await;
    let props = &objects["/io/github/atm/Monitor1/sessions/claude__701_1701"];
    assert_eq!(str_prop(props, "Id"), "early");
    assert_eq!(str_prop(props, "State"), "working");

    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_restarted_at_the_same_address_gets_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("restart.sock");
    let address = format!("unix:path={}", socket.display());
    let mut bus = FixedBus::start(&socket);
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&address));
    let a = source("survivor", 801);
    apply(&harness, &a, started()).await;
    let conn = client(&address).await;
    wait_for_sessions(&conn, 1).await;
    drop(conn);

    bus.kill();
    // Changes during the outage are kept and published on the new bus.
    apply(&harness, &a, prompt()).await;
    let b = source("born-in-the-outage", 802);
    apply(&harness, &b, started()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sink.is_finished());

    let _bus = FixedBus::start(&socket);
    let conn = client(&address).await;
    wait_for_sessions(&conn, 2).await;
    let objects = managed(&conn).await;
    let survivor = &objects["/io/github/atm/Monitor1/sessions/claude__801_1801"];
    assert_eq!(str_prop(survivor, "State"), "working");
    assert!(objects.contains_key("/io/github/atm/Monitor1/sessions/claude__802_1802"));

    // And it keeps following changes on the new bus.
    let mut rec = Recorder::new(&conn).await;
    apply(&harness, &b, prompt()).await;
    let sig = rec.until(|s| s.member == "StateChanged").await;
    assert_eq!(
        sig.body,
        SignalBody::StateChanged([
            "born-in-the-outage".into(),
            "starting".into(),
            "working".into(),
            String::new()
        ])
    );

    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_by_another_process_is_retried_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let squatter = client(&bus.address).await;
    squatter.request_name(SERVICE).await.unwrap();

    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let a = source("patient", 901);
    apply(&harness, &a, started()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sink.is_finished());
    // The squatter still owns it: nobody answers for the manager interface.
    let conn = client(&bus.address).await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let owner = dbus
        .get_name_owner(SERVICE.try_into().unwrap())
        .await
        .unwrap();
    assert_eq!(owner.as_str(), squatter.unique_name().unwrap().as_str());

    squatter.release_name(SERVICE).await.unwrap();
    wait_for_sessions(&conn, 1).await;
    harness.cancel.cancel();
    sink.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_private_bus_does_not_stop_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    let conn = client(&bus.address).await;
    wait_for_sessions(&conn, 0).await;
    bus.kill();
    let a = source("after-kill", 1001);
    for _ in 0..20 {
        apply(&harness, &a, prompt()).await;
        apply(&harness, &a, atm_core::AgentEvent::TurnFinished).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sink.is_finished());
    harness.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), sink)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_bus_never_blocks_the_registry_or_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("frozen.sock");
    let address = format!("unix:path={}", socket.display());
    let bus = FixedBus::start(&socket);
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&address));
    let conn = client(&address).await;
    wait_for_sessions(&conn, 0).await;
    drop(conn);

    // SIGSTOP: the bus accepts nothing more, so the sink's socket fills up.
    let pid = bus.child.id().to_string();
    run("kill", &["-STOP", &pid]);
    let started_at = tokio::time::Instant::now();
    for i in 0..20u32 {
        let s = source(&format!("frozen-{i}"), 1400 + i);
        for _ in 0..50 {
            apply(&harness, &s, prompt()).await;
            apply(&harness, &s, permission("Bash", &"x".repeat(150))).await;
        }
    }
    // 2,000 changes were accepted without waiting for the bus.
    assert!(
        started_at.elapsed() < Duration::from_secs(4),
        "the registry was slowed down by a frozen bus: {:?}",
        started_at.elapsed()
    );
    let answered = tokio::time::timeout(Duration::from_secs(1), harness.registry.snapshot()).await;
    assert!(matches!(answered, Ok(Ok(_))), "registry blocked");
    assert!(!sink.is_finished());

    harness.cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(2), sink).await;
    run("kill", &["-CONT", &pid]);
    stopped
        .expect("the sink did not stop within 2 s on a frozen bus")
        .unwrap()
        .unwrap();
}
