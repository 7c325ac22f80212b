//! The bounded latest-per-key coalescing queue with resync that stands between a sink's
//! registry follower and whatever is slower than the registry (a client socket, a bus, a
//! notification server, a network peer).
//!
//! # Why
//!
//! A sink must never make the registry wait (the registry's broadcast would lag for everyone)
//! and must never hold an unbounded backlog for a consumer that stopped. Yet most consumers only
//! need the *latest* state of each session, and every consumer can start over from a fresh
//! snapshot. So instead of a plain bounded channel (which would have to either wait or drop
//! changes silently) this queue degrades in steps, each stated:
//!
//! 1. **In order.** Up to [`QueuePolicy::ordered`] entries queue in arrival order.
//! 2. **Coalesced.** Once that part is full, entries are kept latest-per-key: a newer entry for
//!    a key replaces the older one, so memory is one entry per key however fast changes come.
//!    Once coalescing has started every further entry is coalesced too (until the consumer takes
//!    them), so a key's entries never overtake each other. Coalesced entries are handed out
//!    after the ordered ones, oldest first by their latest push.
//! 3. **Overflow.** More than [`QueuePolicy::max_keys`] distinct keys coalesced, or coalesced
//!    entries waiting longer than [`QueuePolicy::max_age`], is an overflow. What happens then is
//!    [`QueuePolicy::on_overflow`]:
//!    - [`Overflow::Resync`]: the pending entries are dropped and a **resync** is due: the
//!      consumer rebuilds from a fresh registry snapshot *taken when it reaches the resync*, so
//!      it ends with the right state however much it missed. Where the resync sits is
//!      [`QueuePolicy::resync`] (see [`ResyncAt`]).
//!    - [`Overflow::DropNewKeys`]: the entry of a key not yet held is dropped and counted; keys
//!      already held keep updating. For consumers whose resync is their own business.
//!
//! Memory is therefore bounded by `ordered + max_keys` entries whatever the consumer does.
//! A burst that grew the queue is given back with [`CoalescingQueue::release_idle_capacity`]
//! once it drains, so memory follows the present, not the peak.
//!
//! # The policies of atm's sinks
//!
//! | sink | ordered | max_keys | max_age | overflow | resync |
//! |---|---|---|---|---|---|
//! | socket (per connection) | `queue_capacity` (16,384) | `max_coalesced` (0: the first overflow resyncs: every update or a resync) | `max_coalesce_age` | resync | [`ResyncAt::AfterQueued`] |
//! | dbus | `queue_capacity` (1,024) | `queue_capacity` | none | resync | [`ResyncAt::Now`] |
//! | notify | 0 (latest wish per session only) | 16,384 | none | drop new keys | - |
//!
//! # How to use
//!
//! A sink with one consumer task uses [`SharedQueue`]: the follower pushes, the consumer
//! awaits [`SharedQueue::ready`] and takes [`Batch`]es.
//!
//! ```
//! use atm_core::coalesce::{QueuePolicy, SharedQueue};
//!
//! let queue: SharedQueue<String, u32> = SharedQueue::new(QueuePolicy::ordered_then_latest(2));
//! for (key, value) in [("a", 1), ("b", 1), ("a", 2), ("a", 3)] {
//!     queue.push(key, value); // never waits
//! }
//! let batch = queue.take();
//! assert!(!batch.resync);
//! assert_eq!(batch.entries, [1, 1, 3]); // a and b in order, then a's latest
//! ```
//!
//! In the follower loop (see [`crate::registry_follow`]): push each change with its key (usually the
//! session's `key`); on a follower resync call [`SharedQueue::request_resync`]; on the end of
//! the stream call [`SharedQueue::close`]. In the consumer: when [`Batch::resync`] is set,
//! rebuild from `registry.snapshot()` first, then apply the entries, skipping those whose `seq`
//! the snapshot already reflects.
//!
//! A consumer that needs more (the socket sink keeps its replies in the same order as the
//! updates, and a subscription filter under the same lock) wraps the plain
//! [`CoalescingQueue`] in its own lock instead.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Slots a drained queue keeps allocated by [`SharedQueue`] (see
/// [`CoalescingQueue::release_idle_capacity`]).
pub const IDLE_SLOTS: usize = 64;

/// How a [`CoalescingQueue`] degrades when its consumer falls behind (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Entries queued in arrival order before coalescing starts (0: coalesce from the first).
    pub ordered: usize,
    /// Distinct keys held coalesced; one more is an overflow.
    pub max_keys: usize,
    /// Coalesced entries waiting longer than this are an overflow. `None`: no age limit.
    pub max_age: Option<Duration>,
    pub on_overflow: Overflow,
    /// Where a resync (an overflow's, or [`CoalescingQueue::request_resync`]) sits.
    pub resync: ResyncAt,
}

/// What an overflow does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the pending entries and make a resync due.
    Resync,
    /// Drop the entry of a key not yet held, and count it.
    DropNewKeys,
}

/// Where a due resync sits relative to the entries queued in order. Either way the consumer
/// takes its snapshot when it reaches the resync, so the snapshot covers every change pushed
/// before that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncAt {
    /// Before everything: all pending entries are dropped (the snapshot covers them) and entries
    /// pushed afterwards queue behind the resync. The consumer skips entries whose `seq` its
    /// snapshot already reflects.
    Now,
    /// After the entries already queued in order, which are still handed out (they may be
    /// replies that must not be lost); coalesced entries are dropped, and entries pushed while
    /// the resync is due are dropped too ([`Pushed::Covered`]): the snapshot, taken later, holds
    /// them. For consumers that cannot skip by `seq`.
    AfterQueued,
}

impl QueuePolicy {
    /// `capacity` entries in order, then up to `capacity` keys coalesced, then a resync that
    /// drops everything pending ([`ResyncAt::Now`]). The dbus sink's policy.
    pub fn ordered_then_latest(capacity: usize) -> Self {
        Self {
            ordered: capacity,
            max_keys: capacity,
            max_age: None,
            on_overflow: Overflow::Resync,
            resync: ResyncAt::Now,
        }
    }

    /// Only the latest entry per key, at most `max_keys` keys; entries of further keys are
    /// dropped and counted. The notify sink's policy.
    pub fn latest_per_key(max_keys: usize) -> Self {
        Self {
            ordered: 0,
            max_keys,
            max_age: None,
            on_overflow: Overflow::DropNewKeys,
            resync: ResyncAt::Now,
        }
    }
}

/// What [`CoalescingQueue::push`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued in order.
    Queued,
    /// Kept as the key's latest. `started`: this entry began a coalescing episode (the ordered
    /// part is full), worth one log line.
    Coalesced { started: bool },
    /// This entry overflowed the queue: pending entries were dropped and a resync is due.
    Resync,
    /// Dropped: a resync is due that covers it ([`ResyncAt::AfterQueued`]).
    Covered,
    /// Dropped by [`Overflow::DropNewKeys`]; `total` entries dropped so far.
    Dropped { total: u64 },
}

/// The queue itself, without a lock: for a consumer that keeps more state under its own lock.
/// Most sinks want [`SharedQueue`].
#[derive(Debug)]
pub struct CoalescingQueue<K, V> {
    policy: QueuePolicy,
    ordered: VecDeque<V>,
    /// The latest entry per key and the push number that made it, to hand them out in order.
    coalesced: HashMap<K, (u64, V)>,
    pushes: u64,
    /// When the current coalescing episode started (`None`: not coalescing).
    coalescing_since: Option<Instant>,
    resync: bool,
    resyncs: u64,
    dropped: u64,
}

impl<K: Hash + Eq, V> CoalescingQueue<K, V> {
    pub fn new(policy: QueuePolicy) -> Self {
        Self {
            policy,
            ordered: VecDeque::new(),
            coalesced: HashMap::new(),
            pushes: 0,
            coalescing_since: None,
            resync: false,
            resyncs: 0,
            dropped: 0,
        }
    }

    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    /// Offers one entry for `key`; never waits. The key is copied only when the entry is
    /// coalesced, so the in-order path costs no allocation.
    pub fn push<Q>(&mut self, key: &Q, value: V) -> Pushed
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.resync && self.policy.resync == ResyncAt::AfterQueued {
            return Pushed::Covered;
        }
        if self.coalesced.is_empty() && self.ordered.len() < self.policy.ordered {
            self.ordered.push_back(value);
            return Pushed::Queued;
        }
        let started = self.coalescing_since.is_none();
        let since = *self.coalescing_since.get_or_insert_with(Instant::now);
        let new_key = !self.coalesced.contains_key(key);
        let too_many = new_key && self.coalesced.len() >= self.policy.max_keys;
        let too_old = self.policy.max_age.is_some_and(|age| since.elapsed() > age);
        if too_many || too_old {
            match self.policy.on_overflow {
                Overflow::Resync => {
                    self.resyncs += 1;
                    self.make_resync_due();
                    return Pushed::Resync;
                }
                Overflow::DropNewKeys if new_key => {
                    self.dropped += 1;
                    return Pushed::Dropped {
                        total: self.dropped,
                    };
                }
                Overflow::DropNewKeys => {}
            }
        }
        self.pushes += 1;
        match self.coalesced.get_mut(key) {
            Some(slot) => *slot = (self.pushes, value),
            None => {
                self.coalesced.insert(key.to_owned(), (self.pushes, value));
            }
        }
        Pushed::Coalesced { started }
    }

    /// Queues `value` in order whatever the queue holds: never coalesced, never dropped by an
    /// overflow (only by [`ResyncAt::Now`] resyncs and [`Self::clear`]). For the few entries that
    /// must not be lost (the socket sink's replies); bound them yourself, e.g. by waiting for
    /// [`Self::has_room`] first.
    pub fn push_in_order(&mut self, value: V) {
        self.ordered.push_back(value);
    }

    /// Whether the ordered part has room.
    pub fn has_room(&self) -> bool {
        self.ordered.len() < self.policy.ordered
    }

    /// Drops what is pending as the policy's [`ResyncAt`] says and makes a resync due: for a
    /// consumer that lost the registry's stream (its follower lagged).
    pub fn request_resync(&mut self) {
        self.make_resync_due();
    }

    fn make_resync_due(&mut self) {
        if self.policy.resync == ResyncAt::Now {
            self.ordered.clear();
        }
        // A new map, not `clear()`: an overflow is when the map is largest.
        self.coalesced = HashMap::new();
        self.coalescing_since = None;
        self.resync = true;
    }

    /// Drops the coalesced entries and a due resync, keeping the ordered ones: for a consumer
    /// about to queue a fresh snapshot itself (a new subscription), or that stops wanting them.
    pub fn forget_updates(&mut self) {
        self.coalesced.clear();
        self.coalescing_since = None;
        self.resync = false;
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.ordered.clear();
        self.forget_updates();
    }

    /// The first entry in order, if any.
    pub fn front(&self) -> Option<&V> {
        self.ordered.front()
    }

    /// Takes the first entry in order.
    pub fn pop_front(&mut self) -> Option<V> {
        self.ordered.pop_front()
    }

    /// Whether coalesced entries wait.
    pub fn has_coalesced(&self) -> bool {
        !self.coalesced.is_empty()
    }

    /// Takes the coalesced entries, oldest first by their latest push; ends the coalescing
    /// episode. Call once the ordered part is empty: they come after it.
    pub fn take_coalesced(&mut self) -> Vec<V> {
        let mut entries: Vec<(u64, V)> = self.coalesced.drain().map(|(_, e)| e).collect();
        entries.sort_unstable_by_key(|(n, _)| *n);
        self.coalescing_since = None;
        entries.into_iter().map(|(_, v)| v).collect()
    }

    /// Whether a resync is due now: at once with [`ResyncAt::Now`], once the ordered and
    /// coalesced entries are taken with [`ResyncAt::AfterQueued`].
    pub fn resync_due(&self) -> bool {
        self.resync
            && (self.policy.resync == ResyncAt::Now
                || (self.ordered.is_empty() && self.coalesced.is_empty()))
    }

    /// Takes a due resync (see [`Self::resync_due`]): `true` once per resync.
    pub fn take_resync(&mut self) -> bool {
        let due = self.resync_due();
        if due {
            self.resync = false;
        }
        due
    }

    /// Takes everything that may be applied now: a due resync first, then the ordered entries,
    /// then the coalesced ones. (With [`ResyncAt::AfterQueued`] a resync behind ordered entries
    /// comes with the next batch.)
    pub fn take_all(&mut self) -> Batch<V> {
        let resync = self.take_resync();
        let mut entries: Vec<V> = self.ordered.drain(..).collect();
        entries.extend(self.take_coalesced());
        Batch {
            resync,
            entries,
            closed: false,
        }
    }

    /// Whether nothing is pending (no entry, no resync).
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty() && self.coalesced.is_empty() && !self.resync
    }

    /// Resyncs caused by overflows so far.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Entries dropped by [`Overflow::DropNewKeys`] so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Gives back the room a burst grew, keeping `keep` slots, once a part is drained: a
    /// connection that lagged once does not keep its peak allocation.
    pub fn release_idle_capacity(&mut self, keep: usize) {
        if self.ordered.is_empty() && self.ordered.capacity() > keep {
            self.ordered.shrink_to(keep);
        }
        if self.coalesced.is_empty() && self.coalesced.capacity() > keep {
            self.coalesced.shrink_to(keep);
        }
    }

    /// Room the ordered part holds allocated (to check that bursts are given back).
    pub fn ordered_capacity(&self) -> usize {
        self.ordered.capacity()
    }
}

/// What a consumer takes in one go. Apply in this order: if `resync`, rebuild from a fresh
/// registry snapshot; then `entries` (skipping those the snapshot already reflects).
#[derive(Debug)]
pub struct Batch<V> {
    pub resync: bool,
    pub entries: Vec<V>,
    /// The producer closed the queue ([`SharedQueue::close`]): nothing more will come.
    pub closed: bool,
}

/// A [`CoalescingQueue`] shared by one producer (the sink's follower loop) and one consumer
/// task: pushes never wait and wake the consumer.
#[derive(Debug)]
pub struct SharedQueue<K, V> {
    state: Mutex<Shared<K, V>>,
    wake: Notify,
}

#[derive(Debug)]
struct Shared<K, V> {
    queue: CoalescingQueue<K, V>,
    closed: bool,
}

impl<K: Hash + Eq, V> SharedQueue<K, V> {
    pub fn new(policy: QueuePolicy) -> Self {
        Self {
            state: Mutex::new(Shared {
                queue: CoalescingQueue::new(policy),
                closed: false,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared<K, V>> {
        // Every critical section leaves the queue valid; a panic elsewhere does not spoil it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers one entry (see [`CoalescingQueue::push`]); never waits.
    pub fn push<Q>(&self, key: &Q, value: V) -> Pushed
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let pushed = self.lock().queue.push(key, value);
        if !matches!(pushed, Pushed::Covered | Pushed::Dropped { .. }) {
            self.wake.notify_one();
        }
        pushed
    }

    /// See [`CoalescingQueue::request_resync`].
    pub fn request_resync(&self) {
        self.lock().queue.request_resync();
        self.wake.notify_one();
    }

    /// No more entries will be pushed; the consumer's next batch says so.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Takes everything that may be applied now (possibly nothing).
    pub fn take(&self) -> Batch<V> {
        let mut s = self.lock();
        let mut batch = s.queue.take_all();
        s.queue.release_idle_capacity(IDLE_SLOTS);
        batch.closed = s.closed;
        let more = !s.queue.is_empty();
        drop(s);
        if more {
            // A resync behind the entries just taken (ResyncAt::AfterQueued) is the next batch.
            self.wake.notify_one();
        }
        batch
    }

    /// Waits until something was pushed (or the queue closed) since the last wake-up. A push
    /// made before the wait is not lost.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Reads the queue's counters (resyncs, drops) and lengths.
    pub fn inspect<T>(&self, f: impl FnOnce(&CoalescingQueue<K, V>) -> T) -> T {
        f(&self.lock().queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ordered: usize, max_keys: usize, resync: ResyncAt) -> QueuePolicy {
        QueuePolicy {
            ordered,
            max_keys,
            max_age: None,
            on_overflow: Overflow::Resync,
            resync,
        }
    }

    fn push_all(q: &mut CoalescingQueue<String, String>, entries: &[(&str, &str)]) -> Vec<Pushed> {
        entries
            .iter()
            .map(|(k, v)| q.push(*k, (*v).to_owned()))
            .collect()
    }

    #[test]
    fn entries_queue_in_order_then_coalesce_to_the_latest_per_key() {
        let mut q = CoalescingQueue::new(policy(2, 100, ResyncAt::Now));
        let pushed = push_all(
            &mut q,
            &[
                ("a", "a1"),
                ("b", "b1"),
                ("a", "a2"),
                ("b", "b2"),
                ("a", "a3"),
            ],
        );
        assert_eq!(
            pushed,
            [
                Pushed::Queued,
                Pushed::Queued,
                Pushed::Coalesced { started: true },
                Pushed::Coalesced { started: false },
                Pushed::Coalesced { started: false },
            ]
        );
        let b = q.take_all();
        assert!(!b.resync);
        // b's latest was pushed before a's latest.
        assert_eq!(b.entries, ["a1", "b1", "b2", "a3"]);
        // Drained: in order again, and a new episode.
        assert_eq!(push_all(&mut q, &[("c", "c1")]), [Pushed::Queued]);
        assert!(q.coalescing_since.is_none());
    }

    #[test]
    fn a_key_never_overtakes_itself_once_coalescing_started() {
        let mut q = CoalescingQueue::new(policy(1, 100, ResyncAt::Now));
        push_all(&mut q, &[("a", "a1"), ("b", "b1")]);
        // The ordered part has room again, but b is coalesced: c must not overtake it.
        assert_eq!(q.pop_front().as_deref(), Some("a1"));
        assert!(matches!(
            q.push("c", "c1".to_owned()),
            Pushed::Coalesced { .. }
        ));
        assert_eq!(q.take_all().entries, ["b1", "c1"]);
    }

    #[test]
    fn an_overflow_resyncs_now_dropping_everything_and_later_entries_queue_behind_it() {
        let mut q = CoalescingQueue::new(policy(2, 2, ResyncAt::Now));
        let pushed = push_all(
            &mut q,
            &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")],
        );
        assert_eq!(pushed[4], Pushed::Resync);
        assert!(q.resync_due());
        assert_eq!(q.resyncs(), 1);
        assert_eq!(push_all(&mut q, &[("a", "6")]), [Pushed::Queued]);
        let b = q.take_all();
        assert!(b.resync);
        assert_eq!(b.entries, ["6"]);
        assert!(q.is_empty());
    }

    #[test]
    fn an_overflow_resyncs_after_the_queued_entries_and_covers_later_ones() {
        // The socket sink's default: ordered capacity, no coalescing at all.
        let mut q = CoalescingQueue::new(policy(2, 0, ResyncAt::AfterQueued));
        let pushed = push_all(
            &mut q,
            &[("a", "l0"), ("b", "l1"), ("c", "l2"), ("d", "l3")],
        );
        assert_eq!(
            pushed,
            [
                Pushed::Queued,
                Pushed::Queued,
                Pushed::Resync,
                Pushed::Covered
            ]
        );
        q.push_in_order("reply".to_owned());
        assert!(!q.resync_due(), "the resync waits for what is queued");
        let b = q.take_all();
        assert!(!b.resync);
        assert_eq!(b.entries, ["l0", "l1", "reply"]);
        assert!(q.take_resync());
        assert!(!q.take_resync(), "once per resync");
        assert_eq!(push_all(&mut q, &[("a", "l4")]), [Pushed::Queued]);
    }

    #[test]
    fn coalesced_entries_older_than_max_age_resync() {
        let mut q = CoalescingQueue::new(QueuePolicy {
            max_age: Some(Duration::from_millis(20)),
            ..policy(1, 100, ResyncAt::AfterQueued)
        });
        push_all(&mut q, &[("a", "1"), ("b", "2")]);
        q.coalescing_since = Some(Instant::now() - Duration::from_millis(50));
        assert_eq!(q.push("c", "3".to_owned()), Pushed::Resync);
        assert_eq!(q.take_all().entries, ["1"]);
        assert!(q.take_resync());
    }

    #[test]
    fn drop_new_keys_keeps_known_keys_updating_and_counts_the_rest() {
        let mut q = CoalescingQueue::new(QueuePolicy::latest_per_key(2));
        let pushed = push_all(
            &mut q,
            &[("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")],
        );
        assert_eq!(pushed[2], Pushed::Dropped { total: 1 });
        assert_eq!(pushed[3], Pushed::Coalesced { started: false });
        assert_eq!(q.take_all().entries, ["b1", "a2"]);
        assert_eq!(q.dropped(), 1);
        assert!(!q.resync_due());
    }

    #[test]
    fn a_requested_resync_follows_the_policy_and_forget_updates_cancels_it() {
        let mut now = CoalescingQueue::new(policy(1, 10, ResyncAt::Now));
        push_all(&mut now, &[("a", "1"), ("b", "2")]);
        now.request_resync();
        let b = now.take_all();
        assert!(b.resync && b.entries.is_empty());
        assert_eq!(now.resyncs(), 0, "only overflows count");

        let mut after = CoalescingQueue::new(policy(1, 10, ResyncAt::AfterQueued));
        push_all(&mut after, &[("a", "1"), ("b", "2")]);
        after.request_resync();
        assert_eq!(after.take_all().entries, ["1"]);
        after.push_in_order("list".to_owned());
        after.forget_updates();
        assert_eq!(after.take_all().entries, ["list"]);
        assert!(after.is_empty());
    }

    #[test]
    fn a_drained_queue_gives_its_burst_capacity_back() {
        let mut q = CoalescingQueue::new(policy(10_000, 10_000, ResyncAt::Now));
        for i in 0..5_000 {
            q.push(format!("s{i}").as_str(), i);
        }
        assert!(q.ordered_capacity() >= 5_000);
        assert_eq!(q.take_all().entries.len(), 5_000);
        q.release_idle_capacity(IDLE_SLOTS);
        assert!(q.ordered_capacity() <= IDLE_SLOTS);
    }

    #[tokio::test]
    async fn a_shared_queue_wakes_its_consumer_and_reports_closing() {
        let q: SharedQueue<String, u32> = SharedQueue::new(QueuePolicy::ordered_then_latest(4));
        q.push("a", 1);
        // The push came before the wait: the wake-up is kept.
        tokio::time::timeout(Duration::from_secs(5), q.ready())
            .await
            .expect("wake-up kept");
        let b = q.take();
        assert_eq!(b.entries, [1]);
        assert!(!b.closed);
        q.close();
        tokio::time::timeout(Duration::from_secs(5), q.ready())
            .await
            .expect("close wakes");
        assert!(q.take().closed);
    }

    #[tokio::test]
    async fn a_resync_behind_queued_entries_wakes_the_consumer_again() {
        let q: SharedQueue<String, u32> = SharedQueue::new(policy(1, 0, ResyncAt::AfterQueued));
        assert_eq!(q.push("a", 1), Pushed::Queued);
        assert_eq!(q.push("b", 2), Pushed::Resync);
        q.ready().await;
        let first = q.take();
        assert_eq!((first.resync, first.entries.as_slice()), (false, &[1][..]));
        tokio::time::timeout(Duration::from_secs(5), q.ready())
            .await
            .expect("the resync is announced");
        assert!(q.take().resync);
        assert_eq!(q.inspect(CoalescingQueue::resyncs), 1);
    }
}
