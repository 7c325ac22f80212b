//! [`WaitingHook`]: the real `atm-hook` holding Claude's `PermissionRequest`, as Claude runs it:
//! the payload on stdin, and whatever decision reaches it through atm printed on stdout.
//! Shared by the end-to-end tests of every surface that answers (atmctl, the socket, D-Bus)
//! and by the decision latency benchmark.

use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use atm_core::testing::{spawn_with_input, wait_until_blocking};
use serde_json::{Value, json};

use crate::Daemon;

/// An `atm-hook` waiting on a `PermissionRequest` (60 s at most). Killed on drop.
pub struct WaitingHook {
    pub child: Child,
}

impl WaitingHook {
    pub fn start(d: &Daemon, payload: Value) -> WaitingHook {
        let mut hook = d.command("atm-hook");
        hook.env("TMUX_PANE", "%7")
            .env("ATM_HOOK_DECISION_WAIT_SECS", "60")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = spawn_with_input(&mut hook, payload.to_string().as_bytes());
        WaitingHook { child }
    }

    /// Waits for the hook to exit (10 s at most): its exit status and what it printed.
    pub fn finish(mut self) -> (Output, Duration) {
        let start = Instant::now();
        wait_until_blocking("the hook to exit", || {
            self.child.try_wait().unwrap().is_some()
        });
        let took = start.elapsed();
        let mut stdout = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        (
            Output {
                status,
                stdout,
                stderr: Vec::new(),
            },
            took,
        )
    }

    pub fn still_waiting(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Reads the hook's stdout on a thread of its own, which sends when its first bytes
    /// arrived and everything it printed: a precise clock for "the decision was printed".
    pub fn printed(&mut self) -> mpsc::Receiver<(Instant, Vec<u8>)> {
        let mut stdout = self.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = [0u8; 4096];
            let n = stdout.read(&mut first).unwrap_or(0);
            let at = Instant::now();
            let mut all = first[..n].to_vec();
            if n > 0 {
                let _ = stdout.read_to_end(&mut all);
            }
            let _ = tx.send((at, all));
        });
        rx
    }
}

impl Drop for WaitingHook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Claude's `PermissionRequest` for Bash running `command` in session `sid`, with `extra`
/// fields (`permission_suggestions`, ...).
pub fn permission(sid: &str, command: &str, extra: Value) -> Value {
    let mut v = json!({"hook_event_name": "PermissionRequest", "session_id": sid,
        "tool_name": "Bash", "tool_input": {"command": command}, "cwd": "/tmp/prj"});
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

/// What the hook printed, as JSON.
pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The decision the hook printed for Claude, once it exited.
pub fn decision_of(hook: WaitingHook) -> Value {
    let (printed, _) = hook.finish();
    assert!(printed.status.success());
    stdout_json(&printed)["hookSpecificOutput"]["decision"].clone()
}
