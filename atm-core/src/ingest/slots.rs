//! The connection slots of one ingest socket: who holds one, how long each holder has been
//! idle, who gives a slot up when the socket is full, and what is said about a refusal.
//!
//! Two kinds of client share `hooks.sock`. Hook clients (`atm-hook`) connect, write one line
//! and leave; a connection of theirs that goes quiet is abandoned, so it is closed after the
//! idle timeout. Persistent clients (the pi extension) say `connect` once and then write an
//! event whenever their agent does something, which can be hours apart and with no pings: they
//! are never cut for being quiet while there is room. When every slot is taken, the persistent
//! connection that has been quiet the longest gives its slot to the newcomer (a persistent
//! client reconnects on its next event). So idle connections, of either kind, can never keep
//! a real hook out for longer than a moment, and a long-lived client is only ever disturbed
//! when the socket is full.
//!
//! A refused connection (`too_many_clients`) is logged at warn once a minute, with the limit
//! and the key that raises it; the others in that minute are counted into the next warning.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::warn_rate::RateLimitedWarn;

/// How long a newcomer waits for an evicted connection to release its slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// A persistent connection quiet for less than this is in use, never evicted.
const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

/// What one connection shares with the accept loop.
#[derive(Debug)]
pub(super) struct Slot {
    /// Cancelled to close the connection (eviction, or the socket closing).
    pub(super) cancel: CancellationToken,
    persistent: AtomicBool,
    /// When the last complete line arrived, in milliseconds since the socket's `base`.
    last_line_ms: AtomicU64,
    base: Instant,
}

impl Slot {
    /// A complete line arrived: the connection is not idle.
    pub(super) fn touch(&self) {
        self.last_line_ms
            .store(self.since_base(), Ordering::Relaxed);
    }

    /// The client said `connect`: a long-lived client, exempt from the idle timeout.
    pub(super) fn mark_persistent(&self) {
        self.persistent.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    fn since_base(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn idle_for(&self) -> Duration {
        let last = self.last_line_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.since_base().saturating_sub(last))
    }
}

/// A held slot: the permit (released when the connection ends) and what it shares.
pub(super) struct Held {
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) slot: Arc<Slot>,
}

/// The slots of one socket. Owned by its accept loop.
pub(super) struct Slots {
    permits: Arc<Semaphore>,
    max: usize,
    base: Instant,
    held: Vec<Arc<Slot>>,
    cancel: CancellationToken,
    refusals: RateLimitedWarn,
    evictions: RateLimitedWarn,
}

impl Slots {
    /// `max` slots for connections of the socket whose token is `cancel`.
    pub(super) fn new(max: usize, cancel: CancellationToken) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            base: Instant::now(),
            held: Vec::new(),
            cancel,
            refusals: RateLimitedWarn::default(),
            evictions: RateLimitedWarn::default(),
        }
    }

    /// A slot for a new connection: a free one, else the one of the persistent connection
    /// quiet the longest (closed for it). `None` when every holder is in use: the caller
    /// refuses the connection ([`Slots::refused`]).
    pub(super) async fn take(&mut self) -> Option<Held> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.evict()?;
                tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        if self.held.len() >= self.max {
            self.held.retain(|s| !s.cancel.is_cancelled());
        }
        let slot = Arc::new(Slot {
            cancel: self.cancel.child_token(),
            persistent: AtomicBool::new(false),
            last_line_ms: AtomicU64::new(0),
            base: self.base,
        });
        slot.touch();
        self.held.push(slot.clone());
        Some(Held { permit, slot })
    }

    /// Closes the persistent connection quiet the longest, if one has been quiet long enough.
    fn evict(&mut self) -> Option<()> {
        self.held.retain(|s| !s.cancel.is_cancelled());
        let (at, idle) = self
            .held
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_persistent())
            .map(|(i, s)| (i, s.idle_for()))
            .filter(|(_, idle)| *idle >= MIN_IDLE_TO_EVICT)
            // Quiet times are in milliseconds, so ties happen: the oldest connection goes
            // (`held` keeps accept order), not whichever came last.
            .min_by_key(|(i, idle)| (std::cmp::Reverse(*idle), *i))?;
        let victim = self.held.remove(at);
        victim.cancel.cancel();
        self.evictions.say(|suppressed| {
            format!(
                "the ingest socket is full ({} connections): closed the persistent connection \
                 quiet the longest ({}s) to admit a new one{suppressed}; raise \
                 `max_ingest_connections` in [daemon] if this keeps happening",
                self.max,
                idle.as_secs()
            )
        });
        Some(())
    }

    /// Logs a refused connection (warn once a minute, debug otherwise).
    pub(super) fn refused(&mut self) {
        let max = self.max;
        self.refusals.say(|suppressed| {
            format!(
                "refused an ingest connection: all {max} slots are in use (too_many_clients); \
                 atm-hook retries within its budget, then its event is lost{suppressed}; raise \
                 `max_ingest_connections` in [daemon], and look for a client that opens \
                 connections without closing them"
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_persistent_connection_quiet_the_longest_makes_room_and_busy_ones_do_not() {
        let mut slots = Slots::new(2, CancellationToken::new());
        let a = slots.take().await.unwrap();
        let b = slots.take().await.unwrap();
        // Neither is persistent: a hook connection is cut by its idle timeout, not evicted.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(slots.take().await.is_none());
        a.slot.mark_persistent();
        b.slot.mark_persistent();
        tokio::time::advance(Duration::from_secs(5)).await;
        b.slot.touch();
        // `a` has been quiet for 35 s, `b` for none: `a` goes.
        let (a_slot, a_permit) = (a.slot.clone(), a.permit);
        let release = tokio::spawn(async move {
            a_slot.cancel.cancelled().await;
            drop(a_permit);
        });
        let c = slots.take().await.unwrap();
        release.await.unwrap();
        assert!(a.slot.cancel.is_cancelled());
        assert!(!b.slot.cancel.is_cancelled() && !c.slot.cancel.is_cancelled());
        // `b` was just used: not evicted for the next one.
        assert!(slots.take().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn of_connections_equally_quiet_the_oldest_makes_room() {
        let mut slots = Slots::new(3, CancellationToken::new());
        let held: Vec<Held> = [
            slots.take().await.unwrap(),
            slots.take().await.unwrap(),
            slots.take().await.unwrap(),
        ]
        .into_iter()
        .collect();
        for h in &held {
            h.slot.mark_persistent();
            // One millisecond apart or less looks the same: the same quiet time for all.
            h.slot.last_line_ms.store(0, Ordering::Relaxed);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(slots.evict().is_some());
        let cut: Vec<bool> = held.iter().map(|h| h.slot.cancel.is_cancelled()).collect();
        assert_eq!(cut, [true, false, false], "the first accepted goes");
    }
}
