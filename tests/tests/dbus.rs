//! The D-Bus sink inside the real daemon: what D-Bus tools see equals what socket clients see,
//! and a bus that dies and comes back never disturbs the rest of the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use atm_core::testing::wait_until_blocking_within;
use atm_tests::{Daemon, basic_config, hook};
use serde_json::{Value, json};

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
