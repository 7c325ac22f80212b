//! What one event does to a session record, as pure functions beside the transition.
//!
//! [`transition`] decides state and attention; this module applies that
//! outcome and the event's facts to the record: when a turn starts, which prompt labels the
//! session, which subagents run, the last error, cwd, pane and usage, and what discovery may
//! change. The registry actor finds the record, calls these and emits what changed; it decides
//! nothing itself, so every rule here is covered by table tests without running an actor.

use chrono::{DateTime, Utc};

use super::hint::{apply_hint, hint_applies};
use super::requests;
use super::{Outcome, activity_after, resolve, speaker, transition};
use crate::event::{AgentEvent, Discovered, EventSource, StartSource};
use crate::limits;
use crate::model::{AgentState, Session, SessionId, SessionKey, Usage};
use crate::redact::safe_preview;
use crate::sanitize::{self, sanitize};

/// True when moving from `from` to `to` starts a turn: the first prompt or tool after idle, or
/// after the session started.
pub fn turn_starts(from: AgentState, to: AgentState) -> bool {
    to == AgentState::Working && matches!(from, AgentState::Idle | AgentState::Starting)
}

/// True when a `SessionStarted` from `source` begins a new conversation in the same process:
/// what labelled the old one (first prompt, subagents, last error, turn start) is forgotten.
pub fn starts_new_conversation(source: StartSource) -> bool {
    matches!(
        source,
        StartSource::Clear | StartSource::Resume | StartSource::Fork
    )
}

/// The first prompt after `prompt` is submitted: the first non-empty one labels the session
/// for good (as a one-line preview, made safe to show: [`crate::redact::safe_preview`]).
pub fn first_prompt_after(current: Option<&str>, prompt: Option<&str>) -> Option<String> {
    if let Some(current) = current {
        return Some(current.to_owned());
    }
    // Shown on bars and in notifications: made safe like every text people see.
    prompt
        .map(|p| safe_preview(p, limits::FIRST_PROMPT))
        .filter(|p| !p.is_empty())
}

/// Applies one event to a session record: the state machine, then the event's facts.
/// Returns the state machine's outcome; on `End` the record is left untouched.
pub fn apply_event(
    s: &mut Session,
    source: &EventSource,
    event: &AgentEvent,
    at: DateTime<Utc>,
) -> Outcome {
    let subagent = source.subagent_id.as_deref();
    // Who speaks and what the event amounts to are judged on the state before the event.
    let moves_parent = speaker(s.state, s.attention.as_ref(), subagent).moves_parent();
    let applied = resolve(s.state, event);
    let outcome = transition(s.state, s.attention.as_ref(), event, subagent);
    if outcome == Outcome::End {
        return outcome;
    }
    let is_usage = matches!(event, AgentEvent::UsageUpdated(_));
    if !is_usage {
        s.last_hook_at = Some(s.last_hook_at.map_or(at, |t| t.max(at)));
    }
    let asked = applied.is_some_and(AgentEvent::asks);
    if let Outcome::Enter { state, attention } = &outcome {
        if *state != s.state {
            s.state_since = at;
            if turn_starts(s.state, *state) {
                s.turn_started_at = Some(at);
            }
        }
        s.state = *state;
        let before = std::mem::replace(&mut s.attention, attention.clone());
        requests::settle(before.as_ref(), s, asked, at);
    } else {
        // The wait is unchanged: only one without a request yet (restored from an older
        // snapshot) gets its request.
        requests::settle(None, s, asked, at);
    }
    // A request moves the parent whoever asked (the user must answer it), and so does what it
    // says the session is doing: a subagent's permission shows `Permission` like the parent's.
    if (moves_parent || asked)
        && let Some(activity) = applied.and_then(activity_after)
    {
        s.activity = activity;
        s.awaits_background = matches!(
            applied,
            Some(AgentEvent::TurnBackgrounded { awaited: true, .. })
        );
    }
    // The event's facts; a reminder of a wait already shown has none.
    match applied {
        Some(AgentEvent::SessionStarted { source: src, model }) => {
            if let Some(m) = model {
                s.model_id = Some(m.clone());
            }
            if starts_new_conversation(*src) {
                s.first_prompt = None;
                s.children.clear();
                s.last_error = None;
                s.turn_started_at = None;
                s.turn_id = None;
                s.title = None;
                // The old conversation's figures are not the new one's (Claude's next status
                // line after `/clear` even says `current_usage: null`); what belongs to the
                // model or the account stays until the agent reports again.
                s.usage = Usage {
                    context_window_size: s.usage.context_window_size,
                    rate_limits: std::mem::take(&mut s.usage.rate_limits),
                    ..Usage::default()
                };
            }
        }
        Some(AgentEvent::PromptSubmitted { prompt }) => {
            s.last_error = None;
            s.first_prompt = first_prompt_after(s.first_prompt.as_deref(), prompt.as_deref());
        }
        Some(AgentEvent::TurnFailed { error }) => {
            s.last_error = Some(safe_preview(error, limits::PREVIEW));
        }
        Some(AgentEvent::SubagentStarted { agent_id })
            if !s.children.contains(agent_id) && s.children.len() < limits::CHILDREN =>
        {
            s.children.push(agent_id.clone());
        }
        Some(AgentEvent::SubagentStopped { agent_id }) => s.children.retain(|c| c != agent_id),
        Some(AgentEvent::UsageUpdated(u)) => s.apply_usage(u),
        Some(AgentEvent::CwdChanged { cwd }) => {
            s.cwd = Some(cwd.clone());
            s.git = Default::default();
        }
        _ => {}
    }
    // A subagent's events carry the turn of its own conversation, not the session's.
    if moves_parent && subagent.is_none() && source.turn_id.is_some() {
        s.turn_id.clone_from(&source.turn_id);
    }
    if source.tmux_pane.is_some() {
        s.tmux_pane.clone_from(&source.tmux_pane);
    }
    if source.cwd.is_some() && !matches!(applied, Some(AgentEvent::CwdChanged { .. })) {
        s.cwd.clone_from(&source.cwd);
    }
    if s.process.is_none() {
        s.process = source.process;
    }
    // A clock set back while running left stamps in the future: this event's time is the
    // truth now, or the session would look silent (and never expire) until the clock caught up.
    sanitize::clamp_future_times(s, at);
    // A status line is data, not activity.
    if !is_usage && at > s.last_activity {
        s.last_activity = at;
    }
    sanitize(s);
    outcome
}

/// A new record for an event about a session the registry does not hold, with the event
/// already applied (clients see one `added`). `None` when the event creates nothing: an end
/// for a session never seen.
pub fn session_from_event(
    key: SessionKey,
    source: &EventSource,
    event: &AgentEvent,
    at: DateTime<Utc>,
) -> Option<Session> {
    if let AgentEvent::SessionEnded { .. } = event {
        return None;
    }
    let mut s = Session::new(
        key,
        source.session_id.clone(),
        source.process,
        &source.adapter,
        at,
    );
    s.cwd.clone_from(&source.cwd);
    s.tmux_pane.clone_from(&source.tmux_pane);
    (apply_event(&mut s, source, event, at) != Outcome::End).then_some(s)
}

/// Why a session an event ended is removed, as clients read it.
pub fn end_reason(event: &AgentEvent) -> String {
    match event {
        AgentEvent::SessionEnded { reason, .. } => format!("session ended ({reason})"),
        _ => "session ended".to_owned(),
    }
}

/// How long after its last hook a session that awaits background work is not taken for idle
/// by the agent's own status (see [`Session::awaits_background`]).
const BACKGROUND_GRACE_SECS: i64 = 3;

/// True while an `idle` status is the moment between a background subagent's end and Claude
/// going on by itself: the next hook follows within a second. Later, the status is believed
/// (the user stopped the work, say).
fn held_for_background(s: &Session, hint: AgentState, now: DateTime<Utc>) -> bool {
    s.awaits_background
        && hint == AgentState::Idle
        && s.last_hook_at
            .is_some_and(|hook| now - hook < chrono::Duration::seconds(BACKGROUND_GRACE_SECS))
}

/// How far in the future an agent's status time may be and still be believed: the agent and
/// atm read the same clock, so only rounding separates them.
const FUTURE_TOLERANCE_SECS: i64 = 2;

/// A new record for a process discovery found: what the agent itself said it was doing sets
/// the state (no hook has yet).
pub fn session_from_discovery(key: SessionKey, found: &Discovered, now: DateTime<Utc>) -> Session {
    let id = found
        .session_id
        .clone()
        .unwrap_or_else(|| SessionId::pending(found.process.pid));
    let mut s = Session::new(key, id, Some(found.process), &found.adapter, now);
    if let Some(state) = found.state_hint {
        apply_hint(&mut s, state, now);
    }
    s.cwd.clone_from(&found.cwd);
    s.tmux_pane.clone_from(&found.tmux_pane);
    s.apply_usage(&found.usage);
    sanitize(&mut s);
    s
}

/// Refreshes a known process's record with what discovery found. The agent's own status sets
/// the state when [`hint_applies`] says so (no hook yet, or a status newer than the last hook);
/// absent facts keep their known values.
pub fn apply_discovery(s: &mut Session, found: &Discovered, now: DateTime<Utc>) {
    // A status dated in the future (a skewed or corrupt clock) would outrank every later
    // hook; it counts as undated instead.
    let hint_at = found
        .state_hint_at
        .filter(|at| *at <= now + chrono::Duration::seconds(FUTURE_TOLERANCE_SECS));
    if let Some(state) = found.state_hint
        && hint_applies(s.state, s.last_hook_at, state, hint_at)
        && !held_for_background(s, state, now)
    {
        let wait_before = s.attention.clone();
        apply_hint(s, state, now);
        // The agent's own status moved the session: a request it held was answered there.
        requests::settle(wait_before.as_ref(), s, false, now);
    }
    if found.cwd.is_some() {
        s.cwd.clone_from(&found.cwd);
    }
    if found.tmux_pane.is_some() {
        s.tmux_pane.clone_from(&found.tmux_pane);
    }
    s.apply_usage(&found.usage);
    sanitize(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Harness, ProcessIdentity, UsageUpdate};
    use AgentState as S;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn source() -> EventSource {
        EventSource::new(Harness::claude(), SessionId::new("s"), "test")
    }

    fn session(state: S) -> Session {
        let key = SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new("s"),
        };
        let mut s = Session::new(key, SessionId::new("s"), None, "test", at(0));
        apply_hint(&mut s, state, at(0));
        s
    }

    fn prompt(p: &str) -> AgentEvent {
        AgentEvent::PromptSubmitted {
            prompt: Some(p.into()),
        }
    }

    fn tool() -> AgentEvent {
        AgentEvent::ToolStarted {
            tool: "Bash".into(),
            detail: None,
        }
    }

    #[test]
    fn a_turn_starts_on_work_after_idle_or_start_only() {
        for from in S::ALL {
            for to in S::ALL {
                let want = to == S::Working && matches!(from, S::Idle | S::Starting);
                assert_eq!(turn_starts(from, to), want, "{from} -> {to}");
            }
        }
        // Through an event: the turn start moves on a new turn, not on an answered wait.
        let table = [
            (S::Idle, prompt("x"), Some(at(5))),
            (S::Starting, tool(), Some(at(5))),
            (S::Working, tool(), None),
            (
                S::NeedsPermission,
                AgentEvent::ToolFinished { tool: None },
                None,
            ),
            (S::Idle, AgentEvent::TurnFinished, None),
        ];
        for (state, event, want) in table {
            let mut s = session(state);
            apply_event(&mut s, &source(), &event, at(5));
            assert_eq!(s.turn_started_at, want, "{state} + {event:?}");
            assert_eq!(
                s.state_since,
                if s.state == state { at(0) } else { at(5) },
                "{state} + {event:?}"
            );
        }
    }

    #[test]
    fn the_first_non_empty_prompt_labels_the_session() {
        let table: [(Option<&str>, Option<&str>, Option<&str>); 5] = [
            (None, Some("fix\nthe  bug"), Some("fix the bug")),
            (None, Some("   \n"), None),
            (None, None, None),
            (Some("first"), Some("second"), Some("first")),
            (Some("first"), None, Some("first")),
        ];
        for (current, prompt, want) in table {
            assert_eq!(
                first_prompt_after(current, prompt).as_deref(),
                want,
                "{current:?} + {prompt:?}"
            );
        }
        let mut s = session(S::Idle);
        s.last_error = Some("rate_limit".into());
        apply_event(&mut s, &source(), &prompt(&"ü".repeat(500)), at(1));
        assert_eq!(
            s.first_prompt.as_ref().map(|p| p.chars().count()),
            Some(limits::FIRST_PROMPT)
        );
        assert_eq!(s.last_error, None, "a prompt clears the last error");
    }

    #[test]
    fn a_new_conversation_forgets_the_old_one() {
        for source_kind in [
            StartSource::Startup,
            StartSource::Resume,
            StartSource::Clear,
            StartSource::Compact,
            StartSource::Fork,
            StartSource::Other,
        ] {
            let mut s = session(S::Idle);
            s.first_prompt = Some("old".into());
            s.children = vec!["a1".into()];
            s.last_error = Some("overloaded".into());
            s.turn_started_at = Some(at(0));
            s.turn_id = Some("t-old".into());
            s.usage.cost_usd = 2.5;
            s.usage.context_tokens = 90_000;
            s.usage.context_used_percentage = 45.0;
            s.usage.output_tokens = 1_000;
            s.usage.context_window_size = 200_000;
            s.usage.rate_limits.insert(
                "five_hour".into(),
                crate::model::RateLimit {
                    used_percentage: 12.0,
                    resets_at: None,
                },
            );
            let event = AgentEvent::SessionStarted {
                source: source_kind,
                model: Some("opus".into()),
            };
            apply_event(&mut s, &source(), &event, at(1));
            let fresh = starts_new_conversation(source_kind);
            assert_eq!(
                fresh,
                matches!(
                    source_kind,
                    StartSource::Clear | StartSource::Resume | StartSource::Fork
                )
            );
            assert_eq!(s.first_prompt.is_none(), fresh, "{source_kind:?}");
            assert_eq!(s.children.is_empty(), fresh, "{source_kind:?}");
            assert_eq!(s.last_error.is_none(), fresh, "{source_kind:?}");
            assert_eq!(s.turn_started_at.is_none(), fresh, "{source_kind:?}");
            assert_eq!(s.turn_id.is_none(), fresh, "{source_kind:?}");
            assert_eq!(s.usage.cost_usd == 0.0, fresh, "{source_kind:?}");
            assert_eq!(s.usage.context_tokens == 0, fresh, "{source_kind:?}");
            assert_eq!(s.usage.context_used_percentage == 0.0, fresh);
            assert_eq!(s.usage.output_tokens == 0, fresh, "{source_kind:?}");
            // The model's window and the account's limits are not the conversation's.
            assert_eq!(s.usage.context_window_size, 200_000);
            assert_eq!(s.usage.rate_limits.len(), 1);
            assert_eq!(s.model_id.as_deref(), Some("opus"));
        }
    }

    #[test]
    fn children_are_unique_bounded_and_leave_when_stopped() {
        let started = |id: &str| AgentEvent::SubagentStarted {
            agent_id: id.into(),
        };
        let mut s = session(S::Working);
        apply_event(&mut s, &source(), &started("a1"), at(1));
        apply_event(&mut s, &source(), &started("a1"), at(1));
        assert_eq!(s.children, vec!["a1".to_owned()]);
        for i in 0..limits::CHILDREN + 5 {
            apply_event(&mut s, &source(), &started(&format!("x{i}")), at(1));
        }
        assert_eq!(s.children.len(), limits::CHILDREN);
        let stopped = AgentEvent::SubagentStopped {
            agent_id: "a1".into(),
        };
        apply_event(&mut s, &source(), &stopped, at(2));
        assert!(!s.children.contains(&"a1".to_owned()));
        assert_eq!(s.state, S::Working);
    }

    #[test]
    fn usage_is_data_not_activity() {
        let mut s = session(S::Idle);
        let update = AgentEvent::UsageUpdated(Box::new(UsageUpdate {
            cost_usd: Some(1.5),
            ..UsageUpdate::default()
        }));
        apply_event(&mut s, &source(), &update, at(9));
        assert_eq!(s.usage.cost_usd, 1.5);
        assert_eq!(s.last_activity, at(0));
        assert_eq!(s.last_hook_at, None);
        apply_event(&mut s, &source(), &AgentEvent::TurnFinished, at(9));
        assert_eq!(s.last_activity, at(9));
        assert!(s.last_hook_at.is_some());
        // Time never goes back.
        apply_event(&mut s, &source(), &AgentEvent::TurnFinished, at(3));
        assert_eq!(s.last_activity, at(9));
    }

    #[test]
    fn stamps_a_wrong_clock_put_in_the_future_come_back_with_the_next_event() {
        let year = 365 * 24 * 3600;
        let mut s = session(S::Idle);
        s.last_activity = at(year);
        s.state_since = at(year);
        s.last_hook_at = Some(at(year));
        s.turn_started_at = Some(at(year));
        apply_event(&mut s, &source(), &prompt("again"), at(10));
        assert_eq!(s.last_activity, at(10));
        assert_eq!(s.state_since, at(10));
        assert_eq!(s.last_hook_at, Some(at(10)));
        assert_eq!(s.turn_started_at, Some(at(10)));
        // Within the tolerance, the order of events decides, not the clock.
        s.last_activity = at(40);
        apply_event(&mut s, &source(), &AgentEvent::TurnFinished, at(20));
        assert_eq!(s.last_activity, at(40));
    }

    #[test]
    fn facts_from_the_source_and_cwd_changes() {
        let mut s = session(S::Working);
        s.git.branch = Some("main".into());
        let mut src = source();
        src.cwd = Some("/from/source".into());
        src.tmux_pane = Some("%3".into());
        src.process = Some(ProcessIdentity {
            pid: 7,
            start_time: 1,
        });
        let moved = AgentEvent::CwdChanged {
            cwd: "/moved".into(),
        };
        apply_event(&mut s, &src, &moved, at(1));
        assert_eq!(s.cwd.as_deref(), Some("/moved"), "the event's cwd wins");
        assert_eq!(s.git.branch, None, "git facts are for the old cwd");
        assert_eq!(s.tmux_pane.as_deref(), Some("%3"));
        assert_eq!(s.pid(), Some(7));
        apply_event(&mut s, &src, &tool(), at(2));
        assert_eq!(s.cwd.as_deref(), Some("/from/source"));
    }

    #[test]
    fn a_reminder_of_a_wait_already_shown_has_no_facts() {
        let mut s = session(S::Working);
        let ask = AgentEvent::PermissionRequested {
            tool: "Bash".into(),
            detail: Some("ls".into()),
            suggestions: Vec::new(),
        };
        apply_event(&mut s, &source(), &ask, at(1));
        s.last_error = Some("kept".into());
        let before = s.clone();
        apply_event(
            &mut s,
            &source(),
            &AgentEvent::reminder(prompt("echo")),
            at(2),
        );
        assert_eq!(s.last_error.as_deref(), Some("kept"));
        assert_eq!(s.first_prompt, None);
        assert_eq!(s.attention, before.attention);
        assert_eq!(s.activity, before.activity);
        assert_eq!(s.last_activity, at(2));
    }

    #[test]
    fn an_end_leaves_the_record_alone_and_creates_nothing() {
        let end = AgentEvent::SessionEnded {
            reason: "logout".into(),
            continues: false,
        };
        let mut s = session(S::Working);
        let before = s.clone();
        assert_eq!(apply_event(&mut s, &source(), &end, at(1)), Outcome::End);
        assert_eq!(s, before);
        assert_eq!(end_reason(&end), "session ended (logout)");
        let key = before.key.clone();
        assert_eq!(
            session_from_event(key.clone(), &source(), &end, at(1)),
            None
        );
        let created = session_from_event(key, &source(), &prompt("hi"), at(1));
        let created = created.unwrap_or_else(|| before.clone());
        assert_eq!(created.state, S::Working);
        assert_eq!(created.first_prompt.as_deref(), Some("hi"));
    }

    #[test]
    fn discovery_drives_the_state_until_a_hook_does_then_only_when_newer() {
        let process = ProcessIdentity {
            pid: 42,
            start_time: 9,
        };
        let found = |hint: Option<S>, hint_at: Option<DateTime<Utc>>| Discovered {
            harness: Harness::claude(),
            process,
            session_id: None,
            cwd: Some("/p".into()),
            tmux_pane: None,
            state_hint: hint,
            state_hint_at: hint_at,
            usage: UsageUpdate::default(),
            adapter: "proc-discovery".into(),
        };
        let key = SessionKey::Process {
            harness: Harness::claude(),
            pid: 42,
            start_time: 9,
        };
        let mut s = session_from_discovery(key, &found(Some(S::Working), None), at(0));
        assert_eq!(s.id, SessionId::pending(42));
        assert_eq!(s.state, S::Working);
        assert_eq!(s.activity.as_deref(), Some("Thinking"));
        apply_discovery(&mut s, &found(Some(S::NeedsInput), None), at(1));
        assert_eq!(s.state, S::NeedsInput);
        assert!(s.attention.is_some());
        apply_event(&mut s, &source(), &AgentEvent::TurnFinished, at(2));
        apply_discovery(&mut s, &found(Some(S::Working), None), at(3));
        assert_eq!(
            s.state,
            S::Idle,
            "a hook has spoken: an undated hint no longer applies"
        );
        apply_discovery(&mut s, &found(Some(S::Working), Some(at(1))), at(3));
        assert_eq!(s.state, S::Idle, "nor does one older than the hook");
        assert_eq!(s.cwd.as_deref(), Some("/p"));
        // A permission the hook raised, then approved: no hook says so, the agent's file does.
        let ask = AgentEvent::PermissionRequested {
            tool: "Bash".into(),
            detail: Some("cargo build".into()),
            suggestions: Vec::new(),
        };
        apply_event(&mut s, &source(), &ask, at(4));
        assert_eq!(s.state, S::NeedsPermission);
        apply_discovery(&mut s, &found(Some(S::NeedsPermission), Some(at(5))), at(5));
        assert_eq!(
            s.attention.as_ref().and_then(|a| a.detail.as_deref()),
            Some("cargo build"),
            "the same state from the file keeps the hook's richer attention"
        );
        apply_discovery(&mut s, &found(Some(S::Working), Some(at(6))), at(6));
        assert_eq!(s.state, S::Working);
        assert_eq!(s.attention, None);
        assert_eq!(
            s.activity.as_deref(),
            Some("Bash"),
            "the approved tool runs"
        );
        assert_eq!(s.state_since, at(6));
        // Esc: no hook, the file says idle.
        apply_discovery(&mut s, &found(Some(S::Idle), Some(at(7))), at(7));
        assert_eq!(s.state, S::Idle);
        assert_eq!(s.activity, None);
        // A status from the future is undated: it cannot outrank the hooks that follow.
        apply_event(&mut s, &source(), &prompt("next"), at(8));
        apply_discovery(&mut s, &found(Some(S::Idle), Some(at(3600))), at(9));
        assert_eq!(s.state, S::Working);
    }

    #[test]
    fn an_idle_status_right_after_background_work_ends_is_not_the_turns_end() {
        let idle_at = |secs| {
            let mut found = Discovered::new(
                Harness::claude(),
                ProcessIdentity {
                    pid: 42,
                    start_time: 9,
                },
                "proc-discovery",
            );
            found.state_hint = Some(S::Idle);
            found.state_hint_at = Some(at(secs));
            found
        };
        let mut s = session(S::Idle);
        apply_event(&mut s, &source(), &prompt("go"), at(1));
        let backgrounded = AgentEvent::TurnBackgrounded {
            awaited: true,
            work: "agent Explore".into(),
        };
        apply_event(&mut s, &source(), &backgrounded, at(2));
        assert_eq!(
            (s.state, s.activity.as_deref(), s.awaits_background),
            (S::Working, Some("Background: agent Explore"), true)
        );
        let mut sub = source();
        sub.subagent_id = Some("a1".into());
        apply_event(
            &mut s,
            &sub,
            &AgentEvent::SubagentStopped {
                agent_id: "a1".into(),
            },
            at(10),
        );
        // Claude says idle for a moment before it goes on by itself.
        apply_discovery(&mut s, &idle_at(11), at(11));
        assert_eq!(s.state, S::Working, "held");
        // It went on; that turn's end is the end.
        apply_event(
            &mut s,
            &source(),
            &AgentEvent::PromptSubmitted { prompt: None },
            at(11),
        );
        assert!(!s.awaits_background);
        apply_event(&mut s, &source(), &AgentEvent::TurnFinished, at(12));
        assert_eq!(s.state, S::Idle);

        // When it does not go on (the work was stopped), the status is believed after the grace.
        apply_event(&mut s, &source(), &prompt("again"), at(20));
        apply_event(&mut s, &source(), &backgrounded, at(21));
        apply_discovery(&mut s, &idle_at(22), at(22));
        assert_eq!(s.state, S::Working, "held");
        apply_discovery(&mut s, &idle_at(22), at(21 + BACKGROUND_GRACE_SECS));
        assert_eq!((s.state, s.awaits_background), (S::Idle, false));

        // A background shell ends the turn: nothing to hold.
        let shell = AgentEvent::TurnBackgrounded {
            awaited: false,
            work: "shell sleep 9".into(),
        };
        apply_event(&mut s, &source(), &prompt("more"), at(30));
        apply_event(&mut s, &source(), &shell, at(31));
        assert_eq!(
            (s.state, s.activity.as_deref(), s.awaits_background),
            (S::Idle, Some("Background: shell sleep 9"), false)
        );
    }

    #[test]
    fn the_session_shows_its_main_agents_current_turn() {
        let mut s = session(S::Idle);
        let turn = |id: &str| {
            let mut src = source();
            src.turn_id = Some(id.into());
            src
        };
        apply_event(&mut s, &turn("t1"), &prompt("go"), at(1));
        assert_eq!(s.turn_id.as_deref(), Some("t1"));
        // Events that name no turn keep it; a subagent's turn is its own.
        apply_event(
            &mut s,
            &source(),
            &AgentEvent::ToolFinished { tool: None },
            at(2),
        );
        let mut sub = turn("t-sub");
        sub.subagent_id = Some("a1".into());
        apply_event(
            &mut s,
            &sub,
            &AgentEvent::ToolFinished { tool: None },
            at(3),
        );
        assert_eq!(s.turn_id.as_deref(), Some("t1"));
        apply_event(&mut s, &turn("t2"), &prompt("next"), at(4));
        assert_eq!(s.turn_id.as_deref(), Some("t2"));
    }

    #[test]
    fn a_subagents_request_shows_what_the_session_waits_on() {
        let mut s = session(S::Idle);
        apply_event(&mut s, &source(), &prompt("go"), at(1));
        let mut sub = source();
        sub.subagent_id = Some("a1".into());
        let ask = AgentEvent::PermissionRequested {
            tool: "Bash".into(),
            detail: Some("rm -rf build".into()),
            suggestions: Vec::new(),
        };
        apply_event(&mut s, &sub, &ask, at(2));
        assert_eq!(s.state, S::NeedsPermission);
        assert_eq!(s.activity.as_deref(), Some("Permission"));
        // The subagent's own work after it was answered is its own again.
        apply_event(
            &mut s,
            &sub,
            &AgentEvent::ToolFinished { tool: None },
            at(3),
        );
        assert_eq!(s.state, S::Working);
    }
}
