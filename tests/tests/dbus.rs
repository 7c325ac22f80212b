//! The D-Bus sink inside the real daemon: what D-Bus tools see equals what socket clients see,
//! a bus that dies and comes back never disturbs the rest of the daemon, and a request asked
//! by the real `atm-hook` is listed and answered over D-Bus (`busctl`, `dbus-send`), the
//! decision printed by the hook for Claude.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use atm_core::testing::wait_until_blocking_within;
use atm_tests::waiting_hook::{decision_of, permission};
use atm_tests::{Daemon, WaitingHook, basic_config, hook};
use serde_json::{Value, json};

const SERVICE: &str = "io.github.atm.Monitor";
const PATH: &str = "/io/github/atm/Monitor1";
const IFACE: &str = "io.github.atm.Monitor1";

fn r_answerable(request: &Value) -> bool {
    request["Answerable"]["data"] == true
}

/// A `dbus-daemon` on a fixed socket path, so a restarted bus has the same address.
struct FixedBus {
    pid: u32,
    address: String,
}

impl FixedBus {
    fn start(path: &Path) -> FixedBus {
        let _ = std::fs::remove_file(path);
        let address = format!("unix:path={}", path.display());
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-pid=1", "--nopidfile"])
            .arg(format!("--address={address}"))
            .output()
            .expect("dbus-daemon is installed");
        assert!(out.status.success());
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        FixedBus { pid, address }
    }

    fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }

    fn list_sessions(&self) -> Option<Value> {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args([
                "--json=short",
                "call",
                "io.github.atm.Monitor",
                "/io/github/atm/Monitor1",
                "io.github.atm.Monitor1",
                "ListSessions",
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Session ids from `ListSessions` (busctl's JSON: {"type":"a{sa{sv}}","data":[{id: {...}}]}).
    fn ids(&self) -> Option<Vec<String>> {
        let v = self.list_sessions()?;
        let map = v["data"].as_array()?.first()?.as_object()?;
        let mut ids: Vec<String> = map.keys().cloned().collect();
        ids.sort();
        Some(ids)
    }

    /// `ListRequests` (busctl's JSON: {"type":"a{sa{sv}}","data":[{id: {...}}]}): the requests by id.
    fn requests(&self) -> Option<serde_json::Map<String, Value>> {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(["--json=short", "call", SERVICE, PATH, IFACE, "ListRequests"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"].as_array()?.first()?.as_object().cloned()
    }

    /// The one request listed, once it is answerable (15 s): its id and dictionary.
    fn answerable(&self) -> (String, Value) {
        let mut found = None;
        wait_until_blocking_within(Duration::from_secs(15), "one answerable request", || {
            found = self.requests().and_then(|r| {
                let (id, v) = r.into_iter().next()?;
                (r_answerable(&v)).then_some((id, v))
            });
            found.is_some()
        });
        found.unwrap()
    }

    /// `dbus-send` of `method` with `args` (`string:...`, `boolean:...`): the reply, or the
    /// error it printed (`Error io.github.atm.Monitor1.Error.NotFound: ...`).
    fn call(&self, method: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args(["--print-reply", "--dest=io.github.atm.Monitor", PATH])
            .arg(format!("{IFACE}.{method}"))
            .args(args)
            .output()
            .expect("dbus-send is installed");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn wait_ids(&self, want: &[&str]) {
        wait_until_blocking_within(
            Duration::from_secs(15),
            &format!("ListSessions to show {want:?}"),
            || self.ids().as_deref().is_some_and(|ids| ids == want),
        );
    }
}

impl Drop for FixedBus {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn dbus_mirrors_the_socket_and_survives_the_bus_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let bus_path = dir.path().join("bus");
    let bus = FixedBus::start(&bus_path);
    let d = Daemon::start_with_hooks(&basic_config(&format!(
        "[[sink]]\ntype = \"dbus\"\naddress = \"{}\"\n",
        bus.address
    )));
    d.send_hooks(&[
        hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "dbus-a", "prompt": "x", "cwd": "/tmp"})),
        hook(json!({"hook_event_name": "PermissionRequest", "session_id": "dbus-b", "tool_name": "Bash",
            "tool_input": {"command": "make"}, "cwd": "/tmp"})),
    ]);
    let listed = d.wait_sessions("two sessions", |s| s.len() == 2);
    let mut socket_ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    socket_ids.sort();
    bus.wait_ids(&socket_ids);
    // The properties agree too.
    let v = bus.list_sessions().unwrap();
    let b = &v["data"][0]["dbus-b"];
    assert_eq!(b["State"]["data"], "needs_permission", "{v}");
    assert_eq!(b["Tool"]["data"], "Bash", "{v}");

    // The bus dies: the socket side keeps serving.
    bus.kill();
    d.send_hooks(&[hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "dbus-c", "prompt": "y", "cwd": "/tmp"}))]);
    d.wait_sessions("the third session", |s| s.len() == 3);

    // A bus comes back at the same address: atmd re-registers with the current sessions.
    let bus2 = FixedBus::start(&bus_path);
    bus2.wait_ids(&["dbus-a", "dbus-b", "dbus-c"]);
    assert!(d.log().contains("dbus"), "the outage is logged");
}

fn with_dbus(bus: &FixedBus) -> Daemon {
    Daemon::start(&basic_config(&format!(
        "[[sink]]\ntype = \"dbus\"\naddress = \"{}\"\n",
        bus.address
    )))
}

#[test]
fn a_waiting_hook_is_approved_denied_and_answered_over_dbus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = FixedBus::start(&dir.path().join("bus"));
    let d = with_dbus(&bus);
    let rule = json!({"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "cargo test:*"}],
        "behavior": "allow", "destination": "localSettings"});
    let hook = WaitingHook::start(
        &d,
        permission(
            "db1",
            "cargo test",
            json!({"permission_suggestions": [rule]}),
        ),
    );
    let (id, request) = bus.answerable();
    assert_eq!(id.len(), 32, "{request}");
    assert_eq!(request["SessionId"]["data"], "db1", "{request}");
    assert_eq!(request["Tool"]["data"], "Bash", "{request}");
    assert_eq!(request["Detail"]["data"], "cargo test", "{request}");
    assert_eq!(request["Reason"]["data"], "permission", "{request}");
    assert_eq!(
        request["Rules"]["data"].as_array().unwrap().len(),
        1,
        "{request}"
    );

    // Approved "always": the hook echoes the offered rule to Claude.
    let reply = bus
        .call("Approve", &[&format!("string:{id}"), "boolean:true"])
        .unwrap();
    assert!(reply.contains("string \"db1\""), "{reply}");
    assert_eq!(
        decision_of(hook),
        json!({"behavior": "allow", "updatedPermissions": [rule]})
    );
    // Audited with the D-Bus surface and the caller's uid, kept in the snapshot.
    let snapshot = d.state_dir().join("sessions.json");
    let uid = rustix::process::getuid().as_raw();
    wait_until_blocking_within(
        Duration::from_secs(10),
        "the D-Bus answer in the snapshot",
        || {
            std::fs::read_to_string(&snapshot).is_ok_and(|s| {
                s.contains(&id)
                    && s.contains("\"name\":\"dbus\"")
                    && s.contains(&format!("\"uid\":{uid}"))
            })
        },
    );
    // A second answer is refused, by name.
    let again = bus
        .call(
            "Deny",
            &[&format!("string:{id}"), "string:", "boolean:false"],
        )
        .unwrap_err();
    assert!(
        again.contains("io.github.atm.Monitor1.Error.AlreadyAnswered"),
        "{again}"
    );

    // Denied with a message that Claude reads.
    let hook = WaitingHook::start(&d, permission("db1", "rm -rf /", json!({})));
    let (id, _) = bus.answerable();
    let reply = bus.call(
        "Deny",
        &[
            &format!("string:{id}"),
            "string:use cargo clean",
            "boolean:true",
        ],
    );
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(
        decision_of(hook),
        json!({"behavior": "deny", "message": "use cargo clean", "interrupt": true})
    );

    // A question answered by the label of a choice.
    let input = json!({"questions": [{"question": "Which database?", "header": "DB", "multiSelect": false,
        "options": [{"label": "Postgres", "description": "server"}, {"label": "SQLite", "description": "file"}]}]});
    let hook = WaitingHook::start(
        &d,
        json!({"hook_event_name": "PermissionRequest", "session_id": "db2",
            "tool_name": "AskUserQuestion", "tool_input": input}),
    );
    let (id, request) = bus.answerable();
    assert_eq!(request["Reason"]["data"], "question", "{request}");
    assert_eq!(
        request["Questions"]["data"][0][2],
        json!(["Postgres", "SQLite"]),
        "{request}"
    );
    let reply = bus.call("Answer", &[&format!("string:{id}"), "array:string:SQLite"]);
    assert!(reply.is_ok(), "{reply:?}");
    let decision = decision_of(hook);
    assert_eq!(decision["behavior"], "allow");
    assert_eq!(
        decision["updatedInput"]["answers"],
        json!({"Which database?": "SQLite"})
    );
}

#[test]
fn dbus_refusals_are_named_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = FixedBus::start(&dir.path().join("bus"));
    let d = with_dbus(&bus);
    bus.wait_ids(&[]);
    let err = |method: &str, args: &[&str]| bus.call(method, args).unwrap_err();
    let unknown = format!("string:{}", "0".repeat(32));
    assert!(err("Approve", &[&unknown, "boolean:false"]).contains("Error.NotFound"));
    assert!(err("Approve", &["string:../x", "boolean:false"]).contains("Error.Invalid"));

    let mut hook = WaitingHook::start(&d, permission("dr1", "make", json!({})));
    let (id, _) = bus.answerable();
    let sid = format!("string:{id}");
    // No rule offered, and not a question: refused, still waiting.
    assert!(err("Approve", &[&sid, "boolean:true"]).contains("Error.Invalid"));
    assert!(err("Answer", &[&sid, "array:string:x"]).contains("Error.Invalid"));
    assert!(hook.still_waiting());

    // The hook goes away: shown, but nothing can deliver an answer.
    hook.child.kill().unwrap();
    hook.child.wait().unwrap();
    wait_until_blocking_within(
        Duration::from_secs(10),
        "the request not answerable",
        || {
            bus.requests()
                .and_then(|r| r.get(&id).cloned())
                .is_some_and(|r| !r_answerable(&r))
        },
    );
    let e = err("Approve", &[&sid, "boolean:false"]);
    assert!(e.contains("Error.NotAnswerable"), "{e}");
}
