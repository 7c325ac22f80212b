//! The gemini adapter against a real registry: realistic Gemini CLI hook payloads, sent the way
//! `atm-hook --agent gemini` sends them, through the real shared ingest socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use adapter_gemini::GeminiHooks;
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::serde_json::json;
use atm_core::testing::check_adapter_contract;
use atm_core::testing::fixtures::Fixtures;
use atm_core::testing::ingest::{RunningAdapter, socket_table};

fn fixtures() -> Fixtures {
    Fixtures::of(env!("CARGO_MANIFEST_DIR"))
}

/// The gemini adapter running on its own socket against a real registry, and its counters.
async fn start() -> (RunningAdapter, std::sync::Arc<IngestStats>) {
    RunningAdapter::start_translator::<GeminiHooks>(RegistryConfig::default()).await
}

#[tokio::test]
async fn replays_every_fixture_in_a_realistic_order() {
    let agent = json!({"agent": "gemini"});
    fixtures()
        .check_replay::<GeminiHooks>(agent, "/home/dev/src/webapp", 1)
        .await;
}

#[test]
fn every_fixture_translates_with_the_right_known_flag() {
    fixtures().check_translated(adapter_gemini::translate);
}

#[tokio::test]
async fn a_permission_without_a_pid_still_makes_a_gemini_session() {
    let (run, _) = start().await;
    let mut client = run.client().await;
    let permission = fixtures().load("Notification.ToolPermission.exec.json");
    client
        .send("hook_event", permission, json!({"agent": "gemini"}))
        .await;
    run.wait_until("needs_permission", |all| {
        all.len() == 1 && all[0].state.as_str() == "needs_permission" && all[0].process.is_none()
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn keeps_the_plugin_contract() {
    use adapter_gemini as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_table(&dir.path().join("contract.sock"));
    check_adapter_contract("gemini", socket, dir.path()).await;
}

#[test]
fn every_fixture_survives_mutated_fields() {
    fixtures().check_mutated_fields(
        adapter_gemini::translate,
        &["session_id", "hook_event_name"],
    );
}
