//! The fan-out of a sink with many clients (the socket's subscriptions, the http board): ONE
//! task follows the registry ([`fan_out`]), renders each change once, and offers it to every
//! client; a [`SessionTable`] keeps the latest version of every session, in registry order, so
//! that lists and resyncs are answered without asking the registry.
//!
//! The table holds the registry's own `Arc`s, never copies or rendered views: a cached view
//! would double the memory per session and go stale. A session keeps its place when it
//! changes, so clients see a stable order (oldest first). The table remembers the registry
//! `seq` it reflects, so changes a snapshot already held are skipped when they arrive after it.
//! Sessions and clients live in one table, so that a sink holding it under one lock delivers
//! every change either into a client's list or after it, never neither.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::coalesce::SharedQueue;
use crate::model::{Harness, Session, SessionId};
use crate::plugin::PluginError;
use crate::registry::{RegistryHandle, SessionChange, SessionEvent, Snapshot};
use crate::registry_follow::{DEFAULT_BATCH, Followed, RegistryFollower};

type TableKey = (Harness, SessionId);

/// A client of a [`SessionTable`]. When the table starts over from a snapshot every client is
/// told, so that it sends its consumer a fresh list: the table does it itself, so no sink can
/// forget it.
pub trait TableClient {
    /// The table was reset: what the client queued may be stale; resync its consumer.
    fn request_resync(&self);
}

impl<C: TableClient + ?Sized> TableClient for Arc<C> {
    fn request_resync(&self) {
        (**self).request_resync();
    }
}

impl<K: std::hash::Hash + Eq, V> TableClient for SharedQueue<K, V> {
    fn request_resync(&self) {
        SharedQueue::request_resync(self);
    }
}

/// Sessions in registry insertion order, with the `seq` of the last change reflected, and the
/// clients (`C`, by id) changes are offered to.
#[derive(Debug)]
pub struct SessionTable<C> {
    seq: u64,
    next_order: u64,
    order_of: HashMap<TableKey, u64>,
    /// In registry insertion order, oldest first.
    entries: BTreeMap<u64, Arc<Session>>,
    clients: HashMap<u64, C>,
}

impl<C> Default for SessionTable<C> {
    fn default() -> Self {
        Self {
            seq: 0,
            next_order: 0,
            order_of: HashMap::new(),
            entries: BTreeMap::new(),
            clients: HashMap::new(),
        }
    }
}

impl<C> SessionTable<C> {
    /// The registry `seq` of the last change reflected.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.entries.values()
    }

    /// Every client.
    pub fn clients(&self) -> impl Iterator<Item = &C> {
        self.clients.values()
    }

    pub fn add_client(&mut self, id: u64, client: C) {
        self.clients.insert(id, client);
    }

    pub fn remove_client(&mut self, id: u64) -> Option<C> {
        self.clients.remove(&id)
    }

    /// Starts over from a registry snapshot; every client is asked to resync.
    pub fn reset(&mut self, snapshot: Snapshot)
    where
        C: TableClient,
    {
        let clients = std::mem::take(&mut self.clients);
        *self = Self {
            seq: snapshot.seq,
            clients,
            ..Self::default()
        };
        for s in snapshot.sessions {
            self.upsert(s);
        }
        self.clients.values().for_each(C::request_resync);
    }

    /// Takes the change numbered `seq` (`session` as it is after it) and hands every client to
    /// `deliver`. False, and nothing happens, when the table already reflects it (the snapshot
    /// it was reset from held it).
    pub fn apply(
        &mut self,
        seq: u64,
        change: &SessionChange,
        session: Arc<Session>,
        deliver: impl FnMut(&C),
    ) -> bool {
        if seq <= self.seq {
            return false;
        }
        self.seq = seq;
        match change {
            SessionChange::Added | SessionChange::Updated => self.upsert(session),
            SessionChange::Removed { .. } => self.remove(&session),
        }
        self.clients.values().for_each(deliver);
        true
    }

    /// Adds `session`, or replaces its earlier version in place.
    pub fn upsert(&mut self, session: Arc<Session>) {
        let key = (session.harness.clone(), session.id.clone());
        let order = *self.order_of.entry(key).or_insert_with(|| {
            self.next_order += 1;
            self.next_order
        });
        self.entries.insert(order, session);
    }

    pub fn remove(&mut self, session: &Session) {
        if let Some(order) = self
            .order_of
            .remove(&(session.harness.clone(), session.id.clone()))
        {
            self.entries.remove(&order);
        }
    }
}

/// A sink's side of [`fan_out`].
pub trait FanOut {
    /// A change made ready for every client (rendered once, before any lock is taken, so
    /// that readers never wait on JSON).
    type Rendered: From<SessionEvent>;
    /// Starts over from `snapshot`; every client gets a resync.
    fn reset(&self, snapshot: Snapshot);
    /// The sink fell behind the registry, `missed` changes; a [`FanOut::reset`] follows.
    /// For sinks that count it; nothing by default.
    fn fell_behind(&self, _missed: u64) {}
    /// Takes rendered changes, in order, and offers each to every client.
    fn apply(&self, changes: Vec<Self::Rendered>);
}

/// The fan-out task of sink `name`: follows the registry until it stops or `cancel` fires,
/// resetting from the first snapshot and again whenever the sink fell behind.
pub async fn fan_out<F: FanOut>(
    sink: &F,
    name: &str,
    registry: RegistryHandle,
    cancel: CancellationToken,
) -> Result<(), PluginError> {
    let (snapshot, follower) = RegistryFollower::start(registry, cancel).await?;
    let mut follower = follower.with_batch(DEFAULT_BATCH);
    sink.reset(snapshot);
    while let Some(followed) = follower.next().await {
        match followed {
            Followed::Changes(events) => {
                sink.apply(events.into_iter().map(F::Rendered::from).collect())
            }
            Followed::Resync { snapshot, missed } => {
                warn!(
                    sink = name,
                    missed, "sink fell behind the registry; resyncing every client"
                );
                sink.fell_behind(missed);
                sink.reset(snapshot);
            }
        }
    }
    debug!(sink = name, "fan-out ends");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Arc<Session> {
        let mut s = crate::testing_session();
        s.id = SessionId::new(id);
        Arc::new(s)
    }

    /// A client that counts the resyncs it was asked for.
    #[derive(Debug, Default, PartialEq)]
    struct Probe(u8, std::cell::Cell<u32>);

    impl TableClient for Probe {
        fn request_resync(&self) {
            self.1.set(self.1.get() + 1);
        }
    }

    fn ids(t: &SessionTable<Probe>) -> Vec<String> {
        t.sessions().map(|s| s.id.as_str().to_owned()).collect()
    }

    #[test]
    fn keeps_registry_order_and_replaces_in_place() {
        let mut t = SessionTable::<Probe>::default();
        for id in ["a", "b", "c"] {
            t.upsert(session(id));
        }
        t.upsert(session("a"));
        t.remove(&session("b"));
        assert_eq!(ids(&t), ["a", "c"]);
    }

    #[test]
    fn changes_the_snapshot_held_are_skipped_and_the_rest_reach_every_client() {
        let mut t = SessionTable::default();
        t.add_client(1, Probe(10, Default::default()));
        t.add_client(2, Probe(20, Default::default()));
        let snapshot = Snapshot {
            seq: 5,
            sessions: vec![session("a")],
        };
        t.reset(snapshot);
        let mut resynced: Vec<u8> = t
            .clients()
            .filter(|c| c.1.get() == 1)
            .map(|c| c.0)
            .collect();
        resynced.sort_unstable();
        assert_eq!(resynced, [10, 20], "the clients outlive a reset");
        let mut delivered = Vec::new();
        assert!(!t.apply(5, &SessionChange::Added, session("b"), |c| {
            delivered.push(c.0)
        }));
        assert!(delivered.is_empty());
        assert!(t.apply(6, &SessionChange::Added, session("c"), |c| {
            delivered.push(c.0)
        }));
        assert_eq!(delivered.len(), 2);
        assert_eq!(t.remove_client(1).map(|c| c.0), Some(10));
        let removed = SessionChange::Removed {
            reason: "ended".into(),
        };
        assert!(t.apply(7, &removed, session("a"), |c| delivered.push(c.0)));
        assert_eq!(delivered.len(), 3);
        assert_eq!(delivered[2], 20, "a removed client is offered nothing");
        assert_eq!(ids(&t), ["c"]);
        assert_eq!(t.seq(), 7);
        assert_eq!(t.clients().count(), 1);
    }
}
