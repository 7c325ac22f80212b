//! The `claude-statusline` input adapter: serves `status_update` messages on the ingest socket.
//!
//! It attaches to the same ingest hub as `claude-hooks` (by default the same `hooks.sock`, so
//! `atm-hook statusline` needs no configuration) and applies each status line as a usage update,
//! which never changes a session's state. A client that sets `"want_reply": true` gets the
//! session's current view back (`session_updated`), which is what `atm-hook statusline` prints
//! the live state from.

use std::path::PathBuf;
use std::sync::Arc;

use adapter_claude_hooks::fields;
use atm_core::chrono::Utc;
use atm_core::event::EventSource;
use atm_core::ingest::{IngestHandler, IngestMessage};
use atm_core::model::{Harness, ProcessIdentity};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::protocol::{ErrorCode, ServerMessage, WireError};
use atm_core::registry::{RegistryError, RegistryHandle};
use atm_core::serde_json::Value;
use atm_core::{Session, SessionView, async_trait};
use serde::Deserialize;

use crate::parse::parse_status_object;

/// The message routes this adapter serves.
pub const ROUTES: &[&str] = &["status_update", "status_update:claude"];

/// `[[adapter]] type = "claude-statusline"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeStatuslineConfig {
    /// The ingest socket (`~/` and `$VAR` expanded). Default: `hooks.sock` in the daemon's
    /// runtime dir, shared with `claude-hooks`; a path of its own works as well.
    pub socket: Option<String>,
}

impl ClaudeStatuslineConfig {
    pub fn socket_path(&self, runtime_dir: &std::path::Path) -> PathBuf {
        atm_core::ingest::socket_path(self.socket.as_deref(), runtime_dir)
    }
}

/// Counters, readable while the adapter runs.
pub type StatuslineStats = atm_core::ingest::IngestStats;

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct ClaudeStatuslineAdapter {
    config: ClaudeStatuslineConfig,
    stats: Arc<StatuslineStats>,
}

impl ClaudeStatuslineAdapter {
    pub fn new(config: ClaudeStatuslineConfig) -> Self {
        Self {
            config,
            stats: Arc::default(),
        }
    }

    /// The factory `register_plugin!` uses.
    pub fn from_config(cfg: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        Ok(Self::new(atm_core::plugin::parse_config(cfg)?))
    }

    pub fn stats(&self) -> Arc<StatuslineStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for ClaudeStatuslineAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        let handler = Arc::new(StatusHandler {
            registry: ctx.registry.clone(),
            adapter: ctx.name.clone(),
            stats: self.stats.clone(),
        });
        ctx.serve_ingest(&path, ROUTES, handler).await?;
        self.stats.log_summary(&ctx.name);
        Ok(())
    }
}

struct StatusHandler {
    registry: RegistryHandle,
    adapter: String,
    stats: Arc<StatuslineStats>,
}

#[async_trait]
impl IngestHandler for StatusHandler {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let parsed = fields::data_object(&msg.raw.body).and_then(parse_status_object);
        let status = match parsed {
            Ok(s) => s,
            Err(e) => {
                StatuslineStats::bump(&self.stats.bad_messages);
                return Err(e);
            }
        };
        let want_reply = msg.raw.body.get("want_reply") == Some(&Value::Bool(true));
        let process = fields::process_of(status.pid);
        let source = EventSource {
            harness: Harness::claude(),
            session_id: status.session_id.clone(),
            process,
            tmux_pane: status.tmux_pane.clone(),
            cwd: status.cwd.clone(),
            subagent_id: None,
            adapter: self.adapter.clone(),
        };
        if let Err(e) = self.registry.update_usage(source, status.usage).await {
            StatuslineStats::bump(&self.stats.registry_errors);
            return Err(e.into());
        }
        StatuslineStats::bump(&self.stats.applied);
        if !want_reply {
            return Ok(None);
        }
        let session = self
            .current(status.session_id.as_str(), process)
            .await
            .map_err(WireError::from)?
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!("no session {} (it may have ended)", status.session_id),
                )
            })?;
        Ok(Some(ServerMessage::SessionUpdated {
            session: Box::new(SessionView::from_session(&session, Utc::now()).into_owned()),
        }))
    }
}

impl StatusHandler {
    /// The session the status line is about: by id, else (a late status line for an id the
    /// process has since left) by process.
    async fn current(
        &self,
        id: &str,
        process: Option<ProcessIdentity>,
    ) -> Result<Option<Arc<Session>>, RegistryError> {
        match self.registry.get_session(id).await {
            Ok(s) => Ok(Some(s)),
            Err(RegistryError::SessionNotFound(_)) => {
                let Some(p) = process else {
                    return Ok(None);
                };
                let snapshot = self.registry.snapshot().await?;
                Ok(snapshot
                    .sessions
                    .into_iter()
                    .find(|s| s.harness.as_str() == Harness::CLAUDE && s.process == Some(p)))
            }
            Err(e) => Err(e),
        }
    }
}
