//! One message through an ingest adapter: translate (pure), resolve the process identity (one
//! cached `/proc` read), apply to the registry, count, and answer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tracing::debug;

use super::{Translation, Translator};
use crate::event::{EventEnvelope, EventSource};
use crate::ingest::{IngestHandler, IngestMessage, IngestStats};
use crate::model::{Harness, ProcessIdentity, Session};
use crate::protocol::{ErrorCode, ServerMessage, WireError};
use crate::registry::{ApplyOutcome, Awaiting, RegistryError, RegistryHandle};
use crate::request::{RequestEnd, RequestId};
use crate::view::SessionView;
use tokio_util::sync::CancellationToken;

/// The longest a client is held waiting for a decision. Claude's hook times out at 600 s;
/// this only bounds a client that never says it gave up.
pub const MAX_DECISION_WAIT: Duration = Duration::from_secs(3600);

/// Tells the registry a request is no longer awaited, unless disarmed (`id: None`): the wait
/// can end by the client leaving, by a timeout, or by the connection's task being dropped.
struct StopWaitingGuard<'a> {
    registry: &'a RegistryHandle,
    id: Option<RequestId>,
}

impl Drop for StopWaitingGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.registry.stop_waiting(&id);
        }
    }
}

pub(super) struct TranslatorHandler<T> {
    pub translator: T,
    pub registry: RegistryHandle,
    pub harness: Harness,
    pub adapter: String,
    pub stats: Arc<IngestStats>,
}

#[async_trait]
impl<T: Translator> IngestHandler for TranslatorHandler<T> {
    async fn handle(&self, msg: IngestMessage) -> Result<Option<ServerMessage>, WireError> {
        let t = match self.translator.translate(&msg) {
            Ok(t) => t,
            Err(e) => {
                IngestStats::bump(&self.stats.bad_messages);
                return Err(e);
            }
        };
        if !t.known {
            IngestStats::bump(&self.stats.unknown_events);
            debug!(agent = T::AGENT, event = %t.event_name, "unknown event accepted as activity");
        }
        self.apply(t, msg.awaits_decision(), msg.client_gone).await
    }
}

impl<T: Translator> TranslatorHandler<T> {
    async fn apply(
        &self,
        t: Translation,
        msg_awaits: bool,
        client_gone: CancellationToken,
    ) -> Result<Option<ServerMessage>, WireError> {
        let Some(event) = t.event else {
            IngestStats::bump(&self.stats.ignored);
            return Ok(None);
        };
        let process = t.pid.and_then(crate::process::identity_recent);
        // Kept only when the client wants the session back: the event takes the id otherwise.
        let reply_for = t.want_reply.then(|| t.session_id.clone());
        let awaits = T::ANSWERABLE && msg_awaits && event.asks();
        let source = EventSource {
            harness: self.harness.clone(),
            session_id: t.session_id,
            process,
            tmux_pane: t.tmux_pane,
            cwd: t.cwd,
            subagent_id: t.subagent_id,
            turn_id: t.turn_id,
            adapter: self.adapter.clone(),
        };
        let envelope = EventEnvelope::now(source, event);
        if awaits {
            return self.await_decision(envelope, client_gone).await;
        }
        let applied = self.registry.apply_event(envelope).await;
        self.count(applied.as_ref().copied())?;
        let Some(id) = reply_for else {
            return Ok(None);
        };
        let session = self
            .current(id.as_str(), process)
            .await
            .map_err(WireError::from)?
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotFound,
                    format!("no session {id} (it may have ended)"),
                )
            })?;
        Ok(Some(ServerMessage::SessionUpdated {
            session: Box::new(SessionView::from_session(&session, Utc::now()).into_owned()),
        }))
    }

    /// Applies an event that asks the user and waits, for the client, for its request's end:
    /// a decision made through atm, or the request withdrawn (answered in the terminal, the
    /// session gone), or the client gone, or [`MAX_DECISION_WAIT`]. Never an error the agent
    /// could take for a refusal: every end but a decision is `request_closed`.
    async fn await_decision(
        &self,
        envelope: EventEnvelope,
        client_gone: CancellationToken,
    ) -> Result<Option<ServerMessage>, WireError> {
        let awaiting = self.registry.apply_awaiting(envelope).await;
        self.count(awaiting.as_ref().map(|a| a.outcome))?;
        // No request opened: the connection answers the waiting client that nothing will come.
        let Ok(Awaiting {
            wait: Some((request_id, end)),
            ..
        }) = awaiting
        else {
            return Ok(None);
        };
        // Whatever ends the wait but an answer, the registry hears that nobody waits.
        let mut guard = StopWaitingGuard {
            registry: &self.registry,
            id: Some(request_id.clone()),
        };
        let closed = |reason: String, id: &RequestId| ServerMessage::RequestClosed {
            request_id: Some(id.clone()),
            reason,
        };
        let reply = tokio::select! {
            end = end => {
                guard.id = None;
                match end {
                    Ok(RequestEnd::Decided(verdict)) => ServerMessage::Decision {
                        request_id: request_id.clone(),
                        verdict,
                    },
                    Ok(RequestEnd::Withdrawn(reason)) => closed(reason, &request_id),
                    Err(_) => closed("the registry stopped".into(), &request_id),
                }
            }
            () = client_gone.cancelled() => {
                debug!(request = %request_id, "the waiting client left");
                return Ok(None);
            }
            () = tokio::time::sleep(MAX_DECISION_WAIT) => {
                closed("no decision in time".into(), &request_id)
            }
        };
        Ok(Some(reply))
    }

    /// Counts what the registry made of one event; its refusal is the client's error.
    fn count(&self, applied: Result<ApplyOutcome, &RegistryError>) -> Result<(), WireError> {
        match applied {
            Ok(ApplyOutcome::Ignored) => Ok(()),
            Ok(_) => {
                IngestStats::bump(&self.stats.applied);
                Ok(())
            }
            Err(e) => {
                IngestStats::bump(&self.stats.registry_errors);
                Err(e.clone().into())
            }
        }
    }

    /// The session a reply is about: by id, else (a late message for an id the process has
    /// since left, e.g. after `/clear`) by process.
    async fn current(
        &self,
        id: &str,
        process: Option<ProcessIdentity>,
    ) -> Result<Option<Arc<Session>>, RegistryError> {
        match self.registry.get_session(id).await {
            Ok(s) => Ok(Some(s)),
            Err(RegistryError::SessionNotFound(_)) => {
                let Some(p) = process else {
                    return Ok(None);
                };
                let snapshot = self.registry.snapshot().await?;
                Ok(snapshot
                    .sessions
                    .into_iter()
                    .find(|s| s.harness == self.harness && s.process == Some(p)))
            }
            Err(e) => Err(e),
        }
    }
}
