//! Compatibility with the published `atm` client (crates.io `atm` 0.2.7): its `atm list` and
//! `atm status` must show a session fed through our `atm-hook` into our `atmd`.
//!
//! The client is installed once with `cargo install atm --version 0.2.7` into
//! `target/atm-client-0.2.7/` and reused by later runs. Set `ATM_SKIP_PUBLISHED_CLIENT=1` to skip
//! this test where crates.io cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::path::PathBuf;
use std::process::{Command, Stdio};

use atm_core::testing::spawn_with_input;
use atm_tests::{Daemon, FakeAgent, basic_config, bin_dir};
use serde_json::{Value, json};

const VERSION: &str = "0.2.7";

fn published_client() -> PathBuf {
    let root = bin_dir()
        .parent()
        .unwrap()
        .join(format!("atm-client-{VERSION}"));
    let atm = root.join("bin/atm");
    if atm.exists() {
        return atm;
    }
    // Its own target dir: never contend with the build lock of the running `cargo test`.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["install", "atm", "--locked", "--version", VERSION, "--root"])
        .arg(&root)
        .env("CARGO_TARGET_DIR", root.join("build"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo install atm@{VERSION} failed");
    let _ = std::fs::remove_dir_all(root.join("build"));
    atm
}

#[test]
fn published_atm_list_and_status_show_a_session_fed_through_atm_hook() {
    if std::env::var_os("ATM_SKIP_PUBLISHED_CLIENT").is_some() {
        eprintln!("skipped: ATM_SKIP_PUBLISHED_CLIENT is set");
        return;
    }
    let atm = published_client();
    let d = Daemon::start_with_hooks(&basic_config(""));
    let agent = FakeAgent::spawn();
    let sid = "0b7c2a1e-5d4f-4e8a-9c3b-2f1d6e7a8b9c";
    for event in [
        json!({"hook_event_name": "SessionStart", "session_id": sid, "source": "startup", "cwd": "/tmp/prj", "pid": agent.pid()}),
        json!({"hook_event_name": "UserPromptSubmit", "session_id": sid, "prompt": "add tests", "cwd": "/tmp/prj", "pid": agent.pid()}),
        json!({"hook_event_name": "PermissionRequest", "session_id": sid, "tool_name": "Bash",
               "tool_input": {"command": "cargo test"}, "cwd": "/tmp/prj", "pid": agent.pid()}),
    ] {
        let mut hook = d.command("atm-hook");
        hook.env("TMUX_PANE", "%9")
            .env("ATM_HOOK_DECISION_WAIT_SECS", "0")
            .stdout(Stdio::null());
        let mut hook = spawn_with_input(&mut hook, event.to_string().as_bytes());
        assert!(hook.wait().unwrap().success());
    }
    d.wait_sessions("the permission request", |s| {
        s.first().is_some_and(|x| x["state"] == "needs_permission")
    });

    let run = |args: &[&str]| {
        let mut cmd = Command::new(&atm);
        for (k, v) in d.env() {
            cmd.env(k, v);
        }
        let out = cmd.args(args).env("RUST_LOG", "off").output().unwrap();
        assert!(
            out.status.success(),
            "atm {args:?} failed: {}\natmd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Value = serde_json::from_str(&run(&["list", "--format", "json"])).unwrap();
    let s = listed
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == sid))
        .unwrap_or_else(|| panic!("session missing from atm list: {listed}"));
    assert_eq!(s["status"], "attention_needed");
    assert_eq!(s["tmux_pane"], "%9");
    assert_eq!(s["working_directory"], "/tmp/prj");
    assert_eq!(s["harness"], "claude");

    let table = run(&["list"]);
    assert!(table.contains("0b7c2a1e"), "{table}");
    let status = run(&["status"]);
    assert!(
        status.contains("1!"),
        "atm status should count one session needing attention: {status}"
    );
    assert!(status.contains('$'), "{status}");
}
