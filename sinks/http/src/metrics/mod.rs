//! PLACEHOLDER for issue 17's `/metrics` content, written in another worktree: the lead
//! replaces this file with the real module at merge. It keeps only the interface the rest of
//! the sink uses: a cheap-to-clone [`Metrics`], its follower of the registry, and
//! [`Metrics::encode`] (Prometheus text format 0.0.4).

use atm_core::PluginError;
use atm_core::registry::{RegistryHandle, SessionChange};
use tokio_util::sync::CancellationToken;

/// The sink's metrics (placeholder: one gauge, the sessions known).
#[derive(Clone, Default)]
pub struct Metrics {
    sessions: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the metrics current until `cancel` fires or the registry stops.
    pub async fn follow(
        self,
        registry: RegistryHandle,
        cancel: CancellationToken,
    ) -> Result<(), PluginError> {
        use atm_core::registry_follow::{Followed, RegistryFollower};
        let (snapshot, mut follower) = RegistryFollower::start(registry, cancel).await?;
        let count = |n: usize| {
            self.sessions
                .store(n as u64, std::sync::atomic::Ordering::Relaxed)
        };
        let mut known = snapshot.sessions.len();
        count(known);
        while let Some(followed) = follower.next().await {
            match followed {
                Followed::Changes(changes) => {
                    for c in changes {
                        match c.change {
                            SessionChange::Added => known += 1,
                            SessionChange::Removed { .. } => known = known.saturating_sub(1),
                            SessionChange::Updated => {}
                        }
                    }
                    count(known);
                }
                Followed::Resync { snapshot, .. } => {
                    known = snapshot.sessions.len();
                    count(known);
                }
            }
        }
        Ok(())
    }

    /// Prometheus text format.
    pub fn encode(&self) -> String {
        let n = self.sessions.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "# HELP atm_sessions Sessions the daemon knows.\n# TYPE atm_sessions gauge\natm_sessions {n}\n"
        )
    }
}
