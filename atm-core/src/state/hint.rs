//! When the agent's own status, as discovery reads it, sets a session's state.
//!
//! Hooks are the richer witness (they name the tool, the command, the subagent), so they
//! normally win. But agents fire no hook for some moves the user makes: Claude Code fires none
//! when Esc interrupts a turn, when a permission is declined, or when an approved tool starts to
//! run. Its session file (`sessions/<pid>.json`, with `status` and `statusUpdatedAt`) does record
//! them. So the agent's status wins when it is newer than the last hook, and always while no hook
//! has spoken or the session is still `starting` (which says nothing about what the agent does).
//! A status without a time of its own (older agents) applies only until a hook has spoken.

use chrono::{DateTime, Utc};

use crate::model::{AgentState, Attention, Session};

/// Whether the agent's status `hint`, written at `hint_at` by the agent's clock, sets the state
/// of a session in `state` whose last hook spoke at `last_hook_at`.
pub fn hint_applies(
    state: AgentState,
    last_hook_at: Option<DateTime<Utc>>,
    hint: AgentState,
    hint_at: Option<DateTime<Utc>>,
) -> bool {
    if hint == state {
        return false;
    }
    match (last_hook_at, hint_at) {
        (None, _) => true,
        _ if state == AgentState::Starting => true,
        (Some(hook), Some(at)) => at > hook,
        (Some(_), None) => false,
    }
}

/// The attention a state entered from a hint carries: the hint names no tool, so a wait gets
/// only its reason.
pub fn attention_after_hint(hint: AgentState) -> Option<Attention> {
    let reason = match hint {
        AgentState::NeedsPermission => "permission",
        AgentState::NeedsInput => "input",
        _ => return None,
    };
    Some(Attention {
        reason: reason.to_owned(),
        ..Attention::default()
    })
}

/// What the session is doing after a hint moved it from a state with `attention`: an approved
/// permission runs the tool it asked for; otherwise the same words the hooks would give.
pub fn activity_after_hint(attention: Option<&Attention>, hint: AgentState) -> Option<String> {
    match hint {
        AgentState::Working => Some(
            attention
                .and_then(|a| a.tool.clone())
                .unwrap_or_else(|| "Thinking".to_owned()),
        ),
        AgentState::NeedsPermission => Some("Permission".to_owned()),
        AgentState::NeedsInput => Some("Input".to_owned()),
        AgentState::Starting | AgentState::Idle => None,
    }
}

/// Sets a session's state from the agent's status `hint` (already judged by [`hint_applies`]),
/// keeping the rule that a waiting state always has an attention.
pub fn apply_hint(s: &mut Session, hint: AgentState, now: DateTime<Utc>) {
    if hint == s.state {
        return;
    }
    s.activity = activity_after_hint(s.attention.as_ref(), hint);
    s.awaits_background = false;
    s.state = hint;
    s.state_since = now;
    s.attention = attention_after_hint(hint);
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentState as S;

    fn at(secs: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0)
    }

    #[test]
    fn a_newer_status_corrects_a_state_the_agent_left_without_a_hook() {
        // (state, last hook, hint, hint time, applies)
        let cases = [
            // No hook yet: the agent's status is all there is.
            (S::Starting, None, S::Idle, None, true),
            (S::Idle, None, S::Working, at(0), true),
            // Esc while working, a declined permission: newer idle wins.
            (S::Working, at(10), S::Idle, at(11), true),
            (S::NeedsPermission, at(10), S::Idle, at(11), true),
            // An approved permission: the tool runs before any hook says so.
            (S::NeedsPermission, at(10), S::Working, at(11), true),
            // An older or equally old status is what the hook already told.
            (S::Working, at(10), S::Idle, at(10), false),
            (S::Working, at(10), S::Idle, at(9), false),
            // No time of its own: hooks win once they have spoken...
            (S::Working, at(10), S::Idle, None, false),
            // ...but `starting` says nothing, so any status is better.
            (S::Starting, at(10), S::Idle, at(1), true),
            (S::Starting, at(10), S::Idle, None, true),
            // The same state is no change (a hook's richer attention stays).
            (
                S::NeedsPermission,
                at(10),
                S::NeedsPermission,
                at(11),
                false,
            ),
        ];
        for (state, hook, hint, hint_at, want) in cases {
            assert_eq!(
                hint_applies(state, hook, hint, hint_at),
                want,
                "{state} hooked at {hook:?} + {hint} at {hint_at:?}"
            );
        }
    }

    #[test]
    fn attention_and_activity_after_a_hint() {
        assert_eq!(attention_after_hint(S::Idle), None);
        assert_eq!(attention_after_hint(S::Working), None);
        assert_eq!(
            attention_after_hint(S::NeedsPermission).map(|a| a.reason),
            Some("permission".to_owned())
        );
        assert_eq!(
            attention_after_hint(S::NeedsInput).map(|a| a.reason),
            Some("input".to_owned())
        );
        let asked = Attention {
            reason: "permission".into(),
            tool: Some("Bash".into()),
            ..Attention::default()
        };
        assert_eq!(
            activity_after_hint(Some(&asked), S::Working).as_deref(),
            Some("Bash")
        );
        assert_eq!(
            activity_after_hint(None, S::Working).as_deref(),
            Some("Thinking")
        );
        assert_eq!(activity_after_hint(Some(&asked), S::Idle), None);
        assert_eq!(
            activity_after_hint(None, S::NeedsPermission).as_deref(),
            Some("Permission")
        );
    }
}
