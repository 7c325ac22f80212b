//! A bus that is not there yet, that goes away, or whose name someone else holds: the sink logs,
//! retries with backoff, never fails, and publishes the current sessions once it can.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::Duration;

use atm_core::testing::PrivateBus;
use common::*;
use sink_dbus as _;

/// A bus started at `socket` once the sink has published `count` sessions on it: the bus, a
/// client on it, and the objects there.
async fn bus_with_sessions(
    socket: &std::path::Path,
    address: &str,
    count: u32,
) -> (FixedBus, zbus::Connection, Objects) {
    let bus = FixedBus::start(socket);
    let conn = client(address).await;
    wait_for_sessions(&conn, count).await;
    let objects = managed(&conn).await;
    (bus, conn, objects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_comes_up_later_gets_the_current_sessions() {
    let (dir, socket, address) = address_in_new_dir("late.sock");
    let sink = SinkUnderTest::start(dir.path(), &address).await;

    // Sessions change while there is no bus.
    let a = source("early", 701);
    let b = source("gone-before-the-bus", 702);
    sink.apply(&a, started()).await;
    sink.apply(&a, prompt()).await;
    sink.apply(&b, started()).await;
    sink.apply(&b, ended()).await;
    // Witnessed, not timed: the sink applied every change and kept retrying.
    sink.wait_caught_up_without_bus(2).await;

    let (_bus, _conn, objects) = bus_with_sessions(&socket, &address, 1).await;
    let props = &objects["/io/github/atm/Monitor1/sessions/claude__701_1701"];
    assert_eq!(str_prop(props, "Id"), "early");
    assert_eq!(str_prop(props, "State"), "working");

    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_restarted_at_the_same_address_gets_everything_again() {
    let (dir, socket, address) = address_in_new_dir("restart.sock");
    let mut bus = FixedBus::start(&socket);
    let sink = SinkUnderTest::start(dir.path(), &address).await;
    let a = source("survivor", 801);
    sink.apply(&a, started()).await;
    let conn = client(&address).await;
    wait_for_sessions(&conn, 1).await;
    drop(conn);

    let failed_before = sink.stats.failures();
    bus.kill();
    // Changes during the outage are kept and published on the new bus.
    sink.apply(&a, prompt()).await;
    let b = source("born-in-the-outage", 802);
    sink.apply(&b, started()).await;
    sink.wait_caught_up_without_bus(failed_before + 1).await;

    let (_bus, conn, objects) = bus_with_sessions(&socket, &address, 2).await;
    let survivor = &objects["/io/github/atm/Monitor1/sessions/claude__801_1801"];
    assert_eq!(str_prop(survivor, "State"), "working");
    assert!(objects.contains_key("/io/github/atm/Monitor1/sessions/claude__802_1802"));

    // And it keeps following changes on the new bus.
    let mut rec = Recorder::new(&conn).await;
    sink.apply(&b, prompt()).await;
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

    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_by_another_process_is_retried_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let squatter = client(&bus.address).await;
    squatter.request_name(SERVICE).await.unwrap();

    let sink = SinkUnderTest::start(dir.path(), &bus.address).await;
    let a = source("patient", 901);
    sink.apply(&a, started()).await;
    // Two refusals of the name: the sink is retrying, not holding it.
    sink.wait_caught_up_without_bus(2).await;
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
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_private_bus_does_not_stop_the_sink() {
    let (_dir, bus, sink) = SinkUnderTest::on_private_bus().await;
    let _conn = connected(&bus.address).await;
    let failed_before = sink.stats.failures();
    bus.kill();
    let a = source("after-kill", 1001);
    for _ in 0..20 {
        sink.apply(&a, prompt()).await;
        sink.apply(&a, atm_core::AgentEvent::TurnFinished).await;
    }
    sink.wait_caught_up_without_bus(failed_before + 1).await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_bus_never_blocks_the_registry_or_the_shutdown() {
    let (dir, socket, address) = address_in_new_dir("frozen.sock");
    let bus = FixedBus::start(&socket);
    let sink = SinkUnderTest::start(dir.path(), &address).await;
    let conn = connected(&address).await;
    drop(conn);

    // SIGSTOP: the bus accepts nothing more, so the sink's socket fills up.
    let pid = bus.child.id().to_string();
    run("kill", &["-STOP", &pid]);
    let started_at = tokio::time::Instant::now();
    for i in 0..20u32 {
        let s = source(&format!("frozen-{i}"), 1400 + i);
        for _ in 0..50 {
            sink.apply(&s, prompt()).await;
            sink.apply(&s, permission("Bash", &"x".repeat(150))).await;
        }
    }
    // 2,000 changes were accepted without waiting for the bus.
    assert!(
        started_at.elapsed() < Duration::from_secs(4),
        "the registry was slowed down by a frozen bus: {:?}",
        started_at.elapsed()
    );
    let answered =
        tokio::time::timeout(Duration::from_secs(1), sink.harness.registry.snapshot()).await;
    assert!(matches!(answered, Ok(Ok(_))), "registry blocked");
    assert!(!sink.task.is_finished());

    sink.harness.cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(2), sink.task).await;
    run("kill", &["-CONT", &pid]);
    stopped
        .expect("the sink did not stop within 2 s on a frozen bus")
        .unwrap()
        .unwrap();
}
