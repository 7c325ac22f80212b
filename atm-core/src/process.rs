//! Process identity and liveness from `/proc`.
//!
//! A PID alone is not an identity: PIDs are reused. Everything here pairs the PID with the
//! process start time (clock ticks since boot), which is what makes "the same process" decidable.
//! The `/proc` root is a parameter so tests can point it at a fake tree.

use std::path::Path;

use crate::model::ProcessIdentity;

/// The default `/proc` mount.
pub const PROC_ROOT: &str = "/proc";

/// Reads the identity of `pid` under `proc_root`, or `None` if there is no such process (or it
/// cannot be read).
pub fn identity_in(proc_root: &Path, pid: u32) -> Option<ProcessIdentity> {
    let pid_i32 = i32::try_from(pid).ok()?;
    let stat = procfs::process::Process::new_with_root(proc_root.join(pid_i32.to_string()))
        .ok()?
        .stat()
        .ok()?;
    Some(ProcessIdentity {
        pid,
        start_time: stat.starttime,
    })
}

/// The identity of `pid` in the real `/proc`.
pub fn identity(pid: u32) -> Option<ProcessIdentity> {
    identity_in(Path::new(PROC_ROOT), pid)
}

/// True when the process that `id` names is still running (same PID *and* start time).
pub fn is_alive_in(proc_root: &Path, id: ProcessIdentity) -> bool {
    identity_in(proc_root, id.pid).is_some_and(|now| now.start_time == id.start_time)
}

pub fn is_alive(id: ProcessIdentity) -> bool {
    is_alive_in(Path::new(PROC_ROOT), id)
}

/// The parent PID of `pid`, from `/proc/<pid>/stat`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let pid_i32 = i32::try_from(pid).ok()?;
    let stat = procfs::process::Process::new(pid_i32).ok()?.stat().ok()?;
    u32::try_from(stat.ppid).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let me = identity(std::process::id()).unwrap();
        assert!(is_alive(me));
        assert!(!is_alive(ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1
        }));
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = identity(child.id()).unwrap();
        assert!(is_alive(id));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(id));
    }

    #[test]
    fn missing_proc_root_is_not_a_panic() {
        assert_eq!(identity_in(Path::new("/nonexistent-proc"), 1), None);
        assert_eq!(identity(u32::MAX), None);
    }
}
