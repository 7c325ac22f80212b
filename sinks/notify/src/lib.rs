//! `notify`: desktop notifications the moment an agent needs its user, and a click that takes
//! them there.
//!
//! Two tasks, so that a slow or absent notification server can never make this sink stop
//! reading the registry's broadcast (which would make it lag) or block anyone else:
//! - the reader ([`NotifySink::run`]) follows the registry (`atm_core::registry_follow`) and turns
//!   changes, through the pure [`plan::Planner`], into one wish per session ("show this", "close", "forget"), handed over
//!   through [`queue::DesiredQueue`] (latest wish per session wins; bounded);
//! - the [`deliver::Deliverer`] owns the single D-Bus connection ([`server`]), applies the grace
//!   delay and the rate limit ([`pending`]) and the tmux quiet rule, keeps the notifications on
//!   screen ([`shown`]), offers their buttons and answers requests through the registry
//!   ([`actions`]), and runs the focus action ([`focus`]).
//!
//! Both count what they did in one [`NotifyStats`] (changes planned from, failures, server-side
//! closes).

mod actions;
mod burst;
pub mod config;
pub mod content;
pub mod deliver;
mod focus;
mod pending;
pub mod plan;
pub mod queue;
mod server;
mod shown;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tmux;

use std::sync::Arc;
use std::time::Duration;

use atm_core::plugin::{OutputSink, PluginError, SinkContext};
use atm_core::registry_follow::Followed;
use tracing::{debug, warn};

pub use config::{NotifyConfig, NotifyOn};
pub use stats::NotifyStats;

use crate::deliver::Deliverer;
use crate::plan::Planner;
use crate::queue::DesiredQueue;
use crate::tmux::{Tmux, TmuxSocket};

/// How long to wait for the deliverer after cancellation. It stops at once by construction (every
/// wait it does races the cancellation); this bound only keeps a bug from hanging shutdown.
const STOP_GRACE: Duration = Duration::from_secs(3);

atm_core::register_plugin! {
    sink "notify",
    description: "Desktop notifications (org.freedesktop.Notifications) when an agent needs you or finishes, with Allow/Deny buttons for waiting requests and a Focus action for tmux",
    sample_config: include_str!("../sample.toml"),
    optional: true,
    factory: |cfg| Ok(Box::new(NotifySink::new(NotifyConfig::from_toml(cfg)?))),
}

/// The `notify` output sink.
pub struct NotifySink {
    config: Arc<NotifyConfig>,
    stats: NotifyStats,
}

impl NotifySink {
    pub fn new(config: NotifyConfig) -> Self {
        Self {
            config: Arc::new(config),
            stats: NotifyStats::default(),
        }
    }

    /// The sink's counters, live while it runs.
    pub fn stats(&self) -> NotifyStats {
        self.stats.clone()
    }

    fn tmux(&self) -> Tmux {
        let socket = match (&self.config.tmux_socket, &self.config.tmux_socket_name) {
            (Some(path), _) => TmuxSocket::Path(atm_core::paths::expand(path)),
            (None, Some(name)) => TmuxSocket::Name(name.clone()),
            (None, None) => TmuxSocket::Default,
        };
        Tmux::new(socket)
    }
}

#[atm_core::async_trait]
impl OutputSink for NotifySink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let (snapshot, mut follower) = ctx.follow().await?;
        let mut planner = Planner::new(self.config.clone(), &snapshot);
        self.stats.sink().applied(snapshot.seq);
        let queue = Arc::new(DesiredQueue::default());
        let deliver_cancel = ctx.cancel.child_token();
        let deliverer = tokio::spawn(
            Deliverer::new(self.config.clone(), queue.clone(), self.tmux())
                .with_stats(self.stats.clone())
                .with_registry(ctx.registry.clone())
                .run(deliver_cancel.clone()),
        );
        while let Some(followed) = follower.next().await {
            match followed {
                Followed::Changes(changes) => {
                    for event in &changes {
                        if let Some((key, desired)) = planner.on_event(event) {
                            debug!(
                                session = %event.session.id,
                                state = %event.session.state,
                                wish = desired.label(),
                                "notification wish"
                            );
                            queue.push(key, desired);
                        }
                        self.stats.sink().applied(event.seq);
                    }
                }
                Followed::Resync { snapshot, missed } => {
                    // Old changes are old news: resynchronise, never replay them.
                    warn!(missed, "notify fell behind the registry; resynchronising");
                    for (key, desired) in planner.resync(&snapshot) {
                        queue.push(key, desired);
                    }
                    self.stats.sink().applied(snapshot.seq);
                }
            }
        }
        deliver_cancel.cancel();
        if tokio::time::timeout(STOP_GRACE, deliverer).await.is_err() {
            debug!("notification deliverer did not stop in time; left to finish");
        }
        Ok(())
    }
}
