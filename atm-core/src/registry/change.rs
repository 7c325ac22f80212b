//! What the registry tells the world: the change stream sinks follow, the snapshot they
//! resynchronise from, and what one call did.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{AgentState, Session};
use crate::request::{RequestFate, RequestId, RequestRecord};

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
    /// The pending requests this change opened and ended. Followers that announce requests
    /// (D-Bus signals, `request_resolved` lines, web and fleet sinks) read this instead of
    /// comparing sessions themselves, and a request opened and answered between two coalesced
    /// updates is still seen.
    pub requests: RequestChanges,
}

/// Which pending requests one change opened and ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestChanges {
    /// The request the session holds now and did not hold before.
    pub opened: Option<RequestId>,
    /// The requests that ended, each as the session's log keeps it (a request that ends with
    /// its session has a record made here, withdrawn with the removal's reason), oldest first.
    pub ended: Vec<RequestRecord>,
}

impl RequestChanges {
    /// What happened to requests between `before` and `after` (the session as the change
    /// announces it). A re-keyed id's removal ends nothing: the same session follows under its
    /// new id with the same request, and its `Added` is compared with the old row.
    pub fn between(
        change: &SessionChange,
        before: Option<&Session>,
        after: &Session,
        now: DateTime<Utc>,
    ) -> Self {
        match change {
            SessionChange::Removed { reason } if reason == REKEYED => Self::default(),
            SessionChange::Removed { reason } => Self {
                opened: None,
                ended: open_request(after)
                    .map(|r| RequestRecord {
                        id: r.id.clone(),
                        tool: after.attention.as_ref().and_then(|a| a.tool.clone()),
                        asked_at: r.asked_at,
                        ended_at: now,
                        fate: RequestFate::Withdrawn {
                            reason: format!("the session ended ({reason})"),
                        },
                    })
                    .into_iter()
                    .collect(),
            },
            SessionChange::Added | SessionChange::Updated => {
                let held = |s: &Session| open_request(s).map(|r| r.id.clone());
                let now_open = held(after);
                let was_open = before.and_then(held);
                let logged_before = |id: &RequestId| {
                    before.is_some_and(|b| b.request_log.iter().any(|r| r.id == *id))
                };
                let mut ended: Vec<RequestRecord> = after
                    .request_log
                    .iter()
                    .filter(|r| !logged_before(&r.id))
                    .cloned()
                    .collect();
                // The state machine logs every end it decides; a wait dropped some other way
                // still ends its request for those who follow.
                if let Some(gone) = before.and_then(open_request)
                    && now_open.as_ref() != Some(&gone.id)
                    && !after.request_log.iter().any(|r| r.id == gone.id)
                {
                    ended.push(RequestRecord {
                        id: gone.id.clone(),
                        tool: before.and_then(|b| b.attention.as_ref()?.tool.clone()),
                        asked_at: gone.asked_at,
                        ended_at: now,
                        fate: RequestFate::Withdrawn {
                            reason: "the wait ended".to_owned(),
                        },
                    });
                }
                Self {
                    opened: now_open.filter(|id| was_open.as_ref() != Some(id)),
                    ended,
                }
            }
        }
    }

    /// Nothing opened or ended.
    pub fn is_empty(&self) -> bool {
        self.opened.is_none() && self.ended.is_empty()
    }
}

fn open_request(s: &Session) -> Option<&crate::request::PendingRequest> {
    s.attention.as_ref().and_then(|a| a.request.as_ref())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attention;
    use crate::request::{Decision, PendingRequest, Surface};

    fn id(n: u8) -> RequestId {
        RequestId::parse(&format!("{n:032x}")).unwrap()
    }

    fn holding(open: Option<u8>, log: &[u8]) -> Session {
        let mut s = crate::testing::claude_session("s", Utc::now());
        s.attention = open.map(|n| Attention {
            reason: "permission".into(),
            tool: Some("Bash".into()),
            request: Some(PendingRequest {
                id: id(n),
                asked_at: Utc::now(),
                answerable: true,
            }),
            ..Attention::default()
        });
        s.request_log = log
            .iter()
            .map(|n| RequestRecord {
                id: id(*n),
                tool: None,
                asked_at: Utc::now(),
                ended_at: Utc::now(),
                fate: RequestFate::Answered {
                    decision: Decision::Deny {
                        message: None,
                        interrupt: false,
                    },
                    surface: Surface::new("atmctl", None),
                },
            })
            .collect();
        s
    }

    fn between(change: SessionChange, before: Option<&Session>, after: &Session) -> RequestChanges {
        RequestChanges::between(&change, before, after, Utc::now())
    }

    #[test]
    fn a_new_wait_opens_and_the_log_says_what_ended() {
        let asked = holding(Some(1), &[]);
        let c = between(SessionChange::Added, None, &asked);
        assert_eq!(c.opened, Some(id(1)));
        assert!(c.ended.is_empty());
        // Said again: nothing new.
        assert!(between(SessionChange::Updated, Some(&asked), &asked).is_empty());
        // Superseded: the old one is logged, the new one opened, in one change.
        let next = holding(Some(2), &[1]);
        let c = between(SessionChange::Updated, Some(&asked), &next);
        assert_eq!(c.opened, Some(id(2)));
        assert_eq!(c.ended.iter().map(|r| &r.id).collect::<Vec<_>>(), [&id(1)]);
        // A later change does not end it again, even when the bounded log dropped older ones.
        let later = holding(None, &[1, 2]);
        let c = between(SessionChange::Updated, Some(&next), &later);
        assert_eq!(c.ended.iter().map(|r| &r.id).collect::<Vec<_>>(), [&id(2)]);
    }

    #[test]
    fn a_removal_withdraws_the_open_request_and_a_rekey_keeps_it() {
        let s = holding(Some(1), &[]);
        let gone = SessionChange::Removed {
            reason: "process exited".into(),
        };
        let c = between(gone, Some(&s), &s);
        assert_eq!(c.ended.len(), 1);
        assert_eq!(
            c.ended[0].fate,
            RequestFate::Withdrawn {
                reason: "the session ended (process exited)".into()
            }
        );
        assert_eq!(c.ended[0].tool.as_deref(), Some("Bash"));
        let rekeyed = SessionChange::Removed {
            reason: REKEYED.into(),
        };
        assert!(between(rekeyed, None, &s).is_empty());
        // The new id's `Added`, compared with the old row, opens nothing.
        assert!(between(SessionChange::Added, Some(&s), &s).is_empty());
    }

    #[test]
    fn a_wait_dropped_without_a_log_entry_still_ends() {
        let s = holding(Some(1), &[]);
        let c = between(SessionChange::Updated, Some(&s), &holding(None, &[]));
        assert_eq!(c.opened, None);
        assert_eq!(
            c.ended[0].fate,
            RequestFate::Withdrawn {
                reason: "the wait ended".into()
            }
        );
    }
}
