//! The scanner: one pass over `/proc` that finds agent processes and samples them.
//!
//! It is synchronous blocking I/O by design (the adapter runs it in `spawn_blocking`) and keeps
//! a cache per PID so that steady-state passes are cheap:
//! - The listing of `/proc` yields each PID with the inode number of its directory. The kernel
//!   gives every `/proc/<pid>` instance its own inode, so the same (PID, inode) pair is the same
//!   process as last time and nothing of it is read again. A changed inode (a reused PID, or a
//!   directory re-instantiated after memory pressure) costs one `stat` read to compare the start
//!   time, which is the real identity.
//! - A new PID costs a `statx` of its directory (the owner: the kernel gives `/proc/<pid>` the
//!   process's effective uid, and it is exactly the processes we may inspect) and a read of
//!   `stat` (start time, parent), and for the user's own processes `cmdline` and the `exe`
//!   link; only agents also get `environ` read (for `TMUX_PANE`). Other users' processes are
//!   never looked into. `status` is not read: it is the costliest file to generate (the
//!   benchmark measures it at about 1.5x `stat`), and the directory owner answers the question.
//! - A process can `exec` an agent after we classified it (a shell between `fork` and `exec`, a
//!   launcher script that `exec`s `claude`). A non-agent classified while young (less than
//!   [`YOUNG_SECS`] after it started) is therefore classified again on the next pass, until it
//!   has been seen old once (so each new process costs at most about two reads), and a PID
//!   whose Claude session file appears is classified again at once.
//! - Per pass, each agent and its descendants (found from the cached parent PIDs, since
//!   `/proc/<pid>/task/*/children` is often compiled out) get `stat` read for CPU time and
//!   resident memory, the agent's `cwd` link is read, its Claude session file is re-parsed only
//!   when its mtime/size/inode change, and Git facts come from [`GitCache`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use atm_core::registry::Discovered;
use atm_core::{Harness, ProcessIdentity, SessionId, UsageUpdate};

use crate::agent::{Class, FileStamp, Sample, classify, file_stamp};
use crate::git::GitCache;
use crate::matcher::{MatchKind, MatcherConfig};
use crate::procread::{ReadError, read_capped, read_link_text, read_stat};

/// A non-agent classified younger than this is classified again next pass (see module docs).
pub const YOUNG_SECS: u64 = 2;
/// Most processes counted in one agent's tree (bounds the work a fork bomb can cause).
pub const MAX_TREE: usize = 1024;

/// What the scanner needs to know.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    pub proc_root: PathBuf,
    /// Claude's config dir for processes that do not set `CLAUDE_CONFIG_DIR` themselves.
    pub claude_config_dir: PathBuf,
    pub matchers: Vec<MatcherConfig>,
    /// Only processes owned by this uid (owner of `/proc/<pid>`) are considered.
    pub uid: u32,
    /// The adapter instance name, recorded as the session's source.
    pub adapter_name: String,
}

/// Scanning failed as a whole (a single process failing is counted, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot list {path}: {source}; check `proc_root` in the proc-discovery config")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One numeric entry of the `/proc` listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedPid {
    pub pid: u32,
    pub ino: u64,
}

/// The result of one pass.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// One entry per agent process found, ready for `register_discovered`.
    pub found: Vec<Discovered>,
    /// Listed processes that could not be read.
    pub failed: u64,
    /// Processes that vanished between the listing and the read.
    pub vanished: u64,
    /// Processes found to be no session after all, each reported once: a launcher
    /// (`node …/bin/codex`) that a pass saw before it started its agent child, and a young
    /// process that looked like the agent and then exec'd something else (Codex forks itself
    /// before exec'ing its helpers). The `pending-<pid>` session an earlier pass registered
    /// for it is not a session.
    pub new_launchers: Vec<u32>,
}

#[derive(Debug)]
struct Entry {
    ino: u64,
    start_time: u64,
    ppid: u32,
    /// The pass that last listed it (entries not listed in this pass are dropped).
    seen: u64,
    /// Its class was decided while it was young: look again next pass.
    classified_young: bool,
    class: Class,
}

/// The scanner and its caches. Not `Sync`-shared: it moves into the blocking task and back.
pub struct Scanner {
    settings: ScanSettings,
    cache: HashMap<u32, Entry>,
    git: GitCache,
    passes: u64,
    ticks_per_sec: u64,
    page_size: u64,
    boot_time_ms: Option<i64>,
    sessions_dir_stamp: Option<FileStamp>,
    /// Launchers already reported in [`ScanOutcome::new_launchers`], by PID and start time
    /// (a reused PID is a new process).
    launchers: HashSet<(u32, u64)>,
    /// Agents of an earlier pass that exec'd into something else, for the next outcome.
    exec_away: Vec<u32>,
}

/// The boot time (see [`atm_core::process::boot_time_ms`]) as the signed milliseconds the
/// scan's arithmetic uses.
fn read_boot_time_ms(proc_root: &Path) -> Option<i64> {
    atm_core::process::boot_time_ms(proc_root).and_then(|ms| i64::try_from(ms).ok())
}

/// Seconds since boot from `<proc_root>/uptime`, in clock ticks.
fn read_uptime_ticks(proc_root: &Path, ticks_per_sec: u64) -> Option<u64> {
    let bytes = read_capped(&proc_root.join("uptime"), 256).ok()?;
    let secs: f64 = std::str::from_utf8(&bytes)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * ticks_per_sec as f64) as u64)
}

impl Scanner {
    pub fn new(settings: ScanSettings) -> Self {
        let boot_time_ms = read_boot_time_ms(&settings.proc_root);
        Self {
            settings,
            cache: HashMap::new(),
            git: GitCache::new(),
            passes: 0,
            ticks_per_sec: procfs::ticks_per_second().max(1),
            page_size: procfs::page_size(),
            boot_time_ms,
            sessions_dir_stamp: None,
            launchers: HashSet::new(),
            exec_away: Vec::new(),
        }
    }

    pub fn settings(&self) -> &ScanSettings {
        &self.settings
    }

    /// The Claude sessions dirs this scanner reads: the default one and each Claude process's
    /// own (`$CLAUDE_CONFIG_DIR/sessions`).
    pub fn claude_session_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.settings.claude_config_dir.join("sessions")];
        for e in self.cache.values() {
            if let Class::Agent(a) = &e.class
                && let Some(d) = &a.claude_config_dir
            {
                let d = d.join("sessions");
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        dirs
    }

    /// How many PIDs the cache holds (one per listed process).
    pub fn cached_processes(&self) -> usize {
        self.cache.len()
    }

    /// Lists the numeric entries of the proc root.
    pub fn list_pids(&self) -> Result<Vec<ListedPid>, ScanError> {
        let root = &self.settings.proc_root;
        let dir = std::fs::read_dir(root).map_err(|source| ScanError::List {
            path: root.clone(),
            source,
        })?;
        Ok(dir
            .filter_map(Result::ok)
            // `d_type` comes with the listing: no extra call to skip non-directories.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some(ListedPid { pid, ino: e.ino() })
            })
            .collect())
    }

    /// One full pass: list, classify what is new, sample the agents.
    pub fn scan(&mut self) -> Result<ScanOutcome, ScanError> {
        let listing = self.list_pids()?;
        Ok(self.scan_listed(&listing))
    }

    /// A pass over a listing taken earlier (processes may have gone since: that is normal).
    pub fn scan_listed(&mut self, listing: &[ListedPid]) -> ScanOutcome {
        self.passes += 1;
        let pass = self.passes;
        let mut outcome = ScanOutcome::default();
        let uptime_ticks = read_uptime_ticks(&self.settings.proc_root, self.ticks_per_sec);
        let recheck = self.pids_with_new_session_files();
        for l in listing {
            if !self.observe(*l, pass, uptime_ticks, &recheck) {
                outcome.vanished += 1;
            }
        }
        self.cache.retain(|_, e| e.seen == pass);
        outcome.failed = self
            .cache
            .values()
            .filter(|e| matches!(e.class, Class::Unreadable))
            .count() as u64;
        self.sample_agents(uptime_ticks, &mut outcome);
        outcome
    }

    /// PIDs named by files in the default Claude sessions dir, when that dir changed since the
    /// last pass (one `stat` per pass otherwise).
    fn pids_with_new_session_files(&mut self) -> HashSet<u32> {
        let dir = self.settings.claude_config_dir.join("sessions");
        let stamp = file_stamp(&dir);
        if stamp == self.sessions_dir_stamp {
            return HashSet::new();
        }
        self.sessions_dir_stamp = stamp;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return HashSet::new();
        };
        entries
            .filter_map(Result::ok)
            .take(100_000)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse::<u32>()
                    .ok()
            })
            .collect()
    }

    /// Brings the cache entry for one listed PID up to date. False when it vanished.
    fn observe(
        &mut self,
        l: ListedPid,
        pass: u64,
        uptime_ticks: Option<u64>,
        recheck: &HashSet<u32>,
    ) -> bool {
        let dir = self.settings.proc_root.join(l.pid.to_string());
        if let Some(e) = self.cache.get_mut(&l.pid) {
            if e.ino != l.ino {
                match read_stat(&dir) {
                    Ok(st) if st.starttime == e.start_time => {
                        e.ino = l.ino;
                        e.ppid = u32::try_from(st.ppid).unwrap_or(0);
                    }
                    Ok(_) => {
                        self.cache.remove(&l.pid);
                        return self.add_new(l, &dir, pass, uptime_ticks);
                    }
                    Err(ReadError::Vanished) => {
                        self.cache.remove(&l.pid);
                        return false;
                    }
                    Err(ReadError::Unreadable(_)) => {
                        e.ino = l.ino;
                        e.class = Class::Unreadable;
                    }
                }
            }
            e.seen = pass;
            let was_agent = matches!(e.class, Class::Agent(_));
            let again = (matches!(e.class, Class::Other | Class::Unreadable)
                && (e.classified_young || recheck.contains(&l.pid)))
                // A fork of the agent before its exec looks like the agent: look again while
                // it is young.
                || (was_agent && e.classified_young);
            if again {
                let young = is_young(e.start_time, uptime_ticks, self.ticks_per_sec);
                match classify(
                    &dir,
                    self.settings.uid,
                    &self.settings.matchers,
                    &self.settings.claude_config_dir,
                ) {
                    Some(class) => {
                        if was_agent && !matches!(class, Class::Agent(_)) {
                            self.exec_away.push(l.pid);
                        }
                        if let Some(e) = self.cache.get_mut(&l.pid) {
                            e.class = class;
                            e.classified_young = young;
                        }
                    }
                    None => {
                        self.cache.remove(&l.pid);
                        return false;
                    }
                }
            }
            return true;
        }
        self.add_new(l, &dir, pass, uptime_ticks)
    }

    fn add_new(&mut self, l: ListedPid, dir: &Path, pass: u64, uptime_ticks: Option<u64>) -> bool {
        let (start_time, ppid, class) = match read_stat(dir) {
            Ok(st) => {
                let Some(class) = classify(
                    dir,
                    self.settings.uid,
                    &self.settings.matchers,
                    &self.settings.claude_config_dir,
                ) else {
                    return false;
                };
                (st.starttime, u32::try_from(st.ppid).unwrap_or(0), class)
            }
            Err(ReadError::Vanished) => return false,
            Err(ReadError::Unreadable(e)) => {
                tracing::debug!(pid = l.pid, error = %e, "cannot read process");
                (0, 0, Class::Unreadable)
            }
        };
        self.cache.insert(
            l.pid,
            Entry {
                ino: l.ino,
                start_time,
                ppid,
                seen: pass,
                classified_young: is_young(start_time, uptime_ticks, self.ticks_per_sec),
                class,
            },
        );
        true
    }

    fn process_start_ms(&self, start_time: u64) -> Option<i64> {
        let boot = self.boot_time_ms?;
        let offset = i64::try_from(start_time.saturating_mul(1000) / self.ticks_per_sec).ok()?;
        boot.checked_add(offset)
    }

    fn sample_agents(&mut self, uptime_ticks: Option<u64>, outcome: &mut ScanOutcome) {
        outcome.new_launchers.append(&mut self.exec_away);
        let agents: Vec<u32> = self
            .cache
            .iter()
            .filter(|(_, e)| matches!(e.class, Class::Agent(_)))
            .map(|(pid, _)| *pid)
            .collect();
        if agents.is_empty() {
            self.git.retain(&HashSet::new());
            return;
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, e) in &self.cache {
            if e.ppid != 0 {
                children.entry(e.ppid).or_default().push(*pid);
            }
        }
        let mut live_cwds = HashSet::new();
        let cache = &self.cache;
        self.launchers
            .retain(|(pid, start)| cache.get(pid).is_some_and(|e| e.start_time == *start));
        for pid in agents {
            let start = self.cache.get(&pid).map_or(0, |e| e.start_time);
            // Once a launcher, always one: after its agent child exits it lingers a moment
            // (or stays a zombie) with no agent child, and is still not a session.
            if self.launchers.contains(&(pid, start)) {
                continue;
            }
            if self.is_launcher(pid, &children) {
                self.launchers.insert((pid, start));
                outcome.new_launchers.push(pid);
                continue;
            }
            if let Some(found) = self.sample_agent(pid, &children, uptime_ticks) {
                if let Some(cwd) = &found.cwd {
                    live_cwds.insert(PathBuf::from(cwd));
                }
                outcome.found.push(found);
            }
        }
        self.git.retain(&live_cwds);
        outcome.found.sort_by_key(|d| d.process.pid);
    }

    fn harness_of(&self, pid: u32) -> Option<(&Harness, MatchKind)> {
        match &self.cache.get(&pid)?.class {
            Class::Agent(a) => Some((&a.harness, a.kind)),
            _ => None,
        }
    }

    /// An interpreter running an agent's launcher script (`node …/bin/codex`) whose child is the
    /// agent itself: the child is the session, the launcher is not a second one.
    fn is_launcher(&self, pid: u32, children: &HashMap<u32, Vec<u32>>) -> bool {
        let Some((harness, MatchKind::Script)) = self.harness_of(pid) else {
            return false;
        };
        children.get(&pid).is_some_and(|kids| {
            kids.iter()
                .any(|k| self.harness_of(*k).is_some_and(|(h, _)| h == harness))
        })
    }

    /// The agent and its descendants, stopping at other agents (they are sessions of their own).
    fn tree(&self, root: u32, children: &HashMap<u32, Vec<u32>>) -> Vec<u32> {
        let mut out = vec![root];
        let mut queue = VecDeque::from([root]);
        while let Some(p) = queue.pop_front() {
            for k in children.get(&p).into_iter().flatten() {
                if out.len() >= MAX_TREE {
                    return out;
                }
                if self.harness_of(*k).is_some() {
                    continue;
                }
                out.push(*k);
                queue.push_back(*k);
            }
        }
        out
    }

    fn sample_agent(
        &mut self,
        pid: u32,
        children: &HashMap<u32, Vec<u32>>,
        uptime_ticks: Option<u64>,
    ) -> Option<Discovered> {
        let root = self.settings.proc_root.clone();
        let dir = root.join(pid.to_string());
        let start_time = self.cache.get(&pid)?.start_time;
        let tree = self.tree(pid, children);
        let mut ticks = HashMap::with_capacity(tree.len());
        let mut rss_pages = 0u64;
        for p in &tree {
            let Ok(st) = read_stat(&root.join(p.to_string())) else {
                if *p == pid {
                    return None;
                }
                continue;
            };
            if *p == pid && st.starttime != start_time {
                return None;
            }
            ticks.insert(*p, (st.starttime, st.utime.saturating_add(st.stime)));
            rss_pages = rss_pages.saturating_add(st.rss);
        }
        let cwd = read_link_text(&dir.join("cwd")).ok().flatten();
        let process_start_ms = self.process_start_ms(start_time);
        let git_facts = cwd.as_deref().and_then(|c| self.git.facts(Path::new(c)));
        let now = Instant::now();
        let tps = self.ticks_per_sec;
        let Class::Agent(agent) = &mut self.cache.get_mut(&pid)?.class else {
            return None;
        };
        let cpu_percent = agent.last_sample.as_ref().and_then(|prev| {
            let elapsed = now.duration_since(prev.at).as_secs_f64();
            if elapsed <= 0.0 {
                return None;
            }
            let delta: u64 = ticks
                .iter()
                .map(|(p, (start, t))| match prev.ticks.get(p) {
                    Some((s, before)) if s == start => t.saturating_sub(*before),
                    // Born since the last sample: all its time was spent in this interval.
                    _ if prev.uptime_ticks.is_some_and(|u| *start >= u) => *t,
                    _ => 0,
                })
                .sum();
            let pct = delta as f64 / tps as f64 / elapsed * 100.0;
            Some((pct * 10.0).round() / 10.0)
        });
        agent.last_sample = Some(Sample {
            at: now,
            uptime_ticks,
            ticks,
        });
        let session = agent
            .claude_config_dir
            .clone()
            .and_then(|d| agent.refresh_session_file(&d, pid, process_start_ms));
        let mut usage = UsageUpdate {
            cpu_percent,
            rss_bytes: Some(rss_pages.saturating_mul(self.page_size)),
            ..UsageUpdate::default()
        };
        if let Some(g) = git_facts {
            if g.project_root.is_none() {
                // Outside any repository: clear what an earlier cwd left behind (an empty
                // string clears; `None` would mean "unchanged").
                usage.project_root = Some(String::new());
                usage.worktree_path = Some(String::new());
                usage.branch = Some(String::new());
            } else {
                usage.project_root = g.project_root;
                usage.worktree_path = g.worktree_path;
                usage.branch = g.branch;
            }
        }
        Some(Discovered {
            harness: agent.harness.clone(),
            process: ProcessIdentity { pid, start_time },
            session_id: session
                .as_ref()
                .map(|s| SessionId::new(s.session_id.clone())),
            cwd: cwd.or_else(|| session.as_ref().and_then(|s| s.cwd.clone())),
            tmux_pane: agent.tmux_pane.clone(),
            state_hint: session.as_ref().and_then(|s| s.state),
            state_hint_at: session.as_ref().and_then(|s| s.status_at),
            usage,
            adapter: self.settings.adapter_name.clone(),
        })
    }
}

/// Started less than [`YOUNG_SECS`] ago (false when the uptime is unknown).
fn is_young(start_time: u64, uptime_ticks: Option<u64>, ticks_per_sec: u64) -> bool {
    uptime_ticks.is_some_and(|now| now.saturating_sub(start_time) < YOUNG_SECS * ticks_per_sec)
}
