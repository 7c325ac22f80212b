//! The identity index: every session by its key (one row per process), and each
//! (harness, agent id) to the key that holds it.
//!
//! Pure bookkeeping owned by the actor: it keeps the two maps consistent and the listing order
//! stable, and announces nothing; what clients hear of a change is the actor's one emit path.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::model::{Harness, ProcessIdentity, Session, SessionId, SessionKey};
use crate::state::identity;

pub(super) struct Entry {
    pub session: Arc<Session>,
    /// Insertion order, for stable listings.
    order: u64,
    /// Ids this process had before a re-key: late events for them are ignored, not re-keyed back.
    pub retired: VecDeque<SessionId>,
}

/// Processes whose session ended remembered at most (oldest forgotten first).
const ENDED_PROCESSES: usize = 64;

#[derive(Default)]
pub(super) struct Index {
    sessions: HashMap<SessionKey, Entry>,
    by_id: HashMap<(Harness, SessionId), SessionKey>,
    order: u64,
    /// Processes whose agent said its session ended (pi's `/quit`, Claude's `SessionEnd`) but
    /// that may live on for a moment: discovery must not list them again as a fresh session.
    /// A (PID, start time) key names one process for its whole life, so an old entry is only
    /// ever about a dead process.
    ended: VecDeque<SessionKey>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn contains(&self, key: &SessionKey) -> bool {
        self.sessions.contains_key(key)
    }

    pub fn get(&self, key: &SessionKey) -> Option<&Entry> {
        self.sessions.get(key)
    }

    pub fn get_mut(&mut self, key: &SessionKey) -> Option<&mut Entry> {
        self.sessions.get_mut(key)
    }

    /// The key holding `id` for `harness`.
    pub fn key_of(&self, harness: &Harness, id: &SessionId) -> Option<SessionKey> {
        self.by_id.get(&(harness.clone(), id.clone())).cloned()
    }

    /// The key of the session clients know as `id` (any harness).
    pub fn key_by_client_id(&self, id: &str) -> Option<SessionKey> {
        self.sessions
            .iter()
            .find(|(_, e)| e.session.id.as_str() == id)
            .map(|(k, _)| k.clone())
    }

    pub fn insert(&mut self, session: Arc<Session>) {
        self.order += 1;
        // A mirrored session is found by its key only: its id belongs to another machine and
        // must never catch an event of a local session that has the same id.
        if !matches!(session.key, SessionKey::Remote { .. }) {
            self.by_id.insert(
                (session.harness.clone(), session.id.clone()),
                session.key.clone(),
            );
        }
        self.sessions.insert(
            session.key.clone(),
            Entry {
                session,
                order: self.order,
                retired: VecDeque::new(),
            },
        );
    }

    /// Remembers that the process under `key` ended its session (process keys only).
    pub fn note_ended(&mut self, key: &SessionKey) {
        if matches!(key, SessionKey::Process { .. }) && !self.ended.contains(key) {
            if self.ended.len() >= ENDED_PROCESSES {
                self.ended.pop_front();
            }
            self.ended.push_back(key.clone());
        }
    }

    /// True when the process under `key` ended its session and has not started another.
    pub fn has_ended(&self, key: &SessionKey) -> bool {
        self.ended.contains(key)
    }

    /// The process under `key` started a session again (its agent said so).
    pub fn forget_ended(&mut self, key: &SessionKey) {
        self.ended.retain(|k| k != key);
    }

    /// Removes the session under `key`, and its id unless another row holds it now.
    pub fn remove(&mut self, key: &SessionKey) -> Option<Arc<Session>> {
        let s = self.sessions.remove(key)?.session;
        let id_key = (s.harness.clone(), s.id.clone());
        if self.by_id.get(&id_key) == Some(key) {
            self.by_id.remove(&id_key);
        }
        Some(s)
    }

    /// Gives the session under `key` the id `new_id`, remembering the old one as retired.
    /// Returns the session before and after, or `None` if there is nothing to change.
    pub fn set_id(
        &mut self,
        key: &SessionKey,
        new_id: SessionId,
    ) -> Option<(Arc<Session>, Arc<Session>)> {
        let entry = self.sessions.get_mut(key)?;
        let old = entry.session.clone();
        if old.id == new_id {
            return None;
        }
        identity::retire(&mut entry.retired, &old.id, &new_id);
        Arc::make_mut(&mut entry.session).id = new_id.clone();
        let new = entry.session.clone();
        let harness = key.harness().clone();
        self.by_id.remove(&(harness.clone(), old.id.clone()));
        self.by_id.insert((harness, new_id), key.clone());
        Some((old, new))
    }

    /// Moves a session keyed by id (created before its process was known) under its process
    /// key. Returns the new key and the session before the move.
    pub fn move_to_process(
        &mut self,
        id_key: &SessionKey,
        process: ProcessIdentity,
    ) -> Option<(SessionKey, Arc<Session>)> {
        let mut entry = self.sessions.remove(id_key)?;
        let before = entry.session.clone();
        let harness = id_key.harness().clone();
        let key = SessionKey::Process {
            harness: harness.clone(),
            pid: process.pid,
            start_time: process.start_time,
        };
        let s = Arc::make_mut(&mut entry.session);
        s.key = key.clone();
        s.process = Some(process);
        self.by_id.insert((harness, s.id.clone()), key.clone());
        self.sessions.insert(key.clone(), entry);
        Some((key, before))
    }

    /// The session a live agent may push out of a full registry: the pid-less one silent the
    /// longest (nothing can tell whether it still lives; a session with a process is never
    /// evicted, its exit removes it).
    pub fn eviction_candidate(&self) -> Option<SessionKey> {
        self.sessions
            .values()
            .filter(|e| e.session.process.is_none())
            .min_by_key(|e| (e.session.last_activity, e.order))
            .map(|e| e.session.key.clone())
    }

    /// This machine's own sessions, oldest first: what the snapshot keeps (mirrored ones come
    /// back from their host).
    pub fn local(&self) -> Vec<Arc<Session>> {
        let mut all = self.all();
        all.retain(|s| !s.is_remote());
        all
    }

    /// Every mirrored session of `host`.
    pub fn of_host(&self, host: &crate::host::HostId) -> Vec<SessionKey> {
        self.sessions
            .keys()
            .filter(|k| k.remote_host() == Some(host))
            .cloned()
            .collect()
    }

    /// Every session, oldest first.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut entries: Vec<&Entry> = self.sessions.values().collect();
        entries.sort_by_key(|e| e.order);
        entries.into_iter().map(|e| e.session.clone()).collect()
    }
}
