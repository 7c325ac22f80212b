//! `atmctl doctor` end to end: the real atmctl reading agent settings written by the real
//! `atmctl setup`, and asking the real atmd what it has seen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use atm_tests::{Daemon, FakeAgent, basic_config, bin, hook};
use serde_json::{Value, json};

/// Agent homes under `dir`, as setup and doctor find them through the agents' own variables.
fn with_homes(mut cmd: Command, dir: &Path) -> Command {
    cmd.env("CLAUDE_CONFIG_DIR", dir.join("claude"))
        .env("CODEX_HOME", dir.join("codex"))
        .env("GEMINI_CLI_HOME", dir.join("gemini-home"))
        .env("PI_CODING_AGENT_DIR", dir.join("pi-agent"))
        .arg("--hook-command")
        .arg(bin("atm-hook"));
    cmd
}

fn doctor(d: &Daemon, dir: &Path, json: bool) -> Output {
    let mut cmd = d.command("atmctl");
    cmd.arg("doctor");
    if json {
        cmd.arg("--json");
    }
    with_homes(cmd, dir).output().unwrap()
}

fn setup(d: &Daemon, dir: &Path, agent: &str) {
    let mut cmd = d.command("atmctl");
    cmd.args(["setup", agent]);
    let out = with_homes(cmd, dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn agent<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == name)
        .unwrap()
}

#[test]
fn doctor_tells_setup_and_arrival_per_agent_and_the_fix() {
    let d = Daemon::start(&basic_config(""));
    let dir = tempfile::tempdir().unwrap();
    let homes = dir.path();

    // Nothing set up: not an error (the agent may not be used here), but each says how.
    let o = doctor(&d, homes, false);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("atmd: answering"), "{out}");
    assert!(out.contains("claude: not set up"), "{out}");
    assert!(out.contains("fix: run `atmctl setup codex`"), "{out}");
    assert!(out.contains("fix: run `atmctl setup pi`"), "{out}");

    // Set up, no session yet: the user learns to start (or restart) the agent.
    setup(&d, homes, "claude");
    setup(&d, homes, "codex");
    let report: Value = serde_json::from_slice(&doctor(&d, homes, true).stdout).unwrap();
    assert_eq!(report["daemon"]["answering"], true, "{report:#}");
    let claude = agent(&report, "claude");
    assert_eq!(claude["setup"], "set up", "{report:#}");
    assert_eq!(claude["sessions"], 0);
    assert!(
        claude["fix"].as_str().unwrap().contains("start one"),
        "{report:#}"
    );
    let codex = agent(&report, "codex");
    assert_eq!(codex["setup"], "set up", "{report:#}");
    // pi's extension is a file of atm's own: set up once `atmctl setup pi` wrote it.
    let mut cmd = d.command("atmctl");
    cmd.args(["setup", "pi"])
        .env("PI_CODING_AGENT_DIR", homes.join("pi-agent"));
    assert!(cmd.output().unwrap().status.success());
    let report: Value = serde_json::from_slice(&doctor(&d, homes, true).stdout).unwrap();
    assert_eq!(agent(&report, "pi")["setup"], "set up", "{report:#}");
    let extension = homes.join("pi-agent/extensions/atm.ts");
    std::fs::write(&extension, "// atm's pi extension: an older one\n").unwrap();
    let report: Value = serde_json::from_slice(&doctor(&d, homes, true).stdout).unwrap();
    assert_eq!(agent(&report, "pi")["setup"], "partly set up", "{report:#}");
    assert!(cmd.output().unwrap().status.success(), "setup replaces it");
    assert!(
        codex["fix"].as_str().unwrap().contains("/hooks"),
        "{report:#}"
    );

    // An event arrives: doctor says when, and has nothing to fix for Claude.
    let a = FakeAgent::spawn();
    d.send_hooks(&[hook(json!({
        "session_id": "doctor-1", "hook_event_name": "SessionStart", "source": "startup",
        "cwd": "/w", "pid": a.pid(),
    }))]);
    d.wait_sessions("the hooked session", |s| s.len() == 1);
    let report: Value = serde_json::from_slice(&doctor(&d, homes, true).stdout).unwrap();
    let claude = agent(&report, "claude");
    assert_eq!(claude["sessions"], 1, "{report:#}");
    assert!(claude["last_event"].is_string(), "{report:#}");
    assert!(claude["fix"].is_null(), "{report:#}");

    // A hook removed by hand: partly set up, which is trouble (exit 1), with the fix.
    let settings = homes.join("claude/settings.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    s["hooks"].as_object_mut().unwrap().remove("Stop").unwrap();
    std::fs::write(&settings, s.to_string()).unwrap();
    let o = doctor(&d, homes, false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("claude: partly set up"), "{out}");
    assert!(out.contains("atmctl setup claude"), "{out}");

    // Another notify program in Codex's config: partly set up, and `--force` is named.
    let config = homes.join("codex/config.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml
        .lines()
        .filter(|l| !l.starts_with("notify"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, format!("notify = [\"my-notifier\"]\n{toml}\n")).unwrap();
    let out = text(&doctor(&d, homes, false));
    assert!(out.contains("codex: partly set up"), "{out}");
    assert!(out.contains("--force"), "{out}");

    // Unreadable settings are reported with where, never rewritten.
    let gemini = homes.join("gemini-home/.gemini/settings.json");
    std::fs::create_dir_all(gemini.parent().unwrap()).unwrap();
    std::fs::write(&gemini, "{ \"hooks\": ").unwrap();
    let out = text(&doctor(&d, homes, false));
    assert!(out.contains("gemini: settings unreadable"), "{out}");
    assert_eq!(std::fs::read_to_string(&gemini).unwrap(), "{ \"hooks\": ");
}

#[test]
fn doctor_without_a_daemon_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("atmctl"));
    cmd.args(["doctor", "--socket"])
        .arg(dir.path().join("no-atmd.sock"));
    let o = with_homes(cmd, dir.path()).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("atmd: not answering"), "{out}");
    assert!(out.contains("atmd is not running"), "{out}");
    assert!(out.contains("start it with `atmd`"), "{out}");
}
