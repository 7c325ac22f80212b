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
fn recorded(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("agents/recorded/claude-2.1.332")
        .join(sub);
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
    for (name, payload) in recorded("") {
        let data: Value = serde_json::from_slice(&payload).unwrap();
        let statusline = name.ends_with("StatusLine");
        run_hook(&d, &payload, statusline);
        let want = if statusline {
            last
        } else {
            expected_state(&name)
        };
        // Claude 2.1.332's status lines after the first request report its prompt cache (cold
        // in this short session).
        let reports_cache = statusline && data["prompt_cache"].is_object();
        let cache_shown = |s: &Value| !reports_cache || s["prompt_cache"]["warm"] == false;
        let sessions = d.wait_sessions(&format!("{name} -> {want:?}"), |all| match want {
            Some(state) => all.len() == 1 && all[0]["state"] == state && cache_shown(&all[0]),
            None => all.is_empty(),
        });
        if let (Some(s), false) = (sessions.first(), statusline) {
            // The turn is Claude's `prompt_id`, which every hook of a turn carries.
            assert_eq!(s["turn_id"], data["prompt_id"], "{name}: {s:#}");
        }
        if let Some(s) = sessions.first() {
            assert_eq!(s["harness"], "claude");
            assert_eq!(s["tmux_pane"], "%4");
            assert!(
                s["model_id"].as_str().is_some(),
                "{name}: the model is known"
            );
        }
        if reports_cache {
            let s = &sessions[0]["prompt_cache"];
            assert!(s["requests"].as_u64() >= Some(1), "{s:#}");
            assert!(s.get("expires_at").is_none(), "{s:#}");
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
            // What "always allow" would add, as Claude offered it, kept for an answer from
            // outside.
            let suggestions = &s["attention"]["suggestions"];
            assert_eq!(
                suggestions[0]["label"], "add directory /tmp/exp for this session",
                "{s:#}"
            );
            assert_eq!(suggestions[0]["rule"], data["permission_suggestions"][0]);
        }
        last = want;
    }
    assert!(!d.log().contains("parse_error"), "{}", d.log());
}

/// Replays one of the background recordings (the hooks Claude sent, as it sent them) through
/// the real `atm-hook`; after each payload atm must say `want[i]` (state, activity detail).
/// The task notification Claude sends itself is not the user's words: `first_prompt` stays.
fn replay_background(sub: &str, first_prompt: &str, want: &[(&str, Option<&str>)]) {
    let d = Daemon::start(&basic_config(""));
    let payloads = recorded(sub);
    assert_eq!(
        payloads.len(),
        want.len(),
        "{sub}: one expectation per payload"
    );
    for ((name, payload), (state, activity)) in payloads.into_iter().zip(want) {
        run_hook(&d, &payload, false);
        d.wait_sessions(&format!("{sub}/{name} -> {state} {activity:?}"), |all| {
            all.len() == 1
                && all[0]["state"] == *state
                && all[0]["activity_detail"].as_str() == *activity
        });
    }
    let all = d.wait_sessions("the session", |all| all.len() == 1);
    assert_eq!(all[0]["first_prompt"], first_prompt, "{:#}", all[0]);
}

#[test]
fn a_background_subagent_is_working_until_claude_goes_on_by_itself() {
    // Claude Code 2.1.332: `Agent` runs in the background, `Stop` lists it as running, the
    // screen says "Waiting for 1 background agent to finish"; when it ends Claude goes on with
    // a `<task-notification>` prompt, and only then is the turn over.
    replay_background(
        "background-agent",
        "please AGENT take a NAP",
        &[
            ("starting", None),
            ("working", Some("Thinking")),
            ("working", Some("Agent")),
            ("working", Some("Agent")),
            ("working", Some("Thinking")),
            ("working", Some("Background: agent Scripted subagent")),
            ("working", Some("Background: agent Scripted subagent")),
            ("working", Some("Thinking")),
            ("idle", None),
        ],
    );
}

#[test]
fn a_background_shell_ends_the_turn_and_stays_shown_until_it_exits() {
    // The screen: "done · 1 shell still running"; Claude reads the shell's end by itself.
    replay_background(
        "background-shell",
        "please BG sleep 6",
        &[
            ("starting", None),
            ("working", Some("Thinking")),
            ("working", Some("Bash")),
            ("working", Some("Thinking")),
            ("idle", Some("Background: shell sleep 6")),
            ("working", Some("Thinking")),
            ("idle", None),
        ],
    );
}
