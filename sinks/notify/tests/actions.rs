//! Answering a waiting agent from its notification: the buttons a request gets, a click that
//! reaches the waiter through the real registry, one notification replaced in place as the wait
//! changes, and the grace delay. Against the test notification server on a private
//! `dbus-daemon`, like `notify.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers fail the test as assert! does

use std::time::Duration;

use atm_core::chrono::Utc;
use atm_core::model::PermissionSuggestion;
use atm_core::registry::Awaiting;
use atm_core::request::{RequestEnd, RequestFate, RequestId, Verdict};
use atm_core::testing::{PrivateBus, wait_for, wait_until};
use atm_core::{AgentEvent, EventEnvelope, EventSource, Session};
use tokio::sync::oneshot;

mod common;
use common::*;

fn rule() -> atm_core::serde_json::Value {
    atm_core::serde_json::json!({"type": "addRules", "behavior": "allow",
        "rules": [{"toolName": "Bash", "ruleContent": "npm test:*"}], "destination": "session"})
}

fn permission_with_rule(detail: &str) -> AgentEvent {
    AgentEvent::PermissionRequested {
        tool: "Bash".into(),
        detail: Some(detail.into()),
        suggestions: vec![PermissionSuggestion {
            label: "allow Bash(npm test:*) for this session".into(),
            rule: rule(),
        }],
    }
}

/// `event` from `src` as atm-hook sends it: the request is answerable, and its end arrives on
/// the channel returned.
async fn awaiting(
    setup: &Setup,
    src: &EventSource,
    event: AgentEvent,
) -> (RequestId, oneshot::Receiver<RequestEnd>) {
    let env = EventEnvelope {
        source: src.clone(),
        event,
        at: Utc::now(),
    };
    let Awaiting { wait, .. } = setup.harness.registry.apply_awaiting(env).await.unwrap();
    wait.expect("the event opened a request")
}

async fn session(setup: &Setup, id: &str) -> std::sync::Arc<Session> {
    setup.harness.registry.get_session(id).await.unwrap()
}

/// Waits until session `id`'s open request can be answered (something waits for it).
async fn wait_answerable(setup: &Setup, id: &str) {
    wait_until(&format!("{id}'s request to be answerable"), || async {
        session(setup, id)
            .await
            .attention
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .is_some_and(|r| r.answerable)
    })
    .await;
}

/// The notifications about `repo` that offer a button with key `key`.
async fn wait_offering(server: &Server, repo: &str, key: &str) -> Notified {
    wait_for(
        &format!("a notification about {repo} offering {key}"),
        || async {
            server
                .notified()
                .into_iter()
                .rev()
                .find(|n| n.summary.contains(repo) && n.actions.iter().any(|a| a == key))
        },
    )
    .await
}

async fn verdict(rx: oneshot::Receiver<RequestEnd>) -> Verdict {
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(RequestEnd::Decided(v))) => v,
        other => panic!("no verdict: {other:?}"),
    }
}

#[tokio::test]
async fn an_answerable_request_gets_allow_always_deny_and_focus_and_allow_reaches_the_waiter() {
    let (_bus, server, setup) = with_server("").await;
    let a = source("allowed", Some("%42"));
    let (id, rx) = awaiting(&setup, &a, permission_with_rule("npm test")).await;
    let key = format!("allow:{id}");
    let n = wait_offering(&server, "allowed-repo", &key).await;
    assert_eq!(
        n.actions,
        [
            "default".to_owned(),
            "Focus".into(),
            key.clone(),
            "Allow".into(),
            format!("always:{id}"),
            "Always allow \"Bash(npm test:*) for this session\"".into(),
            format!("deny:{id}"),
            "Deny".into(),
            "focus".into(),
            "Focus".into(),
        ]
    );
    // One notification: shown before the request was answerable, it was replaced in place.
    let all = server.notified();
    assert!(all.iter().all(|m| m.id == n.id), "{all:#?}");
    assert!(
        all.iter().skip(1).all(|m| m.replaces_id == n.id),
        "{all:#?}"
    );

    // A click on a button of another request, or on the text, decides nothing.
    server
        .invoke(n.id, &format!("allow:{}", "0".repeat(32)))
        .await;
    server.invoke(n.id, "default").await;
    server.invoke(n.id, &key).await;
    assert_eq!(
        verdict(rx).await,
        Verdict::Allow {
            updated_permissions: vec![],
            answers: vec![]
        }
    );
    // Answered: the session works on, the notification is withdrawn, the answer is audited.
    server.wait_closed(n.id).await;
    let s = session(&setup, "allowed").await;
    assert_eq!(s.state, atm_core::AgentState::Working);
    let last = s.request_log.last().unwrap();
    assert_eq!(last.id, id);
    let RequestFate::Answered { surface, .. } = &last.fate else {
        panic!("{last:?}")
    };
    assert_eq!(surface.name, "notify");
    assert_eq!(surface.uid, Some(atm_core::paths::uid()));
    setup.stop().await;
}

#[tokio::test]
async fn always_echoes_the_rule_and_deny_carries_no_message() {
    let (_bus, server, setup) = with_server("").await;
    let a = source("always", None);
    let (id, rx) = awaiting(&setup, &a, permission_with_rule("npm test")).await;
    // No pane: no Focus, but the answers.
    let n = wait_offering(&server, "always-repo", &format!("always:{id}")).await;
    assert_eq!(n.actions.len(), 6, "{:?}", n.actions);
    server.invoke(n.id, &format!("always:{id}")).await;
    assert_eq!(
        verdict(rx).await,
        Verdict::Allow {
            updated_permissions: vec![rule()],
            answers: vec![]
        }
    );
    server.wait_closed(n.id).await;

    let (id, rx) = awaiting(&setup, &a, permission_with_rule("rm -rf")).await;
    let n = wait_offering(&server, "always-repo", &format!("deny:{id}")).await;
    server.invoke(n.id, &format!("deny:{id}")).await;
    assert_eq!(
        verdict(rx).await,
        Verdict::Deny {
            message: None,
            interrupt: false
        }
    );
    server.wait_closed(n.id).await;
    setup.stop().await;
}

#[tokio::test]
async fn a_request_nobody_can_answer_and_a_server_without_actions_get_no_answer_buttons() {
    let (_bus, server, setup) = with_server("").await;
    // Not answerable (no hook waits): Focus only.
    setup
        .now(&source("shown", Some("%3")), permission("Bash", "ls"))
        .await;
    let n = server.wait_notified("shown-repo", 1).await;
    assert_eq!(n[0].actions, ["default", "Focus", "focus", "Focus"]);
    setup.stop().await;

    let bus = PrivateBus::start();
    let server = Server::start_with(&bus, &["body"], false).await;
    let setup = Setup::start(&bus, "").await;
    let (_id, _rx) = awaiting(
        &setup,
        &source("plain", Some("%3")),
        permission("Bash", "ls"),
    )
    .await;
    let got = server.wait_notified("plain-repo", 1).await;
    // The answerable version came too (the session is what it is now), still without buttons.
    wait_answerable(&setup, "plain").await;
    assert!(got[0].actions.is_empty(), "{:?}", got[0].actions);
    assert!(server.notified().iter().all(|n| n.actions.is_empty()));
    setup.stop().await;
}

#[tokio::test]
async fn a_short_question_gets_its_choices_and_a_long_one_focus_only() {
    let (_bus, server, setup) = with_server("").await;
    let ask = |options: &[&str]| atm_core::testing::database_question(None, options);
    let a = source("asks", Some("%9"));
    let (id, rx) = awaiting(&setup, &a, ask(&["Postgres", "SQLite"])).await;
    let key = format!("answer:1:{id}");
    let n = wait_offering(&server, "asks-repo", &key).await;
    assert_eq!(
        n.actions,
        [
            "default".to_owned(),
            "Focus".into(),
            format!("answer:0:{id}"),
            "Postgres".into(),
            key.clone(),
            "SQLite".into(),
            "focus".into(),
            "Focus".into(),
        ]
    );
    server.invoke(n.id, &key).await;
    assert_eq!(
        verdict(rx).await,
        Verdict::Allow {
            updated_permissions: vec![],
            answers: vec!["SQLite".into()]
        }
    );
    server.wait_closed(n.id).await;

    let many = ["a", "b", "c", "d"];
    let b = source("many", Some("%9"));
    let (_id, _rx) = awaiting(&setup, &b, ask(&many)).await;
    wait_answerable(&setup, "many").await;
    // A barrier: what was queued for "many" went out before this one.
    setup.asks("barrier").await;
    server.wait_notified("barrier-repo", 1).await;
    let got = server.wait_notified("many-repo", 1).await;
    for n in got {
        assert_eq!(n.actions, ["default", "Focus", "focus", "Focus"]);
    }
    setup.stop().await;
}

#[tokio::test]
async fn answered_in_the_terminal_the_notification_is_withdrawn_and_a_refused_answer_drops_the_buttons()
 {
    let (_bus, server, setup) = with_server("").await;
    let a = source("terminal", None);
    let (id, _rx) = awaiting(&setup, &a, permission("Bash", "ls")).await;
    let n = wait_offering(&server, "terminal-repo", &format!("allow:{id}")).await;
    // The terminal answered: the agent runs the tool, and its next event says so.
    setup.now(&a, tool()).await;
    server.wait_closed(n.id).await;

    // Nothing waits any more (the hook went away without a word): the click is refused and the
    // notification, still about the waiting agent, stays without answer buttons.
    let (id, rx) = awaiting(&setup, &a, permission("Bash", "make")).await;
    let n = wait_offering(&server, "terminal-repo", &format!("allow:{id}")).await;
    drop(rx);
    server.invoke(n.id, &format!("allow:{id}")).await;
    let last = wait_for("the notification without its buttons", || async {
        server
            .notified()
            .into_iter()
            .last()
            .filter(|m| m.id == n.id && m.actions.is_empty())
    })
    .await;
    assert_eq!(last.replaces_id, n.id);
    assert!(!server.closed().contains(&n.id));
    let s = session(&setup, "terminal").await;
    assert_eq!(s.state, atm_core::AgentState::NeedsPermission);
    setup.stop().await;
}

#[tokio::test]
async fn nothing_pops_up_for_a_wait_answered_within_the_grace_delay() {
    let (_bus, server, setup) = with_server("grace = \"700ms\"").await;
    let quick = source("quick", None);
    let start = std::time::Instant::now();
    let (_id, _rx) = awaiting(&setup, &quick, permission("Bash", "ls")).await;
    setup.now(&quick, tool()).await;
    let slow = source("slow", None);
    let (id, _rx2) = awaiting(&setup, &slow, permission("Bash", "ls")).await;
    // The wait that lasts pops up once, after the delay, with its buttons from the start.
    let n = server.wait_notified("slow-repo", 1).await;
    assert!(
        n[0].at - start >= Duration::from_millis(650),
        "{:?}",
        n[0].at - start
    );
    assert_eq!(n[0].replaces_id, 0);
    assert!(n[0].actions.contains(&format!("allow:{id}")), "{n:#?}");
    // A barrier: anything for "quick" would have gone out by now.
    setup.asks("barrier").await;
    server.wait_notified("barrier-repo", 1).await;
    let all = server.notified();
    assert!(all.iter().all(|m| !m.summary.contains("quick")), "{all:#?}");
    assert_eq!(all.len(), 2, "{all:#?}");
    setup.stop().await;
}

#[tokio::test]
async fn a_newer_request_replaces_the_old_buttons_at_once_whatever_the_rate_limit() {
    let (_bus, server, setup) = with_server("rate_limit = \"1h\"").await;
    let a = source("newer", None);
    let (old, old_rx) = awaiting(&setup, &a, permission("Bash", "one")).await;
    let n = wait_offering(&server, "newer-repo", &format!("allow:{old}")).await;
    // The agent asks something else before the first was answered: the old request ends.
    let (new, _rx) = awaiting(&setup, &a, permission("Bash", "two")).await;
    assert_ne!(old, new);
    assert!(matches!(old_rx.await, Ok(RequestEnd::Withdrawn(_))));
    let m = wait_offering(&server, "newer-repo", &format!("allow:{new}")).await;
    assert_eq!((m.id, m.replaces_id), (n.id, n.id));
    assert_eq!(m.body, "two");
    setup.stop().await;
}
