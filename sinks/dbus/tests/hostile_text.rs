//! Text that is valid JSON but not valid D-Bus (a NUL, a noncharacter, control characters) in a
//! session's id, cwd and prompt: the service stays on the bus, every other session stays
//! visible, and `busctl` can read `ListSessions` and the session's properties.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails by panicking

mod common;

use common::*;
use sink_dbus as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_noncharacters_and_controls_never_reach_the_bus() {
    let t = OnPrivateBus::start().await;
    let conn = &t.conn;
    let mut rec = Recorder::new(conn).await;

    let mut hostile = source("evil\u{0}id\nforged", 301);
    hostile.cwd = Some("/home/u/\u{FFFE}proj\u{0}".into());
    hostile.tmux_pane = Some("%1\u{7}".into());
    t.apply(&hostile, started()).await;
    t.apply(&hostile, permission("Bash\u{0}", "rm \u{FFFF}-rf\u{1b}[2J"))
        .await;
    let attention = rec.until(|s| s.member == "AttentionNeeded").await;
    let SignalBody::AttentionNeeded([id, reason, summary]) = &attention.body else {
        panic!("{attention:?}");
    };
    assert_eq!(id, "evil\u{FFFD}id\u{FFFD}forged");
    assert!(!reason.is_empty());
    // The preview was made safe where it entered (atm_core::redact): the noncharacter and the
    // escape are gone; the tool name is only made valid for the bus.
    assert_eq!(summary, "Bash\u{FFFD}: rm -rf [2J");
    // A clean session published after the hostile one still arrives: the connection stayed.
    t.start_session(&source("clean", 302), 2).await;

    let objects = managed(conn).await;
    let evil = objects
        .values()
        .find(|p| str_prop(p, "Id").starts_with("evil"))
        .expect("the hostile session is published");
    assert_eq!(str_prop(evil, "Cwd"), "/home/u/\u{FFFD}proj\u{FFFD}");
    assert_eq!(str_prop(evil, "TmuxPane"), "%1\u{FFFD}");
    assert_eq!(str_prop(evil, "Tool"), "Bash\u{FFFD}");

    // The README's call: busctl refuses a whole reply holding one noncharacter.
    let list = t
        .busctl(&[&["--json=short"][..], &LIST_SESSIONS].concat())
        .await;
    assert!(list.contains("clean"), "{list}");
    assert!(list.contains("/home/u/\u{FFFD}proj\u{FFFD}"), "{list}");
    for bad in ['\u{0}', '\u{FFFE}', '\u{FFFF}', '\u{7}'] {
        assert!(!list.contains(bad), "{bad:?} reached busctl: {list}");
    }

    t.stop().await;
}
