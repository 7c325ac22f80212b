//! The plugin contract, on a real private bus, and the sink without any bus at all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::Duration;

use atm_core::testing::{PrivateBus, check_sink_contract};
use common::*;
use sink_dbus as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dbus_sink_keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let mut table = atm_core::toml::Table::new();
    table.insert("address".into(), bus.address.clone().into());
    check_sink_contract("dbus", atm_core::toml::Value::Table(table), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bus_it_keeps_running_and_the_registry_stays_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-bus-here.sock");
    let sink = SinkUnderTest::start(dir.path(), &format!("unix:path={}", missing.display())).await;
    // Events keep flowing and the registry keeps answering while the sink retries.
    let s = source("no-bus", 601);
    for _ in 0..50 {
        sink.apply(&s, prompt()).await;
        sink.apply(&s, atm_core::AgentEvent::TurnFinished).await;
    }
    // The sink applied all 100 changes and failed to connect more than once meanwhile.
    sink.wait_caught_up_without_bus(2).await;
    let snap = tokio::time::timeout(Duration::from_secs(1), sink.harness.registry.snapshot())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert!(!sink.task.is_finished(), "the sink gave up without a bus");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_stops_when_the_registry_stops() {
    let (_dir, bus, sink) = SinkUnderTest::on_private_bus().await;
    // Stopped while serving, not while starting.
    let _conn = connected(&bus.address).await;
    sink.harness.registry.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), sink.task)
        .await
        .expect("the sink did not stop after the registry did")
        .unwrap()
        .unwrap();
}
