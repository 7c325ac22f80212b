//! What the sink's tests share: a test notification server on a private `dbus-daemon` that
//! records every call and can be told to fail, hang or emit signals, and the sink running on a
//! real registry.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // each test binary uses some

use std::time::Duration;

use atm_core::chrono::Utc;
use atm_core::testing::{PrivateBus, TestHarness, wait_until};
use atm_core::{
    AgentEvent, EventEnvelope, EventSource, Harness, OutputSink, SessionId, UsageUpdate,
};
pub use sink_notify::testing::*;
use sink_notify::{NotifyConfig, NotifySink, NotifyStats};
use tokio::task::JoinHandle;

/// A registry with the sink running on it.
pub struct Setup {
    pub harness: TestHarness,
    pub sink: JoinHandle<Result<(), atm_core::PluginError>>,
    pub stats: NotifyStats,
    pub _dir: tempfile::TempDir,
}

/// A private bus with the test server on it and the sink, `extra` added to its config.
pub async fn with_server(extra: &str) -> (PrivateBus, Server, Setup) {
    let bus = PrivateBus::start();
    let server = Server::start(&bus).await;
    let setup = Setup::start(&bus, extra).await;
    (bus, server, setup)
}

impl Setup {
    pub async fn start(bus: &PrivateBus, extra: &str) -> Self {
        // The sink subscribes to the registry before its deliverer connects: a new name on the
        // bus means the first event will be seen.
        let watcher = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let names = zbus::fdo::DBusProxy::new(&watcher).await.unwrap();
        let before = names.list_names().await.unwrap().len();
        let setup = Self::spawn(&bus.address, extra).await;
        wait_until("the sink to subscribe and connect to the bus", || async {
            names.list_names().await.unwrap().len() > before
        })
        .await;
        setup
    }

    /// The sink on a new registry, its bus at `address` (which need not be there).
    pub async fn spawn(address: &str, extra: &str) -> Self {
        // `RUST_LOG=sink_notify=debug` shows what the sink decided when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let harness = TestHarness::new(dir.path()).await;
        // A tmux server that does not exist unless a test names its own: no quiet rule hits.
        let base = format!(
            "address = {address:?}\nmin_turn = \"200ms\"\nrate_limit = \"0s\"\ngrace = \"0s\"\n\
             desktop_entry = \"atm-test\"\ntmux_socket_name = \"atm-notify-absent-{}\"",
            std::process::id()
        );
        let mut table: atm_core::toml::Table = atm_core::toml::from_str(&base).unwrap();
        // A test's `extra` keys override the base ones.
        let extra: atm_core::toml::Table = atm_core::toml::from_str(extra).unwrap();
        table.extend(extra);
        // What the registered factory does, keeping a handle on the sink's counters.
        let sink =
            NotifySink::new(NotifyConfig::from_toml(&atm_core::toml::Value::Table(table)).unwrap());
        let stats = sink.stats();
        let sink: Box<dyn OutputSink> = Box::new(sink);
        let ctx = harness.sink_context("notify");
        let sink = tokio::spawn(async move { sink.run(ctx).await });
        Self {
            harness,
            sink,
            stats,
            _dir: dir,
        }
    }

    /// Session `id` (in no pane) asks permission to run `ls`, now; gives its source.
    pub async fn asks(&self, id: &str) -> EventSource {
        let src = source(id, None);
        self.now(&src, permission("Bash", "ls")).await;
        src
    }

    /// The registry answers within 500 ms: the sink never holds it up.
    pub async fn registry_answers_promptly(&self) {
        tokio::time::timeout(Duration::from_millis(500), self.harness.registry.snapshot())
            .await
            .unwrap()
            .unwrap();
    }

    pub async fn usage(&self, src: &EventSource, update: UsageUpdate) {
        self.harness.usage(src, update).await;
    }

    /// Waits until the sink has planned from every change the registry made so far and has
    /// failed `failures` times in all (connecting, a lost connection, a server call): the
    /// witness that it went on without a bus or server. It must still be running.
    pub async fn wait_caught_up_failing(&self, failures: u64) {
        let stats = self.stats.sink();
        self.harness.wait_caught_up_failing(stats, failures).await;
        assert!(!self.sink.is_finished(), "the sink stopped on its own");
    }

    pub async fn send(
        &self,
        src: &EventSource,
        event: AgentEvent,
        at: atm_core::chrono::DateTime<Utc>,
    ) {
        self.harness
            .registry
            .apply_event(EventEnvelope {
                source: src.clone(),
                event,
                at,
            })
            .await
            .unwrap();
    }

    pub async fn now(&self, src: &EventSource, event: AgentEvent) {
        self.send(src, event, Utc::now()).await;
    }

    pub async fn stop(self) {
        assert!(!self.sink.is_finished(), "the sink stopped on its own");
        self.harness.cancel.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(3), self.sink)
            .await
            .expect("sink stops when cancelled");
        stopped.unwrap().unwrap();
    }
}

pub fn source(id: &str, pane: Option<&str>) -> EventSource {
    let mut s = EventSource::new(Harness::claude(), SessionId::new(id), "test");
    s.cwd = Some(format!("/home/u/src/{id}-repo"));
    s.tmux_pane = pane.map(str::to_owned);
    s
}

pub fn permission(tool: &str, detail: &str) -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: tool.into(),
        detail: Some(detail.into()),
        suggestions: Vec::new(),
    }
}

pub fn prompt() -> AgentEvent {
    AgentEvent::PromptSubmitted {
        prompt: Some("fix the tests".into()),
    }
}

pub fn input(reason: &str, tool: Option<&str>, detail: Option<&str>) -> AgentEvent {
    AgentEvent::InputRequested {
        reason: reason.into(),
        tool: tool.map(Into::into),
        detail: detail.map(Into::into),
    }
}

pub fn tool() -> AgentEvent {
    AgentEvent::ToolStarted {
        tool: "Bash".into(),
        detail: None,
    }
}
