//! The real `atm-hook` binary against real Unix sockets: what arrives, and that it stays silent,
//! exits 0 and returns quickly whatever the daemon or the input does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Collector, spawn_with_input};

const HOOK: &str = env!("CARGO_BIN_EXE_atm-hook");
/// Generous: the 50 ms budget is checked by the benchmark, not by timing-sensitive tests.
const BOUND: Duration = Duration::from_secs(1);

const PRE_TOOL_USE: &str = r#"{"session_id":"8e11bfb5-7dc2-432b-9206-928fa5c35731","transcript_path":"/tmp/t.jsonl","cwd":"/home/u/src/app","permission_mode":"default","hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"cargo test"},"tool_use_id":"toolu_01"}"#;

/// Runs `program` with `args`, `stdin` and `ATM_HOOKS_SOCKET=socket`; returns its output and
/// wall time.
fn run_with(
    program: &Path,
    args: &[&str],
    stdin: &[u8],
    socket: &Path,
    env: &[(&str, &str)],
) -> (Output, Duration) {
    let start = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("ATM_HOOKS_SOCKET", socket)
        .env_remove("TMUX_PANE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A thread: atm-hook may stop reading early, and the test must not care.
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let elapsed = start.elapsed();
    feeder.join().unwrap();
    (out, elapsed)
}

fn run(args: &[&str], stdin: &[u8], socket: &Path, env: &[(&str, &str)]) -> (Output, Duration) {
    run_with(Path::new(HOOK), args, stdin, socket, env)
}

/// Exit 0, nothing on stdout, within the bound.
fn assert_silent(what: &str, (out, elapsed): (Output, Duration)) {
    assert!(out.status.success(), "{what}: {:?}", out.status);
    assert!(
        out.stdout.is_empty(),
        "{what}: printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(elapsed < BOUND, "{what}: took {elapsed:?}");
}

#[test]
fn event_arrives_with_pid_and_tmux_pane() {
    let daemon = Collector::start();
    assert_silent(
        "live daemon",
        run(
            &[],
            PRE_TOOL_USE.as_bytes(),
            &daemon.path,
            &[("TMUX_PANE", "%42")],
        ),
    );
    let msg = daemon.next();
    assert_eq!(msg["type"], "hook_event");
    assert_eq!(
        msg["protocol_version"],
        serde_json::json!({"major": 1, "minor": 1})
    );
    assert!(msg.get("agent").is_none());
    assert!(msg.get("want_reply").is_none());
    let data = &msg["data"];
    assert_eq!(data["session_id"], "8e11bfb5-7dc2-432b-9206-928fa5c35731");
    assert_eq!(data["tool_input"]["command"], "cargo test");
    assert_eq!(data["tmux_pane"], "%42");
    // No claude among our ancestors: the parent, this test process.
    assert_eq!(data["pid"], std::process::id());

    // Another agent's route, and no pane outside tmux.
    assert_silent(
        "--agent",
        run(
            &["--agent", "codex"],
            PRE_TOOL_USE.as_bytes(),
            &daemon.path,
            &[],
        ),
    );
    let msg = daemon.next();
    assert_eq!(msg["agent"], "codex");
    assert!(msg["data"].get("tmux_pane").is_none());
}

#[test]
fn pid_is_the_claude_ancestor_behind_a_shell() {
    let daemon = Collector::start();
    let bin = tempfile::tempdir().unwrap();
    // A shell that the kernel names `claude`; `; true` keeps it from exec'ing the hook, so the
    // hook's parent is a second shell level just as when Claude runs `sh -c`.
    let claude = bin.path().join("claude");
    std::os::unix::fs::symlink("/bin/sh", &claude).unwrap();
    let script = format!("sh -c '{HOOK}; true'; true");
    let start = Instant::now();
    let child = spawn_with_input(
        Command::new(&claude)
            .args(["-c", &script])
            .env("ATM_HOOKS_SOCKET", &daemon.path),
        PRE_TOOL_USE.as_bytes(),
    );
    let claude_pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(start.elapsed() < BOUND * 5);
    assert_eq!(daemon.next()["data"]["pid"], claude_pid);
}

#[test]
fn daemon_down_is_silent_and_quick() {
    let dir = tempfile::tempdir().unwrap();
    assert_silent(
        "no socket",
        run(
            &[],
            PRE_TOOL_USE.as_bytes(),
            &dir.path().join("none.sock"),
            &[],
        ),
    );
    // A socket file nobody listens on (a crashed daemon).
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert_silent(
        "stale socket",
        run(&[], PRE_TOOL_USE.as_bytes(), &stale, &[]),
    );
    // Not a socket at all, and an unusable path.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert_silent(
        "regular file",
        run(&[], PRE_TOOL_USE.as_bytes(), &file, &[]),
    );
    let long = dir.path().join("x".repeat(200));
    assert_silent(
        "path too long",
        run(&[], PRE_TOOL_USE.as_bytes(), &long, &[]),
    );
}

/// A valid event of about 900 KiB: under the 1 MiB cap, over any socket buffer. The blob is in
/// `tool_input`, which atm-hook forwards (a big `tool_response` would be stripped).
fn big_event() -> Vec<u8> {
    let blob = "x".repeat(900 * 1024);
    format!(
        r#"{{"session_id":"s","hook_event_name":"PreToolUse","tool_input":{{"content":"{blob}"}}}}"#
    )
    .into_bytes()
}

#[test]
fn stuck_daemon_that_accepts_and_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, held) = mpsc::channel::<UnixStream>();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            // Keep every connection open, unread.
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    let big = big_event();
    for i in 0..4 {
        assert_silent(&format!("big event {i}"), run(&[], &big, &path, &[]));
    }
    assert_silent("small event", run(&[], PRE_TOOL_USE.as_bytes(), &path, &[]));
    assert!(
        held.recv_timeout(Duration::from_secs(5)).is_ok(),
        "never connected"
    );
}

#[test]
fn stuck_daemon_that_never_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let big = big_event();
    for i in 0..3 {
        assert_silent(&format!("big event {i}"), run(&[], &big, &path, &[]));
    }
}

#[test]
fn bad_input_is_dropped_silently() {
    let daemon = Collector::start();
    // 2 MiB that stripping cannot shrink (a forwarded field), so over the daemon's line limit.
    let two_mib = format!(
        r#"{{"session_id":"s","hook_event_name":"PreToolUse","tool_input":{{"content":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    )
    .into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"not json at all {{{".to_vec()),
        ("truncated", PRE_TOOL_USE.as_bytes()[..60].to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        ("non-UTF-8", b"{\"session_id\":\"\xff\xfe\"}".to_vec()),
        ("2 MiB", two_mib),
        ("NUL bytes", vec![0u8; 4096]),
    ];
    for (what, input) in &cases {
        assert_silent(what, run(&[], input, &daemon.path, &[]));
        assert_silent(what, run(&["--agent"], input, &daemon.path, &[]));
    }
    daemon.assert_nothing();
    // Unknown arguments change nothing: still silent, and a good event still goes through.
    assert_silent(
        "odd arguments",
        run(
            &["--bogus", "-x", "--agent=claude"],
            PRE_TOOL_USE.as_bytes(),
            &daemon.path,
            &[],
        ),
    );
    assert_eq!(daemon.next()["type"], "hook_event");
}

const STATUS: &str = r#"{"session_id":"s1","model":{"id":"claude-opus-4-6","display_name":"Opus 4.6"},"cost":{"total_cost_usd":0.42},"context_window":{"context_window_size":200000,"used_percentage":42}}"#;

#[test]
fn statusline_passes_the_users_output_through_byte_for_byte() {
    let daemon = Collector::start();
    let script = r#"printf '\033[1;32mfirst\033[0m line\n  second  \n\tthird'"#;
    let (out, elapsed) = run(
        &["statusline", "--", script],
        STATUS.as_bytes(),
        &daemon.path,
        &[],
    );
    assert!(out.status.success() && elapsed < BOUND);
    assert_eq!(
        out.stdout,
        b"\x1b[1;32mfirst\x1b[0m line\n  second  \n\tthird"
    );
    // The status line still reached the daemon, without asking for a reply nobody reads.
    let msg = daemon.next();
    assert_eq!(msg["type"], "status_update");
    assert_eq!(msg["data"]["session_id"], "s1");
    assert!(msg.get("want_reply").is_none());

    // The command gets the same stdin bytes; an argv runs without a shell.
    let (out, _) = run(
        &["statusline", "--", "cat"],
        STATUS.as_bytes(),
        &daemon.path,
        &[],
    );
    assert_eq!(out.stdout, STATUS.as_bytes());
    let (out, _) = run(
        &["statusline", "--", "printf", "%s|%s\\n", "a b", "$HOME"],
        STATUS.as_bytes(),
        &daemon.path,
        &[],
    );
    assert_eq!(out.stdout, b"a b|$HOME\n");
}

#[test]
fn statusline_default_line_with_daemon_down() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    let (out, elapsed) = run(&["statusline"], STATUS.as_bytes(), &none, &[]);
    assert!(out.status.success() && elapsed < BOUND);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Opus 4.6 · 42% · $0.42\n"
    );
    // A failing or silent user command, garbage input, no input: never a blank line.
    for (args, input) in [
        (&["statusline", "--", "exit 3"][..], STATUS.as_bytes()),
        (
            &["statusline", "--", "printf '  \\n'"][..],
            STATUS.as_bytes(),
        ),
        (
            &["statusline", "--", "/nonexistent/program", "x"][..],
            STATUS.as_bytes(),
        ),
        (&["statusline"][..], b"garbage \xff"),
        (&["statusline", "--", "echo hi"][..], b""),
    ] {
        let (out, elapsed) = run(args, input, &none, &[]);
        assert!(out.status.success() && elapsed < BOUND, "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.ends_with('\n') && !text.trim().is_empty(),
            "{args:?}: {text:?}"
        );
    }
}

#[test]
fn statusline_default_line_uses_the_daemons_state() {
    let reply = r#"{"type":"session_updated","session":{"id":"s1","state":"needs_permission","model":"Opus 4.6","cost_usd":0.5}}"#;
    let daemon = Collector::with_reply(Some(reply.to_owned()));
    // The reply must come within atm-hook's 50 ms budget, which a loaded machine can miss now
    // and then: a few tries, of which one must show the daemon's state.
    let mut lines = Vec::new();
    for _ in 0..5 {
        let (out, elapsed) = run(&["statusline"], STATUS.as_bytes(), &daemon.path, &[]);
        assert!(out.status.success() && elapsed < BOUND);
        let msg = daemon.next();
        assert_eq!(msg["type"], "status_update");
        assert_eq!(msg["want_reply"], true);
        lines.push(String::from_utf8(out.stdout).unwrap());
        if lines.last().is_some_and(|l| l.contains("needs permission")) {
            break;
        }
    }
    common::assert_last_try(&lines, "Opus 4.6 · 42% · $0.42 · needs permission\n");

    // An error reply is no reply.
    let daemon = Collector::with_reply(Some(
        r#"{"type":"error","message":"x","code":"parse_error"}"#.to_owned(),
    ));
    let (out, _) = run(&["statusline"], STATUS.as_bytes(), &daemon.path, &[]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Opus 4.6 · 42% · $0.42\n"
    );
}

#[test]
fn statusline_with_a_daemon_that_never_replies() {
    let daemon = Collector::start();
    let (out, elapsed) = run(&["statusline"], STATUS.as_bytes(), &daemon.path, &[]);
    assert!(out.status.success() && elapsed < BOUND);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Opus 4.6 · 42% · $0.42\n"
    );
}
