//! What a [`RegistryHandle`](super::RegistryHandle) asks the actor: one command per call, each
//! with a `oneshot` for the answer.

use tokio::sync::{broadcast, oneshot};

use super::{ApplyOutcome, RegistryError, SessionEvent, Snapshot};
use crate::event::{Discovered, EventEnvelope};
use crate::model::{Session, SessionId, SessionKey};
use std::sync::Arc;

use super::requests::{Awaiting, Decided};
use crate::request::{DecideError, Decision, RequestId, Surface};

pub(super) enum Command {
    RegisterDiscovered {
        found: Box<Discovered>,
        reply: oneshot::Sender<Result<ApplyOutcome, RegistryError>>,
    },
    Apply {
        envelope: Box<EventEnvelope>,
        reply: oneshot::Sender<Result<ApplyOutcome, RegistryError>>,
    },
    /// Apply, and wait for the request the event opens ([`super::requests`]).
    ApplyAwaiting {
        envelope: Box<EventEnvelope>,
        reply: oneshot::Sender<Result<Awaiting, RegistryError>>,
    },
    /// The waiter of a request is gone.
    StopWaiting {
        id: RequestId,
    },
    Decide {
        id: RequestId,
        decision: Decision,
        surface: Surface,
        reply: oneshot::Sender<Result<Decided, DecideError>>,
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
    /// What a link to other hosts heard ([`super::remote`]).
    Mirror {
        mirror: Box<super::Mirror>,
        reply: oneshot::Sender<Result<ApplyOutcome, RegistryError>>,
    },
    /// From now on, decisions for mirrored sessions go to `tx`.
    LinkRemote {
        tx: tokio::sync::mpsc::Sender<super::RemoteDecision>,
    },
}
