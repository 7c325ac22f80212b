//! What a process is to the scanner, and what it keeps about each agent between passes.
//!
//! [`classify`] reads as little of a process as decides it (see [`crate::scan`] for the costs):
//! the owner of `/proc/<pid>` first (another user's processes are never looked into), then
//! `cmdline` and the `exe` link for the matchers, and `environ` only for an agent. An agent then
//! carries its harness, its pane, where its Claude session file lives, the session file as last
//! parsed (re-parsed only when its stamp changes) and its last CPU sample. Kept apart from the
//! pass itself so that the pass reads as bookkeeping over the cache.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use atm_core::Harness;

use crate::claude::{self, SessionFile};
use crate::matcher::{MatchKind, MatcherConfig, match_process};
use atm_core::process::environ_var as env_var;

use crate::procread::{ENVIRON_CAP, ReadError, read_capped, read_cmdline, read_link_text};

/// What a process is.
#[derive(Debug)]
pub(crate) enum Class {
    /// Another user's process.
    Foreign,
    /// Ours, not an agent.
    Other,
    /// Could not be read.
    Unreadable,
    Agent(Box<Agent>),
}

/// An agent process, as the scanner keeps it between passes.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) harness: Harness,
    pub(crate) kind: MatchKind,
    pub(crate) tmux_pane: Option<String>,
    /// Where its Claude session file lives (Claude only).
    pub(crate) claude_config_dir: Option<PathBuf>,
    session_file: Option<(FileStamp, Option<SessionFile>)>,
    pub(crate) last_sample: Option<Sample>,
}

/// One CPU sample of an agent's process tree.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) uptime_ticks: Option<u64>,
    /// Per process in the tree: start time and CPU ticks (user + system).
    pub(crate) ticks: HashMap<u32, (u64, u64)>,
}

/// A file's mtime (seconds, nanoseconds), inode and size: changed when the file changed.
pub(crate) type FileStamp = (i64, i64, u64, u64);

pub(crate) fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.ino(), m.size()))
}

impl Agent {
    /// The session file's content, re-parsed only when the file changed.
    pub(crate) fn refresh_session_file(
        &mut self,
        config_dir: &Path,
        pid: u32,
        process_start_ms: Option<i64>,
    ) -> Option<SessionFile> {
        let path = claude::session_file_path(config_dir, pid);
        let Some(stamp) = file_stamp(&path) else {
            self.session_file = None;
            return None;
        };
        if let Some((old, parsed)) = &self.session_file
            && *old == stamp
        {
            return parsed.clone();
        }
        let parsed = claude::read(config_dir, pid, process_start_ms);
        self.session_file = Some((stamp, parsed.clone()));
        parsed
    }
}

/// Decides what the process at `dir` is: only processes owned by `uid` are looked into, an
/// agent is what one of `matchers` matches, and a Claude that sets no `CLAUDE_CONFIG_DIR` of
/// its own keeps its session files in `claude_config_dir`. `None` when it vanished while being
/// read.
pub(crate) fn classify(
    dir: &Path,
    uid: u32,
    matchers: &[MatcherConfig],
    claude_config_dir: &Path,
) -> Option<Class> {
    match std::fs::metadata(dir).map_err(ReadError::from) {
        Ok(m) if m.uid() != uid => return Some(Class::Foreign),
        Ok(_) => {}
        Err(ReadError::Vanished) => return None,
        Err(ReadError::Unreadable(_)) => return Some(Class::Unreadable),
    }
    let argv = match read_cmdline(dir) {
        Ok(a) => a,
        Err(ReadError::Vanished) => return None,
        Err(ReadError::Unreadable(_)) => return Some(Class::Unreadable),
    };
    // No exe link (kernel threads, zombies, processes we may not inspect): judge by argv alone.
    let exe = match read_link_text(&dir.join("exe")) {
        Ok(e) => e,
        Err(ReadError::Vanished) => return None,
        Err(ReadError::Unreadable(_)) => None,
    };
    let Some(m) = match_process(matchers, &argv, exe.as_deref()) else {
        return Some(Class::Other);
    };
    let environ = match read_capped(&dir.join("environ"), ENVIRON_CAP) {
        Ok(b) => b,
        Err(ReadError::Vanished) => return None,
        Err(ReadError::Unreadable(_)) => Vec::new(),
    };
    let harness = Harness::new(matchers.get(m.matcher)?.harness.clone());
    let claude_config_dir = (harness.as_str() == Harness::CLAUDE).then(|| {
        env_var(&environ, "CLAUDE_CONFIG_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| claude_config_dir.to_path_buf())
    });
    Some(Class::Agent(Box::new(Agent {
        harness,
        kind: m.kind,
        tmux_pane: env_var(&environ, "TMUX_PANE").filter(|p| !p.is_empty() && p.len() <= 64),
        claude_config_dir,
        session_file: None,
        last_sample: None,
    })))
}
