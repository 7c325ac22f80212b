//! Supervision of one plugin instance: build it from its config, run it, and when it fails (or
//! returns before it was told to stop) log that with its name and start a fresh instance after an
//! exponential backoff. Other plugins are unaffected: each instance has its own task and token.

use std::time::Duration;

use atm_core::control::ControlBus;
use atm_core::ingest::IngestHub;
use atm_core::plugin::{AdapterContext, PluginEnv, PluginError, PluginFactory, SinkContext};
use atm_core::registry::RegistryHandle;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::PluginEntry;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What every plugin instance shares.
#[derive(Clone)]
pub struct Shared {
    pub registry: RegistryHandle,
    pub ingest: IngestHub,
    pub control: ControlBus,
    pub env: PluginEnv,
}

/// A supervised plugin instance.
pub struct RunningPlugin {
    pub entry: PluginEntry,
    pub cancel: CancellationToken,
    pub task: JoinHandle<()>,
}

impl RunningPlugin {
    pub fn spawn(entry: PluginEntry, shared: Shared, parent: &CancellationToken) -> Self {
        let cancel = parent.child_token();
        let task = tokio::spawn(run(entry.clone(), shared, cancel.clone()));
        Self {
            entry,
            cancel,
            task,
        }
    }

    /// Cancels the instance and waits for it until `deadline`, then aborts it.
    pub async fn stop(self, deadline: Instant) {
        self.cancel.cancel();
        let name = self.entry.instance.clone();
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!(plugin = %name, "did not stop in time; aborted");
            task.abort();
        }
    }
}

async fn run(entry: PluginEntry, shared: Shared, cancel: CancellationToken) {
    let Some(reg) = entry.registration() else {
        error!(plugin = %entry.instance, "plugin is not compiled in");
        return;
    };
    let name = entry.instance.clone();
    let mut backoff = FIRST_BACKOFF;
    let mut unavailable_logged = false;
    loop {
        let started = Instant::now();
        let result = match reg.factory {
            PluginFactory::Adapter(factory) => match factory(&entry.settings) {
                Ok(plugin) => {
                    let ctx = AdapterContext::new(
                        name.clone(),
                        shared.registry.clone(),
                        cancel.clone(),
                        shared.ingest.clone(),
                        shared.control.clone(),
                        shared.env.clone(),
                    );
                    plugin.run(ctx).await
                }
                Err(e) => Err(PluginError::Config(e)),
            },
            PluginFactory::Sink(factory) => match factory(&entry.settings) {
                Ok(plugin) => {
                    let ctx = SinkContext {
                        name: name.clone(),
                        registry: shared.registry.clone(),
                        cancel: cancel.clone(),
                        control: shared.control.clone(),
                        env: shared.env.clone(),
                    };
                    plugin.run(ctx).await
                }
                Err(e) => Err(PluginError::Config(e)),
            },
        };
        if cancel.is_cancelled() {
            if let Err(e) = result {
                warn!(plugin = %name, error = %e, "plugin reported an error while stopping");
            }
            return;
        }
        if !shared.registry.is_connected() {
            // The registry is gone: the daemon is shutting down; a sink ending now is expected.
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        match &result {
            Err(PluginError::Unavailable(why)) => {
                if !unavailable_logged || reg.optional {
                    info!(plugin = %name, reason = %why, retry_in = ?backoff, "plugin waiting for what it needs");
                }
                unavailable_logged = true;
            }
            Err(e) if reg.optional => {
                warn!(plugin = %name, error = %e, retry_in = ?backoff, "optional plugin failed; restarting")
            }
            Err(e) => {
                error!(plugin = %name, error = %e, retry_in = ?backoff, "plugin failed; restarting")
            }
            Ok(()) => {
                warn!(plugin = %name, retry_in = ?backoff, "plugin stopped on its own; restarting")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
