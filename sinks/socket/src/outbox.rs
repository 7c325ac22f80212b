//! One connection's outgoing queue, shared by its reader (replies), the fan-out (updates) and
//! its writer.
//!
//! Overflow policy, the reason this module exists:
//! - Replies (`pong`, `error`, lists) are never dropped: when the queue is full the reader waits,
//!   which stops it reading the socket (the client's own backpressure).
//! - Updates never wait, so the fan-out never waits for a subscriber. While the queue has room
//!   they are queued in order. Once it is full the subscriber is behind: further updates are
//!   coalesced, keeping only the latest line per session id (removals too), and written after
//!   the queue drains. If the coalesced set grows past `max_coalesced` sessions or stays unsent
//!   longer than `max_coalesce_age`, it is dropped and the subscriber gets a fresh
//!   `session_list` (a resync) once it catches up; updates meanwhile are covered by that list.
//! - A writer blocked longer than `write_timeout` disconnects its client (see `connection`).
//!
//! Memory per connection is therefore bounded by `queue_capacity` items plus `max_coalesced`
//! shared lines, whatever the client does.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Buf, Bytes};
use tokio::sync::Notify;

use crate::SocketConfig;
use crate::table::ListJob;

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

#[derive(Default)]
struct State {
    queue: VecDeque<Item>,
    coalesced: HashMap<String, Bytes>,
    coalescing_since: Option<Instant>,
    resync: bool,
    /// `None`: not subscribed; `Some(None)`: every session; `Some(Some(id))`: one.
    subscription: Option<Option<String>>,
    /// No more writes will happen (the writer gave up or the connection ended).
    aborted: bool,
    resyncs: u64,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    writer_wake: Notify,
    space: Notify,
    capacity: usize,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            writer_wake: Notify::new(),
            space: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
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
                if s.queue.len() < self.capacity {
                    if let Some(i) = item.take() {
                        s.queue.push_back(i);
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
                if s.queue.len() < self.capacity {
                    return true;
                }
            }
            self.space.notified().await;
        }
    }

    /// Queues a reply now, whatever the queue holds (for the few replies made under the table
    /// lock, and the final `Close`; at most one per client message).
    pub(crate) fn push_now(&self, item: Item) {
        let mut s = self.lock();
        if !s.aborted {
            s.queue.push_back(item);
        }
        drop(s);
        self.writer_wake.notify_one();
    }

    /// Stops everything: the writer exits, a waiting reader returns.
    pub(crate) fn abort(&self) {
        let mut s = self.lock();
        s.aborted = true;
        s.queue.clear();
        s.coalesced.clear();
        drop(s);
        self.writer_wake.notify_one();
        self.space.notify_one();
    }

    pub(crate) fn start_subscription(&self, filter: Option<String>, list: ListJob) {
        let mut s = self.lock();
        s.subscription = Some(filter);
        s.coalesced.clear();
        s.coalescing_since = None;
        s.resync = false;
        if !s.aborted {
            s.queue.push_back(Item::List(list));
        }
        drop(s);
        self.writer_wake.notify_one();
    }

    pub(crate) fn end_subscription(&self) {
        let mut s = self.lock();
        s.subscription = None;
        s.coalesced.clear();
        s.coalescing_since = None;
        s.resync = false;
    }

    /// The registry's stream was lost: send a fresh list when caught up.
    pub(crate) fn request_resync(&self) {
        let mut s = self.lock();
        if s.subscription.is_some() {
            s.coalesced.clear();
            s.coalescing_since = None;
            s.resync = true;
        }
        drop(s);
        self.writer_wake.notify_one();
    }

    /// Offers one change to this subscriber (never waits; see the module docs).
    pub(crate) fn deliver(&self, id: &str, line: &Bytes, config: &SocketConfig) {
        let mut s = self.lock();
        let interested = match &s.subscription {
            Some(None) => true,
            Some(Some(only)) => only == id,
            None => false,
        };
        if !interested || s.aborted || s.resync {
            return;
        }
        if s.coalesced.is_empty() && s.queue.len() < self.capacity {
            s.queue.push_back(Item::Line(line.clone()));
        } else {
            let since = *s.coalescing_since.get_or_insert_with(Instant::now);
            s.coalesced.insert(id.to_owned(), line.clone());
            if s.coalesced.len() > config.max_coalesced || since.elapsed() > config.max_coalesce_age
            {
                s.coalesced = HashMap::new();
                s.coalescing_since = None;
                s.resync = true;
                s.resyncs += 1;
            }
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
        let work = match s.queue.front() {
            Some(Item::Line(_)) => {
                let mut lines = LinesBuf::default();
                while lines.len() < WRITE_BATCH
                    && let Some(Item::Line(_)) = s.queue.front()
                {
                    if let Some(Item::Line(l)) = s.queue.pop_front() {
                        lines.push(l);
                    }
                }
                Work::Lines(lines)
            }
            Some(Item::List(_)) => match s.queue.pop_front() {
                Some(Item::List(job)) => Work::List(job),
                _ => Work::Idle,
            },
            Some(Item::Close) => Work::Close,
            None if !s.coalesced.is_empty() => {
                let mut lines = LinesBuf::default();
                for (_, l) in s.coalesced.drain() {
                    lines.push(l);
                }
                s.coalescing_since = None;
                Work::Lines(lines)
            }
            None if s.resync => Work::Resync,
            None => Work::Idle,
        };
        // A burst may have grown the queue to thousands of slots; once it drains, give them
        // back rather than keep the peak for every connection that ever lagged.
        if s.queue.is_empty() && s.queue.capacity() > IDLE_QUEUE_SLOTS {
            s.queue.shrink_to(IDLE_QUEUE_SLOTS);
        }
        if s.coalesced.is_empty() && s.coalesced.capacity() > IDLE_QUEUE_SLOTS {
            s.coalesced.shrink_to(IDLE_QUEUE_SLOTS);
        }
        drop(s);
        if !matches!(work, Work::Idle) {
            self.space.notify_one();
        }
        work
    }

    /// Takes a due resync: clears the flag and builds the list with `list` while the outbox is
    /// locked (the caller holds the table's read lock, so no change falls in between).
    pub(crate) fn take_resync(
        &self,
        list: impl FnOnce(Option<&str>) -> ListJob,
    ) -> Option<ListJob> {
        let mut s = self.lock();
        if !s.resync || s.aborted {
            return None;
        }
        s.resync = false;
        let filter = s.subscription.clone()?;
        Some(list(filter.as_deref()))
    }

    pub(crate) async fn wait_for_work(&self) {
        self.writer_wake.notified().await;
    }

    /// How many times this subscriber was resynced after falling behind.
    pub(crate) fn resyncs(&self) -> u64 {
        self.lock().resyncs
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
    use std::time::Duration;

    fn config(max_coalesced: usize) -> SocketConfig {
        SocketConfig {
            queue_capacity: 2,
            max_coalesced,
            max_coalesce_age: Duration::from_secs(60),
            ..SocketConfig::default()
        }
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
                    o.lock().resync = false;
                }
                _ => panic!("unexpected work"),
            }
        }
    }

    fn subscribed(capacity: usize) -> Outbox {
        let o = Outbox::new(capacity);
        o.lock().subscription = Some(None);
        o
    }

    #[test]
    fn a_full_queue_coalesces_to_the_latest_line_per_session() {
        let cfg = config(100);
        let o = subscribed(cfg.queue_capacity);
        for (id, line) in [
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("b", "b2"),
            ("a", "a3"),
        ] {
            o.deliver(id, &Bytes::from(line), &cfg);
        }
        let mut got = drain_lines(&o);
        got[2..].sort();
        assert_eq!(got, ["a1", "b1", "a3", "b2"]);
        // Once drained, updates queue in order again.
        o.deliver("c", &Bytes::from_static(b"c1"), &cfg);
        assert_eq!(drain_lines(&o), ["c1"]);
    }

    #[test]
    fn too_many_coalesced_sessions_turn_into_a_resync() {
        let cfg = config(2);
        let o = subscribed(cfg.queue_capacity);
        for i in 0..10 {
            o.deliver(&format!("s{i}"), &Bytes::from(format!("l{i}")), &cfg);
        }
        assert_eq!(drain_lines(&o), ["l0", "l1", "RESYNC"]);
        assert_eq!(o.resyncs(), 1);
    }

    #[test]
    fn filters_and_unsubscribed_outboxes_receive_nothing_else() {
        let cfg = config(100);
        let o = Outbox::new(8);
        o.deliver("a", &Bytes::from_static(b"x"), &cfg);
        o.lock().subscription = Some(Some("b".into()));
        o.deliver("a", &Bytes::from_static(b"a"), &cfg);
        o.deliver("b", &Bytes::from_static(b"b"), &cfg);
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
        let o = subscribed(10_000);
        let cfg = SocketConfig {
            queue_capacity: 10_000,
            ..SocketConfig::default()
        };
        for i in 0..5_000 {
            o.deliver(&format!("s{i}"), &Bytes::from_static(b"x\n"), &cfg);
        }
        assert!(o.lock().queue.capacity() >= 5_000);
        assert_eq!(drain_lines(&o).len(), 5_000);
        assert!(o.lock().queue.capacity() <= IDLE_QUEUE_SLOTS);
    }
}
