//! Following the registry: the one way a sink learns about sessions.
//!
//! # What
//!
//! [`SinkContext::follow`] (or [`RegistryFollower::start`]) returns a consistent [`Snapshot`]
//! of every session and a [`RegistryFollower`]; each [`RegistryFollower::next`] then yields
//! either the next changes, in sequence order, or, when the sink fell behind the registry's
//! bounded broadcast, a **resync** carrying a fresh snapshot. `None` means stop: the sink was
//! cancelled or the registry's stream closed (the daemon is shutting down); flush what you have
//! and return `Ok(())`.
//!
//! # Why
//!
//! The registry never waits for a sink: its change stream is a bounded broadcast, and a
//! receiver that falls behind loses changes and is told how many (`Lagged`). Every sink must
//! then start over from a snapshot taken *together with* a new receiver, or it would show
//! sessions that are gone or miss ones that appeared. That dance (subscribe, race the
//! cancellation, batch what is ready, lagged -> resubscribe, closed -> stop) is the same for
//! every sink, so it lives here once.
//!
//! # How to use
//!
//! ```no_run
//! # async fn run(ctx: atm_core::SinkContext) -> Result<(), atm_core::PluginError> {
//! use atm_core::registry_follow::Followed;
//!
//! let (snapshot, mut follower) = ctx.follow().await?;
//! // ... publish `snapshot.sessions` ...
//! while let Some(followed) = follower.next().await {
//!     match followed {
//!         Followed::Changes(changes) => { /* apply each change, in order */ }
//!         Followed::Resync { snapshot, missed } => { /* rebuild from `snapshot` */ }
//!     }
//! }
//! // Cancelled or the registry stopped: flush, then
//! Ok(())
//! # }
//! ```
//!
//! Work slower than the registry (a socket, a bus) does not belong in this loop: hand changes to
//! a [`crate::coalesce::SharedQueue`] and do it in another task, so the follower keeps up.
//! Changes carry `seq`, one more per change; a snapshot carries the `seq` of the last change it
//! reflects, so a consumer that rebuilds from a newer snapshot skips changes with `seq` at most
//! the snapshot's.

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::plugin::{PluginError, SinkContext};
use crate::registry::{RegistryHandle, SessionEvent, Snapshot};

/// Changes handed out at most per [`RegistryFollower::next`] by default: enough to amortise a
/// sink's per-batch work (a lock), few enough to keep the latency of the first one low.
pub const DEFAULT_BATCH: usize = 256;

/// What the registry did since the last [`RegistryFollower::next`].
#[derive(Debug)]
pub enum Followed {
    /// At least one change, in sequence order, at most the follower's batch size.
    Changes(Vec<SessionEvent>),
    /// The sink fell behind and `missed` changes are lost: rebuild from `snapshot`, which was
    /// taken with the receiver of every change after it.
    Resync { snapshot: Snapshot, missed: u64 },
}

/// A sink's view of the registry's change stream (see the module docs).
#[derive(Debug)]
pub struct RegistryFollower {
    registry: RegistryHandle,
    cancel: CancellationToken,
    changes: Receiver<SessionEvent>,
    batch: usize,
    /// A lag seen while batching: the next call resyncs.
    lagged: Option<u64>,
}

impl SinkContext {
    /// Follows the registry until this sink is cancelled: a consistent snapshot and the
    /// follower of every change after it. See [`crate::registry_follow`].
    pub async fn follow(&self) -> Result<(Snapshot, RegistryFollower), PluginError> {
        RegistryFollower::start(self.registry.clone(), self.cancel.clone()).await
    }
}

impl RegistryFollower {
    /// Subscribes to `registry`; the follower ends when `cancel` fires.
    pub async fn start(
        registry: RegistryHandle,
        cancel: CancellationToken,
    ) -> Result<(Snapshot, Self), PluginError> {
        let (snapshot, changes) = registry
            .subscribe()
            .await
            .map_err(|e| PluginError::Other(format!("cannot follow the registry: {e}")))?;
        let follower = Self {
            registry,
            cancel,
            changes,
            batch: DEFAULT_BATCH,
            lagged: None,
        };
        Ok((snapshot, follower))
    }

    /// Hands out at most `max` changes per call (at least 1).
    pub fn with_batch(mut self, max: usize) -> Self {
        self.batch = max.max(1);
        self
    }

    /// The next changes (waiting for at least one), or a resync. `None`: cancelled, or the
    /// registry stopped. Cancellation wins over pending changes.
    pub async fn next(&mut self) -> Option<Followed> {
        if let Some(missed) = self.lagged.take() {
            return self.resync(missed).await;
        }
        let first = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return None,
            r = self.changes.recv() => r,
        };
        match first {
            Ok(event) => {
                let mut changes = vec![event];
                while changes.len() < self.batch {
                    match self.changes.try_recv() {
                        Ok(e) => changes.push(e),
                        Err(TryRecvError::Lagged(missed)) => {
                            self.lagged = Some(missed);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                Some(Followed::Changes(changes))
            }
            Err(RecvError::Lagged(missed)) => self.resync(missed).await,
            Err(RecvError::Closed) => None,
        }
    }

    /// A fresh snapshot with a new receiver: the old receiver has lost changes for good.
    async fn resync(&mut self, missed: u64) -> Option<Followed> {
        let subscribed = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return None,
            r = self.registry.subscribe() => r,
        };
        // The only error is a registry that stopped: the end of the stream.
        let (snapshot, changes) = subscribed.ok()?;
        self.changes = changes;
        Some(Followed::Resync { snapshot, missed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentEvent, EventEnvelope, EventSource, StartSource};
    use crate::model::{Harness, SessionId};
    use crate::registry::{Registry, RegistryConfig, SessionChange};
    use std::time::Duration;

    async fn registry(broadcast_capacity: usize) -> RegistryHandle {
        Registry::start(RegistryConfig {
            cleanup_interval: Duration::ZERO,
            broadcast_capacity,
            ..RegistryConfig::default()
        })
        .await
        .handle
    }

    async fn start_session(r: &RegistryHandle, id: &str) {
        let source = EventSource::new(Harness::claude(), SessionId::new(id), "test");
        let started = AgentEvent::SessionStarted {
            source: StartSource::Startup,
            model: None,
        };
        r.apply_event(EventEnvelope::now(source, started))
            .await
            .unwrap();
    }

    async fn next(f: &mut RegistryFollower) -> Option<Followed> {
        tokio::time::timeout(Duration::from_secs(10), f.next())
            .await
            .expect("the follower answers")
    }

    #[tokio::test]
    async fn a_snapshot_then_every_change_after_it_in_batches() {
        let r = registry(64).await;
        start_session(&r, "before").await;
        let (snapshot, follower) = RegistryFollower::start(r.clone(), CancellationToken::new())
            .await
            .unwrap();
        let mut follower = follower.with_batch(2);
        assert_eq!(snapshot.sessions.len(), 1);
        for id in ["a", "b", "c"] {
            start_session(&r, id).await;
        }
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let Some(Followed::Changes(changes)) = next(&mut follower).await else {
                panic!("expected changes");
            };
            assert!(changes.len() <= 2);
            seen.extend(changes);
        }
        let ids: Vec<_> = seen
            .iter()
            .map(|e| e.session.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(seen.iter().all(|e| e.change == SessionChange::Added));
        assert!(seen.iter().all(|e| e.seq > snapshot.seq));
    }

    #[tokio::test]
    async fn a_lagging_follower_resyncs_from_a_fresh_snapshot() {
        let r = registry(2).await;
        let (_, mut follower) = RegistryFollower::start(r.clone(), CancellationToken::new())
            .await
            .unwrap();
        for i in 0..10 {
            start_session(&r, &format!("s{i}")).await;
        }
        let Some(Followed::Resync { snapshot, missed }) = next(&mut follower).await else {
            panic!("expected a resync");
        };
        assert!(missed > 0);
        assert_eq!(snapshot.sessions.len(), 10);
        // Changes after the fresh snapshot follow it.
        start_session(&r, "after").await;
        let Some(Followed::Changes(changes)) = next(&mut follower).await else {
            panic!("expected changes");
        };
        assert_eq!(changes[0].seq, snapshot.seq + 1);
    }

    #[tokio::test]
    async fn cancellation_and_a_stopped_registry_end_the_follower() {
        let r = registry(64).await;
        let cancel = CancellationToken::new();
        let (_, mut follower) = RegistryFollower::start(r.clone(), cancel.clone())
            .await
            .unwrap();
        start_session(&r, "pending").await;
        cancel.cancel();
        assert!(next(&mut follower).await.is_none(), "cancel wins");

        let stopping = Registry::start(RegistryConfig {
            cleanup_interval: Duration::ZERO,
            ..RegistryConfig::default()
        })
        .await;
        let (_, mut follower) =
            RegistryFollower::start(stopping.handle.clone(), CancellationToken::new())
                .await
                .unwrap();
        stopping.handle.shutdown().await.unwrap();
        assert!(next(&mut follower).await.is_none(), "closed stream ends it");
    }
}
