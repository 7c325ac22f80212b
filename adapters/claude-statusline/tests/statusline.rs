//! The claude-statusline adapter end to end: real Unix socket, real registry, a real child
//! process as the Claude PID, realistic status-line fixtures. The session's state is set by
//! applying events to the registry as the hooks adapter would (the status line shares the
//! session with it, never the crate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failures by panicking

use adapter_claude_statusline as _; // links the plugin registration for the contract test
use adapter_claude_statusline::{ClaudeStatusLine, ClaudeStatuslineAdapter, parse_status_line};
use atm_core::event::{AgentEvent, EventSource, StartSource};
use atm_core::ingest::IngestStats;
use atm_core::registry::RegistryConfig;
use atm_core::testing::fixtures::{Fixtures, patch, with_process};
use atm_core::testing::ingest::{
    FakeAgent as FakeClaude, IngestClient as Client, RunningAdapter as Running, socket_table,
};
use atm_core::{AgentState, Harness, Session, SessionId};
use serde_json::{Value, json};
use std::sync::Arc;

const A: &str = "8e11bfb5-7dc2-432b-9206-928fa5c35731";
const PANE: &str = "%9";

fn fixtures() -> Fixtures {
    Fixtures::of(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Value {
    fixtures().load(name)
}

async fn start_adapter() -> Running {
    Running::start(RegistryConfig::default(), |cfg| {
        ClaudeStatuslineAdapter::from_config(cfg).unwrap()
    })
    .await
}

/// The status-line adapter on its own socket, a client for it, and a process standing in for
/// Claude.
struct Setup {
    run: Running,
    client: Client,
    claude: FakeClaude,
}

impl Setup {
    async fn start() -> Self {
        let run = start_adapter().await;
        let client = run.client().await;
        Self {
            run,
            client,
            claude: FakeClaude::spawn(),
        }
    }

    /// Applies what Claude's hooks report for session `id`, as the hooks adapter does.
    async fn hook(&self, id: &str, event: AgentEvent) {
        let mut source = EventSource::new(Harness::claude(), SessionId::new(id), "claude-hooks");
        source.process = atm_core::process::identity(self.claude.pid());
        source.tmux_pane = Some(PANE.to_owned());
        self.run.harness.apply(source, event).await;
    }

    /// Sends status-line fixture `name` from Claude's pane.
    async fn status(&mut self, name: &str, want_reply: bool) {
        status(&mut self.client, &self.claude, name, want_reply).await;
    }

    /// Sends fixture `name` asking for a reply, and gives every reply that came.
    async fn replies(&mut self, name: &str) -> Vec<Value> {
        self.status(name, true).await;
        self.client.sync().await
    }

    /// Sends fixture `name` without a reply, and gives the one session once it is applied.
    async fn applied(&mut self, name: &str) -> Arc<Session> {
        self.status(name, false).await;
        self.client.sync_ok().await;
        self.run.only_session().await
    }
}

fn started(source: StartSource) -> AgentEvent {
    AgentEvent::SessionStarted {
        source,
        model: None,
    }
}

fn prompt() -> AgentEvent {
    AgentEvent::PromptSubmitted { prompt: None }
}

async fn status(client: &mut Client, claude: &FakeClaude, name: &str, want_reply: bool) {
    let extra = if want_reply {
        json!({"want_reply": true})
    } else {
        json!({})
    };
    client
        .send(
            "status_update",
            with_process(fixture(name), claude.pid(), PANE),
            extra,
        )
        .await;
}

#[tokio::test]
async fn a_status_line_after_stop_keeps_the_session_idle() {
    let mut t = Setup::start().await;
    t.hook(A, started(StartSource::Startup)).await;
    t.hook(A, prompt()).await;
    t.hook(A, AgentEvent::TurnFinished).await;
    let before = t.run.only_session().await;
    assert_eq!(before.state, AgentState::Idle);

    let replies = t.replies("StatusLine.full.json").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    let view = &replies[0];
    assert_eq!(view["type"], "session_updated");
    assert_eq!(view["session"]["id"], A);
    assert_eq!(view["session"]["state"], "idle");
    assert_eq!(view["session"]["status"], "idle");
    assert_eq!(view["session"]["model"], "Opus 4.6");
    assert_eq!(view["session"]["cost_usd"], 0.42);
    assert_eq!(view["session"]["context_display"], "42.1% (84K/200K)");

    let after = t.run.only_session().await;
    assert_eq!(after.state, AgentState::Idle);
    assert_eq!(after.state_since, before.state_since);
    assert_eq!(
        after.last_activity, before.last_activity,
        "a status line is not activity"
    );
    assert_eq!(after.usage.cost_usd, 0.42);
    assert_eq!(after.model_name.as_deref(), Some("Opus 4.6"));
    assert_eq!(after.agent_version.as_deref(), Some("2.1.212"));
    assert_eq!(after.usage.rate_limits["five_hour"].used_percentage, 23.5);
    assert_eq!(after.git.project_root.as_deref(), Some("/home/dev/src/app"));

    // The same while working: still working afterwards.
    t.hook(A, prompt()).await;
    let s = t.applied("StatusLine.no_cost.json").await;
    assert_eq!(s.state, AgentState::Working);
    t.run.stop().await;
}

#[tokio::test]
async fn a_million_token_window_shows_the_right_percent() {
    let mut t = Setup::start().await;
    let replies = t.replies("StatusLine.1m_window.json").await;
    assert_eq!(replies[0]["session"]["context_percentage"], 31.2);
    assert_eq!(replies[0]["session"]["context_display"], "31.2% (312K/1M)");
    assert_eq!(replies[0]["session"]["context_warning"], false);
    let s = t.run.only_session().await;
    assert_eq!(s.usage.context_window_size, 1_000_000);
    assert_eq!(s.usage.context_used_percentage, 31.2);
    assert_eq!(s.usage.context_tokens, 312_000);
    assert_eq!(s.model_id.as_deref(), Some("claude-opus-4-6[1m]"));
    // A status line that came without the session being known creates it, in `starting`.
    assert_eq!(s.state, AgentState::Starting);
    assert_eq!(s.pid(), Some(t.claude.pid()));
    assert_eq!(s.tmux_pane.as_deref(), Some(PANE));
    t.run.stop().await;
}

#[tokio::test]
async fn absent_blocks_change_nothing_already_known() {
    let mut t = Setup::start().await;
    t.status("StatusLine.full.json", false).await;
    let s = t.applied("StatusLine.no_cost.json").await;
    assert_eq!(s.usage.cost_usd, 0.42, "absent cost must not zero the cost");
    assert_eq!(s.usage.lines_added, 12);
    assert_eq!(
        s.usage.context_used_percentage, 44.0,
        "present blocks still apply"
    );
    assert_eq!(
        s.usage.rate_limits.len(),
        2,
        "absent rate limits keep the known ones"
    );
    // The first refresh of a session has null usage: context figures stay as they were.
    let s = t.applied("StatusLine.first_refresh.json").await;
    assert_eq!(s.usage.context_used_percentage, 44.0);
    assert_eq!(s.usage.context_tokens, 88_000);
    assert_eq!(s.usage.context_window_size, 200_000);
    // An old Claude without context_window or rate limits: cost moves, the rest stays.
    let s = t.applied("StatusLine.old_version.json").await;
    assert_eq!(s.usage.cost_usd, 0.1355282);
    assert_eq!(s.usage.context_used_percentage, 44.0);
    assert_eq!(s.model_name.as_deref(), Some("Sonnet 4.5"));
    t.run.stop().await;
}

#[tokio::test]
async fn worktree_facts_are_applied() {
    let mut t = Setup::start().await;
    let replies = t.replies("StatusLine.worktree.json").await;
    let view = &replies[0]["session"];
    assert_eq!(
        view["worktree_path"],
        "/home/dev/src/app/.claude/worktrees/feature-truncated"
    );
    assert_eq!(view["worktree_branch"], "worktree-feature-truncated");
    assert_eq!(view["project_root"], "/home/dev/src/app");
    t.run.stop().await;
}

#[tokio::test]
async fn bad_status_lines_get_error_replies_and_are_counted() {
    let (run, stats) =
        Running::start_translator::<ClaudeStatusLine>(RegistryConfig::default()).await;
    let claude = FakeClaude::spawn();
    let mut client = run.client().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"type":"status_update"}"#.to_vec(), "invalid_message"),
        (
            br#"{"type":"status_update","data":[1]}"#.to_vec(),
            "invalid_message",
        ),
        (
            br#"{"type":"status_update","data":{"model":{"id":"m"}}}"#.to_vec(),
            "invalid_message",
        ),
        (
            br#"{"type":"status_update","data":{"session_id":["s"]}}"#.to_vec(),
            "invalid_message",
        ),
    ];
    for (line, code) in &cases {
        client.send_line(line).await;
        assert_eq!(
            client.sync_errors().await,
            vec![(*code).to_owned()],
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(IngestStats::get(&stats.bad_messages), 4);
    assert!(run.sessions().await.is_empty());
    status(&mut client, &claude, "StatusLine.full.json", false).await;
    client.sync_ok().await;
    assert_eq!(run.only_session().await.usage.cost_usd, 0.42);

    status(&mut client, &claude, "StatusLine.no_cost.json", false).await;
    client.sync_ok().await;
    assert_eq!(run.only_session().await.usage.context_used_percentage, 44.0);
    assert_eq!(IngestStats::get(&stats.applied), 2);
    run.stop().await;
}

#[tokio::test]
async fn a_late_status_line_for_a_cleared_id_replies_with_the_current_session() {
    let mut t = Setup::start().await;
    t.hook(A, started(StartSource::Startup)).await;
    let ended = AgentEvent::SessionEnded {
        reason: "clear".to_owned(),
        continues: true,
    };
    t.hook(A, ended).await;
    t.hook("3f0a9c4e-after-clear", started(StartSource::Clear))
        .await;
    let new_id = t.run.only_session().await.id.clone();
    assert_ne!(new_id.as_str(), A);
    // Claude refreshes the status line once more for the old id.
    let replies = t.replies("StatusLine.full.json").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["session"]["id"], new_id.as_str());
    assert_eq!(t.run.sessions().await.len(), 1);
    // A status line for an id nobody knows creates that session, so the reply finds it.
    t.client
        .send(
            "status_update",
            patch(
                fixture("StatusLine.full.json"),
                json!({"session_id": "other"}),
            ),
            json!({"want_reply": true}),
        )
        .await;
    let replies = t.client.sync().await;
    assert_eq!(replies[0]["session"]["id"], "other");
    t.run.stop().await;
}

#[tokio::test]
async fn runs_on_a_socket_of_its_own() {
    let run = start_adapter().await;
    let mut client = run.client().await;
    let stop = json!({"session_id": A, "hook_event_name": "Stop"});
    client.send("hook_event", stop, json!({})).await;
    assert_eq!(client.sync_errors().await, vec!["unknown_type".to_owned()]);
    client
        .send(
            "status_update",
            fixture("StatusLine.full.json"),
            json!({"agent": "claude"}),
        )
        .await;
    client.sync_ok().await;
    assert_eq!(run.only_session().await.usage.cost_usd, 0.42);
    run.stop().await;
}

#[test]
fn every_fixture_parses() {
    for entry in std::fs::read_dir(fixtures().dir()).unwrap() {
        let path = entry.unwrap().path();
        let data: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let s = parse_status_line(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(s.session_id.as_str(), A);
        assert!(s.usage.model_name.is_some(), "{}", path.display());
    }
}

#[tokio::test]
async fn keeps_the_plugin_contract() {
    let dir = tempfile::tempdir().unwrap();
    let config = socket_table(&dir.path().join("contract.sock"));
    atm_core::testing::check_adapter_contract("claude-statusline", config, dir.path()).await;
}

#[test]
fn config_rejects_unknown_keys() {
    let cfg = atm_core::toml::Value::Table(atm_core::toml::from_str("socet = \"/x\"").unwrap());
    let err = ClaudeStatuslineAdapter::from_config(&cfg).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("socet"));
}
