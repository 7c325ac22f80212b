//! Pending requests as D-Bus signals: which requests appeared and which ended, read by the
//! follower from *every* registry change (each says what it opened and ended), and handed to
//! the bus task on a queue of their own.
//!
//! Why not from the bus task's mirror: when the bus task is behind, session changes are
//! coalesced per session (see [`crate::handoff`]), and a request that was opened and answered
//! in between would never be seen. A client waiting for `RequestResolved` to withdraw its
//! notification must not miss it, so the follower, which sees each change in order, queues one
//! [`RequestSignal`] per appearance and per end ([`RequestTracker`]).
//!
//! Each signal carries the `seq` of the change it comes from and is queued just *before* that
//! change is handed off, so the bus task always has it when it applies the change and sends it
//! right after that change's session signals: the order is the registry's, and a client that
//! calls `ListRequests` on `RequestAdded` finds the request.
//!
//! Requests are rare (one per prompt to a person), so the signal queue is small and plainly
//! bounded ([`SIGNAL_CAPACITY`]): when it is full the newest signal is dropped, counted and
//! logged (throttled); `ListRequests` and the session properties stay right, because they come
//! from the mirror. When the follower itself lags behind the registry, the tracker is rebuilt
//! from the resync snapshot and sends what the difference says (requests that appeared, and
//! requests that ended, with their fate when the session's log still has it).

use std::collections::HashMap;

use atm_core::request::{RequestFate, RequestId};
use atm_core::text::portable;
use atm_core::{Session, SessionChange, SessionEvent, SessionKey, Snapshot};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::throttle::Throttle;

/// Request signals queued toward the bus task at most.
pub const SIGNAL_CAPACITY: usize = 256;

/// One request signal, its text already made D-Bus safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestSignal {
    /// `RequestAdded(id, session_id, tool, detail)`.
    Added {
        id: String,
        session_id: String,
        tool: String,
        detail: String,
    },
    /// `RequestResolved(id, session_id, fate, detail)`: `fate` is `answered` (detail: the
    /// surface) or `withdrawn` (detail: why).
    Resolved {
        id: String,
        session_id: String,
        fate: &'static str,
        detail: String,
    },
}

/// A signal with the `seq` of the registry change it comes from: the bus task sends it right
/// after applying that change (or a later one that covers it), so it follows its change's
/// session signals and precedes the next change's.
pub type Sequenced = (u64, RequestSignal);

/// Where an open request is: its session's key and id as last seen.
#[derive(Debug, Clone)]
struct Holder {
    key: SessionKey,
    session_id: String,
}

/// The open requests the follower has seen, to tell new ones and ended ones apart.
///
/// Bounded by the sessions: a session holds one request, and a request leaves the tracker when
/// its session logs its end, holds another one, or goes.
#[derive(Debug, Default)]
pub struct RequestTracker {
    by_request: HashMap<RequestId, Holder>,
    by_session: HashMap<SessionKey, RequestId>,
}

fn open_request(s: &Session) -> Option<&RequestId> {
    s.attention
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .map(|r| &r.id)
}

fn text(s: &str) -> String {
    portable(s).into_owned()
}

fn resolved(id: &RequestId, session_id: &str, fate: &RequestFate) -> RequestSignal {
    let (fate, detail) = match fate {
        RequestFate::Answered { surface, .. } => ("answered", text(&surface.name)),
        RequestFate::Withdrawn { reason } => ("withdrawn", text(reason)),
    };
    RequestSignal::Resolved {
        id: id.to_string(),
        session_id: text(session_id),
        fate,
        detail,
    }
}

fn added(id: &RequestId, s: &Session) -> RequestSignal {
    let attention = s.attention.as_ref();
    let field = |f: Option<&String>| f.map(|t| text(t)).unwrap_or_default();
    RequestSignal::Added {
        id: id.to_string(),
        session_id: text(s.id.as_str()),
        tool: field(attention.and_then(|a| a.tool.as_ref())),
        detail: field(attention.and_then(|a| a.detail.as_ref())),
    }
}

impl RequestTracker {
    /// The requests open in `snapshot`, announced before the service started: no signals.
    pub fn seed(snapshot: &Snapshot) -> Self {
        let mut t = Self::default();
        for s in &snapshot.sessions {
            if let Some(id) = open_request(s) {
                t.hold(id, s);
            }
        }
        t
    }

    /// How many requests are open.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.by_request.len()
    }

    fn hold(&mut self, id: &RequestId, s: &Session) {
        if let Some(old) = self.by_request.get(id)
            && old.key != s.key
        {
            self.by_session.remove(&old.key);
        }
        self.by_request.insert(
            id.clone(),
            Holder {
                key: s.key.clone(),
                session_id: s.id.as_str().to_owned(),
            },
        );
        self.by_session.insert(s.key.clone(), id.clone());
    }

    /// Forgets `id`; returns where it was.
    fn release(&mut self, id: &RequestId) -> Option<Holder> {
        let holder = self.by_request.remove(id)?;
        if self.by_session.get(&holder.key) == Some(id) {
            self.by_session.remove(&holder.key);
        }
        Some(holder)
    }

    /// One registry change: the requests it ended (first) and the one it opened, as the
    /// change says ([`SessionEvent::requests`]). The tracker only remembers which requests are
    /// open, for the difference a resync needs.
    pub fn observe(&mut self, event: &SessionEvent, out: &mut Vec<Sequenced>) {
        let s = &event.session;
        for r in &event.requests.ended {
            if self.release(&r.id).is_some() {
                out.push((event.seq, resolved(&r.id, s.id.as_str(), &r.fate)));
            }
        }
        if matches!(event.change, SessionChange::Removed { .. }) {
            return;
        }
        if let Some(id) = &event.requests.opened
            && !self.by_request.contains_key(id)
        {
            out.push((event.seq, added(id, s)));
        }
        // Held under the session's current key and id (they change with a re-key).
        if let Some(id) = open_request(s).cloned() {
            self.hold(&id, s);
        }
    }

    /// The follower lagged: rebuilds from `snapshot`, with the signals the difference needs.
    pub fn resync(&mut self, snapshot: &Snapshot, out: &mut Vec<Sequenced>) {
        let mut found = Vec::new();
        self.rebuild(snapshot, &mut found);
        out.extend(found.into_iter().map(|s| (snapshot.seq, s)));
    }

    fn rebuild(&mut self, snapshot: &Snapshot, out: &mut Vec<RequestSignal>) {
        let open: HashMap<&RequestId, &Session> = snapshot
            .sessions
            .iter()
            .filter_map(|s| open_request(s).map(|id| (id, s.as_ref())))
            .collect();
        let mut ended: Vec<(RequestId, Holder)> = self
            .by_request
            .iter()
            .filter(|(id, _)| !open.contains_key(id))
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        ended.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, holder) in ended {
            let logged = snapshot.sessions.iter().find_map(|s| {
                s.request_log
                    .iter()
                    .rev()
                    .find(|r| r.id == id)
                    .map(|r| (s, r))
            });
            out.push(match logged {
                Some((s, r)) => resolved(&id, s.id.as_str(), &r.fate),
                None => {
                    let fate = RequestFate::Withdrawn {
                        reason: "the session ended".to_owned(),
                    };
                    resolved(&id, &holder.session_id, &fate)
                }
            });
        }
        let mut new: Vec<(&RequestId, &Session)> = open
            .iter()
            .filter(|(id, _)| !self.by_request.contains_key(**id))
            .map(|(id, s)| (*id, *s))
            .collect();
        new.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(new.into_iter().map(|(id, s)| added(id, s)));
        *self = Self::seed(snapshot);
    }
}

/// The follower's end of the signal queue: never waits, drops the newest when full.
#[derive(Debug)]
pub struct SignalSender {
    tx: mpsc::Sender<Sequenced>,
    dropped: u64,
    log: Throttle,
}

/// A bounded queue of request signals ([`SIGNAL_CAPACITY`]).
pub fn signal_queue() -> (SignalSender, mpsc::Receiver<Sequenced>) {
    let (tx, rx) = mpsc::channel(SIGNAL_CAPACITY);
    let sender = SignalSender {
        tx,
        dropped: 0,
        log: Throttle::default(),
    };
    (sender, rx)
}

impl SignalSender {
    pub fn push(&mut self, signal: Sequenced) {
        match self.tx.try_send(signal) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(signal)) => {
                self.dropped += 1;
                match self.log.allow() {
                    Some(earlier) => warn!(
                        capacity = SIGNAL_CAPACITY,
                        dropped = self.dropped,
                        earlier_warnings = earlier,
                        signal = ?signal.1,
                        "D-Bus sink is behind: a request signal was dropped (ListRequests stays right)"
                    ),
                    None => debug!(signal = ?signal.1, "D-Bus sink dropped a request signal"),
                }
            }
            // The bus task has stopped: nobody to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues every signal of `found` (emptying it), in order.
    pub fn push_all(&mut self, found: &mut Vec<Sequenced>) {
        for signal in found.drain(..) {
            self.push(signal);
        }
    }

    /// Signals dropped because the queue was full.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
