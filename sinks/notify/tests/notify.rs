//! The `notify` sink against a real private `dbus-daemon` with a test notification server on
//! it, a real registry, and real `tmux -L` servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers fail the test as assert! does

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use atm_core::chrono::{TimeDelta, Utc};
use atm_core::testing::{PrivateBus, TmuxServer, wait_for, wait_until};
use atm_core::{AgentEvent, EventSource, UsageUpdate};

mod common;
use common::*;

#[tokio::test]
async fn permission_notifies_once_critically_and_working_closes_it() {
    let (_bus, server, setup) = with_server("").await;
    let a = source("alpha", Some("%42"));
    setup.now(&a, prompt()).await;
    setup
        .usage(
            &a,
            UsageUpdate {
                branch: Some("feature/x".into()),
                project_root: Some("/home/u/src/myrepo".into()),
                ..UsageUpdate::default()
            },
        )
        .await;
    setup
        .now(&a, permission("Bash", "cargo test && rm <tmp>"))
        .await;
    let got = server.wait_notified("needs permission", 1).await;
    let n = &got[0];
    assert_eq!(n.summary, "Claude needs permission: Bash · myrepo");
    assert_eq!(
        n.body,
        "cargo test &amp;&amp; rm &lt;tmp&gt;\nbranch feature/x · tmux %42"
    );
    assert_eq!(n.app_name, "atm");
    assert_eq!(n.replaces_id, 0);
    assert_eq!(n.hint_u8("urgency"), Some(2));
    assert_eq!(n.hint_str("category").as_deref(), Some("x-atm.permission"));
    assert_eq!(n.hint_str("desktop-entry").as_deref(), Some("atm-test"));
    assert_eq!(n.hint_bool("transient"), None);
    assert_eq!(n.actions, ["default", "Focus", "focus", "Focus"]);

    // Data updates in the same state change nothing.
    setup
        .usage(
            &a,
            UsageUpdate {
                cost_usd: Some(1.5),
                ..UsageUpdate::default()
            },
        )
        .await;
    // Back to work: closed.
    setup.now(&a, tool()).await;
    server.wait_closed(n.id).await;
    assert_eq!(server.notified().len(), 1, "{:#?}", server.notified());

    // Asking again replaces nothing (the old one is closed): a fresh notification.
    setup.now(&a, permission("Edit", "src/lib.rs")).await;
    let again = server.wait_notified("needs permission: Edit", 1).await;
    assert_eq!(again[0].replaces_id, 0);
    // Input while the permission notification shows: it is replaced, not stacked.
    setup
        .now(&a, input("plan_approval", None, Some("Plan: refactor")))
        .await;
    let input = server.wait_notified("needs input", 1).await;
    assert_eq!(input[0].replaces_id, again[0].id);
    assert_eq!(
        input[0].hint_str("category").as_deref(),
        Some("x-atm.input")
    );
    assert_eq!(input[0].hint_u8("urgency"), Some(2));
    // The session ends: its notification is closed.
    setup
        .now(
            &a,
            AgentEvent::SessionEnded {
                reason: "logout".into(),
                continues: false,
            },
        )
        .await;
    server.wait_closed(input[0].id).await;
    setup.stop().await;
}

#[tokio::test]
async fn idle_after_a_long_turn_notifies_and_a_short_turn_does_not() {
    let (_bus, server, setup) = with_server("").await;
    let long = source("long", None);
    let short = source("short", None);
    let now = Utc::now();
    // The turn started 2 s before it ended (min_turn is 200 ms); times come from the events.
    setup
        .send(&long, prompt(), now - TimeDelta::seconds(2))
        .await;
    setup.send(&long, AgentEvent::TurnFinished, now).await;
    let got = server.wait_notified("finished", 1).await;
    assert_eq!(got[0].summary, "Claude finished · long-repo");
    assert_eq!(got[0].body, "Worked for 2s\nfix the tests");
    assert_eq!(got[0].hint_u8("urgency"), Some(1));
    assert_eq!(got[0].hint_bool("transient"), Some(true));
    assert_eq!(got[0].hint_str("category").as_deref(), Some("x-atm.idle"));
    // No pane and the default focus command: nothing to focus, so no actions.
    assert!(got[0].actions.is_empty(), "{:?}", got[0].actions);

    setup
        .send(&short, prompt(), now - TimeDelta::milliseconds(50))
        .await;
    setup.send(&short, AgentEvent::TurnFinished, now).await;
    // A turn that failed notifies whatever its length; it also orders after the short one.
    let failed = source("failed", None);
    setup.send(&failed, prompt(), now).await;
    setup
        .send(
            &failed,
            AgentEvent::TurnFailed {
                error: "rate_limit".into(),
            },
            now,
        )
        .await;
    let err = server.wait_notified("stopped on an error", 1).await;
    assert_eq!(
        err[0].summary,
        "Claude stopped on an error: rate limit · failed-repo"
    );
    assert_eq!(err[0].hint_str("category").as_deref(), Some("x-atm.error"));
    assert!(
        server
            .notified()
            .iter()
            .all(|n| !n.summary.contains("short")),
        "{:#?}",
        server.notified()
    );
    setup.stop().await;
}

#[tokio::test]
async fn subagent_events_do_not_notify() {
    let (_bus, server, setup) = with_server("").await;
    let main = source("main", None);
    let mut sub = main.clone();
    sub.subagent_id = Some("agent-1".into());
    let steps = [
        (&main, prompt()),
        (
            &main,
            AgentEvent::SubagentStarted {
                agent_id: "agent-1".into(),
            },
        ),
        // The subagent's own turn ending and failing, and its stop: the parent keeps working.
        (&sub, AgentEvent::TurnFinished),
        (
            &sub,
            AgentEvent::TurnFailed {
                error: "overloaded".into(),
            },
        ),
        (
            &main,
            AgentEvent::SubagentStopped {
                agent_id: "agent-1".into(),
            },
        ),
    ];
    // One second apart, the last one a second ago.
    let now = Utc::now();
    for (ago, (src, event)) in (1..=5).rev().zip(steps) {
        setup.send(src, event, now - TimeDelta::seconds(ago)).await;
    }
    // A barrier: a notification for another session arrives after anything queued before it.
    setup.asks("other").await;
    server.wait_notified("other-repo", 1).await;
    assert_eq!(server.notified().len(), 1, "{:#?}", server.notified());
    setup.stop().await;
}

#[tokio::test]
async fn two_sessions_get_two_notifications_and_muted_projects_none() {
    let (_bus, server, setup) = with_server("mute_projects = [\"quiet-repo\"]").await;
    setup.asks("quiet").await;
    setup.asks("one").await;
    let two = source("two", None);
    setup
        .now(
            &two,
            input("input", Some("AskUserQuestion"), Some("Which branch?")),
        )
        .await;
    let a = server.wait_notified("one-repo", 1).await;
    let b = server.wait_notified("two-repo", 1).await;
    assert_ne!(a[0].id, b[0].id);
    assert_eq!(b[0].summary, "Claude needs input · two-repo");
    assert_eq!(b[0].body, "Which branch?");
    assert_eq!(server.notified().len(), 2, "{:#?}", server.notified());
    setup.stop().await;
}

/// `a` asks for permission ("one"), its popup shows and is closed as it goes back to work, and
/// it asks again ("two"): the rate limit now runs from the first popup.
async fn popup_closed_then_asked_again(setup: &Setup, server: &Server, a: &EventSource) {
    setup.now(a, permission("Bash", "one")).await;
    let repo = format!("{}-repo", a.session_id);
    let first = server.wait_notified(&repo, 1).await;
    setup.now(a, tool()).await;
    server.wait_closed(first[0].id).await;
    setup.now(a, permission("Bash", "two")).await;
}

#[tokio::test]
async fn rate_limit_holds_a_second_popup_until_the_interval_passed() {
    let (_bus, server, setup) = with_server("rate_limit = \"1500ms\"").await;
    let a = source("rated", None);
    popup_closed_then_asked_again(&setup, &server, &a).await;
    let both = server.wait_notified("rated-repo", 2).await;
    assert_eq!(both[1].body, "two");
    let gap = both[1].at - both[0].at;
    assert!(
        gap >= Duration::from_millis(1400),
        "second popup after {gap:?}"
    );
    setup.stop().await;
}

#[tokio::test]
async fn a_held_popup_is_dropped_when_the_session_moves_on() {
    let (_bus, server, setup) = with_server("rate_limit = \"1h\"").await;
    let a = source("held", None);
    popup_closed_then_asked_again(&setup, &server, &a).await;
    setup.now(&a, tool()).await;
    setup.asks("other").await;
    server.wait_notified("other-repo", 1).await;
    assert_eq!(
        server
            .notified()
            .iter()
            .filter(|n| n.summary.contains("held-repo"))
            .count(),
        1
    );
    setup.stop().await;
}

/// The pane a fresh tmux server starts with.
fn first_pane(tmux: &TmuxServer) -> String {
    tmux.run(&["list-panes", "-F", "#{pane_id}"])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_default_action_selects_the_sessions_tmux_pane() {
    let tmux = TmuxServer::start("notify-focus", "sleep 600");
    let first = first_pane(&tmux);
    // The session's pane is neither the active pane of its window nor in the active window.
    let split = tmux
        .run(&[
            "split-window",
            "-P",
            "-F",
            "#{pane_id}",
            "-t",
            &first,
            "sleep 600",
        ])
        .trim()
        .to_owned();
    tmux.run(&["new-window", "sleep 600"]);
    let active = || {
        tmux.run(&["display-message", "-p", "#{pane_id}"])
            .trim()
            .to_owned()
    };
    assert_ne!(active(), first);

    let (_bus, server, setup) = with_server(&format!("tmux_socket_name = {:?}", tmux.name)).await;
    // Notified while in the split pane; then the session is seen in `first` (no new state).
    let a = source("focus", Some(&split));
    setup.now(&a, permission("Bash", "ls")).await;
    let got = server.wait_notified("focus-repo", 1).await;
    // The body names the pane's tmux location (session:window.pane).
    assert!(got[0].body.ends_with(":0.1"), "{}", got[0].body);
    let moved = source("focus", Some(&first));
    setup
        .now(
            &moved,
            AgentEvent::Activity {
                what: "pane moved".into(),
            },
        )
        .await;
    // The click focuses where the session is now.
    server.invoke(got[0].id, "default").await;
    wait_until(&format!("pane {first} to be selected"), || async {
        active() == first
    })
    .await;
    let panes = tmux.run(&[
        "list-panes",
        "-a",
        "-F",
        "#{pane_id} #{pane_active} #{window_active}",
    ]);
    assert!(
        panes.lines().any(|l| l == format!("{first} 1 1")),
        "{panes}"
    );
    setup.stop().await;
}

#[tokio::test]
async fn no_notification_while_the_pane_is_watched_by_an_attached_client() {
    let tmux = TmuxServer::start("notify-quiet", "sleep 600");
    let watched = first_pane(&tmux);
    tmux.run(&["new-window", "-d", "sleep 600"]);
    let hidden = tmux
        .run(&["list-panes", "-a", "-F", "#{pane_id} #{window_active}"])
        .lines()
        .find(|l| l.ends_with(" 0"))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    // An attached client needs a terminal: `script` gives it one.
    let mut client = std::process::Command::new("script")
        .args([
            "-qfc",
            &format!("tmux -L {} attach", tmux.name),
            "/dev/null",
        ])
        .env("TERM", "xterm")
        .env_remove("TMUX")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script (util-linux) runs");
    wait_until("the tmux client to attach", || async {
        tmux.run(&["list-clients", "-F", "#{pane_id}"]).trim() == watched
    })
    .await;

    let (_bus, server, setup) = with_server(&format!("tmux_socket_name = {:?}", tmux.name)).await;
    setup
        .now(&source("watched", Some(&watched)), permission("Bash", "ls"))
        .await;
    setup
        .now(&source("hidden", Some(&hidden)), permission("Bash", "ls"))
        .await;
    server.wait_notified("hidden-repo", 1).await;
    assert_eq!(server.notified().len(), 1, "{:#?}", server.notified());
    setup.stop().await;
    let _ = client.kill();
    let _ = client.wait();
}

#[tokio::test]
async fn a_server_that_appears_later_gets_the_waiting_notification() {
    let bus = PrivateBus::start();
    let setup = Setup::start(&bus, "").await;
    setup.asks("early").await;
    // No server yet: the sink planned the popup, failed to deliver it, and keeps running.
    setup.wait_caught_up_failing(1).await;
    let server = Server::start(&bus).await;
    server.wait_notified("early-repo", 1).await;
    setup.asks("later").await;
    server.wait_notified("later-repo", 1).await;
    setup.stop().await;
}

#[tokio::test]
async fn a_new_server_starts_afresh() {
    let bus = PrivateBus::start();
    let first = Server::start(&bus).await;
    let setup = Setup::start(&bus, "").await;
    let a = setup.asks("moved").await;
    let old = first.wait_notified("moved-repo", 1).await;
    first.conn.release_name(NAME).await.unwrap();
    let second = Server::start(&bus).await;
    // Once the second server answered, the name change is known (signals come in bus order).
    setup.asks("other").await;
    second.wait_notified("other-repo", 1).await;
    // The old id means nothing to the new server: a fresh notification, nothing replaced.
    setup.now(&a, input("input", None, None)).await;
    let got = second.wait_notified("moved-repo", 1).await;
    assert_eq!(
        got[0].replaces_id, 0,
        "replaced {} of the old server",
        old[0].id
    );
    assert!(second.closed().is_empty());
    setup.stop().await;
}

#[tokio::test]
async fn a_failing_server_is_retried_and_never_stops_the_sink() {
    let bus = PrivateBus::start();
    let server = Server::start_with(&bus, &["body"], true).await;
    let setup = Setup::start(&bus, "").await;
    let a = source("retry", None);
    setup.now(&a, permission("Bash", "a && b")).await;
    server.wait_calls(1).await;
    assert!(server.notified().is_empty());
    server.failing.store(false, Ordering::SeqCst);
    // Retried after the backoff (1 s first).
    let got = server.wait_notified("retry-repo", 1).await;
    // No body-markup capability: the text goes as is; no actions capability: no actions.
    assert_eq!(got[0].body, "a && b");
    assert!(got[0].actions.is_empty());
    setup.stop().await;
}

#[tokio::test]
async fn a_hanging_server_neither_blocks_the_registry_nor_delays_stopping() {
    let bus = PrivateBus::start();
    let server = Server::start(&bus).await;
    server.hanging.store(true, Ordering::SeqCst);
    let setup = Setup::start(&bus, "").await;
    setup.asks("hang").await;
    // The deliverer is inside the call that hangs.
    server.wait_calls(1).await;
    for i in 0..20 {
        setup.asks(&format!("more{i}")).await;
    }
    setup.registry_answers_promptly().await;
    // The contract's bound; a deliverer stuck in the call would take the sink's 3 s grace.
    let started = Instant::now();
    setup.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn without_a_bus_the_sink_waits_and_stops_cleanly() {
    let bus = PrivateBus::start();
    let address = bus.address.clone();
    bus.kill();
    drop(bus);
    let setup = Setup::spawn(&address, "").await;
    setup.asks("nobus").await;
    // It planned the popup and failed to connect: waiting, not stopped.
    setup.wait_caught_up_failing(1).await;
    setup.stop().await;
}

#[tokio::test]
async fn focus_command_runs_for_the_focus_action_and_dismissals_are_forgotten() {
    let bus = PrivateBus::start();
    let server = Server::start(&bus).await;
    let out = tempfile::tempdir().unwrap();
    let marker = out.path().join("focused");
    let setup = Setup::start(
        &bus,
        &format!(
            "focus_command = [\"sh\", \"-c\", \"printf '%s %s' '{{session_id}}' '{{pane}}' > {}\"]",
            marker.display()
        ),
    )
    .await;
    // No pane, but a focus command: actions are offered.
    let a = setup.asks("custom").await;
    let got = server.wait_notified("custom-repo", 1).await;
    assert_eq!(got[0].actions, ["default", "Focus", "focus", "Focus"]);
    // An action on an id that is not ours does nothing; "focus" on ours runs the command.
    server.invoke(got[0].id + 1000, "focus").await;
    server.invoke(got[0].id, "focus").await;
    let text = wait_for("focus_command to run", || async {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|t| !t.is_empty())
    })
    .await;
    assert_eq!(text, "custom ");
    // The user dismisses it (reason 2): the next state gets a fresh notification.
    server
        .conn
        .emit_signal(
            None::<&str>,
            PATH,
            NAME,
            "NotificationClosed",
            &(got[0].id, 2u32),
        )
        .await
        .unwrap();
    wait_until("the sink to handle the dismissal", || async {
        setup.stats.closed_by_server() >= 1
    })
    .await;
    setup.now(&a, input("input", None, None)).await;
    let input = server.wait_notified("needs input", 1).await;
    assert_eq!(input[0].replaces_id, 0);
    setup.stop().await;
}

#[tokio::test]
async fn a_bus_that_dies_never_stops_the_sink() {
    let (bus, server, setup) = with_server("").await;
    let a = setup.asks("dies").await;
    server.wait_notified("dies-repo", 1).await;
    let failed_before = setup.stats.sink().failures();
    bus.kill();
    // The loss is noticed...
    setup.wait_caught_up_failing(failed_before + 1).await;
    setup.now(&a, tool()).await;
    setup.asks("after").await;
    // ...and later changes are still planned from while the bus is gone.
    setup.wait_caught_up_failing(failed_before + 1).await;
    // The registry still answers promptly and the sink still runs.
    setup.registry_answers_promptly().await;
    setup.stop().await;
}

#[tokio::test]
async fn contract() {
    let dir = tempfile::tempdir().unwrap();
    let reg = atm_core::plugin::find(atm_core::plugin::PluginKind::Sink, "notify").unwrap();
    assert!(reg.optional);
    atm_core::testing::check_sink_contract(
        "notify",
        atm_core::testing::sample_table(reg),
        dir.path(),
    )
    .await;
}

#[tokio::test]
async fn many_agents_at_once_get_a_few_popups_and_one_summary_that_closes_when_they_move_on() {
    let (_bus, server, setup) = with_server("max_popups = 3\npopup_window = \"1h\"").await;
    let n = 40;
    let agents: Vec<EventSource> = (0..n).map(|i| source(&format!("agent{i}"), None)).collect();
    for a in &agents {
        setup.now(a, prompt()).await;
        setup.now(a, permission("Bash", "make <all>")).await;
    }
    // Three popups; every other agent is counted in one summary, replaced in place as it grows.
    let want = format!("{} agents need you", n - 3);
    let summary = wait_for(&format!("the summary {want:?}"), || async {
        server
            .notified()
            .into_iter()
            .rev()
            .find(|c| c.summary == want)
    })
    .await;
    let got = server.notified();
    let popups = got
        .iter()
        .filter(|c| c.summary.contains("needs permission"))
        .count();
    assert_eq!(popups, 3, "{got:#?}");
    let summaries: Vec<&Notified> = got
        .iter()
        .filter(|c| c.summary.ends_with("need you") || c.summary.ends_with("needs you"))
        .collect();
    assert!(
        summaries
            .iter()
            .skip(1)
            .all(|c| c.replaces_id == summaries[0].id),
        "a second summary instead of a replaced one: {summaries:#?}"
    );
    assert!(summaries.len() <= 5, "{} summary updates", summaries.len());
    // Escaped like any body (the server renders markup), and it names who is waiting.
    assert!(
        summary.body.contains("Claude needs permission: Bash"),
        "{}",
        summary.body
    );
    assert!(
        summary.body.contains("more than 3 notifications"),
        "{}",
        summary.body
    );
    assert_eq!(
        summary.hint_str("category").as_deref(),
        Some("x-atm.summary")
    );
    // The per-session ones are unaffected; when every gathered agent moves on, the summary goes.
    for a in &agents {
        setup.now(a, tool()).await;
    }
    server.wait_closed(summary.id).await;
    setup.stop().await;
}
