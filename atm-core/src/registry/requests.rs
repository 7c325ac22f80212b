//! The actor's side of pending requests: who waits for which answer, delivering decisions,
//! and telling a waiter when its request ended without one.
//!
//! A waiter is the channel to whoever can hand an answer to the agent (the ingest handler that
//! holds Claude's `PermissionRequest` hook). The request itself lives in the session
//! ([`crate::request`]); the actor only keeps the channels, because a channel cannot be part
//! of a record that is cloned, broadcast and snapshotted. Every change leaves through the one
//! emit path, which then settles the waiters ([`Actor::settle_waiters`]): a waiter whose
//! request is no longer its session's is told it was withdrawn, so a hook never waits for an
//! answer that cannot come.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::actor::Actor;
use super::sessions::process_key;
use super::{ApplyOutcome, REKEYED, RegistryError, SessionChange};
use crate::event::EventEnvelope;
use crate::model::{Harness, Session, SessionId, SessionKey};
use crate::request::{DecideError, Decision, RequestEnd, RequestFate, RequestId, Surface};
use crate::state::requests;

/// One waiter: the session its request belongs to, and where its end goes.
pub(super) struct Waiter {
    key: SessionKey,
    tx: oneshot::Sender<RequestEnd>,
}

/// The waiters, by request. At most one per session (a session holds one request), so the
/// map is bounded by the registry's `max_sessions`.
#[derive(Default)]
pub(super) struct Waiters(HashMap<RequestId, Waiter>);

/// What [`crate::registry::RegistryHandle::apply_awaiting`] returns: the event's outcome and,
/// when the event opened a request, its id and the channel its end arrives on.
#[derive(Debug)]
pub struct Awaiting {
    pub outcome: ApplyOutcome,
    pub wait: Option<(RequestId, oneshot::Receiver<RequestEnd>)>,
}

/// A decision that reached its waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub request_id: RequestId,
    pub session_id: SessionId,
}

impl Actor {
    /// Applies an event and, when it opened a request, waits for that request: the request is
    /// marked answerable and its end will arrive on the returned channel.
    pub(super) fn apply_awaiting(&mut self, env: EventEnvelope) -> Result<Awaiting, RegistryError> {
        let harness = env.source.harness.clone();
        let id = env.source.session_id.clone();
        let by_process = env.source.process.map(|p| process_key(&env.source, p));
        let outcome = self.apply(env)?;
        let opened = self
            .request_of(&harness, &id, by_process)
            .map(|(k, r)| (k, r.clone()));
        let Some((key, request)) = opened else {
            return Ok(Awaiting {
                outcome,
                wait: None,
            });
        };
        // A request someone already waits for is theirs (the same wait said again), unless
        // that waiter has gone without a word (its stop could not be queued).
        if self
            .waiters
            .0
            .get(&request)
            .is_some_and(|w| !w.tx.is_closed())
        {
            return Ok(Awaiting {
                outcome,
                wait: None,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.0.insert(
            request.clone(),
            Waiter {
                key: key.clone(),
                tx,
            },
        );
        self.update_request(&key, &request, true);
        Ok(Awaiting {
            outcome,
            wait: Some((request, rx)),
        })
    }

    /// The key and open request id of the session an event about (`harness`, `id`, its
    /// process's key `by_process`) lands on: by process first, as `apply` finds it.
    fn request_of(
        &self,
        harness: &Harness,
        id: &SessionId,
        by_process: Option<SessionKey>,
    ) -> Option<(SessionKey, &RequestId)> {
        let key = by_process
            .filter(|k| self.index.contains(k))
            .or_else(|| self.index.key_of(harness, id))?;
        let entry = self.index.get(&key)?;
        let request = entry.session.attention.as_ref()?.request.as_ref()?;
        Some((key, &request.id))
    }

    /// The waiter of `id` is gone (its client left, or gave up): the request stays shown but
    /// can no longer be answered through atm.
    pub(super) fn stop_waiting(&mut self, id: &RequestId) {
        if let Some(w) = self.waiters.0.remove(id) {
            debug!(request = %id, "request no longer awaited");
            self.update_request(&w.key, id, false);
        }
    }

    /// Sets whether the open request `id` of the session under `key` is answerable, and
    /// announces it if that changed.
    fn update_request(&mut self, key: &SessionKey, id: &RequestId, answerable: bool) {
        let Some(entry) = self.index.get_mut(key) else {
            return;
        };
        let before = entry.session.clone();
        if requests::set_answerable(Arc::make_mut(&mut entry.session), id, answerable) {
            let after = entry.session.clone();
            self.emit(SessionChange::Updated, after, Some(&before));
        }
    }

    /// Decides request `id`: the state machine checks the decision and moves the session; the
    /// verdict goes to the waiter, and the change is announced.
    pub(super) fn decide(
        &mut self,
        id: &RequestId,
        decision: &Decision,
        surface: Surface,
    ) -> Result<Decided, DecideError> {
        let Some(key) = self.key_holding(id) else {
            return Err(DecideError::NotFound(id.to_string()));
        };
        let Some(before) = self.index.get(&key).map(|e| e.session.clone()) else {
            return Err(DecideError::NotFound(id.to_string()));
        };
        let waiter = self.waiters.0.remove(id);
        // A waiter whose client is gone cannot deliver: the request is not answerable.
        let Some(waiter) = waiter.filter(|w| !w.tx.is_closed()) else {
            if requests::pending(&before, id).is_some() {
                self.update_request(&key, id, false);
                return Err(DecideError::NotAnswerable(id.to_string()));
            }
            return Err(requests::ended(&before, id)
                .unwrap_or_else(|| DecideError::NotFound(id.to_string())));
        };
        let mut after = (*before).clone();
        let verdict = match requests::decide(&mut after, id, decision, surface.clone(), Utc::now())
        {
            Ok(v) => v,
            Err(e) => {
                // A decision that does not fit leaves the request waiting for a better one.
                self.waiters.0.insert(id.clone(), waiter);
                return Err(e);
            }
        };
        if waiter.tx.send(RequestEnd::Decided(verdict)).is_err() {
            self.update_request(&key, id, false);
            return Err(DecideError::NotAnswerable(id.to_string()));
        }
        info!(
            request = %id, session = %after.id, decision = decision.name(),
            surface = %surface.name, uid = ?surface.uid, "request answered"
        );
        let session_id = after.id.clone();
        let after = Arc::new(after);
        if let Some(entry) = self.index.get_mut(&key) {
            entry.session = after.clone();
        }
        self.emit(SessionChange::Updated, after, Some(&before));
        Ok(Decided {
            request_id: id.clone(),
            session_id,
        })
    }

    /// The session whose open request, or whose log, has `id`.
    pub(super) fn key_holding(&self, id: &RequestId) -> Option<SessionKey> {
        if let Some(w) = self.waiters.0.get(id)
            && self.index.contains(&w.key)
        {
            return Some(w.key.clone());
        }
        self.index
            .all()
            .into_iter()
            .find(|s| {
                requests::pending(s, id).is_some() || s.request_log.iter().any(|r| r.id == *id)
            })
            .map(|s| s.key.clone())
    }

    /// After a change to `session`: tells each waiter of that session whose request it no
    /// longer holds that the request was withdrawn, and why.
    pub(super) fn settle_waiters(&mut self, change: &SessionChange, session: &Session) {
        if self.waiters.0.is_empty() {
            return;
        }
        let open = session
            .attention
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .map(|r| &r.id);
        let ended: Vec<RequestId> = self
            .waiters
            .0
            .iter()
            .filter(|(id, w)| w.key == session.key || open == Some(*id))
            .filter(|(id, _)| match change {
                // The same session follows under its new id.
                SessionChange::Removed { reason } if reason == REKEYED => false,
                SessionChange::Removed { .. } => true,
                SessionChange::Added | SessionChange::Updated => open != Some(*id),
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            let Some(w) = self.waiters.0.remove(&id) else {
                continue;
            };
            let reason = match change {
                SessionChange::Removed { reason } => format!("the session ended ({reason})"),
                _ => withdrawn_reason(session, &id),
            };
            debug!(request = %id, reason, "request withdrawn");
            let _ = w.tx.send(RequestEnd::Withdrawn(reason));
        }
        // A session whose key changed (it learnt its process) keeps its waiter.
        if let Some(id) = open
            && let Some(w) = self.waiters.0.get_mut(id)
        {
            w.key.clone_from(&session.key);
        }
    }
}

/// How the request `id` of `session` ended, as its log says.
fn withdrawn_reason(session: &Session, id: &RequestId) -> String {
    match session.request_log.iter().rev().find(|r| r.id == *id) {
        Some(r) => match &r.fate {
            RequestFate::Withdrawn { reason } => reason.clone(),
            RequestFate::Answered { surface, .. } => format!("answered from {}", surface.name),
        },
        None => requests::ANSWERED_IN_TERMINAL.to_owned(),
    }
}
