//! [`IngestAdapter`]: the plugin a [`Translator`] becomes. It attaches the translator's routes
//! to the ingest socket of its config and serves them until cancelled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::Translator;
use super::handler::TranslatorHandler;
use crate::ingest::IngestStats;
use crate::model::Harness;
use crate::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};

/// The config of every ingest adapter: `[[adapter]] type = "<name>"`, optionally `socket`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestAdapterConfig {
    /// The ingest socket (`~/` and `$VAR` expanded). Default: `hooks.sock` in the daemon's
    /// runtime dir, shared with the other hook adapters (where `atm-hook` sends by default).
    pub socket: Option<String>,
}

impl IngestAdapterConfig {
    /// The socket to attach to, given the daemon's runtime dir.
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        crate::ingest::socket_path(self.socket.as_deref(), runtime_dir)
    }
}

/// The adapter instance the daemon builds from a config table, for translator `T`.
#[derive(Debug)]
pub struct IngestAdapter<T> {
    config: IngestAdapterConfig,
    translator: T,
    stats: Arc<IngestStats>,
}

impl<T: Translator> IngestAdapter<T> {
    pub fn new(config: IngestAdapterConfig) -> Self {
        Self {
            config,
            translator: T::default(),
            stats: Arc::default(),
        }
    }

    /// Builds the adapter from its config table.
    pub fn from_config(cfg: &toml::Value) -> Result<Self, ConfigError> {
        Ok(Self::new(crate::plugin::parse_config(cfg)?))
    }

    /// This instance's counters (shared with the running adapter).
    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }
}

/// The plugin factory for translator `T` (what [`register_translator!`](crate::register_translator) registers).
pub fn factory<T: Translator>(cfg: &toml::Value) -> Result<Box<dyn InputAdapter>, ConfigError> {
    Ok(Box::new(IngestAdapter::<T>::from_config(cfg)?))
}

#[async_trait]
impl<T: Translator> InputAdapter for IngestAdapter<T> {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let path = self.config.socket_path(&ctx.env.runtime_dir);
        ctx.env.ingest_stats.publish(&ctx.name, self.stats.clone());
        let handler = Arc::new(TranslatorHandler {
            translator: self.translator,
            registry: ctx.registry.clone(),
            harness: Harness::new(T::HARNESS),
            adapter: ctx.name.clone(),
            stats: self.stats.clone(),
        });
        if let Some(screen) = T::SCREEN {
            ctx.spawn(crate::screen::watch(
                ctx.registry.clone(),
                ctx.cancel.clone(),
                ctx.name.clone(),
                T::HARNESS,
                screen,
            ));
        }
        ctx.serve_ingest(&path, T::ROUTES, handler).await?;
        self.stats.log_summary(&ctx.name);
        Ok(())
    }
}
