//! Which Codex TUI a hook is about when Codex's background daemon runs it.
//!
//! Codex 0.171 runs its sessions in a shared background server by default: the first TUI
//! starts `codex app-server --listen unix:// --managed-daemon` (from a copy of itself under
//! `$CODEX_HOME/packages/`), later TUIs connect to it, and the daemon outlives them all. Hooks
//! and the `notify` program are then children of the daemon, with the daemon's environment
//! (the first TUI's `$TMUX_PANE`) and no trace of the TUI in the payload. What does identify
//! the TUI: it is a `codex` process of the same Codex home (`$CODEX_HOME`, `$HOME`) whose
//! working directory is the thread's (`cwd` in the payload, which is also where Codex runs the
//! hook). When exactly one TUI matches, the hook reports that TUI's PID and pane, so one Codex
//! is one session and its exit removes it; otherwise (two TUIs in one directory, or the TUI is
//! gone) it reports neither, and the session is the thread's alone, never the daemon's.

use std::path::{Path, PathBuf};

/// What the hook's agent process is, as far as its Codex TUI goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodexProcess {
    /// Not Codex's daemon: the process found among the hook's ancestors is the agent.
    Own,
    /// Run by the daemon on behalf of this TUI (its PID and `$TMUX_PANE`).
    Tui { pid: u32, tmux_pane: Option<String> },
    /// Run by the daemon, and no single TUI is the thread's.
    Unknown,
}

/// The Codex process behind a hook whose agent ancestor is `agent_pid`, for a thread whose
/// working directory is `cwd`.
pub fn resolve(proc_root: &Path, agent_pid: u32, cwd: Option<&Path>) -> CodexProcess {
    let dir = proc_root.join(agent_pid.to_string());
    if !is_daemon(&read_args(&dir)) {
        return CodexProcess::Own;
    }
    let Some(cwd) = cwd else {
        return CodexProcess::Unknown;
    };
    let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_owned());
    let home = codex_home(&read_environ(&dir));
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return CodexProcess::Unknown;
    };
    let mut found = None;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let p = entry.path();
        let is_codex = std::fs::read_to_string(p.join("comm"))
            .is_ok_and(|c| c.trim_end().starts_with("codex"));
        if !is_codex || is_daemon(&read_args(&p)) {
            continue;
        }
        let env = read_environ(&p);
        if codex_home(&env) != home || std::fs::read_link(p.join("cwd")).ok() != Some(cwd.clone()) {
            continue;
        }
        if found.is_some() {
            return CodexProcess::Unknown;
        }
        found = Some(CodexProcess::Tui {
            pid,
            tmux_pane: var(&env, "TMUX_PANE"),
        });
    }
    found.unwrap_or(CodexProcess::Unknown)
}

/// `codex app-server ...` (the daemon and its helpers) rather than a TUI or `codex exec`.
fn is_daemon(args: &[String]) -> bool {
    args.first().is_some_and(|a| a.contains("codex")) && args.iter().any(|a| a == "app-server")
}

/// What makes two Codex processes share a daemon: the same `$CODEX_HOME` (or `$HOME`).
fn codex_home(env: &[(String, String)]) -> Option<PathBuf> {
    var(env, "CODEX_HOME")
        .map(PathBuf::from)
        .or_else(|| var(env, "HOME").map(|h| Path::new(&h).join(".codex")))
}

fn var(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn read_args(dir: &Path) -> Vec<String> {
    split_nul(&std::fs::read(dir.join("cmdline")).unwrap_or_default())
}

fn read_environ(dir: &Path) -> Vec<(String, String)> {
    split_nul(&std::fs::read(dir.join("environ")).unwrap_or_default())
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TUI with `pid`, in tmux pane `pane`.
    fn tui(pid: u32, pane: &str) -> CodexProcess {
        CodexProcess::Tui {
            pid,
            tmux_pane: Some(pane.into()),
        }
    }

    /// A fake `/proc` entry: comm, NUL-separated cmdline and environ, and a cwd symlink.
    fn entry(root: &Path, pid: u32, comm: &str, args: &[&str], env: &[&str], cwd: &Path) {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("cmdline"), args.join("\0")).unwrap();
        std::fs::write(d.join("environ"), env.join("\0")).unwrap();
        std::os::unix::fs::symlink(cwd, d.join("cwd")).unwrap();
    }

    #[test]
    fn the_daemons_hook_belongs_to_the_one_tui_in_the_threads_directory() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let (a, b) = (r.join("a"), r.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let daemon = [
            "/h/.codex/packages/bin/codex",
            "app-server",
            "--listen",
            "unix://",
            "--managed-daemon",
        ];
        let home = ["CODEX_HOME=/h/.codex", "TMUX_PANE=%0"];
        entry(r, 10, "codex", &daemon, &home, &a);
        entry(
            r,
            20,
            "codex",
            &["codex"],
            &["CODEX_HOME=/h/.codex", "TMUX_PANE=%0"],
            &a,
        );
        entry(
            r,
            30,
            "codex",
            &["codex"],
            &["CODEX_HOME=/h/.codex", "TMUX_PANE=%1"],
            &b,
        );
        // Another user's Codex home in the same directory is not this daemon's.
        entry(
            r,
            40,
            "codex",
            &["codex"],
            &["CODEX_HOME=/other", "TMUX_PANE=%9"],
            &b,
        );
        entry(r, 50, "node", &["node", "codex"], &home, &b);
        assert_eq!(resolve(r, 10, Some(&b)), tui(30, "%1"));
        assert_eq!(resolve(r, 10, Some(&a)), tui(20, "%0"));
        // Not the daemon: the ancestor itself is the agent.
        assert_eq!(resolve(r, 20, Some(&a)), CodexProcess::Own);
        // No TUI there any more, no cwd, or two TUIs in one directory: neither PID nor pane.
        assert_eq!(resolve(r, 10, Some(r)), CodexProcess::Unknown);
        assert_eq!(resolve(r, 10, None), CodexProcess::Unknown);
        entry(r, 60, "codex", &["codex"], &["CODEX_HOME=/h/.codex"], &b);
        assert_eq!(resolve(r, 10, Some(&b)), CodexProcess::Unknown);
        // Garbage in /proc is skipped.
        std::fs::create_dir_all(r.join("70")).unwrap();
        std::fs::write(r.join("70/comm"), [0xff, 0xfe]).unwrap();
        assert_eq!(resolve(r, 10, Some(&a)), tui(20, "%0"));
        assert_eq!(resolve(r, 999, Some(&a)), CodexProcess::Own);
    }
}
