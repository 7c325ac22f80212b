//! Re-keying, as pure functions: what an event or a discovery with a different agent session
//! id does to the identity of the session it reached.
//!
//! A session is one process; the agent's own id changes on `/clear`, resume and fork. The
//! registry finds the record (by process, else by id) and asks here whether the id it carries
//! is the record's, a new one (re-key: clients see `removed(old)` then `added(new)`), or a late
//! word about an id the process already left (ignored, never re-keyed back).

use std::collections::VecDeque;

use crate::event::AgentEvent;
use crate::limits;
use crate::model::SessionId;

/// What the id an event carries means for the session it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStep {
    /// The session's own id.
    Same,
    /// A new id for the same process: re-key, then apply the event.
    Rekey,
    /// A late event for an id this process left behind: ignored.
    Retired,
    /// `/clear` or resume ending the old id: the new id arrives with the next `SessionStarted`,
    /// so there is nothing to do now.
    EndOfOld,
}

/// What an event with id `incoming` means for a session whose id is `current` and which left
/// the ids `retired` behind.
pub fn id_step(
    current: &SessionId,
    retired: &VecDeque<SessionId>,
    incoming: &SessionId,
    event: &AgentEvent,
) -> IdStep {
    if current == incoming {
        IdStep::Same
    } else if retired.contains(incoming) {
        IdStep::Retired
    } else if matches!(
        event,
        AgentEvent::SessionEnded {
            continues: true,
            ..
        }
    ) {
        IdStep::EndOfOld
    } else {
        IdStep::Rekey
    }
}

/// True when discovery's id for a known process should replace the session's: a real id
/// learned for a `pending-<pid>` placeholder. Discovery never moves a hooked id, and never
/// goes back to pending.
pub fn discovery_learns_id(current: &SessionId, found: Option<&SessionId>) -> bool {
    found.is_some_and(|f| current.is_pending() && !f.is_pending() && current != f)
}

/// The ids a process left behind after moving from `old` to `new`: `old` is remembered (unless
/// it was a placeholder), `new` is no longer retired, and only the last
/// [`limits::RETIRED_IDS`] are kept.
pub fn retire(retired: &mut VecDeque<SessionId>, old: &SessionId, new: &SessionId) {
    if retired.len() >= limits::RETIRED_IDS {
        retired.pop_front();
    }
    if !old.is_pending() {
        retired.push_back(old.clone());
    }
    retired.retain(|r| r != new);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        SessionId::new(s)
    }

    #[test]
    fn id_steps() {
        let retired: VecDeque<SessionId> = [id("old")].into();
        let end = |continues| AgentEvent::SessionEnded {
            reason: "clear".into(),
            continues,
        };
        let prompt = AgentEvent::PromptSubmitted { prompt: None };
        let table = [
            ("a", "a", prompt.clone(), IdStep::Same),
            ("a", "a", end(true), IdStep::Same),
            ("a", "b", prompt.clone(), IdStep::Rekey),
            ("a", "b", end(false), IdStep::Rekey),
            ("a", "b", end(true), IdStep::EndOfOld),
            ("a", "old", prompt.clone(), IdStep::Retired),
            ("a", "old", end(true), IdStep::Retired),
        ];
        for (current, incoming, event, want) in table {
            assert_eq!(
                id_step(&id(current), &retired, &id(incoming), &event),
                want,
                "{current} <- {incoming} {event:?}"
            );
        }
    }

    #[test]
    fn discovery_only_replaces_a_placeholder_with_a_real_id() {
        let pending = SessionId::pending(7);
        let table = [
            (pending.clone(), Some(id("real")), true),
            (pending.clone(), Some(SessionId::pending(8)), false),
            (pending.clone(), Some(pending.clone()), false),
            (pending.clone(), None, false),
            (id("hooked"), Some(id("other")), false),
        ];
        for (current, found, want) in table {
            assert_eq!(
                discovery_learns_id(&current, found.as_ref()),
                want,
                "{current} <- {found:?}"
            );
        }
    }

    #[test]
    fn retired_ids_are_bounded_and_never_hold_the_current_one() {
        let mut retired = VecDeque::new();
        retire(&mut retired, &SessionId::pending(1), &id("a"));
        assert!(retired.is_empty(), "a placeholder is not worth remembering");
        for i in 0..limits::RETIRED_IDS + 3 {
            retire(
                &mut retired,
                &id(&format!("r{i}")),
                &id(&format!("r{}", i + 1)),
            );
        }
        assert_eq!(retired.len(), limits::RETIRED_IDS);
        assert!(retired.contains(&id(&format!("r{}", limits::RETIRED_IDS + 2))));
        // Going back to a retired id un-retires it.
        retire(&mut retired, &id("now"), &id("r5"));
        assert!(!retired.contains(&id("r5")));
        assert!(retired.contains(&id("now")));
    }
}
