//! The opencode adapter's counters, shared by the adapter and every server it follows.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters, readable while the adapter runs (tests, debug logs).
#[derive(Debug, Default)]
pub struct OpencodeStats {
    /// Successful connections to the event stream.
    pub connections: AtomicU64,
    /// Connections that failed or ended, each followed by a wait and another attempt (counted
    /// once the failure is logged).
    pub failed_attempts: AtomicU64,
    /// Events received and handled (whole SSE events, including skipped ones).
    pub events: AtomicU64,
    /// Events applied to the registry.
    pub applied: AtomicU64,
    /// Valid events that mean nothing for a session's state.
    pub ignored: AtomicU64,
    /// Events skipped as not UTF-8, not JSON, or without a type or session.
    pub malformed: AtomicU64,
    /// Events skipped for exceeding the size limit.
    pub oversized: AtomicU64,
    /// Events the registry refused (full, shutting down).
    pub registry_errors: AtomicU64,
}

impl OpencodeStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
