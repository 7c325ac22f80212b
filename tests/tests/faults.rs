//! Fault tests against the real daemon: floods, idle connection storms and hostile text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use atm_core::testing::wait_until_blocking_within;
use atm_tests::{Daemon, basic_config, find, hook, proc_status_kib, status};
use serde_json::json;

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn two_hundred_mib_without_a_newline_keeps_memory_bounded_and_others_served() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let pid = d.pid();
    let flood = |path: std::path::PathBuf| {
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(path).unwrap();
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            for _ in 0..200 {
                match s.write_all(&chunk) {
                    Ok(()) => sent += chunk.len(),
                    // The daemon refused the line and closed the connection: the expected end.
                    Err(_) => break,
                }
            }
            sent
        })
    };
    let floods = [flood(d.hooks_socket()), flood(d.query_socket())];
    // Meanwhile, everyone else is served.
    let started = Instant::now();
    let mut client = d.client();
    let mut n = 0;
    while floods.iter().any(|f| !f.is_finished()) && started.elapsed() < Duration::from_secs(60) {
        d.send_hooks(&[hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": format!("s{n}"), "prompt": "p"}))]);
        n += 1;
        client.list();
        std::thread::sleep(Duration::from_millis(20));
    }
    for f in floods {
        f.join().unwrap();
    }
    d.wait_sessions("sessions fed during the flood", |s| s.len() >= n);
    let peak_kib = proc_status_kib(pid as u32, "VmHWM:");
    assert!(
        peak_kib < 50 * 1024,
        "peak RSS {peak_kib} KiB during a 200 MiB flood"
    );
}

#[test]
fn two_thousand_idle_connections_are_closed_without_leaking_descriptors() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    let pid = d.pid();
    let baseline = fd_count(pid);
    let mut idle = Vec::new();
    for i in 0..2000 {
        let path = if i % 2 == 0 {
            d.hooks_socket()
        } else {
            d.query_socket()
        };
        if let Ok(s) = UnixStream::connect(path) {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 1900, "only {} connections opened", idle.len());
    // Responsive while they sit there.
    let t0 = Instant::now();
    let mut c = d.client();
    c.list();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "list took {:?}",
        t0.elapsed()
    );
    // Unused connections are closed by the daemon after its 10 s handshake window.
    wait_until_blocking_within(
        Duration::from_secs(20),
        "the idle connections to be closed",
        || fd_count(pid) <= baseline + 5,
    );
    let after = fd_count(pid);
    assert!(
        after <= baseline + 5,
        "descriptors: {baseline} before, {after} after"
    );
    // The connection that spoke is still served.
    c.list();
    drop(idle);
}

#[test]
fn multibyte_text_of_every_length_gives_correct_views() {
    let d = Daemon::start_with_hooks(&basic_config(""));
    // 1-, 2-, 3- and 4-byte characters, at lengths around the cut limits.
    let cwd = format!(
        "/home/{}/{}/{}/{}",
        "a".repeat(7),
        "é".repeat(9),
        "語".repeat(11),
        "🦀".repeat(13)
    );
    let model = "Ωpus ④.⑥ 🦀 модель";
    let long_prompt = "ж".repeat(5000);
    d.send_hooks(&[
        hook(json!({"hook_event_name": "UserPromptSubmit", "session_id": "日本語-セッション-🦀", "prompt": long_prompt, "cwd": cwd})),
        status(json!({"session_id": "日本語-セッション-🦀", "model": {"id": model, "display_name": model}})),
        hook(json!({"hook_event_name": "PermissionRequest", "session_id": "日本語-セッション-🦀", "tool_name": "Bash",
            "tool_input": {"command": "echo ".to_owned() + &"🦀".repeat(1000)}, "cwd": cwd})),
    ]);
    let sessions = d.wait_sessions("the multibyte session", |s| {
        find(s, "日本語-セッション-🦀")
            .is_some_and(|x| x["state"] == "needs_permission" && x["model"] == model)
    });
    let s = find(&sessions, "日本語-セッション-🦀").unwrap();
    assert_eq!(s["working_directory"], cwd.as_str());
    assert_eq!(s["id_short"], "日本語-セッショ");
    let prompt = s["first_prompt"].as_str().unwrap();
    assert!(
        prompt.chars().count() <= 200 && prompt.starts_with("жжж"),
        "{prompt}"
    );
    let detail = s["attention"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("echo 🦀") && detail.chars().count() <= 200,
        "{detail}"
    );
    // Still alive and well.
    d.client().list();
}
