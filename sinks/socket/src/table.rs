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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use atm_core::control::ControlBus;
use atm_core::registry::{RegistryHandle, SessionChange, SessionEvent, Snapshot};
use atm_core::registry_follow::{Followed, RegistryFollower};
use atm_core::{Harness, Session, SessionId};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::SocketConfig;
use crate::outbox::Outbox;
use crate::render::{ListJob, removed_line, resolved_lines, updated_line};

/// At most this many changes are applied under one lock acquisition.
const APPLY_BATCH: usize = 256;

type TableKey = (Harness, SessionId);

/// Latest version of every session, and the subscribers to tell about changes.
#[derive(Default)]
pub(crate) struct Table {
    /// Sequence number of the last registry change reflected.
    seq: u64,
    next_order: u64,
    order_of: HashMap<TableKey, u64>,
    /// In registry insertion order, oldest first.
    entries: BTreeMap<u64, Arc<Session>>,
    subscribers: HashMap<u64, Arc<Outbox>>,
}

impl Table {
    fn insert_or_replace(&mut self, session: Arc<Session>) {
        let key = (session.harness.clone(), session.id.clone());
        let order = match self.order_of.get(&key) {
            Some(o) => *o,
            None => {
                self.next_order += 1;
                self.order_of.insert(key, self.next_order);
                self.next_order
            }
        };
        self.entries.insert(order, session);
    }

    fn remove(&mut self, session: &Session) {
        if let Some(order) = self
            .order_of
            .remove(&(session.harness.clone(), session.id.clone()))
        {
            self.entries.remove(&order);
        }
    }

    /// Every session, or the one with id `filter`.
    pub(crate) fn list(&self, filter: Option<&str>) -> ListJob {
        let entries = match filter {
            None => self.entries.values().cloned().collect(),
            Some(id) => self
                .entries
                .values()
                .filter(|e| e.id.as_str() == id)
                .cloned()
                .collect(),
        };
        ListJob::new(entries)
    }
}

/// A change rendered for delivery.
struct Delivery {
    seq: u64,
    id: String,
    line: Bytes,
    update: Option<Arc<Session>>,
    removed: Option<Arc<Session>>,
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
        table.subscribers.insert(conn, outbox.clone());
    }

    pub(crate) fn unsubscribe(&self, conn: u64, outbox: &Outbox) {
        let mut table = self.write_table();
        table.subscribers.remove(&conn);
        outbox.end_subscription();
    }

    /// Rebuilds the table from a registry snapshot; existing subscribers get a resync.
    fn reset(&self, snapshot: Snapshot) {
        let mut table = self.write_table();
        let subscribers = std::mem::take(&mut table.subscribers);
        *table = Table {
            seq: snapshot.seq,
            subscribers,
            ..Table::default()
        };
        for s in snapshot.sessions {
            table.insert_or_replace(s);
        }
        for outbox in table.subscribers.values() {
            outbox.request_resync();
        }
    }

    /// Applies rendered changes in order and hands each line to every interested subscriber.
    fn apply(&self, deliveries: Vec<Delivery>) {
        let mut table = self.write_table();
        for d in deliveries {
            if d.seq <= table.seq {
                continue; // already in the snapshot we reset from
            }
            table.seq = d.seq;
            if let Some(r) = d.update {
                table.insert_or_replace(r);
            }
            if let Some(s) = d.removed {
                table.remove(&s);
            }
            for outbox in table.subscribers.values() {
                outbox.deliver(&d.id, &d.line);
                for (key, line) in &d.resolved {
                    outbox.deliver_as(&d.id, key, line);
                }
            }
        }
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
        let (snapshot, follower) = RegistryFollower::start(registry, cancel).await?;
        let mut follower = follower.with_batch(APPLY_BATCH);
        self.reset(snapshot);
        while let Some(followed) = follower.next().await {
            match followed {
                // Rendered before the lock is taken: subscribers' readers never wait on JSON.
                Followed::Changes(events) => {
                    self.apply(events.into_iter().map(render_change).collect());
                }
                Followed::Resync { snapshot, missed } => {
                    warn!(
                        missed,
                        "socket sink fell behind the registry; resyncing every subscriber"
                    );
                    self.reset(snapshot);
                }
            }
        }
        debug!("socket fan-out ends");
        Ok(())
    }
}

fn render_change(event: SessionEvent) -> Delivery {
    let id = event.session.id.as_str().to_owned();
    let resolved = resolved_lines(&id, &event.requests.ended);
    match event.change {
        SessionChange::Added | SessionChange::Updated => Delivery {
            seq: event.seq,
            line: updated_line(&event.session),
            id,
            update: Some(event.session),
            removed: None,
            resolved,
        },
        SessionChange::Removed { .. } => Delivery {
            seq: event.seq,
            line: removed_line(&id),
            id,
            update: None,
            removed: Some(event.session),
            resolved,
        },
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
            t.insert_or_replace(session(id));
        }
        t.insert_or_replace(session("a"));
        t.remove(&session("b"));
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
