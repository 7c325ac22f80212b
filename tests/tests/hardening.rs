//! Hardening against a hostile neighbour and a clumsy user, with the real binaries: atmd never
//! follows a symlink for its runtime dir or lock, and a stopped daemon cannot hang `atmctl
//! status`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use atm_tests::{Daemon, basic_config, bin};

/// Runs atmd with `[daemon] runtime_dir = runtime` and its state under `dir`, without waiting
/// for sockets: these daemons are expected to refuse to start (killed after 10 s if they do).
fn with_runtime_dir(dir: &Path, runtime: &Path) -> Output {
    let config = dir.join("plugins.toml");
    let body = basic_config("").replacen(
        "[daemon]\n",
        &format!("[daemon]\nruntime_dir = \"{}\"\n", runtime.display()),
        1,
    );
    std::fs::write(&config, body).unwrap();
    let mut child = Command::new(bin("atmd"))
        .arg("--config")
        .arg(&config)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("HOME", dir)
        .env("ATM_SOCKET", runtime.join("atm.sock"))
        .env("ATM_HOOKS_SOCKET", runtime.join("hooks.sock"))
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

#[test]
fn a_symlinked_runtime_dir_is_refused_even_when_it_points_somewhere_private() {
    let tmp = tempfile::tempdir().unwrap();
    // What another user would set up in /tmp: a link to a directory that passes every owner
    // and mode check today and can be re-pointed tomorrow.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
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
    let runtime = tmp.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
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
