//! Pending requests: an agent waiting on its user, as an object that can be answered from
//! outside the terminal (a notification button, D-Bus, `atmctl approve`, any client).
//!
//! A request lives inside the session's [`Attention`](crate::model::Attention): it exists
//! exactly as long as the session waits, so no second table can drift from the state. The
//! state machine opens one whenever an event asks the user (a permission, a question), and the
//! request ends when the wait does: answered here ([`RequestFate::Answered`], with the surface
//! and user that answered), or withdrawn (answered in the terminal, superseded by a newer
//! request, the session gone). Each end is kept in the session's bounded request log, the
//! audit trail that the snapshot carries.
//!
//! A request is *answerable* only while something can deliver an answer to the agent (Claude's
//! `atm-hook` waiting on its `PermissionRequest`, opencode's HTTP API). For agents that decide
//! in their own dialog only (Gemini, Codex), it is shown and never answerable.
//!
//! The id is 128 random bits in hex: an answer names the id, so a client that has not seen the
//! request cannot guess one.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A request's id: 32 lowercase hex digits (128 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh id from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// An id as a client sent it: exactly 32 hex digits (either case), else `None`.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request a waiting session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub id: RequestId,
    pub asked_at: DateTime<Utc>,
    /// True while an answer can reach the agent (a hook waits for it).
    #[serde(default)]
    pub answerable: bool,
}

/// One question the agent asks (Claude's `AskUserQuestion`), with the choices it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<QuestionOption>,
    #[serde(default)]
    pub multi_select: bool,
}

/// One choice of a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionOption {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a person decided, as a surface sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Let the tool run. `always`: also add the rule the agent offered (`rule`: which of its
    /// suggestions, by position; the first when absent).
    Allow {
        #[serde(default)]
        always: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<usize>,
    },
    /// Refuse. `message` is told to the agent; `interrupt` also stops its turn.
    Deny {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default)]
        interrupt: bool,
    },
    /// Answer the questions, one answer per question in order (a choice's label or free text;
    /// several choices of a multi-select question joined by `, `).
    Answer { answers: Vec<String> },
}

impl Decision {
    /// A short word for logs and counters: `allow`, `allow_always`, `deny`, `answer`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Allow { always: false, .. } => "allow",
            Self::Allow { always: true, .. } => "allow_always",
            Self::Deny { .. } => "deny",
            Self::Answer { .. } => "answer",
        }
    }
}

/// What the agent is told: the decision made concrete for the request it answers (the rule
/// to add, the answers keyed as the agent asked). This is what reaches the waiting hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "behavior", rename_all = "snake_case")]
pub enum Verdict {
    Allow {
        /// The agent's own rules to remember (echoed from its suggestions).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        updated_permissions: Vec<serde_json::Value>,
        /// Answers to the questions, in their order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        answers: Vec<String>,
    },
    Deny {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default)]
        interrupt: bool,
    },
}

/// Where an answer came from: the surface (`atmctl`, `dbus`, `notify`, `socket`, ...) and the
/// user it checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Surface {
    pub fn new(name: impl Into<String>, uid: Option<u32>) -> Self {
        Self {
            name: name.into(),
            uid,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum RequestFate {
    /// Answered through atm.
    Answered {
        decision: Decision,
        surface: Surface,
    },
    /// The wait ended without an answer through atm: `reason` says how (answered in the
    /// terminal, superseded, the session ended, the agent stopped waiting).
    Withdrawn { reason: String },
}

/// One ended request, as the session's log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: RequestId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub asked_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    #[serde(flatten)]
    pub fate: RequestFate,
}

/// Why a decision was refused. The messages say what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error(
        "no pending request {0}: it was never asked, or it has ended (`atmctl pending` lists the open ones)"
    )]
    NotFound(String),
    #[error("request {0} was already answered")]
    AlreadyAnswered(String),
    #[error("request {id} has ended: {reason}")]
    Ended { id: String, reason: String },
    #[error(
        "request {0} cannot be answered from outside its terminal (its agent offers no way, or \
         nothing waits for the answer any more); answer it in the agent's own window"
    )]
    NotAnswerable(String),
    #[error("{0}")]
    Invalid(String),
    /// The request is another machine's, and that machine could not be asked.
    #[error(
        "request {id}'s session runs on host {host}, which cannot be reached: {reason}; answer \
         it on that machine"
    )]
    Unreachable {
        host: String,
        id: String,
        reason: String,
    },
}

/// Why a waiter stopped waiting, as the waiting side hears it.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestEnd {
    /// Answered through atm: tell the agent.
    Decided(Verdict),
    /// No answer will come through atm (`reason`): let the agent's own flow go on.
    Withdrawn(String),
}

/// A question as people see it in a one-line surface: `header: question [a / b / c]`.
pub fn question_as_shown(q: &Question) -> String {
    let mut s = match &q.header {
        Some(h) if !h.is_empty() => format!("{h}: {}", q.question),
        _ => q.question.clone(),
    };
    if !q.options.is_empty() {
        let labels: Vec<&str> = q.options.iter().map(|o| o.label.as_str()).collect();
        s.push_str(&format!(" [{}]", labels.join(" / ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_and_parse_strictly() {
        let a = RequestId::generate().unwrap();
        let b = RequestId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(RequestId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(
            RequestId::parse(&a.as_str().to_ascii_uppercase()),
            Some(a.clone())
        );
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"a".repeat(33),
            "../../etc/passwd",
        ] {
            assert_eq!(RequestId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn decisions_and_verdicts_have_a_stable_wire_shape() {
        let d: Decision = serde_json::from_str(r#"{"decision":"allow","always":true}"#).unwrap();
        assert_eq!(
            d,
            Decision::Allow {
                always: true,
                rule: None
            }
        );
        let d: Decision = serde_json::from_str(r#"{"decision":"deny","message":"no"}"#).unwrap();
        assert_eq!(d.name(), "deny");
        assert!(serde_json::from_str::<Decision>(r#"{"decision":"maybe"}"#).is_err());
        let v = Verdict::Deny {
            message: Some("m".into()),
            interrupt: true,
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"behavior": "deny", "message": "m", "interrupt": true})
        );
    }

    #[test]
    fn a_question_reads_on_one_line() {
        let q = Question {
            question: "Which database?".into(),
            header: Some("DB".into()),
            options: vec![
                QuestionOption {
                    label: "Postgres".into(),
                    description: None,
                },
                QuestionOption {
                    label: "SQLite".into(),
                    description: Some("file".into()),
                },
            ],
            multi_select: false,
        };
        assert_eq!(
            question_as_shown(&q),
            "DB: Which database? [Postgres / SQLite]"
        );
    }
}
