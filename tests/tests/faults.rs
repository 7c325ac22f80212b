//! Fault tests against the real daemon: floods, idle connection storms and hostile text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use atm_core::testing::wait_until_blocking_within;
use atm_tests::{Daemon, basic_config, config_with_daemon, find, hook, proc_status_kib, status};
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

/// A line as a raw ingest client sends it.
fn line(msg: serde_json::Value) -> Vec<u8> {
    let mut msg = msg;
    msg["protocol_version"] = json!({"major": 1, "minor": 0});
    let mut b = serde_json::to_vec(&msg).unwrap();
    b.push(b'\n');
    b
}

/// Writes `msg` on `s` and reads one reply line (`None` if the daemon closed instead).
fn ask(s: &mut UnixStream, msg: serde_json::Value) -> Option<serde_json::Value> {
    use std::io::{BufRead, BufReader};
    // A refused connection can be closed (its refusal already written) before this line goes
    // out, which fails the write with EPIPE: read what the daemon said either way.
    let _ = s.write_all(&line(msg));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut reply)
        .ok()?;
    serde_json::from_str(&reply).ok()
}

/// Whether the daemon closed `s` (EOF) within 10 s.
fn closed_by_daemon(s: &mut UnixStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A connection that holds an ingest slot: `kind` is `ping` (a hook-style client that then
/// goes quiet) or `connect` (a persistent client, as the pi extension). Retries while the slot
/// of a previous probe is still being released.
fn hold_slot(d: &Daemon, kind: &str) -> UnixStream {
    let mut held = None;
    atm_core::testing::wait_until_blocking("a free ingest slot", || {
        let mut s = UnixStream::connect(d.hooks_socket()).unwrap();
        let reply = ask(&mut s, json!({"type": kind, "seq": 1, "client_id": "test"}));
        let ok = reply.is_some_and(|r| r["type"] == "pong" || r["type"] == "connected");
        if ok {
            held = Some(s);
        }
        ok
    });
    held.unwrap()
}

fn warn_lines(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(needle))
        .count()
}

#[test]
fn a_full_ingest_socket_is_logged_once_with_the_fix_and_quiet_hook_connections_time_out() {
    // Long enough for the refusals below to happen while the quiet connections hold the slots.
    let config = config_with_daemon("max_ingest_connections = 4\ningest_idle_timeout = \"3s\"\n");
    let d = Daemon::start_with_hooks(&config);
    // Four hook-style connections that said one thing and went quiet hold every slot.
    let mut quiet: Vec<UnixStream> = (0..4).map(|_| hold_slot(&d, "ping")).collect();
    // Newcomers are refused, told why, and the log says so at warn once, naming the key.
    for _ in 0..3 {
        let mut s = UnixStream::connect(d.hooks_socket()).unwrap();
        let reply = ask(&mut s, json!({"type": "ping", "seq": 2})).expect("a refusal");
        assert_eq!(reply["code"], "too_many_clients", "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("max_ingest_connections"),
            "{reply}"
        );
    }
    wait_until_blocking_within(Duration::from_secs(10), "the refusal warning", || {
        warn_lines(&d.log(), "refused an ingest connection") == 1
    });
    let log = d.log();
    assert!(
        log.contains("raise `max_ingest_connections` in [daemon]"),
        "{log}"
    );
    // The quiet ones are closed after the idle timeout, giving their slots back...
    for s in &mut quiet {
        assert!(closed_by_daemon(s), "a quiet hook connection stayed open");
    }
    // ...so a hook event gets through again.
    let sid = "after-the-idle-ones";
    d.run_hook(
        "%1",
        &[],
        json!({"hook_event_name": "UserPromptSubmit", "session_id": sid, "prompt": "p"})
            .to_string()
            .as_bytes(),
    );
    d.wait_sessions("the hook event after the idle timeout", |s| {
        find(s, sid).is_some()
    });
    assert_eq!(
        warn_lines(&d.log(), "refused an ingest connection"),
        1,
        "the refusals in the same minute were warned about more than once"
    );
}

#[test]
fn a_persistent_client_outlives_the_idle_timeout_and_only_a_full_socket_evicts_it() {
    let config = config_with_daemon("max_ingest_connections = 4\ningest_idle_timeout = \"1s\"\n");
    let d = Daemon::start_with_hooks(&config);
    // A persistent client (it says `connect`, as the pi extension does) beside a quiet hook
    // connection: the hook connection is closed after the idle timeout, the client is not.
    let mut pi = hold_slot(&d, "connect");
    let mut hook_conn = hold_slot(&d, "ping");
    assert!(closed_by_daemon(&mut hook_conn));
    let pong = ask(&mut pi, json!({"type": "ping", "seq": 7})).expect("still served");
    assert_eq!(pong["type"], "pong", "{pong}");
    // Three more persistent clients fill the socket. A hook event still lands: the one quiet
    // the longest (`pi`, once it has been quiet for a moment) makes room.
    let _others: Vec<UnixStream> = (0..3).map(|_| hold_slot(&d, "connect")).collect();
    let sid = "admitted-by-eviction";
    let event = json!({"hook_event_name": "UserPromptSubmit", "session_id": sid, "prompt": "p"});
    atm_core::testing::wait_until_blocking("the hook event to be admitted", || {
        d.run_hook("%1", &[], event.to_string().as_bytes());
        let mut c = d.client();
        find(&c.list(), sid).is_some()
    });
    assert!(
        closed_by_daemon(&mut pi),
        "the quietest client was not the one evicted"
    );
    wait_until_blocking_within(Duration::from_secs(10), "the eviction warning", || {
        warn_lines(
            &d.log(),
            "closed the persistent connection quiet the longest",
        ) == 1
    });
}

/// A stand-in daemon for atm-hook: a listener in a private directory.
fn fake_hooks_socket() -> (tempfile::TempDir, std::os::unix::net::UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("hooks.sock")).unwrap();
    listener.set_nonblocking(true).unwrap();
    (dir, listener)
}

/// The next connection to the stand-in daemon (waited for, never forever).
fn accept(listener: &std::os::unix::net::UnixListener) -> UnixStream {
    let mut conn = None;
    atm_core::testing::wait_until_blocking("atm-hook to connect", || {
        conn = listener.accept().ok().map(|(s, _)| s);
        conn.is_some()
    });
    let conn = conn.unwrap();
    conn.set_nonblocking(false).unwrap();
    conn
}

/// Starts the real atm-hook with `event` on stdin against the socket in `dir`, with a budget
/// of 10 s, so that what it waits for is the daemon, never the clock of a loaded machine.
fn spawn_hook(dir: &std::path::Path, event: &serde_json::Value) -> std::process::Child {
    use std::process::Stdio;
    let mut hook = std::process::Command::new(atm_tests::bin("atm-hook"));
    hook.env("ATM_HOOKS_SOCKET", dir.join("hooks.sock"))
        .env("ATM_HOOK_BUDGET_MS", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    atm_core::testing::spawn_with_input(&mut hook, event.to_string().as_bytes())
}

fn read_line_from(s: &UnixStream) -> String {
    use std::io::{BufRead, BufReader};
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = String::new();
    BufReader::new(s).read_line(&mut got).unwrap();
    got
}

/// Whether `child` exits within `limit`.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn atm_hook_exits_only_once_the_daemon_has_handled_its_event() {
    // The daemon closes a hook connection once it has applied the event; atm-hook waits for
    // that close (within its budget), so an agent that runs its hooks one after another can
    // never have the next event overtake this one on another connection (the cause of the
    // PermissionRequest once seen lost under load: it was applied before the prompt).
    let (dir, listener) = fake_hooks_socket();
    let event =
        json!({"hook_event_name": "PermissionRequest", "session_id": "s", "tool_name": "Bash"});
    let mut hook = spawn_hook(dir.path(), &event);
    let conn = accept(&listener);
    assert!(read_line_from(&conn).contains("PermissionRequest"));
    // Read, not yet handled: atm-hook must still be waiting. (Before, it exited at once.)
    assert!(
        !exits_within(&mut hook, Duration::from_millis(500)),
        "atm-hook exited before the daemon had handled (and closed) its connection"
    );
    drop(conn);
    assert!(exits_within(&mut hook, Duration::from_secs(10)));
    assert!(hook.wait().unwrap().success());
}

#[test]
fn atm_hook_retries_a_full_socket_within_its_budget() {
    let (dir, listener) = fake_hooks_socket();
    let event = json!({"hook_event_name": "UserPromptSubmit", "session_id": "s", "prompt": "p"});
    let mut hook = spawn_hook(dir.path(), &event);
    // The first attempt meets a full socket, answered at once as atmd answers it.
    let mut full = accept(&listener);
    full.write_all(
        br#"{"type":"error","code":"too_many_clients","message":"more than 4 open ingest connections"}
"#,
    )
    .unwrap();
    drop(full);
    // The retry is served.
    let conn = accept(&listener);
    assert!(read_line_from(&conn).contains("UserPromptSubmit"));
    drop(conn);
    assert!(exits_within(&mut hook, Duration::from_secs(10)));
    assert!(hook.wait().unwrap().success());
}

#[test]
fn a_full_registry_and_oversized_lines_are_warned_about_once_a_minute_with_the_fix() {
    let config = config_with_daemon("max_sessions = 2\n");
    let d = Daemon::start_with_hooks(&config);
    let prompt = |i: usize| {
        hook(
            json!({"hook_event_name": "UserPromptSubmit", "session_id": format!("full{i}"), "prompt": "p"}),
        )
    };
    // Two fit; the next ones are refused (no process to evict for a pid-less newcomer).
    d.send_hooks(&(0..5).map(prompt).collect::<Vec<_>>());
    wait_until_blocking_within(Duration::from_secs(10), "the refusals", || {
        d.log().matches("refused session full").count() >= 3
    });
    let log = d.log();
    assert_eq!(warn_lines(&log, "refused session full"), 1, "{log}");
    assert!(log.contains("raise `max_sessions` in [daemon]"), "{log}");
    // Two lines over the limit on two connections: each refused, one warning with the fix.
    for _ in 0..2 {
        let mut s = UnixStream::connect(d.hooks_socket()).unwrap();
        let mut big = vec![b'x'; atm_core::protocol::MAX_LINE + 10];
        big.push(b'\n');
        let _ = s.write_all(&big);
        assert!(closed_by_daemon(&mut s));
    }
    wait_until_blocking_within(Duration::from_secs(10), "the oversize refusals", || {
        d.log().matches("refused an ingest line over").count() >= 2
    });
    let log = d.log();
    assert_eq!(warn_lines(&log, "refused an ingest line over"), 1, "{log}");
    assert!(log.contains("make it send smaller events"), "{log}");
}
