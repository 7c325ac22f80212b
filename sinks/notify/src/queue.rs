//! The hand-off between the task that reads registry changes and the task that talks D-Bus:
//! atm-core's bounded coalescing queue ([`SharedQueue`]) holding only the latest wish per session
//! ([`QueuePolicy::latest_per_key`]).
//!
//! One slot per session: a newer wish for a session replaces the older one (the latest state is
//! the only one worth showing), so a slow or absent notification server never makes the reader
//! wait and never grows memory beyond one entry per session. The map is additionally capped at
//! [`MAX_SESSIONS`]; when full, a wish for a session not yet in it is dropped and counted (the
//! registry's own session cap is lower by default, so this is a safety net, not a policy users
//! meet). There is no resync in the queue: when the reader lags it resynchronises its planner
//! from a fresh snapshot, which pushes the wishes that bring every session up to date.

use atm_core::SessionKey;
use atm_core::coalesce::{Pushed, QueuePolicy, SharedQueue};
use tracing::warn;

use crate::plan::Desired;

/// The most sessions with a wish waiting.
pub const MAX_SESSIONS: usize = 16_384;

pub struct DesiredQueue {
    queue: SharedQueue<SessionKey, (SessionKey, Desired)>,
}

impl Default for DesiredQueue {
    fn default() -> Self {
        Self {
            queue: SharedQueue::new(QueuePolicy::latest_per_key(MAX_SESSIONS)),
        }
    }
}

impl DesiredQueue {
    /// Records the latest wish for `key`. Never waits.
    pub fn push(&self, key: SessionKey, desired: Desired) {
        let slot = key.clone();
        if let Pushed::Dropped { total } = self.queue.push(&slot, (key, desired))
            && total.is_power_of_two()
        {
            warn!(
                dropped = total,
                "notification queue full; dropping notifications for new sessions"
            );
        }
    }

    /// Takes every waiting wish.
    pub fn drain(&self) -> Vec<(SessionKey, Desired)> {
        self.queue.take().entries
    }

    /// Resolves once something was pushed since the last wake-up.
    pub async fn changed(&self) {
        self.queue.ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> SessionKey {
        atm_core::testing::claude_key(&format!("s{i}"))
    }

    #[test]
    fn latest_wish_per_session_wins_and_the_map_is_capped() {
        let q = DesiredQueue::default();
        q.push(key(1), Desired::Close);
        q.push(key(1), Desired::Forget);
        let got = q.drain();
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0].1, Desired::Forget));
        assert!(q.drain().is_empty());
        for i in 0..MAX_SESSIONS + 10 {
            q.push(key(i), Desired::Close);
        }
        // A known session still updates when full.
        q.push(key(0), Desired::Forget);
        let got = q.drain();
        assert_eq!(got.len(), MAX_SESSIONS);
        assert!(
            got.iter()
                .any(|(k, d)| *k == key(0) && matches!(d, Desired::Forget))
        );
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let q = DesiredQueue::default();
        q.push(key(1), Desired::Close);
        tokio::time::timeout(std::time::Duration::from_secs(5), q.changed())
            .await
            .expect("wake-up kept");
    }
}
