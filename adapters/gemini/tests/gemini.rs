//! The gemini adapter against a real registry: realistic Gemini CLI hook payloads, sent the way
//! `atm-hook --agent gemini` sends them, through the real shared ingest socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use adapter_gemini::GeminiHooks;
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::serde_json::json;
use atm_core::testing::ingest::RunningAdapter;

atm_core::translator_tests! {
    "gemini", GeminiHooks, translate: adapter_gemini::translate,
    replay: (json!({"agent": "gemini"}), "/home/dev/src/webapp", unknown: 1),
    required: &["session_id", "hook_event_name"],
}

/// The gemini adapter running on its own socket against a real registry, and its counters.
async fn start() -> (RunningAdapter, std::sync::Arc<IngestStats>) {
    RunningAdapter::start_translator::<GeminiHooks>(RegistryConfig::default()).await
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
