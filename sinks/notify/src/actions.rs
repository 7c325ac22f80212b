//! The buttons of a notification and what a click on one does.
//!
//! A session that waits on an *answerable* request (something holds the agent's question open
//! and can hand it an answer) gets Allow, `Always allow "<rule>"` (when the agent offers a rule;
//! its first), Deny and Focus; a question gets Focus only, since answers need text, except one
//! single-select question with at most [`MAX_CHOICES`] choices, whose choices become the
//! buttons. Anything else gets Focus only, and nothing at all when there is nowhere to focus.
//! The notification body (`default`) always focuses: a click on the text never decides.
//!
//! Each deciding key names the request it answers (`allow:<id>`), so a click on a button of a
//! version that has since been replaced in place can never answer a newer request: it is
//! ignored. A click decides through the registry ([`RegistryHandle::decide`]) as the surface
//! `notify` with the user's own uid (the notification server sits on the user's own session
//! bus). Clicks run as their own small tasks, at most [`ANSWER_SLOTS`] at once (a click while
//! all are busy is ignored and logged), each bounded by a timeout; a refused answer (already
//! answered, withdrawn, nothing waits any more) is reported back to the deliverer through a
//! channel of [`ANSWER_SLOTS`] places; the report carries its task's slot until the deliverer
//! has read it, so reports and running tasks together never outnumber the places.

use std::sync::Arc;

use atm_core::request::{Decision, RequestId, Surface};
use atm_core::text::{one_line_preview, portable};
use atm_core::{RegistryHandle, Session};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::server::CALL_TIMEOUT;

/// A question with at most this many choices gets one button per choice.
pub const MAX_CHOICES: usize = 3;
/// The longest button label, in characters.
pub const LABEL_MAX: usize = 64;
/// `Always allow ""` around the rule's label.
const ALWAYS_WRAP: usize = 16;
/// At most this many answers are on their way at once.
pub(crate) const ANSWER_SLOTS: usize = 4;
/// The surface name answers from a notification are logged with.
pub const SURFACE: &str = "notify";

/// What a click asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Clicked {
    /// Take the user to the session.
    Focus,
    /// Answer the request.
    Decide {
        request: RequestId,
        decision: Decision,
    },
}

/// The actions (key, label) for a notification about `s`; `can_focus`: a click can take the
/// user somewhere. Empty for a server without the `actions` capability (the caller's check).
pub(crate) fn offered(s: &Session, can_focus: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if can_focus {
        out.push(("default".to_owned(), "Focus".to_owned()));
    }
    let waiting = s
        .attention
        .as_ref()
        .and_then(|a| Some((a, a.request.as_ref().filter(|r| r.answerable)?)));
    if let Some((a, request)) = waiting {
        let id = request.id.as_str();
        if a.questions.is_empty() {
            out.push((format!("allow:{id}"), "Allow".to_owned()));
            if let Some(rule) = a.suggestions.first() {
                out.push((format!("always:{id}"), always_label(&rule.label)));
            }
            out.push((format!("deny:{id}"), "Deny".to_owned()));
        } else if let [q] = a.questions.as_slice()
            && !q.multi_select
            && (1..=MAX_CHOICES).contains(&q.options.len())
        {
            for (n, o) in q.options.iter().enumerate() {
                out.push((format!("answer:{n}:{id}"), label(&o.label)));
            }
        }
    }
    if can_focus {
        out.push(("focus".to_owned(), "Focus".to_owned()));
    }
    out
}

/// `Always allow "Bash(npm test:*) in local settings"`: the rule's label without its own
/// leading "allow".
fn always_label(rule: &str) -> String {
    let rule = rule.strip_prefix("allow ").unwrap_or(rule);
    let rule = one_line_preview(&portable(rule), LABEL_MAX - ALWAYS_WRAP);
    format!("Always allow \"{rule}\"")
}

fn label(s: &str) -> String {
    one_line_preview(&portable(s), LABEL_MAX)
}

/// What the click `key` on a notification about `notified` asks for; `None` for a key that is
/// not ours, or one that answers a request this notification no longer shows.
pub(crate) fn clicked(key: &str, notified: &Session) -> Option<Clicked> {
    if key == "default" || key == "focus" {
        return Some(Clicked::Focus);
    }
    let (verb, rest) = key.split_once(':')?;
    let (choice, id) = match verb {
        "answer" => {
            let (n, id) = rest.split_once(':')?;
            (Some(n.parse::<usize>().ok()?), id)
        }
        _ => (None, rest),
    };
    let a = notified.attention.as_ref()?;
    let request = a.request.as_ref().filter(|r| r.id.as_str() == id)?;
    let decision = match (verb, choice) {
        ("allow", None) => Decision::Allow {
            always: false,
            rule: None,
        },
        ("always", None) => Decision::Allow {
            always: true,
            rule: Some(0),
        },
        ("deny", None) => Decision::Deny {
            message: None,
            interrupt: false,
        },
        ("answer", Some(n)) => {
            let option = a.questions.first()?.options.get(n)?;
            Decision::Answer {
                answers: vec![option.label.clone()],
            }
        }
        _ => return None,
    };
    Some(Clicked::Decide {
        request: request.id.clone(),
        decision,
    })
}

/// An answer from a notification the registry refused: the notification still offers it.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) notification: u32,
    pub(crate) request: RequestId,
    /// The task's slot, free again once this is read.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Refused {
    #[cfg(test)]
    pub(crate) fn new(notification: u32, request: RequestId) -> Self {
        Self {
            notification,
            request,
            _slot: None,
        }
    }
}

/// Sends the answers clicked on notifications to the registry.
pub(crate) struct Answerer {
    registry: Option<RegistryHandle>,
    slots: Arc<Semaphore>,
    refused: mpsc::Sender<Refused>,
}

impl Answerer {
    /// The answerer, and where the refused answers come back.
    pub(crate) fn new() -> (Self, mpsc::Receiver<Refused>) {
        let (tx, rx) = mpsc::channel(ANSWER_SLOTS);
        let answerer = Self {
            registry: None,
            slots: Arc::new(Semaphore::new(ANSWER_SLOTS)),
            refused: tx,
        };
        (answerer, rx)
    }

    pub(crate) fn set_registry(&mut self, registry: RegistryHandle) {
        self.registry = Some(registry);
    }

    /// Decides `request` as clicked on notification `notification`; never waits.
    pub(crate) fn start(&self, notification: u32, request: RequestId, decision: Decision) {
        let Some(registry) = self.registry.clone() else {
            debug!(%request, "no registry to answer through; click ignored");
            return;
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            warn!(%request, "answers from notifications busy; click ignored");
            return;
        };
        let refused = self.refused.clone();
        tokio::spawn(async move {
            let surface = Surface::new(SURFACE, Some(atm_core::paths::uid()));
            let name = decision.name();
            let asked = registry.decide(request.clone(), decision, surface);
            let error = match tokio::time::timeout(CALL_TIMEOUT, asked).await {
                Ok(Ok(Ok(decided))) => {
                    info!(%request, session = %decided.session_id, decision = name,
                        "request answered from a desktop notification");
                    return;
                }
                Ok(Ok(Err(refused))) => refused.to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the registry did not answer in time".to_owned(),
            };
            info!(%request, decision = name, error = %error,
                "answer from a desktop notification refused; its buttons are withdrawn");
            // Never full: a place per slot, and this report holds its slot.
            let _ = refused.try_send(Refused {
                notification,
                request,
                _slot: Some(permit),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::chrono::Utc;
    use atm_core::model::PermissionSuggestion;
    use atm_core::request::{PendingRequest, Question};

    fn waiting(answerable: bool, suggestions: &[&str], questions: Vec<Question>) -> Session {
        let mut s = atm_core::testing::claude_session("s", Utc::now());
        let mut a = atm_core::testing::permission_attention("Bash", Some("ls"));
        a.suggestions = suggestions
            .iter()
            .map(|l| PermissionSuggestion {
                label: (*l).to_owned(),
                rule: atm_core::serde_json::json!({}),
            })
            .collect();
        a.questions = questions;
        a.request = Some(PendingRequest {
            id: RequestId::parse(&"ab".repeat(16)).unwrap(),
            asked_at: Utc::now(),
            answerable,
        });
        s.attention = Some(a);
        s
    }

    fn labels(v: &[(String, String)]) -> Vec<&str> {
        v.iter().map(|(_, l)| l.as_str()).collect()
    }

    fn question(options: &[&str], multi_select: bool) -> Question {
        atm_core::testing::question("Which?", options, multi_select)
    }

    #[test]
    fn an_answerable_permission_gets_allow_always_deny_and_focus() {
        let s = waiting(
            true,
            &["allow Bash(npm test:*) in local settings", "x"],
            vec![],
        );
        let got = offered(&s, true);
        assert_eq!(
            labels(&got),
            [
                "Focus",
                "Allow",
                "Always allow \"Bash(npm test:*) in local settings\"",
                "Deny",
                "Focus"
            ]
        );
        let id = "ab".repeat(16);
        assert_eq!(got[1].0, format!("allow:{id}"));
        // No rule offered, nowhere to focus: Allow and Deny.
        let s = waiting(true, &[], vec![]);
        assert_eq!(labels(&offered(&s, false)), ["Allow", "Deny"]);
        // Not answerable: Focus only, or nothing.
        let s = waiting(false, &["r"], vec![]);
        assert_eq!(labels(&offered(&s, true)), ["Focus", "Focus"]);
        assert!(offered(&s, false).is_empty());
    }

    #[test]
    fn questions_get_their_few_choices_or_focus_only() {
        let s = waiting(true, &[], vec![question(&["Postgres", "SQLite"], false)]);
        let got = offered(&s, false);
        assert_eq!(labels(&got), ["Postgres", "SQLite"]);
        assert_eq!(
            clicked(&got[1].0, &s),
            Some(Clicked::Decide {
                request: RequestId::parse(&"ab".repeat(16)).unwrap(),
                decision: Decision::Answer {
                    answers: vec!["SQLite".into()]
                }
            })
        );
        for qs in [
            vec![question(&["a", "b", "c", "d"], false)],
            vec![question(&["a", "b"], true)],
            vec![question(&["a"], false), question(&["b"], false)],
            vec![question(&[], false)],
        ] {
            let s = waiting(true, &[], qs);
            assert_eq!(labels(&offered(&s, true)), ["Focus", "Focus"]);
        }
    }

    #[test]
    fn clicks_decide_only_the_request_shown() {
        let s = waiting(true, &["r"], vec![]);
        let id = "ab".repeat(16);
        let req = RequestId::parse(&id).unwrap();
        assert_eq!(clicked("default", &s), Some(Clicked::Focus));
        assert_eq!(
            clicked(&format!("always:{id}"), &s),
            Some(Clicked::Decide {
                request: req.clone(),
                decision: Decision::Allow {
                    always: true,
                    rule: Some(0)
                }
            })
        );
        assert_eq!(
            clicked(&format!("deny:{id}"), &s),
            Some(Clicked::Decide {
                request: req,
                decision: Decision::Deny {
                    message: None,
                    interrupt: false
                }
            })
        );
        let other = "cd".repeat(16);
        for key in [
            format!("allow:{other}"),
            format!("answer:0:{id}"),
            format!("answer:x:{id}"),
            format!("maybe:{id}"),
            "allow".to_owned(),
            String::new(),
        ] {
            assert_eq!(clicked(&key, &s), None, "{key}");
        }
    }

    #[test]
    fn labels_are_one_short_portable_line() {
        let long = format!("allow {}\n\u{0}", "x".repeat(200));
        let s = waiting(true, &[&long], vec![]);
        let got = offered(&s, false);
        let always = &got[1].1;
        assert!(always.chars().count() <= LABEL_MAX, "{always}");
        assert!(always.ends_with("…\""), "{always}");
        assert!(
            always.chars().all(atm_core::text::is_portable),
            "{always:?}"
        );
    }
}
