//! The adapter against the real `/proc`, a real registry and real child processes named like
//! agents (copies of `sleep`), plus a real tmux server and the plugin contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail the test by panicking

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use adapter_proc_discovery::{ProcDiscoveryAdapter, ProcDiscoveryConfig};
use atm_core::plugin::parse_config;
use atm_core::registry::Discovered;
use atm_core::testing::{TestHarness, TmuxServer, check_adapter_contract, sample_table};
use atm_core::{
    AgentEvent, AgentState, EventEnvelope, EventSource, Harness, InputAdapter, Session, SessionId,
};
use common::git;
use tokio::task::JoinHandle;

use adapter_proc_discovery as _;

/// A copy of `sleep` called `claude` in a fresh dir, with a home for its session files.
struct Agent {
    tmp: tempfile::TempDir,
    exe: PathBuf,
    claude_dir: PathBuf,
}

impl Agent {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let exe = atm_core::testing::ingest::sleep_named(tmp.path(), "claude");
        let claude_dir = tmp.path().join("home/.claude");
        std::fs::create_dir_all(claude_dir.join("sessions")).unwrap();
        Self {
            tmp,
            exe,
            claude_dir,
        }
    }

    fn spawn(&self, cwd: &Path, pane: &str) -> Reaped {
        Reaped(
            Command::new(&self.exe)
                .arg("600")
                .current_dir(cwd)
                .env("TMUX_PANE", pane)
                .env_remove("CLAUDE_CONFIG_DIR")
                .spawn()
                .unwrap(),
        )
    }

    fn write_session_file(&self, pid: u32, id: &str) {
        let now_ms = atm_core::chrono::Utc::now().timestamp_millis();
        std::fs::write(
            self.claude_dir.join(format!("sessions/{pid}.json")),
            format!(r#"{{"pid":{pid},"sessionId":"{id}","startedAt":{now_ms},"status":"idle"}}"#),
        )
        .unwrap();
    }

    fn config(&self, interval: &str) -> ProcDiscoveryConfig {
        let t = format!(
            "interval = \"{interval}\"\nclaude_config_dir = \"{}\"\n",
            self.claude_dir.display()
        );
        parse_config(&atm_core::toml::Value::Table(
            atm_core::toml::from_str(&t).unwrap(),
        ))
        .unwrap()
    }
}

struct Running {
    harness: TestHarness,
    task: JoinHandle<Result<(), atm_core::PluginError>>,
    _dir: tempfile::TempDir,
}

async fn start(config: ProcDiscoveryConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::new(dir.path()).await;
    let adapter = Box::new(ProcDiscoveryAdapter::new(config).unwrap());
    let ctx = harness.adapter_context("proc-discovery");
    let task = tokio::spawn(adapter.run(ctx));
    Running {
        harness,
        task,
        _dir: dir,
    }
}

impl Running {
    /// Kills and reaps the agent processes `children`, then stops as [`Running::stop`] does.
    async fn stop_after_killing<const N: usize>(self, children: [Reaped; N]) {
        children.into_iter().for_each(kill_and_reap);
        self.stop().await;
    }

    async fn stop(self) {
        self.harness.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    async fn sessions_of(&self, pid: u32) -> Vec<Arc<Session>> {
        let all = self.harness.registry.get_all_sessions().await.unwrap();
        all.into_iter().filter(|s| s.pid() == Some(pid)).collect()
    }

    /// Waits for `n` more full passes: a rescan is answered only once its pass has registered
    /// what it found and dropped what died, so a check after this has seen those passes.
    async fn passes(&self, n: usize) {
        for _ in 0..n {
            let report = self.harness.control.rescan(Duration::from_secs(5)).await;
            assert_eq!(
                report.responders, 1,
                "the adapter answered a rescan: {report:?}"
            );
        }
    }

    /// Polls (up to `limit`) until the sessions of `pid` satisfy `ok`.
    async fn wait_for(
        &self,
        pid: u32,
        limit: Duration,
        ok: impl Fn(&[Arc<Session>]) -> bool,
    ) -> Vec<Arc<Session>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self.sessions_of(pid).await;
            if ok(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {limit:?}; sessions of {pid}: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A child killed (SIGKILL) and reaped when dropped, so a failing test leaves nothing behind.
struct Reaped(Child);

impl Reaped {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_and_reap(child: Reaped) {
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_is_found_merged_with_hooks_and_removed_on_kill() {
    let agent = Agent::new();
    let repo = agent.tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
    let cwd = repo.join("src");
    let child = agent.spawn(&cwd, "%42");
    let pid = child.id();
    agent.write_session_file(pid, "real-session-1");
    let running = start(agent.config("1s")).await;

    let s = running
        .wait_for(pid, Duration::from_secs(5), |s| {
            s.len() == 1 && s[0].rss_bytes.is_some() && s[0].git.branch.is_some()
        })
        .await;
    let s = &s[0];
    assert_eq!(s.id.as_str(), "real-session-1");
    assert_eq!(s.harness.as_str(), "claude");
    assert_eq!(s.tmux_pane.as_deref(), Some("%42"));
    assert_eq!(s.cwd.as_deref(), cwd.to_str());
    assert_eq!(s.source, "proc-discovery");
    assert_eq!(s.git.branch.as_deref(), Some("main"));
    assert_eq!(s.git.project_root.as_deref(), repo.to_str());
    assert_eq!(s.git.worktree_path.as_deref(), repo.to_str());
    assert!(s.rss_bytes.unwrap() > 0);
    let process = s.process.unwrap();
    assert_eq!(Some(process), atm_core::process::identity(pid));
    // CPU is sampled from the second pass on (a sleeping process: 0%).
    running
        .wait_for(pid, Duration::from_secs(5), |s| {
            s.len() == 1 && s[0].cpu_percent.is_some()
        })
        .await;

    // A hook event for the same process and id lands on the same row.
    let mut source = EventSource::new(
        Harness::claude(),
        SessionId::new("real-session-1"),
        "claude-hooks",
    );
    source.process = Some(process);
    running
        .harness
        .registry
        .apply_event(EventEnvelope::now(
            source,
            AgentEvent::PromptSubmitted {
                prompt: Some("hi".into()),
            },
        ))
        .await
        .unwrap();
    let s = running
        .wait_for(pid, Duration::from_secs(5), |s| s.len() == 1)
        .await;
    assert_eq!(s[0].first_prompt.as_deref(), Some("hi"));
    assert_eq!(s[0].id.as_str(), "real-session-1");
    let all = running.harness.registry.get_all_sessions().await.unwrap();
    assert_eq!(
        all.iter()
            .filter(|x| x.id.as_str() == "real-session-1")
            .count(),
        1
    );
    // Further passes do not add a second row either.
    running.passes(3).await;
    assert_eq!(running.sessions_of(pid).await.len(), 1);

    // SIGKILL: gone within 3 s, removed as "process exited".
    let (_, mut changes) = running.harness.registry.subscribe().await.unwrap();
    kill_and_reap(child);
    running
        .wait_for(pid, Duration::from_secs(3), <[_]>::is_empty)
        .await;
    let reason = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let ev = changes.recv().await.unwrap();
            if let atm_core::SessionChange::Removed { reason } = ev.change
                && ev.session.pid() == Some(pid)
            {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reason, "process exited");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_session_learns_its_id_and_never_reverts() {
    let agent = Agent::new();
    let child = agent.spawn(agent.tmp.path(), "%1");
    let pid = child.id();
    let running = start(agent.config("300ms")).await;
    let pending = SessionId::pending(pid);
    running
        .wait_for(pid, Duration::from_secs(5), |s| {
            s.len() == 1 && s[0].id == pending
        })
        .await;

    agent.write_session_file(pid, "learnt-id");
    running
        .wait_for(pid, Duration::from_secs(5), |s| {
            s.len() == 1 && s[0].id.as_str() == "learnt-id"
        })
        .await;

    // The file disappearing (or going stale) and more passes must not revert the id...
    std::fs::remove_file(agent.claude_dir.join(format!("sessions/{pid}.json"))).unwrap();
    let report = running.harness.control.rescan(Duration::from_secs(5)).await;
    assert_eq!(report.responders, 1);
    assert!(report.discovered >= 1, "{report:?}");
    running.passes(2).await;
    let s = running.sessions_of(pid).await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].id.as_str(), "learnt-id");
    // ...and the registry itself refuses the downgrade from any discovery report.
    let process = s[0].process.unwrap();
    running
        .harness
        .registry
        .register_discovered(Discovered::new(Harness::claude(), process, "test"))
        .await
        .unwrap();
    assert_eq!(running.sessions_of(pid).await[0].id.as_str(), "learnt-id");
    running.stop_after_killing([child]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_first_then_discovery_is_still_one_row() {
    let agent = Agent::new();
    // One agent whose hook named its process, one whose hook did not (keyed by id only).
    let with_pid = agent.spawn(agent.tmp.path(), "%5");
    let without_pid = agent.spawn(agent.tmp.path(), "%6");
    agent.write_session_file(with_pid.id(), "hooked-with-pid");
    agent.write_session_file(without_pid.id(), "hooked-without-pid");
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::new(dir.path()).await;
    for (child, id, with_process) in [
        (&with_pid, "hooked-with-pid", true),
        (&without_pid, "hooked-without-pid", false),
    ] {
        let mut source = EventSource::new(Harness::claude(), SessionId::new(id), "claude-hooks");
        if with_process {
            source.process = atm_core::process::identity(child.id());
        }
        harness
            .registry
            .apply_event(EventEnvelope::now(
                source,
                AgentEvent::SessionStarted {
                    source: atm_core::StartSource::Startup,
                    model: None,
                },
            ))
            .await
            .unwrap();
    }
    let adapter = Box::new(ProcDiscoveryAdapter::new(agent.config("300ms")).unwrap());
    let task = tokio::spawn(adapter.run(harness.adapter_context("proc-discovery")));
    let running = Running {
        harness,
        task,
        _dir: dir,
    };
    for (child, id) in [
        (&with_pid, "hooked-with-pid"),
        (&without_pid, "hooked-without-pid"),
    ] {
        let s = running
            .wait_for(child.id(), Duration::from_secs(5), |s| {
                s.len() == 1 && s[0].rss_bytes.is_some()
            })
            .await;
        assert_eq!(s[0].id.as_str(), id);
        assert_eq!(s[0].source, "claude-hooks", "the hook's row was kept");
    }
    // Further passes report both processes again: still one row each.
    running.passes(2).await;
    let all = running.harness.registry.get_all_sessions().await.unwrap();
    for id in ["hooked-with-pid", "hooked-without-pid"] {
        assert_eq!(
            all.iter().filter(|s| s.id.as_str() == id).count(),
            1,
            "{all:#?}"
        );
    }
    running.stop_after_killing([with_pid, without_pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_request_reports_real_counts() {
    let agent = Agent::new();
    let a = agent.spawn(agent.tmp.path(), "%2");
    let b = agent.spawn(agent.tmp.path(), "%3");
    // A long interval: only the start pass and the requested one run.
    let running = start(agent.config("1h")).await;
    // The start pass finds them (and proves the adapter listens for requests by now).
    for p in [a.id(), b.id()] {
        running
            .wait_for(p, Duration::from_secs(5), |s| s.len() == 1)
            .await;
    }
    let report = running
        .harness
        .control
        .rescan(Duration::from_secs(10))
        .await;
    assert_eq!(report.responders, 1);
    // Other agents of this user may run on the machine: at least ours.
    assert!(report.discovered >= 2, "{report:?}");
    // A process killed before the request is gone after it, without waiting for the interval.
    let gone = a.id();
    kill_and_reap(a);
    let report = running
        .harness
        .control
        .rescan(Duration::from_secs(10))
        .await;
    assert!(report.discovered >= 1, "{report:?}");
    assert!(running.sessions_of(gone).await.is_empty());
    running.stop_after_killing([b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pane_id_matches_tmux() {
    let agent = Agent::new();
    let tmux = TmuxServer::start("procdisc", &format!("exec {} 600", agent.exe.display()));
    let pane_id = tmux
        .run(&["display-message", "-p", "#{pane_id}"])
        .trim()
        .to_owned();
    let pane_pid: u32 = tmux
        .run(&["display-message", "-p", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    assert!(pane_id.starts_with('%'), "{pane_id:?}");
    let running = start(agent.config("300ms")).await;
    let s = running
        .wait_for(pane_pid, Duration::from_secs(5), |s| s.len() == 1)
        .await;
    assert_eq!(s[0].tmux_pane.as_deref(), Some(pane_id.as_str()));
    drop(tmux);
    running
        .wait_for(pane_pid, Duration::from_secs(5), <[_]>::is_empty)
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract() {
    let dir = tempfile::tempdir().unwrap();
    let reg = atm_core::plugin::find(atm_core::plugin::PluginKind::Adapter, "proc-discovery")
        .expect("registered");
    check_adapter_contract("proc-discovery", sample_table(reg), dir.path()).await;
}

#[tokio::test]
async fn a_session_file_is_seen_when_written_not_at_the_next_interval() {
    let agent = Agent::new();
    let child = agent.spawn(agent.tmp.path(), "%3");
    let pid = child.id();
    // An interval no test waits for: only the inotify watch can deliver the file's news.
    let running = start(agent.config("1h")).await;
    running
        .wait_for(pid, Duration::from_secs(10), |s| {
            s.len() == 1 && s[0].id.is_pending()
        })
        .await;
    agent.write_session_file(pid, "from-the-file");
    running
        .wait_for(pid, Duration::from_secs(10), |s| {
            s.len() == 1 && s[0].id.as_str() == "from-the-file" && s[0].state == AgentState::Idle
        })
        .await;
    running.stop().await;
    kill_and_reap(child);
}
