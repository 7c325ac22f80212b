//! The fan-out behind the live stream and the JSON API: ONE task follows the registry
//! (`atm_core::registry_follow`), keeps the latest version of every session (the registry's own
//! `Arc`s, no copies), renders each change ONCE into a server-sent-events frame, and offers that
//! frame to every live client's queue.
//!
//! Each client's queue is atm-core's [`SharedQueue`] with [`HttpConfig::client_policy`]: a few
//! frames in order, then the latest frame per session, then a resync (the client gets a fresh
//! `snapshot` frame when it next reads). Pushing never waits, so a stuck browser costs the
//! fan-out one lock and a reference-count increment per change and never slows anyone else;
//! what it holds is bounded by the policy.
//!
//! Every client queue that overflows counts a resync of `<sink>-sse` in `/metrics`
//! (`atm_sink_resyncs_total`; what it lost is unknown, so `missed` stays 0), and the fan-out's
//! own follower falling behind the registry counts under `<sink>-board` with what it missed.
//!
//! Consistency: a client is registered, with a resync due, under the table's write lock, and
//! its snapshot is taken from the table when it reads; every frame carries the registry `seq`
//! of its change and the page skips frames the snapshot already reflects (`seq` not above it).
//!
//! [`HttpConfig::client_policy`]: crate::config::HttpConfig::client_policy

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use atm_core::coalesce::{Pushed, QueuePolicy, SharedQueue};

use crate::metrics::SinkCounters;
use atm_core::registry::{RegistryHandle, SessionChange, SessionEvent, Snapshot};
use atm_core::session_table::{FanOut, SessionTable, fan_out};
use atm_core::{Session, SessionView};
use bytes::Bytes;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// A live client's queue of rendered frames, keyed by session id.
pub(crate) type ClientQueue = SharedQueue<String, Bytes>;

#[derive(Default)]
struct Table {
    sessions: SessionTable<Arc<ClientQueue>>,
    /// The fan-out has ended: no more changes will come (new clients' streams end at once).
    ended: bool,
}

/// A change rendered for delivery, before the lock is taken.
pub(crate) struct Rendered {
    seq: u64,
    id: String,
    frame: Bytes,
    event: SessionEvent,
}

/// The sessions as the http sink knows them, and its live clients.
pub(crate) struct Board {
    table: RwLock<Table>,
    policy: QueuePolicy,
    next_client: AtomicU64,
    /// The name the board groups this machine's sessions under.
    pub(crate) host: String,
    counters: Counters,
    /// The last snapshot frame and the `seq` it reflects: clients that resync at one `seq` (a
    /// burst of browsers reconnecting after a restart) share one frame instead of each
    /// rendering and holding its own.
    last_snapshot: Mutex<Option<(u64, Bytes)>>,
}

/// What the board counts in `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct Counters {
    /// Client queues that overflowed and will start over from a snapshot (`<sink>-sse`).
    pub(crate) clients: SinkCounters,
    /// The fan-out's follower fell behind the registry (`<sink>-board`).
    pub(crate) fan_out: SinkCounters,
}

impl Counters {
    /// The counters of the board of sink `sink`, in `metrics`.
    pub(crate) fn new(metrics: &crate::metrics::Metrics, sink: &str) -> Self {
        Self {
            clients: metrics.sink_counters(&format!("{sink}-sse")),
            fan_out: metrics.sink_counters(&format!("{sink}-board")),
        }
    }
}

/// A live client's registration; dropping it unregisters the client.
pub(crate) struct Subscription {
    board: Arc<Board>,
    id: u64,
    pub(crate) queue: Arc<ClientQueue>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.board.write().sessions.remove_client(self.id);
    }
}

fn view_json(session: &Session, out: &mut Vec<u8>) {
    // A SessionView holds strings, numbers and string-keyed maps: it always serializes.
    let _ = serde_json::to_writer(out, &SessionView::from_session(session, Utc::now()));
}

/// `event: NAME\ndata: JSON\n\n`. serde_json's compact output has no raw newline, so the JSON is
/// one `data:` line.
fn frame(name: &str, json: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    json(&mut out);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Renders a change once, for every client.
impl From<SessionEvent> for Rendered {
    fn from(event: SessionEvent) -> Self {
        let id = event.session.id.as_str().to_owned();
        let seq = event.seq;
        let frame = match event.change {
            SessionChange::Added | SessionChange::Updated => frame("session", |out| {
                out.extend_from_slice(format!("{{\"seq\":{seq},\"session\":").as_bytes());
                view_json(&event.session, out);
                out.push(b'}');
            }),
            SessionChange::Removed { .. } => frame("removed", |out| {
                let body = serde_json::json!({"seq": seq, "id": id});
                let _ = serde_json::to_writer(out, &body);
            }),
        };
        Rendered {
            seq,
            id,
            frame,
            event,
        }
    }
}

impl Board {
    /// A board for clients with `policy`, naming this machine `host`; `counters` count its
    /// overflows ([`Counters`]).
    pub(crate) fn new(policy: QueuePolicy, host: String, counters: Counters) -> Self {
        Self {
            table: RwLock::default(),
            policy,
            next_client: AtomicU64::new(1),
            host,
            counters,
            last_snapshot: Mutex::new(None),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a live client; its first read is a snapshot.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscription {
        let queue = Arc::new(ClientQueue::new(self.policy));
        queue.request_resync();
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let mut table = self.write();
        if table.ended {
            queue.close();
        }
        table.sessions.add_client(id, queue.clone());
        drop(table);
        Subscription {
            board: self.clone(),
            id,
            queue,
        }
    }

    /// Live clients now.
    #[cfg(test)]
    pub(crate) fn clients(&self) -> usize {
        self.read().sessions.clients().count()
    }

    /// Every session as the page's `snapshot` frame: `{seq, host, sessions: [view...]}`.
    pub(crate) fn snapshot_frame(&self) -> Bytes {
        let mut last = self
            .last_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.read().sessions.seq();
        if let Some((at, frame)) = &*last
            && *at == now
        {
            return frame.clone();
        }
        let (seq, sessions) = self.sessions();
        // Rendered under the cache's lock: clients arriving meanwhile wait for this one frame
        // rather than render the same one again.
        let rendered = self.render_snapshot(seq, &sessions);
        *last = Some((seq, rendered.clone()));
        rendered
    }

    fn render_snapshot(&self, seq: u64, sessions: &[Arc<Session>]) -> Bytes {
        frame("snapshot", |out| {
            out.extend_from_slice(format!("{{\"seq\":{seq},\"host\":").as_bytes());
            let _ = serde_json::to_writer(&mut *out, &self.host);
            out.extend_from_slice(b",\"sessions\":[");
            for (i, s) in sessions.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                view_json(s, out);
            }
            out.extend_from_slice(b"]}");
        })
    }

    /// The `seq` and the sessions, in registry order.
    pub(crate) fn sessions(&self) -> (u64, Vec<Arc<Session>>) {
        let table = self.read();
        (
            table.sessions.seq(),
            table.sessions.sessions().cloned().collect(),
        )
    }

    /// The session with client-facing id `id`.
    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.read()
            .sessions
            .sessions()
            .find(|s| s.id.as_str() == id)
            .cloned()
    }

    /// Ends every live stream (the sink stops).
    fn close(&self) {
        let mut table = self.write();
        table.ended = true;
        table.sessions.clients().for_each(|q| q.close());
    }

    /// The fan-out task: follows the registry until it stops or `cancel` fires.
    pub(crate) async fn run(
        self: Arc<Self>,
        registry: RegistryHandle,
        cancel: CancellationToken,
    ) -> Result<(), atm_core::PluginError> {
        fan_out(&*self, "http", registry, cancel).await?;
        self.close();
        Ok(())
    }
}

impl FanOut for Board {
    type Rendered = Rendered;

    fn reset(&self, snapshot: Snapshot) {
        self.write().sessions.reset(snapshot);
    }

    fn fell_behind(&self, missed: u64) {
        self.counters.fan_out.resynced(missed);
    }

    fn apply(&self, changes: Vec<Rendered>) {
        let mut table = self.write();
        for r in changes {
            let (id, frame) = (r.id.as_str(), &r.frame);
            let change = &r.event.change;
            table.sessions.apply(r.seq, change, r.event.session, |q| {
                if q.push(id, frame.clone()) == Pushed::Resync {
                    self.counters.clients.resynced(0);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::coalesce::Overflow;

    fn session(id: &str) -> Arc<Session> {
        Arc::new(atm_core::testing::claude_session(id, Utc::now()))
    }

    fn change(seq: u64, s: Arc<Session>, change: SessionChange) -> Rendered {
        Rendered::from(SessionEvent {
            seq,
            change,
            session: s,
            previous_state: None,
            requests: Default::default(),
        })
    }

    #[test]
    fn frames_are_one_event_with_one_data_line() {
        let r = change(7, session("a\nb"), SessionChange::Added);
        let text = String::from_utf8(r.frame.to_vec()).unwrap();
        assert!(
            text.starts_with("event: session\ndata: {\"seq\":7,"),
            "{text}"
        );
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 3, "{text}");
        let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["session"]["id"], "a\nb");
    }

    #[test]
    fn a_stuck_client_is_resynced_and_never_holds_more_than_its_policy() {
        let policy = QueuePolicy {
            ordered: 2,
            max_keys: 3,
            max_age: None,
            on_overflow: Overflow::Resync,
            resync: atm_core::coalesce::ResyncAt::Now,
        };
        let metrics = test_metrics();
        let board = Arc::new(Board::new(
            policy,
            "h".into(),
            Counters::new(&metrics, "http"),
        ));
        board.reset(Snapshot {
            seq: 0,
            sessions: Vec::new(),
        });
        let stuck = board.subscribe();
        let _ = stuck.queue.take(); // the first snapshot
        for seq in 1..=100 {
            let id = format!("s{}", seq % 10);
            board.apply(vec![change(seq, session(&id), SessionChange::Added)]);
            let held = stuck.queue.inspect(|q| q.ordered_capacity());
            assert!(held <= 64, "held {held}");
        }
        let batch = stuck.queue.take();
        assert!(batch.resync, "an overflowing client is resynced");
        assert!(batch.entries.len() <= 5);
        assert_eq!(board.sessions().1.len(), 10);
        let snap = String::from_utf8(board.snapshot_frame().to_vec()).unwrap();
        assert!(
            snap.starts_with("event: snapshot\ndata: {\"seq\":100,\"host\":\"h\",\"sessions\":[{")
        );
        // Every overflow is in /metrics.
        let resyncs = stuck.queue.inspect(|q| q.resyncs());
        assert!(resyncs > 0);
        let text = metrics.encode().unwrap();
        let counted = |sink: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("atm_sink_resyncs_total{")
                        && l.contains(&format!("sink=\"{sink}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<u64>().unwrap())
        };
        assert_eq!(counted("http-sse"), Some(resyncs), "{text}");
        assert_eq!(counted("http-board"), Some(0), "{text}");
        drop(stuck);
        assert_eq!(board.clients(), 0);
    }

    #[test]
    fn clients_resyncing_at_one_seq_share_one_snapshot_frame() {
        let policy = QueuePolicy::ordered_then_latest(4);
        let counters = Counters::new(&test_metrics(), "http");
        let board = Arc::new(Board::new(policy, "h".into(), counters));
        board.reset(Snapshot {
            seq: 3,
            sessions: vec![session("a"), session("b")],
        });
        let first = board.snapshot_frame();
        let again = board.snapshot_frame();
        assert_eq!(first.as_ptr(), again.as_ptr(), "one frame, shared");
        board.apply(vec![change(4, session("c"), SessionChange::Added)]);
        let after = board.snapshot_frame();
        assert_ne!(first.as_ptr(), after.as_ptr());
        let text = String::from_utf8(after.to_vec()).unwrap();
        assert!(text.contains("\"seq\":4,"), "{text}");
        assert_eq!(text.matches("\"id\":").count(), 3, "{text}");
    }

    fn test_metrics() -> crate::metrics::Metrics {
        crate::metrics::Metrics::new(crate::metrics::MetricsConfig {
            host: "h".into(),
            sink: "http".into(),
            max_session_series: 0,
        })
    }
}
