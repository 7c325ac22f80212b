//! Liveness latency (issue 14): how soon atmd shows that an agent exited, and that a new session
//! began, from its first hook and from Claude's session file, as a protocol-v1 subscriber of
//! the real atmd reads it.
//!
//! - exit: the agent process is killed -> `session_removed` (a pidfd per agent process; the
//!   target is 100 ms, where polling took up to the scan interval);
//! - first hook: the `SessionStart` line is written -> the session's first `session_updated`;
//! - session file: a process named `claude` starts and writes `~/.claude/sessions/<pid>.json`
//!   -> the session with that file's id (an inotify watch wakes discovery; the target is 250 ms,
//!   where the scan interval is 2 s while agents run and 10 s while none do).
//!
//! Run: `cargo build --release -p atm-daemon -p atm-cli --bins` then
//! `cargo bench -p atm-tests --bench liveness` (`./scripts/bench` does both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark, not the daemon

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use atm_tests::{Daemon, FakeAgent, basic_config, hook, subscribe_stamped, wait_line};
use serde_json::{Value, json};

/// Samples of each measure.
const ROUNDS: usize = 40;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn is_session(v: &Value, id: &str) -> bool {
    v["type"] == "session_updated" && v["session"]["id"] == id
}

fn is_removed(v: &Value, id: &str) -> bool {
    v["type"] == "session_removed" && v["session_id"] == id
}

fn kill(mut child: Child) -> Instant {
    let t0 = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    t0
}

fn main() {
    let d = Daemon::start_with_hooks(&basic_config(
        "[[adapter]]\ntype = \"proc-discovery\"\ninterval = \"2s\"\nidle_interval = \"10s\"\n",
    ));
    let sessions_dir = d.dir.path().join("home/.claude/sessions");
    std::fs::create_dir_all(&sessions_dir).unwrap();
    let bin = tempfile::tempdir().unwrap();
    // A copy of `sleep` called `claude`, which discovery takes for Claude Code.
    let claude = atm_core::testing::ingest::sleep_named(bin.path(), "claude");
    let sub = subscribe_stamped(&d.query_socket());
    // Discovery's first pass has run (and watches the sessions dir) once it found an agent.
    let warmup = Command::new(&claude).arg("600").spawn().unwrap();
    let warm_id = format!("pending-{}", warmup.id());
    wait_line(&sub, |v| is_session(v, &warm_id));
    kill(warmup);
    wait_line(&sub, |v| is_removed(v, &warm_id));

    let (mut hook_ms, mut file_ms) = (Vec::new(), Vec::new());
    let (mut hooked_exit_ms, mut found_exit_ms) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // A hooked agent: first hook, then its exit.
        let agent = FakeAgent::spawn();
        let id = format!("hooked-{round}");
        let t0 = Instant::now();
        d.send_hooks(&[hook(json!({
            "session_id": id, "hook_event_name": "SessionStart", "cwd": "/w",
            "pid": agent.pid(), "source": "startup",
        }))]);
        hook_ms.push(wait_line(&sub, |v| is_session(v, &id)) - t0);
        let t0 = Instant::now();
        drop(agent);
        hooked_exit_ms.push(wait_line(&sub, |v| is_removed(v, &id)) - t0);

        // A Claude that writes its session file before any hook.
        let child = Command::new(&claude).arg("600").spawn().unwrap();
        let pid = child.id();
        let id = format!("from-file-{round}");
        let now_ms = atm_core::chrono::Utc::now().timestamp_millis();
        let t0 = Instant::now();
        std::fs::write(
            sessions_dir.join(format!("{pid}.json")),
            format!(r#"{{"pid":{pid},"sessionId":"{id}","startedAt":{now_ms},"status":"idle"}}"#),
        )
        .unwrap();
        file_ms.push(wait_line(&sub, |v| is_session(v, &id)) - t0);
        let t0 = kill(child);
        found_exit_ms.push(wait_line(&sub, |v| is_removed(v, &id)) - t0);
        let _ = std::fs::remove_file(sessions_dir.join(format!("{pid}.json")));
    }
    for v in [
        &mut hook_ms,
        &mut file_ms,
        &mut hooked_exit_ms,
        &mut found_exit_ms,
    ] {
        v.sort();
    }
    println!(
        "# liveness: {ROUNDS} rounds, {} cores (the event -> the subscriber's line)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| measure | samples | p50 ms | p99 ms | max ms | target |");
    println!("|---|---|---|---|---|---|");
    for (what, v, target) in [
        (
            "hooked agent's exit -> `session_removed`",
            &hooked_exit_ms,
            "100 ms",
        ),
        (
            "discovered Claude's exit -> `session_removed`",
            &found_exit_ms,
            "100 ms",
        ),
        ("first hook -> session shown", &hook_ms, "250 ms"),
        ("Claude session file -> session shown", &file_ms, "250 ms"),
    ] {
        println!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {target} |",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
}
