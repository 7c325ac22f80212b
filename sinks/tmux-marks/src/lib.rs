//! `tmux-marks`: flags the tmux windows whose agent needs its user, until the user looks.
//!
//! A status line shows the flag with the window option `@atm_waiting`
//! (`#{?@atm_waiting,!,}` in `window-status-format`); the pane itself carries
//! `@atm_waiting_pane`, so a window with two waiting panes stays flagged until both were seen.
//!
//! Who clears a mark, and why so:
//! - **the agent stops waiting**: this sink, from the registry change ([`plan::MarkPlanner`]);
//! - **the user looks at the pane**: tmux itself, through hooks this sink installs
//!   (`after-select-pane`, `after-select-window`, `session-window-changed`,
//!   `client-session-changed`, `client-attached`), which clear the mark of the pane a client now
//!   shows. Hooks fire inside tmux the moment the user moves, with no polling and no round
//!   trip through atmd; asking tmux for `pane_active` instead would mean polling. The hooks sit
//!   at array index [`HOOK_INDEX`], so a user's own hooks on the same events are untouched, and
//!   are removed when the sink stops.
//!
//! A pane the user is already looking at when its agent starts to wait is not marked at all.
//! Every tmux call is bounded ([`atm_core::tmux::TMUX_TIMEOUT`]) and a failure (no server, a
//! closed pane) is logged and skipped: marks are a convenience and never stop the sink.

pub mod plan;

use std::time::Duration;

use atm_core::plugin::{ConfigError, OutputSink, PluginError, SinkContext};
use atm_core::tmux::{Tmux, TmuxSocket};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use crate::plan::{MarkPlanner, Step};

/// The window option a status line reads.
pub const WINDOW_OPTION: &str = "@atm_waiting";
/// The pane option marking which pane of the window waits.
pub const PANE_OPTION: &str = "@atm_waiting_pane";
/// Where in each hook array our hook lives (users' hooks usually sit at index 0).
pub const HOOK_INDEX: u32 = 7310;
/// The events after which a client may show a different pane.
const HOOKS: [&str; 5] = [
    "after-select-pane",
    "after-select-window",
    "session-window-changed",
    "client-session-changed",
    "client-attached",
];
/// Clears the mark of the pane now shown: only when that pane is active in the active window of
/// an attached session, so a script selecting panes in the background clears nothing.
const CLEAR_ON_VIEW: &str = "if -F '#{&&:#{@atm_waiting_pane},#{&&:#{session_attached},#{&&:#{window_active},#{pane_active}}}}' \
    { set -pu @atm_waiting_pane ; if -F '#{==:#{P:#{@atm_waiting_pane}},}' { set -wu @atm_waiting } }";
/// How long stopping may spend taking marks and hooks away.
const CLEANUP_TIMEOUT: Duration = Duration::from_millis(1500);

atm_core::register_plugin! {
    sink "tmux-marks",
    description: "Flags tmux windows whose agent needs you (window option @atm_waiting) until you look at the pane",
    sample_config: include_str!("../sample.toml"),
    optional: true,
    factory: |cfg| Ok(Box::new(TmuxMarksSink::new(TmuxMarksConfig::from_toml(cfg)?))),
}

/// `[[sink]] type = "tmux-marks"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmuxMarksConfig {
    /// The tmux server's socket path (`tmux -S`).
    #[serde(default)]
    pub tmux_socket: Option<String>,
    /// The tmux server's socket name (`tmux -L`).
    #[serde(default)]
    pub tmux_socket_name: Option<String>,
}

impl TmuxMarksConfig {
    pub fn from_toml(value: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        let config: Self = atm_core::plugin::parse_config(value)?;
        if config.tmux_socket.is_some() && config.tmux_socket_name.is_some() {
            return Err(ConfigError::for_key(
                "tmux_socket_name",
                "set either `tmux_socket` (a path) or `tmux_socket_name` (a -L name), not both",
            ));
        }
        Ok(config)
    }
}

/// The `tmux-marks` output sink.
pub struct TmuxMarksSink {
    tmux: Tmux,
}

impl TmuxMarksSink {
    pub fn new(config: TmuxMarksConfig) -> Self {
        let socket = TmuxSocket::from_config(
            config.tmux_socket.as_deref(),
            config.tmux_socket_name.as_deref(),
        );
        Self {
            tmux: Tmux::new(socket),
        }
    }

    /// Runs one batch of tmux commands (`a ; b ; c` in one call), logging a failure.
    async fn batch(&self, commands: Vec<Vec<String>>, what: &str) {
        let mut args: Vec<&str> = Vec::new();
        for cmd in &commands {
            if !args.is_empty() {
                args.push(";");
            }
            args.extend(cmd.iter().map(String::as_str));
        }
        if args.is_empty() {
            return;
        }
        if let Err(e) = self.tmux.run(&args).await {
            debug!(error = %e, what, "tmux marks: call failed; skipped");
        }
    }

    fn hooks(install: bool) -> Vec<Vec<String>> {
        HOOKS
            .iter()
            .map(|h| {
                let name = format!("{h}[{HOOK_INDEX}]");
                if install {
                    vec!["set-hook".into(), "-g".into(), name, CLEAR_ON_VIEW.into()]
                } else {
                    vec!["set-hook".into(), "-gu".into(), name]
                }
            })
            .collect()
    }

    fn unmark(pane: &str) -> Vec<Vec<String>> {
        let p = pane.to_owned();
        let window_clear = format!("set -wu -t {pane} {WINDOW_OPTION}");
        vec![
            vec![
                "set".into(),
                "-pu".into(),
                "-t".into(),
                p.clone(),
                PANE_OPTION.into(),
            ],
            vec![
                "if".into(),
                "-F".into(),
                "-t".into(),
                p,
                format!("#{{==:#{{P:#{{{PANE_OPTION}}}}},}}"),
                window_clear,
            ],
        ]
    }

    async fn apply(&self, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Mark(pane) => {
                    if self.tmux.pane_is_watched(&pane).await {
                        debug!(
                            pane,
                            "agent waits in a pane the user is looking at; no mark"
                        );
                        continue;
                    }
                    // Hooks go in with every mark: cheap, idempotent, and right after a tmux
                    // server (re)started since the sink did.
                    let mut cmds = Self::hooks(true);
                    cmds.push(vec![
                        "set".into(),
                        "-p".into(),
                        "-t".into(),
                        pane.clone(),
                        PANE_OPTION.into(),
                        "1".into(),
                    ]);
                    cmds.push(vec![
                        "set".into(),
                        "-w".into(),
                        "-t".into(),
                        pane.clone(),
                        WINDOW_OPTION.into(),
                        "1".into(),
                    ]);
                    self.batch(cmds, "mark").await;
                }
                Step::Unmark(pane) => self.batch(Self::unmark(&pane), "unmark").await,
            }
        }
    }

    /// Takes away every mark this sink set, then its hooks (two calls, so that a pane closed
    /// meanwhile, which fails its unmark, cannot keep the hooks in place).
    async fn cleanup(&self, planner: &MarkPlanner) {
        let unmarks: Vec<Vec<String>> = planner
            .marked_panes()
            .iter()
            .flat_map(|p| Self::unmark(p))
            .collect();
        let work = async {
            self.batch(unmarks, "cleanup marks").await;
            self.batch(Self::hooks(false), "cleanup hooks").await;
        };
        if tokio::time::timeout(CLEANUP_TIMEOUT, work).await.is_err() {
            debug!("tmux marks: cleanup did not finish in time; marks may stay");
        }
    }
}

#[atm_core::async_trait]
impl OutputSink for TmuxMarksSink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let (snapshot, mut changes) = ctx.registry.subscribe().await.map_err(|e| {
            PluginError::Other(format!(
                "tmux-marks: subscribing to the registry failed: {e}"
            ))
        })?;
        let mut planner = MarkPlanner::default();
        let steps = planner.resync(&snapshot.sessions);
        tokio::select! {
            () = ctx.cancel.cancelled() => {}
            () = self.apply(steps) => {}
        }
        while !ctx.cancel.is_cancelled() {
            let received = tokio::select! {
                () = ctx.cancel.cancelled() => break,
                r = changes.recv() => r,
            };
            let steps = match received {
                Ok(event) => {
                    let removed = matches!(event.change, atm_core::SessionChange::Removed { .. });
                    planner.on_session(&event.session, removed)
                }
                Err(RecvError::Lagged(missed)) => {
                    // Old changes are old news: resynchronise, never replay them.
                    warn!(
                        missed,
                        "tmux-marks fell behind the registry; resynchronising"
                    );
                    match ctx.registry.subscribe().await {
                        Ok((snapshot, fresh)) => {
                            changes = fresh;
                            planner.resync(&snapshot.sessions)
                        }
                        Err(e) => {
                            debug!(error = %e, "registry gone while resynchronising");
                            break;
                        }
                    }
                }
                Err(RecvError::Closed) => break,
            };
            tokio::select! {
                () = ctx.cancel.cancelled() => break,
                () = self.apply(steps) => {}
            }
        }
        self.cleanup(&planner).await;
        Ok(())
    }
}
