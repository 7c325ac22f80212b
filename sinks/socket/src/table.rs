//! The fan-out: one task follows the registry, renders each change ONCE into a shared line
//! ([`crate::render`]), and hands that line to every subscriber's [`Outbox`].
//!
//! The table keeps the sessions themselves (the registry's own `Arc`s, so no copy), not their
//! rendered views: a cached view would double the memory per session and go stale (see
//! [`crate::render`]). Lists for replies and resyncs are taken from it.
//!
//! Consistency: the table (latest version of each session, in registry order) is updated and
//! the change delivered to subscribers under the same write lock. A subscriber's initial list or
//! resync list is taken under the read lock together with its subscription state, so every
//! change is either in the list or delivered after it, never neither.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use atm_core::Session;
use atm_core::control::ControlBus;
use atm_core::registry::{RegistryHandle, SessionChange, SessionEvent, Snapshot};
use atm_core::session_table::{FanOut, SessionTable, fan_out};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::SocketConfig;
use crate::outbox::Outbox;
use crate::render::{ListJob, removed_line, resolved_lines, updated_line};

/// Latest version of every session, and the subscribers to tell about changes.
#[derive(Default)]
pub(crate) struct Table {
    sessions: SessionTable<Arc<Outbox>>,
}

impl Table {
    /// Every session, or the one with id `filter`.
    pub(crate) fn list(&self, filter: Option<&str>) -> ListJob {
        let entries = match filter {
            None => self.sessions.sessions().cloned().collect(),
            Some(id) => self
                .sessions
                .sessions()
                .filter(|e| e.id.as_str() == id)
                .cloned()
                .collect(),
        };
        ListJob::new(entries)
    }
}

/// A change rendered for delivery.
pub(crate) struct Delivery {
    seq: u64,
    id: String,
    line: Bytes,
    change: SessionChange,
    /// The session after the change (for a removal: as it was).
    session: Arc<Session>,
    /// `request_resolved` lines for the requests this change ended, with their queue keys.
    resolved: Vec<(String, Bytes)>,
}

/// The shared state of one socket sink: the table, the limits, and what connections need.
pub(crate) struct Shared {
    table: RwLock<Table>,
    pub(crate) config: SocketConfig,
    pub(crate) control: ControlBus,
    /// For `decide`: answers go to the registry, which delivers them to the waiting agent.
    pub(crate) registry: RegistryHandle,
    next_client: AtomicU64,
    next_conn: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: SocketConfig, control: ControlBus, registry: RegistryHandle) -> Self {
        Self {
            table: RwLock::default(),
            config,
            control,
            registry,
            next_client: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
        }
    }

    pub(crate) fn read_table(&self) -> RwLockReadGuard<'_, Table> {
        match self.table.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write_table(&self) -> RwLockWriteGuard<'_, Table> {
        match self.table.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `client-N` for a client that brought no id.
    pub(crate) fn assign_client_id(&self) -> String {
        format!(
            "client-{}",
            self.next_client.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub(crate) fn new_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts (or re-filters) a subscription: the list goes into the outbox atomically with the
    /// registration, so no change falls between them.
    pub(crate) fn subscribe(&self, conn: u64, outbox: &Arc<Outbox>, filter: Option<String>) {
        let mut table = self.write_table();
        let job = table.list(filter.as_deref());
        outbox.start_subscription(filter, job);
        table.sessions.add_client(conn, outbox.clone());
    }

    pub(crate) fn unsubscribe(&self, conn: u64, outbox: &Outbox) {
        let mut table = self.write_table();
        table.sessions.remove_client(conn);
        outbox.end_subscription();
    }

    /// Takes the list for a subscriber whose resync is due (see [`Outbox`]). `None` if the
    /// resync was cancelled meanwhile (unsubscribed).
    pub(crate) fn take_resync(&self, outbox: &Outbox) -> Option<ListJob> {
        let table = self.read_table();
        outbox.take_resync(|filter| table.list(filter))
    }

    /// The fan-out task: follows the registry until it stops or `cancel` fires.
    pub(crate) async fn run(
        self: Arc<Self>,
        registry: RegistryHandle,
        cancel: CancellationToken,
    ) -> Result<(), atm_core::PluginError> {
        fan_out(&*self, "socket", registry, cancel).await
    }
}

impl FanOut for Shared {
    type Rendered = Delivery;

    /// Rebuilds the table from a registry snapshot; existing subscribers get a resync.
    fn reset(&self, snapshot: Snapshot) {
        self.write_table().sessions.reset(snapshot);
    }

    /// Applies rendered changes in order and hands each line to every interested subscriber.
    fn apply(&self, deliveries: Vec<Delivery>) {
        let mut table = self.write_table();
        for d in deliveries {
            let (id, line, resolved) = (&d.id, &d.line, &d.resolved);
            table.sessions.apply(d.seq, &d.change, d.session, |outbox| {
                outbox.deliver(id, line);
                for (key, line) in resolved {
                    outbox.deliver_as(id, key, line);
                }
            });
        }
    }
}

/// Renders a change once, for every subscriber.
impl From<SessionEvent> for Delivery {
    fn from(event: SessionEvent) -> Self {
        let id = event.session.id.as_str().to_owned();
        let line = match event.change {
            SessionChange::Added | SessionChange::Updated => updated_line(&event.session),
            SessionChange::Removed { .. } => removed_line(&id),
        };
        Delivery {
            seq: event.seq,
            resolved: resolved_lines(&id, &event.requests.ended),
            id,
            line,
            change: event.change,
            session: event.session,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Arc<Session> {
        Arc::new(crate::render::test_session(id))
    }

    #[test]
    fn table_keeps_registry_order_and_replaces_in_place() {
        let mut t = Table::default();
        for id in ["a", "b", "c"] {
            t.sessions.upsert(session(id));
        }
        t.sessions.upsert(session("a"));
        t.sessions.remove(&session("b"));
        let ids: Vec<_> = t
            .list(None)
            .sessions()
            .iter()
            .map(|e| e.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(t.list(Some("c")).len(), 1);
        assert_eq!(t.list(Some("zz")).len(), 0);
    }
}
