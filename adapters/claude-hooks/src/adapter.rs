//! The `claude-hooks` input adapter: serves `hook_event` messages on the shared ingest socket.
//!
//! The adapter does not own a socket: it attaches its routes to the daemon's ingest hub, which
//! binds `hooks.sock` once for every adapter that shares it (the status-line adapter included),
//! checks peers, caps lines and replies with errors. What remains here is per message: translate
//! (pure), resolve the process identity (one `/proc` read), apply to the registry, count.

use std::path::PathBuf;
use std::sync::Arc;

use atm_core::event::EventEnvelope;
use atm_core::ingest::{IngestHandler, IngestMessage};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::protocol::{ServerMessage, WireError};
use atm_core::registry::RegistryHandle;
use atm_core::tracing::debug;
use atm_core::{ApplyOutcome, async_trait};
use serde::Deserialize;

use crate::fields;
use crate::translate::{Translation, translate_object};

/// The message routes this adapter serves (`hook_event:claude` is what a client that sets
/// `"agent":"claude"` is routed to).
pub const ROUTES: &[&str] = &["hook_event", "hook_event:claude"];

/// `[[adapter]] type = "claude-hooks"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeHooksConfig {
    /// The ingest socket (`~/` and `$VAR` expanded). Default: `hooks.sock` in the daemon's
    /// runtime dir, shared with the status-line adapter.
    pub socket: Option<String>,
}

impl ClaudeHooksConfig {
    /// The socket to attach to, given the daemon's runtime dir.
    pub fn socket_path(&self, runtime_dir: &std::path::Path) -> PathBuf {
        atm_core::ingest::socket_path(self.socket.as_deref(), runtime_dir)
    }
}

/// Counters, readable while the adapter runs (tests, debug logs).
pub type HookStats = atm_core::ingest::IngestStats;

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct ClaudeHooksAdapter {
    config: ClaudeHooksConfig,
    stats: Arc<HookStats>,
}

impl ClaudeHooksAdapter {
    pub fn new(config: ClaudeHooksConfig) -> Self {
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
    pub fn stats(&self) -> Arc<HookStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for ClaudeHooksAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        let handler = Arc::new(HookHandler {
            registry: ctx.registry.clone(),
            adapter: ctx.name.clone(),
            stats: self.stats.clone(),
        });
        ctx.serve_ingest(&path, ROUTES, handler).await?;
        self.stats.log_summary(&ctx.name);
        Ok(())
    }
}

struct HookHandler {
    registry: RegistryHandle,
    adapter: String,
    stats: Arc<HookStats>,
}

#[async_trait]
impl IngestHandler for HookHandler {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let translation = fields::data_object(&msg.raw.body).and_then(translate_object);
        let t = match translation {
            Ok(t) => t,
            Err(e) => {
                HookStats::bump(&self.stats.bad_messages);
                return Err(e);
            }
        };
        if !t.known {
            HookStats::bump(&self.stats.unknown_events);
            debug!(event = %t.event_name, "unknown Claude Code hook event accepted as activity");
        }
        self.apply(t).await.map(|()| None)
    }
}

impl HookHandler {
    /// Applies the event as it is: whether a reminder keeps a wait already shown, or a
    /// subagent's event answers the wait it raised, is the state machine's to decide.
    async fn apply(&self, mut t: Translation) -> Result<(), WireError> {
        let Some(event) = t.event.take() else {
            HookStats::bump(&self.stats.ignored);
            return Ok(());
        };
        let source = t.source(fields::process_of(t.pid), &self.adapter);
        match self
            .registry
            .apply_event(EventEnvelope::now(source, event))
            .await
        {
            Ok(outcome) => {
                if outcome != ApplyOutcome::Ignored {
                    HookStats::bump(&self.stats.applied);
                }
                Ok(())
            }
            Err(e) => {
                HookStats::bump(&self.stats.registry_errors);
                Err(e.into())
            }
        }
    }
}
