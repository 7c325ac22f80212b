//! The gemini adapter against a real registry: realistic Gemini CLI hook payloads, sent the way
//! `atm-hook --agent gemini` sends them, through the real shared ingest socket, and what
//! atm-hook really sent from inside Gemini CLI 0.61.0 (`tests/fixtures/real-0.61.0/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use adapter_gemini::GeminiHooks;
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::serde_json::json;
use atm_core::testing::fixtures::Fixtures;
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

/// A recording of atm-hook inside the real Gemini CLI 0.61.0 (`tests/tests/real_gemini.rs` with
/// `ATM_GEMINI_RECORD`), every `pid` set to `pid`.
fn real_recording(name: &str, pid: u32) -> Vec<atm_core::serde_json::Value> {
    Fixtures::of(env!("CARGO_MANIFEST_DIR"))
        .load_lines(&format!("real-0.61.0/{name}.jsonl"))
        .into_iter()
        .map(|mut m| {
            m["data"]["pid"] = json!(pid);
            m["data"].clone()
        })
        .collect()
}

/// Replays a real recording; returns, per hook, its name and the session's state and activity
/// after it. (The hooks alone: what the pane's screen adds is the real suite's to check.)
async fn replay_real(name: &str) -> Vec<String> {
    let (run, stats) = start().await;
    let gemini = atm_core::testing::ingest::FakeAgent::spawn();
    let mut client = run.client().await;
    let mut seen = Vec::new();
    for data in real_recording(name, gemini.pid()) {
        let event = data["hook_event_name"].as_str().unwrap().to_owned();
        client
            .send("hook_event", data.clone(), json!({"agent": "gemini"}))
            .await;
        client.sync_ok().await;
        let sessions = run.sessions().await;
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        let s = &sessions[0];
        assert_eq!(s.id.as_str(), data["session_id"], "Gemini's own id");
        seen.push(format!(
            "{event} {} {} {}",
            s.state.as_str(),
            s.activity.as_deref().unwrap_or("-"),
            s.model_id.as_deref().unwrap_or("-")
        ));
    }
    assert_eq!(IngestStats::get(&stats.bad_messages), 0);
    run.stop().await;
    seen
}

/// How both real sessions begin: the first prompt runs a shell command, which asks.
const FIRST_SHELL_ASKS: [&str; 6] = [
    "SessionStart starting - -",
    "BeforeAgent working Thinking -",
    "PreCompress working Thinking -",
    "BeforeModel working Thinking gemini-2.5-flash",
    "BeforeTool working run_shell_command gemini-2.5-flash",
    "Notification needs_permission Permission gemini-2.5-flash",
];

#[tokio::test]
async fn real_gemini_approved_tool_turn_end_and_model() {
    let seen = replay_real("approved").await;
    // `RUN sleep 3 && touch ran`, approved: no hook between the dialog and AfterTool.
    let expected = [
        FIRST_SHELL_ASKS.as_slice(),
        &[
            "AfterTool working Thinking gemini-2.5-flash",
            // PreCompress before every request, never Compacting.
            "PreCompress working Thinking gemini-2.5-flash",
            "BeforeModel working Thinking gemini-2.5-flash",
            "AfterAgent idle - gemini-2.5-flash",
            // `hello`
            "BeforeAgent working Thinking gemini-2.5-flash",
            "PreCompress working Thinking gemini-2.5-flash",
            "BeforeModel working Thinking gemini-2.5-flash",
            "AfterAgent idle - gemini-2.5-flash",
            // /quit: no SessionEnd reached atm (the process's exit ends the session).
        ],
    ]
    .concat();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn real_gemini_declined_and_esc() {
    let seen = replay_real("declined").await;
    // `RUN touch kept`, declined ("No, suggest changes"): no hook after the Notification.
    let expected = [
        FIRST_SHELL_ASKS.as_slice(),
        &[
            // `RUN touch kept-too`, Esc at the dialog: no hook either.
            "BeforeAgent working Thinking gemini-2.5-flash",
            "PreCompress working Thinking gemini-2.5-flash",
            "BeforeModel working Thinking gemini-2.5-flash",
            "BeforeTool working run_shell_command gemini-2.5-flash",
            "Notification needs_permission Permission gemini-2.5-flash",
            // `be SLOW`, Esc while working: no AfterAgent.
            "BeforeAgent working Thinking gemini-2.5-flash",
            "PreCompress working Thinking gemini-2.5-flash",
        ],
    ]
    .concat();
    assert_eq!(seen, expected);
}
