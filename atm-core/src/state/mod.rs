//! The state machine, as a pure function: (current state and attention, event, who raised it)
//! -> outcome.
//!
//! Kept free of I/O and of the registry so that every (state, event) pair is covered by one
//! table-driven test, and so adapters for new agents can reason about it without running anything.
//! Beside the transition, [`apply`] applies its outcome and an event's facts to a session record
//! (turn timing, first prompt, children, discovery) and [`identity`] decides re-keying; the
//! registry actor only stores and emits what these return.
//! Every rule that depends on what a session is doing lives here, never in an adapter: an adapter
//! says what an event *is* (a [`AgentEvent::Reminder`] of a wait that may already be shown, an
//! event raised inside a subagent) and this module decides what it does.

pub mod apply;
pub mod hint;
pub mod identity;
pub mod mirror;
pub mod requests;

use crate::event::{AgentEvent, StartSource};
use crate::limits;
use crate::model::{AgentState, Attention, PermissionSuggestion};
use crate::redact::safe_preview;
use crate::request::{Question, QuestionOption};

/// What an event does to a session's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// State and attention unchanged.
    Stay,
    /// Move to (or stay in) `state` with this attention (None clears it).
    Enter {
        state: AgentState,
        attention: Option<Attention>,
    },
    /// The session is over: remove it.
    End,
}

fn enter(state: AgentState) -> Outcome {
    Outcome::Enter {
        state,
        attention: None,
    }
}

/// What a wait asks: the reason, the tool and its preview, and what can be answered.
struct Ask<'a> {
    reason: &'a str,
    tool: Option<&'a str>,
    detail: Option<&'a str>,
    suggestions: &'a [PermissionSuggestion],
    questions: &'a [Question],
}

/// A wait on the user. The request it opens is given its id by [`requests::settle`], after
/// the transition (which is pure and draws no random numbers). What it shows people (the
/// preview, the questions) is made safe here, where it enters: controls and bidi characters
/// neutralised, recognisable secrets masked ([`crate::redact`]).
fn ask(state: AgentState, what: Ask<'_>, asked_by: Option<&str>) -> Outcome {
    Outcome::Enter {
        state,
        attention: Some(Attention {
            reason: what.reason.to_owned(),
            tool: what.tool.map(str::to_owned),
            detail: what.detail.map(|d| safe_preview(d, limits::PREVIEW)),
            subagent_id: asked_by.map(str::to_owned),
            suggestions: what.suggestions.to_vec(),
            questions: what.questions.iter().map(safe_question).collect(),
            request: None,
        }),
    }
}

/// A question as it may be shown: every text made safe and cut to its limit.
fn safe_question(q: &Question) -> Question {
    Question {
        question: safe_preview(&q.question, limits::PREVIEW),
        header: q.header.as_deref().map(|h| safe_preview(h, limits::NAME)),
        options: q
            .options
            .iter()
            .take(limits::QUESTION_OPTIONS)
            .map(|o| QuestionOption {
                label: safe_preview(&o.label, limits::NAME),
                description: o
                    .description
                    .as_deref()
                    .map(|d| safe_preview(d, limits::PREVIEW)),
            })
            .collect(),
        multi_select: q.multi_select,
    }
}

/// Whom an event speaks for, as far as the session's own state and activity are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker<'a> {
    /// The session itself.
    Parent,
    /// A subagent of the session: its events leave the parent's state and activity alone,
    /// except a permission or input request (the user must answer it whoever asked).
    Subagent(&'a str),
    /// The subagent whose request the session waits on. That it acts again means the request
    /// was answered (a granted permission lets its tool run and finish), so its event moves
    /// the parent as the parent's own would; without this the parent would keep waiting until
    /// its own next event.
    Asker(&'a str),
}

impl<'a> Speaker<'a> {
    /// True when the event moves the session's state and activity.
    pub fn moves_parent(self) -> bool {
        !matches!(self, Self::Subagent(_))
    }

    /// The subagent that raised the event, if one did.
    pub fn subagent(self) -> Option<&'a str> {
        match self {
            Self::Parent => None,
            Self::Subagent(id) | Self::Asker(id) => Some(id),
        }
    }
}

/// Who an event raised by `subagent` (`None`: by the session itself) speaks for, in a session
/// in `state` with `attention`.
pub fn speaker<'a>(
    state: AgentState,
    attention: Option<&Attention>,
    subagent: Option<&'a str>,
) -> Speaker<'a> {
    match subagent {
        None => Speaker::Parent,
        Some(id) if state.needs_attention() && asked_by(attention) == Some(id) => {
            Speaker::Asker(id)
        }
        Some(id) => Speaker::Subagent(id),
    }
}

fn asked_by(attention: Option<&Attention>) -> Option<&str> {
    attention.and_then(|a| a.subagent_id.as_deref())
}

/// What an event amounts to in `state`: a reminder of a wait the session already shows
/// amounts to nothing (the richer attention stays); any other reminder, to what it reminds of.
pub fn resolve(state: AgentState, event: &AgentEvent) -> Option<&AgentEvent> {
    match event {
        AgentEvent::Reminder { of } if !state.needs_attention() => resolve(state, of),
        AgentEvent::Reminder { .. } => None,
        other => Some(other),
    }
}

/// The transition function: what `event`, raised by `subagent` (`None`: by the session
/// itself), does to a session in state `current` with `attention`. See [`Speaker`] for how subagent
/// events count and [`AgentEvent::Reminder`] for reminders.
pub fn transition(
    current: AgentState,
    attention: Option<&Attention>,
    event: &AgentEvent,
    subagent: Option<&str>,
) -> Outcome {
    use AgentEvent as E;
    use AgentState as S;
    let Some(event) = resolve(current, event) else {
        return Outcome::Stay;
    };
    let speaker = speaker(current, attention, subagent);
    match event {
        // A request is the user's to answer, whoever asked; who asked is remembered.
        E::PermissionRequested {
            tool,
            detail,
            suggestions,
        } => {
            let what = Ask {
                reason: "permission",
                tool: Some(tool),
                detail: detail.as_deref(),
                suggestions,
                questions: &[],
            };
            return ask(S::NeedsPermission, what, speaker.subagent());
        }
        E::QuestionsAsked {
            tool,
            detail,
            questions,
        } => {
            let what = Ask {
                reason: "question",
                tool: Some(tool),
                detail: detail.as_deref(),
                suggestions: &[],
                questions,
            };
            return ask(S::NeedsInput, what, speaker.subagent());
        }
        E::InputRequested {
            reason,
            tool,
            detail,
        } => {
            let what = Ask {
                reason,
                tool: tool.as_deref(),
                detail: detail.as_deref(),
                suggestions: &[],
                questions: &[],
            };
            return ask(S::NeedsInput, what, speaker.subagent());
        }
        // The subagent that asked is gone, and its request with it; the parent's turn goes on.
        E::SubagentStopped { agent_id }
            if current.needs_attention() && asked_by(attention) == Some(agent_id) =>
        {
            return enter(S::Working);
        }
        _ => {}
    }
    if !speaker.moves_parent() {
        return Outcome::Stay;
    }
    match event {
        E::SessionStarted { source, .. } => match source {
            // A compaction restarts the transcript, not the turn.
            StartSource::Compact => Outcome::Stay,
            // A new conversation in the same process waits for its first prompt.
            StartSource::Clear | StartSource::Resume | StartSource::Fork => enter(S::Starting),
            StartSource::Startup | StartSource::Other => match current {
                S::Starting => Outcome::Stay,
                _ => enter(S::Starting),
            },
        },
        E::SessionEnded { continues, .. } => {
            if *continues {
                Outcome::Stay
            } else {
                Outcome::End
            }
        }
        E::PromptSubmitted { .. } => enter(S::Working),
        E::ToolStarted { .. } => enter(S::Working),
        E::ToolFinished { .. } => enter(S::Working),
        E::TurnFinished | E::TurnFailed { .. } => enter(S::Idle),
        E::TurnBackgrounded { awaited: true, .. } => enter(S::Working),
        E::TurnBackgrounded { awaited: false, .. } => enter(S::Idle),
        E::Compacting => enter(S::Working),
        E::CompactFinished => Outcome::Stay,
        E::SubagentStarted { .. } | E::SubagentStopped { .. } => Outcome::Stay,
        // Usage is data, not activity: a status line never changes state.
        E::UsageUpdated(_) => Outcome::Stay,
        E::CwdChanged { .. } => Outcome::Stay,
        E::Notification { .. } => Outcome::Stay,
        E::Activity { .. } => Outcome::Stay,
        // Handled above; listed so a new event kind must be placed here.
        E::PermissionRequested { .. }
        | E::QuestionsAsked { .. }
        | E::InputRequested { .. }
        | E::Reminder { .. } => Outcome::Stay,
    }
}

/// The activity detail an event leaves behind (`None` = unchanged). `event` is what the event
/// amounts to ([`resolve`]); only events that move the parent ([`Speaker::moves_parent`]) set
/// the activity.
pub fn activity_after(event: &AgentEvent) -> Option<Option<String>> {
    use AgentEvent as E;
    match event {
        E::SessionStarted { .. } => Some(None),
        E::PromptSubmitted { .. } | E::ToolFinished { .. } | E::CompactFinished => {
            Some(Some("Thinking".to_owned()))
        }
        E::ToolStarted { tool, .. } => Some(Some(tool.clone())),
        E::PermissionRequested { .. } => Some(Some("Permission".to_owned())),
        E::InputRequested { .. } | E::QuestionsAsked { .. } => Some(Some("Input".to_owned())),
        E::TurnFinished => Some(None),
        E::TurnBackgrounded { work, .. } => Some(Some(format!("Background: {work}"))),
        E::TurnFailed { error } => Some(Some(format!("Error: {error}"))),
        E::Compacting => Some(Some("Compacting".to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AgentState as S;

    fn every_event() -> Vec<AgentEvent> {
        use AgentEvent as E;
        vec![
            E::SessionStarted {
                source: StartSource::Startup,
                model: None,
            },
            E::SessionStarted {
                source: StartSource::Clear,
                model: None,
            },
            E::SessionStarted {
                source: StartSource::Compact,
                model: None,
            },
            E::SessionEnded {
                reason: "logout".into(),
                continues: false,
            },
            E::SessionEnded {
                reason: "clear".into(),
                continues: true,
            },
            E::PromptSubmitted { prompt: None },
            E::ToolStarted {
                tool: "Bash".into(),
                detail: None,
            },
            E::ToolFinished { tool: None },
            E::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("ls".into()),
                suggestions: Vec::new(),
            },
            E::InputRequested {
                reason: "input".into(),
                tool: None,
                detail: None,
            },
            E::TurnFinished,
            E::TurnBackgrounded {
                awaited: true,
                work: "agent Explore".into(),
            },
            E::TurnBackgrounded {
                awaited: false,
                work: "shell npm run dev".into(),
            },
            E::TurnFailed {
                error: "rate_limit".into(),
            },
            E::Compacting,
            E::CompactFinished,
            E::SubagentStarted {
                agent_id: "a".into(),
            },
            E::SubagentStopped {
                agent_id: "a".into(),
            },
            E::UsageUpdated(Box::default()),
            E::CwdChanged { cwd: "/x".into() },
            E::Notification {
                kind: "auth_success".into(),
                message: None,
            },
            E::Activity {
                what: "TaskCreated".into(),
            },
            E::reminder(E::PermissionRequested {
                tool: "unknown".into(),
                detail: None,
                suggestions: Vec::new(),
            }),
            E::reminder(E::InputRequested {
                reason: "input".into(),
                tool: None,
                detail: None,
            }),
            E::reminder(E::TurnFinished),
            E::reminder(E::PromptSubmitted { prompt: None }),
            E::reminder(E::ToolStarted {
                tool: "bash".into(),
                detail: None,
            }),
            E::reminder(E::reminder(E::TurnFinished)),
        ]
    }

    /// The attention a session in `state` has when the session itself asked.
    fn own_attention(state: S) -> Option<Attention> {
        state.needs_attention().then(|| Attention {
            reason: "permission".into(),
            ..Attention::default()
        })
    }

    fn permission(tool: &str, detail: Option<&str>) -> AgentEvent {
        AgentEvent::PermissionRequested {
            tool: tool.into(),
            detail: detail.map(str::to_owned),
            suggestions: Vec::new(),
        }
    }

    /// `needs_permission` with the tool and detail a permission request carries, no subagent.
    fn permission_wait(tool: &str, detail: Option<&str>) -> Outcome {
        Outcome::Enter {
            state: S::NeedsPermission,
            attention: Some(crate::testing::permission_attention(tool, detail)),
        }
    }

    /// The attention a session in `state` has when subagent `id` asked.
    fn asked_by(state: S, id: &str) -> Option<Attention> {
        own_attention(state).map(|a| Attention {
            subagent_id: Some(id.into()),
            ..a
        })
    }

    /// The expected state after each event from the state before it; `None` = unchanged,
    /// `Some(None)` = ended. Startup from `starting` stays, which the test handles separately.
    fn expected(state: S, event: &AgentEvent) -> Option<Option<S>> {
        use AgentEvent as E;
        match event {
            E::Reminder { .. } if state.needs_attention() => None,
            E::Reminder { of } => expected(state, of),
            E::SessionStarted { source, .. } => match source {
                StartSource::Compact => None,
                _ => Some(Some(S::Starting)),
            },
            E::SessionEnded { continues, .. } => (!continues).then_some(None),
            E::PromptSubmitted { .. }
            | E::ToolStarted { .. }
            | E::ToolFinished { .. }
            | E::Compacting => Some(Some(S::Working)),
            E::PermissionRequested { .. } => Some(Some(S::NeedsPermission)),
            E::InputRequested { .. } => Some(Some(S::NeedsInput)),
            E::TurnFinished | E::TurnFailed { .. } => Some(Some(S::Idle)),
            E::TurnBackgrounded { awaited, .. } => {
                Some(Some(if *awaited { S::Working } else { S::Idle }))
            }
            _ => None,
        }
    }

    #[test]
    fn what_a_wait_shows_is_made_safe_where_it_enters() {
        let token = format!("ghp_{}", "a1B2".repeat(9));
        let event = AgentEvent::PermissionRequested {
            tool: "Bash".into(),
            detail: Some(format!("curl -H 'x: {token}'\u{202e} \x1b[2J ok")),
            suggestions: Vec::new(),
        };
        let Outcome::Enter {
            attention: Some(a), ..
        } = transition(S::Working, None, &event, None)
        else {
            panic!("no wait")
        };
        let detail = a.detail.unwrap();
        assert!(!detail.contains(&token), "{detail}");
        assert!(
            !detail.contains('\u{202e}') && !detail.contains('\x1b'),
            "{detail}"
        );
        assert!(detail.ends_with("ok"), "{detail}");
    }

    #[test]
    fn every_event_in_every_state() {
        let events = every_event();
        let mut checked = 0;
        for state in S::ALL {
            for event in &events {
                let got = transition(state, own_attention(state).as_ref(), event, None);
                let got_state = match &got {
                    Outcome::Stay => state,
                    Outcome::Enter { state, .. } => *state,
                    Outcome::End => {
                        assert_eq!(expected(state, event), Some(None), "{state} + {event:?}");
                        checked += 1;
                        continue;
                    }
                };
                let want = match expected(state, event) {
                    None => state,
                    Some(Some(s)) => s,
                    Some(None) => panic!("{state} + {event:?} should end"),
                };
                assert_eq!(got_state, want, "{state} + {event:?}");
                // Attention is present exactly in attention states entered by this event.
                if let Outcome::Enter { state, attention } = &got {
                    assert_eq!(attention.is_some(), state.needs_attention(), "{event:?}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, S::ALL.len() * events.len());
    }

    #[test]
    fn subagent_events_never_move_the_parent() {
        for state in S::ALL {
            for event in every_event() {
                let got = transition(state, own_attention(state).as_ref(), &event, Some("a1"));
                match resolve(state, &event) {
                    Some(
                        AgentEvent::PermissionRequested { .. } | AgentEvent::InputRequested { .. },
                    ) => assert!(matches!(got, Outcome::Enter { .. })),
                    _ => assert_eq!(got, Outcome::Stay, "{state} + {event:?}"),
                }
            }
        }
    }

    #[test]
    fn permission_attention_carries_tool_and_detail() {
        let asked = permission("Bash", Some("cargo test"));
        assert_eq!(
            transition(S::Working, None, &asked, None),
            permission_wait("Bash", Some("cargo test"))
        );
    }

    #[test]
    fn a_reminder_keeps_a_wait_already_shown_and_is_its_event_otherwise() {
        let events = every_event();
        let mut checked = 0;
        for state in S::ALL {
            for event in &events {
                let AgentEvent::Reminder { of } = event else {
                    continue;
                };
                let attention = own_attention(state);
                let got = transition(state, attention.as_ref(), event, None);
                if state.needs_attention() {
                    assert_eq!(got, Outcome::Stay, "{state} + {event:?}");
                    assert_eq!(resolve(state, event), None);
                    assert_eq!(activity_after_resolved(state, event), None);
                } else {
                    assert_eq!(
                        got,
                        transition(state, attention.as_ref(), of, None),
                        "{state} + {event:?}"
                    );
                    assert_ne!(resolve(state, event), None);
                }
                checked += 1;
            }
        }
        assert_eq!(checked, S::ALL.len() * 6);
        // A reminder that alone raises the wait carries what it knows.
        let reminder = AgentEvent::reminder(permission("Bash", None));
        assert_eq!(
            transition(S::Working, None, &reminder, None),
            permission_wait("Bash", None)
        );
    }

    /// What the registry sets the activity to: `activity_after` of the resolved event.
    fn activity_after_resolved(state: S, event: &AgentEvent) -> Option<Option<String>> {
        resolve(state, event).and_then(activity_after)
    }

    #[test]
    fn speakers() {
        let mine = asked_by(S::NeedsPermission, "a1");
        let own = own_attention(S::NeedsPermission);
        let table: [(S, Option<&Attention>, Option<&str>, Speaker); 7] = [
            (S::Working, None, None, Speaker::Parent),
            (S::NeedsPermission, mine.as_ref(), None, Speaker::Parent),
            (S::Working, None, Some("a1"), Speaker::Subagent("a1")),
            (
                S::NeedsPermission,
                own.as_ref(),
                Some("a1"),
                Speaker::Subagent("a1"),
            ),
            (
                S::NeedsPermission,
                mine.as_ref(),
                Some("a2"),
                Speaker::Subagent("a2"),
            ),
            (
                S::NeedsPermission,
                mine.as_ref(),
                Some("a1"),
                Speaker::Asker("a1"),
            ),
            // Only a wait has an asker: a stale attention outside one names nobody.
            (
                S::Working,
                mine.as_ref(),
                Some("a1"),
                Speaker::Subagent("a1"),
            ),
        ];
        for (state, attention, subagent, want) in table {
            assert_eq!(
                speaker(state, attention, subagent),
                want,
                "{state} {subagent:?}"
            );
            assert_eq!(want.moves_parent(), !matches!(want, Speaker::Subagent(_)));
            assert_eq!(want.subagent(), subagent);
        }
    }

    #[test]
    fn a_subagent_request_remembers_who_asked() {
        for state in S::ALL {
            for (subagent, want) in [(None, None), (Some("a1"), Some("a1".to_owned()))] {
                for event in [
                    AgentEvent::PermissionRequested {
                        tool: "WebFetch".into(),
                        detail: None,
                        suggestions: Vec::new(),
                    },
                    AgentEvent::InputRequested {
                        reason: "question".into(),
                        tool: None,
                        detail: None,
                    },
                ] {
                    let got = transition(state, own_attention(state).as_ref(), &event, subagent);
                    let Outcome::Enter {
                        attention: Some(a), ..
                    } = got
                    else {
                        panic!("{state} + {event:?} from {subagent:?}: {got:?}");
                    };
                    assert_eq!(a.subagent_id, want, "{state} + {event:?}");
                }
            }
        }
    }

    #[test]
    fn the_asking_subagents_next_event_is_the_parents_answer() {
        // In a wait raised by subagent a1: a1's events move the parent as the parent's own
        // would (a reminder still keeps the wait); another subagent's events do not; the
        // parent's own events behave as in every other wait.
        let events = every_event();
        let mut checked = 0;
        for state in [S::NeedsPermission, S::NeedsInput] {
            let attention = asked_by(state, "a1");
            for event in &events {
                let as_parent = transition(state, own_attention(state).as_ref(), event, None);
                let from_asker = transition(state, attention.as_ref(), event, Some("a1"));
                let from_other = transition(state, attention.as_ref(), event, Some("a2"));
                let from_parent = transition(state, attention.as_ref(), event, None);
                match event {
                    AgentEvent::PermissionRequested { .. } | AgentEvent::InputRequested { .. } => {
                        let who = |o: &Outcome| match o {
                            Outcome::Enter {
                                attention: Some(a), ..
                            } => a.subagent_id.clone(),
                            _ => panic!("{o:?}"),
                        };
                        assert_eq!(who(&from_asker).as_deref(), Some("a1"));
                        assert_eq!(who(&from_other).as_deref(), Some("a2"));
                        assert_eq!(who(&from_parent), None);
                        assert_eq!(from_parent, as_parent);
                    }
                    // a1 stopping ends the wait whoever reports it.
                    AgentEvent::SubagentStopped { agent_id } if agent_id == "a1" => {
                        assert_eq!(from_asker, enter(S::Working));
                        assert_eq!(from_parent, enter(S::Working));
                        assert_eq!(from_other, enter(S::Working));
                    }
                    _ => {
                        assert_eq!(from_asker, as_parent, "{state} + {event:?} from a1");
                        assert_eq!(from_other, Outcome::Stay, "{state} + {event:?} from a2");
                        assert_eq!(from_parent, as_parent, "{state} + {event:?}");
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * events.len());
        // The case the rule is for: a1's tool ran after the permission, so the parent works on.
        let finished = AgentEvent::ToolFinished {
            tool: Some("WebFetch".into()),
        };
        let attention = asked_by(S::NeedsPermission, "a1");
        assert_eq!(
            transition(
                S::NeedsPermission,
                attention.as_ref(),
                &finished,
                Some("a1")
            ),
            enter(S::Working)
        );
        let stopped = AgentEvent::SubagentStopped {
            agent_id: "a1".into(),
        };
        for subagent in [Some("a1"), Some("a2"), None] {
            assert_eq!(
                transition(S::NeedsPermission, attention.as_ref(), &stopped, subagent),
                enter(S::Working),
                "{subagent:?}"
            );
        }
        // Outside a wait, a1 is an ordinary subagent again.
        assert_eq!(
            transition(S::Working, None, &finished, Some("a1")),
            Outcome::Stay
        );
    }
}
