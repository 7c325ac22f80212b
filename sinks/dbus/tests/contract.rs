//! The plugin contract, on a real private bus, and the sink without any bus at all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use std::time::Duration;

use atm_core::testing::{PrivateBus, TestHarness, check_sink_contract};
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
    let harness = TestHarness::new(dir.path()).await;
    let missing = dir.path().join("no-bus-here.sock");
    let sink = start_sink(
        &harness,
        config(&format!("unix:path={}", missing.display())),
    );
    // Events keep flowing and the registry keeps answering while the sink retries.
    let s = source("no-bus", 601);
    for _ in 0..50 {
        apply(&harness, &s, prompt()).await;
        apply(&harness, &s, atm_core::AgentEvent::TurnFinished).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snap = tokio::time::timeout(Duration::from_secs(1), harness.registry.snapshot())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert!(!sink.is_finished(), "the sink gave up without a bus");
    harness.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), sink)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_stops_when_the_registry_stops() {
    let dir = tempfile::tempdir().unwrap();
    let bus = PrivateBus::start();
    let harness = TestHarness::new(dir.path()).await;
    let sink = start_sink(&harness, config(&bus.address));
    // Stopped while serving, not while starting.
    wait_for_sessions(&client(&bus.address).await, 0).await;
    harness.registry.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), sink)
        .await
        .expect("the sink did not stop after the registry did")
        .unwrap()
        .unwrap();
}
