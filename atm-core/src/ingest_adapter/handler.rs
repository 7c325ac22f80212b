//! One message through an ingest adapter: translate (pure), resolve the process identity (one
//! cached `/proc` read), apply to the registry, count, and answer.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use tracing::debug;

use super::{Translation, Translator};
use crate::event::{EventEnvelope, EventSource};
use crate::ingest::{IngestHandler, IngestMessage, IngestStats};
use crate::model::{Harness, ProcessIdentity, Session};
use crate::protocol::{ErrorCode, ServerMessage, WireError};
use crate::registry::{ApplyOutcome, RegistryError, RegistryHandle};
use crate::view::SessionView;

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
        self.apply(t).await
    }
}

impl<T: Translator> TranslatorHandler<T> {
    async fn apply(&self, t: Translation) -> Result<Option<ServerMessage>, WireError> {
        let Some(event) = t.event else {
            IngestStats::bump(&self.stats.ignored);
            return Ok(None);
        };
        let process = t.pid.and_then(crate::process::identity_recent);
        // Kept only when the client wants the session back: the event takes the id otherwise.
        let reply_for = t.want_reply.then(|| t.session_id.clone());
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
        match self
            .registry
            .apply_event(EventEnvelope::now(source, event))
            .await
        {
            Ok(outcome) => {
                if outcome != ApplyOutcome::Ignored {
                    IngestStats::bump(&self.stats.applied);
                }
            }
            Err(e) => {
                IngestStats::bump(&self.stats.registry_errors);
                return Err(e.into());
            }
        }
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
