//! Answering a waiting agent from its desktop notification, end to end: the real `atm-hook`
//! waits on Claude's `PermissionRequest`, the real `atmd` runs the `notify` sink against a test
//! notification server on a private `dbus-daemon`, the server's user clicks Allow
//! (`ActionInvoked`), and what atm-hook prints is what Claude reads. Answered in the terminal
//! instead, the notification is withdrawn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atm_core::testing::{PrivateBus, wait_until_blocking};
use atm_tests::waiting_hook::{WaitingHook, permission};
use atm_tests::{Daemon, basic_config, hook};
use serde_json::{Value, json};
use zbus::object_server::SignalEmitter;
use zbus::{OwnedVariant, fdo};

const PATH: &str = "/org/freedesktop/Notifications";
const NAME: &str = "org.freedesktop.Notifications";

/// One `Notify` call as the server saw it.
#[derive(Debug, Clone)]
struct Notified {
    id: u32,
    replaces_id: u32,
    summary: String,
    actions: Vec<String>,
}

#[derive(Default)]
struct Record {
    notified: Vec<Notified>,
    closed: Vec<u32>,
}

/// A notification server with actions that records what it is asked.
struct TestServer {
    record: Arc<Mutex<Record>>,
    next_id: Mutex<u32>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl TestServer {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        _body: String,
        actions: Vec<String>,
        _hints: HashMap<String, OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        self.record.lock().unwrap().notified.push(Notified {
            id,
            replaces_id,
            summary,
            actions,
        });
        id
    }

    async fn close_notification(
        &self,
        id: u32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> fdo::Result<()> {
        self.record.lock().unwrap().closed.push(id);
        // 3: closed by a call to CloseNotification.
        let _ = Self::notification_closed(&emitter, id, 3).await;
        Ok(())
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }

    #[zbus(out_args("name", "vendor", "version", "spec_version"))]
    fn get_server_information(&self) -> (String, String, String, String) {
        ("atm-e2e".into(), "atm".into(), "1".into(), "1.2".into())
    }

    #[zbus(signal)]
    async fn notification_closed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        reason: u32,
    ) -> zbus::Result<()>;
}

/// The bus, the server on it, and the runtime that serves it.
struct Desktop {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
    record: Arc<Mutex<Record>>,
    bus: PrivateBus,
}

impl Desktop {
    fn start() -> Desktop {
        let bus = PrivateBus::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let server = TestServer {
            record: record.clone(),
            next_id: Mutex::new(0),
        };
        let conn = rt
            .block_on(
                zbus::connection::Builder::address(bus.address.as_str())
                    .serve_at(PATH, server)
                    .name(NAME)
                    .build(),
            )
            .expect("the test notification server starts");
        Desktop {
            rt,
            conn,
            record,
            bus,
        }
    }

    /// The user clicks the button `action` of notification `id`.
    fn click(&self, id: u32, action: &str) {
        self.rt
            .block_on(self.conn.emit_signal(
                None::<&str>,
                PATH,
                NAME,
                "ActionInvoked",
                &(id, action),
            ))
            .unwrap();
    }

    fn notified(&self) -> Vec<Notified> {
        self.record.lock().unwrap().notified.clone()
    }

    fn closed(&self) -> Vec<u32> {
        self.record.lock().unwrap().closed.clone()
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
