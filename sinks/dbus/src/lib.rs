//! The `dbus` output sink: the live session registry as a documented, introspectable D-Bus
//! service (`io.github.atm.Monitor`, interfaces `io.github.atm.Monitor1` and
//! `io.github.atm.Monitor1.Session`; see the README for the whole contract).
//!
//! Two tasks, so that D-Bus can never slow the registry down:
//! - the **follower** (this module's `run`) follows the registry (`atm_core::registry_follow`) and hands
//!   each change to the bounded [`handoff::ChangeQueue`] without ever waiting (coalescing per
//!   session when full, resynchronising from a snapshot when it lags), and works out which
//!   pending requests appeared or ended ([`requests::RequestTracker`]) for a small queue of
//!   request signals of their own, which coalescing never merges away;
//! - the **bus task** ([`bus::BusTask`]) applies the changes to the published [`service::Mirror`],
//!   emits the signals, and owns the connection with its reconnect-with-backoff loop. The
//!   manager's request methods (`ListRequests`, `Approve`, `Deny`, `Answer`: [`answer`]) check
//!   that the caller is atmd's own user and take decisions straight to the registry.
//!
//! The sink is optional: without a bus it logs one line, keeps tracking sessions, and registers
//! everything as soon as a bus is there.

mod answer;
mod bus;
pub mod config;
mod handoff;
pub mod path;
pub mod props;
mod requests;
mod send;
mod service;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use atm_core::registry_follow::Followed;
use atm_core::{OutputSink, PluginError, SinkContext, SinkStats};
use tracing::debug;

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
    stats: SinkStats,
}

impl DbusSink {
    pub fn new(config: DbusConfig) -> Self {
        Self {
            config,
            stats: SinkStats::default(),
        }
    }

    /// The sink's counters, live while it runs.
    pub fn stats(&self) -> SinkStats {
        self.stats.clone()
    }
}

#[atm_core::async_trait]
impl OutputSink for DbusSink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let (snapshot, mut follower) = ctx.follow().await?;
        let queue = Arc::new(handoff::change_queue(self.config.queue_capacity));
        let mut tracker = requests::RequestTracker::seed(&snapshot);
        let (mut signals, signals_rx) = requests::signal_queue();
        let mut found = Vec::new();
        let task = bus::BusTask::new(
            self.config,
            ctx.registry.clone(),
            ctx.control.clone(),
            queue.clone(),
            signals_rx,
            service::SharedMirror::default(),
            self.stats,
        );
        let bus_cancel = ctx.cancel.child_token();
        let mut bus = tokio::spawn(task.run(snapshot, bus_cancel.clone()));
        let mut handoff = handoff::Handoff::default();

        loop {
            tokio::select! {
                biased;
                followed = follower.next() => match followed {
                    Some(Followed::Changes(changes)) => {
                        for event in changes {
                            // Before the change they come from (see `requests`).
                            tracker.observe(&event, &mut found);
                            signals.push_all(&mut found);
                            handoff.push(&queue, event);
                        }
                    }
                    Some(Followed::Resync { missed, snapshot }) => {
                        tracker.resync(&snapshot, &mut found);
                        signals.push_all(&mut found);
                        handoff.lagged(&queue, missed);
                    }
                    None => {
                        debug!("registry stopped or sink cancelled; flushing the D-Bus sink");
                        break;
                    }
                },
                _ = &mut bus => {
                    return Err(PluginError::Other("the D-Bus task stopped unexpectedly".into()));
                }
            }
        }
        queue.close();
        if tokio::time::timeout(FLUSH_TIMEOUT, &mut bus).await.is_err() {
            bus_cancel.cancel();
            let _ = bus.await;
        }
        Ok(())
    }
}
