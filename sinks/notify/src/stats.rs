//! [`NotifyStats`]: the sink's [`SinkStats`] plus what only notifications have, so that `atmd`
//! (or a test) can see what the sink has done without reading its logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use atm_core::SinkStats;

/// Shared counters of one notify sink; clones see the same values.
#[derive(Debug, Clone, Default)]
pub struct NotifyStats {
    sink: SinkStats,
    closed_by_server: Arc<AtomicU64>,
}

impl NotifyStats {
    /// Registry changes planned from; failed connects, lost connections and failed server calls.
    pub fn sink(&self) -> &SinkStats {
        &self.sink
    }

    /// `NotificationClosed` signals handled (dismissed, expired or closed by a call).
    pub fn closed_by_server(&self) -> u64 {
        self.closed_by_server.load(Ordering::Relaxed)
    }

    pub(crate) fn server_closed(&self) {
        self.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}
