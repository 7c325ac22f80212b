//! What the registry tells the world: the change stream sinks follow, the snapshot they
//! resynchronise from, and what one call did.

use std::sync::Arc;

use crate::model::{AgentState, Session};

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
    /// The state before the change (`None` for `Added`, and for the removal of a re-keyed id).
    pub previous_state: Option<AgentState>,
}

/// Every session at one instant, and the sequence number of the last change it reflects.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub seq: u64,
    pub sessions: Vec<Arc<Session>>,
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
