//! The tmux-marks sink against a real registry and real `tmux -L` servers: an inner server with
//! the agents' panes, and an outer one whose pane runs a real `tmux attach` client on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use atm_core::testing::{TestHarness, TmuxDesk, check_sink_contract, sample_table, wait_until};
use atm_core::{AgentEvent, EventSource, Harness, OutputSink, SessionId};
use sink_tmux_marks::{TmuxMarksConfig, TmuxMarksSink};

#[tokio::test]
async fn the_sample_builds_and_the_sink_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let reg = atm_core::plugin::find(atm_core::plugin::PluginKind::Sink, "tmux-marks").unwrap();
    // The contract run talks to a server that does not exist, never to the user's own tmux.
    let mut config = match sample_table(reg) {
        atm_core::toml::Value::Table(t) => t,
        other => panic!("sample is not a table: {other}"),
    };
    config.insert(
        "tmux_socket_name".into(),
        format!("atm-marks-absent-{}", std::process::id()).into(),
    );
    check_sink_contract(
        "tmux-marks",
        atm_core::toml::Value::Table(config),
        dir.path(),
    )
    .await;
}

#[test]
fn both_socket_keys_at_once_are_refused() {
    let t: atm_core::toml::Value =
        atm_core::toml::from_str("tmux_socket = \"/x\"\ntmux_socket_name = \"y\"").unwrap();
    let e = TmuxMarksConfig::from_toml(&t).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("tmux_socket_name"));
}

/// The window flag a status line would show for the pane's window.
fn window_flag(desk: &TmuxDesk, pane: &str) -> String {
    let out = desk
        .inner
        .run(&["display-message", "-p", "-t", pane, "#{?@atm_waiting,!,-}"]);
    out.trim().to_owned()
}

async fn wait_flag(desk: &TmuxDesk, pane: &str, flag: &str, what: &str) {
    wait_until(what, || async { window_flag(desk, pane) == flag }).await;
}

struct Running {
    harness: TestHarness,
    sink: tokio::task::JoinHandle<Result<(), atm_core::PluginError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(desk: &TmuxDesk) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        let config = TmuxMarksConfig {
            tmux_socket: None,
            tmux_socket_name: Some(desk.inner.name.clone()),
        };
        let ctx = harness.sink_context("tmux-marks");
        let sink = tokio::spawn(Box::new(TmuxMarksSink::new(config)).run(ctx));
        Running {
            harness,
            sink,
            _dir: dir,
        }
    }

    async fn send(&self, id: &str, pane: &str, event: AgentEvent) {
        let mut source = EventSource::new(Harness::claude(), SessionId::new(id), "test");
        source.tmux_pane = Some(pane.to_owned());
        self.harness.apply(source, event).await;
    }

    async fn stop(self) {
        self.harness.cancel.cancel();
        let done = tokio::time::timeout(Duration::from_secs(3), self.sink).await;
        done.expect("the sink stops when cancelled")
            .unwrap()
            .unwrap();
    }
}

fn permission() -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: "Bash".into(),
        detail: Some("make".into()),
        suggestions: Vec::new(),
    }
}

fn prompt() -> AgentEvent {
    AgentEvent::PromptSubmitted {
        prompt: Some("go".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_agent_flags_its_window_until_the_user_looks_or_it_stops_waiting() {
    let desk = TmuxDesk::start("marks", &[]);
    let left = desk.pane("work:1.0");
    let right = desk.pane("work:1.1");
    let other = desk.pane("work:0.0");
    let run = Running::start(&desk).await;

    // Two agents wait in the two panes of one window: flagged, and a user hook stays intact.
    desk.inner.run(&[
        "set-hook",
        "-g",
        "after-select-pane[0]",
        "set -g @user_hook 1",
    ]);
    run.send("left", &left, permission()).await;
    run.send("right", &right, permission()).await;
    wait_flag(&desk, &left, "!", "the window flagged").await;
    assert_eq!(window_flag(&desk, &other), "-", "other windows stay clear");

    // Looking at one pane clears it; the window stays flagged for the other.
    desk.inner.run(&["switch-client", "-t", &left]);
    wait_until("the left pane cleared", || async {
        desk.inner
            .run(&["show-options", "-pqv", "-t", &left, "@atm_waiting_pane"])
            .trim()
            .is_empty()
    })
    .await;
    assert_eq!(window_flag(&desk, &left), "!", "the right pane still waits");
    desk.inner.run(&["select-pane", "-t", &right]);
    wait_flag(&desk, &left, "-", "both panes seen").await;
    let user_hook = desk.inner.run(&["show-hooks", "-g", "after-select-pane"]);
    assert!(user_hook.contains("@user_hook"), "{user_hook}");

    // A new wait flags again (more changes within one wait do not: see plan.rs).
    desk.inner.run(&["select-window", "-t", &other]);
    run.send("left", &left, prompt()).await;
    run.send("left", &left, permission()).await;
    wait_flag(&desk, &left, "!", "a new wait flags again").await;

    // The agent stops waiting: the flag goes, without the user looking.
    run.send("left", &left, prompt()).await;
    run.send("right", &right, prompt()).await;
    wait_flag(&desk, &left, "-", "the agents work again").await;

    // An agent that waits in the pane the user is looking at is not flagged at all.
    run.send("other", &other, permission()).await;
    run.send("left", &left, permission()).await;
    wait_flag(&desk, &left, "!", "the unseen one flagged").await;
    assert_eq!(window_flag(&desk, &other), "-");

    // Stopping takes marks and hooks away.
    run.stop().await;
    assert_eq!(window_flag(&desk, &left), "-");
    let hooks = desk.inner.run(&["show-hooks", "-g", "after-select-pane"]);
    assert!(!hooks.contains("atm_waiting"), "{hooks}");
}
