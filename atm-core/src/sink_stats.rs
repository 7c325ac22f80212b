//! [`SinkStats`]: how far a sink has followed the registry and how often the world outside it
//! (a bus, a server) failed it, readable without its logs.
//!
//! A sink keeps one and hands out clones; `atmd` can report them, and tests wait on them
//! instead of sleeping ("the sink applied change 41 while the bus was down and retried twice").
//! Relaxed atomics suffice: each counter only grows and nobody derives other memory from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared counters of one sink; clones see the same values.
#[derive(Debug, Clone, Default)]
pub struct SinkStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    applied_seq: AtomicU64,
    failures: AtomicU64,
}

impl SinkStats {
    /// The sequence number of the last registry change the sink has taken into account.
    pub fn applied_seq(&self) -> u64 {
        self.0.applied_seq.load(Ordering::Relaxed)
    }

    /// Failed attempts to reach what the sink writes to (connecting, a lost connection, a call
    /// refused); every retry of an outage counts.
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::Relaxed)
    }

    /// Records that the changes up to `seq` are taken into account (never moves back).
    pub fn applied(&self, seq: u64) {
        self.0.applied_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Records one failed attempt.
    pub fn failed(&self) {
        self.0.failures.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counters_and_the_seq_never_moves_back() {
        let stats = SinkStats::default();
        let reader = stats.clone();
        stats.applied(7);
        stats.applied(3);
        stats.failed();
        stats.failed();
        assert_eq!(reader.applied_seq(), 7);
        assert_eq!(reader.failures(), 2);
    }
}
