//! Hardening against a hostile neighbour and a clumsy user, with the real binaries: atmd never
//! follows a symlink for its runtime dir or lock, and a stopped daemon cannot hang `atmctl
//! status`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use atm_tests::{Daemon, basic_config, bin, config_with_daemon};

/// Runs atmd with `[daemon] runtime_dir = runtime` and its state under `dir`, without waiting
/// for sockets: these daemons are expected to refuse to start (killed after 10 s if they do).
fn with_runtime_dir(dir: &Path, runtime: &Path) -> Output {
    let config = dir.join("plugins.toml");
    let body = config_with_daemon(&format!("runtime_dir = \"{}\"\n", runtime.display()));
    std::fs::write(&config, body).unwrap();
    let mut atmd = Command::new(bin("atmd"));
    atmd.env("XDG_STATE_HOME", dir.join("state"))
        .env("HOME", dir)
        .env("ATM_SOCKET", runtime.join("atm.sock"))
        .env("ATM_HOOKS_SOCKET", runtime.join("hooks.sock"));
    output_within_10s(atmd, &config)
}

/// Runs `atmd --config config` (no D-Bus, nothing on stdin) and returns its output once it
/// exits, or once it is killed after 10 s (an atmd that did not refuse to start).
fn output_within_10s(mut atmd: Command, config: &Path) -> Output {
    let mut child = atmd
        .arg("--config")
        .arg(config)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Creates `path` as a directory only its owner may enter, as a runtime dir must be.
fn private_dir(path: &Path) -> PathBuf {
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.to_owned()
}

#[test]
fn a_symlinked_runtime_dir_is_refused_even_when_it_points_somewhere_private() {
    let tmp = tempfile::tempdir().unwrap();
    // What another user would set up in /tmp: a link to a directory that passes every owner
    // and mode check today and can be re-pointed tomorrow.
    let real = private_dir(&tmp.path().join("real"));
    let link = tmp.path().join("atm-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = with_runtime_dir(tmp.path(), &link);
    assert!(
        !out.status.success(),
        "atmd started on a symlinked runtime dir: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(
        std::fs::read_dir(&real).unwrap().next().is_none(),
        "atmd wrote into the link's target"
    );
}

#[test]
fn a_symlinked_lock_file_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = private_dir(&tmp.path().join("run"));
    let victim = tmp.path().join("precious.txt");
    std::fs::write(&victim, "do not truncate me\n").unwrap();
    std::os::unix::fs::symlink(&victim, runtime.join("atmd.lock")).unwrap();
    let out = with_runtime_dir(tmp.path(), &runtime);
    assert!(!out.status.success(), "atmd used a symlinked lock: {out:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "do not truncate me\n",
        "atmd wrote through the lock's symlink"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("atmd.lock"), "{stderr}");
}

#[test]
fn status_answers_within_a_second_when_the_daemon_is_stopped() {
    let d = Daemon::start(&basic_config(""));
    d.signal(rustix::process::Signal::STOP);
    let started = Instant::now();
    let out = d.command("atmctl").arg("status").output().unwrap();
    let took = started.elapsed();
    d.signal(rustix::process::Signal::CONT);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("atmd not answering"), "{stderr}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

/// Writes `body` as the config file at `path` and runs `atmd check-config` on it.
fn check_config(path: &Path, body: &str) -> Output {
    std::fs::write(path, body).unwrap();
    Command::new(bin("atmd"))
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

/// Durations `check-config` used to accept and that then overflowed time arithmetic: the
/// notify sink's rate limit, the socket sink's handshake timeout, the registry's debounce.
const OVERFLOWING: [(&str, &str); 3] = [
    (
        "[[sink]]\ntype = \"notify\"\nrate_limit = \"300000000000y\"\n",
        "rate_limit",
    ),
    (
        "[[sink]]\ntype = \"socket\"\nhandshake_timeout = \"300000000000y\"\n",
        "handshake_timeout",
    ),
    (
        "[daemon]\nsnapshot_debounce = \"300000000000y\"\n",
        "snapshot_debounce",
    ),
];

fn assert_names_key_and_range(stderr: &str, key: &str) {
    for part in [key, "out of range", "use a duration from", "e.g."] {
        assert!(stderr.contains(part), "{part:?} missing in: {stderr}");
    }
}

#[test]
fn overflowing_durations_are_refused_by_check_config_and_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    for (body, key) in OVERFLOWING {
        let path = tmp.path().join(format!("{key}.toml"));
        let out = check_config(&path, body);
        assert_eq!(out.status.code(), Some(2), "{key}: {out:?}");
        assert_names_key_and_range(&String::from_utf8_lossy(&out.stderr), key);
        // The line and column of the value, like every other config error.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{}:", path.display())), "{stderr}");
    }
}

#[test]
fn a_running_daemon_keeps_its_config_when_a_reload_overflows() {
    let d = Daemon::start(&basic_config(""));
    for (round, (body, key)) in OVERFLOWING.into_iter().enumerate() {
        // The daemon's own keys go into its [daemon] table; plugin blocks are appended.
        let config = if body.starts_with("[daemon]") {
            basic_config("")
                .replacen("snapshot_debounce = \"20ms\"\n", "", 1)
                .replacen("[daemon]\n", body, 1)
        } else {
            basic_config(body)
        };
        std::fs::write(&d.config_path, config).unwrap();
        d.signal(rustix::process::Signal::HUP);
        let rejected = |log: &str| {
            log.lines()
                .filter(|l| l.contains("new configuration rejected"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        atm_core::testing::wait_until_blocking("the reload to be rejected", || {
            rejected(&d.log()).len() > round
        });
        let line = rejected(&d.log()).pop().unwrap();
        assert_names_key_and_range(&line, key);
        // Still serving: queries and hooks.
        d.send_hooks(&[atm_tests::hook(serde_json::json!({
            "hook_event_name": "UserPromptSubmit", "session_id": format!("after-{key}"), "prompt": "p"
        }))]);
        d.wait_sessions("a session sent after the rejected reload", |s| {
            atm_tests::find(s, &format!("after-{key}")).is_some()
        });
    }
}

#[test]
fn a_newline_in_a_session_id_cannot_forge_log_lines() {
    let d = Daemon::start(&basic_config(""));
    let id = "forge\nERROR FORGED-LINE\r\u{0}";
    d.send_hooks(&[
        atm_tests::hook(serde_json::json!({"hook_event_name": "SessionStart", "session_id": id, "source": "startup"})),
        atm_tests::hook(serde_json::json!({"hook_event_name": "SessionEnd", "session_id": id, "reason": "exit"})),
    ]);
    atm_core::testing::wait_until_blocking("the session to be logged as removed", || {
        d.log().contains("forge\\nERROR FORGED-LINE\\r\\0")
    });
    let log = d.log();
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR FORGED-LINE")),
        "a forged line: {log}"
    );
    assert!(!log.contains('\0') && !log.contains('\r'), "{log:?}");
}

#[test]
fn a_deleted_runtime_dir_is_recreated_and_a_second_atmd_still_refuses() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start_with_hooks(&basic_config(""));
    // Out of the way in one step, then deleted: a plain remove_dir_all races atmd, which can
    // recreate the dir and bind a socket in it before the last rmdir (ENOTEMPTY, seen in CI).
    let moved = d.dir.path().join("run/atm.deleted");
    std::fs::rename(d.runtime_dir(), &moved).unwrap();
    std::fs::remove_dir_all(&moved).unwrap();
    let gone = Instant::now();
    atm_core::testing::wait_until_blocking("both sockets to be back", || {
        std::os::unix::net::UnixStream::connect(d.hooks_socket()).is_ok()
            && std::os::unix::net::UnixStream::connect(d.query_socket()).is_ok()
    });
    let back = gone.elapsed();
    eprintln!("sockets back {back:?} after the runtime dir was deleted");
    assert!(back < Duration::from_secs(1), "sockets back after {back:?}");
    let mode = std::fs::metadata(d.runtime_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the recreated runtime dir is not private");
    // A hook event through the real atm-hook reaches the daemon, and atmctl reads it.
    let sid = "after-the-runtime-dir-was-deleted";
    d.run_hook(
        "%3",
        &[],
        serde_json::json!({"hook_event_name": "UserPromptSubmit", "session_id": sid, "prompt": "p"})
            .to_string()
            .as_bytes(),
    );
    atm_core::testing::wait_until_blocking("atmctl to list the session", || {
        let out = d
            .command("atmctl")
            .args(["list", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(sid)
    });
    // A second atmd on the same dirs refuses to start, naming the first.
    let out = second_atmd(&d);
    assert!(!out.status.success(), "a second atmd started: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains(&d.pid().to_string()), "{stderr}");
    // And the first still serves.
    d.client().list();
}

#[test]
fn a_second_atmd_refuses_when_started_before_the_runtime_dir_is_back() {
    // Between the deletion and the recreation, only the state dir's lock says who runs.
    let d = Daemon::start_with_hooks(&basic_config(""));
    d.signal(rustix::process::Signal::STOP);
    std::fs::remove_dir_all(d.runtime_dir()).unwrap();
    let out = second_atmd(&d);
    d.signal(rustix::process::Signal::CONT);
    assert!(!out.status.success(), "a second atmd started: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
}

/// Runs a second atmd with `d`'s config and environment until it exits (killed after 10 s if
/// it does not refuse to start).
fn second_atmd(d: &Daemon) -> Output {
    output_within_10s(d.command("atmd"), &d.config_path)
}

#[test]
fn sizes_out_of_range_are_refused_by_check_config() {
    let tmp = tempfile::tempdir().unwrap();
    for (body, key) in [
        ("[daemon]\nmax_sessions = 0\n", "max_sessions"),
        (
            "[daemon]\nmax_ingest_connections = 0\n",
            "max_ingest_connections",
        ),
        (
            "[[sink]]\ntype = \"socket\"\nqueue_capacity = 100000000000\n",
            "queue_capacity",
        ),
        (
            "[[sink]]\ntype = \"socket\"\nmax_clients = 10000000\n",
            "max_clients",
        ),
        (
            "[[sink]]\ntype = \"dbus\"\nqueue_capacity = 100000000000\n",
            "queue_capacity",
        ),
        (
            "[[sink]]\ntype = \"notify\"\nmax_popups = 0\n",
            "max_popups",
        ),
    ] {
        let out = check_config(&tmp.path().join("c.toml"), body);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains("out of range"),
            "{body}: {stderr}"
        );
    }
}
