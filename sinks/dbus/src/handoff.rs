//! The hand-off from the registry follower to the bus task: atm-core's bounded coalescing queue
//! ([`SharedQueue`]) with the D-Bus sink's policy and log lines.
//!
//! The follower must never wait for D-Bus (a slow or frozen bus must not make the registry's
//! broadcast lag), and the bus task must never see more than a bounded backlog. So
//! ([`QueuePolicy::ordered_then_latest`] with `queue_capacity`):
//!
//! - Up to `capacity` changes queue in order.
//! - When the queue is full, changes are **coalesced per session** (by key): only the latest
//!   change of each session is kept (subscribers then see one `StateChanged` from the last
//!   published state to the newest, not every intermediate one). Once coalescing has started,
//!   every further change is coalesced too, so order within a session is kept.
//! - When `capacity` distinct sessions are coalesced as well, everything pending is dropped and
//!   a **resync** is requested: the bus task rebuilds from a fresh registry snapshot. The same
//!   happens when the follower lags behind the registry broadcast.
//!
//! Memory is therefore bounded by twice `capacity` changes, whatever the bus does.

use atm_core::coalesce::{Pushed, QueuePolicy, SharedQueue};
use atm_core::{SessionChange, SessionEvent, SessionKey};
use tracing::{debug, warn};

use crate::throttle::Throttle;

/// Registry changes on their way to the bus task, latest per session key when it is behind.
pub type ChangeQueue = SharedQueue<SessionKey, SessionEvent>;

/// The queue for `capacity` (the `queue_capacity` key).
pub fn change_queue(capacity: usize) -> ChangeQueue {
    SharedQueue::new(QueuePolicy::ordered_then_latest(capacity.max(1)))
}

/// Hands changes to the bus task and says so, throttled, when it is behind.
#[derive(Debug, Default)]
pub struct Handoff {
    overflow_log: Throttle,
    resync_log: Throttle,
    lag_log: Throttle,
}

impl Handoff {
    /// Adds one registry change; never waits.
    pub fn push(&mut self, queue: &ChangeQueue, event: SessionEvent) {
        // A re-key is sent as removed(old id) + added(new id) for the same key. The object keeps
        // its path and only its `Id` changes, which the `Added` that follows carries.
        if matches!(&event.change, SessionChange::Removed { reason } if reason == atm_core::registry::REKEYED)
        {
            return;
        }
        let key = event.session.key.clone();
        match queue.push(&key, event) {
            Pushed::Coalesced { started: true } => match self.overflow_log.allow() {
                Some(before) => warn!(
                    capacity = queue.inspect(|q| q.policy().ordered),
                    earlier_episodes = before,
                    "D-Bus sink is behind: coalescing changes per session until it catches up"
                ),
                None => debug!("D-Bus sink is behind again: coalescing"),
            },
            Pushed::Resync => match self.resync_log.allow() {
                Some(before) => warn!(
                    earlier = before,
                    "D-Bus sink is far behind: dropping queued changes and resynchronising"
                ),
                None => debug!("D-Bus sink is far behind again: resynchronising"),
            },
            Pushed::Queued
            | Pushed::Coalesced { started: false }
            | Pushed::Covered
            | Pushed::Dropped { .. } => {}
        }
    }

    /// The follower lost `missed` changes: drop the backlog, rebuild from a snapshot.
    pub fn lagged(&mut self, queue: &ChangeQueue, missed: u64) {
        match self.lag_log.allow() {
            Some(earlier) => warn!(
                missed,
                earlier_lags = earlier,
                "D-Bus sink fell behind the registry; resynchronising from a snapshot"
            ),
            None => debug!(missed, "D-Bus sink fell behind the registry again"),
        }
        queue.request_resync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::AgentState;
    use atm_core::chrono::Utc;
    use atm_core::coalesce::Batch;
    use std::sync::Arc;

    fn event(seq: u64, id: &str, state: AgentState, change: SessionChange) -> SessionEvent {
        let mut s = atm_core::testing::claude_session(id, Utc::now());
        s.state = state;
        SessionEvent {
            seq,
            change,
            session: Arc::new(s),
            previous_state: None,
            requests: Default::default(),
        }
    }

    fn seqs(b: &Batch<SessionEvent>) -> Vec<u64> {
        b.entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn changes_queue_in_order_up_to_capacity() {
        let (q, mut h) = (change_queue(4), Handoff::default());
        for seq in 1..=3 {
            h.push(
                &q,
                event(seq, "a", AgentState::Working, SessionChange::Updated),
            );
        }
        let b = q.take();
        assert_eq!(seqs(&b), [1, 2, 3]);
        assert!(!b.resync && !b.closed);
        assert!(q.take().entries.is_empty());
    }

    #[test]
    fn a_full_queue_coalesces_per_session_keeping_the_latest() {
        let (q, mut h) = (change_queue(2), Handoff::default());
        h.push(&q, event(1, "a", AgentState::Working, SessionChange::Added));
        h.push(&q, event(2, "b", AgentState::Working, SessionChange::Added));
        // Full from here on: a and b are coalesced, newest wins.
        h.push(
            &q,
            event(3, "a", AgentState::NeedsPermission, SessionChange::Updated),
        );
        h.push(&q, event(4, "b", AgentState::Idle, SessionChange::Updated));
        h.push(&q, event(5, "a", AgentState::Idle, SessionChange::Updated));
        let b = q.take();
        assert_eq!(seqs(&b), [1, 2, 4, 5]);
        assert_eq!(b.entries[3].session.state, AgentState::Idle);
        // After a take, queueing starts again.
        h.push(
            &q,
            event(6, "a", AgentState::Working, SessionChange::Updated),
        );
        assert_eq!(seqs(&q.take()), [6]);
    }

    #[test]
    fn too_many_coalesced_sessions_turn_into_a_resync() {
        let (q, mut h) = (change_queue(2), Handoff::default());
        for (seq, id) in (1..).zip(["a", "b", "c", "d", "e"]) {
            h.push(
                &q,
                event(seq, id, AgentState::Working, SessionChange::Added),
            );
        }
        let b = q.take();
        assert!(b.resync);
        // Everything pending is covered by the snapshot the bus task will take.
        assert!(b.entries.is_empty());
        h.push(&q, event(6, "a", AgentState::Idle, SessionChange::Updated));
        assert_eq!(seqs(&q.take()), [6]);
    }

    #[test]
    fn rekey_removals_are_skipped_and_resync_drops_the_backlog() {
        let (q, mut h) = (change_queue(8), Handoff::default());
        let rekey = SessionChange::Removed {
            reason: "re-keyed".into(),
        };
        h.push(&q, event(1, "a", AgentState::Working, rekey));
        h.push(&q, event(2, "a", AgentState::Working, SessionChange::Added));
        assert_eq!(seqs(&q.take()), [2]);
        h.push(&q, event(3, "a", AgentState::Idle, SessionChange::Updated));
        h.lagged(&q, 1);
        h.push(
            &q,
            event(4, "a", AgentState::Working, SessionChange::Updated),
        );
        q.close();
        let b = q.take();
        assert!(b.resync && b.closed);
        assert_eq!(seqs(&b), [4]);
    }
}
