//! What several of atm-cli's test binaries share: the built binaries, a listener standing in
//! for the daemon's ingest socket, and running a command with input on its stdin.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

pub const ATMCTL: &str = env!("CARGO_BIN_EXE_atmctl");
pub const ATM_HOOK: &str = env!("CARGO_BIN_EXE_atm-hook");

/// The stdout of a run that must have succeeded (the test fails with its stderr otherwise).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "atmctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The stderr of a run that must have failed with exit code 1, as `atmctl` does when it refuses
/// a file (`what` names the run when it did not).
pub fn refused(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Of the status lines a few tries printed (the reply must beat atm-hook's 50 ms budget, which a
/// loaded machine misses now and then), the last one is `want`.
pub fn assert_last_try(lines: &[String], want: &str) {
    assert_eq!(lines.last().map(String::as_str), Some(want), "{lines:?}");
}

/// `atmctl setup <agent> <extra>` with the agent's home variable `var` set to `home`.
pub fn atmctl_setup(agent: &str, var: &str, home: &Path, extra: &[&str]) -> Output {
    Command::new(ATMCTL)
        .args(["setup", agent])
        .args(extra)
        .env(var, home)
        .output()
        .unwrap()
}

/// `atmctl <args> --socket <socket>`.
pub fn atmctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(ATMCTL)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

/// Spawns `cmd` with stdin and stdout piped (and whatever else `cmd` says), and writes `input`
/// to its stdin, closing it.
pub fn spawn_with_input(cmd: &mut Command, input: &[u8]) -> Child {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

/// A listener that collects every line it receives, on a socket in a fresh temp dir.
pub struct Collector {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    lines: mpsc::Receiver<Vec<u8>>,
    /// Connections accepted and connections read to their end.
    connections: Arc<(Mutex<(usize, usize)>, Condvar)>,
}

/// The line [`Collector::assert_nothing`] sends itself, behind everything sent before it.
const PROBE: &[u8] = b"\0collector-probe";

impl Collector {
    pub fn start() -> Self {
        Self::with_reply(None)
    }

    /// With `reply`, answers every line with it (as the daemon does for `want_reply`).
    pub fn with_reply(reply: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, lines) = mpsc::channel();
        let connections = Arc::new((Mutex::new((0, 0)), Condvar::new()));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counted.0.lock().unwrap().0 += 1;
                let tx = tx.clone();
                let reply = reply.clone();
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    for line in BufReader::new(stream).split(b'\n') {
                        let Ok(line) = line else { break };
                        if let Some(r) = &reply {
                            let _ = writer.write_all(format!("{r}\n").as_bytes());
                        }
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    counted.0.lock().unwrap().1 += 1;
                    counted.1.notify_all();
                });
            }
        });
        Self {
            dir,
            path,
            lines,
            connections,
        }
    }

    /// The next line as it arrived (without its newline).
    pub fn next_line(&self) -> Vec<u8> {
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .expect("no line arrived")
    }

    pub fn next(&self) -> Value {
        serde_json::from_slice(&self.next_line()).unwrap()
    }

    /// Nothing arrived, and nothing will: call it once the hook has exited. Its connection, if
    /// any, then waits in the listener's queue ahead of a probe this sends; once the probe's line
    /// is in and every accepted connection is read to its end, every line is in.
    pub fn assert_nothing(&self) {
        let mut probe = std::os::unix::net::UnixStream::connect(&self.path).unwrap();
        probe.write_all(&[PROBE, b"\n"].concat()).unwrap();
        drop(probe);
        let unexpected = |line: &[u8]| panic!("unexpected line: {}", String::from_utf8_lossy(line));
        let first = self.next_line();
        if first != PROBE {
            unexpected(&first);
        }
        let (count, all_read) = &*self.connections;
        let counts = all_read
            .wait_timeout_while(count.lock().unwrap(), Duration::from_secs(5), |(a, f)| {
                a != f
            })
            .unwrap();
        assert!(!counts.1.timed_out(), "a connection was never closed");
        drop(counts);
        if let Ok(line) = self.lines.try_recv() {
            unexpected(&line);
        }
    }
}
