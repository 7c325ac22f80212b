//! How the actor applies an event or a discovery: find the record (one row per process), let
//! the pure rules decide (`state::identity` for re-keying, `state::apply` for everything an
//! event does to the record), store the result and emit it.

use std::sync::Arc;

use chrono::Utc;
use tracing::{debug, info};

use super::actor::Actor;
use super::{ApplyOutcome, REKEYED, RegistryError, SessionChange};
use crate::event::{Discovered, EventEnvelope, EventSource};
use crate::model::{ProcessIdentity, SessionId, SessionKey};
use crate::state::Outcome;
use crate::state::apply::{
    apply_discovery, apply_event, end_reason, session_from_discovery, session_from_event,
};
use crate::state::identity::{IdStep, discovery_learns_id, id_step};

impl Actor {
    pub(super) fn apply(&mut self, env: EventEnvelope) -> Result<ApplyOutcome, RegistryError> {
        let EventEnvelope { source, event, at } = env;
        if source.session_id.as_str().is_empty() {
            return Err(RegistryError::Invalid {
                field: "session_id",
                reason: "empty".to_owned(),
            });
        }
        // Find the session: by process first (one row per process), then by id.
        let by_id = self.index.key_of(&source.harness, &source.session_id);
        let key = if let Some(p) = source.process {
            let pkey = process_key(&source, p);
            if !self.index.contains(&pkey) {
                match by_id {
                    // Created by an event that had no PID: adopt the process.
                    Some(k @ SessionKey::Id { .. }) => {
                        self.attach_process(&k, p);
                    }
                    // Unknown, or the id is held by another process (resume in a new
                    // process): a new row, which takes the id over.
                    _ => return self.create_from_event(pkey, &source, &event, at),
                }
            }
            pkey
        } else if let Some(k) = by_id {
            k
        } else {
            let key = SessionKey::Id {
                harness: source.harness.clone(),
                id: source.session_id.clone(),
            };
            return self.create_from_event(key, &source, &event, at);
        };

        let step = self
            .index
            .get(&key)
            .map(|e| id_step(&e.session.id, &e.retired, &source.session_id, &event));
        match step {
            Some(IdStep::Retired) => {
                debug!(id = %source.session_id, "late event for a retired session id ignored");
                return Ok(ApplyOutcome::Ignored);
            }
            Some(IdStep::EndOfOld) => return Ok(ApplyOutcome::Ignored),
            Some(IdStep::Rekey) => self.rekey(&key, source.session_id.clone()),
            Some(IdStep::Same) | None => {}
        }
        self.update_with_event(&key, &source, &event, at)
    }

    fn create_from_event(
        &mut self,
        key: SessionKey,
        source: &EventSource,
        event: &crate::event::AgentEvent,
        at: chrono::DateTime<Utc>,
    ) -> Result<ApplyOutcome, RegistryError> {
        match session_from_event(key, source, event, at) {
            Some(s) => {
                self.index.forget_ended(&s.key);
                self.add(s)?;
                Ok(ApplyOutcome::Added)
            }
            None => Ok(ApplyOutcome::Ignored),
        }
    }

    fn update_with_event(
        &mut self,
        key: &SessionKey,
        source: &EventSource,
        event: &crate::event::AgentEvent,
        at: chrono::DateTime<Utc>,
    ) -> Result<ApplyOutcome, RegistryError> {
        let Some(entry) = self.index.get_mut(key) else {
            return Err(RegistryError::SessionNotFound(
                source.session_id.to_string(),
            ));
        };
        let before = entry.session.clone();
        let s = Arc::make_mut(&mut entry.session);
        if apply_event(s, source, event, at) == Outcome::End {
            // Announce the session as it was, not half-updated.
            entry.session = before;
            self.index.note_ended(key);
            self.remove(key, &end_reason(event));
            return Ok(ApplyOutcome::Removed);
        }
        if *entry.session == *before {
            return Ok(ApplyOutcome::Unchanged);
        }
        let after = entry.session.clone();
        self.emit(SessionChange::Updated, after, Some(&before));
        Ok(ApplyOutcome::Updated)
    }

    /// Changes the id of the session under `key`, as clients see it: removed(old), added(new).
    fn rekey(&mut self, key: &SessionKey, new_id: SessionId) {
        if let Some(holder) = self.index.key_of(key.harness(), &new_id)
            && holder != *key
        {
            self.remove(&holder, "session id moved to another process");
        }
        let Some((old, new)) = self.index.set_id(key, new_id) else {
            return;
        };
        info!(old = %old.id, new = %new.id, "session re-keyed");
        self.emit(
            SessionChange::Removed {
                reason: REKEYED.to_owned(),
            },
            old.clone(),
            None,
        );
        // Compared with the old row: the request it holds goes on under the new id.
        self.emit(SessionChange::Added, new, Some(&old));
    }

    /// Moves a session keyed by id (created before its process was known) under its process key.
    fn attach_process(&mut self, id_key: &SessionKey, process: ProcessIdentity) -> SessionKey {
        let Some((key, before)) = self.index.move_to_process(id_key, process) else {
            return id_key.clone();
        };
        if let Some(after) = self.index.get(&key).map(|e| e.session.clone()) {
            // The key changed: sinks that track sessions by key must hear of it.
            self.emit(SessionChange::Updated, after, Some(&before));
        }
        key
    }

    pub(super) fn register_discovered(
        &mut self,
        found: Discovered,
    ) -> Result<ApplyOutcome, RegistryError> {
        let key = SessionKey::Process {
            harness: found.harness.clone(),
            pid: found.process.pid,
            start_time: found.process.start_time,
        };
        let mut key_now = key.clone();
        // Its agent said the session ended; the process is only on its way out.
        if self.index.has_ended(&key) {
            return Ok(ApplyOutcome::Ignored);
        }
        if !self.index.contains(&key) {
            // A hook may have created the session before its process was known.
            let existing = found
                .session_id
                .as_ref()
                .and_then(|id| self.index.key_of(&found.harness, id));
            if let Some(existing @ SessionKey::Id { .. }) = existing {
                key_now = self.attach_process(&existing, found.process);
            } else {
                self.add(session_from_discovery(key, &found, Utc::now()))?;
                return Ok(ApplyOutcome::Added);
            }
        }
        // Known process: learn a real id (never go back to pending), refresh the facts.
        let mut outcome = ApplyOutcome::Unchanged;
        let learns = self
            .index
            .get(&key_now)
            .is_some_and(|e| discovery_learns_id(&e.session.id, found.session_id.as_ref()));
        if learns && let Some(id) = &found.session_id {
            self.rekey(&key_now, id.clone());
            outcome = ApplyOutcome::Updated;
        }
        let Some(entry) = self.index.get_mut(&key_now) else {
            return Ok(outcome);
        };
        let before = entry.session.clone();
        apply_discovery(Arc::make_mut(&mut entry.session), &found, Utc::now());
        if *entry.session != *before {
            let after = entry.session.clone();
            self.emit(SessionChange::Updated, after, Some(&before));
            outcome = ApplyOutcome::Updated;
        }
        Ok(outcome)
    }
}

/// The key of the session an event from process `p` belongs to.
pub(super) fn process_key(source: &EventSource, p: ProcessIdentity) -> SessionKey {
    SessionKey::Process {
        harness: source.harness.clone(),
        pid: p.pid,
        start_time: p.start_time,
    }
}
