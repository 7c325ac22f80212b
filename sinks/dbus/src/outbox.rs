//! `Outbox`: the bounded hand-off from the registry consumer to the bus task.
//!
//! The consumer must never wait for D-Bus (a slow or frozen bus must not make the registry's
//! broadcast lag), and the bus task must never see more than a bounded backlog. So:
//!
//! - Up to `capacity` changes queue in order.
//! - When the queue is full, changes are **coalesced per session**: only the latest change of
//!   each session is kept (subscribers then see one `StateChanged` from the last published state
//!   to the newest, not every intermediate one). Once coalescing has started, every further
//!   change is coalesced too, so order within a session is kept.
//! - When `capacity` distinct sessions are coalesced as well, everything pending is dropped and
//!   a **resync** is requested: the bus task rebuilds from a fresh registry snapshot. The same
//!   happens when the consumer lags behind the registry broadcast.
//!
//! Memory is therefore bounded by twice `capacity` changes, whatever the bus does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use atm_core::{SessionChange, SessionEvent, SessionKey};
use tokio::sync::Notify;
use tracing::{debug, warn};

/// At most one warning per this long for a recurring overload, so a sustained burst is a few
/// lines in the log, not one per change.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a recurring warning through once per [`WARN_EVERY`], counting what it held back.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// `Some(n)` when this occurrence should be logged (`n`: occurrences held back since the
    /// last one logged); `None` to log it at debug level only.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[derive(Default)]
struct Pending {
    resync: bool,
    queue: VecDeque<SessionEvent>,
    coalesced: HashMap<SessionKey, SessionEvent>,
    /// Set when coalescing starts, so an overflow is considered once per episode, not per change.
    overflowing: bool,
    overflow_log: Throttle,
    resync_log: Throttle,
    closed: bool,
}

/// What the bus task takes in one go.
#[derive(Default)]
pub struct Batch {
    /// Rebuild from a registry snapshot before applying `events`.
    pub resync: bool,
    /// In sequence order.
    pub events: Vec<SessionEvent>,
    /// The consumer has stopped: nothing more will come.
    pub closed: bool,
}

pub struct Outbox {
    pending: Mutex<Pending>,
    wake: Notify,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The critical sections cannot panic half-way; a poisoned lock still holds valid data.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one registry change; never waits.
    pub fn push(&self, event: SessionEvent) {
        // A re-key is sent as removed(old id) + added(new id) for the same key. The object keeps
        // its path and only its `Id` changes, which the `Added` that follows carries.
        if matches!(&event.change, SessionChange::Removed { reason } if reason == atm_core::registry::REKEYED)
        {
            return;
        }
        {
            let mut p = self.lock();
            if p.queue.len() < self.capacity && p.coalesced.is_empty() {
                p.queue.push_back(event);
            } else {
                if !p.overflowing {
                    p.overflowing = true;
                    match p.overflow_log.allow() {
                        Some(before) => warn!(
                            capacity = self.capacity,
                            earlier_episodes = before,
                            "D-Bus sink is behind: coalescing changes per session until it catches up"
                        ),
                        None => debug!("D-Bus sink is behind again: coalescing"),
                    }
                }
                let key = event.session.key.clone();
                if p.coalesced.len() >= self.capacity && !p.coalesced.contains_key(&key) {
                    match p.resync_log.allow() {
                        Some(before) => warn!(
                            earlier = before,
                            "D-Bus sink is far behind: dropping queued changes and resynchronising"
                        ),
                        None => debug!("D-Bus sink is far behind again: resynchronising"),
                    }
                    p.queue.clear();
                    p.coalesced.clear();
                    p.resync = true;
                } else {
                    p.coalesced.insert(key, event);
                }
            }
        }
        self.wake.notify_one();
    }

    /// Drops everything pending and asks for a rebuild from a fresh snapshot.
    pub fn request_resync(&self) {
        {
            let mut p = self.lock();
            p.queue.clear();
            p.coalesced.clear();
            p.resync = true;
        }
        self.wake.notify_one();
    }

    /// No more changes will be pushed.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Takes everything pending (possibly nothing).
    pub fn take(&self) -> Batch {
        let mut p = self.lock();
        let mut events: Vec<SessionEvent> = p.queue.drain(..).collect();
        let mut coalesced: Vec<SessionEvent> = p.coalesced.drain().map(|(_, e)| e).collect();
        coalesced.sort_by_key(|e| e.seq);
        events.extend(coalesced);
        p.overflowing = false;
        Batch {
            resync: std::mem::take(&mut p.resync),
            events,
            closed: p.closed,
        }
    }

    /// Waits until something was pushed since the last `take`.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::chrono::Utc;
    use atm_core::{AgentState, Harness, Session, SessionId};
    use std::sync::Arc;

    fn event(seq: u64, id: &str, state: AgentState, change: SessionChange) -> SessionEvent {
        let key = SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new(id),
        };
        let mut s = Session::new(key, SessionId::new(id), None, "t", Utc::now());
        s.state = state;
        SessionEvent {
            seq,
            change,
            session: Arc::new(s),
            previous_state: None,
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn changes_queue_in_order_up_to_capacity() {
        let o = Outbox::new(4);
        for seq in 1..=3 {
            o.push(event(seq, "a", AgentState::Working, SessionChange::Updated));
        }
        let b = o.take();
        assert_eq!(seqs(&b), [1, 2, 3]);
        assert!(!b.resync && !b.closed);
        assert!(o.take().events.is_empty());
    }

    #[test]
    fn the_throttle_lets_one_warning_through_and_counts_the_rest() {
        let mut t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(t.allow(), Some(2));
    }

    #[test]
    fn a_full_queue_coalesces_per_session_keeping_the_latest() {
        let o = Outbox::new(2);
        o.push(event(1, "a", AgentState::Working, SessionChange::Added));
        o.push(event(2, "b", AgentState::Working, SessionChange::Added));
        // Full from here on: a and b are coalesced, newest wins.
        o.push(event(
            3,
            "a",
            AgentState::NeedsPermission,
            SessionChange::Updated,
        ));
        o.push(event(4, "b", AgentState::Idle, SessionChange::Updated));
        o.push(event(5, "a", AgentState::Idle, SessionChange::Updated));
        let b = o.take();
        assert_eq!(seqs(&b), [1, 2, 4, 5]);
        assert_eq!(b.events[3].session.state, AgentState::Idle);
        // After a take, queueing starts again.
        o.push(event(6, "a", AgentState::Working, SessionChange::Updated));
        assert_eq!(seqs(&o.take()), [6]);
    }

    #[test]
    fn too_many_coalesced_sessions_turn_into_a_resync() {
        let o = Outbox::new(2);
        for (seq, id) in (1..).zip(["a", "b", "c", "d", "e"]) {
            o.push(event(seq, id, AgentState::Working, SessionChange::Added));
        }
        let b = o.take();
        assert!(b.resync);
        // Everything pending is covered by the snapshot the bus task will take.
        assert!(b.events.is_empty());
        o.push(event(6, "a", AgentState::Idle, SessionChange::Updated));
        assert_eq!(seqs(&o.take()), [6]);
    }

    #[test]
    fn rekey_removals_are_skipped_and_resync_drops_the_backlog() {
        let o = Outbox::new(8);
        let rekey = SessionChange::Removed {
            reason: "re-keyed".into(),
        };
        o.push(event(1, "a", AgentState::Working, rekey));
        o.push(event(2, "a", AgentState::Working, SessionChange::Added));
        assert_eq!(seqs(&o.take()), [2]);
        o.push(event(3, "a", AgentState::Idle, SessionChange::Updated));
        o.request_resync();
        o.push(event(4, "a", AgentState::Working, SessionChange::Updated));
        o.close();
        let b = o.take();
        assert!(b.resync && b.closed);
        assert_eq!(seqs(&b), [4]);
    }
}
