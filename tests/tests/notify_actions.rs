//! Answering a waiting agent from its desktop notification, end to end: the real `atm-hook`
//! waits on Claude's `PermissionRequest`, the real `atmd` runs the `notify` sink against a test
//! notification server on a private `dbus-daemon`, the server's user clicks Allow
//! (`ActionInvoked`), and what atm-hook prints is what Claude reads. Answered in the terminal
//! instead, the notification is withdrawn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::{Duration, Instant};

use atm_core::testing::{PrivateBus, wait_until_blocking};
use atm_tests::waiting_hook::{WaitingHook, permission};
use atm_tests::{Daemon, basic_config, hook};
use serde_json::{Value, json};
use sink_notify::testing::{Notified, Server};

/// The bus, the sink's test notification server on it (with actions), and the runtime that
/// serves it.
struct Desktop {
    rt: tokio::runtime::Runtime,
    server: Server,
    bus: PrivateBus,
}

impl Desktop {
    fn start() -> Desktop {
        let bus = PrivateBus::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(Server::start_with(&bus, &["actions", "body"], false));
        Desktop { rt, server, bus }
    }

    /// The user clicks the button `action` of notification `id`.
    fn click(&self, id: u32, action: &str) {
        self.rt.block_on(self.server.invoke(id, action));
    }

    fn notified(&self) -> Vec<Notified> {
        self.server.notified()
    }

    fn closed(&self) -> Vec<u32> {
        self.server.closed()
    }

    /// The latest notification that offers a button with key `key` (10 s).
    fn wait_offering(&self, key: &str) -> Notified {
        let mut found = None;
        wait_until_blocking(&format!("a notification offering {key}"), || {
            found = self
                .notified()
                .into_iter()
                .rev()
                .find(|n| n.actions.iter().any(|a| a == key));
            found.is_some()
        });
        found.unwrap()
    }

    fn wait_closed(&self, id: u32) {
        wait_until_blocking(&format!("notification {id} closed"), || {
            self.closed().contains(&id)
        });
    }
}

/// atmd with the notify sink on the desktop's bus, popping up at once.
fn daemon(desktop: &Desktop) -> Daemon {
    let sink = format!(
        "[[sink]]\ntype = \"notify\"\naddress = {:?}\ngrace = \"0s\"\nrate_limit = \"0s\"\n\
         tmux_socket_name = \"atm-e2e-notify-absent-{}\"\n",
        desktop.bus.address,
        std::process::id()
    );
    Daemon::start_with_hooks(&basic_config(&sink))
}

/// The one open request's id, once it is answerable (10 s).
fn answerable_request(d: &Daemon) -> String {
    let mut id = None;
    wait_until_blocking("an answerable request", || {
        let out = d
            .command("atmctl")
            .args(["pending", "--json"])
            .output()
            .unwrap();
        let pending: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        id = pending
            .first()
            .filter(|p| pending.len() == 1 && p["answerable"] == true)
            .and_then(|p| p["id"].as_str().map(str::to_owned));
        id.is_some()
    });
    id.unwrap()
}

#[test]
fn allow_clicked_on_the_notification_reaches_the_waiting_hook() {
    let desktop = Desktop::start();
    let d = daemon(&desktop);
    let hook = WaitingHook::start(&d, permission("n1", "cargo test", json!({})));
    let id = answerable_request(&d);
    let n = desktop.wait_offering(&format!("allow:{id}"));
    assert!(n.summary.contains("needs permission: Bash"), "{n:?}");
    let labels: Vec<&str> = n
        .actions
        .iter()
        .skip(1)
        .step_by(2)
        .map(String::as_str)
        .collect();
    assert_eq!(labels, ["Focus", "Allow", "Deny", "Focus"], "{n:?}");
    // One notification for the wait, replaced in place as it became answerable.
    let all = desktop.notified();
    assert!(
        all.iter()
            .all(|m| m.id == n.id && (m.replaces_id == 0 || m.replaces_id == n.id)),
        "{all:#?}"
    );

    let clicked = Instant::now();
    desktop.click(n.id, &format!("allow:{id}"));
    let (printed, _) = hook.finish();
    assert!(printed.status.success());
    let printed = printed.stdout;
    let took = clicked.elapsed();
    let printed: Value = serde_json::from_slice(&printed).unwrap();
    assert_eq!(
        printed,
        json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
            "decision": {"behavior": "allow"}}})
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Answered: the notification goes, and the answer is audited as the notification's.
    desktop.wait_closed(n.id);
    let snapshot = d.state_dir().join("sessions.json");
    let uid = rustix::process::getuid().as_raw();
    wait_until_blocking("the answer from notify in the snapshot", || {
        std::fs::read_to_string(&snapshot).is_ok_and(|s| {
            s.contains(&id)
                && s.contains(r#""name":"notify""#)
                && s.contains(&format!(r#""uid":{uid}"#))
        })
    });
}

#[test]
fn answered_in_the_terminal_the_notification_is_withdrawn_and_the_hook_exits() {
    let desktop = Desktop::start();
    let d = daemon(&desktop);
    let waiting = WaitingHook::start(&d, permission("n2", "make", json!({})));
    let id = answerable_request(&d);
    let n = desktop.wait_offering(&format!("deny:{id}"));
    // The user answered in Claude's dialog: the tool ran.
    d.send_hooks(&[hook(
        json!({"hook_event_name": "PostToolUse", "session_id": "n2",
        "tool_name": "Bash"}),
    )]);
    let (printed, _) = waiting.finish();
    assert!(printed.status.success());
    let printed = printed.stdout;
    assert!(printed.is_empty(), "{}", String::from_utf8_lossy(&printed));
    desktop.wait_closed(n.id);
    assert_eq!(
        desktop.notified().last().map(|m| m.id),
        Some(n.id),
        "nothing new popped up"
    );
}
