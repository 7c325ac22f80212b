//! Process identity and liveness from `/proc`.
//!
//! A PID alone is not an identity: PIDs are reused. Everything here pairs the PID with the
//! process start time (clock ticks since boot), which is what makes "the same process" decidable.
//! The `/proc` root is a parameter so tests can point it at a fake tree.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::model::ProcessIdentity;

/// The default `/proc` mount.
pub const PROC_ROOT: &str = "/proc";

/// When the machine booted, in milliseconds since the epoch: `btime` in `<proc_root>/stat`
/// (read up to 64 KiB, which holds it on any machine).
pub fn boot_time_ms(proc_root: &Path) -> Option<u64> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(proc_root.join("stat"))
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    let secs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    secs.checked_mul(1000)
}

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

/// True when the process that `id` names is still running (same PID *and* start time, and not
/// a zombie: a process that exited stays in `/proc` as `Z` until its parent reaps it, which a
/// parent may put off for long, as tmux does for a pane's agent under `remain-on-exit`).
pub fn is_alive_in(proc_root: &Path, id: ProcessIdentity) -> bool {
    let Ok(pid) = i32::try_from(id.pid) else {
        return false;
    };
    procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))
        .and_then(|p| p.stat())
        .is_ok_and(|st| st.starttime == id.start_time && !matches!(st.state, 'Z' | 'X' | 'x'))
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

/// Recently read identities, so that a burst of hook events from one agent reads `/proc` once
/// instead of once per event (about 10 µs each, on the path every event takes).
///
/// Why a short TTL is safe: a cached entry can only be wrong if the process exited and the
/// kernel handed its PID to a new agent process that sent an event, all within the TTL. PIDs are
/// allocated in increasing order up to `pid_max` before they wrap, so that takes `pid_max`
/// process creations within the TTL. Failed reads are not cached: a process that is not there
/// yet (or any more) is looked up again next time.
#[derive(Debug)]
pub struct IdentityCache {
    ttl: Duration,
    proc_root: std::path::PathBuf,
    entries: Mutex<HashMap<u32, (ProcessIdentity, Instant)>>,
}

/// Entries an [`IdentityCache`] holds at most; past it, expired entries go, then all.
const IDENTITY_CACHE_ENTRIES: usize = 4096;

impl IdentityCache {
    pub fn new(proc_root: &Path, ttl: Duration) -> Self {
        Self {
            ttl,
            proc_root: proc_root.to_owned(),
            entries: Mutex::default(),
        }
    }

    /// The identity of `pid`, from the cache if it was read within the TTL.
    pub fn identity(&self, pid: u32) -> Option<ProcessIdentity> {
        let now = Instant::now();
        let lock = || match self.entries.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((id, at)) = lock().get(&pid)
            && now.saturating_duration_since(*at) < self.ttl
        {
            return Some(*id);
        }
        // Read outside the lock: other lookups never wait on this one's `/proc` read.
        let id = identity_in(&self.proc_root, pid)?;
        let mut entries = lock();
        if entries.len() >= IDENTITY_CACHE_ENTRIES {
            entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
            if entries.len() >= IDENTITY_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(pid, (id, now));
        Some(id)
    }
}

/// The identity of `pid` in the real `/proc`, read at most once a second per PID (see
/// [`IdentityCache`]). For adapters resolving the PID an event names.
pub fn identity_recent(pid: u32) -> Option<ProcessIdentity> {
    static CACHE: LazyLock<IdentityCache> =
        LazyLock::new(|| IdentityCache::new(Path::new(PROC_ROOT), Duration::from_secs(1)));
    CACHE.identity(pid)
}

/// The value of variable `name` in a `/proc/<pid>/environ` image (NUL-separated `K=V`):
/// exact name, first match, `None` when absent or not UTF-8.
pub fn environ_var(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(rest).ok().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lookup_is_exact_and_tolerant() {
        let env = b"TMUX_PANE_X=no\0TMUX_PANE=%3\0TMUX_PANE=%4\0BAD=\xff\0noequals\0";
        assert_eq!(environ_var(env, "TMUX_PANE").as_deref(), Some("%3"));
        assert_eq!(environ_var(env, "BAD"), None);
        assert_eq!(environ_var(env, "noequals"), None);
        assert_eq!(environ_var(b"", "TMUX_PANE"), None);
        assert_eq!(environ_var(b"TMUX_PANE=", "TMUX_PANE").as_deref(), Some(""));
    }

    /// A child that lives until the test kills it.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

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
        let mut child = sleeper();
        let id = identity(child.id()).unwrap();
        assert!(is_alive(id));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_alive(id));
    }

    #[test]
    fn an_unreaped_child_is_dead() {
        let mut child = sleeper();
        let id = identity(child.id()).unwrap();
        child.kill().unwrap();
        // Not reaped yet: a zombie, still in /proc with the same start time.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_alive(id) {
            assert!(Instant::now() < deadline, "a zombie counted as alive");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            identity(child.id()),
            Some(id),
            "still in /proc until reaped"
        );
        child.wait().unwrap();
    }

    #[test]
    fn missing_proc_root_is_not_a_panic() {
        assert_eq!(identity_in(Path::new("/nonexistent-proc"), 1), None);
        assert_eq!(identity(u32::MAX), None);
    }

    #[test]
    fn cached_identities_expire_and_failures_are_not_cached() {
        let cache = IdentityCache::new(Path::new(PROC_ROOT), Duration::from_millis(200));
        let mut child = sleeper();
        let id = cache.identity(child.id()).unwrap();
        assert_eq!(id, identity(child.id()).unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        // Within the TTL the cached identity stands; the registry's liveness check (which
        // reads /proc itself) is what notices the exit.
        assert_eq!(cache.identity(child.id()), Some(id));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(cache.identity(child.id()), None);
        assert_eq!(cache.identity(u32::MAX), None);
        assert!(cache.entries.lock().unwrap().get(&u32::MAX).is_none());
        assert_eq!(
            identity_recent(std::process::id()),
            identity(std::process::id())
        );
    }
}
