//! The `opencode` input adapter: follows a running opencode server's event stream.
//!
//! opencode has no hook programs to call us; its server publishes every bus event on
//! `GET <url>/event` as Server-Sent Events. The adapter keeps one plain HTTP/1.1 connection to
//! it (hyper's client connection: no pool, no TLS, because the use case is a local server),
//! feeds the body through the bounded [`SseParser`], translates each event and applies it.
//!
//! The server may be absent when the daemon starts, restart, or go away: each failure is
//! retried with exponential backoff, logged once per outage, and never ends the adapter. Each
//! time the stream opens, `GET <root>/session/status` (which sessions are busy) corrects what
//! was missed while it was closed; a server without that endpoint is simply followed. The
//! server's process is not known, so sessions are keyed by id (no process) and expire after
//! the registry's silence limit; `session.deleted` removes one at once. Without a `url` the
//! adapter does nothing until it is cancelled, so the sample config runs everywhere.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::path::Path;

use atm_core::async_trait;
use atm_core::model::{Harness, ProcessIdentity, Session};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::registry_follow::{Followed, RegistryFollower};
use atm_core::tracing::{debug, info};
use serde::Deserialize;
use tokio_util::task::AbortOnDropHandle;

use crate::discover::{listening, same_netns, server_process};
use crate::server::{INITIAL_BACKOFF, Server, Shared};
use crate::sse::MAX_EVENT_BYTES;
use crate::stats::OpencodeStats;
use crate::url::EventStreamUrl;

/// How long a found opencode process is looked at for a listening port before it is taken
/// to have none (a TUI started without `--port`); after that, once every
/// [`PORT_RECHECK`].
const PORT_PATIENCE: Duration = Duration::from_secs(20);
const PORT_RECHECK: Duration = Duration::from_secs(30);

/// A configured server's sessions updated within this long are listed on connect.
const RECENT: Duration = Duration::from_secs(30 * 60);

/// `[[adapter]] type = "opencode"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpencodeConfig {
    /// The opencode server, e.g. `http://127.0.0.1:4096` (`opencode serve --port 4096`). The
    /// event stream is `<url>/event`; a URL that already ends in `/event` is used as it is.
    /// Absent: running opencode processes are found instead (see `discover`).
    pub url: Option<String>,
    /// Without `url`: follow every opencode process proc-discovery finds that listens on a
    /// loopback port (the TUI started with `--port`, `opencode serve`). `false`: stay idle.
    #[serde(default = "default_discover")]
    pub discover: bool,
    /// Longest wait between reconnection attempts (250 ms to 24 h).
    #[serde(
        with = "atm_core::plugin::duration::Within::<250, 86_400_000>",
        default = "default_max_backoff"
    )]
    pub max_backoff: Duration,
    /// How long connecting and receiving the response headers may take (100 ms to 10 min).
    #[serde(
        with = "atm_core::plugin::duration::Within::<100, 600_000>",
        default = "default_connect_timeout"
    )]
    pub connect_timeout: Duration,
}

fn default_discover() -> bool {
    true
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for OpencodeConfig {
    fn default() -> Self {
        Self {
            url: None,
            discover: true,
            max_backoff: default_max_backoff(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct OpencodeAdapter {
    config: OpencodeConfig,
    url: Option<EventStreamUrl>,
    max_event_bytes: usize,
    stats: Arc<OpencodeStats>,
}

impl OpencodeAdapter {
    pub fn new(config: OpencodeConfig) -> Result<Self, ConfigError> {
        let url = config
            .url
            .as_deref()
            .map(EventStreamUrl::parse)
            .transpose()?;
        if config.max_backoff < INITIAL_BACKOFF {
            return Err(ConfigError::for_key(
                "max_backoff",
                format!("`max_backoff` must be at least {INITIAL_BACKOFF:?}"),
            ));
        }
        Ok(Self {
            config,
            url,
            max_event_bytes: MAX_EVENT_BYTES,
            stats: Arc::default(),
        })
    }

    /// The factory `register_plugin!` uses.
    pub fn from_config(cfg: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        Self::new(atm_core::plugin::parse_config(cfg)?)
    }

    /// Caps one SSE event (and line) at `bytes` instead of 1 MiB (tests use a small cap).
    pub fn with_max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// This instance's counters (shared with the running adapter).
    pub fn stats(&self) -> Arc<OpencodeStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for OpencodeAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let shared = Arc::new(Shared {
            max_backoff: self.config.max_backoff,
            connect_timeout: self.config.connect_timeout,
            max_event_bytes: self.max_event_bytes,
            recent: RECENT,
            stats: self.stats.clone(),
        });
        let cancel = ctx.cancel.clone();
        match self.url.clone() {
            Some(url) => {
                let mut server = Server::new(url, None);
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = server.follow(&shared, &ctx) => {}
                }
            }
            None if self.config.discover => {
                info!(adapter = %ctx.name, "following the opencode servers of the opencode processes found");
                discover(shared, &ctx).await?;
            }
            None => {
                info!(adapter = %ctx.name, "no `url` and `discover = false`: opencode adapter idle");
                cancel.cancelled().await;
            }
        }
        let s = &self.stats;
        debug!(
            adapter = %ctx.name,
            connections = OpencodeStats::get(&s.connections),
            failed_attempts = OpencodeStats::get(&s.failed_attempts),
            events = OpencodeStats::get(&s.events),
            applied = OpencodeStats::get(&s.applied),
            malformed = OpencodeStats::get(&s.malformed),
            oversized = OpencodeStats::get(&s.oversized),
            "opencode adapter stopped"
        );
        Ok(())
    }
}

/// Follows the registry for opencode processes (found by proc-discovery) and follows the
/// server of each, one task per process, until cancelled. No wakeup of its own while no
/// opencode runs.
async fn discover(shared: Arc<Shared>, ctx: &AdapterContext) -> Result<(), PluginError> {
    let (snapshot, mut follower) =
        RegistryFollower::start(ctx.registry.clone(), ctx.cancel.clone()).await?;
    let mut servers: HashMap<ProcessIdentity, AbortOnDropHandle<()>> = HashMap::new();
    let consider = |servers: &mut HashMap<ProcessIdentity, AbortOnDropHandle<()>>, s: &Session| {
        let Some(p) = s
            .process
            .filter(|_| s.harness.as_str() == Harness::OPENCODE)
        else {
            return;
        };
        if servers.contains_key(&p) {
            return;
        }
        let (shared, ctx2) = (shared.clone(), ctx.clone());
        let task = ctx.spawn(async move {
            tokio::select! {
                () = ctx2.cancel.cancelled() => {}
                () = follow_process(&shared, p, &ctx2) => {}
            }
        });
        servers.insert(p, AbortOnDropHandle::new(task));
    };
    for s in &snapshot.sessions {
        consider(&mut servers, s);
    }
    while let Some(followed) = follower.next().await {
        let sessions: Vec<Arc<Session>> = match followed {
            Followed::Changes(changes) => changes
                .into_iter()
                .filter(|c| !matches!(c.change, atm_core::registry::SessionChange::Removed { .. }))
                .map(|c| c.session)
                .collect(),
            Followed::Resync { snapshot, .. } => snapshot.sessions,
        };
        for s in &sessions {
            consider(&mut servers, s);
        }
        // A finished task's process has exited (or is out of reach): forget it once it is gone.
        servers.retain(|p, task| !task.is_finished() || atm_core::process::is_alive(*p));
    }
    Ok(())
}

/// Finds the port opencode process `p` listens on and follows its server until it exits.
async fn follow_process(shared: &Shared, p: ProcessIdentity, ctx: &AdapterContext) {
    let root = Path::new(atm_core::process::PROC_ROOT);
    if !same_netns(root, p.pid) {
        debug!(adapter = %ctx.name, pid = p.pid, "opencode process in another network namespace: its server is out of reach");
        return;
    }
    let started = tokio::time::Instant::now();
    let mut wait = INITIAL_BACKOFF;
    let mut told = false;
    let listen = loop {
        if !atm_core::process::is_alive(p) {
            return;
        }
        if let Some(l) = listening(root, p.pid).first() {
            break *l;
        }
        if !told && started.elapsed() >= PORT_PATIENCE {
            info!(
                adapter = %ctx.name,
                pid = p.pid,
                "this opencode listens on no port, so atm cannot follow its sessions; start it with `opencode --port 0`"
            );
            told = true;
        }
        tokio::time::sleep(wait).await;
        wait = if told {
            PORT_RECHECK
        } else {
            (wait * 2).min(Duration::from_secs(4))
        };
    };
    let Some(info) = server_process(root, p.pid) else {
        return;
    };
    let url = match EventStreamUrl::parse(&listen.url()) {
        Ok(u) => u,
        Err(e) => {
            debug!(adapter = %ctx.name, error = %e, "unusable opencode address");
            return;
        }
    };
    let mut server = Server::new(url, Some((p, info)));
    server.follow(shared, ctx).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn config_is_checked() {
        let t = |s: &str| atm_core::toml::Value::Table(atm_core::toml::from_str(s).unwrap());
        assert!(OpencodeAdapter::from_config(&t("")).is_ok());
        assert!(
            OpencodeAdapter::from_config(&t(
                "url = \"http://127.0.0.1:4096\"\nmax_backoff = \"10s\""
            ))
            .is_ok()
        );
        let e = OpencodeAdapter::from_config(&t("max_backoff = \"1ms\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("max_backoff"));
        let e = OpencodeAdapter::from_config(&t("url = \"https://x\"")).unwrap_err();
        assert!(e.message.contains("https"), "{e}");
        let e = OpencodeAdapter::from_config(&t("uri = \"http://x\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("uri"));
    }
}
