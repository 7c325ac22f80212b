//! `atmctl status` against daemons that misbehave: unknown formats, garbage, oversized and
//! truncated lines, and `--follow` recovering from them. The fake daemon is a real Unix socket
//! that answers the handshake and then sends what each test scripts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use atm_core::testing::StdoutLines;
use serde_json::Value;

const CONNECTED: &[u8] =
    b"{\"type\":\"connected\",\"protocol_version\":{\"major\":1,\"minor\":0},\"client_id\":\"x\"}\n";

/// Serves each connection: reads the handshake, answers it, reads one request, then writes
/// `after` (the n-th connection gets `after(n)`) and closes.
fn fake(after: impl Fn(usize) -> Vec<u8> + Send + 'static) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atm.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let _ = stream.write_all(CONNECTED);
            line.clear();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let _ = stream.write_all(&after(n));
        }
    });
    (path, dir)
}

fn atmctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atmctl"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn an_unknown_format_is_refused_naming_the_choices() {
    let o = atmctl(Path::new("/nonexistent"), &["status", "--format", "xmobar"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("xmobar"), "{err}");
    for name in ["plain", "tmux", "waybar", "i3blocks", "polybar"] {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}

#[test]
fn garbage_truncated_and_oversized_replies_fail_cleanly_and_bars_still_get_a_line() {
    let replies: [Vec<u8>; 4] = [
        b"\xff\xfe not json\n".to_vec(),
        b"{\"type\":\"session_list\",\"sessions\":[{\"id\":".to_vec(),
        b"{\"type\":\"session_list\",\"sessions\":42}\n".to_vec(),
        // Larger than any reply atmctl accepts (256 MiB), with no newline.
        vec![b'x'; 256 * 1024 * 1024 + 16],
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let (socket, _dir) = fake(move |_| reply.clone());
        let o = atmctl(&socket, &["status"]);
        assert!(!o.status.success(), "reply {i}: {o:?}");
        assert!(
            o.stdout.is_empty(),
            "reply {i}: plain prints nothing on failure"
        );
        let o = atmctl(&socket, &["status", "--format", "waybar"]);
        assert!(!o.status.success(), "reply {i}: {o:?}");
        let line: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("reply {i}: not JSON ({e}): {o:?}"));
        assert!(
            line["class"] == "error" || line["class"] == "not_running",
            "reply {i}: {line}"
        );
    }
}

#[test]
fn follow_shows_garbage_as_an_error_and_recovers_on_the_next_connection() {
    let list = b"{\"type\":\"session_list\",\"sessions\":[]}\n".to_vec();
    let (socket, _dir) = fake(move |n| {
        if n == 0 {
            b"garbage\n".to_vec()
        } else {
            list.clone()
        }
    });
    let follower = StdoutLines::spawn(
        Command::new(env!("CARGO_BIN_EXE_atmctl"))
            .args(["status", "--follow", "--format", "i3blocks", "--socket"])
            .arg(&socket),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("no agents")) {
        match follower.next_before(deadline) {
            Some(line) => seen.push(line),
            None => panic!("no recovery; lines: {seen:?}"),
        }
    }
    drop(follower);
    let first: Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(first["full_text"], "atm error", "{seen:?}");
    // The fake closes after its list, so later lines are "not running" and "no agents" again.
    for line in &seen {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
