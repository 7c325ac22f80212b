//! Status-bar latency: how long after a hook event `atmctl status --follow` prints the new line,
//! against the floor, a raw protocol-v1 subscriber of the same atmd reading the same change.
//!
//! Both watch every event in the same run (interleaved by construction), so the figures hold on
//! a noisy machine: the subscriber's latency is what atmd itself costs, the difference is what
//! atmctl adds. Issue 19 asks for the bar's line within 50 ms of the change.
//!
//! Run: `cargo build --release -p atm-daemon -p atm-cli --bins` then
//! `cargo bench -p atm-tests --bench follow` (`./scripts/bench` does both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark, not the daemon

use std::process::Stdio;
use std::time::{Duration, Instant};

use atm_tests::{
    Daemon, FakeAgent, basic_config, hook, stamped_lines, subscribe_stamped, wait_line,
};
use serde_json::{Value, json};

/// State changes measured (half to working, half to idle).
const CHANGES: usize = 400;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let agent = FakeAgent::spawn();
    let event = |name: &str| {
        hook(json!({
            "session_id": "bar-latency", "hook_event_name": name, "cwd": "/w",
            "pid": agent.pid(), "source": "startup",
        }))
    };
    d.send_hooks(&[event("SessionStart"), event("Stop")]);
    d.wait_sessions("the session", |s| s.len() == 1 && s[0]["state"] == "idle");

    let mut follower = d
        .command("atmctl")
        .args(["status", "--follow", "--format", "waybar"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bar = stamped_lines(follower.stdout.take().unwrap());
    let raw = subscribe_stamped(&d.query_socket());
    let class = |want: &'static str| move |v: &Value| v["class"] == want;
    let updated = |want: &'static str| {
        move |v: &Value| v["type"] == "session_updated" && v["session"]["state"] == want
    };
    wait_line(&bar, class("idle"));

    let (mut bar_ms, mut raw_ms) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let (name, state) = if i % 2 == 0 {
            ("UserPromptSubmit", "working")
        } else {
            ("Stop", "idle")
        };
        let t0 = Instant::now();
        d.send_hooks(&[event(name)]);
        raw_ms.push(wait_line(&raw, updated(state)) - t0);
        bar_ms.push(wait_line(&bar, class(state)) - t0);
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    raw_ms.sort();
    bar_ms.sort();
    println!(
        "# status-bar latency: {CHANGES} state changes, hook line written -> line read, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| reader | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (who, v) in [
        ("protocol-v1 subscriber (floor)", &raw_ms),
        ("`atmctl status --follow --format waybar`", &bar_ms),
    ] {
        println!(
            "| {who} | {:.3} | {:.3} | {:.3} |",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    println!(
        "atmctl p99: {:.3} ms (target <= 50 ms); above the floor at p99: {:.3} ms",
        pct(&bar_ms, 0.99),
        pct(&bar_ms, 0.99) - pct(&raw_ms, 0.99)
    );
}
