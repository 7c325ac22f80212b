//! Agents end to end: realistic hook payloads for every event of Claude Code, Codex and Gemini
//! CLI, run through the real `atm-hook` binary (as the agents run it: JSON on stdin, or Codex's
//! notify argument) into the real `atmd`, checked through the query socket. The fixtures and
//! the expected states live beside each adapter (`adapters/<name>/tests/fixtures/replay.json`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::path::PathBuf;
use std::time::{Duration, Instant};

use atm_core::testing::ingest::check_replay_fields;
use atm_tests::{Daemon, basic_config};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../adapters/claude-hooks/tests/fixtures")
}

/// Runs `atm-hook` with `payload` on stdin; asserts Claude's contract: exit 0 (callers check
/// that nothing came on stdout).
fn run_hook(d: &Daemon, payload: &[u8], args: &[&str]) -> Vec<u8> {
    d.run_hook("%7", args, payload)
}

/// The view field each replay expectation names.
fn view_field<'a>(view: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    let field = match key {
        "activity" => "activity_detail",
        "last_error" => "error",
        "cwd" => "working_directory",
        "children" => "child_session_ids",
        other => other,
    };
    view.get(field).unwrap_or(&NULL)
}

fn matches(expect: &Value, sessions: &[Value]) -> Result<(), String> {
    check_replay_fields(sessions, expect.as_object().unwrap(), |view, k, want| {
        let got = view_field(view, k);
        let same = match (k, want) {
            ("children", Value::Array(a)) if a.is_empty() => got.is_null() || got == want,
            ("attention", Value::Object(w)) => {
                // Absent tool/detail are omitted on the wire.
                w.iter()
                    .all(|(wk, wv)| got.get(wk).unwrap_or(&Value::Null) == wv)
            }
            _ => got == want,
        };
        (!same).then(|| format!("{k}: got {got}, want {want}"))
    })
}

/// Replays `adapters/<adapter>/tests/fixtures/replay.json` through the real `atm-hook` (with
/// `hook_args`) into the real atmd, checking the expected sessions after every step.
fn replay_through_atm_hook(adapter: &str, hook_args: &[&str]) {
    let fixtures = fixtures().join(format!("../../../{adapter}/tests/fixtures"));
    let d = Daemon::start_with_hooks(&basic_config(
        "[[adapter]]\ntype = \"codex\"\n\n[[adapter]]\ntype = \"gemini\"\n",
    ));
    let replay: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("replay.json")).unwrap()).unwrap();
    let steps = replay["steps"].as_array().unwrap();
    assert!(steps.len() > 10, "the replay covers every event");
    let mut client = d.client();
    for (i, step) in steps.iter().enumerate() {
        let name = step["fixture"].as_str().unwrap();
        let payload = std::fs::read(fixtures.join(name)).unwrap();
        let stdout = if name.starts_with("notify.") {
            // Codex's notify program gets its JSON as the last argument, not on stdin.
            let arg = String::from_utf8(payload).unwrap();
            let mut args = hook_args.to_vec();
            args.push("--notify");
            args.push(arg.trim());
            run_hook(&d, b"", &args)
        } else {
            run_hook(&d, &payload, hook_args)
        };
        assert!(stdout.is_empty(), "atm-hook printed on stdout for {name}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut first = true;
        loop {
            let sessions = client.list();
            match matches(&step["expect"], &sessions) {
                Ok(()) => {
                    if first {
                        // Held before the event could be seen: give a no-op event time to land,
                        // so the next step cannot overtake it.
                        std::thread::sleep(Duration::from_millis(40));
                    }
                    break;
                }
                Err(e) if Instant::now() > deadline => panic!(
                    "{adapter} step {i} ({name}): {e}\nsessions: {}\natmd log tail:\n{}",
                    serde_json::to_string_pretty(&sessions).unwrap(),
                    d.log()
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            first = false;
        }
        // atm-hook adds the pane and the (agent or parent) pid.
        if let Some(s) = client.list().first() {
            assert_eq!(s["tmux_pane"], "%7", "step {name}");
            assert!(s["pid"].as_u64().is_some(), "step {name}: no pid");
        }
    }
}

#[test]
fn every_claude_hook_event_through_atm_hook_into_atmd() {
    replay_through_atm_hook("claude-hooks", &[]);
}

#[test]
fn every_codex_hook_and_notify_through_atm_hook_into_atmd() {
    replay_through_atm_hook("codex", &["--agent", "codex"]);
}

#[test]
fn every_gemini_hook_through_atm_hook_into_atmd() {
    replay_through_atm_hook("gemini", &["--agent", "gemini"]);
}

#[test]
fn status_line_through_atm_hook_shows_usage_and_keeps_idle() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let sid = "5b2c-status";
    run_hook(&d, json!({"hook_event_name": "UserPromptSubmit", "session_id": sid, "prompt": "go", "cwd": "/tmp"}).to_string().as_bytes(), &[]);
    run_hook(
        &d,
        json!({"hook_event_name": "Stop", "session_id": sid, "cwd": "/tmp"})
            .to_string()
            .as_bytes(),
        &[],
    );
    d.wait_sessions("idle", |s| s.first().is_some_and(|x| x["state"] == "idle"));
    let line = json!({
        "session_id": sid, "cwd": "/tmp", "version": "2.1.210",
        "model": {"id": "claude-sonnet-4-5[1m]", "display_name": "Sonnet 4.5 (1M context)"},
        "cost": {"total_cost_usd": 3.5, "total_duration_ms": 65000, "total_lines_added": 12, "total_lines_removed": 3},
        "context_window": {"context_window_size": 1000000, "used_percentage": 31.2,
            "current_usage": {"input_tokens": 300000, "output_tokens": 100, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 10000}}
    });
    let out = run_hook(&d, line.to_string().as_bytes(), &["statusline"]);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.trim().is_empty(), "the status line is never blank");
    let s = d.wait_sessions("usage", |s| s.first().is_some_and(|x| x["cost_usd"] == 3.5));
    let s = &s[0];
    assert_eq!(s["state"], "idle", "a status line never changes state");
    assert_eq!(s["context_percentage"], 31.2);
    assert_eq!(s["context_window_size"], 1_000_000);
    assert_eq!(s["model"], "Sonnet 4.5 (1M context)");
    assert_eq!(s["lines_display"], "+12 -3");
    assert!(
        s["context_display"].as_str().unwrap().ends_with("/1M)"),
        "{}",
        s["context_display"]
    );

    // The user's own status-line command is passed through untouched, colours and lines included.
    let out = run_hook(
        &d,
        line.to_string().as_bytes(),
        &[
            "statusline",
            "--",
            "printf",
            "\\033[31mred\\033[0m\\nsecond line\\n",
        ],
    );
    assert_eq!(out, b"\x1b[31mred\x1b[0m\nsecond line\n");
}

#[test]
fn atm_hook_is_silent_and_quick_when_the_daemon_is_down() {
    let d = Daemon::start(&basic_config(""));
    let mut d = d;
    d.kill9();
    let _ = std::fs::remove_file(d.hooks_socket());
    for payload in [
        &b"{\"hook_event_name\":\"Stop\",\"session_id\":\"x\"}"[..],
        b"garbage \xff\xfe",
        b"",
    ] {
        let t0 = Instant::now();
        let out = run_hook(&d, payload, &[]);
        assert!(out.is_empty());
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t0.elapsed()
        );
    }
    // The status line still prints something useful without the daemon.
    let out = run_hook(
        &d,
        json!({"session_id": "x", "model": {"display_name": "Opus 4.6"}})
            .to_string()
            .as_bytes(),
        &["statusline"],
    );
    assert!(!String::from_utf8_lossy(&out).trim().is_empty());
}
