//! The `gemini` input adapter: serves `hook_event:gemini` messages on the shared ingest socket.
//!
//! Gemini CLI runs `atm-hook --agent gemini` for each hook event; `atm-hook` adds the Gemini
//! PID and `$TMUX_PANE`, sends the JSON as a `hook_event` with `"agent":"gemini"`, and prints
//! nothing (Gemini reads a hook's stdout as its decision, so it must stay silent). The daemon's
//! ingest hub binds `hooks.sock` once for every adapter, checks peers and caps lines; this
//! adapter only attaches its route. Per message: translate (pure), resolve the process identity
//! (one `/proc` read), apply to the registry, count.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atm_core::event::EventEnvelope;
use atm_core::ingest::{IngestHandler, IngestMessage};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::protocol::{ServerMessage, WireError};
use atm_core::registry::RegistryHandle;
use atm_core::serde_json::Value;
use atm_core::tracing::debug;
use atm_core::{ApplyOutcome, async_trait};
use serde::Deserialize;

use crate::translate::translate;

/// The route a `hook_event` with `"agent":"gemini"` is sent to by the ingest hub.
pub const ROUTES: &[&str] = &["hook_event:gemini"];

/// `[[adapter]] type = "gemini"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiConfig {
    /// The ingest socket (`~/` and `$VAR` expanded). Default: `hooks.sock` in the daemon's
    /// runtime dir, shared with the other hook adapters.
    pub socket: Option<String>,
}

impl GeminiConfig {
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        atm_core::ingest::socket_path(self.socket.as_deref(), runtime_dir)
    }
}

/// Counters, readable while the adapter runs (tests, the debug log on stop).
pub type GeminiStats = atm_core::ingest::IngestStats;

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct GeminiAdapter {
    config: GeminiConfig,
    stats: Arc<GeminiStats>,
}

impl GeminiAdapter {
    pub fn new(config: GeminiConfig) -> Self {
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
    pub fn stats(&self) -> Arc<GeminiStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for GeminiAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        let handler = Arc::new(GeminiHandler {
            registry: ctx.registry.clone(),
            adapter: ctx.name.clone(),
            stats: self.stats.clone(),
        });
        ctx.serve_ingest(&path, ROUTES, handler).await?;
        self.stats.log_summary(&ctx.name);
        Ok(())
    }
}

struct GeminiHandler {
    registry: RegistryHandle,
    adapter: String,
    stats: Arc<GeminiStats>,
}

#[async_trait]
impl IngestHandler for GeminiHandler {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let data = msg.raw.body.get("data").unwrap_or(&Value::Null);
        let t = match translate(data) {
            Ok(t) => t,
            Err(e) => {
                GeminiStats::bump(&self.stats.bad_messages);
                return Err(e);
            }
        };
        if !t.known {
            GeminiStats::bump(&self.stats.unknown_events);
            debug!(event = %t.event_name, "unknown Gemini CLI hook event accepted as activity");
        }
        let process = t.pid.and_then(atm_core::process::identity_recent);
        let source = t.source(process, &self.adapter);
        match self
            .registry
            .apply_event(EventEnvelope::now(source, t.event))
            .await
        {
            Ok(outcome) => {
                if outcome != ApplyOutcome::Ignored {
                    GeminiStats::bump(&self.stats.applied);
                }
                Ok(None)
            }
            Err(e) => {
                GeminiStats::bump(&self.stats.registry_errors);
                Err(e.into())
            }
        }
    }
}
