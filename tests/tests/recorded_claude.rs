//! Payloads recorded from the real Claude Code 2.1.332 (tests/agents/recorded/): a session
//! that approves a command, answers a question, declines a command with Esc (no hook fires for
//! that), types a new prompt and exits. Replayed in order through the real `atm-hook` into the
//! real `atmd`, the state after each one must be what the screen showed then.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use atm_tests::{Daemon, basic_config};
use serde_json::Value;

/// The recorded hook payloads, in order: `NN-<Event>.json`. Other files beside them (the
/// session file Claude wrote, which proc-discovery's tests read) are not payloads.
fn recorded() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agents/recorded/claude-2.1.332");
    let numbered = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('-'))
            .is_some_and(|(seq, _)| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(numbered)
        .collect();
    assert!(
        !files.is_empty(),
        "no recorded payloads in {}",
        dir.display()
    );
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn run_hook(d: &Daemon, payload: &[u8], statusline: bool) {
    let args: &[&str] = if statusline { &["statusline"] } else { &[] };
    d.run_hook("%4", args, payload);
}

/// What the screen showed after each recorded payload: the state atm must report, or `None`
/// once the session is over.
fn expected_state(name: &str) -> Option<&'static str> {
    let event = name.split_once('-').map_or(name, |(_, e)| e);
    match event {
        "UserPromptSubmit" | "PreToolUse" | "PostToolUse" => Some("working"),
        "PermissionRequest" => Some("needs_permission"),
        "Stop" => Some("idle"),
        "SessionEnd" => None,
        // At the prompt, before the first question.
        "SessionStart" => Some("starting"),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn the_recorded_session_replays_to_the_states_the_screen_showed() {
    let d = Daemon::start(&basic_config(""));
    let mut last = Some("starting");
    for (name, payload) in recorded() {
        let statusline = name.ends_with("StatusLine");
        run_hook(&d, &payload, statusline);
        let want = if statusline {
            last
        } else {
            expected_state(&name)
        };
        let sessions = d.wait_sessions(&format!("{name} -> {want:?}"), |all| match want {
            Some(state) => all.len() == 1 && all[0]["state"] == state,
            None => all.is_empty(),
        });
        if let Some(s) = sessions.first() {
            assert_eq!(s["harness"], "claude");
            assert_eq!(s["tmux_pane"], "%4");
            assert!(
                s["model_id"].as_str().is_some(),
                "{name}: the model is known"
            );
        }
        if name.ends_with("PermissionRequest") {
            let s: &Value = &sessions[0];
            assert_eq!(s["attention"]["tool"], "Bash", "{s:#}");
            assert!(
                s["attention"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("touch /tmp/exp/x"),
                "{s:#}"
            );
        }
        last = want;
    }
    assert!(!d.log().contains("parse_error"), "{}", d.log());
}
