//! The daemon's life: claim the runtime and state dirs (and keep the runtime dir in place,
//! [`crate::instance`]), start the registry and the plugins, serve until a
//! signal, reload on SIGHUP, and shut down in order.
//!
//! Shutdown is a tree of cancellation tokens with a task tracker per branch
//! ([`TaskGroup`]): inputs stop first (no new events), then the registry drains its queue and
//! writes its snapshot, then sinks see the change stream end and flush; everything under a
//! 2-second deadline. Every task a plugin runs is on its branch's tracker, so "stopped" means
//! every task ended, not just the first.
//!
//! The registry actor is the one part nothing can replace: if its task ends while the daemon
//! runs (a panic), the daemon stops its plugins and returns an error, so `atmd` exits non-zero
//! and its service manager restarts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use atm_core::control::ControlBus;
use atm_core::ingest::{IngestHub, IngestLimits};
use atm_core::liveness::ExitWatcher;
use atm_core::plugin::{PluginEnv, PluginKind};
use atm_core::registry::{Registry, RegistryConfig};
use atm_core::unix_socket::RebindSignal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{self, Config, ConfigSource, PluginEntry};
use crate::instance::RuntimeDirKeeper;
use crate::supervisor::{RunningPlugin, Shared, TaskGroup};

/// The whole shutdown must finish within this.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(1800);

/// `$XDG_STATE_HOME/atm/atmd.pid`, for the published `atm` clients only: before connecting they
/// check that this file names a live process, and otherwise try to start a daemon themselves.
/// It is not our single-instance guard (that is the instance lock, [`crate::instance`]); it is removed on exit
/// if it still names us.
struct CompatPidFile {
    path: PathBuf,
}

impl CompatPidFile {
    fn write(state_dir: &Path) -> Option<Self> {
        let path = state_dir.join("atmd.pid");
        match std::fs::write(&path, format!("{}\n", std::process::id())) {
            Ok(()) => Some(Self { path }),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot write the pid file that atm clients read");
                None
            }
        }
    }
}

impl Drop for CompatPidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|c| c.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn runtime_dir(config: &Config) -> PathBuf {
    config
        .daemon
        .runtime_dir
        .as_deref()
        .map(atm_core::paths::expand)
        .unwrap_or_else(atm_core::paths::default_runtime_dir)
}

pub fn state_dir(config: &Config) -> anyhow::Result<PathBuf> {
    match config.daemon.state_dir.as_deref() {
        Some(d) => Ok(atm_core::paths::expand(d)),
        None => Ok(atm_core::paths::default_state_dir()?),
    }
}

struct PluginSet {
    running: Vec<RunningPlugin>,
}

impl PluginSet {
    fn start(
        entries: &[PluginEntry],
        shared: &Shared,
        inputs: &TaskGroup,
        outputs: &TaskGroup,
    ) -> Self {
        let running = entries
            .iter()
            .map(|e| {
                info!(plugin = %e.instance, kind = e.kind.table(), "starting plugin");
                let parent = match e.kind {
                    PluginKind::Adapter => inputs,
                    PluginKind::Sink => outputs,
                };
                RunningPlugin::spawn(e.clone(), shared.clone(), parent)
            })
            .collect();
        Self { running }
    }

    /// Applies a new plugin list: unchanged instances keep running, changed and removed ones
    /// stop, new ones start.
    async fn reload(
        &mut self,
        entries: &[PluginEntry],
        shared: &Shared,
        inputs: &TaskGroup,
        outputs: &TaskGroup,
    ) {
        let mut keep = Vec::new();
        let mut stop = Vec::new();
        for p in self.running.drain(..) {
            if entries.contains(&p.entry) {
                keep.push(p);
            } else {
                stop.push(p);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for p in stop {
            info!(plugin = %p.entry.instance, "stopping plugin (removed or changed)");
            p.stop(deadline).await;
        }
        let new: Vec<PluginEntry> = entries
            .iter()
            .filter(|e| !keep.iter().any(|k| k.entry == **e))
            .cloned()
            .collect();
        let started = PluginSet::start(&new, shared, inputs, outputs);
        info!(
            kept = keep.len(),
            started = started.running.len(),
            "configuration reloaded"
        );
        keep.extend(started.running);
        self.running = keep;
    }

    fn take(&mut self, kind: PluginKind) -> Vec<RunningPlugin> {
        let (taken, rest): (Vec<_>, Vec<_>) =
            self.running.drain(..).partition(|p| p.entry.kind == kind);
        self.running = rest;
        taken
    }
}

/// Raises the soft open-file limit to the hard limit: every client, hook and subscriber holds a
/// descriptor, and the common soft default (1024) would make accept fail long before the
/// configured client limits.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!(error = %e, "cannot raise the open-file limit");
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    atm_core::plugin::check_unique()?;
    raise_fd_limit();
    let runtime = runtime_dir(&config);
    let state = state_dir(&config)?;
    let lock = crate::instance::claim(&runtime, &state)?;
    let pid_file = CompatPidFile::write(&state);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source,
        runtime_dir = %runtime.display(),
        state_dir = %state.display(),
        "atmd starting"
    );

    // Before any socket exists: a client that sees one may signal at once, and a signal that
    // came before the handlers would kill the daemon without its orderly stop.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let d = &config.daemon_durations;
    let inputs = TaskGroup::default();
    let outputs = TaskGroup::default();
    // The janitor removes sessions, like an input: it stops with the inputs.
    let registry = Registry::start_in(
        RegistryConfig {
            max_sessions: config
                .daemon
                .max_sessions
                .unwrap_or(RegistryConfig::DEFAULT_MAX_SESSIONS),
            silence_expiry: d.session_expiry,
            cleanup_interval: d.cleanup_interval,
            snapshot_debounce: d.snapshot_debounce,
            snapshot_path: Some(state.join(atm_core::paths::SNAPSHOT_FILE)),
            host: config
                .daemon
                .host
                .as_deref()
                .and_then(|h| atm_core::HostId::parse(h).ok())
                .unwrap_or_else(atm_core::HostId::local),
            ..RegistryConfig::default()
        },
        &inputs.cancel,
    )
    .await;
    if !d.cleanup_interval.is_zero() {
        // Exits are seen by pidfd at once; the janitor's pass is the fallback.
        let watcher = ExitWatcher::new(registry.handle.clone(), inputs.cancel.child_token());
        inputs.tasks.spawn(watcher.run());
    }
    let rebind = RebindSignal::default();
    let runtime_dir = lock.dir.clone();
    let keeper = RuntimeDirKeeper::start(lock, rebind.clone());
    let shared = Shared {
        registry: registry.handle.clone(),
        ingest: IngestHub::new(IngestLimits {
            max_connections: config
                .daemon
                .max_ingest_connections
                .unwrap_or(IngestLimits::DEFAULT_MAX_CONNECTIONS),
            idle_timeout: d.ingest_idle_timeout,
            ..IngestLimits::default()
        })
        .with_rebind(rebind.subscribe()),
        control: ControlBus::new(),
        env: PluginEnv {
            runtime_dir,
            state_dir: state.clone(),
            rebind: rebind.subscribe(),
            ingest_stats: Default::default(),
        },
    };
    // Sinks first, so nothing an adapter reports at start-up is missed by a sink.
    let (sinks, adapters): (Vec<_>, Vec<_>) = config
        .plugins
        .iter()
        .cloned()
        .partition(|p| p.kind == PluginKind::Sink);
    let mut plugins = PluginSet::start(&sinks, &shared, &inputs, &outputs);
    plugins
        .running
        .extend(PluginSet::start(&adapters, &shared, &inputs, &outputs).running);

    let mut current = config;
    let Registry {
        handle,
        task: mut registry_task,
        janitor,
    } = registry;
    let mut registry_died = None;
    loop {
        tokio::select! {
            joined = &mut registry_task => {
                let why = match joined {
                    Err(e) if e.is_panic() => "panicked",
                    _ => "stopped",
                };
                error!("the registry {why} while atmd was running; stopping so that atmd is restarted");
                registry_died = Some(why);
                break;
            }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                info!(config = %current.source, "SIGHUP: reloading configuration");
                keeper.check_now();
                let source = current.source.clone();
                match tokio::task::spawn_blocking(move || config::load(&source)).await {
                    Ok(Ok(new)) => {
                        if new.daemon != current.daemon {
                            warn!("changes to [daemon] take effect when atmd restarts");
                        }
                        plugins.reload(&new.plugins, &shared, &inputs, &outputs).await;
                        current = new;
                    }
                    Ok(Err(e)) => error!(error = %e, "new configuration rejected; keeping the running one"),
                    Err(e) => error!(error = %e, "configuration reload failed; keeping the running one"),
                }
            }
        }
    }

    let deadline = Instant::now() + SHUTDOWN_BUDGET;
    // 0. The sockets removed while stopping are not to be recreated; the lock is released last.
    let lock = keeper.stop().await;
    // 1. Inputs stop: no new events.
    let input_deadline = Instant::now() + Duration::from_millis(600);
    for p in plugins.take(PluginKind::Adapter) {
        p.stop(input_deadline).await;
    }
    if !inputs.stop(input_deadline).await {
        warn!("some adapter tasks did not stop in time");
    }
    // 2. The registry drains what was queued and writes its snapshot.
    janitor.stop().await;
    if registry_died.is_none()
        && tokio::time::timeout_at(deadline, handle.shutdown())
            .await
            .is_err()
    {
        warn!("registry did not drain in time");
    }
    drop(handle);
    drop(shared);
    if registry_died.is_none() {
        let _ = tokio::time::timeout_at(deadline, registry_task).await;
    }
    // 3. Sinks have seen the change stream end and flush; whatever is still running after a
    //    moment is cancelled.
    let sinks = plugins.take(PluginKind::Sink);
    let flush_deadline = Instant::now() + Duration::from_millis(200);
    if !outputs.wait(flush_deadline).await {
        debug!("sinks still flushing; cancelling them");
    }
    for p in sinks {
        p.stop(deadline).await;
    }
    if !outputs.stop(deadline).await {
        warn!("some sink tasks did not stop in time");
    }
    info!("atmd stopped");
    drop(pid_file);
    drop(lock);
    match registry_died {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(
            "the session registry {why} unexpectedly; atmd stopped (see the log above for the cause)"
        )),
    }
}

/// Validates a config source: parse and build every plugin, without starting anything.
pub fn check(source: &ConfigSource) -> Result<Config, config::ConfigError> {
    config::load(source)
}
