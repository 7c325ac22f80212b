//! The counters every ingest adapter keeps.

use tracing::debug;

/// Counters an ingest adapter keeps (shared between the adapter and its handler), summarised at
/// debug level when it stops. Counters an adapter has no use for stay at zero.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Events applied to the registry.
    pub applied: std::sync::atomic::AtomicU64,
    /// Events with a name this version does not know (accepted as activity).
    pub unknown_events: std::sync::atomic::AtomicU64,
    /// Events deliberately dropped (duplicates, subagent noise).
    pub ignored: std::sync::atomic::AtomicU64,
    /// Messages refused as malformed.
    pub bad_messages: std::sync::atomic::AtomicU64,
    /// Well-formed events the registry refused (full, shutting down).
    pub registry_errors: std::sync::atomic::AtomicU64,
}

impl IngestStats {
    pub fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs the counters once, when the adapter stops.
    pub fn log_summary(&self, adapter: &str) {
        debug!(
            adapter,
            applied = Self::get(&self.applied),
            unknown_events = Self::get(&self.unknown_events),
            ignored = Self::get(&self.ignored),
            bad_messages = Self::get(&self.bad_messages),
            registry_errors = Self::get(&self.registry_errors),
            "ingest adapter stopped"
        );
    }
}
