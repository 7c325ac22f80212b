//! The registry actor: the one task that owns every session.
//!
//! Everyone else holds a [`RegistryHandle`] (a cheap clone of a bounded command sender) and gets
//! answers over `oneshot`. Owning the state in one task keeps the rules of identity (one row per
//! process, re-keying on a new agent id) free of locks, and makes the order of changes the order
//! of the sequence numbers that sinks see.
//!
//! Queues and their overflow policies:
//! - commands: bounded `mpsc` (`command_capacity`); callers wait (backpressure on adapters).
//! - changes: bounded `broadcast` (`broadcast_capacity`); a receiver that falls behind is told
//!   how many changes it missed (`Lagged`) and resynchronises from [`RegistryHandle::snapshot`].
//!   The actor never waits for a sink.
//!
//! Liveness work that touches `/proc` for many processes runs outside the actor
//! ([`RegistryHandle::cleanup_stale`]) so a large registry never stalls event handling.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::event::{AgentEvent, EventEnvelope, EventSource, StartSource};
use crate::model::{
    AgentState, Harness, ProcessIdentity, Session, SessionId, SessionKey, UsageUpdate,
};
use crate::persist;
use crate::state::{Outcome, activity_after, resolve, speaker, transition};
use crate::text::{one_line_preview, truncate_chars};

/// Limits on what one session may hold, so memory stays bounded whatever adapters send.
pub mod limits {
    pub const ID: usize = 256;
    pub const PATH: usize = 4096;
    pub const NAME: usize = 128;
    pub const PREVIEW: usize = 200;
    pub const FIRST_PROMPT: usize = 200;
    pub const CHILDREN: usize = 64;
    pub const RETIRED_IDS: usize = 8;
}

/// Registry settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Hard cap on sessions, enforced on every path that creates one.
    pub max_sessions: usize,
    /// Sessions with no process to watch expire after this much silence.
    pub silence_expiry: Duration,
    pub command_capacity: usize,
    pub broadcast_capacity: usize,
    /// Where to persist; `None` keeps everything in memory.
    pub snapshot_path: Option<PathBuf>,
    /// How long to wait after a change before writing the snapshot.
    pub snapshot_debounce: Duration,
    /// How often the janitor looks for dead processes and silent sessions (zero: never).
    pub cleanup_interval: Duration,
    pub proc_root: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            silence_expiry: Duration::from_secs(30 * 60),
            command_capacity: 1024,
            broadcast_capacity: 16_384,
            snapshot_path: None,
            snapshot_debounce: Duration::from_millis(250),
            cleanup_interval: Duration::from_secs(5),
            proc_root: PathBuf::from(crate::process::PROC_ROOT),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("session {0} already exists")]
    SessionAlreadyExists(SessionId),
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error(
        "the registry is full ({max} sessions); raise `max_sessions` in [daemon] or wait for stale sessions to expire"
    )]
    RegistryFull { max: usize },
    #[error("the registry is not running (the daemon is shutting down)")]
    ChannelClosed,
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The removal reason of the old id when a session is re-keyed (the same process got a new
/// agent session id): clients see `removed(old)` with this reason, then `added(new)`. Sinks that
/// track sessions by key rather than by id can match it to keep one object.
pub const REKEYED: &str = "re-keyed";

/// What happened to a session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionChange {
    Added,
    Updated,
    Removed { reason: String },
}

/// One change, as sinks receive it. `seq` increases by one per change, so a gap means loss.
#[derive(Debug, Clone)]
pub struct SessionEvent {
    pub seq: u64,
    pub change: SessionChange,
    /// The session after the change (for `Removed`: as it was, with the id clients knew).
    pub session: Arc<Session>,
    /// The state before the change (`None` for `Added`).
    pub previous_state: Option<AgentState>,
}

/// Every session at one instant, and the sequence number of the last change it reflects.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub sessions: Vec<Arc<Session>>,
}

/// A process found by a discovery adapter.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub harness: Harness,
    pub process: ProcessIdentity,
    /// The agent's session id, when the adapter could learn it without a hook.
    pub session_id: Option<SessionId>,
    pub cwd: Option<String>,
    pub tmux_pane: Option<String>,
    /// Used only when the session is new: what the agent itself said it was doing.
    pub state_hint: Option<AgentState>,
    pub usage: UsageUpdate,
    pub adapter: String,
}

/// What a call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Added,
    Updated,
    Unchanged,
    Removed,
    /// The event was about nothing we track and creates nothing (e.g. an end for an unknown id,
    /// or a late event for an id this process already left behind).
    Ignored,
}

enum Command {
    Register {
        session: Box<Session>,
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    RegisterDiscovered {
        found: Box<Discovered>,
        reply: oneshot::Sender<Result<ApplyOutcome, RegistryError>>,
    },
    Apply {
        envelope: Box<EventEnvelope>,
        reply: oneshot::Sender<Result<ApplyOutcome, RegistryError>>,
    },
    Get {
        id: String,
        reply: oneshot::Sender<Option<Arc<Session>>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    Subscribe {
        reply: oneshot::Sender<(Snapshot, broadcast::Receiver<SessionEvent>)>,
    },
    Remove {
        id: String,
        reason: String,
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    /// Remove these sessions if they are still the ones that were judged stale.
    RemoveStale {
        stale: Vec<(SessionKey, String)>,
        reply: oneshot::Sender<Vec<SessionId>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle to the registry actor.
#[derive(Clone)]
pub struct RegistryHandle {
    tx: mpsc::Sender<Command>,
    proc_root: Arc<PathBuf>,
    silence_expiry: Duration,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RegistryHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| RegistryError::ChannelClosed)?;
        rx.await.map_err(|_| RegistryError::ChannelClosed)
    }

    /// Adds a session built by the caller. Fails if its key or id is already known.
    pub async fn register(&self, session: Session) -> Result<(), RegistryError> {
        self.ask(|reply| Command::Register {
            session: Box::new(session),
            reply,
        })
        .await?
    }

    /// Adds or refreshes a process found by discovery. Never downgrades a real id to
    /// `pending-<pid>`, and merges with a session a hook already created for the same process.
    pub async fn register_discovered(
        &self,
        found: Discovered,
    ) -> Result<ApplyOutcome, RegistryError> {
        self.ask(|reply| Command::RegisterDiscovered {
            found: Box::new(found),
            reply,
        })
        .await?
    }

    /// Applies one agent event, creating the session if it is new.
    pub async fn apply_event(
        &self,
        envelope: EventEnvelope,
    ) -> Result<ApplyOutcome, RegistryError> {
        self.ask(|reply| Command::Apply {
            envelope: Box::new(envelope),
            reply,
        })
        .await?
    }

    /// Applies a usage report (cost, context, model...). Never changes the session's state.
    pub async fn update_usage(
        &self,
        source: EventSource,
        update: UsageUpdate,
    ) -> Result<ApplyOutcome, RegistryError> {
        self.apply_event(EventEnvelope::now(
            source,
            AgentEvent::UsageUpdated(Box::new(update)),
        ))
        .await
    }

    /// One session by the id clients see.
    pub async fn get_session(&self, id: &str) -> Result<Arc<Session>, RegistryError> {
        self.ask(|reply| Command::Get {
            id: id.to_owned(),
            reply,
        })
        .await?
        .ok_or_else(|| RegistryError::SessionNotFound(id.to_owned()))
    }

    /// Every session, oldest first.
    pub async fn get_all_sessions(&self) -> Result<Vec<Arc<Session>>, RegistryError> {
        Ok(self.snapshot().await?.sessions)
    }

    /// Every session and the sequence number of the last change reflected.
    pub async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        self.ask(|reply| Command::Snapshot { reply }).await
    }

    /// A consistent snapshot and a receiver for every change after it.
    pub async fn subscribe(
        &self,
    ) -> Result<(Snapshot, broadcast::Receiver<SessionEvent>), RegistryError> {
        self.ask(|reply| Command::Subscribe { reply }).await
    }

    pub async fn remove(&self, id: &str, reason: &str) -> Result<(), RegistryError> {
        self.ask(|reply| Command::Remove {
            id: id.to_owned(),
            reason: reason.to_owned(),
            reply,
        })
        .await?
    }

    /// Removes sessions whose process is gone ("process exited") and sessions with no process
    /// that have been silent longer than the expiry ("expired"). The `/proc` reads happen here,
    /// off the actor. Returns the removed ids.
    pub async fn cleanup_stale(&self) -> Result<Vec<SessionId>, RegistryError> {
        let snapshot = self.snapshot().await?;
        let proc_root = self.proc_root.clone();
        let expiry =
            chrono::Duration::from_std(self.silence_expiry).unwrap_or(chrono::Duration::MAX);
        let stale = tokio::task::spawn_blocking(move || {
            let now = Utc::now();
            snapshot
                .sessions
                .iter()
                .filter_map(|s| {
                    let reason = match s.process {
                        Some(p) if !crate::process::is_alive_in(&proc_root, p) => "process exited",
                        None if now - s.last_activity > expiry => "expired",
                        _ => return None,
                    };
                    Some((s.key.clone(), reason.to_owned()))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| RegistryError::Invalid {
            field: "cleanup",
            reason: e.to_string(),
        })?;
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        self.ask(|reply| Command::RemoveStale { stale, reply })
            .await
    }

    /// True while the actor runs.
    pub fn is_connected(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Asks the actor to write its final snapshot and stop. Pending commands queued before this
    /// one are handled first.
    pub async fn shutdown(&self) -> Result<(), RegistryError> {
        self.ask(|reply| Command::Shutdown { reply }).await
    }
}

/// The running registry: its handle and its task.
pub struct Registry {
    pub handle: RegistryHandle,
    pub task: JoinHandle<()>,
}

impl Registry {
    /// Loads the snapshot (keeping sessions whose process still lives) and starts the actor
    /// and its janitor.
    pub async fn start(config: RegistryConfig) -> Registry {
        let restored = match config.snapshot_path.clone() {
            Some(path) => {
                let proc_root = config.proc_root.clone();
                let expiry = config.silence_expiry;
                let max = config.max_sessions;
                tokio::task::spawn_blocking(move || persist::load(&path, &proc_root, expiry, max))
                    .await
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        if !restored.is_empty() {
            info!(sessions = restored.len(), "restored sessions from snapshot");
        }
        let (tx, rx) = mpsc::channel(config.command_capacity.max(1));
        let (events, _) = broadcast::channel(config.broadcast_capacity.max(1));
        let handle = RegistryHandle {
            tx,
            proc_root: Arc::new(config.proc_root.clone()),
            silence_expiry: config.silence_expiry,
        };
        let mut actor = Actor {
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            order: 0,
            seq: 0,
            events,
            persist: persist::Writer::new(config.snapshot_path.clone(), config.snapshot_debounce),
            config,
        };
        for s in restored {
            actor.insert(Arc::new(s));
        }
        let janitor_interval = actor.config.cleanup_interval;
        let task = tokio::spawn(actor.run(rx));
        if !janitor_interval.is_zero() {
            tokio::spawn(janitor(handle.clone(), janitor_interval));
        }
        Registry { handle, task }
    }
}

/// Periodically removes dead and silent sessions; stops when the registry does.
async fn janitor(handle: RegistryHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match handle.cleanup_stale().await {
            Ok(removed) if !removed.is_empty() => {
                debug!(count = removed.len(), "removed stale sessions")
            }
            Ok(_) => {}
            Err(RegistryError::ChannelClosed) => return,
            Err(e) => warn!(error = %e, "stale-session cleanup failed"),
        }
    }
}

struct Entry {
    session: Arc<Session>,
    /// Insertion order, for stable listings.
    order: u64,
    /// Ids this process had before a re-key: late events for them are ignored, not re-keyed back.
    retired: VecDeque<SessionId>,
}

struct Actor {
    sessions: HashMap<SessionKey, Entry>,
    by_id: HashMap<(Harness, SessionId), SessionKey>,
    order: u64,
    seq: u64,
    events: broadcast::Sender<SessionEvent>,
    persist: persist::Writer,
    config: RegistryConfig,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.persist.deadline();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.persist.flush_now(self.all()).await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.handle(cmd),
                    None => {
                        self.persist.flush_now(self.all()).await;
                        break;
                    }
                },
                () = sleep_until_opt(deadline) => {
                    self.persist.write_in_background(self.all());
                }
            }
        }
        debug!("registry stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Register { session, reply } => {
                let _ = reply.send(self.register(*session));
            }
            Command::RegisterDiscovered { found, reply } => {
                let _ = reply.send(self.register_discovered(*found));
            }
            Command::Apply { envelope, reply } => {
                let _ = reply.send(self.apply(*envelope));
            }
            Command::Get { id, reply } => {
                let found = self
                    .sessions
                    .values()
                    .find(|e| e.session.id.as_str() == id)
                    .map(|e| e.session.clone());
                let _ = reply.send(found);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Subscribe { reply } => {
                let rx = self.events.subscribe();
                let _ = reply.send((self.snapshot(), rx));
            }
            Command::Remove { id, reason, reply } => {
                let key = self
                    .sessions
                    .iter()
                    .find(|(_, e)| e.session.id.as_str() == id)
                    .map(|(k, _)| k.clone());
                let result = match key {
                    Some(key) => {
                        self.remove(&key, &reason);
                        Ok(())
                    }
                    None => Err(RegistryError::SessionNotFound(id)),
                };
                let _ = reply.send(result);
            }
            Command::RemoveStale { stale, reply } => {
                let mut removed = Vec::new();
                let now = Utc::now();
                let expiry = chrono::Duration::from_std(self.config.silence_expiry)
                    .unwrap_or(chrono::Duration::MAX);
                for (key, reason) in stale {
                    // Re-check what can have changed since the judgement: new activity.
                    let still_stale = self.sessions.get(&key).is_some_and(|e| {
                        e.session.process.is_some() || now - e.session.last_activity > expiry
                    });
                    if still_stale && let Some(s) = self.remove(&key, &reason) {
                        removed.push(s.id.clone());
                    }
                }
                let _ = reply.send(removed);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            seq: self.seq,
            sessions: self.all(),
        }
    }

    fn all(&self) -> Vec<Arc<Session>> {
        let mut entries: Vec<&Entry> = self.sessions.values().collect();
        entries.sort_by_key(|e| e.order);
        entries.into_iter().map(|e| e.session.clone()).collect()
    }

    fn emit(
        &mut self,
        change: SessionChange,
        session: Arc<Session>,
        previous_state: Option<AgentState>,
    ) {
        self.seq += 1;
        // No receivers is fine: the change is still reflected in snapshots.
        let _ = self.events.send(SessionEvent {
            seq: self.seq,
            change,
            session,
            previous_state,
        });
        self.persist.mark_dirty();
    }

    fn insert(&mut self, session: Arc<Session>) {
        self.order += 1;
        self.by_id.insert(
            (session.harness.clone(), session.id.clone()),
            session.key.clone(),
        );
        self.sessions.insert(
            session.key.clone(),
            Entry {
                session,
                order: self.order,
                retired: VecDeque::new(),
            },
        );
    }

    fn check_capacity(&self) -> Result<(), RegistryError> {
        if self.sessions.len() >= self.config.max_sessions {
            Err(RegistryError::RegistryFull {
                max: self.config.max_sessions,
            })
        } else {
            Ok(())
        }
    }

    fn add(&mut self, mut session: Session) -> Result<(), RegistryError> {
        self.check_capacity()?;
        sanitize(&mut session);
        // An id lives in one row: a process that takes over an id replaces the old holder.
        if let Some(old) = self
            .by_id
            .get(&(session.harness.clone(), session.id.clone()))
            .cloned()
            && old != session.key
        {
            self.remove(&old, "session id moved to another process");
        }
        let session = Arc::new(session);
        self.insert(session.clone());
        self.emit(SessionChange::Added, session, None);
        Ok(())
    }

    fn remove(&mut self, key: &SessionKey, reason: &str) -> Option<Arc<Session>> {
        let entry = self.sessions.remove(key)?;
        let s = entry.session;
        if self.by_id.get(&(s.harness.clone(), s.id.clone())) == Some(key) {
            self.by_id.remove(&(s.harness.clone(), s.id.clone()));
        }
        info!(id = %s.id, harness = %s.harness, reason, "session removed");
        self.emit(
            SessionChange::Removed {
                reason: reason.to_owned(),
            },
            s.clone(),
            Some(s.state),
        );
        Some(s)
    }

    fn register(&mut self, session: Session) -> Result<(), RegistryError> {
        if self.sessions.contains_key(&session.key)
            || self
                .by_id
                .contains_key(&(session.harness.clone(), session.id.clone()))
        {
            return Err(RegistryError::SessionAlreadyExists(session.id));
        }
        self.add(session)
    }

    /// Changes the id of the session under `key`, as clients see it: removed(old), added(new).
    fn rekey(&mut self, key: &SessionKey, new_id: SessionId) {
        let harness = key.harness().clone();
        if let Some(holder) = self.by_id.get(&(harness.clone(), new_id.clone())).cloned()
            && holder != *key
        {
            self.remove(&holder, "session id moved to another process");
        }
        let Some(entry) = self.sessions.get_mut(key) else {
            return;
        };
        let old = entry.session.clone();
        if old.id == new_id {
            return;
        }
        if entry.retired.len() >= limits::RETIRED_IDS {
            entry.retired.pop_front();
        }
        if !old.id.is_pending() {
            entry.retired.push_back(old.id.clone());
        }
        entry.retired.retain(|r| *r != new_id);
        let s = Arc::make_mut(&mut entry.session);
        s.id = new_id.clone();
        let new = entry.session.clone();
        self.by_id.remove(&(harness.clone(), old.id.clone()));
        self.by_id.insert((harness, new_id), key.clone());
        info!(old = %old.id, new = %new.id, "session re-keyed");
        self.seq += 1;
        let _ = self.events.send(SessionEvent {
            seq: self.seq,
            change: SessionChange::Removed {
                reason: REKEYED.to_owned(),
            },
            session: old,
            previous_state: None,
        });
        self.emit(SessionChange::Added, new, None);
    }

    /// Moves a session keyed by id (created before its process was known) under its process key.
    fn attach_process(&mut self, id_key: &SessionKey, process: ProcessIdentity) -> SessionKey {
        let Some(mut entry) = self.sessions.remove(id_key) else {
            return id_key.clone();
        };
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
        let state = entry.session.state;
        let after = entry.session.clone();
        self.sessions.insert(key.clone(), entry);
        // The key changed: sinks that track sessions by key must hear of it.
        self.emit(SessionChange::Updated, after, Some(state));
        key
    }

    fn register_discovered(&mut self, found: Discovered) -> Result<ApplyOutcome, RegistryError> {
        let key = SessionKey::Process {
            harness: found.harness.clone(),
            pid: found.process.pid,
            start_time: found.process.start_time,
        };
        let mut key_now = key.clone();
        if !self.sessions.contains_key(&key) {
            // A hook may have created the session before its process was known.
            if let Some(id) = &found.session_id
                && let Some(existing) = self
                    .by_id
                    .get(&(found.harness.clone(), id.clone()))
                    .cloned()
                && matches!(existing, SessionKey::Id { .. })
            {
                key_now = self.attach_process(&existing, found.process);
            } else {
                let id = found
                    .session_id
                    .clone()
                    .unwrap_or_else(|| SessionId::pending(found.process.pid));
                let now = Utc::now();
                let mut s = Session::new(key, id, Some(found.process), &found.adapter, now);
                if let Some(state) = found.state_hint {
                    s.apply_state_hint(state, now);
                }
                s.cwd = found.cwd.clone();
                s.tmux_pane = found.tmux_pane.clone();
                s.apply_usage(&found.usage);
                self.add(s)?;
                return Ok(ApplyOutcome::Added);
            }
        }
        // Known process: learn a real id (never go back to pending), refresh the facts.
        let current_id = self.sessions.get(&key_now).map(|e| e.session.id.clone());
        let mut outcome = ApplyOutcome::Unchanged;
        if let (Some(current), Some(found_id)) = (&current_id, &found.session_id)
            && current.is_pending()
            && !found_id.is_pending()
            && current != found_id
        {
            self.rekey(&key_now, found_id.clone());
            outcome = ApplyOutcome::Updated;
        }
        let Some(entry) = self.sessions.get_mut(&key_now) else {
            return Ok(outcome);
        };
        let before = entry.session.clone();
        let s = Arc::make_mut(&mut entry.session);
        // Without hooks, the agent's own status (read by discovery) is all we know.
        if !s.hooked
            && let Some(state) = found.state_hint
        {
            s.apply_state_hint(state, Utc::now());
        }
        if found.cwd.is_some() {
            s.cwd.clone_from(&found.cwd);
        }
        if found.tmux_pane.is_some() {
            s.tmux_pane.clone_from(&found.tmux_pane);
        }
        s.apply_usage(&found.usage);
        sanitize(s);
        if *s != *before {
            let after = entry.session.clone();
            self.emit(SessionChange::Updated, after, Some(before.state));
            outcome = ApplyOutcome::Updated;
        }
        Ok(outcome)
    }

    fn apply(&mut self, env: EventEnvelope) -> Result<ApplyOutcome, RegistryError> {
        let EventEnvelope { source, event, at } = env;
        if source.session_id.as_str().is_empty() {
            return Err(RegistryError::Invalid {
                field: "session_id",
                reason: "empty".to_owned(),
            });
        }
        let id_key = (source.harness.clone(), source.session_id.clone());
        // Find the session: by process first (one row per process), then by id.
        let key = if let Some(p) = source.process {
            let pkey = SessionKey::Process {
                harness: source.harness.clone(),
                pid: p.pid,
                start_time: p.start_time,
            };
            if !self.sessions.contains_key(&pkey) {
                match self.by_id.get(&id_key).cloned() {
                    // Created by an event that had no PID: adopt the process.
                    Some(k @ SessionKey::Id { .. }) => {
                        self.attach_process(&k, p);
                    }
                    // Unknown, or the id is held by another process (resume in a new
                    // process): a new row, which takes the id over.
                    _ => return self.create_from_event(pkey, source, event, at),
                }
            }
            pkey
        } else if let Some(k) = self.by_id.get(&id_key).cloned() {
            k
        } else {
            let key = SessionKey::Id {
                harness: source.harness.clone(),
                id: source.session_id.clone(),
            };
            return self.create_from_event(key, source, event, at);
        };

        // A different id for the same process: a late event for an id it left, or a new id.
        let current_id = self.sessions.get(&key).map(|e| e.session.id.clone());
        if let Some(current) = current_id
            && current != source.session_id
        {
            let retired = self
                .sessions
                .get(&key)
                .is_some_and(|e| e.retired.contains(&source.session_id));
            if retired {
                debug!(id = %source.session_id, "late event for a retired session id ignored");
                return Ok(ApplyOutcome::Ignored);
            }
            if let AgentEvent::SessionEnded {
                continues: true, ..
            } = event
            {
                // `/clear` ends the old id; the new id arrives with SessionStart.
                return Ok(ApplyOutcome::Ignored);
            }
            self.rekey(&key, source.session_id.clone());
        }
        self.update_with_event(&key, &source, &event, at)
    }

    fn create_from_event(
        &mut self,
        key: SessionKey,
        source: EventSource,
        event: AgentEvent,
        at: DateTime<Utc>,
    ) -> Result<ApplyOutcome, RegistryError> {
        if let AgentEvent::SessionEnded { .. } = event {
            return Ok(ApplyOutcome::Ignored);
        }
        let mut s = Session::new(
            key,
            source.session_id.clone(),
            source.process,
            &source.adapter,
            at,
        );
        s.cwd.clone_from(&source.cwd);
        s.tmux_pane.clone_from(&source.tmux_pane);
        // The event is applied before the session is announced: clients see one `added`.
        if apply_to(&mut s, &source, &event, at) == Outcome::End {
            return Ok(ApplyOutcome::Ignored);
        }
        self.add(s)?;
        Ok(ApplyOutcome::Added)
    }

    fn update_with_event(
        &mut self,
        key: &SessionKey,
        source: &EventSource,
        event: &AgentEvent,
        at: DateTime<Utc>,
    ) -> Result<ApplyOutcome, RegistryError> {
        let Some(entry) = self.sessions.get_mut(key) else {
            return Err(RegistryError::SessionNotFound(
                source.session_id.to_string(),
            ));
        };
        let before = entry.session.clone();
        let s = Arc::make_mut(&mut entry.session);
        if apply_to(s, source, event, at) == Outcome::End {
            let reason = match event {
                AgentEvent::SessionEnded { reason, .. } => format!("session ended ({reason})"),
                _ => "session ended".to_owned(),
            };
            // Announce the session as it was, not half-updated.
            entry.session = before;
            self.remove(key, &reason);
            return Ok(ApplyOutcome::Removed);
        }
        if *entry.session == *before {
            return Ok(ApplyOutcome::Unchanged);
        }
        let after = entry.session.clone();
        self.emit(SessionChange::Updated, after, Some(before.state));
        Ok(ApplyOutcome::Updated)
    }
}

/// Applies one event to a session record: the state machine, then the event's facts.
/// Returns the state machine's outcome; on `End` the record is left untouched.
fn apply_to(
    s: &mut Session,
    source: &EventSource,
    event: &AgentEvent,
    at: DateTime<Utc>,
) -> Outcome {
    let subagent = source.subagent_id.as_deref();
    // Who speaks and what the event amounts to are judged on the state before the event.
    let moves_parent = speaker(s.state, s.attention.as_ref(), subagent).moves_parent();
    let applied = resolve(s.state, event);
    let outcome = transition(s.state, s.attention.as_ref(), event, subagent);
    if outcome == Outcome::End {
        return outcome;
    }
    if !matches!(event, AgentEvent::UsageUpdated(_)) {
        s.hooked = true;
    }
    if let Outcome::Enter { state, attention } = &outcome {
        if *state != s.state {
            s.state_since = at;
            if *state == AgentState::Working
                && matches!(s.state, AgentState::Idle | AgentState::Starting)
            {
                s.turn_started_at = Some(at);
            }
        }
        s.state = *state;
        s.attention.clone_from(attention);
    }
    if moves_parent && let Some(activity) = applied.and_then(activity_after) {
        s.activity = activity;
    }
    // The event's facts; a reminder of a wait already shown has none.
    match applied {
        Some(AgentEvent::SessionStarted { source: src, model }) => {
            if let Some(m) = model {
                s.model_id = Some(m.clone());
            }
            if matches!(
                src,
                StartSource::Clear | StartSource::Resume | StartSource::Fork
            ) {
                s.first_prompt = None;
                s.children.clear();
                s.last_error = None;
                s.turn_started_at = None;
            }
        }
        Some(AgentEvent::PromptSubmitted { prompt }) => {
            s.last_error = None;
            if s.first_prompt.is_none()
                && let Some(p) = prompt
            {
                let preview = one_line_preview(p, limits::FIRST_PROMPT);
                if !preview.is_empty() {
                    s.first_prompt = Some(preview);
                }
            }
        }
        Some(AgentEvent::TurnFailed { error }) => s.last_error = Some(error.clone()),
        Some(AgentEvent::SubagentStarted { agent_id, .. })
            if !s.children.contains(agent_id) && s.children.len() < limits::CHILDREN =>
        {
            s.children.push(agent_id.clone());
        }
        Some(AgentEvent::SubagentStopped { agent_id }) => s.children.retain(|c| c != agent_id),
        Some(AgentEvent::UsageUpdated(u)) => s.apply_usage(u),
        Some(AgentEvent::CwdChanged { cwd }) => {
            s.cwd = Some(cwd.clone());
            s.git = Default::default();
        }
        _ => {}
    }
    if source.tmux_pane.is_some() {
        s.tmux_pane.clone_from(&source.tmux_pane);
    }
    if source.cwd.is_some() && !matches!(event, AgentEvent::CwdChanged { .. }) {
        s.cwd.clone_from(&source.cwd);
    }
    if s.process.is_none() {
        s.process = source.process;
    }
    // A status line is data, not activity.
    if !matches!(event, AgentEvent::UsageUpdated(_)) && at > s.last_activity {
        s.last_activity = at;
    }
    sanitize(s);
    outcome
}

/// Cuts every free-text field to its limit (by characters), so no adapter can grow a session.
fn sanitize(s: &mut Session) {
    fn cut(v: &mut Option<String>, max: usize) {
        if let Some(x) = v
            && x.chars().count() > max
        {
            *x = truncate_chars(x, max);
        }
    }
    if s.id.as_str().chars().count() > limits::ID {
        s.id = SessionId::new(truncate_chars(s.id.as_str(), limits::ID));
    }
    cut(&mut s.cwd, limits::PATH);
    cut(&mut s.git.project_root, limits::PATH);
    cut(&mut s.git.worktree_path, limits::PATH);
    cut(&mut s.git.branch, limits::NAME * 2);
    cut(&mut s.tmux_pane, limits::NAME);
    cut(&mut s.model_id, limits::NAME);
    cut(&mut s.model_name, limits::NAME);
    cut(&mut s.agent_version, limits::NAME);
    cut(&mut s.activity, limits::NAME);
    cut(&mut s.last_error, limits::PREVIEW);
    cut(&mut s.first_prompt, limits::FIRST_PROMPT);
    if let Some(a) = &mut s.attention {
        if a.reason.chars().count() > limits::NAME {
            a.reason = truncate_chars(&a.reason, limits::NAME);
        }
        cut(&mut a.tool, limits::NAME);
        cut(&mut a.detail, limits::PREVIEW);
        cut(&mut a.subagent_id, limits::ID);
    }
    s.children.truncate(limits::CHILDREN);
    for c in &mut s.children {
        if c.chars().count() > limits::ID {
            *c = truncate_chars(c, limits::ID);
        }
    }
    if s.usage.rate_limits.len() > 8 {
        let keep: Vec<String> = s.usage.rate_limits.keys().take(8).cloned().collect();
        s.usage.rate_limits.retain(|k, _| keep.contains(k));
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
