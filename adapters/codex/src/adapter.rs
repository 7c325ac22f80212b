//! The `codex` input adapter: serves Codex's hook and notify payloads on the shared ingest
//! socket.
//!
//! Codex runs `atm-hook --agent codex` for each hook in `~/.codex/hooks.json` (JSON on stdin)
//! and `atm-hook --agent codex --notify <json>` as its `notify` program (JSON as the argument);
//! either way `atm-hook` adds the Codex PID and `$TMUX_PANE` and sends a `hook_event` with
//! `"agent":"codex"`, which the ingest hub routes to `hook_event:codex`. A client may also send
//! a notify payload as `{"type":"codex_notify","data":{...}}`. The hub binds `hooks.sock` once
//! for every adapter, checks peers and caps lines; per message this adapter translates (pure),
//! resolves the process identity (one `/proc` read), applies to the registry and counts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapter_claude_hooks::fields;
use atm_core::event::EventEnvelope;
use atm_core::ingest::{IngestHandler, IngestMessage};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::protocol::{ServerMessage, WireError};
use atm_core::registry::RegistryHandle;
use atm_core::tracing::debug;
use atm_core::{ApplyOutcome, async_trait};
use serde::Deserialize;

use crate::translate::{Translation, source, translate};

/// `hook_event` with `"agent":"codex"` (hooks and notify through `atm-hook`), and `codex_notify`
/// for a client that sends a notify payload under its own type.
pub const ROUTES: &[&str] = &["hook_event:codex", "codex_notify"];

/// `[[adapter]] type = "codex"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodexConfig {
    /// The ingest socket (`~/` and `$VAR` expanded). Default: `hooks.sock` in the daemon's
    /// runtime dir, shared with the other hook adapters.
    pub socket: Option<String>,
}

impl CodexConfig {
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        atm_core::ingest::socket_path(self.socket.as_deref(), runtime_dir)
    }
}

/// Counters, readable while the adapter runs (tests, the debug log on stop).
pub type CodexStats = atm_core::ingest::IngestStats;

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct CodexAdapter {
    config: CodexConfig,
    stats: Arc<CodexStats>,
}

impl CodexAdapter {
    pub fn new(config: CodexConfig) -> Self {
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
    pub fn stats(&self) -> Arc<CodexStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for CodexAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        let handler = Arc::new(CodexHandler {
            registry: ctx.registry.clone(),
            adapter: ctx.name.clone(),
            stats: self.stats.clone(),
        });
        ctx.serve_ingest(&path, ROUTES, handler).await?;
        self.stats.log_summary(&ctx.name);
        Ok(())
    }
}

struct CodexHandler {
    registry: RegistryHandle,
    adapter: String,
    stats: Arc<CodexStats>,
}

#[async_trait]
impl IngestHandler for CodexHandler {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let null = atm_core::serde_json::Value::Null;
        let t = match translate(msg.raw.body.get("data").unwrap_or(&null)) {
            Ok(t) => t,
            Err(e) => {
                CodexStats::bump(&self.stats.bad_messages);
                return Err(e);
            }
        };
        if !t.known {
            CodexStats::bump(&self.stats.unknown_events);
            debug!(event = %t.event_name, "unknown Codex event accepted as activity");
        }
        self.apply(t).await.map(|()| None)
    }
}

impl CodexHandler {
    async fn apply(&self, mut t: Translation) -> Result<(), WireError> {
        let Some(event) = t.event.take() else {
            return Ok(());
        };
        let source = source(&t, fields::process_of(t.pid), &self.adapter);
        match self
            .registry
            .apply_event(EventEnvelope::now(source, event))
            .await
        {
            Ok(outcome) => {
                if outcome != ApplyOutcome::Ignored {
                    CodexStats::bump(&self.stats.applied);
                }
                Ok(())
            }
            Err(e) => {
                CodexStats::bump(&self.stats.registry_errors);
                Err(e.into())
            }
        }
    }
}
