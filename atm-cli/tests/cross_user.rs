//! Another user must never receive this user's hook events or answer this user's queries: the
//! real `atm-hook` and `atmctl` against a listener run by a second real user (created here with
//! `useradd`; needs root, skipped with a message otherwise). The listener reports how many bytes
//! it received; the clients must refuse before sending one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

/// [`atm_core::testing::other_user`], and python3 for its listener.
fn other_user(test: &str) -> Option<u32> {
    if !Path::new("/usr/bin/python3").exists() {
        println!("SKIPPED {test}: /usr/bin/python3 is not installed");
        return None;
    }
    atm_core::testing::other_user(test)
}

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOOK: &str = env!("CARGO_BIN_EXE_atm-hook");
const EVENT: &str = r#"{"session_id":"s-secret","cwd":"/home/a/secret","hook_event_name":"UserPromptSubmit","prompt":"the secret prompt"}"#;

/// A Unix listener run as `uid` at `path` (mode 0666, so only peer checks keep anyone out): it
/// answers a protocol handshake and prints how many bytes it received in all.
struct OtherUsersListener {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl OtherUsersListener {
    fn start(uid: u32, path: &Path) -> Self {
        let script = r#"
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o666)
s.listen(8)
print("READY", flush=True)
s.settimeout(10)
got = 0
try:
    c, _ = s.accept()
    c.settimeout(3)
    try:
        c.sendall(b'{"type":"connected","protocol_version":{"major":1,"minor":0}}\n')
    except OSError:
        pass
    while True:
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
        c.sendall(b'{"type":"session_list","sessions":[]}\n')
except OSError:
    pass
print("GOT", got, flush=True)
"#;
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .uid(uid)
            .gid(uid_gid(uid))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "the listener did not start");
        Self { child, stdout }
    }

    /// Bytes the listener received from its one connection (or none, if nobody connected).
    fn received(mut self) -> usize {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        line.trim()
            .strip_prefix("GOT ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected listener output {line:?}"))
    }
}

fn uid_gid(uid: u32) -> u32 {
    let out = Command::new("id")
        .arg("-g")
        .arg(uid.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A directory owned by `uid` with mode `mode`.
fn dir_of(uid: u32, parent: &Path, name: &str, mode: u32) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(uid), Some(uid_gid(uid))).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

fn run_hook(socket: &Path) -> (Output, Duration) {
    let start = Instant::now();
    let child = common::spawn_with_input(
        Command::new(HOOK)
            .env("ATM_HOOKS_SOCKET", socket)
            .stderr(Stdio::piped()),
        EVENT.as_bytes(),
    );
    let out = child.wait_with_output().unwrap();
    (out, start.elapsed())
}

fn run_atmctl(socket: &Path, args: &[&str]) -> Output {
    common::atmctl_at(socket, args)
}

/// atm-hook stays within its contract (exit 0, nothing on stdout, quick) and says once why it
/// refused.
fn assert_hook_refused(out: &Output, elapsed: Duration, why: &str) {
    assert!(out.status.success(), "{:?}", out.status);
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refusing") && stderr.contains(why),
        "{stderr}"
    );
}

#[test]
fn a_socket_in_another_users_directory_gets_nothing() {
    let Some(other) = other_user("a_socket_in_another_users_directory_gets_nothing") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // What user B plants as `/tmp/atm-<A's uid>`: B's own private directory, B's sockets.
    let planted = dir_of(other, tmp.path(), "atm-planted", 0o755);

    let hooks = planted.join("hooks.sock");
    let listener = OtherUsersListener::start(other, &hooks);
    let (out, elapsed) = run_hook(&hooks);
    assert_hook_refused(&out, elapsed, "owned by uid");
    assert_eq!(
        listener.received(),
        0,
        "atm-hook sent the event to another user"
    );

    let query = planted.join("atm.sock");
    let listener = OtherUsersListener::start(other, &query);
    let out = run_atmctl(&query, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "printed another user's answer: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing") && stderr.contains("owned by uid"),
        "{stderr}"
    );
    assert_eq!(listener.received(), 0, "atmctl talked to another user");
}

#[test]
fn another_users_process_behind_a_socket_in_our_directory_gets_nothing() {
    let test = "another_users_process_behind_a_socket_in_our_directory_gets_nothing";
    let Some(other) = other_user(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = dir_of(other, tmp.path(), "theirs", 0o755);
    let ours = dir_of(atm_core::paths::uid(), tmp.path(), "ours", 0o700);
    for (name, hook) in [("hooks.sock", true), ("atm.sock", false)] {
        // B's listening socket, moved into our private directory: the directory passes every
        // check, only the peer's credentials tell.
        let listener = OtherUsersListener::start(other, &theirs.join(name));
        let socket = ours.join(name);
        std::fs::rename(theirs.join(name), &socket).unwrap();
        if hook {
            let (out, elapsed) = run_hook(&socket);
            assert_hook_refused(&out, elapsed, "not as you");
        } else {
            let out = run_atmctl(&socket, &["status"]);
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("not as you"), "{stderr}");
        }
        assert_eq!(
            listener.received(),
            0,
            "{name}: sent to another user's process"
        );
    }
}

#[test]
fn a_world_writable_socket_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let open = dir_of(atm_core::paths::uid(), tmp.path(), "open", 0o777);
    let socket = open.join("hooks.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (out, elapsed) = run_hook(&socket);
    assert_hook_refused(&out, elapsed, "chmod 700");
    // atm-hook connected (that is how it knows something answers) but sent nothing.
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_nonblocking(false).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
    assert!(got.is_empty(), "sent {} bytes", got.len());
}
