//! The `pi` input adapter: serves `pi_event` messages on the shared ingest socket.
//!
//! Like the Claude hook adapter it owns no socket: the daemon's ingest hub binds `hooks.sock`
//! once, checks peers, caps lines, answers `connect`/`ping` and keeps the extension's persistent
//! connection open. What remains here is per message: translate (pure), resolve the pi process
//! identity (one `/proc` read), apply to the registry, count.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atm_core::event::{EventEnvelope, EventSource};
use atm_core::ingest::{IngestHandler, IngestMessage};
use atm_core::model::Harness;
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::protocol::{ErrorCode, ServerMessage, WireError};
use atm_core::registry::RegistryHandle;
use atm_core::tracing::debug;
use atm_core::{ApplyOutcome, async_trait};
use serde::Deserialize;

use crate::translate::translate_from;

/// The routes this adapter serves: `pi_event`, and `pi_event:pi` for a client that sets
/// `"agent":"pi"`.
pub const ROUTES: &[&str] = &["pi_event", "pi_event:pi"];

/// `[[adapter]] type = "pi"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiConfig {
    /// The ingest socket (`~/` and `$VAR` expanded). Default: `hooks.sock` in the daemon's
    /// runtime dir, shared with the other hook adapters.
    pub socket: Option<String>,
}

impl PiConfig {
    /// The socket to attach to, given the daemon's runtime dir.
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        atm_core::ingest::socket_path(self.socket.as_deref(), runtime_dir)
    }
}

/// Counters, readable while the adapter runs (tests, debug logs).
pub type PiStats = atm_core::ingest::IngestStats;

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct PiAdapter {
    config: PiConfig,
    stats: Arc<PiStats>,
}

impl PiAdapter {
    pub fn new(config: PiConfig) -> Self {
        Self {
            config,
            stats: Arc::default(),
        }
    }

    /// The factory `register_plugin!` uses.
    pub fn from_config(cfg: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        Ok(Self::new(atm_core::plugin::parse_config(cfg)?))
    }

    /// This instance's counters (shared with the running adapter).
    pub fn stats(&self) -> Arc<PiStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for PiAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        let handler = Arc::new(PiHandler {
            registry: ctx.registry.clone(),
            adapter: ctx.name.clone(),
            stats: self.stats.clone(),
        });
        ctx.serve_ingest(&path, ROUTES, handler).await?;
        self.stats.log_summary(&ctx.name);
        Ok(())
    }
}

struct PiHandler {
    registry: RegistryHandle,
    adapter: String,
    stats: Arc<PiStats>,
}

#[async_trait]
impl IngestHandler for PiHandler {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let translated = match msg.raw.body.get("data") {
            Some(data) => translate_from(data, msg.peer.pid),
            None => Err(WireError::new(
                ErrorCode::InvalidMessage,
                "missing field `data` (the pi extension's event envelope)",
            )),
        };
        let t = match translated {
            Ok(t) => t,
            Err(e) => {
                PiStats::bump(&self.stats.bad_messages);
                return Err(e);
            }
        };
        if !t.known {
            PiStats::bump(&self.stats.unknown_events);
            debug!(event = %t.event_name, "unknown pi event accepted as activity");
        }
        let Some(event) = t.event else {
            PiStats::bump(&self.stats.ignored);
            return Ok(None);
        };
        let mut source = EventSource::new(Harness::new(Harness::PI), t.session_id, &self.adapter);
        source.process = t.pid.and_then(atm_core::process::identity_recent);
        source.tmux_pane = t.tmux_pane;
        match self
            .registry
            .apply_event(EventEnvelope::now(source, event))
            .await
        {
            Ok(outcome) => {
                if outcome != ApplyOutcome::Ignored {
                    PiStats::bump(&self.stats.applied);
                }
                Ok(None)
            }
            Err(e) => {
                PiStats::bump(&self.stats.registry_errors);
                Err(e.into())
            }
        }
    }
}
