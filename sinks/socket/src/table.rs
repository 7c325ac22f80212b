//! The fan-out: one task follows the registry, renders each change ONCE into a shared line, and
//! hands that line to every subscriber's [`Outbox`].
//!
//! Why it is shaped so: with 1,000 subscribers, per-subscriber JSON work would cost a thousand
//! serializations per change. Here a change costs one `SessionView` render and one allocation;
//! subscribers receive a reference-counted [`Bytes`].
//!
//! The table keeps the sessions themselves (the registry's own `Arc`s, so no copy), not their
//! rendered views: a cached view would double the memory per session, and several view fields
//! are relative to "now" (`5s ago`) so cached ones go stale anyway. A `session_list` is
//! rendered from borrowed text as the connection's writer sends it, one 64 KiB piece at a time
//! ([`ListJob::into_pieces`]), so a reply of 10,000 sessions never exists in memory as a whole.
//!
//! Consistency: the table (latest version of each session, in registry order) is updated and
//! the change delivered to subscribers under the same write lock. A subscriber's initial list or
//! resync list is taken under the read lock together with its subscription state, so every
//! change is either in the list or delivered after it, never neither.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use atm_core::control::ControlBus;
use atm_core::protocol::ServerMessage;
use atm_core::registry::{RegistryHandle, SessionChange, SessionEvent, Snapshot};
use atm_core::{Harness, Session, SessionId, SessionView};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::SocketConfig;
use crate::outbox::Outbox;

/// At most this many changes are applied under one lock acquisition.
const APPLY_BATCH: usize = 256;

const UPDATED_PREFIX: &[u8] = b"{\"type\":\"session_updated\",\"session\":";
const UPDATED_SUFFIX: &[u8] = b"}\n";
const LIST_PREFIX: &[u8] = b"{\"type\":\"session_list\",\"sessions\":[";
const LIST_SUFFIX: &[u8] = b"]}\n";

thread_local! {
    /// Update lines are serialized into this reused buffer and sent as an exact-size copy.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Appends the view of `session` as of `wall`.
fn write_view(out: &mut Vec<u8>, session: &Session, wall: DateTime<Utc>) {
    // A SessionView holds strings, numbers and maps with string keys: it always serializes.
    let _ = serde_json::to_writer(out, &SessionView::from_session(session, wall));
}

/// The `session_updated` line for `session`.
fn updated_line(session: &Session) -> Bytes {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(UPDATED_PREFIX);
        write_view(buf, session, Utc::now());
        buf.extend_from_slice(UPDATED_SUFFIX);
        Bytes::copy_from_slice(buf)
    })
}

/// A point-in-time list for one reply: the sessions as they were when it was taken.
pub(crate) struct ListJob {
    entries: Vec<Arc<Session>>,
}

impl ListJob {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

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
        ListJob { entries }
    }
}

/// A change rendered for delivery.
struct Delivery {
    seq: u64,
    id: String,
    line: Bytes,
    update: Option<Arc<Session>>,
    removed: Option<Arc<Session>>,
}

/// The shared state of one socket sink: the table, the limits, and what connections need.
pub(crate) struct Shared {
    table: RwLock<Table>,
    pub(crate) config: SocketConfig,
    pub(crate) control: ControlBus,
    next_client: AtomicU64,
    next_conn: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: SocketConfig, control: ControlBus) -> Self {
        Self {
            table: RwLock::default(),
            config,
            control,
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
                outbox.deliver(&d.id, &d.line, &self.config);
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
        let subscribe = |registry: RegistryHandle| async move {
            registry.subscribe().await.map_err(|e| {
                atm_core::PluginError::Other(format!("cannot follow the registry: {e}"))
            })
        };
        let (snapshot, mut rx) = subscribe(registry.clone()).await?;
        self.reset(snapshot);
        loop {
            let first = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                r = rx.recv() => r,
            };
            let mut lagged = false;
            match first {
                Ok(event) => {
                    let mut events = vec![event];
                    while events.len() < APPLY_BATCH {
                        match rx.try_recv() {
                            Ok(e) => events.push(e),
                            Err(TryRecvError::Lagged(_)) => {
                                lagged = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.apply(events.into_iter().map(render_change).collect());
                }
                Err(RecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "socket sink fell behind the registry; resyncing every subscriber"
                    );
                    lagged = true;
                }
                Err(RecvError::Closed) => {
                    debug!("registry stopped; socket fan-out ends");
                    return Ok(());
                }
            }
            if lagged {
                let (snapshot, new_rx) = subscribe(registry.clone()).await?;
                rx = new_rx;
                self.reset(snapshot);
            }
        }
    }
}

fn render_change(event: SessionEvent) -> Delivery {
    match event.change {
        SessionChange::Added | SessionChange::Updated => Delivery {
            seq: event.seq,
            id: event.session.id.as_str().to_owned(),
            line: updated_line(&event.session),
            update: Some(event.session),
            removed: None,
        },
        SessionChange::Removed { .. } => {
            let id = event.session.id.as_str().to_owned();
            let line = ServerMessage::SessionRemoved {
                session_id: id.clone(),
            }
            .to_line();
            Delivery {
                seq: event.seq,
                id,
                line: Bytes::from(line),
                update: None,
                removed: Some(event.session),
            }
        }
    }
}

/// Sessions per piece of a `session_list` line: about 60 KiB, below glibc's mmap threshold, and
/// well under a millisecond to render.
const PIECE_SESSIONS: usize = 64;

/// One piece of a `session_list` line: a run of the list's sessions, with the line's opening
/// (first piece) and closing (last piece).
pub(crate) struct ListPiece {
    entries: Arc<[Arc<Session>]>,
    range: std::ops::Range<usize>,
    wall: DateTime<Utc>,
}

impl ListPiece {
    pub(crate) fn render(&self) -> Vec<u8> {
        let first = self.range.start == 0;
        let mut out = Vec::with_capacity(self.range.len() * 1024 + LIST_PREFIX.len());
        if first {
            out.extend_from_slice(LIST_PREFIX);
        }
        for (i, s) in self.entries[self.range.clone()].iter().enumerate() {
            if i > 0 || !first {
                out.push(b',');
            }
            write_view(&mut out, s, self.wall);
        }
        if self.range.end == self.entries.len() {
            out.extend_from_slice(LIST_SUFFIX);
        }
        out
    }
}

impl ListJob {
    /// The reply in pieces, to be rendered as the connection's writer sends them: memory per
    /// list in flight is a few pieces, whatever the number of sessions, and the client starts
    /// receiving at once. (Rendering whole replies first held about 9 MiB per 10,000-session
    /// list, which the allocator then kept.) The sessions are the versions taken with the
    /// list, so the reply is the table at that instant; time-relative fields are as of now.
    pub(crate) fn into_pieces(self) -> Vec<ListPiece> {
        let wall = Utc::now();
        let entries: Arc<[Arc<Session>]> = self.entries.into();
        let n = entries.len();
        let count = n.div_ceil(PIECE_SESSIONS).max(1);
        (0..count)
            .map(|i| ListPiece {
                entries: entries.clone(),
                range: (i * PIECE_SESSIONS).min(n)..((i + 1) * PIECE_SESSIONS).min(n),
                wall,
            })
            .collect()
    }
}

#[cfg(test)]
fn render_list_now(entries: &[Arc<Session>]) -> Vec<u8> {
    ListJob {
        entries: entries.to_vec(),
    }
    .into_pieces()
    .iter()
    .flat_map(ListPiece::render)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::SessionKey;

    fn session(id: &str) -> Arc<Session> {
        let key = SessionKey::Id {
            harness: Harness::claude(),
            id: id.into(),
        };
        let mut s = Session::new(key, SessionId::new(id), None, "test", Utc::now());
        s.cwd = Some("/home/ü/проект".into());
        Arc::new(s)
    }

    #[test]
    fn spliced_lines_equal_the_protocol_messages() {
        let s = session("8e11bfb5-日本");
        let line = updated_line(&s);
        let parsed: ServerMessage = serde_json::from_slice(&line).unwrap();
        let ServerMessage::SessionUpdated { session: view } = parsed else {
            panic!("not an update: {parsed:?}");
        };
        assert_eq!(view.id, "8e11bfb5-日本");
        assert_eq!(view.working_directory.as_deref(), s.cwd.as_deref());
        assert_eq!(*line.last().unwrap(), b'\n');
        let list = render_list_now(&[s.clone(), session("b")]);
        let parsed: ServerMessage = serde_json::from_slice(&list).unwrap();
        let ServerMessage::SessionList { sessions } = parsed else {
            panic!("not a list");
        };
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[1].id, "b");
        let empty: ServerMessage = serde_json::from_slice(&render_list_now(&[])).unwrap();
        assert_eq!(
            empty,
            ServerMessage::SessionList {
                sessions: Vec::new()
            }
        );
    }

    #[test]
    fn a_list_cut_into_pieces_is_one_valid_line_in_order() {
        let sessions: Vec<_> = (0..PIECE_SESSIONS * 2 + 3)
            .map(|i| session(&format!("s{i}")))
            .collect();
        let pieces = ListJob {
            entries: sessions.clone(),
        }
        .into_pieces();
        assert_eq!(pieces.len(), 3);
        let line: Vec<u8> = pieces.iter().flat_map(ListPiece::render).collect();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let parsed: ServerMessage = serde_json::from_slice(&line).unwrap();
        let ServerMessage::SessionList { sessions: views } = parsed else {
            panic!("not a list");
        };
        let ids: Vec<_> = views.iter().map(|v| v.id.to_string()).collect();
        let expected: Vec<_> = sessions.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn lists_show_time_relative_fields_as_of_now() {
        let mut s = (*session("old")).clone();
        s.last_activity = Utc::now() - chrono::Duration::seconds(125);
        let list = render_list_now(&[Arc::new(s)]);
        let v: serde_json::Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(v["sessions"][0]["last_activity_display"], "2m ago");
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
            .entries
            .iter()
            .map(|e| e.id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(t.list(Some("c")).len(), 1);
        assert_eq!(t.list(Some("zz")).len(), 0);
    }
}
