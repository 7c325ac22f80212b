//! The codex adapter against a real registry: realistic Codex hook and notify payloads, sent the
//! way `atm-hook --agent codex [--notify]` sends them, through the real shared ingest socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use adapter_codex::CodexHooks;
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::serde_json::json;
use atm_core::testing::ingest::{FakeAgent, RunningAdapter};

atm_core::translator_tests! {
    "codex", CodexHooks, translate: adapter_codex::translate,
    replay: (json!({"agent": "codex"}), "/home/dev/src/api", unknown: 2),
    required: &["session_id", "hook_event_name", "thread-id", "type"],
}

/// The codex adapter running on its own socket against a real registry, and its counters.
async fn start() -> (RunningAdapter, std::sync::Arc<IngestStats>) {
    RunningAdapter::start_translator::<CodexHooks>(RegistryConfig::default()).await
}

#[tokio::test]
async fn notify_alone_makes_an_idle_codex_session() {
    // Users who configure only `notify` (no hooks) still see each finished turn.
    let (run, _) = start().await;
    let codex = FakeAgent::spawn();
    let mut client = run.client().await;
    // As `atm-hook --agent codex --notify` sends it: with the Codex PID and pane.
    let mut notify = fixtures().load("notify.agent-turn-complete.json");
    notify["pid"] = json!(codex.pid());
    notify["tmux_pane"] = json!("%7");
    client
        .send("hook_event", notify, json!({"agent": "codex"}))
        .await;
    run.wait_until("idle codex session", |all| {
        all.len() == 1
            && all[0].state.as_str() == "idle"
            && all[0].harness.as_str() == "codex"
            && all[0].id.as_str() == "0199a213-81c0-7800-8aa1-bbab2a035a53"
            && all[0].pid() == Some(codex.pid())
    })
    .await;
    // The same payload under its own message type (`codex_notify`) is served too.
    let mut other = fixtures().load("notify.agent-turn-complete.json");
    other["thread-id"] = json!("thread-2");
    let line = json!({"type": "codex_notify", "data": other});
    client.write_raw(format!("{line}\n").as_bytes()).await;
    run.wait_until("second session", |all| {
        all.iter()
            .any(|s| s.id.as_str() == "thread-2" && s.state.as_str() == "idle")
    })
    .await;
    run.stop().await;
}

/// The payloads the real Codex 0.171.0 sent to its hooks and its notify program in the
/// real-agent suite's scenarios (`tests/agents/recorded/codex-0.171.0/`, in the order they
/// came: a first prompt with Codex's title-generation thread, `/quit`, a command approved, a
/// command declined with Esc): each translates to what the screen showed then.
#[test]
fn real_codex_0_171_payloads_translate_to_what_the_screen_showed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/agents/recorded/codex-0.171.0");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_encoded_bytes()[0].is_ascii_digit())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 14, "{}", dir.display());
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let payload: atm_core::serde_json::Value =
            atm_core::serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let t = adapter_codex::translate(&payload).unwrap();
        assert!(t.known, "{name}");
        let got = t.event.as_ref().map(|e| e.name());
        let want = match name.split_once('-').unwrap().1 {
            "SessionStart" => Some("session_started"),
            "UserPromptSubmit" => Some("prompt_submitted"),
            "PreModelRequest" | "PostModelRequest" => Some("activity"),
            "notify-title-thread" => None,
            "Stop" | "notify-agent-turn-complete" | "Interrupt" => Some("turn_finished"),
            "SessionEnd" => Some("session_ended"),
            "PreToolUse" => Some("tool_started"),
            "PermissionRequest" => Some("permission_requested"),
            "PostToolUse" => Some("tool_finished"),
            other => panic!("no expectation for {other}"),
        };
        assert_eq!(got, want, "{name}");
        assert_eq!(t.cwd.as_deref(), Some("/root/probe/project"), "{name}");
    }
}
