//! Requests as the state machine keeps them: opened with a wait, ended with it, and decided.
//!
//! Pure functions on a session record, like the rest of [`crate::state`]: the registry actor
//! calls them and delivers what they return (a verdict to the waiting hook). A request never
//! outlives its wait, because it lives in the wait's attention; what these functions add is its
//! id, its log entry when it ends, and the rules of a valid answer.

use chrono::{DateTime, Utc};

use crate::limits;
use crate::model::{AgentState, Attention, Session};
use crate::request::{
    DecideError, Decision, PendingRequest, RequestFate, RequestId, RequestRecord, Surface, Verdict,
};
use crate::text::truncate_chars;

/// Why a request ended when the session moved on without an answer through atm.
pub const ANSWERED_IN_TERMINAL: &str = "answered in the terminal";
/// Why a request ended when the agent asked something else before it was answered.
pub const SUPERSEDED: &str = "superseded by a newer request";

/// After an event applied: gives a new wait (an attention without a request) its request,
/// and logs the end of the request the session held `before` if the wait it belonged to is
/// gone. `asked`: the event asked the user (a new wait, even if one was already shown).
pub fn settle(before_wait: Option<&Attention>, s: &mut Session, asked: bool, at: DateTime<Utc>) {
    let before = before_wait.and_then(|a| a.request.as_ref());
    let before_tool = before_wait.and_then(|a| a.tool.as_deref());
    if let Some(a) = s.attention.as_mut()
        && a.request.is_none()
    {
        // The same wait said again (Claude's question arrives as `PreToolUse`, then as
        // `PermissionRequest`) is the same request.
        if let Some(old) = before
            && before_wait.is_some_and(|w| w.same_wait(a))
        {
            a.request = Some(old.clone());
            return;
        }
        // An id the OS cannot give leaves the wait shown but not answerable through atm.
        a.request = RequestId::generate().ok().map(|id| PendingRequest {
            id,
            asked_at: at,
            answerable: false,
        });
    }
    let Some(old) = before else {
        return;
    };
    let still = s
        .attention
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .is_some_and(|r| r.id == old.id);
    if !still {
        let reason = if asked {
            SUPERSEDED
        } else {
            ANSWERED_IN_TERMINAL
        };
        log(s, record(old, before_tool, at, withdrawn(reason)));
    }
}

fn withdrawn(reason: &str) -> RequestFate {
    RequestFate::Withdrawn {
        reason: reason.to_owned(),
    }
}

fn record(
    r: &PendingRequest,
    tool: Option<&str>,
    at: DateTime<Utc>,
    fate: RequestFate,
) -> RequestRecord {
    RequestRecord {
        id: r.id.clone(),
        tool: tool.map(str::to_owned),
        asked_at: r.asked_at,
        ended_at: at,
        fate,
    }
}

/// Appends to the session's request log, keeping the newest [`limits::REQUEST_LOG`].
fn log(s: &mut Session, r: RequestRecord) {
    s.request_log.push(r);
    let over = s.request_log.len().saturating_sub(limits::REQUEST_LOG);
    s.request_log.drain(..over);
}

/// The session's open request, if it is `id`.
pub fn pending<'a>(s: &'a Session, id: &RequestId) -> Option<&'a PendingRequest> {
    s.attention
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .filter(|r| r.id == *id)
}

/// Marks the open request `id` answerable or not. True when that changed something.
pub fn set_answerable(s: &mut Session, id: &RequestId, answerable: bool) -> bool {
    match s
        .attention
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .filter(|r| r.id == *id)
    {
        Some(r) if r.answerable != answerable => {
            r.answerable = answerable;
            true
        }
        _ => false,
    }
}

/// Why `id` cannot be decided in `s` any more, judged from the log (`None`: it never was one
/// of this session's requests).
pub fn ended(s: &Session, id: &RequestId) -> Option<DecideError> {
    let r = s.request_log.iter().rev().find(|r| r.id == *id)?;
    Some(match &r.fate {
        RequestFate::Answered { surface, .. } => {
            DecideError::AlreadyAnswered(format!("{id} (from {})", surface.name))
        }
        RequestFate::Withdrawn { reason } => DecideError::Ended {
            id: id.to_string(),
            reason: reason.clone(),
        },
    })
}

/// The longest answer or deny message passed on to an agent, in characters.
pub const MAX_ANSWER_CHARS: usize = 2000;

/// Decides the open request `id` of `s`: checks that `decision` fits what was asked, moves the
/// session on as the agent will (allowed: working on the tool; denied: working, or idle when
/// the turn is interrupted), and logs the answer with its `surface`. Returns what the agent
/// is to be told.
pub fn decide(
    s: &mut Session,
    id: &RequestId,
    decision: &Decision,
    surface: Surface,
    at: DateTime<Utc>,
) -> Result<Verdict, DecideError> {
    let Some(attention) = s.attention.as_ref() else {
        return Err(ended(s, id).unwrap_or_else(|| DecideError::NotFound(id.to_string())));
    };
    let Some(request) = attention.request.as_ref().filter(|r| r.id == *id) else {
        return Err(ended(s, id).unwrap_or_else(|| DecideError::NotFound(id.to_string())));
    };
    if !request.answerable {
        return Err(DecideError::NotAnswerable(id.to_string()));
    }
    let verdict = verdict_for(attention, decision)?;
    let request = request.clone();
    let tool = attention.tool.clone();
    let (state, activity) = match &verdict {
        Verdict::Allow { .. } => (
            AgentState::Working,
            Some(tool.clone().unwrap_or_else(|| "Thinking".to_owned())),
        ),
        Verdict::Deny {
            interrupt: false, ..
        } => (AgentState::Working, Some("Thinking".to_owned())),
        Verdict::Deny {
            interrupt: true, ..
        } => (AgentState::Idle, None),
    };
    if s.state != state {
        s.state_since = at;
    }
    s.state = state;
    s.attention = None;
    s.activity = activity;
    if at > s.last_activity {
        s.last_activity = at;
    }
    let fate = RequestFate::Answered {
        decision: decision.clone(),
        surface,
    };
    log(s, record(&request, tool.as_deref(), at, fate));
    Ok(verdict)
}

/// What the agent is told for `decision` on the wait `a`, or why the decision does not fit.
fn verdict_for(a: &Attention, decision: &Decision) -> Result<Verdict, DecideError> {
    let invalid = |m: &str| Err(DecideError::Invalid(m.to_owned()));
    match decision {
        Decision::Allow { .. } if !a.questions.is_empty() => {
            invalid("this request asks questions: answer them (`atmctl answer ID ANSWER...`)")
        }
        Decision::Allow { always: false, .. } => Ok(Verdict::Allow {
            updated_permissions: Vec::new(),
            answers: Vec::new(),
        }),
        Decision::Allow { always: true, rule } => {
            let n = rule.unwrap_or(0);
            match a.suggestions.get(n) {
                Some(s) => Ok(Verdict::Allow {
                    updated_permissions: vec![s.rule.clone()],
                    answers: Vec::new(),
                }),
                None if a.suggestions.is_empty() => {
                    invalid("the agent offers no rule to always allow here: allow it once")
                }
                None => Err(DecideError::Invalid(format!(
                    "rule {n} is not one of the {} the agent offers (0-based)",
                    a.suggestions.len()
                ))),
            }
        }
        Decision::Deny { message, interrupt } => Ok(Verdict::Deny {
            message: message
                .as_deref()
                .map(|m| truncate_chars(m, MAX_ANSWER_CHARS)),
            interrupt: *interrupt,
        }),
        Decision::Answer { .. } if a.questions.is_empty() => {
            invalid("this request asks no questions: allow or deny it")
        }
        Decision::Answer { answers } => {
            if answers.len() != a.questions.len() {
                return Err(DecideError::Invalid(format!(
                    "{} answers for {} questions: give one per question, in order",
                    answers.len(),
                    a.questions.len()
                )));
            }
            if answers.iter().any(|x| x.trim().is_empty()) {
                return invalid("an answer is empty");
            }
            Ok(Verdict::Allow {
                updated_permissions: Vec::new(),
                answers: answers
                    .iter()
                    .map(|x| truncate_chars(x.trim(), MAX_ANSWER_CHARS))
                    .collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PermissionSuggestion;
    use crate::request::{Question, QuestionOption};

    fn waiting(questions: Vec<Question>, suggestions: usize) -> Session {
        let now = Utc::now();
        let mut s = crate::testing::claude_session("s", now);
        s.state = AgentState::NeedsPermission;
        s.attention = Some(Attention {
            reason: "permission".into(),
            tool: Some("Bash".into()),
            suggestions: (0..suggestions)
                .map(|i| PermissionSuggestion {
                    label: format!("rule {i}"),
                    rule: serde_json::json!({"n": i}),
                })
                .collect(),
            questions,
            ..Attention::default()
        });
        settle(None, &mut s, true, now);
        s
    }

    fn id_of(s: &Session) -> RequestId {
        s.attention.as_ref().unwrap().request.clone().unwrap().id
    }

    fn question() -> Question {
        Question {
            question: "Which?".into(),
            header: None,
            options: vec![QuestionOption {
                label: "A".into(),
                description: None,
            }],
            multi_select: false,
        }
    }

    fn surface() -> Surface {
        Surface::new("test", Some(1000))
    }

    #[test]
    fn a_wait_opens_a_request_that_is_not_answerable_until_something_waits() {
        let mut s = waiting(Vec::new(), 0);
        let id = id_of(&s);
        let allow = Decision::Allow {
            always: false,
            rule: None,
        };
        assert_eq!(
            decide(&mut s, &id, &allow, surface(), Utc::now()),
            Err(DecideError::NotAnswerable(id.to_string()))
        );
        assert!(set_answerable(&mut s, &id, true));
        assert!(!set_answerable(&mut s, &id, true));
        let v = decide(&mut s, &id, &allow, surface(), Utc::now()).unwrap();
        assert!(matches!(v, Verdict::Allow { .. }));
        assert_eq!(s.state, AgentState::Working);
        assert_eq!(s.activity.as_deref(), Some("Bash"));
        assert!(s.attention.is_none());
        assert!(matches!(
            s.request_log[0].fate,
            RequestFate::Answered { .. }
        ));
        // A second answer is refused, saying who answered.
        assert!(matches!(
            decide(&mut s, &id, &allow, surface(), Utc::now()),
            Err(DecideError::AlreadyAnswered(_))
        ));
    }

    #[test]
    fn always_echoes_the_chosen_rule_and_deny_can_interrupt() {
        let mut s = waiting(Vec::new(), 2);
        let id = id_of(&s);
        set_answerable(&mut s, &id, true);
        let bad = Decision::Allow {
            always: true,
            rule: Some(2),
        };
        assert!(matches!(
            decide(&mut s, &id, &bad, surface(), Utc::now()),
            Err(DecideError::Invalid(_))
        ));
        let always = Decision::Allow {
            always: true,
            rule: Some(1),
        };
        let v = decide(&mut s, &id, &always, surface(), Utc::now()).unwrap();
        assert_eq!(
            v,
            Verdict::Allow {
                updated_permissions: vec![serde_json::json!({"n": 1})],
                answers: Vec::new()
            }
        );

        let mut s = waiting(Vec::new(), 0);
        let id = id_of(&s);
        set_answerable(&mut s, &id, true);
        let none_offered = Decision::Allow {
            always: true,
            rule: None,
        };
        assert!(decide(&mut s, &id, &none_offered, surface(), Utc::now()).is_err());
        let deny = Decision::Deny {
            message: Some("x".repeat(5000)),
            interrupt: true,
        };
        let v = decide(&mut s, &id, &deny, surface(), Utc::now()).unwrap();
        let Verdict::Deny { message, interrupt } = v else {
            panic!("{v:?}")
        };
        assert!(interrupt);
        assert_eq!(message.unwrap().chars().count(), MAX_ANSWER_CHARS);
        assert_eq!(s.state, AgentState::Idle);
    }

    #[test]
    fn questions_take_one_answer_each_and_nothing_else() {
        let mut s = waiting(vec![question(), question()], 0);
        let id = id_of(&s);
        set_answerable(&mut s, &id, true);
        for bad in [
            Decision::Allow {
                always: false,
                rule: None,
            },
            Decision::Answer {
                answers: vec!["A".into()],
            },
            Decision::Answer {
                answers: vec!["A".into(), "  ".into()],
            },
        ] {
            assert!(
                matches!(
                    decide(&mut s, &id, &bad, surface(), Utc::now()),
                    Err(DecideError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        let v = decide(
            &mut s,
            &id,
            &Decision::Answer {
                answers: vec!["A".into(), " free text ".into()],
            },
            surface(),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(
            v,
            Verdict::Allow {
                updated_permissions: Vec::new(),
                answers: vec!["A".into(), "free text".into()]
            }
        );
        // A permission takes no answers.
        let mut p = waiting(Vec::new(), 0);
        let pid = id_of(&p);
        set_answerable(&mut p, &pid, true);
        let answer = Decision::Answer {
            answers: vec!["A".into()],
        };
        assert!(decide(&mut p, &pid, &answer, surface(), Utc::now()).is_err());
    }

    #[test]
    fn the_same_wait_said_again_keeps_its_request() {
        let mut s = waiting(Vec::new(), 0);
        let id = id_of(&s);
        let before = s.attention.clone();
        s.attention = before.clone().map(|a| Attention { request: None, ..a });
        settle(before.as_ref(), &mut s, true, Utc::now());
        assert_eq!(id_of(&s), id);
        assert!(s.request_log.is_empty());
    }

    #[test]
    fn a_wait_that_ends_without_atm_is_logged_withdrawn_and_the_log_is_bounded() {
        let mut s = waiting(Vec::new(), 0);
        for i in 0..(limits::REQUEST_LOG + 3) {
            let before = s.attention.clone();
            // A newer request replaces the wait every other time; otherwise the session goes on.
            let asked = i % 2 == 0;
            s.attention = asked.then(|| Attention {
                reason: "permission".into(),
                tool: Some(format!("Other{i}")),
                ..Attention::default()
            });
            settle(before.as_ref(), &mut s, asked, Utc::now());
            let last = s.request_log.last().unwrap().clone();
            let want = if asked {
                SUPERSEDED
            } else {
                ANSWERED_IN_TERMINAL
            };
            assert_eq!(last.fate, withdrawn(want));
            if !asked {
                s = waiting(Vec::new(), 0);
                s.request_log = vec![last.clone(); limits::REQUEST_LOG];
            }
        }
        assert!(s.request_log.len() <= limits::REQUEST_LOG);
        // Deciding an ended request says how it ended.
        let gone = s.request_log.last().unwrap().id.clone();
        let allow = Decision::Allow {
            always: false,
            rule: None,
        };
        assert!(matches!(
            decide(&mut s, &gone, &allow, surface(), Utc::now()),
            Err(DecideError::Ended { .. })
        ));
        let unknown = RequestId::generate().unwrap();
        assert_eq!(
            decide(&mut s, &unknown, &allow, surface(), Utc::now()),
            Err(DecideError::NotFound(unknown.to_string()))
        );
    }
}
