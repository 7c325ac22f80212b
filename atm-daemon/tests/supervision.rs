//! Supervision with real plugins registered only in this test binary: a panic is a logged
//! failure followed by a restart, a plugin's own tasks are stopped and awaited with it, the
//! built-in plugins are all there next to extra ones, and the daemon stops with an error when
//! its registry dies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::time::Duration;

use atm_core::plugin::{AdapterContext, PluginError, PluginKind};
use atm_core::testing::{LogCapture, TestHarness, wait_until};
use atm_core::{InputAdapter, async_trait};
use atm_daemon::config::{ConfigSource, PluginEntry};
use atm_daemon::supervisor::{RunningPlugin, Shared, TaskGroup};
use tempfile::TempDir;
use tokio::time::Instant;

/// Panics on its first run, then serves until cancelled.
struct PanicsOnce;
static PANICS_ONCE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[async_trait]
impl InputAdapter for PanicsOnce {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        if PANICS_ONCE_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("boom in the test plugin");
        }
        ctx.mark_ready();
        ctx.cancel.cancelled().await;
        Ok(())
    }
}

atm_core::register_plugin! {
    adapter "test-panics-once",
    description: "test: panics on its first run",
    sample_config: "[[adapter]]\ntype = \"test-panics-once\"\n",
    factory: |_| Ok(Box::new(PanicsOnce)),
}

/// Starts a task of its own that outlives `run` by a little when cancelled.
struct SpawnsTasks;
static CHILD_STARTED: AtomicBool = AtomicBool::new(false);
static CHILD_FINISHED: AtomicBool = AtomicBool::new(false);

#[async_trait]
impl InputAdapter for SpawnsTasks {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let cancel = ctx.cancel.clone();
        ctx.spawn(async move {
            CHILD_STARTED.store(true, Ordering::SeqCst);
            cancel.cancelled().await;
            // Still working after `run` returned: shutdown must wait for this.
            tokio::time::sleep(Duration::from_millis(50)).await;
            CHILD_FINISHED.store(true, Ordering::SeqCst);
        });
        ctx.mark_ready();
        ctx.cancel.cancelled().await;
        Ok(())
    }
}

atm_core::register_plugin! {
    adapter "test-spawns-tasks",
    description: "test: runs a task of its own",
    sample_config: "[[adapter]]\ntype = \"test-spawns-tasks\"\n",
    factory: |_| Ok(Box::new(SpawnsTasks)),
}

/// Stops the registry, as a registry that panicked would be stopped.
struct StopsTheRegistry;

#[async_trait]
impl InputAdapter for StopsTheRegistry {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let _ = ctx.registry.shutdown().await;
        ctx.cancel.cancelled().await;
        Ok(())
    }
}

atm_core::register_plugin! {
    adapter "test-stops-registry",
    description: "test: stops the registry actor",
    sample_config: "[[adapter]]\ntype = \"test-stops-registry\"\n",
    factory: |_| Ok(Box::new(StopsTheRegistry)),
}

fn entry(plugin: &str, instance: &str) -> PluginEntry {
    PluginEntry {
        kind: PluginKind::Adapter,
        plugin: plugin.to_owned(),
        instance: instance.to_owned(),
        settings: atm_core::toml::Value::Table(Default::default()),
    }
}

fn shared(h: &TestHarness) -> Shared {
    Shared {
        registry: h.registry.clone(),
        ingest: h.ingest.clone(),
        control: h.control.clone(),
        env: h.env.clone(),
    }
}

/// Captures log lines into `log` while the returned guard lives (this thread; tokio tests run
/// on it).
fn capture(log: &LogCapture) -> tracing::subscriber::DefaultGuard {
    let log = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || log.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_default(subscriber)
}

/// Plugin `plugin` running as `instance` under the supervisor, in a new group on a fresh harness (with
/// the temp dir and the harness it needs kept).
async fn supervised(
    plugin: &str,
    instance: &str,
) -> (TempDir, TestHarness, TaskGroup, RunningPlugin) {
    let dir = tempfile::tempdir().unwrap();
    let harness = TestHarness::new(dir.path()).await;
    let group = TaskGroup::default();
    let plugin = RunningPlugin::spawn(entry(plugin, instance), shared(&harness), &group);
    (dir, harness, group, plugin)
}

#[tokio::test]
async fn a_panic_is_a_logged_failure_and_the_plugin_restarts() {
    let log = LogCapture::default();
    let _guard = capture(&log);
    let (_dir, _harness, group, plugin) = supervised("test-panics-once", "panicky").await;
    wait_until("the plugin to run a second time", || async {
        PANICS_ONCE_RUNS.load(Ordering::SeqCst) >= 2
    })
    .await;
    let text = log.text();
    let failure = text
        .lines()
        .find(|l| l.contains("plugin failed; restarting"))
        .unwrap_or_else(|| panic!("no failure logged: {text}"));
    assert!(failure.contains("panicky"), "{failure}");
    assert!(
        failure.contains("panicked: boom in the test plugin"),
        "{failure}"
    );
    assert!(
        !plugin.task.is_finished(),
        "the supervisor must outlive the panic"
    );
    plugin.stop(Instant::now() + Duration::from_secs(5)).await;
    assert!(group.stop(Instant::now() + Duration::from_secs(5)).await);
}

#[tokio::test]
async fn stopping_a_group_waits_for_the_tasks_its_plugins_started() {
    let (_dir, _harness, group, _plugin) = supervised("test-spawns-tasks", "spawner").await;
    wait_until("the plugin's task to start", || async {
        CHILD_STARTED.load(Ordering::SeqCst)
    })
    .await;
    assert!(!CHILD_FINISHED.load(Ordering::SeqCst));
    assert!(group.stop(Instant::now() + Duration::from_secs(5)).await);
    assert!(
        CHILD_FINISHED.load(Ordering::SeqCst),
        "the group stopped before the plugin's own task ended"
    );
}

#[test]
fn the_built_in_plugins_are_registered_next_to_extra_ones() {
    atm_daemon::link_plugins();
    let names: Vec<String> = atm_core::plugin::registered()
        .into_iter()
        .map(|p| format!("{}:{}", p.kind().table(), p.name))
        .collect();
    for name in atm_daemon::built_in_plugins()
        .into_iter()
        .chain(["adapter:test-panics-once"])
    {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    assert_eq!(atm_core::plugin::check_unique(), Ok(()));
}

#[tokio::test]
async fn the_daemon_stops_with_an_error_when_the_registry_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    let text = format!(
        "[daemon]\nruntime_dir = {:?}\nstate_dir = {:?}\n\n[[adapter]]\ntype = \"test-stops-registry\"\n",
        dir.path().join("run").display().to_string(),
        dir.path().join("state").display().to_string(),
    );
    std::fs::write(&path, &text).unwrap();
    let config = atm_daemon::config::parse(&text, ConfigSource::File(path)).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), atm_daemon::daemon::run(config))
        .await
        .expect("the daemon kept running without its registry");
    let err = result.expect_err("the daemon must fail when its registry dies");
    assert!(err.to_string().contains("registry"), "{err:#}");
}
