//! The claude-hooks adapter end to end: real Unix socket, real registry, a real child process
//! as the Claude PID, realistic fixtures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

mod common;

use adapter_claude_hooks as _; // links the plugin registration for the contract test
use adapter_claude_hooks::{ClaudeHooks, ClaudeHooksAdapter, translate};
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::testing::ingest::check_replay_step;
use atm_core::{AgentState, Session};
use common::{FakeClaude, Running, fixture, patch, with_process};
use serde_json::{Value, json};
use std::sync::Arc;

const A: &str = "8e11bfb5-7dc2-432b-9206-928fa5c35731";
const B: &str = "3f0a9c4e-51d2-4b7e-9a0c-6d2e8f1b7a45";
const PANE: &str = "%7";

async fn start() -> Running {
    start_with(RegistryConfig::default()).await
}

async fn start_with(config: RegistryConfig) -> Running {
    Running::start(config, |cfg| ClaudeHooksAdapter::from_config(cfg).unwrap()).await
}

/// Checks the keys of `expect` (see `fixtures/replay.json`) against the registry.
async fn check_expectations(run: &Running, step: &str, expect: &serde_json::Map<String, Value>) {
    if let Err(e) = check_replay_step(&run.sessions().await, expect) {
        panic!("{step}: {e}");
    }
}

#[tokio::test]
async fn replays_every_fixture_in_a_realistic_order() {
    let run = start().await;
    let claude = FakeClaude::spawn();
    let replay = fixture("replay.json");
    let mut client = run.client().await;
    let mut used = std::collections::BTreeSet::new();
    for step in replay["steps"].as_array().unwrap() {
        let name = step["fixture"].as_str().unwrap();
        used.insert(name.to_owned());
        client
            .send(
                "hook_event",
                with_process(fixture(name), claude.pid(), PANE),
                json!({}),
            )
            .await;
        let replies = client.sync().await;
        assert!(replies.is_empty(), "{name}: {replies:?}");
        check_expectations(&run, name, step["expect"].as_object().unwrap()).await;
        if let Some(s) = run.sessions().await.first() {
            assert_eq!(s.pid(), Some(claude.pid()), "{name}");
            assert_eq!(s.tmux_pane.as_deref(), Some(PANE), "{name}");
            assert_eq!(s.harness.as_str(), "claude");
        }
    }
    // Every fixture but a few alternative variants takes part in the replay.
    let unused: Vec<String> = std::fs::read_dir(common::fixtures().dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "replay.json" && !used.contains(n))
        .collect();
    for n in &unused {
        assert!(
            n.starts_with("SessionStart.") || n.starts_with("SessionEnd."),
            "fixture {n} is not replayed"
        );
    }
    run.stop().await;
}

#[test]
fn every_fixture_translates() {
    for entry in std::fs::read_dir(common::fixtures().dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "replay.json" {
            continue;
        }
        let t = translate(&fixture(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.known, !name.contains("unknown"), "{name}");
        let event = name.split('.').next().unwrap();
        assert!(
            event == "FutureEvent" || t.event_name == event,
            "{name} is named after {event} but carries {}",
            t.event_name
        );
    }
}

async fn send(client: &mut common::Client, data: Value) {
    client.send("hook_event", data, json!({})).await;
}

/// Sends fixture `name` as `atm-hook` does from `claude`'s pane.
async fn send_fixture(client: &mut common::Client, claude: &FakeClaude, name: &str) {
    send(client, with_process(fixture(name), claude.pid(), PANE)).await;
}

async fn start_session(client: &mut common::Client, claude: &FakeClaude) {
    for f in ["SessionStart.startup.json", "UserPromptSubmit.json"] {
        send_fixture(client, claude, f).await;
    }
    client.sync_ok().await;
}

/// A running adapter with one Claude session that has started and taken a prompt: the point
/// most tests begin from.
struct Started {
    run: Running,
    claude: FakeClaude,
    client: common::Client,
}

impl Started {
    async fn new() -> Self {
        let run = start().await;
        let claude = FakeClaude::spawn();
        let mut client = run.client().await;
        start_session(&mut client, &claude).await;
        Self {
            run,
            claude,
            client,
        }
    }

    /// Sends `data` from Claude's pane without waiting for it.
    async fn send(&mut self, data: Value) {
        send(
            &mut self.client,
            with_process(data, self.claude.pid(), PANE),
        )
        .await;
    }

    /// Sends the fixtures from Claude's pane, then gives the one session once they are applied.
    async fn after(&mut self, fixtures: &[&str]) -> Arc<Session> {
        for f in fixtures {
            send_fixture(&mut self.client, &self.claude, f).await;
        }
        self.client.sync_ok().await;
        self.run.only_session().await
    }
}

#[tokio::test]
async fn clear_rekeys_one_process_in_either_order() {
    let orders: [[&str; 2]; 2] = [
        ["SessionEnd.clear.json", "SessionStart.clear.json"],
        ["SessionStart.clear.json", "SessionEnd.clear.json"],
    ];
    for order in orders {
        let mut t = Started::new().await;
        assert_eq!(t.run.only_session().await.id.as_str(), A);
        let s = t.after(&order).await;
        assert_eq!(s.id.as_str(), B, "{order:?}");
        assert_eq!(s.pid(), Some(t.claude.pid()));
        assert_eq!(s.state, AgentState::Starting, "{order:?}");
        // A late event for the old id neither resurrects it nor renames the session back.
        let s = t.after(&["Stop.json"]).await;
        assert_eq!(s.id.as_str(), B);
        assert_eq!(s.state, AgentState::Starting);
        t.run.stop().await;
    }
}

#[tokio::test]
async fn subagent_stop_does_not_make_the_parent_idle() {
    let mut t = Started::new().await;
    let s = t
        .after(&[
            "SubagentStart.json",
            "PreToolUse.subagent.Grep.json",
            "Stop.subagent.json",
        ])
        .await;
    assert_eq!(s.state, AgentState::Working);
    assert_eq!(s.children, vec!["a3f9c2e1b7d04c56".to_owned()]);
    assert_eq!(
        s.activity.as_deref(),
        Some("Thinking"),
        "subagent tools leave the parent's activity"
    );
    let s = t.after(&["SubagentStop.json"]).await;
    assert_eq!(s.state, AgentState::Working);
    assert!(s.children.is_empty());
    assert_eq!(t.after(&["Stop.json"]).await.state, AgentState::Idle);
    t.run.stop().await;
}

#[tokio::test]
async fn permission_request_needs_permission_with_tool_and_preview() {
    let mut t = Started::new().await;
    let command = format!("cd /srv/日本語 &&\n  cargo   test {}", "--flag ".repeat(60));
    t.send(patch(
        fixture("PermissionRequest.Bash.json"),
        json!({"tool_input": {"command": command, "description": "Run"}}),
    ))
    .await;
    let s = t.after(&[]).await;
    assert_eq!(s.state, AgentState::NeedsPermission);
    let a = s.attention.clone().unwrap();
    assert_eq!(a.reason, "permission");
    assert_eq!(a.tool.as_deref(), Some("Bash"));
    let detail = a.detail.unwrap();
    assert!(
        detail.starts_with("cd /srv/日本語 && cargo test --flag"),
        "{detail}"
    );
    assert_eq!(detail.chars().count(), 120);
    assert!(detail.ends_with('…'));
    // The late notification keeps the richer attention.
    let s2 = t.after(&["Notification.permission_prompt.json"]).await;
    assert_eq!(s2.state, AgentState::NeedsPermission);
    assert_eq!(s2.attention, s.attention);
    // Answering it (the tool runs and finishes) clears it.
    let s = t.after(&["PostToolUse.Bash.json"]).await;
    assert_eq!(s.state, AgentState::Working);
    assert_eq!(s.attention, None);
    t.run.stop().await;
}

/// The session once fixture `name` follows the start and the prompt (the adapter stopped).
async fn session_after(name: &str) -> Arc<Session> {
    let mut t = Started::new().await;
    let s = t.after(&[name]).await;
    t.run.stop().await;
    s
}

#[tokio::test]
async fn permission_prompt_notification_alone_raises_attention() {
    let s = session_after("Notification.permission_prompt.json").await;
    assert_eq!(s.state, AgentState::NeedsPermission);
    assert_eq!(s.attention.as_ref().unwrap().tool.as_deref(), Some("Bash"));
}

#[tokio::test]
async fn stop_failure_is_idle_with_the_error() {
    let s = session_after("StopFailure.json").await;
    assert_eq!(s.state, AgentState::Idle);
    assert_eq!(s.last_error.as_deref(), Some("rate_limit"));
}

#[tokio::test]
async fn session_end_removes_except_clear_and_resume() {
    for (reason, removed) in [
        ("logout", true),
        ("prompt_input_exit", true),
        ("other", true),
        ("resume", false),
        ("clear", false),
    ] {
        let mut t = Started::new().await;
        t.send(patch(
            fixture("SessionEnd.logout.json"),
            json!({"session_id": A, "reason": reason}),
        ))
        .await;
        t.client.sync_ok().await;
        assert_eq!(t.run.sessions().await.is_empty(), removed, "{reason}");
        t.run.stop().await;
    }
}

#[tokio::test]
async fn unknown_events_are_accepted_and_counted() {
    let (run, stats) = Running::start_translator::<ClaudeHooks>(RegistryConfig::default()).await;
    let claude = FakeClaude::spawn();
    let mut client = run.client().await;
    start_session(&mut client, &claude).await;
    for name in ["FutureEvent", "AnotherOne", "Ünïcödé"] {
        let data = patch(
            fixture("FutureEvent.unknown.json"),
            json!({"hook_event_name": name}),
        );
        send(&mut client, with_process(data, claude.pid(), PANE)).await;
    }
    client.sync_ok().await;
    assert_eq!(IngestStats::get(&stats.unknown_events), 3);
    let s = run.only_session().await;
    assert_eq!(
        s.state,
        AgentState::Working,
        "unknown events change no state"
    );
    // An unknown event for a new session creates it.
    let data = patch(
        fixture("FutureEvent.unknown.json"),
        json!({"session_id": "new-session"}),
    );
    send(&mut client, data).await;
    client.sync_ok().await;
    assert_eq!(run.sessions().await.len(), 2);
    assert_eq!(IngestStats::get(&stats.bad_messages), 0);
    // A subagent's Stop is counted as ignored.
    send_fixture(&mut client, &claude, "Stop.subagent.json").await;
    client.sync_ok().await;
    assert_eq!(IngestStats::get(&stats.ignored), 1);
    run.stop().await;
}

#[tokio::test]
async fn accepts_the_original_hook_format_and_several_events_per_connection() {
    let run = start().await;
    let claude = FakeClaude::spawn();
    let mut client = run.client().await;
    // The original bash hook, which sent `tmux_pane` as null outside tmux.
    let fixtures = [
        "SessionStart.startup.json",
        "UserPromptSubmit.json",
        "PreToolUse.Bash.json",
    ];
    client
        .write_original_hooks(
            fixtures.map(|f| patch(fixture(f), json!({"tmux_pane": null}))),
            claude.pid(),
            &json!({}),
        )
        .await;
    client.sync_ok().await;
    let s = run.only_session().await;
    assert_eq!(s.pid(), Some(claude.pid()));
    assert_eq!(s.state, AgentState::Working);
    assert_eq!(s.activity.as_deref(), Some("Bash"));
    assert_eq!(s.tmux_pane, None);
    // A client that names the agent is routed to `hook_event:claude`.
    client
        .send(
            "hook_event",
            with_process(fixture("Stop.json"), claude.pid(), PANE),
            json!({"agent": "claude"}),
        )
        .await;
    client.sync_ok().await;
    let s = run.only_session().await;
    assert_eq!(s.state, AgentState::Idle);
    assert_eq!(s.tmux_pane.as_deref(), Some(PANE));
    run.stop().await;
}

#[tokio::test]
async fn keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::socket_table(&dir.path().join("contract.sock"));
    atm_core::testing::check_adapter_contract("claude-hooks", config, dir.path()).await;
}

#[test]
fn replay_checks_report_every_kind_of_difference() {
    use atm_core::{Harness, SessionId, SessionKey};
    let key = SessionKey::Id {
        harness: Harness::claude(),
        id: SessionId::new(A),
    };
    let s = std::sync::Arc::new(atm_core::Session::new(
        key,
        SessionId::new(A),
        None,
        "test",
        atm_core::chrono::Utc::now(),
    ));
    let expect = |v: Value| v.as_object().unwrap().clone();
    let all = [s];
    assert_eq!(
        check_replay_step(
            &all,
            &expect(json!({"sessions": 1, "id": A, "state": "starting"}))
        ),
        Ok(())
    );
    assert!(check_replay_step(&all, &expect(json!({"sessions": 2}))).is_err());
    assert!(check_replay_step(&all, &expect(json!({"state": "working"}))).is_err());
    assert!(check_replay_step(&all, &expect(json!({"attention": {"reason": "x"}}))).is_err());
    assert!(check_replay_step(&[], &expect(json!({"state": "idle"}))).is_err());
    assert_eq!(
        check_replay_step(&[], &expect(json!({"sessions": 0}))),
        Ok(())
    );
}
