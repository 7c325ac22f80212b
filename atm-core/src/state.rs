//! The state machine, as a pure function: (current state, event) -> outcome.
//!
//! Kept free of I/O and of the registry so that every (state, event) pair is covered by one
//! table-driven test, and so adapters for new agents can reason about it without running anything.

use crate::event::{AgentEvent, StartSource};
use crate::model::{AgentState, Attention};

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

fn attention(state: AgentState, reason: &str, tool: Option<&str>, detail: Option<&str>) -> Outcome {
    Outcome::Enter {
        state,
        attention: Some(Attention {
            reason: reason.to_owned(),
            tool: tool.map(str::to_owned),
            detail: detail.map(str::to_owned),
        }),
    }
}

/// The transition function. `from_subagent` is true when the event was raised inside a
/// subagent: such events never change the parent's state, except a permission or input request
/// (the user must answer it whoever asked).
pub fn transition(current: AgentState, event: &AgentEvent, from_subagent: bool) -> Outcome {
    use AgentEvent as E;
    use AgentState as S;
    let is_attention_request = matches!(
        event,
        E::PermissionRequested { .. } | E::InputRequested { .. }
    );
    if from_subagent && !is_attention_request {
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
        E::PermissionRequested { tool, detail } => attention(
            S::NeedsPermission,
            "permission",
            Some(tool),
            detail.as_deref(),
        ),
        E::InputRequested {
            reason,
            tool,
            detail,
        } => attention(S::NeedsInput, reason, tool.as_deref(), detail.as_deref()),
        E::TurnFinished | E::TurnFailed { .. } => enter(S::Idle),
        E::Compacting => enter(S::Working),
        E::CompactFinished => Outcome::Stay,
        E::SubagentStarted { .. } | E::SubagentStopped { .. } => Outcome::Stay,
        // Usage is data, not activity: a status line never changes state.
        E::UsageUpdated(_) => Outcome::Stay,
        E::CwdChanged { .. } => Outcome::Stay,
        E::Notification { .. } => Outcome::Stay,
        E::Activity { .. } => Outcome::Stay,
    }
}

/// The activity detail an event leaves behind (`None` = unchanged).
pub fn activity_after(event: &AgentEvent) -> Option<Option<String>> {
    use AgentEvent as E;
    match event {
        E::SessionStarted { .. } => Some(None),
        E::PromptSubmitted { .. } | E::ToolFinished { .. } | E::CompactFinished => {
            Some(Some("Thinking".to_owned()))
        }
        E::ToolStarted { tool, .. } => Some(Some(tool.clone())),
        E::PermissionRequested { .. } => Some(Some("Permission".to_owned())),
        E::InputRequested { .. } => Some(Some("Input".to_owned())),
        E::TurnFinished => Some(None),
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
            E::ToolFinished {
                tool: None,
                failed: false,
            },
            E::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("ls".into()),
            },
            E::InputRequested {
                reason: "input".into(),
                tool: None,
                detail: None,
            },
            E::TurnFinished,
            E::TurnFailed {
                error: "rate_limit".into(),
            },
            E::Compacting,
            E::CompactFinished,
            E::SubagentStarted {
                agent_id: "a".into(),
                agent_type: None,
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
        ]
    }

    /// The expected state after each event, whatever the state before it; `None` = unchanged,
    /// `Some(None)` = ended. Startup from `starting` stays, which the test handles separately.
    fn expected(event: &AgentEvent) -> Option<Option<S>> {
        use AgentEvent as E;
        match event {
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
            _ => None,
        }
    }

    #[test]
    fn every_event_in_every_state() {
        let events = every_event();
        let mut checked = 0;
        for state in S::ALL {
            for event in &events {
                let got = transition(state, event, false);
                let got_state = match &got {
                    Outcome::Stay => state,
                    Outcome::Enter { state, .. } => *state,
                    Outcome::End => {
                        assert_eq!(expected(event), Some(None), "{state} + {event:?}");
                        checked += 1;
                        continue;
                    }
                };
                let want = match expected(event) {
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
                let got = transition(state, &event, true);
                match event {
                    AgentEvent::PermissionRequested { .. } | AgentEvent::InputRequested { .. } => {
                        assert!(matches!(got, Outcome::Enter { .. }))
                    }
                    _ => assert_eq!(got, Outcome::Stay, "{state} + {event:?}"),
                }
            }
        }
    }

    #[test]
    fn permission_attention_carries_tool_and_detail() {
        let got = transition(
            S::Working,
            &AgentEvent::PermissionRequested {
                tool: "Bash".into(),
                detail: Some("cargo test".into()),
            },
            false,
        );
        assert_eq!(
            got,
            Outcome::Enter {
                state: S::NeedsPermission,
                attention: Some(Attention {
                    reason: "permission".into(),
                    tool: Some("Bash".into()),
                    detail: Some("cargo test".into())
                })
            }
        );
    }
}
