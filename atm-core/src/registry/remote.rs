//! Sessions of other machines in this registry, and answers to their requests.
//!
//! An adapter that links this daemon to other hosts (the `nats` adapter) says what it heard
//! with a [`Mirror`]: a host's session as that host published it, a session that host removed,
//! a host whose heartbeat stopped or came back, a host gone for good. The state of a mirrored
//! session was decided by its own host's state machine; [`crate::state::mirror`] says what the
//! record becomes here, and the change leaves through the actor's one emit path like any other.
//!
//! A decision for a mirrored session's request cannot be applied here: the actor hands it to
//! the link ([`RegistryHandle::link_remote`](super::RegistryHandle::link_remote)) with the
//! caller's reply channel, and the link answers once the owning host did (or could not).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::actor::Actor;
use super::requests::Decided;
use super::{ApplyOutcome, RegistryError, SessionChange};
use crate::host::HostId;
use crate::model::{RemoteLink, Session, SessionKey};
use crate::request::{DecideError, Decision, RequestId, Surface};

/// What a link to other hosts heard.
#[derive(Debug, Clone)]
pub enum Mirror {
    /// `host`'s session, as it published it (its own key, its state).
    Session { host: HostId, session: Box<Session> },
    /// `host` removed its session `key` (its own key).
    Gone {
        host: HostId,
        key: SessionKey,
        reason: String,
    },
    /// `host`'s heartbeat stopped (`stale`) or came back: its sessions say so.
    Stale { host: HostId, stale: bool },
    /// `host` is gone: remove every session of it.
    HostGone { host: HostId, reason: String },
}

/// A decision for a mirrored session's request, for the link to deliver to its `host`. The
/// link answers `reply` with what the host said, or why it could not be asked.
#[derive(Debug)]
pub struct RemoteDecision {
    pub host: HostId,
    pub request: RequestId,
    pub decision: Decision,
    pub surface: Surface,
    pub reply: oneshot::Sender<Result<Decided, DecideError>>,
}

/// A decision as the actor received it, with the caller's reply channel.
pub(super) struct DecideCall {
    pub id: RequestId,
    pub decision: Decision,
    pub surface: Surface,
    pub reply: oneshot::Sender<Result<Decided, DecideError>>,
}

/// Decisions queued for the link at most; past that a decision is refused as "busy" rather
/// than queued without bound (a person clicks; hundreds in flight means the link is stuck).
pub const REMOTE_DECISIONS: usize = 64;

impl Actor {
    /// Applies what a link heard. Returns how many sessions changed.
    pub(super) fn mirror(&mut self, m: Mirror) -> Result<ApplyOutcome, RegistryError> {
        match m {
            Mirror::Session { host, session } => self.mirror_session(&host, *session),
            Mirror::Gone { host, key, reason } => {
                let key = SessionKey::Remote {
                    host,
                    key: Box::new(key),
                };
                Ok(match self.remove(&key, &reason) {
                    Some(_) => ApplyOutcome::Removed,
                    None => ApplyOutcome::Ignored,
                })
            }
            Mirror::Stale { host, stale } => {
                let mut changed = false;
                for key in self.index.of_host(&host) {
                    let Some(entry) = self.index.get_mut(&key) else {
                        continue;
                    };
                    if entry.session.remote.is_some_and(|r| r.stale == stale) {
                        continue;
                    }
                    let before = entry.session.clone();
                    Arc::make_mut(&mut entry.session).remote = Some(RemoteLink { stale });
                    let after = entry.session.clone();
                    self.emit(SessionChange::Updated, after, Some(&before));
                    changed = true;
                }
                Ok(if changed {
                    ApplyOutcome::Updated
                } else {
                    ApplyOutcome::Unchanged
                })
            }
            Mirror::HostGone { host, reason } => {
                let keys = self.index.of_host(&host);
                for key in &keys {
                    self.remove(key, &reason);
                }
                Ok(if keys.is_empty() {
                    ApplyOutcome::Ignored
                } else {
                    ApplyOutcome::Removed
                })
            }
        }
    }

    fn mirror_session(
        &mut self,
        host: &HostId,
        incoming: Session,
    ) -> Result<ApplyOutcome, RegistryError> {
        if *host == self.config.host {
            // Our own sessions, back from the bucket: never mirror ourselves.
            return Ok(ApplyOutcome::Ignored);
        }
        let mut session = crate::state::mirror::mirrored(host, incoming);
        crate::sanitize::sanitize(&mut session);
        crate::sanitize::clamp_future_times(&mut session, chrono::Utc::now());
        let Some(entry) = self.index.get_mut(&session.key) else {
            self.add(session)?;
            return Ok(ApplyOutcome::Added);
        };
        if *entry.session == session {
            return Ok(ApplyOutcome::Unchanged);
        }
        let after = Arc::new(session);
        let before = std::mem::replace(&mut entry.session, after.clone());
        self.emit(SessionChange::Updated, after, Some(&before));
        Ok(ApplyOutcome::Updated)
    }

    /// Takes the decision for request `id` to the link when a mirrored session holds it.
    /// Gives the call back when the request is not a mirrored session's.
    pub(super) fn forward_decision(&mut self, call: DecideCall) -> Option<DecideCall> {
        let DecideCall {
            id,
            decision,
            surface,
            reply,
        } = call;
        let host = self.key_holding(&id).and_then(|k| k.remote_host().cloned());
        let Some(host) = host else {
            return Some(DecideCall {
                id,
                decision,
                surface,
                reply,
            });
        };
        let id_text = id.to_string();
        let unreachable = |reason: &str| DecideError::Unreachable {
            host: host.to_string(),
            id: id_text.clone(),
            reason: reason.to_owned(),
        };
        let Some(link) = self.remote_link.as_ref().filter(|l| !l.is_closed()) else {
            let _ = reply.send(Err(unreachable(
                "this daemon has no link to it (its `nats` adapter is not running)",
            )));
            return None;
        };
        let forwarded = RemoteDecision {
            host: host.clone(),
            request: id,
            decision,
            surface,
            reply,
        };
        if let Err(e) = link.try_send(forwarded) {
            let (why, d) = match e {
                mpsc::error::TrySendError::Full(d) => ("too many answers are on their way", d),
                mpsc::error::TrySendError::Closed(d) => ("its link just stopped", d),
            };
            debug!(host = %host, why, "decision for a remote request not forwarded");
            let _ = d.reply.send(Err(unreachable(why)));
        }
        None
    }

    /// The link that will carry decisions for mirrored sessions from now on.
    pub(super) fn link_remote(&mut self, tx: mpsc::Sender<RemoteDecision>) {
        self.remote_link = Some(tx);
    }
}
