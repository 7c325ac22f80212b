//! `proc-discovery`: finds running AI coding agents in `/proc`, without hooks, and follows them.
//!
//! Sessions appear even when hooks were never installed or atmd started after the agents, and
//! disappear when their process dies, even without a `SessionEnd` (kill -9, a closed terminal).
//!
//! Shape: one task ([`ProcDiscoveryAdapter::run`]) waits for the interval tick, a rescan control
//! request, a change to a Claude session file ([`files`], inotify: Claude rewrites it on every
//! state change, hooks or not) or cancellation; each pass runs the synchronous [`scan::Scanner`] in `spawn_blocking`
//! (it reads `/proc` and never touches the registry), then hands what it found to the registry
//! with `register_discovered` (which merges with hook sessions and never downgrades a real id)
//! and calls `cleanup_stale` (which removes sessions whose process is gone, "process exited",
//! reading `/proc` off the actor). The scanner moves into the blocking task and back, so its
//! caches need no lock; passes never overlap, so a slow pass delays the next tick instead of
//! queueing work. Control requests wait in the bounded queue `ControlBus` gives every adapter
//! (a full queue skips the request: a pass is already coming).
//!
//! Modules: [`matcher`] (which processes are agents), [`scan`] (the pass and its caches),
//! `agent` (what a process is, and what the scanner keeps of an agent between passes),
//! [`procread`] (bounded `/proc` file readers), [`claude`] (Claude's `sessions/<pid>.json`),
//! [`files`] (watching those files),
//! [`git`] (branch and roots without running `git`).

mod agent;
pub mod claude;
pub mod files;
pub mod git;
pub mod matcher;
pub mod procread;
pub mod scan;

use std::path::PathBuf;
use std::time::Duration;

use atm_core::control::{ControlRequest, RescanReport};
use atm_core::plugin::parse_config;
use atm_core::tokio::sync::mpsc;
use atm_core::{
    AdapterContext, ConfigError, InputAdapter, PluginError, RegistryError, async_trait,
};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::matcher::{MatcherConfig, effective_matchers};
use crate::scan::{ScanSettings, Scanner};

/// Shortest accepted interval: below it the scan would cost more than it tells.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn default_interval() -> Duration {
    Duration::from_secs(2)
}

fn same_as_interval() -> Duration {
    Duration::ZERO
}

fn default_proc_root() -> String {
    atm_core::process::PROC_ROOT.to_owned()
}

fn yes() -> bool {
    true
}

/// The `[[adapter]]` table of `type = "proc-discovery"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcDiscoveryConfig {
    /// How often to scan and sample (default "2s"; 100 ms to 1 h, the lower bound checked by
    /// `scan_settings` with its own advice).
    #[serde(
        with = "atm_core::plugin::duration::Within::<0, 3_600_000>",
        default = "default_interval"
    )]
    pub interval: Duration,
    /// How often to scan while no agent runs (absent or "0s": the same as `interval`; at most
    /// 1 h, never less than `interval`). An idle daemon then wakes that rarely; a new agent is
    /// still seen at once by its first hook or its Claude session file, by the next scan
    /// otherwise.
    #[serde(
        with = "atm_core::plugin::duration::Within::<0, 3_600_000>",
        default = "same_as_interval"
    )]
    pub idle_interval: Duration,
    /// Where procfs is mounted (default "/proc"; tests point it at a fake tree).
    #[serde(default = "default_proc_root")]
    pub proc_root: String,
    /// Claude's config dir, for `sessions/<pid>.json` (default `$CLAUDE_CONFIG_DIR`, else
    /// `~/.claude`). A process's own `CLAUDE_CONFIG_DIR` wins.
    #[serde(default)]
    pub claude_config_dir: Option<String>,
    /// Keep the built-in matchers besides `matcher` entries (default true).
    #[serde(default = "yes")]
    pub default_matchers: bool,
    /// Extra matchers (`[[adapter.matcher]]`); one with a built-in harness replaces it.
    #[serde(default, rename = "matcher")]
    pub matchers: Vec<MatcherConfig>,
}

impl ProcDiscoveryConfig {
    /// Resolves defaults and checks the values, naming the key at fault.
    pub fn scan_settings(&self) -> Result<ScanSettings, ConfigError> {
        if self.interval < MIN_INTERVAL {
            return Err(ConfigError::for_key(
                "interval",
                format!(
                    "interval {:?} is too short; use at least \"100ms\" (the default is \"2s\")",
                    self.interval
                ),
            ));
        }
        if self.proc_root.trim().is_empty() {
            return Err(ConfigError::for_key(
                "proc_root",
                "proc_root is empty; remove it to use /proc",
            ));
        }
        for m in &self.matchers {
            m.validate()
                .map_err(|e| ConfigError::for_key("matcher", e))?;
        }
        let matchers = effective_matchers(&self.matchers, self.default_matchers);
        if matchers.is_empty() {
            return Err(ConfigError::for_key(
                "default_matchers",
                "no matchers: with default_matchers = false, add at least one [[adapter.matcher]]",
            ));
        }
        let claude_config_dir = match &self.claude_config_dir {
            Some(d) => atm_core::paths::expand(d),
            None => default_claude_config_dir().ok_or_else(|| {
                ConfigError::for_key(
                    "claude_config_dir",
                    "cannot find Claude's config dir: set HOME, CLAUDE_CONFIG_DIR or claude_config_dir",
                )
            })?,
        };
        Ok(ScanSettings {
            proc_root: atm_core::paths::expand(&self.proc_root),
            claude_config_dir,
            matchers,
            uid: atm_core::paths::uid(),
            adapter_name: "proc-discovery".to_owned(),
        })
    }
}

/// `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn default_claude_config_dir() -> Option<PathBuf> {
    std::env::var_os("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| atm_core::paths::home_dir().map(|h| h.join(".claude")))
}

/// The adapter: scans on start, every `interval` while agents run (every `idle_interval` while
/// none does), on a Claude session file change and on request.
pub struct ProcDiscoveryAdapter {
    interval: Duration,
    idle_interval: Duration,
    settings: ScanSettings,
}

impl ProcDiscoveryAdapter {
    pub fn new(config: ProcDiscoveryConfig) -> Result<Self, ConfigError> {
        let idle_interval = if config.idle_interval.is_zero() {
            config.interval
        } else {
            config.idle_interval
        };
        if idle_interval < config.interval {
            return Err(ConfigError::for_key(
                "idle_interval",
                format!(
                    "idle_interval {idle_interval:?} is shorter than interval {:?}; make it at least as long, or remove it",
                    config.interval
                ),
            ));
        }
        Ok(Self {
            interval: config.interval,
            idle_interval,
            settings: config.scan_settings()?,
        })
    }
}

atm_core::register_plugin! {
    adapter "proc-discovery",
    description: "Finds running agents (Claude Code, Codex, Gemini CLI, pi, opencode) in /proc; removes them when their process exits; samples CPU, memory and Git facts",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(ProcDiscoveryAdapter::new(parse_config(cfg)?)?)),
}

/// The next control request; never resolves once the bus is gone.
async fn next_request(rx: &mut Option<mpsc::Receiver<ControlRequest>>) -> ControlRequest {
    loop {
        match rx {
            Some(r) => match r.recv().await {
                Some(req) => return req,
                None => *rx = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

#[async_trait]
impl InputAdapter for ProcDiscoveryAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let mut settings = self.settings;
        settings.adapter_name.clone_from(&ctx.name);
        let mut control = Some(ctx.control_requests());
        let mut scanner: Option<Scanner> = None;
        // The first pass runs at once; then the pace follows whether agents run.
        let mut next_pass = atm_core::tokio::time::Instant::now();
        let mut files = match files::SessionFilesWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch Claude's session files (inotify); scanning on the interval only");
                None
            }
        };
        loop {
            let reply = atm_core::tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => return Ok(()),
                // Matched inside the branch: a refutable pattern here would silently disable it.
                req = next_request(&mut control) => match req {
                    ControlRequest::Rescan { reply } => Some(reply),
                },
                () = session_file_change(files.as_ref()) => None,
                // One wake-up per pass, not tokio's three for a far deadline (atm_core::timer).
                () = atm_core::timer::sleep_until(next_pass) => None,
            };
            let Some(report) = pass(&ctx, &mut scanner, &settings).await? else {
                return Ok(());
            };
            let pace = if report.discovered > 0 {
                self.interval
            } else {
                self.idle_interval
            };
            next_pass = atm_core::tokio::time::Instant::now() + pace;
            if let (Some(w), Some(sc)) = (files.as_mut(), scanner.as_ref()) {
                w.watch(sc.claude_session_dirs());
            }
            if let Some(reply) = reply {
                let _ = reply.send(report);
            }
        }
    }
}

/// A change to a watched Claude session file; never resolves without a watch.
async fn session_file_change(files: Option<&files::SessionFilesWatch>) {
    match files {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// One pass: scan off the runtime, register what was found, drop what died. `None` when
/// cancelled meanwhile.
async fn pass(
    ctx: &AdapterContext,
    scanner: &mut Option<Scanner>,
    settings: &ScanSettings,
) -> Result<Option<RescanReport>, PluginError> {
    let taken = scanner.take();
    let fresh = settings.clone();
    let job = atm_core::tokio::task::spawn_blocking(move || {
        let mut sc = taken.unwrap_or_else(|| Scanner::new(fresh));
        let out = sc.scan();
        (sc, out)
    });
    // A read of `/proc` can stall (a process stuck in the kernel holds its memory lock);
    // cancellation must not wait for it, so the blocking task is left to finish alone.
    let joined = atm_core::tokio::select! {
        () = ctx.cancel.cancelled() => return Ok(None),
        j = job => j,
    };
    let (sc, out) = match joined {
        Ok(v) => v,
        Err(e) => {
            // The caches went with the task; the next pass starts cold.
            warn!(error = %e, "proc-discovery scan task failed");
            return Ok(Some(RescanReport {
                failed: 1,
                ..RescanReport::default()
            }));
        }
    };
    *scanner = Some(sc);
    let outcome = out.map_err(|e| PluginError::Other(e.to_string()))?;
    debug!(
        agents = outcome.found.len(),
        failed = outcome.failed,
        vanished = outcome.vanished,
        "proc-discovery pass"
    );
    let mut report = RescanReport {
        discovered: 0,
        failed: outcome.failed,
        responders: 0,
    };
    let registry = async {
        for pid in outcome.new_launchers {
            // A launcher, or a fork of the agent before its exec: registered by an earlier pass, and
            // not a session.
            let id = atm_core::model::SessionId::pending(pid);
            if let Err(RegistryError::ChannelClosed) = ctx
                .registry
                .remove(
                    id.as_str(),
                    "not an agent: a launcher, or a fork that exec'd something else",
                )
                .await
            {
                return Err(RegistryError::ChannelClosed);
            }
        }
        for found in outcome.found {
            match ctx.registry.register_discovered(found).await {
                Ok(_) => report.discovered += 1,
                Err(RegistryError::ChannelClosed) => return Err(RegistryError::ChannelClosed),
                Err(e) => {
                    warn!(error = %e, "cannot register a discovered process");
                    report.failed += 1;
                }
            }
        }
        match ctx.registry.cleanup_stale().await {
            Ok(removed) if !removed.is_empty() => {
                debug!(
                    count = removed.len(),
                    "removed sessions whose process exited"
                )
            }
            Ok(_) => {}
            Err(RegistryError::ChannelClosed) => return Err(RegistryError::ChannelClosed),
            Err(e) => warn!(error = %e, "stale-session cleanup failed"),
        }
        Ok(())
    };
    let done = atm_core::tokio::select! {
        () = ctx.cancel.cancelled() => return Ok(None),
        r = registry => r,
    };
    match done {
        Ok(()) => Ok(Some(report)),
        Err(_) if ctx.cancel.is_cancelled() => Ok(None),
        Err(e) => Err(PluginError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> atm_core::toml::Value {
        atm_core::toml::Value::Table(atm_core::toml::from_str(s).unwrap())
    }

    #[test]
    fn defaults_and_overrides() {
        let c: ProcDiscoveryConfig = parse_config(&table("claude_config_dir = \"/x\"")).unwrap();
        assert_eq!(c.interval, Duration::from_secs(2));
        let s = c.scan_settings().unwrap();
        assert_eq!(s.proc_root, PathBuf::from("/proc"));
        assert_eq!(s.claude_config_dir, PathBuf::from("/x"));
        assert_eq!(s.matchers, matcher::default_matchers());

        let c: ProcDiscoveryConfig = parse_config(&table(
            "interval = \"500ms\"\nproc_root = \"/tmp/p\"\ndefault_matchers = false\n\
             [[matcher]]\nharness = \"aider\"\nnames = [\"aider\"]\n",
        ))
        .unwrap();
        let s = c.scan_settings().unwrap();
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(s.proc_root, PathBuf::from("/tmp/p"));
        assert_eq!(s.matchers.len(), 1);
        assert_eq!(s.matchers[0].harness, "aider");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("interval = \"1ms\"", "interval"),
            ("proc_root = \"\"", "proc_root"),
            ("default_matchers = false", "default_matchers"),
            ("[[matcher]]\nharness = \"x\"", "matcher"),
        ];
        for (cfg, key) in cases {
            let c: ProcDiscoveryConfig = parse_config(&table(cfg)).unwrap();
            let e = c.scan_settings().unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{cfg}: {e}");
        }
        let e =
            parse_config::<ProcDiscoveryConfig>(&table("[[matcher]]\nharness = \"x\"\nnmes = []"))
                .unwrap_err();
        assert!(e.message.contains("nmes"), "{e}");
    }

    #[test]
    fn the_idle_pace_defaults_to_the_interval_and_is_never_faster() {
        let adapter = |cfg: &str| {
            let mut c: ProcDiscoveryConfig = parse_config(&table(cfg)).unwrap();
            c.claude_config_dir = Some("/x".into());
            ProcDiscoveryAdapter::new(c)
        };
        let a = adapter("interval = \"500ms\"").unwrap();
        assert_eq!(a.idle_interval, Duration::from_millis(500));
        let a = adapter("interval = \"500ms\"\nidle_interval = \"0s\"").unwrap();
        assert_eq!(a.idle_interval, Duration::from_millis(500));
        let a = adapter("idle_interval = \"10s\"").unwrap();
        assert_eq!(
            (a.interval, a.idle_interval),
            (Duration::from_secs(2), Duration::from_secs(10))
        );
        let Err(e) = adapter("interval = \"5s\"\nidle_interval = \"1s\"") else {
            panic!("an idle pace faster than the interval must be refused");
        };
        assert_eq!(e.key.as_deref(), Some("idle_interval"), "{e}");
        assert!(parse_config::<ProcDiscoveryConfig>(&table("idle_interval = \"2h\"")).is_err());
    }
}
