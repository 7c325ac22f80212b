//! The real `atmd` binary: its commands, signals, reload, single-instance lock and restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::process::Command;
use std::time::Duration;

use atm_core::testing::wait_until_blocking;
use atm_tests::{Daemon, FakeAgent, basic_config, bin, find, hook, status, stdout_of};
use rustix::process::Signal;
use serde_json::json;

#[test]
fn plugins_lists_every_compiled_in_plugin_with_its_sample() {
    let text = stdout_of(Command::new(bin("atmd")).arg("plugins"));
    for name in [
        "claude-hooks",
        "claude-statusline",
        "proc-discovery",
        "socket",
        "dbus",
        "notify",
    ] {
        assert!(
            text.contains(&format!("type = \"{name}\"")),
            "sample for {name} missing:\n{text}"
        );
    }
    let v = Command::new(bin("atmd")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("atmd "));
}

#[test]
fn check_config_accepts_good_files_and_locates_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, basic_config("")).unwrap();
    let out = stdout_of(
        Command::new(bin("atmd"))
            .args(["check-config", "--config"])
            .arg(&good),
    );
    assert!(out.contains("OK"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[sink]]\ntype = \"sokcet\"\n").unwrap();
    let out = Command::new(bin("atmd"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:8:", bad.display())), "{err}");
    assert!(
        err.contains("available sinks: dbus, http, nats, notify, socket"),
        "{err}"
    );

    // The embedded default is valid too (no config file anywhere).
    let out = stdout_of(
        Command::new(bin("atmd"))
            .arg("check-config")
            .env_remove("ATM_CONFIG")
            .env("XDG_CONFIG_HOME", dir.path().join("none")),
    );
    assert!(out.contains("embedded"), "{out}");
}

#[test]
fn sigterm_stops_within_two_seconds_and_removes_sockets() {
    let mut d = Daemon::start_with_hooks(&basic_config(""));
    assert_eq!(
        std::fs::metadata(d.runtime_dir())
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o700
    );
    d.signal(Signal::TERM);
    let (code, took) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "log:\n{}", d.log());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!d.query_socket().exists(), "query socket left behind");
    assert!(!d.hooks_socket().exists(), "hooks socket left behind");
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut d = Daemon::start(&basic_config(""));
    d.signal(Signal::INT);
    let (code, _) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0));
}

#[test]
fn a_second_daemon_on_the_same_runtime_dir_exits_naming_the_first() {
    let d = Daemon::start(&basic_config(""));
    let out = d
        .command("atmd")
        .arg("--config")
        .arg(&d.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    // The first one is unharmed.
    d.client().list();
}

#[test]
fn stale_socket_files_from_a_crashed_daemon_are_replaced() {
    let mut d = Daemon::start(&basic_config(""));
    d.kill9();
    assert!(d.query_socket().exists(), "kill -9 leaves the socket file");
    d.spawn();
    d.client().list();
}

#[test]
fn sighup_reloads_keeping_unchanged_plugins_and_rejects_bad_files() {
    let d = Daemon::start(&basic_config(""));
    // A subscriber on the unchanged socket sink must survive the reload.
    let mut sub = d.client();
    sub.send(json!({"type": "subscribe"}));
    assert_eq!(sub.recv()["type"], "session_list");

    let second = d.runtime_dir().join("second.sock");
    let extra = format!(
        "[[sink]]\ntype = \"socket\"\nname = \"second\"\nsocket = \"{}\"\n",
        second.display()
    );
    std::fs::write(&d.config_path, basic_config(&extra)).unwrap();
    d.signal(Signal::HUP);
    d.wait_for_socket(&second);

    // An invalid file is rejected; the running config stays.
    std::fs::write(&d.config_path, "[[sink]]\ntype = \"nope\"\n").unwrap();
    d.signal(Signal::HUP);
    wait_until_blocking("the invalid configuration to be rejected", || {
        d.log().contains("new configuration rejected")
    });
    assert!(second.exists());
    let log = d.log();
    assert!(log.contains("new configuration rejected"), "{log}");
    assert!(log.contains("unknown sink type `nope`"), "{log}");

    // The old subscriber still receives updates.
    d.send_hooks(&[hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "after-reload", "prompt": "hi"}))]);
    let update = sub.recv();
    assert_eq!(update["type"], "session_updated", "{update}");
    assert_eq!(update["session"]["id"], "after-reload");
}

#[test]
fn restart_after_kill_9_keeps_cost_context_state_and_first_prompt() {
    let agent = FakeAgent::spawn();
    let pid = agent.pid();
    let mut d = Daemon::start_with_hooks(&basic_config(""));
    d.send_hooks(&[
        hook(json!({"hook_event_name": "SessionStart", "session_id": "persist-1", "source": "startup", "cwd": "/tmp/ünï", "pid": pid})),
        hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "persist-1", "prompt": "refactor the parser", "pid": pid})),
        status(json!({"session_id": "persist-1", "pid": pid, "model": {"id": "claude-opus-4-6", "display_name": "Opus 4.6"},
            "cost": {"total_cost_usd": 1.75}, "context_window": {"context_window_size": 200000, "used_percentage": 42.5}})),
        hook(json!({"hook_event_name": "PermissionRequest", "session_id": "persist-1", "tool_name": "Bash",
            "tool_input": {"command": "cargo publish"}, "pid": pid})),
    ]);
    d.wait_sessions("the permission request", |s| {
        find(s, "persist-1")
            .is_some_and(|x| x["state"] == "needs_permission" && x["cost_usd"] == 1.75)
    });
    // Let the debounced snapshot land (at most a second apart under changes), then crash.
    let snapshot = d.state_dir().join("sessions.json");
    wait_until_blocking("the snapshot to show the permission request", || {
        std::fs::read_to_string(&snapshot).is_ok_and(|s| s.contains("cargo publish"))
    });
    d.kill9();
    d.spawn();
    let sessions = d.wait_sessions("the restored session", |s| find(s, "persist-1").is_some());
    let s = find(&sessions, "persist-1").unwrap();
    assert_eq!(s["state"], "needs_permission");
    assert_eq!(s["cost_usd"], 1.75);
    assert_eq!(s["context_percentage"], 42.5);
    assert_eq!(s["first_prompt"], "refactor the parser");
    assert_eq!(s["model"], "Opus 4.6");
    assert_eq!(s["working_directory"], "/tmp/ünï");
    assert_eq!(s["attention"]["detail"], "cargo publish");
    assert_eq!(s["pid"], pid);

    // A session whose process died while atmd was down does not come back.
    drop(agent);
    d.signal(Signal::TERM);
    d.wait_exit(Duration::from_secs(5));
    d.spawn();
    // The snapshot is loaded (and dead processes dropped) before the query socket serves.
    d.wait_for_socket(&d.query_socket());
    assert!(d.client().list().is_empty());
}
