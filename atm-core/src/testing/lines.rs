//! Following a long-running child process's output, such as `atmctl status --follow`: its
//! stdout lines arrive on a bounded channel read on a thread of their own, so a test waits for
//! the line it needs with a deadline instead of blocking on a read.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

/// Lines a follower may print before the test reads them; the reader thread blocks beyond.
const BACKLOG: usize = 1024;

/// A spawned child whose stdout lines arrive on a channel; killed and reaped on drop.
pub struct StdoutLines {
    child: Child,
    lines: Receiver<String>,
}

impl StdoutLines {
    /// Spawns `cmd` with stdout piped and stderr discarded.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = sync_channel(BACKLOG);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line, or `None` when none came before `deadline` (or the output ended).
    pub fn next_before(&self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }
}

impl Drop for StdoutLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
