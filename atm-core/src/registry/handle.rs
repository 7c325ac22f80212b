//! [`RegistryHandle`]: what everyone but the actor holds. A cheap clone of a bounded command
//! sender; every call is one command and one `oneshot` answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::command::Command;
use super::{ApplyOutcome, RegistryError, SessionEvent, Snapshot, janitor};
use crate::event::{AgentEvent, Discovered, EventEnvelope, EventSource};
use crate::model::{Session, SessionId, UsageUpdate};
use crate::request::{DecideError, Decision, RequestId, Surface};

use super::requests::{Awaiting, Decided};

/// A cheap, cloneable handle to the registry actor.
#[derive(Clone)]
pub struct RegistryHandle {
    tx: mpsc::Sender<Command>,
    proc_root: Arc<PathBuf>,
    silence_expiry: Duration,
    host: crate::host::HostId,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RegistryHandle {
    pub(super) fn new(
        tx: mpsc::Sender<Command>,
        proc_root: PathBuf,
        silence_expiry: Duration,
        host: crate::host::HostId,
    ) -> Self {
        Self {
            tx,
            proc_root: Arc::new(proc_root),
            silence_expiry,
            host,
        }
    }

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

    /// Applies one event that asks the user (Claude's `PermissionRequest`) for a caller that
    /// can deliver the answer: when the event opens a request, it is marked answerable and
    /// its end (a verdict, or withdrawn) arrives on the returned channel. The caller must
    /// [`stop_waiting`](Self::stop_waiting) if it gives up before that.
    pub async fn apply_awaiting(&self, envelope: EventEnvelope) -> Result<Awaiting, RegistryError> {
        self.ask(|reply| Command::ApplyAwaiting {
            envelope: Box::new(envelope),
            reply,
        })
        .await?
    }

    /// The waiter of request `id` gives up: the request stays shown, no longer answerable.
    /// Never waits (it is called on the way out, from drop guards too): when the queue is
    /// full, the request is found unanswerable at the next decision instead.
    pub fn stop_waiting(&self, id: &RequestId) {
        if self
            .tx
            .try_send(Command::StopWaiting { id: id.clone() })
            .is_err()
        {
            tracing::debug!(request = %id, "registry busy; the request is marked unanswerable at its next decision");
        }
    }

    /// Decides pending request `id` from `surface`: checked against what the agent asked,
    /// delivered to its waiter, logged with the session.
    pub async fn decide(
        &self,
        id: RequestId,
        decision: Decision,
        surface: Surface,
    ) -> Result<Result<Decided, DecideError>, RegistryError> {
        self.ask(|reply| Command::Decide {
            id,
            decision,
            surface,
            reply,
        })
        .await
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
        // Nothing to judge: no hand-off to a blocking thread (an idle daemon stays asleep).
        if snapshot.sessions.is_empty() {
            return Ok(Vec::new());
        }
        let proc_root = self.proc_root.clone();
        let expiry = self.silence_expiry;
        let stale = tokio::task::spawn_blocking(move || {
            janitor::judge(&snapshot.sessions, &proc_root, expiry, chrono::Utc::now())
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

    /// Applies what a link to other hosts heard ([`super::Mirror`]): a remote session, its
    /// removal, its host's heartbeat stopping or coming back, its host gone.
    pub async fn mirror(&self, mirror: super::Mirror) -> Result<ApplyOutcome, RegistryError> {
        self.ask(|reply| Command::Mirror {
            mirror: Box::new(mirror),
            reply,
        })
        .await?
    }

    /// Makes the caller the link that delivers decisions for mirrored sessions to their hosts:
    /// they arrive on the returned queue (at most [`super::REMOTE_DECISIONS`]; past that a
    /// decision is refused as unreachable), each with the reply channel its caller waits on.
    /// A later call replaces the link.
    pub async fn link_remote(
        &self,
    ) -> Result<mpsc::Receiver<super::RemoteDecision>, RegistryError> {
        let (tx, rx) = mpsc::channel(super::REMOTE_DECISIONS);
        self.tx
            .send(Command::LinkRemote { tx })
            .await
            .map_err(|_| RegistryError::ChannelClosed)?;
        Ok(rx)
    }

    /// This machine's host id, stamped on its sessions.
    pub fn host(&self) -> &crate::host::HostId {
        &self.host
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
