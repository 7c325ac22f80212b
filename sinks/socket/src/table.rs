//! The fan-out: one task follows the registry, renders each change ONCE into a shared line, and
//! hands that line to every subscriber's [`Outbox`].
//!
//! Why it is shaped so: with 1,000 subscribers, per-subscriber JSON work would cost a thousand
//! serializations per change. Here a change costs one `SessionView` render and one allocation;
//! subscribers receive a reference-counted [`Bytes`]. The same rendered views are spliced into
//! `session_list` replies, so listing 10,000 sessions is mostly a memory copy.
//!
//! Consistency: the table (latest rendered view per session, in registry order) is updated and
//! the change delivered to subscribers under the same write lock. A subscriber's initial list or
//! resync list is taken under the read lock together with its subscription state, so every
//! change is either in the list or delivered after it, never neither.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use atm_core::control::ControlBus;
use atm_core::protocol::ServerMessage;
use atm_core::registry::{RegistryHandle, SessionChange, SessionEvent, Snapshot};
use atm_core::view::{format_ago, format_duration};
use atm_core::{Harness, Session, SessionId, SessionView};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::SocketConfig;
use crate::outbox::Outbox;

/// A rendered view is reused in lists while younger than this; older ones are rendered again so
/// that `5s ago` and friends are right to the second.
const VIEW_FRESHNESS: Duration = Duration::from_secs(1);

/// Lists with more sessions than this are rendered on the blocking pool, so one large reply
/// never stalls the runtime's workers.
const INLINE_RENDER_LIMIT: usize = 256;

/// At most this many changes are applied under one lock acquisition.
const APPLY_BATCH: usize = 256;

const UPDATED_PREFIX: &[u8] = b"{\"type\":\"session_updated\",\"session\":";
const UPDATED_SUFFIX: &[u8] = b"}\n";
const LIST_PREFIX: &[u8] = b"{\"type\":\"session_list\",\"sessions\":[";
const LIST_SUFFIX: &[u8] = b"]}\n";

/// The `SessionView` fields whose values depend on "now", in serialization order. Matched with
/// the leading comma: inside a JSON string every `"` is escaped, so `,"key":` is always a key.
/// Nested objects with caller-chosen keys (`rate_limits`) come after all of these.
const RELATIVE_KEYS: [&[u8]; 4] = [
    b",\"duration_seconds\":",
    b",\"duration_display\":",
    b",\"last_activity_display\":",
    b",\"age_display\":",
];

/// Byte ranges of the values of [`RELATIVE_KEYS`] in a serialized view (`None` if the view's
/// shape is not the expected one: then stale views are fully rendered again).
fn relative_ranges(view: &[u8]) -> Option<[(usize, usize); 4]> {
    let mut ranges = [(0, 0); 4];
    let mut from = 0;
    for (slot, key) in ranges.iter_mut().zip(RELATIVE_KEYS) {
        let start = from + memchr::memmem::find(view.get(from..)?, key)? + key.len();
        // Numbers and the short ASCII strings these fields hold contain no `,` or `}`.
        let end = start + memchr::memchr2(b',', b'}', view.get(start..)?)?;
        *slot = (start, end);
        from = end;
    }
    Some(ranges)
}

thread_local! {
    /// Views are serialized into this reused buffer and kept as an exact-size copy: the table
    /// holds one line per session for as long as it lives, so spare capacity (or the fragments
    /// a shrink leaves behind) would cost memory per session.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// One session as last rendered.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) session: Arc<Session>,
    /// The whole `session_updated` line; `view` is a slice of it.
    line: Bytes,
    /// The `SessionView` JSON object, without framing.
    view: Bytes,
    rendered_at: Instant,
    /// Where the time-relative values sit in `view`, to refresh them without a full render.
    relative: Option<[(usize, usize); 4]>,
}

impl Rendered {
    fn new(session: Arc<Session>) -> Self {
        Self::at(session, Utc::now())
    }

    fn at(session: Arc<Session>, now: DateTime<Utc>) -> Self {
        let view = SessionView::from_session(&session, now);
        let (line, view_end) = SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.extend_from_slice(UPDATED_PREFIX);
            // A SessionView holds strings, numbers and maps with string keys: it always
            // serializes.
            let _ = serde_json::to_writer(&mut *buf, &view);
            let view_end = buf.len();
            buf.extend_from_slice(UPDATED_SUFFIX);
            (Bytes::copy_from_slice(buf), view_end)
        });
        let view = line.slice(UPDATED_PREFIX.len()..view_end);
        Self {
            session,
            relative: relative_ranges(&view),
            view,
            line,
            rendered_at: Instant::now(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        self.session.id.as_str()
    }

    /// Appends this session's view; if the cached one is too old, its time-relative values are
    /// computed again for `wall`.
    fn write_view(&self, out: &mut Vec<u8>, now: Instant, wall: DateTime<Utc>) {
        if now.saturating_duration_since(self.rendered_at) <= VIEW_FRESHNESS {
            out.extend_from_slice(&self.view);
        } else if let Some(ranges) = &self.relative {
            self.write_refreshed(out, ranges, wall);
        } else {
            let view = SessionView::from_session(&self.session, wall);
            let _ = serde_json::to_writer(&mut *out, &view);
        }
    }

    /// The cached view with its four time-relative values replaced, computed exactly as
    /// `SessionView::from_session` does (a unit test holds the two together). Idle sessions'
    /// views go stale every second; this keeps a list of 10,000 of them a memory copy plus a
    /// few small formats each instead of 10,000 full renders.
    fn write_refreshed(
        &self,
        out: &mut Vec<u8>,
        ranges: &[(usize, usize); 4],
        wall: DateTime<Utc>,
    ) {
        let s = &self.session;
        let secs = if s.usage.total_duration_ms > 0 {
            s.usage.total_duration_ms as f64 / 1000.0
        } else {
            ((wall - s.started_at).num_milliseconds().max(0) as f64) / 1000.0
        };
        let mut pos = 0;
        for (i, (start, end)) in ranges.iter().enumerate() {
            out.extend_from_slice(&self.view[pos..*start]);
            let _ = match i {
                0 => serde_json::to_writer(&mut *out, &((secs * 10.0).round() / 10.0)),
                1 => serde_json::to_writer(&mut *out, &format_duration(secs)),
                2 => serde_json::to_writer(&mut *out, &format_ago(s.last_activity, wall)),
                _ => serde_json::to_writer(&mut *out, &format_ago(s.started_at, wall)),
            };
            pos = *end;
        }
        out.extend_from_slice(&self.view[pos..]);
    }
}

/// A point-in-time list for one reply: which sessions, and whether it is the unfiltered list at
/// table sequence `seq` (those can share one rendering).
pub(crate) struct ListJob {
    entries: Vec<Arc<Rendered>>,
    seq: u64,
    complete: bool,
}

impl ListJob {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

type TableKey = (Harness, SessionId);

/// Latest rendered view of every session, and the subscribers to tell about changes.
#[derive(Default)]
pub(crate) struct Table {
    /// Sequence number of the last registry change reflected.
    seq: u64,
    next_order: u64,
    order_of: HashMap<TableKey, u64>,
    /// In registry insertion order, oldest first.
    entries: BTreeMap<u64, Arc<Rendered>>,
    subscribers: HashMap<u64, Arc<Outbox>>,
}

impl Table {
    fn insert_or_replace(&mut self, rendered: Arc<Rendered>) {
        let key = (
            rendered.session.harness.clone(),
            rendered.session.id.clone(),
        );
        let order = match self.order_of.get(&key) {
            Some(o) => *o,
            None => {
                self.next_order += 1;
                self.order_of.insert(key, self.next_order);
                self.next_order
            }
        };
        self.entries.insert(order, rendered);
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
                .filter(|e| e.id() == id)
                .cloned()
                .collect(),
        };
        ListJob {
            entries,
            seq: self.seq,
            complete: filter.is_none(),
        }
    }
}

/// A change rendered for delivery.
struct Delivery {
    seq: u64,
    id: String,
    line: Bytes,
    update: Option<Arc<Rendered>>,
    removed: Option<Arc<Session>>,
}

/// The shared state of one socket sink: the table, the limits, and what connections need.
pub(crate) struct Shared {
    table: RwLock<Table>,
    list_cache: Mutex<Option<(u64, Instant, Bytes)>>,
    pub(crate) config: SocketConfig,
    pub(crate) control: ControlBus,
    next_client: AtomicU64,
    next_conn: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: SocketConfig, control: ControlBus) -> Self {
        Self {
            table: RwLock::default(),
            list_cache: Mutex::default(),
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

    /// Renders a list reply. Unfiltered lists of the same table state share one rendering for
    /// up to [`VIEW_FRESHNESS`], so a thousand subscribers resyncing at once cost one render.
    pub(crate) async fn render_list(&self, job: ListJob) -> Bytes {
        if job.complete
            && let Ok(cache) = self.list_cache.lock()
            && let Some((seq, at, bytes)) = cache.as_ref()
            && *seq == job.seq
            && at.elapsed() <= VIEW_FRESHNESS
        {
            return bytes.clone();
        }
        let (complete, seq) = (job.complete, job.seq);
        let bytes = if job.entries.len() > INLINE_RENDER_LIMIT {
            match tokio::task::spawn_blocking(move || render_list_now(&job.entries)).await {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "rendering a session list failed");
                    Bytes::from(
                        ServerMessage::Error {
                            message: "cannot render the session list".into(),
                            code: atm_core::protocol::ErrorCode::Internal,
                        }
                        .to_line(),
                    )
                }
            }
        } else {
            render_list_now(&job.entries)
        };
        if complete && let Ok(mut cache) = self.list_cache.lock() {
            *cache = Some((seq, Instant::now(), bytes.clone()));
        }
        bytes
    }

    /// Rebuilds the table from a registry snapshot; existing subscribers get a resync.
    fn reset(&self, snapshot: Snapshot) {
        let rendered: Vec<Arc<Rendered>> = snapshot
            .sessions
            .into_iter()
            .map(|s| Arc::new(Rendered::new(s)))
            .collect();
        let mut table = self.write_table();
        let subscribers = std::mem::take(&mut table.subscribers);
        *table = Table {
            seq: snapshot.seq,
            subscribers,
            ..Table::default()
        };
        for r in rendered {
            table.insert_or_replace(r);
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
        SessionChange::Added | SessionChange::Updated => {
            let rendered = Arc::new(Rendered::new(event.session));
            Delivery {
                seq: event.seq,
                id: rendered.id().to_owned(),
                line: rendered.line.clone(),
                update: Some(rendered),
                removed: None,
            }
        }
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

fn render_list_now(entries: &[Arc<Rendered>]) -> Bytes {
    let now = Instant::now();
    let wall = Utc::now();
    let size: usize = entries.iter().map(|e| e.view.len() + 1).sum();
    let mut out = Vec::with_capacity(LIST_PREFIX.len() + size + LIST_SUFFIX.len());
    out.extend_from_slice(LIST_PREFIX);
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_view(&mut out, now, wall);
    }
    out.extend_from_slice(LIST_SUFFIX);
    Bytes::from(out)
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
        let r = Rendered::new(s.clone());
        let parsed: ServerMessage = serde_json::from_slice(&r.line).unwrap();
        let ServerMessage::SessionUpdated { session: view } = parsed else {
            panic!("not an update: {parsed:?}");
        };
        assert_eq!(view.id, "8e11bfb5-日本");
        assert_eq!(view.working_directory, s.cwd);
        assert_eq!(*r.line.last().unwrap(), b'\n');
        let list = render_list_now(&[Arc::new(r), Arc::new(Rendered::new(session("b")))]);
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
    fn stale_views_are_rendered_again_for_lists() {
        let mut s = (*session("old")).clone();
        s.last_activity = Utc::now() - chrono::Duration::seconds(125);
        let mut r = Rendered::new(Arc::new(s));
        r.rendered_at = Instant::now() - Duration::from_secs(5);
        let list = render_list_now(&[Arc::new(r)]);
        let v: serde_json::Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(v["sessions"][0]["last_activity_display"], "2m ago");
    }

    #[test]
    fn refreshed_views_equal_full_renders() {
        let t0 = Utc::now();
        let mut cases = Vec::new();
        for (started_ago, active_ago, duration_ms) in [
            (0, 0, 0),
            (65, 3, 0),
            (7322, 59, 0),
            (90_000, 4000, 0),
            (30, 2, 65_432),
        ] {
            let mut s = (*session("r")).clone();
            s.started_at = t0 - chrono::Duration::seconds(started_ago);
            s.last_activity = t0 - chrono::Duration::seconds(active_ago);
            s.usage.total_duration_ms = duration_ms;
            s.rss_bytes = Some(1);
            s.usage.rate_limits.insert(
                "age_display".into(),
                atm_core::model::RateLimit {
                    used_percentage: 1.0,
                    resets_at: None,
                },
            );
            cases.push(s);
        }
        for s in cases {
            let s = Arc::new(s);
            let r = Rendered::at(s.clone(), t0);
            let ranges = r.relative.expect("relative fields found");
            for later in [0.0, 0.35, 1.0, 59.96, 61.0, 3599.9, 3600.0, 86_400.5] {
                let wall = t0 + chrono::Duration::milliseconds((later * 1000.0) as i64);
                let mut patched = Vec::new();
                r.write_refreshed(&mut patched, &ranges, wall);
                let full = serde_json::to_vec(&SessionView::from_session(&s, wall)).unwrap();
                assert_eq!(
                    String::from_utf8(patched).unwrap(),
                    String::from_utf8(full).unwrap(),
                    "{later}s later"
                );
            }
        }
    }

    #[test]
    fn table_keeps_registry_order_and_replaces_in_place() {
        let mut t = Table::default();
        for id in ["a", "b", "c"] {
            t.insert_or_replace(Arc::new(Rendered::new(session(id))));
        }
        t.insert_or_replace(Arc::new(Rendered::new(session("a"))));
        t.remove(&session("b"));
        let ids: Vec<_> = t
            .list(None)
            .entries
            .iter()
            .map(|e| e.id().to_owned())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(t.list(Some("c")).len(), 1);
        assert!(!t.list(Some("c")).complete);
        assert_eq!(t.list(Some("zz")).len(), 0);
    }
}
