//! Test helpers for plugin authors (feature `testing`): a real registry with contexts around it,
//! the contract every plugin must keep, recorded fixtures, arbitrary JSON, waits on conditions,
//! a buffer to read logs from and a client program run with its input.
//!
//! These use the real registry actor, not a fake: a plugin's tests then exercise the same
//! identity and state rules as the daemon.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test helpers report violations by panicking, as assert! does

use std::path::Path;
use std::time::Duration;

pub mod fixtures;
pub mod ingest;
pub mod json;
pub mod lines;
pub mod log;
pub mod nats;
pub mod process;
pub mod text;
mod users;
pub mod wait;

pub use json::arb_json;
pub use lines::StdoutLines;
pub use log::LogCapture;
pub use process::{run_with_stdin, spawn_with_input};
pub use text::{arb_hostile_field, arb_hostile_session, arb_hostile_text};
pub use users::{OTHER_USER, assert_other_users_refused, exchange_as_nobody, other_user};

pub use wait::{
    wait_for, wait_until, wait_until_blocking, wait_until_blocking_within, wait_until_within,
};

use tokio_util::sync::CancellationToken;

use crate::control::ControlBus;
use crate::ingest::IngestHub;
use crate::plugin::{
    AdapterContext, ConfigError, InputAdapter, PluginEnv, PluginError, PluginFactory, PluginKind,
    PluginRegistration, SinkContext,
};
use crate::registry::{Registry, RegistryConfig, RegistryHandle};

/// A Claude Code session known by its id only (no process), created at `at` in state
/// `starting`: what sink and client tests start from before setting the fields they test.
pub fn claude_session(id: &str, at: chrono::DateTime<chrono::Utc>) -> crate::model::Session {
    crate::model::Session::new(
        claude_key(id),
        crate::model::SessionId::new(id),
        None,
        "test",
        at,
    )
}

/// A permission the session itself waits on: `tool`, and what it would do (`detail`); no
/// subagent asked, no suggestions.
pub fn permission_attention(tool: &str, detail: Option<&str>) -> crate::model::Attention {
    crate::model::Attention {
        reason: "permission".into(),
        tool: Some(tool.into()),
        detail: detail.map(str::to_owned),
        ..crate::model::Attention::default()
    }
}

/// A question `text` offering `options` (labels without descriptions).
pub fn question(text: &str, options: &[&str], multi_select: bool) -> crate::request::Question {
    crate::request::Question {
        question: text.to_owned(),
        header: None,
        options: options
            .iter()
            .map(|label| crate::request::QuestionOption {
                label: (*label).to_owned(),
                description: None,
            })
            .collect(),
        multi_select,
    }
}

/// Claude's `AskUserQuestion` as the translator gives it: one question, "Which database?",
/// under `header`, offering `options`, one answer.
pub fn database_question(header: Option<&str>, options: &[&str]) -> crate::event::AgentEvent {
    crate::event::AgentEvent::QuestionsAsked {
        tool: "AskUserQuestion".into(),
        detail: Some("Which database?".into()),
        questions: vec![crate::request::Question {
            header: header.map(str::to_owned),
            ..question("Which database?", options, false)
        }],
    }
}

/// The key of a Claude Code session known by its id only (no process).
pub fn claude_key(id: &str) -> crate::model::SessionKey {
    crate::model::SessionKey::Id {
        harness: crate::model::Harness::claude(),
        id: crate::model::SessionId::new(id),
    }
}

/// A registry plus the shared pieces a daemon would hand its plugins.
pub struct TestHarness {
    pub registry: RegistryHandle,
    pub ingest: IngestHub,
    pub control: ControlBus,
    pub env: PluginEnv,
    pub cancel: CancellationToken,
}

impl TestHarness {
    /// A registry without persistence or janitor; runtime and state dirs under `dir`.
    pub async fn new(dir: &Path) -> Self {
        Self::with_config(
            dir,
            RegistryConfig {
                cleanup_interval: Duration::ZERO,
                ..RegistryConfig::default()
            },
        )
        .await
    }

    pub async fn with_config(dir: &Path, config: RegistryConfig) -> Self {
        let runtime_dir = dir.join("run");
        let state_dir = dir.join("state");
        let _ = crate::paths::ensure_private_dir(&runtime_dir);
        let _ = std::fs::create_dir_all(&state_dir);
        let registry = Registry::start(config).await.handle;
        Self {
            registry,
            ingest: IngestHub::default(),
            control: ControlBus::new(),
            env: PluginEnv {
                runtime_dir,
                state_dir,
                rebind: Default::default(),
                ingest_stats: Default::default(),
            },
            cancel: CancellationToken::new(),
        }
    }

    pub fn adapter_context(&self, name: &str) -> AdapterContext {
        AdapterContext::new(
            name.to_owned(),
            self.registry.clone(),
            self.cancel.child_token(),
            self.ingest.clone(),
            self.control.clone(),
            self.env.clone(),
        )
    }

    /// Starts `adapter` as instance `name` and returns its task once it says it is serving
    /// ([`AdapterContext::mark_ready`]). Panics if it ends first, or is not serving within
    /// [`wait::DEADLINE`].
    pub async fn start_adapter(
        &self,
        name: &str,
        adapter: Box<dyn InputAdapter>,
    ) -> tokio::task::JoinHandle<Result<(), PluginError>> {
        let ctx = self.adapter_context(name);
        let ready = ctx.readiness();
        let mut task = tokio::spawn(adapter.run(ctx));
        tokio::select! {
            biased;
            () = ready.wait() => task,
            ended = &mut task => panic!("adapter {name} ended before it was serving: {ended:?}"),
            () = tokio::time::sleep(wait::DEADLINE) => panic!(
                "adapter {name} was not serving after {:?} (does it call ctx.mark_ready()?)",
                wait::DEADLINE
            ),
        }
    }

    /// Polls until `pred` holds for the registry's sessions; fails the test after
    /// [`ingest::WAIT`], naming `what` and showing the sessions there were.
    pub async fn wait_for_sessions(
        &self,
        what: &str,
        pred: impl Fn(&[std::sync::Arc<crate::model::Session>]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + ingest::WAIT;
        loop {
            let all = self.registry.snapshot().await.unwrap().sessions;
            if pred(&all) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never held; sessions: {all:#?}"
            );
            tokio::time::sleep(wait::POLL).await;
        }
    }

    /// The registry's sessions now, oldest first.
    pub async fn sessions(&self) -> Vec<std::sync::Arc<crate::model::Session>> {
        self.registry.get_all_sessions().await.unwrap()
    }

    /// Applies `event` from `source`, stamped now, as an adapter would; panics if the registry
    /// refuses it.
    pub async fn apply(&self, source: crate::event::EventSource, event: crate::event::AgentEvent) {
        self.registry
            .apply_event(crate::event::EventEnvelope::now(source, event))
            .await
            .unwrap();
    }

    /// Applies a usage update to `source`'s session; panics if the registry refuses it.
    pub async fn usage(&self, source: &crate::event::EventSource, update: crate::UsageUpdate) {
        self.registry
            .update_usage(source.clone(), update)
            .await
            .unwrap();
    }

    /// Waits until a sink counting into `stats` has taken every change the registry made so
    /// far and has failed at least `failures` times in all (connecting, a lost connection, a
    /// call): the witness that it kept working, and retrying, without what it serves.
    pub async fn wait_caught_up_failing(&self, stats: &crate::SinkStats, failures: u64) {
        let seq = self.registry.snapshot().await.unwrap().seq;
        wait_until(
            &format!("the sink to take change {seq} and fail {failures} time(s)"),
            || async { stats.applied_seq() >= seq && stats.failures() >= failures },
        )
        .await;
    }

    pub fn sink_context(&self, name: &str) -> SinkContext {
        SinkContext {
            name: name.to_owned(),
            registry: self.registry.clone(),
            cancel: self.cancel.child_token(),
            control: self.control.clone(),
            env: self.env.clone(),
        }
    }
}

/// Parses a `[[adapter]]`/`[[sink]]` sample block into the table a factory receives (without
/// `type` and `name`), checking that `type` names the plugin.
pub fn sample_table(reg: &PluginRegistration) -> toml::Value {
    let doc: toml::Table = match toml::from_str(reg.sample_config) {
        Ok(d) => d,
        Err(e) => panic!("sample config of {} does not parse: {e}", reg.name),
    };
    let key = reg.kind().table();
    let Some(toml::Value::Array(entries)) = doc.get(key) else {
        panic!("sample config of {} has no [[{key}]] block", reg.name);
    };
    let Some(toml::Value::Table(t)) = entries.first() else {
        panic!("sample config of {} has an empty [[{key}]]", reg.name);
    };
    assert_eq!(
        t.get("type").and_then(toml::Value::as_str),
        Some(reg.name),
        "sample's type must be the plugin name"
    );
    let mut t = t.clone();
    t.remove("type");
    t.remove("name");
    toml::Value::Table(t)
}

/// Parses `text` as one plugin's config table, as its factory receives it.
pub fn config_table(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => toml::Value::Table(t),
        Err(e) => panic!("test config does not parse: {e}\n{text}"),
    }
}

/// Checks that `parse` refuses every config of `cases` (TOML text) with an error naming the
/// key beside it.
pub fn assert_refused_with_key<T: std::fmt::Debug>(
    parse: impl Fn(&toml::Value) -> Result<T, ConfigError>,
    cases: &[(&str, &str)],
) {
    for (text, key) in cases {
        match parse(&config_table(text)) {
            Ok(parsed) => panic!("{text}: accepted as {parsed:?}"),
            Err(e) => assert_eq!(e.key.as_deref(), Some(*key), "{text}: {e}"),
        }
    }
}

/// The contract every plugin keeps, checked against a real registry:
/// - its sample config parses and builds;
/// - a config with an unknown key is refused with an error that names the key;
/// - started with `config`, it runs until cancelled and then stops within 2 s with `Ok`;
/// - while it runs, the registry keeps answering promptly (it never blocks the actor).
///
/// `config` is the table to run with (use [`sample_table`] unless the sample needs a path
/// rewritten for the test, e.g. a socket inside `dir`).
pub async fn check_plugin_contract(name: &str, kind: PluginKind, config: toml::Value, dir: &Path) {
    let Some(reg) = crate::plugin::find(kind, name) else {
        panic!("plugin {name} is not registered (is the crate linked?)");
    };
    let sample = sample_table(reg);
    let build = |cfg: &toml::Value| match reg.factory {
        PluginFactory::Adapter(f) => f(cfg).map(|_| ()),
        PluginFactory::Sink(f) => f(cfg).map(|_| ()),
    };
    if let Err(e) = build(&sample) {
        panic!("sample config of {name} does not build: {e}");
    }
    let mut bad = match sample.clone() {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    };
    bad.insert("no_such_key_xyz".into(), toml::Value::Boolean(true));
    match build(&toml::Value::Table(bad)) {
        Ok(()) => panic!("{name} accepted an unknown key"),
        Err(e) => assert!(
            e.to_string().contains("no_such_key_xyz"),
            "{name}'s error for an unknown key does not name it: {e}"
        ),
    }

    let harness = TestHarness::new(dir).await;
    let task = match reg.factory {
        PluginFactory::Adapter(f) => {
            let plugin = f(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ctx = harness.adapter_context(name);
            tokio::spawn(async move { plugin.run(ctx).await })
        }
        PluginFactory::Sink(f) => {
            let plugin = f(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ctx = harness.sink_context(name);
            tokio::spawn(async move { plugin.run(ctx).await })
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        let answered =
            tokio::time::timeout(Duration::from_millis(500), harness.registry.snapshot()).await;
        assert!(
            matches!(answered, Ok(Ok(_))),
            "registry blocked while {name} runs"
        );
    }
    assert!(
        !task.is_finished(),
        "{name} stopped before it was cancelled"
    );
    harness.cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(2), task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("{name} returned an error on cancel: {e}"),
        Ok(Err(e)) => panic!("{name} panicked: {e}"),
        Err(_) => panic!("{name} did not stop within 2 s of cancellation"),
    }
}

/// Convenience for adapters.
pub async fn check_adapter_contract(name: &str, config: toml::Value, dir: &Path) {
    check_plugin_contract(name, PluginKind::Adapter, config, dir).await;
}

/// Convenience for sinks.
pub async fn check_sink_contract(name: &str, config: toml::Value, dir: &Path) {
    check_plugin_contract(name, PluginKind::Sink, config, dir).await;
}

/// A private `dbus-daemon` for one test, killed on drop.
pub struct PrivateBus {
    /// The bus address, for `DBUS_SESSION_BUS_ADDRESS` or `zbus::connection::Builder::address`.
    pub address: String,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts `dbus-daemon --session --fork` on a socket in a fresh temp dir. Panics (the test
    /// fails) with a hint when `dbus-daemon` is not installed.
    pub fn start() -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new("dbus-daemon")
            .args([
                "--session",
                "--fork",
                "--print-address=1",
                "--print-pid=1",
                "--nopidfile",
            ])
            .arg(format!("--address=unix:tmpdir={}", dir.path().display()))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("dbus-daemon must be installed (apt-get install -y dbus)");
        assert!(out.status.success(), "dbus-daemon failed: {:?}", out.status);
        let mut lines = out.stdout.lines().map_while(Result::ok);
        let address = lines.next().expect("dbus-daemon printed no address");
        let pid = lines
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("dbus-daemon printed no pid");
        Self {
            address: address.trim().to_owned(),
            pid,
            _dir: dir,
        }
    }

    /// Kills the bus now (to test a bus that goes away).
    pub fn kill(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private tmux server (`tmux -L <name>`) for one test, killed on drop.
pub struct TmuxServer {
    pub name: String,
}

impl TmuxServer {
    /// Starts a detached server with one session running `command` (a shell command line).
    pub fn start(name_hint: &str, command: &str) -> Self {
        let name = format!("atm-test-{name_hint}-{}", std::process::id());
        let status = std::process::Command::new("tmux")
            .args([
                "-L",
                &name,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "40",
            ])
            .arg(command)
            .env_remove("TMUX")
            .status()
            .expect("tmux must be installed (apt-get install -y tmux)");
        assert!(status.success(), "tmux new-session failed");
        Self { name }
    }

    /// Runs `tmux -L <name> <args>` and returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.name)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's socket path (what `$TMUX` would name).
    pub fn socket_path(&self) -> String {
        self.run(&["display-message", "-p", "#{socket_path}"])
            .trim()
            .to_owned()
    }
}

/// A tmux server with real clients, for tests of what moves or marks them: an inner server
/// with sessions `0` (one window) and `work` (two windows, the second split into two panes), and
/// clients attached to session `0` from the terminals of an outer server: one from the outer
/// server's first session, and one more from each session named in `extra_clients`.
pub struct TmuxDesk {
    pub inner: TmuxServer,
    pub outer: TmuxServer,
}

impl TmuxDesk {
    /// Builds the desk and waits until every client is attached.
    pub fn start(name_hint: &str, extra_clients: &[&str]) -> Self {
        let inner = TmuxServer::start(&format!("{name_hint}-in"), "sleep 600");
        inner.run(&["new-session", "-d", "-s", "work", "sleep 600"]);
        inner.run(&["new-window", "-t", "work", "sleep 600"]);
        inner.run(&["split-window", "-t", "work:1", "sleep 600"]);
        let attach = format!("env -u TMUX tmux -L {} attach -t 0", inner.name);
        let outer = TmuxServer::start(&format!("{name_hint}-out"), &attach);
        for session in extra_clients {
            outer.run(&["new-session", "-d", "-s", session, &attach]);
        }
        let want = 1 + extra_clients.len();
        wait_until_blocking(&format!("{want} tmux clients attached"), || {
            inner.run(&["list-clients"]).lines().count() == want
        });
        Self { inner, outer }
    }

    /// The inner server's pane id (`%N`) of `target` (e.g. `work:1.0`).
    pub fn pane(&self, target: &str) -> String {
        self.inner
            .run(&["display-message", "-p", "-t", target, "#{pane_id}"])
            .trim()
            .to_owned()
    }
}

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.name, "kill-server"])
            .env_remove("TMUX")
            .status();
    }
}
