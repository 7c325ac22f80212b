//! The registry actor through its public handle: identity, re-keying, capacity, liveness,
//! persistence and the change stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::sync::Arc;
use std::time::Duration;

use atm_core::model::RateLimit;
use atm_core::testing::wait_until;
use atm_core::{
    AgentEvent, AgentState, ApplyOutcome, Discovered, EventEnvelope, EventSource, Harness,
    ProcessIdentity, Registry, RegistryConfig, RegistryError, RegistryHandle, SessionChange,
    SessionId, StartSource, UsageUpdate,
};
use tokio::sync::broadcast::error::TryRecvError;

fn config() -> RegistryConfig {
    RegistryConfig {
        cleanup_interval: Duration::ZERO,
        ..RegistryConfig::default()
    }
}

async fn start(config: RegistryConfig) -> RegistryHandle {
    Registry::start(config).await.handle
}

/// A registry with the test config changed by `tweak`.
async fn start_with(tweak: impl FnOnce(&mut RegistryConfig)) -> RegistryHandle {
    let mut c = config();
    tweak(&mut c);
    start(c).await
}

struct Child(std::process::Child, ProcessIdentity);

impl Child {
    fn spawn() -> Self {
        let c = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let id = atm_core::process::identity(c.id()).unwrap();
        Self(c, id)
    }
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn src(id: &str, process: Option<ProcessIdentity>) -> EventSource {
    let mut s = EventSource::new(Harness::claude(), SessionId::new(id), "test");
    s.process = process;
    s
}

async fn apply(r: &RegistryHandle, source: EventSource, event: AgentEvent) -> ApplyOutcome {
    r.apply_event(EventEnvelope::now(source, event))
        .await
        .unwrap()
}

/// Waits until session `id` has been silent for more than `ms` milliseconds.
async fn silent_past(r: &RegistryHandle, id: &str, ms: i64) {
    wait_until(&format!("{id} silent for {ms} ms"), || {
        let r = r.clone();
        async move {
            r.get_session(id).await.is_ok_and(|s| {
                atm_core::chrono::Utc::now() - s.last_activity
                    > atm_core::chrono::Duration::milliseconds(ms)
            })
        }
    })
    .await;
}

/// The end of a session that `/clear` continues under a new id.
fn cleared() -> AgentEvent {
    AgentEvent::SessionEnded {
        reason: "clear".into(),
        continues: true,
    }
}

fn prompt() -> AgentEvent {
    AgentEvent::PromptSubmitted { prompt: None }
}

fn tool(name: &str) -> AgentEvent {
    AgentEvent::ToolStarted {
        tool: name.into(),
        detail: None,
    }
}

fn permission(tool: &str, detail: Option<&str>) -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: tool.into(),
        detail: detail.map(str::to_owned),
        suggestions: Vec::new(),
    }
}

fn subagent_started(id: &str) -> AgentEvent {
    AgentEvent::SubagentStarted {
        agent_id: id.into(),
    }
}

fn subagent_stopped(id: &str) -> AgentEvent {
    AgentEvent::SubagentStopped {
        agent_id: id.into(),
    }
}

fn start_ev(source: StartSource) -> AgentEvent {
    AgentEvent::SessionStarted {
        source,
        model: None,
    }
}

#[tokio::test]
async fn clear_rekeys_one_process_into_one_session() {
    let r = start(config()).await;
    let child = Child::spawn();
    let p = Some(child.1);
    let (_, mut rx) = r.subscribe().await.unwrap();
    assert_eq!(
        apply(&r, src("old", p), start_ev(StartSource::Startup)).await,
        ApplyOutcome::Added
    );
    apply(
        &r,
        src("old", p),
        AgentEvent::PromptSubmitted {
            prompt: Some("fix the bug".into()),
        },
    )
    .await;
    // `/clear`: the end of the old id (kept), then the new id for the same process.
    apply(&r, src("old", p), cleared()).await;
    apply(&r, src("new", p), start_ev(StartSource::Clear)).await;
    let all = r.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id.as_str(), "new");
    assert_eq!(all[0].state, AgentState::Starting);
    assert_eq!(
        all[0].first_prompt, None,
        "a new conversation has no first prompt yet"
    );
    // Clients saw the old id removed and the new one added.
    let mut changes = Vec::new();
    while let Ok(e) = rx.try_recv() {
        changes.push((e.seq, e.change, e.session.id.to_string()));
    }
    assert!(
        changes.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "gapless seq: {changes:?}"
    );
    let tail: Vec<_> = changes.iter().rev().take(3).rev().cloned().collect();
    assert!(
        matches!(&tail[0], (_, SessionChange::Removed { .. }, id) if id == "old"),
        "{changes:?}"
    );
    assert!(
        matches!(&tail[1], (_, SessionChange::Added, id) if id == "new"),
        "{changes:?}"
    );
    // A late event for the old id does not flip the session back.
    assert_eq!(
        apply(&r, src("old", p), AgentEvent::TurnFinished).await,
        ApplyOutcome::Ignored
    );
    assert_eq!(r.get_all_sessions().await.unwrap()[0].id.as_str(), "new");
}

#[tokio::test]
async fn end_then_start_in_either_order_keeps_one_row() {
    let r = start(config()).await;
    let child = Child::spawn();
    let p = Some(child.1);
    apply(&r, src("a", p), start_ev(StartSource::Startup)).await;
    // Hooks run in parallel: the new id may arrive before the old id's end.
    apply(&r, src("b", p), start_ev(StartSource::Clear)).await;
    apply(&r, src("a", p), cleared()).await;
    let all = r.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id.as_str(), "b");
}

#[tokio::test]
async fn status_line_never_changes_state_and_absent_figures_stay() {
    let r = start(config()).await;
    apply(&r, src("s", None), prompt()).await;
    apply(&r, src("s", None), AgentEvent::TurnFinished).await;
    let update = UsageUpdate {
        cost_usd: Some(1.25),
        context_used_percentage: Some(12.5),
        context_window_size: Some(1_000_000),
        ..Default::default()
    };
    r.update_usage(src("s", None), update).await.unwrap();
    // A later status line without cost must not zero it.
    let lines_only = || UsageUpdate {
        lines_added: Some(3),
        ..Default::default()
    };
    r.update_usage(src("s", None), lines_only()).await.unwrap();
    let s = r.get_session("s").await.unwrap();
    assert_eq!(s.state, AgentState::Idle);
    assert_eq!(s.usage.cost_usd, 1.25);
    assert_eq!(s.usage.context_window_size, 1_000_000);
    assert_eq!(s.usage.lines_added, 3);
    // An identical status line is not a change.
    assert_eq!(
        r.update_usage(src("s", None), lines_only()).await.unwrap(),
        ApplyOutcome::Unchanged
    );
}

#[tokio::test]
async fn discovery_never_downgrades_a_real_id_and_merges_with_hooks() {
    let r = start(config()).await;
    let child = Child::spawn();
    let found = |id: Option<&str>| Discovered {
        session_id: id.map(SessionId::new),
        cwd: Some("/tmp".into()),
        tmux_pane: Some("%3".into()),
        ..Discovered::new(Harness::claude(), child.1, "proc-discovery")
    };
    assert_eq!(
        r.register_discovered(found(None)).await.unwrap(),
        ApplyOutcome::Added
    );
    let pending = format!("pending-{}", child.1.pid);
    assert!(r.get_session(&pending).await.is_ok());
    // A hook names the real id for the same process: one row, re-keyed.
    apply(&r, src("real", Some(child.1)), prompt()).await;
    // A rescan that still knows no id must not bring pending back.
    r.register_discovered(found(None)).await.unwrap();
    let all = r.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].id.as_str(), "real");
    assert_eq!(all[0].tmux_pane.as_deref(), Some("%3"));
    assert_eq!(all[0].state, AgentState::Working);
}

#[tokio::test]
async fn a_process_whose_session_ended_is_not_rediscovered_until_it_starts_again() {
    let r = start(config()).await;
    let child = Child::spawn();
    let found = || Discovered::new(Harness::claude(), child.1, "proc-discovery");
    apply(&r, src("real", Some(child.1)), prompt()).await;
    let end = |continues| AgentEvent::SessionEnded {
        reason: "quit".into(),
        continues,
    };
    assert_eq!(
        apply(&r, src("real", Some(child.1)), end(false)).await,
        ApplyOutcome::Removed
    );
    // pi lives on for a moment after /quit: a scan then must not list it as a new session.
    assert_eq!(
        r.register_discovered(found()).await.unwrap(),
        ApplyOutcome::Ignored
    );
    assert!(r.get_all_sessions().await.unwrap().is_empty());
    // The agent itself says a session started in that process: it is listed, and found again.
    let start = AgentEvent::SessionStarted {
        source: StartSource::Startup,
        model: None,
    };
    assert_eq!(
        apply(&r, src("next", Some(child.1)), start).await,
        ApplyOutcome::Added
    );
    r.register_discovered(found()).await.unwrap();
    let all = r.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].id.as_str(), "next");
    // An end that continues (`/new`) is no end of the process.
    apply(&r, src("next", Some(child.1)), end(true)).await;
    assert_eq!(
        r.register_discovered(found()).await.unwrap(),
        ApplyOutcome::Unchanged
    );
}

#[tokio::test]
async fn hook_without_pid_then_discovery_is_one_session() {
    let r = start(config()).await;
    let child = Child::spawn();
    apply(&r, src("sid", None), prompt()).await;
    r.register_discovered(Discovered {
        session_id: Some(SessionId::new("sid")),
        state_hint: Some(AgentState::Idle),
        ..Discovered::new(Harness::claude(), child.1, "proc-discovery")
    })
    .await
    .unwrap();
    let all = r.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].pid(), Some(child.1.pid));
    assert_eq!(
        all[0].state,
        AgentState::Working,
        "the hint applies to new sessions only"
    );
}

#[tokio::test]
async fn capacity_is_enforced_and_a_live_agent_evicts_the_oldest_silent_pidless_session() {
    let r = start_with(|c| c.max_sessions = 2).await;
    apply(&r, src("a", None), prompt()).await;
    apply(&r, src("b", None), prompt()).await;
    // A pid-less newcomer (a flood, a stale agent) is refused: nothing tells which to keep.
    let full = r
        .apply_event(EventEnvelope::now(src("c", None), AgentEvent::TurnFinished))
        .await;
    assert_eq!(full, Err(RegistryError::RegistryFull { max: 2 }));
    // Existing sessions still update.
    apply(&r, src("b", None), AgentEvent::TurnFinished).await;
    assert_eq!(r.get_session("b").await.unwrap().state, AgentState::Idle);
    // A real agent (a live process) pushes out the pid-less session silent the longest: `a`.
    let (_, mut changes) = r.subscribe().await.unwrap();
    let found = |p: ProcessIdentity| Discovered::new(Harness::claude(), p, "t");
    let first = Child::spawn();
    assert_eq!(
        r.register_discovered(found(first.1)).await,
        Ok(ApplyOutcome::Added)
    );
    let evicted = changes.recv().await.unwrap();
    assert_eq!(evicted.session.id.as_str(), "a");
    assert!(
        matches!(&evicted.change, SessionChange::Removed { reason } if reason.contains("registry is full")),
        "{:?}",
        evicted.change
    );
    assert!(r.get_session("b").await.is_ok());
    // A hook naming a live process counts as a real agent too: `b` goes.
    let second = Child::spawn();
    apply(&r, src("hooked", Some(second.1)), prompt()).await;
    assert!(r.get_session("b").await.is_err());
    // Only agents with processes are left: a third is refused, never one of them evicted.
    let third = Child::spawn();
    assert!(matches!(
        r.register_discovered(found(third.1)).await,
        Err(RegistryError::RegistryFull { .. })
    ));
    assert_eq!(r.get_all_sessions().await.unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_sessions_are_not_found() {
    let r = start(config()).await;
    assert!(matches!(
        r.get_session("nope").await,
        Err(RegistryError::SessionNotFound(_))
    ));
    assert!(matches!(
        r.remove("nope", "x").await,
        Err(RegistryError::SessionNotFound(_))
    ));
}

#[tokio::test]
async fn dead_processes_and_silent_sessions_are_cleaned_up() {
    let r = start_with(|c| c.silence_expiry = Duration::from_millis(200)).await;
    let mut child = Child::spawn();
    apply(&r, src("live", Some(child.1)), prompt()).await;
    apply(&r, src("nopid", None), prompt()).await;
    assert!(r.cleanup_stale().await.unwrap().is_empty());
    child.kill();
    let gone = child.1;
    wait_until("the killed process is gone", || async move {
        !atm_core::process::is_alive(gone)
    })
    .await;
    silent_past(&r, "nopid", 200).await;
    let mut removed = r.cleanup_stale().await.unwrap();
    removed.sort();
    assert_eq!(
        removed,
        vec![SessionId::new("live"), SessionId::new("nopid")]
    );
    assert!(r.get_all_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_janitor_runs_until_its_token_is_cancelled() {
    let tree = atm_core::tokio_util::sync::CancellationToken::new();
    let registry = Registry::start_in(
        RegistryConfig {
            silence_expiry: Duration::from_millis(50),
            cleanup_interval: Duration::from_millis(20),
            ..RegistryConfig::default()
        },
        &tree,
    )
    .await;
    let r = registry.handle.clone();
    apply(&r, src("quiet", None), prompt()).await;
    wait_until("the janitor removes the silent session", || {
        let r = r.clone();
        async move { r.get_all_sessions().await.is_ok_and(|all| all.is_empty()) }
    })
    .await;
    assert!(registry.janitor.is_running());
    tree.cancel();
    wait_until("the janitor stops with its token", || {
        let running = registry.janitor.is_running();
        async move { !running }
    })
    .await;
    // The registry itself still runs; the silent session is no longer swept.
    apply(&r, src("quiet2", None), prompt()).await;
    let later = Registry::start(config()).await;
    assert!(
        !later.janitor.is_running(),
        "a zero interval starts no janitor"
    );
    assert_eq!(r.get_all_sessions().await.unwrap().len(), 1);
    registry.janitor.stop().await;
}

#[tokio::test]
async fn snapshot_survives_restart_and_keeps_only_live_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/sessions.json");
    let cfg = || RegistryConfig {
        snapshot_path: Some(path.clone()),
        snapshot_debounce: Duration::from_millis(20),
        ..config()
    };
    let live = Child::spawn();
    let mut dead = Child::spawn();
    let r = start(cfg()).await;
    apply(
        &r,
        src("keep", Some(live.1)),
        AgentEvent::PromptSubmitted {
            prompt: Some("ünïcode prompt".into()),
        },
    )
    .await;
    r.update_usage(
        src("keep", Some(live.1)),
        UsageUpdate {
            cost_usd: Some(2.5),
            context_used_percentage: Some(42.0),
            rate_limits: Some(
                [(
                    "five_hour".to_owned(),
                    RateLimit {
                        used_percentage: 10.0,
                        resets_at: None,
                    },
                )]
                .into(),
            ),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    apply(
        &r,
        src("keep", Some(live.1)),
        permission("Bash", Some("rm -rf build")),
    )
    .await;
    apply(&r, src("gone", Some(dead.1)), prompt()).await;
    // No shutdown: the debounced write alone must have saved it (as after kill -9).
    wait_until("the debounced snapshot is written", || {
        let saved = std::fs::read_to_string(&path)
            .is_ok_and(|text| text.contains("rm -rf build") && text.contains("gone"));
        async move { saved }
    })
    .await;
    dead.kill();
    let r2 = start(cfg()).await;
    let all = r2.get_all_sessions().await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let s = &all[0];
    assert_eq!(s.id.as_str(), "keep");
    assert_eq!(s.state, AgentState::NeedsPermission);
    assert_eq!(s.usage.cost_usd, 2.5);
    assert_eq!(s.usage.context_used_percentage, 42.0);
    assert_eq!(s.first_prompt.as_deref(), Some("ünïcode prompt"));
    assert_eq!(
        s.attention.as_ref().unwrap().detail.as_deref(),
        Some("rm -rf build")
    );
}

#[tokio::test]
async fn a_session_a_wrong_clock_stamped_in_the_future_still_expires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.json");
    // Saved by a daemon whose clock ran a year ahead.
    let ahead = atm_core::chrono::Utc::now() + atm_core::chrono::Duration::days(365);
    let mut s = atm_core::testing::claude_session("from-the-future", ahead);
    s.last_activity = ahead;
    atm_core::persist::save(&path, &[Arc::new(s)]).unwrap();
    let r = start(RegistryConfig {
        snapshot_path: Some(path.clone()),
        silence_expiry: Duration::from_millis(100),
        ..config()
    })
    .await;
    let restored = r.get_session("from-the-future").await.unwrap();
    assert!(restored.last_activity <= atm_core::chrono::Utc::now());
    assert!(restored.started_at <= atm_core::chrono::Utc::now());
    silent_past(&r, "from-the-future", 100).await;
    assert_eq!(
        r.cleanup_stale().await.unwrap(),
        vec![SessionId::new("from-the-future")]
    );
}

#[tokio::test]
async fn corrupt_snapshot_is_moved_aside_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.json");
    std::fs::write(&path, b"{\"version\":1,\"sessions\":[{\"trunc").unwrap();
    let r = start_with(|c| c.snapshot_path = Some(path.clone())).await;
    assert!(r.get_all_sessions().await.unwrap().is_empty());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1);
    // Non-UTF-8 garbage too.
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let r = start_with(|c| c.snapshot_path = Some(path.clone())).await;
    assert!(r.get_all_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn shutdown_writes_the_final_snapshot_and_closes_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.json");
    let registry = Registry::start(RegistryConfig {
        snapshot_path: Some(path.clone()),
        snapshot_debounce: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let r = registry.handle.clone();
    apply(&r, src("x", None), prompt()).await;
    r.shutdown().await.unwrap();
    registry.task.await.unwrap();
    assert!(!r.is_connected());
    assert_eq!(
        r.get_all_sessions().await.unwrap_err(),
        RegistryError::ChannelClosed
    );
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"x\""));
}

#[tokio::test]
async fn lagging_subscriber_learns_it_and_can_resync() {
    let r = start_with(|c| c.broadcast_capacity = 4).await;
    let (_, mut rx) = r.subscribe().await.unwrap();
    for i in 0..20 {
        apply(&r, src(&format!("s{i}"), None), prompt()).await;
    }
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(_))));
    let snap = r.snapshot().await.unwrap();
    assert_eq!(snap.sessions.len(), 20);
    assert_eq!(snap.seq, 20);
}

#[tokio::test]
async fn subagent_stop_does_not_idle_the_parent() {
    let r = start(config()).await;
    apply(&r, src("p", None), prompt()).await;
    apply(&r, src("p", None), subagent_started("ag1")).await;
    let mut inside = src("p", None);
    inside.subagent_id = Some("ag1".into());
    apply(&r, inside.clone(), tool("Grep")).await;
    apply(&r, inside, AgentEvent::TurnFinished).await;
    let s = r.get_session("p").await.unwrap();
    assert_eq!(s.state, AgentState::Working);
    assert_eq!(s.children, vec!["ag1".to_owned()]);
    assert_eq!(s.activity.as_deref(), Some("Thinking"));
    apply(&r, src("p", None), subagent_stopped("ag1")).await;
    assert!(r.get_session("p").await.unwrap().children.is_empty());
}

#[tokio::test]
async fn a_reminder_keeps_the_richer_wait_and_alone_raises_it() {
    let r = start(config()).await;
    apply(&r, src("p", None), prompt()).await;
    apply(&r, src("p", None), permission("Bash", Some("cargo test"))).await;
    let before = r.get_session("p").await.unwrap();
    let coarse = AgentEvent::reminder(permission("unknown", None));
    apply(&r, src("p", None), coarse.clone()).await;
    let late_stop = || AgentEvent::reminder(AgentEvent::TurnFinished);
    apply(&r, src("p", None), late_stop()).await;
    let after = r.get_session("p").await.unwrap();
    assert_eq!(after.state, AgentState::NeedsPermission);
    assert_eq!(after.attention, before.attention);
    assert_eq!(after.activity.as_deref(), Some("Permission"));
    assert!(after.last_activity >= before.last_activity);
    // Not waiting: the reminder is its event, facts and activity included.
    apply(&r, src("q", None), prompt()).await;
    apply(&r, src("q", None), coarse).await;
    let q = r.get_session("q").await.unwrap();
    assert_eq!(q.state, AgentState::NeedsPermission);
    assert_eq!(
        q.attention.as_ref().unwrap().tool.as_deref(),
        Some("unknown")
    );
    assert_eq!(q.activity.as_deref(), Some("Permission"));
    apply(&r, src("q", None), AgentEvent::ToolFinished { tool: None }).await;
    apply(&r, src("q", None), late_stop()).await;
    let q = r.get_session("q").await.unwrap();
    assert_eq!(q.state, AgentState::Idle);
    assert_eq!(q.activity, None);
}

#[tokio::test]
async fn the_subagent_that_asked_ends_the_wait_with_its_next_event() {
    let r = start(config()).await;
    apply(&r, src("p", None), prompt()).await;
    let mut asker = src("p", None);
    asker.subagent_id = Some("ag1".into());
    let mut other = src("p", None);
    other.subagent_id = Some("ag2".into());
    let finished = |tool: &str| AgentEvent::ToolFinished {
        tool: Some(tool.into()),
    };
    apply(&r, asker.clone(), permission("WebFetch", None)).await;
    let s = r.get_session("p").await.unwrap();
    assert_eq!(s.state, AgentState::NeedsPermission);
    assert_eq!(
        s.attention.as_ref().unwrap().subagent_id.as_deref(),
        Some("ag1")
    );
    // Another subagent finishing the same tool answers nothing.
    apply(&r, other, finished("WebFetch")).await;
    assert_eq!(
        r.get_session("p").await.unwrap().state,
        AgentState::NeedsPermission
    );
    // The asker moving on (whatever its tool is called) is the answer.
    apply(&r, asker.clone(), finished("web_fetch")).await;
    let s = r.get_session("p").await.unwrap();
    assert_eq!(s.state, AgentState::Working);
    assert_eq!(s.attention, None);
    assert_eq!(s.activity.as_deref(), Some("Thinking"));
    // Outside a wait it is an ordinary subagent again.
    apply(&r, asker.clone(), tool("Grep")).await;
    assert_eq!(
        r.get_session("p").await.unwrap().activity.as_deref(),
        Some("Thinking")
    );
    // A subagent that stops while its question is open takes the question with it.
    apply(
        &r,
        asker.clone(),
        AgentEvent::InputRequested {
            reason: "question".into(),
            tool: None,
            detail: None,
        },
    )
    .await;
    assert_eq!(
        r.get_session("p").await.unwrap().state,
        AgentState::NeedsInput
    );
    apply(&r, asker, subagent_stopped("ag1")).await;
    let s = r.get_session("p").await.unwrap();
    assert_eq!(s.state, AgentState::Working);
    assert_eq!(s.attention, None);
}

#[tokio::test]
async fn huge_and_multibyte_text_is_cut_by_characters() {
    let r = start(config()).await;
    let mut s = src("m", None);
    s.cwd = Some("/home/ü/".to_owned() + &"проект/🦀".repeat(2000));
    apply(
        &r,
        s,
        AgentEvent::PermissionRequested {
            tool: "Bash".into(),
            detail: Some("é".repeat(10_000)),
            suggestions: Vec::new(),
        },
    )
    .await;
    let got = r.get_session("m").await.unwrap();
    assert!(got.cwd.as_ref().unwrap().chars().count() <= 4096);
    assert!(
        got.attention
            .as_ref()
            .unwrap()
            .detail
            .as_ref()
            .unwrap()
            .chars()
            .count()
            <= 200
    );
    let view = atm_core::SessionView::from_session(&got, atm_core::chrono::Utc::now());
    assert!(serde_json::to_string(&view).is_ok());
}

#[tokio::test]
async fn many_handles_concurrently_one_owner() {
    let r = start(config()).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let id = format!("t{t}-{}", i % 10);
                r.apply_event(EventEnvelope::now(src(&id, None), tool("Read")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snap = r.snapshot().await.unwrap();
    assert_eq!(snap.sessions.len(), 80);
    let ids: std::collections::HashSet<_> = snap.sessions.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), 80);
    let _ = Arc::strong_count(&snap.sessions[0]);
}

#[tokio::test]
async fn without_hooks_the_agents_own_status_drives_the_state() {
    let r = start(config()).await;
    let child = Child::spawn();
    // Discovery reports the agent's own status as `hint`; the session as it then is.
    let discovered = |hint: AgentState| {
        let r = r.clone();
        let found = Discovered {
            session_id: Some(SessionId::new("nohooks")),
            state_hint: Some(hint),
            ..Discovered::new(Harness::claude(), child.1, "proc-discovery")
        };
        async move {
            r.register_discovered(found).await.unwrap();
            r.get_session("nohooks").await.unwrap()
        }
    };
    assert_eq!(
        discovered(AgentState::Working).await.state,
        AgentState::Working
    );
    let s = discovered(AgentState::NeedsPermission).await;
    assert_eq!(s.state, AgentState::NeedsPermission);
    assert_eq!(
        s.attention.as_ref().map(|a| a.reason.as_str()),
        Some("permission")
    );
    let s = discovered(AgentState::Idle).await;
    assert_eq!(s.state, AgentState::Idle);
    assert!(s.attention.is_none());
    // A status line is not a hook: hints still apply after it.
    r.update_usage(
        src("nohooks", Some(child.1)),
        UsageUpdate {
            cost_usd: Some(1.0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        discovered(AgentState::Working).await.state,
        AgentState::Working
    );
    // Once hooks speak, they are the authority.
    apply(&r, src("nohooks", Some(child.1)), AgentEvent::TurnFinished).await;
    assert_eq!(
        discovered(AgentState::Working).await.state,
        AgentState::Idle
    );
}

#[tokio::test]
async fn git_facts_clear_when_the_cwd_leaves_the_repository() {
    let r = start(config()).await;
    let set = |root: &str, branch: &str| UsageUpdate {
        project_root: Some(root.into()),
        branch: Some(branch.into()),
        ..Default::default()
    };
    r.update_usage(src("g", None), set("/src/app", "main"))
        .await
        .unwrap();
    let s = r.get_session("g").await.unwrap();
    assert_eq!(s.git.branch.as_deref(), Some("main"));
    // Absent: unchanged.
    r.update_usage(src("g", None), UsageUpdate::default())
        .await
        .unwrap();
    assert_eq!(
        r.get_session("g")
            .await
            .unwrap()
            .git
            .project_root
            .as_deref(),
        Some("/src/app")
    );
    // Empty: cleared.
    r.update_usage(src("g", None), set("", "")).await.unwrap();
    let s = r.get_session("g").await.unwrap();
    assert_eq!(
        (s.git.project_root.as_deref(), s.git.branch.as_deref()),
        (None, None)
    );
}
