//! When the agent's own status, as discovery reads it, sets a session's state.
//!
//! Hooks are the richer witness (they name the tool, the command, the subagent), so they
//! normally win. But agents fire no hook for some moves the user makes: Claude Code fires none
//! when Esc interrupts a turn, when a permission is declined, or when an approved tool starts to
//! run. Its session file (`sessions/<pid>.json`, with `status` and `statusUpdatedAt`) does record
//! them. So the agent's status wins when it is newer than the last hook, and always while no hook
//! has spoken. A status without a time of its own (older agents) applies only until a hook has
//! spoken.
//!
//! `starting` (a `SessionStart` hook: the agent waits for its first prompt) is the exception:
//! there any status older than the hook may say `idle`, and no other. Claude Code stamps
//! `statusUpdatedAt` when its status changes but writes the file a little later, and its
//! `SessionStart` hook reaches atm later still (a process of its own). On `/clear`, recorded
//! with 2.1.332 on a loaded machine: `busy` (the `/clear` itself, under the old id), the new id
//! with that same `busy` and time, then `idle` stamped some 50 ms before the file showed it, with
//! the hook received in between. So a start may be hooked after the `idle` that follows it was
//! stamped (that older `idle` is the truth: the prompt is up), while the file still shows the
//! `busy` of the command that started it. Believing that `busy` left the fresh session
//! `working`, and the `idle` after it, older than the hook, could not correct it.

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
        (Some(hook), Some(at)) if at > hook => true,
        // Not newer than the start's hook: only the prompt the start put up.
        _ if state == AgentState::Starting => hint == AgentState::Idle,
        (Some(_), _) => false,
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
            // ...but `starting` waits at the prompt: an older or undated idle says so...
            (S::Starting, at(10), S::Idle, at(1), true),
            (S::Starting, at(10), S::Idle, None, true),
            // ...while an older busy is the command that started it (`/clear`), and an older
            // wait is from before the start too.
            (S::Starting, at(10), S::Working, at(9), false),
            (S::Starting, at(10), S::Working, at(10), false),
            (S::Starting, at(10), S::Working, None, false),
            (S::Starting, at(10), S::NeedsPermission, at(9), false),
            (S::Starting, at(10), S::NeedsInput, None, false),
            // A newer status is what the agent does since: the first prompt's turn.
            (S::Starting, at(10), S::Working, at(11), true),
            (S::Starting, None, S::Working, at(1), true),
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

    /// Claude Code 2.1.332's `/clear` as recorded on a loaded machine (milliseconds after the
    /// last turn's end; the hooks' times are atmd's, the status times Claude's).
    #[test]
    fn clear_is_idle_even_when_its_hook_comes_after_the_idle_status() {
        use crate::event::{AgentEvent, Discovered, EventSource, StartSource};
        use crate::model::{Harness, ProcessIdentity, SessionId, SessionKey};
        use crate::state::apply::{apply_discovery, apply_event};

        let ms = |ms: i64| DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap();
        let process = ProcessIdentity {
            pid: 42,
            start_time: 9,
        };
        let file = |status: S, stamped: i64| {
            let mut found = Discovered::new(Harness::claude(), process, "proc-discovery");
            found.state_hint = Some(status);
            found.state_hint_at = Some(ms(stamped));
            found
        };
        let key = SessionKey::Process {
            harness: Harness::claude(),
            pid: 42,
            start_time: 9,
        };
        let mut s = Session::new(key, SessionId::new("old"), Some(process), "test", ms(0));
        let hook = EventSource::new(Harness::claude(), SessionId::new("old"), "claude-hooks");
        apply_event(&mut s, &hook, &AgentEvent::TurnFinished, ms(0));
        assert_eq!(s.state, S::Idle);
        // `/clear` runs: the file says busy (stamped 253), read at 300.
        apply_discovery(&mut s, &file(S::Working, 253), ms(300));
        assert_eq!(s.state, S::Working);
        // The new conversation's `SessionStart` reaches atmd at 474; Claude stamped its idle at
        // 424 but the file still shows the new id with the old busy when discovery reads it.
        let clear = AgentEvent::SessionStarted {
            source: StartSource::Clear,
            model: None,
        };
        apply_event(&mut s, &hook, &clear, ms(474));
        assert_eq!(s.state, S::Starting);
        apply_discovery(&mut s, &file(S::Working, 253), ms(476));
        assert_eq!(
            s.state,
            S::Starting,
            "the busy of the /clear is not the new turn"
        );
        apply_discovery(&mut s, &file(S::Idle, 424), ms(800));
        assert_eq!(s.state, S::Idle, "the prompt is up: {s:?}");
        // The first prompt of the new conversation, before its hook: newer, so believed.
        apply_discovery(&mut s, &file(S::Working, 900), ms(950));
        assert_eq!(s.state, S::Working);
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
