//! Carries a decision for a mirrored session's request to the host that owns it and brings
//! the outcome back: NATS request/reply on `<subject_prefix>.<host>.decide`.
//!
//! The registry hands over each decision with its caller's reply channel
//! ([`atm_core::registry::RemoteDecision`], a queue of [`atm_core::registry::REMOTE_DECISIONS`]);
//! at most [`IN_FLIGHT`] are on their way at once. What the caller hears says what happened:
//! the host's own answer (decided, already answered, gone), or that the host could not be
//! asked: nobody answers for it (its daemon is stopped or not connected), or it did not answer
//! within `decide_timeout`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::RequestErrorKind;
use atm_core::HostId;
use atm_core::SessionId;
use atm_core::fleet::{DecideReply, DecideRequest, ENTRY_VERSION, decide_subject};
use atm_core::registry::{Decided, RemoteDecision};
use atm_core::request::DecideError;
use atm_core::tokio_util::sync::CancellationToken;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info};

/// Decisions on their way at once.
pub const IN_FLIGHT: usize = 64;

#[derive(Clone)]
pub(crate) struct Forwarder {
    pub client: async_nats::Client,
    pub prefix: String,
    pub from: HostId,
    pub timeout: Duration,
}

impl Forwarder {
    pub(crate) async fn run(
        self,
        mut decisions: mpsc::Receiver<RemoteDecision>,
        cancel: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            let d = tokio::select! {
                () = cancel.cancelled() => return,
                d = decisions.recv() => d,
            };
            let Some(d) = d else { return };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let outcome = this.ask(&d).await;
                let _ = d.reply.send(outcome);
                drop(permit);
            });
        }
    }

    async fn ask(&self, d: &RemoteDecision) -> Result<Decided, DecideError> {
        let unreachable = |reason: String| DecideError::Unreachable {
            host: d.host.to_string(),
            id: d.request.to_string(),
            reason,
        };
        let req = DecideRequest {
            v: ENTRY_VERSION,
            host: d.host.clone(),
            request_id: d.request.to_string(),
            decision: d.decision.clone(),
            surface: d.surface.name.clone(),
            uid: d.surface.uid,
            from: self.from.clone(),
        };
        let payload = serde_json::to_vec(&req).map_err(|e| DecideError::Invalid(e.to_string()))?;
        let subject = decide_subject(&self.prefix, &d.host);
        let asked =
            tokio::time::timeout(self.timeout, self.client.request(subject, payload.into())).await;
        let msg = match asked {
            Err(_) => {
                return Err(unreachable(format!(
                    "it did not answer within {:?}",
                    self.timeout
                )));
            }
            Ok(Err(e)) => {
                let reason = match e.kind() {
                    RequestErrorKind::NoResponders => {
                        "no atm daemon answers for it (stopped, or not connected to NATS)"
                            .to_owned()
                    }
                    RequestErrorKind::TimedOut => {
                        format!("it did not answer within {:?}", self.timeout)
                    }
                    _ => format!("NATS refused the request: {e}"),
                };
                debug!(host = %d.host, request = %d.request, reason, "nats: answer not delivered");
                return Err(unreachable(reason));
            }
            Ok(Ok(msg)) => msg,
        };
        match serde_json::from_slice::<DecideReply>(&msg.payload) {
            Ok(DecideReply::Decided { session_id }) => {
                info!(host = %d.host, request = %d.request, "nats: answer delivered to its host");
                Ok(Decided {
                    request_id: d.request.clone(),
                    session_id: SessionId::new(session_id),
                })
            }
            Ok(DecideReply::Refused { code, message }) => Err(DecideReply::to_error(
                &code,
                format!("host {}: {message}", d.host),
                d.request.as_str(),
            )),
            Err(e) => Err(unreachable(format!("its reply was not understood: {e}"))),
        }
    }
}
