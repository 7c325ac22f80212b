//! One connection's outgoing queue, shared by its reader (replies), the fan-out (updates) and
//! its writer: a [`CoalescingQueue`] (atm-core's one latest-per-key queue with resync) plus
//! the connection's subscription, under one lock.
//!
//! Overflow policy, the reason this module exists ([`SocketConfig::queue_policy`]):
//! - Replies (`pong`, `error`, lists) are never dropped: when the queue is full the reader waits,
//!   which stops it reading the socket (the client's own backpressure).
//! - Updates never wait, so the fan-out never waits for a subscriber. While the queue has room
//!   they are queued in order. Once it is full the subscriber is behind: further updates are
//!   coalesced, keeping only the latest line per session id (removals too), and written after
//!   the queue drains. If the coalesced set grows past `max_coalesced` sessions (default 0: at
//!   once) or stays unsent longer than `max_coalesce_age`, it is dropped and the subscriber gets
//!   a fresh `session_list` (a resync) once what is queued is written
//!   ([`ResyncAt::AfterQueued`](atm_core::coalesce::ResyncAt)); updates meanwhile are covered by
//!   that list, which is taken from the table when the writer reaches it.
//! - A writer blocked longer than `write_timeout` disconnects its client (see `connection`).
//!
//! Memory per connection is therefore bounded by `queue_capacity` items plus `max_coalesced`
//! shared lines, whatever the client does, and a burst's room is given back once it drains.
//!
//! [`SocketConfig::queue_policy`]: crate::SocketConfig::queue_policy

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Mutex, MutexGuard};

use atm_core::coalesce::{CoalescingQueue, Pushed, QueuePolicy};
use atm_core::session_table::TableClient;
use bytes::{Buf, Bytes};
use tokio::sync::Notify;

use crate::render::ListJob;

/// Lines handed to the writer at once (one vectored write each, at most).
const WRITE_BATCH: usize = 256;

/// Queue slots an idle connection keeps allocated.
const IDLE_QUEUE_SLOTS: usize = 64;

pub(crate) enum Item {
    Line(Bytes),
    List(ListJob),
    /// Flush what is queued, then close.
    Close,
}

/// What the writer should do next.
pub(crate) enum Work {
    Lines(LinesBuf),
    List(ListJob),
    /// A resync is due: take a fresh list from the table.
    Resync,
    Close,
    Idle,
}

struct State {
    /// Replies and updates in write order, then coalesced updates keyed by session id.
    queue: CoalescingQueue<String, Item>,
    /// `None`: not subscribed; `Some(None)`: every session; `Some(Some(id))`: one.
    subscription: Option<Option<String>>,
    /// No more writes will happen (the writer gave up or the connection ended).
    aborted: bool,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    writer_wake: Notify,
    space: Notify,
}

impl TableClient for Outbox {
    /// The registry's stream was lost: send a fresh list when caught up.
    fn request_resync(&self) {
        self.update_and_wake(|s| {
            if s.subscription.is_some() {
                s.queue.request_resync();
            }
        });
    }
}

impl Outbox {
    pub(crate) fn new(policy: QueuePolicy) -> Self {
        Self {
            state: Mutex::new(State {
                queue: CoalescingQueue::new(policy),
                subscription: None,
                aborted: false,
            }),
            writer_wake: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Changes the state under the lock, then wakes the writer once the lock is released.
    fn update_and_wake(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.writer_wake.notify_one();
    }

    /// Queues a reply, waiting while the queue is full. `false` if the connection is gone.
    pub(crate) async fn push_reply(&self, item: Item) -> bool {
        let mut item = Some(item);
        loop {
            {
                let mut s = self.lock();
                if s.aborted {
                    return false;
                }
                if s.queue.has_room() {
                    if let Some(i) = item.take() {
                        s.queue.push_in_order(i);
                    }
                    drop(s);
                    self.writer_wake.notify_one();
                    return true;
                }
            }
            self.space.notified().await;
        }
    }

    /// Waits until the queue has room (for a reply that must then be queued under the table
    /// lock with [`Outbox::push_now`]). `false` if the connection is gone.
    pub(crate) async fn wait_for_space(&self) -> bool {
        loop {
            {
                let s = self.lock();
                if s.aborted {
                    return false;
                }
                if s.queue.has_room() {
                    return true;
                }
            }
            self.space.notified().await;
        }
    }

    /// Queues a reply now, whatever the queue holds (for the few replies made under the table
    /// lock, and the final `Close`; at most one per client message).
    pub(crate) fn push_now(&self, item: Item) {
        self.update_and_wake(|s| {
            if !s.aborted {
                s.queue.push_in_order(item);
            }
        });
    }

    /// Stops everything: the writer exits, a waiting reader returns.
    pub(crate) fn abort(&self) {
        self.update_and_wake(|s| {
            s.aborted = true;
            s.queue.clear();
        });
        self.space.notify_one();
    }

    pub(crate) fn start_subscription(&self, filter: Option<String>, list: ListJob) {
        self.update_and_wake(|s| {
            s.subscription = Some(filter);
            // The list covers whatever was coalesced or due for a resync.
            s.queue.forget_updates();
            if !s.aborted {
                s.queue.push_in_order(Item::List(list));
            }
        });
    }

    pub(crate) fn end_subscription(&self) {
        let mut s = self.lock();
        s.subscription = None;
        s.queue.forget_updates();
    }

    /// Offers one change to this subscriber (never waits; see the module docs).
    pub(crate) fn deliver(&self, id: &str, line: &Bytes) {
        self.deliver_as(id, id, line);
    }

    /// [`Outbox::deliver`] for a line about session `id` that is queued under its own `key`
    /// (a `request_resolved` line must not be merged into the session's next update).
    pub(crate) fn deliver_as(&self, id: &str, key: &str, line: &Bytes) {
        let mut s = self.lock();
        let interested = match &s.subscription {
            Some(None) => true,
            Some(Some(only)) => only == id,
            None => false,
        };
        if !interested || s.aborted {
            return;
        }
        if let Pushed::Covered = s.queue.push(key, Item::Line(line.clone())) {
            return;
        }
        drop(s);
        self.writer_wake.notify_one();
    }

    /// For the writer: the next thing to write, in order.
    pub(crate) fn next_work(&self) -> Work {
        let mut s = self.lock();
        if s.aborted {
            return Work::Close;
        }
        let queue = &mut s.queue;
        let work = match queue.front() {
            Some(Item::Line(_)) => {
                let mut lines = LinesBuf::default();
                while lines.len() < WRITE_BATCH
                    && let Some(Item::Line(_)) = queue.front()
                {
                    if let Some(Item::Line(l)) = queue.pop_front() {
                        lines.push(l);
                    }
                }
                Work::Lines(lines)
            }
            Some(Item::List(_)) => match queue.pop_front() {
                Some(Item::List(job)) => Work::List(job),
                _ => Work::Idle,
            },
            Some(Item::Close) => Work::Close,
            None if queue.has_coalesced() => {
                let mut lines = LinesBuf::default();
                for item in queue.take_coalesced() {
                    if let Item::Line(l) = item {
                        lines.push(l);
                    }
                }
                Work::Lines(lines)
            }
            None if queue.resync_due() => Work::Resync,
            None => Work::Idle,
        };
        // A burst may have grown the queue to thousands of slots; once it drains, give them
        // back rather than keep the peak for every connection that ever lagged.
        queue.release_idle_capacity(IDLE_QUEUE_SLOTS);
        drop(s);
        if !matches!(work, Work::Idle) {
            self.space.notify_one();
        }
        work
    }

    /// Takes a due resync: clears it and builds the list with `list` while the outbox is
    /// locked (the caller holds the table's read lock, so no change falls in between).
    pub(crate) fn take_resync(
        &self,
        list: impl FnOnce(Option<&str>) -> ListJob,
    ) -> Option<ListJob> {
        let mut s = self.lock();
        if s.aborted || !s.queue.take_resync() {
            return None;
        }
        let filter = s.subscription.clone()?;
        Some(list(filter.as_deref()))
    }

    pub(crate) async fn wait_for_work(&self) {
        self.writer_wake.notified().await;
    }

    /// How many times this subscriber was resynced after falling behind.
    pub(crate) fn resyncs(&self) -> u64 {
        self.lock().queue.resyncs()
    }
}

/// Lines written with one vectored write where the platform allows.
#[derive(Default)]
pub(crate) struct LinesBuf {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl LinesBuf {
    pub(crate) fn push(&mut self, line: Bytes) {
        if !line.is_empty() {
            self.remaining += line.len();
            self.parts.push_back(line);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.parts.len()
    }
}

impl Buf for LinesBuf {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| b.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                self.remaining -= cnt;
                break;
            }
            cnt -= front.len();
            self.remaining -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SocketConfig;
    use std::time::Duration;

    fn config(max_coalesced: usize) -> QueuePolicy {
        SocketConfig {
            queue_capacity: 2,
            max_coalesced,
            max_coalesce_age: Duration::from_secs(60),
            ..SocketConfig::default()
        }
        .queue_policy()
    }

    fn drain_lines(o: &Outbox) -> Vec<Bytes> {
        let mut out = Vec::new();
        loop {
            match o.next_work() {
                Work::Lines(mut l) => {
                    while l.has_remaining() {
                        let n = l.chunk().len();
                        out.push(Bytes::copy_from_slice(l.chunk()));
                        l.advance(n);
                    }
                }
                Work::Idle => return out,
                Work::Resync => {
                    out.push(Bytes::from_static(b"RESYNC"));
                    assert!(o.lock().queue.take_resync());
                }
                _ => panic!("unexpected work"),
            }
        }
    }

    fn subscribed(policy: QueuePolicy) -> Outbox {
        let o = Outbox::new(policy);
        o.lock().subscription = Some(None);
        o
    }

    #[test]
    fn a_full_queue_coalesces_to_the_latest_line_per_session() {
        let cfg = config(100);
        let o = subscribed(cfg);
        for (id, line) in [
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("b", "b2"),
            ("a", "a3"),
        ] {
            o.deliver(id, &Bytes::from(line));
        }
        let mut got = drain_lines(&o);
        got[2..].sort();
        assert_eq!(got, ["a1", "b1", "a3", "b2"]);
        // Once drained, updates queue in order again.
        o.deliver("c", &Bytes::from_static(b"c1"));
        assert_eq!(drain_lines(&o), ["c1"]);
    }

    #[test]
    fn too_many_coalesced_sessions_turn_into_a_resync() {
        let cfg = config(2);
        let o = subscribed(cfg);
        for i in 0..10 {
            o.deliver(&format!("s{i}"), &Bytes::from(format!("l{i}")));
        }
        assert_eq!(drain_lines(&o), ["l0", "l1", "RESYNC"]);
        assert_eq!(o.resyncs(), 1);
    }

    #[test]
    fn filters_and_unsubscribed_outboxes_receive_nothing_else() {
        let cfg = config(100);
        let o = Outbox::new(cfg);
        o.deliver("a", &Bytes::from_static(b"x"));
        o.lock().subscription = Some(Some("b".into()));
        o.deliver("a", &Bytes::from_static(b"a"));
        o.deliver("b", &Bytes::from_static(b"b"));
        assert_eq!(drain_lines(&o), ["b"]);
    }

    #[test]
    fn lines_buf_advances_across_parts() {
        let mut b = LinesBuf::default();
        b.push(Bytes::from_static(b"abc"));
        b.push(Bytes::new());
        b.push(Bytes::from_static(b"de"));
        assert_eq!(b.remaining(), 5);
        b.advance(4);
        assert_eq!(b.chunk(), b"e");
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(b.chunks_vectored(&mut slices), 1);
        b.advance(1);
        assert!(!b.has_remaining());
    }

    #[test]
    fn a_drained_queue_gives_its_burst_capacity_back() {
        let o = subscribed(
            SocketConfig {
                queue_capacity: 10_000,
                ..SocketConfig::default()
            }
            .queue_policy(),
        );
        for i in 0..5_000 {
            o.deliver(&format!("s{i}"), &Bytes::from_static(b"x\n"));
        }
        assert!(o.lock().queue.ordered_capacity() >= 5_000);
        assert_eq!(drain_lines(&o).len(), 5_000);
        assert!(o.lock().queue.ordered_capacity() <= IDLE_QUEUE_SLOTS);
    }
}
