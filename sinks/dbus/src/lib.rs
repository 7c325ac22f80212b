//! The `dbus` output sink: the live session registry as a documented, introspectable D-Bus
//! service (`io.github.atm.Monitor`, interfaces `io.github.atm.Monitor1` and
//! `io.github.atm.Monitor1.Session`; see the README for the whole contract).
//!
//! Two tasks, so that D-Bus can never slow the registry down:
//! - the **consumer** (this module's `run`) follows the registry broadcast and hands each change
//!   to the bounded [`outbox::Outbox`] without ever waiting (coalescing per session when full,
//!   resynchronising from a snapshot on `Lagged`);
//! - the **bus task** ([`bus::BusTask`]) applies the changes to the published [`service::Mirror`],
//!   emits the signals, and owns the connection with its reconnect-with-backoff loop.
//!
//! The sink is optional: without a bus it logs one line, keeps tracking sessions, and registers
//! everything as soon as a bus is there.

mod bus;
pub mod config;
mod outbox;
mod path;
mod props;
mod service;

use std::sync::Arc;
use std::time::Duration;

use atm_core::tokio::sync::broadcast::error::RecvError;
use atm_core::{OutputSink, PluginError, SinkContext};
use tracing::{debug, warn};

pub use config::{BusKind, DbusConfig};
pub use path::{MANAGER_PATH, SESSIONS_PATH};
pub use service::{MANAGER_INTERFACE, SESSION_INTERFACE};

/// How long a stopping sink waits for the bus task to flush.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(1500);

atm_core::register_plugin! {
    sink "dbus",
    description: "the live sessions as a D-Bus service (io.github.atm.Monitor) with signals",
    sample_config: include_str!("../sample.toml"),
    optional: true,
    factory: |cfg| Ok(Box::new(DbusSink::new(DbusConfig::from_table(cfg)?))),
}

/// Publishes the registry on D-Bus.
#[derive(Debug)]
pub struct DbusSink {
    config: DbusConfig,
}

impl DbusSink {
    pub fn new(config: DbusConfig) -> Self {
        Self { config }
    }
}

#[atm_core::async_trait]
impl OutputSink for DbusSink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let (snapshot, mut changes) = ctx
            .registry
            .subscribe()
            .await
            .map_err(|e| PluginError::Other(format!("cannot follow the registry: {e}")))?;
        let outbox = Arc::new(outbox::Outbox::new(self.config.queue_capacity));
        let task = bus::BusTask::new(
            self.config,
            ctx.registry.clone(),
            ctx.control.clone(),
            outbox.clone(),
            service::SharedMirror::default(),
        );
        let bus_cancel = ctx.cancel.child_token();
        let mut bus = tokio::spawn(task.run(snapshot, bus_cancel.clone()));
        let mut lag_log = outbox::Throttle::default();

        loop {
            tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => break,
                change = changes.recv() => match change {
                    Ok(event) => outbox.push(event),
                    Err(RecvError::Lagged(missed)) => {
                        match lag_log.allow() {
                            Some(earlier) => warn!(
                                missed,
                                earlier_lags = earlier,
                                "D-Bus sink fell behind the registry; resynchronising from a snapshot"
                            ),
                            None => debug!(missed, "D-Bus sink fell behind the registry again"),
                        }
                        outbox.request_resync();
                    }
                    Err(RecvError::Closed) => {
                        debug!("registry stopped; flushing the D-Bus sink");
                        break;
                    }
                },
                _ = &mut bus => {
                    return Err(PluginError::Other("the D-Bus task stopped unexpectedly".into()));
                }
            }
        }
        outbox.close();
        if tokio::time::timeout(FLUSH_TIMEOUT, &mut bus).await.is_err() {
            bus_cancel.cancel();
            let _ = bus.await;
        }
        Ok(())
    }
}
