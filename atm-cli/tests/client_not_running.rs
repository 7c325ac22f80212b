//! Every query command says clearly, with exit code 2, that the daemon is not running and how to
//! start it: whether the socket is missing or a stale file nobody answers on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

fn atmctl(args: &[&str], socket: &Path) -> std::process::Output {
    common::atmctl_at(socket, args)
}

const COMMANDS: [&[&str]; 5] = [
    &["list"],
    &["list", "--json"],
    &["status"],
    &["get", "abc"],
    &["watch"],
];

#[test]
fn a_missing_socket_exits_2_and_says_how_to_start_atmd() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    for args in COMMANDS {
        let o = atmctl(args, &socket);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(o.stdout.is_empty(), "{args:?} printed to stdout");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("atmd is not running"), "{err}");
        assert!(err.contains(&socket.display().to_string()), "{err}");
        assert!(err.contains("systemctl --user start atmd"), "{err}");
    }
}

#[test]
fn a_stale_socket_file_exits_2_too() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    for args in COMMANDS {
        let o = atmctl(args, &socket);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("nothing answers"), "{err}");
    }
}

#[test]
fn atm_socket_is_the_default_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("from-env.sock");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_atmctl"))
        .arg("status")
        .env("ATM_SOCKET", &socket)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&socket.display().to_string()));
}
