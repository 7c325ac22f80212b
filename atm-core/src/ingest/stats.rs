//! The counters every ingest adapter keeps, and the board where the running ones are found.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// The counters of every ingest adapter that has run, by instance name, shared by the daemon's
/// plugins ([`crate::plugin::PluginEnv::ingest_stats`]): an ingest adapter publishes its
/// [`IngestStats`] when it starts (a restarted instance replaces its old counters), and a sink
/// that reports them (the `http` sink's `/metrics`) reads them. Bounded by the configured
/// adapters: only instances the daemon runs publish.
#[derive(Debug, Clone, Default)]
pub struct IngestStatsBoard(Arc<Mutex<BTreeMap<String, Arc<IngestStats>>>>);

impl IngestStatsBoard {
    /// Publishes `stats` as the counters of adapter instance `adapter`.
    pub fn publish(&self, adapter: &str, stats: Arc<IngestStats>) {
        if let Ok(mut board) = self.0.lock() {
            board.insert(adapter.to_owned(), stats);
        }
    }

    /// Every published adapter's counters, by name.
    pub fn all(&self) -> Vec<(String, Arc<IngestStats>)> {
        match self.0.lock() {
            Ok(board) => board.iter().map(|(n, s)| (n.clone(), s.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_shares_published_counters_and_a_restart_replaces_them() {
        let board = IngestStatsBoard::default();
        let reader = board.clone();
        let first = Arc::new(IngestStats::default());
        board.publish("claude-hooks", first.clone());
        IngestStats::bump(&first.applied);
        let all = reader.all();
        assert_eq!(all.len(), 1);
        assert_eq!(IngestStats::get(&all[0].1.applied), 1, "the same counters");
        board.publish("claude-hooks", Arc::new(IngestStats::default()));
        board.publish("codex", Arc::new(IngestStats::default()));
        let all = reader.all();
        assert_eq!(
            all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["claude-hooks", "codex"]
        );
        assert_eq!(IngestStats::get(&all[0].1.applied), 0, "replaced");
    }
}
