//! Answers sent by a hub for this host's requests: `<subject_prefix>.<host>.decide`.
//!
//! A hub's [`DecideRequest`] goes through the registry's decide, as an answer from any surface
//! here would, with the hub and its surface as where it came from (`atmctl@hub`). Exactly
//! once: the registry delivers a decision to the waiting agent at most once, and a request id
//! seen again (a hub that retried after a timeout) gets the reply the first one got, from a
//! bounded memory of the last [`RECENT`] delivered answers.

use std::collections::VecDeque;

use atm_core::fleet::{DecideReply, DecideRequest, ENTRY_VERSION, decide_subject};
use atm_core::request::{DecideError, RequestId, Surface};
use atm_core::tokio_util::sync::CancellationToken;
use atm_core::{HostId, RegistryHandle};
use futures_util::StreamExt;
use tracing::{debug, info, warn};

/// Delivered answers remembered for repeats.
const RECENT: usize = 256;
/// The largest request read (a decision with answers to a few questions is well under 1 KiB).
const MAX_REQUEST: usize = 64 * 1024;

/// Serves decisions until cancelled.
pub(crate) async fn serve(
    client: async_nats::Client,
    registry: RegistryHandle,
    host: HostId,
    prefix: String,
    cancel: CancellationToken,
) {
    let subject = decide_subject(&prefix, &host);
    // The client resubscribes by itself after a reconnect.
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(subject, error = %e, "nats: cannot take answers for this host's requests");
            return;
        }
    };
    let mut recent: VecDeque<(String, DecideReply)> = VecDeque::with_capacity(RECENT);
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => return,
            m = sub.next() => m,
        };
        let Some(msg) = msg else { return };
        let Some(reply_to) = msg.reply.clone() else {
            debug!("nats: a decision without a reply subject ignored");
            continue;
        };
        let reply = answer(&msg.payload, &host, &registry, &mut recent).await;
        match serde_json::to_vec(&reply) {
            Ok(bytes) => {
                if let Err(e) = client.publish(reply_to, bytes.into()).await {
                    debug!(error = %e, "nats: cannot send a decision's reply");
                }
            }
            Err(e) => debug!(error = %e, "nats: cannot encode a decision's reply"),
        }
    }
}

fn invalid(message: impl Into<String>) -> DecideReply {
    DecideReply::refused(&DecideError::Invalid(message.into()))
}

/// What one request gets.
async fn answer(
    payload: &[u8],
    host: &HostId,
    registry: &RegistryHandle,
    recent: &mut VecDeque<(String, DecideReply)>,
) -> DecideReply {
    if payload.len() > MAX_REQUEST {
        return invalid(format!(
            "a decision of {} bytes is too large",
            payload.len()
        ));
    }
    let req: DecideRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return invalid(format!("not a decision: {e}")),
    };
    if req.v != ENTRY_VERSION {
        return invalid(format!("decision version {} is not {ENTRY_VERSION}", req.v));
    }
    if req.host != *host {
        return invalid(format!("this is host {host}, not {}", req.host));
    }
    let Some(id) = RequestId::parse(&req.request_id) else {
        return invalid("a request id is 32 hex digits");
    };
    if let Some((_, r)) = recent.iter().find(|(seen, _)| *seen == id.as_str()) {
        debug!(request = %id, "nats: a repeated decision gets the first one's reply");
        return r.clone();
    }
    let surface = Surface::new(format!("{}@{}", req.surface, req.from), req.uid);
    let reply = match registry.decide(id.clone(), req.decision, surface).await {
        Ok(Ok(decided)) => {
            info!(request = %id, from = %req.from, "nats: request answered from another host");
            DecideReply::Decided {
                session_id: decided.session_id.as_str().to_owned(),
            }
        }
        Ok(Err(e)) => return DecideReply::refused(&e),
        Err(e) => {
            return DecideReply::Refused {
                code: "internal".to_owned(),
                message: e.to_string(),
            };
        }
    };
    if recent.len() == RECENT {
        recent.pop_front();
    }
    recent.push_back((id.as_str().to_owned(), reply.clone()));
    reply
}
