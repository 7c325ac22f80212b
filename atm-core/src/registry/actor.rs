//! The registry actor: the one task that owns every session, and its one emit path.
//!
//! Commands arrive in order on a bounded queue and are handled one at a time, so the order of
//! changes is the order of the sequence numbers sinks see. Every change, whatever caused it
//! (an event, discovery, a removal, a re-key), leaves through [`Actor::emit`]: one sequence
//! number, one broadcast, one mark for the snapshot writer.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::command::Command;
use super::index::Index;
use super::{
    RegistryConfig, RegistryError, RequestChanges, SessionChange, SessionEvent, Snapshot, janitor,
};
use crate::model::{Session, SessionKey};
use crate::persist;
use crate::sanitize::sanitize;

pub(super) struct Actor {
    pub(super) index: Index,
    seq: u64,
    events: broadcast::Sender<SessionEvent>,
    persist: persist::Writer,
    pub(super) config: RegistryConfig,
    /// When a full registry was last reported at warn: refusals and evictions come in floods,
    /// the log gets one line per [`FULL_WARN_EVERY`].
    full_warned_at: Option<Instant>,
    /// Who waits for which pending request ([`super::requests`]).
    pub(super) waiters: super::requests::Waiters,
    /// Where decisions for mirrored sessions go ([`super::remote`]).
    pub(super) remote_link: Option<mpsc::Sender<super::RemoteDecision>>,
}

/// How often a full registry is reported at warn at most (the rest at debug).
const FULL_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Actor {
    pub fn new(config: RegistryConfig, events: broadcast::Sender<SessionEvent>) -> Self {
        Self {
            index: Index::default(),
            seq: 0,
            events,
            persist: persist::Writer::new(config.snapshot_path.clone(), config.snapshot_debounce),
            config,
            full_warned_at: None,
            waiters: Default::default(),
            remote_link: None,
        }
    }

    /// Takes a restored session in without announcing it (nobody subscribed yet). Times a
    /// wrong clock put in the future come back to now, so the session can still expire.
    pub fn restore(&mut self, mut session: Session) {
        if session.is_remote() {
            return; // The mirror brings remote sessions back from their host.
        }
        session.host = self.config.host.clone();
        crate::sanitize::clamp_future_times(&mut session, Utc::now());
        // Nothing waits for an answer across a restart: the hook that did has its own end.
        if let Some(r) = session.attention.as_mut().and_then(|a| a.request.as_mut()) {
            r.answerable = false;
        }
        self.index.insert(Arc::new(session));
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.persist.deadline();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.persist.flush_now(self.index.local()).await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.handle(cmd),
                    None => {
                        self.persist.flush_now(self.index.local()).await;
                        break;
                    }
                },
                () = sleep_until_opt(deadline) => {
                    self.persist.write_in_background(self.index.local());
                }
            }
        }
        debug!("registry stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::RegisterDiscovered { found, reply } => {
                let _ = reply.send(self.register_discovered(*found));
            }
            Command::Apply { envelope, reply } => {
                let _ = reply.send(self.apply(*envelope));
            }
            Command::ApplyAwaiting { envelope, reply } => {
                let awaiting = self.apply_awaiting(*envelope);
                if let Err(Ok(a)) = reply.send(awaiting)
                    && let Some((id, _)) = a.wait
                {
                    // The caller left before it heard: nobody waits.
                    self.stop_waiting(&id);
                }
            }
            Command::StopWaiting { id } => self.stop_waiting(&id),
            Command::Decide {
                id,
                decision,
                surface,
                reply,
            } => {
                let call = super::remote::DecideCall {
                    id,
                    decision,
                    surface,
                    reply,
                };
                if let Some(c) = self.forward_decision(call) {
                    let _ = c.reply.send(self.decide(&c.id, &c.decision, c.surface));
                }
            }
            Command::Mirror { mirror, reply } => {
                let _ = reply.send(self.mirror(*mirror));
            }
            Command::LinkRemote { tx } => self.link_remote(tx),
            Command::Get { id, reply } => {
                let found = self
                    .index
                    .key_by_client_id(&id)
                    .and_then(|k| self.index.get(&k))
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
                let result = match self.index.key_by_client_id(&id) {
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
                let expiry = self.config.silence_expiry;
                for (key, reason) in stale {
                    let still = self
                        .index
                        .get(&key)
                        .is_some_and(|e| janitor::still_stale(&e.session, expiry, now));
                    if still && let Some(s) = self.remove(&key, &reason) {
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
            sessions: self.index.all(),
        }
    }

    /// The one way a change leaves the actor: numbered, broadcast, and marked for the snapshot.
    /// `before` is the session as followers knew it (`None` for a new one; for a removal, the
    /// session itself), so the change can say which requests it opened and ended.
    pub(super) fn emit(
        &mut self,
        change: SessionChange,
        session: Arc<Session>,
        before: Option<&Session>,
    ) {
        self.seq += 1;
        self.settle_waiters(&change, &session);
        let requests = RequestChanges::between(&change, before, &session, Utc::now());
        let previous_state = match change {
            SessionChange::Added => None,
            SessionChange::Updated | SessionChange::Removed { .. } => before.map(|b| b.state),
        };
        // No receivers is fine: the change is still reflected in snapshots.
        let _ = self.events.send(SessionEvent {
            seq: self.seq,
            change,
            session,
            previous_state,
            requests,
        });
        self.persist.mark_dirty();
    }

    /// Adds a new session, replacing another row that held its id, and announces it. When the
    /// registry is full, a session with a live process (a real agent) pushes out the pid-less
    /// session silent the longest; anything else is refused.
    pub(super) fn add(&mut self, mut session: Session) -> Result<(), RegistryError> {
        if self.index.len() >= self.config.max_sessions {
            let evict = session
                .process
                .is_some()
                .then(|| self.index.eviction_candidate())
                .flatten();
            let Some(evict) = evict else {
                let err = RegistryError::RegistryFull {
                    max: self.config.max_sessions,
                };
                self.report_full(&format!("refused session {}: {err}", session.id));
                return Err(err);
            };
            self.report_full(&format!(
                "the registry is full ({} sessions): the oldest silent session without a process \
                 makes room for the agent process {}; raise `max_sessions` in [daemon] if this \
                 keeps happening",
                self.config.max_sessions, session.id
            ));
            self.remove(&evict, "evicted: the registry is full");
        }
        sanitize(&mut session);
        if !session.is_remote() {
            session.host = self.config.host.clone();
        }
        // An id lives in one row: a process that takes over an id replaces the old holder.
        if !session.is_remote()
            && let Some(old) = self.index.key_of(&session.harness, &session.id)
            && old != session.key
        {
            self.remove(&old, "session id moved to another process");
        }
        let session = Arc::new(session);
        self.index.insert(session.clone());
        self.emit(SessionChange::Added, session, None);
        Ok(())
    }

    /// Logs a full registry at warn once per [`FULL_WARN_EVERY`], at debug otherwise.
    fn report_full(&mut self, what: &str) {
        let now = Instant::now();
        if self
            .full_warned_at
            .is_some_and(|t| now.duration_since(t) < FULL_WARN_EVERY)
        {
            debug!("{what}");
            return;
        }
        self.full_warned_at = Some(now);
        warn!("{what} (further reports for a minute at debug)");
    }

    /// Removes the session under `key` and announces it, as it was.
    pub(super) fn remove(&mut self, key: &SessionKey, reason: &str) -> Option<Arc<Session>> {
        let s = self.index.remove(key)?;
        info!(id = %s.id, harness = %s.harness, reason, "session removed");
        self.emit(
            SessionChange::Removed {
                reason: reason.to_owned(),
            },
            s.clone(),
            Some(&s),
        );
        Some(s)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
