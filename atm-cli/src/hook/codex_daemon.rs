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
//! is one session and its exit removes it.
//!
//! Two TUIs in one directory look alike from `/proc`. A prompt tells them apart: when
//! `UserPromptSubmit` comes, the TUI the user typed it in shows it on its screen, so the hook
//! reads each candidate's tmux pane and takes the one pane that shows the prompt (the registry
//! keeps that PID and pane for the thread's later hooks, which carry none). When no single
//! pane shows it (the same prompt in both, no tmux, the TUI gone), the hook reports neither PID
//! nor pane, and the session is the thread's alone, never the daemon's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// A TUI that may be the thread's: its PID, pane and tmux server (`$TMUX`'s socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub pid: u32,
    pub tmux_pane: Option<String>,
    pub tmux_socket: Option<PathBuf>,
}

/// How many characters of a prompt are looked for on a screen: enough to tell two prompts
/// apart, short enough to fit on one line of a narrow pane (a wrapped line would break it).
const PROMPT_CHARS: usize = 40;
/// Tries at reading the panes: the TUI may draw the prompt a moment after the hook starts.
const SCREEN_TRIES: usize = 5;
const SCREEN_PAUSE: Duration = Duration::from_millis(80);
/// A tmux that does not answer within this is taken as no screen.
const TMUX_DEADLINE: Duration = Duration::from_millis(500);

/// The Codex process behind a hook whose agent ancestor is `agent_pid`, for a thread whose
/// working directory is `cwd`; `prompt` is the prompt the hook reports, if any (see the module
/// docs).
pub fn resolve_with_screens(
    proc_root: &Path,
    agent_pid: u32,
    cwd: Option<&Path>,
    prompt: Option<&str>,
) -> CodexProcess {
    match candidates(proc_root, agent_pid, cwd) {
        Found::Own => CodexProcess::Own,
        Found::Tuis(tuis) => pick(tuis, prompt, &capture_pane, SCREEN_TRIES),
    }
}

/// [`resolve_with_screens`] without a prompt: only `/proc` decides.
#[cfg(test)]
pub fn resolve(proc_root: &Path, agent_pid: u32, cwd: Option<&Path>) -> CodexProcess {
    match candidates(proc_root, agent_pid, cwd) {
        Found::Own => CodexProcess::Own,
        Found::Tuis(tuis) => pick(tuis, None, &|_| None, 1),
    }
}

enum Found {
    Own,
    Tuis(Vec<Candidate>),
}

/// The one candidate, or the one whose screen (read by `screen`, up to `tries` times) shows
/// `prompt`.
fn pick(
    mut tuis: Vec<Candidate>,
    prompt: Option<&str>,
    screen: &dyn Fn(&Candidate) -> Option<String>,
    tries: usize,
) -> CodexProcess {
    let tui = |c: Candidate| CodexProcess::Tui {
        pid: c.pid,
        tmux_pane: c.tmux_pane,
    };
    if tuis.len() == 1 {
        return tuis.pop().map_or(CodexProcess::Unknown, tui);
    }
    let Some(needle) = prompt.map(needle_of).filter(|n| !n.is_empty()) else {
        return CodexProcess::Unknown;
    };
    for attempt in 0..tries {
        if attempt > 0 {
            std::thread::sleep(SCREEN_PAUSE);
        }
        let showing: Vec<usize> = tuis
            .iter()
            .enumerate()
            .filter(|(_, c)| screen(c).is_some_and(|s| collapse(&s).contains(&needle)))
            .map(|(i, _)| i)
            .collect();
        match showing.as_slice() {
            [one] => return tui(tuis.swap_remove(*one)),
            [] => continue,
            // The same prompt on two screens: no telling.
            _ => return CodexProcess::Unknown,
        }
    }
    CodexProcess::Unknown
}

/// What is looked for: the prompt's first line, white space collapsed, at most
/// [`PROMPT_CHARS`] characters.
fn needle_of(prompt: &str) -> String {
    let first = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    collapse(first).chars().take(PROMPT_CHARS).collect()
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The visible text of the candidate's pane, from its own tmux server.
fn capture_pane(c: &Candidate) -> Option<String> {
    let pane = c.tmux_pane.as_deref()?;
    let mut cmd = Command::new("tmux");
    if let Some(socket) = &c.tmux_socket {
        cmd.arg("-S").arg(socket);
    }
    let mut child = cmd
        .args(["capture-pane", "-p", "-t", pane])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + TMUX_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    Some(out)
}

fn candidates(proc_root: &Path, agent_pid: u32, cwd: Option<&Path>) -> Found {
    let dir = proc_root.join(agent_pid.to_string());
    if !is_daemon(&read_args(&dir)) {
        return Found::Own;
    }
    let mut found = Vec::new();
    let Some(cwd) = cwd else {
        return Found::Tuis(found);
    };
    let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_owned());
    let home = codex_home(&read_environ(&dir));
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Found::Tuis(found);
    };
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
        found.push(Candidate {
            pid,
            tmux_pane: var(&env, "TMUX_PANE"),
            tmux_socket: var(&env, "TMUX")
                .and_then(|t| t.split(',').next().map(PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty()),
        });
    }
    found.sort_by_key(|c| c.pid);
    Found::Tuis(found)
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

    fn candidate(pid: u32, pane: &str) -> Candidate {
        Candidate {
            pid,
            tmux_pane: Some(pane.into()),
            tmux_socket: None,
        }
    }

    #[test]
    fn two_tuis_in_one_directory_are_told_apart_by_the_screen_that_shows_the_prompt() {
        let both = || vec![candidate(1, "%1"), candidate(2, "%2")];
        let screens = |c: &Candidate| {
            Some(match c.pid {
                1 => "  > please RUN   touch a-file\n  working".to_owned(),
                _ => "  > now something else entirely, a long prompt that the pane wraps\n    onto a second line".to_owned(),
            })
        };
        assert_eq!(
            pick(both(), Some("please RUN touch a-file"), &screens, 1),
            tui(1, "%1")
        );
        let long =
            "now something else entirely, a long prompt that the pane wraps onto a second line";
        assert_eq!(pick(both(), Some(long), &screens, 1), tui(2, "%2"));
        // Only the first line of a prompt is looked for.
        assert_eq!(
            pick(
                both(),
                Some("\n please RUN touch a-file\nand more"),
                &screens,
                1
            ),
            tui(1, "%1")
        );
        // On neither screen, on both, or no prompt at all: no telling.
        assert_eq!(
            pick(both(), Some("absent"), &screens, 1),
            CodexProcess::Unknown
        );
        let same = |_: &Candidate| Some("> hello".to_owned());
        assert_eq!(pick(both(), Some("hello"), &same, 1), CodexProcess::Unknown);
        assert_eq!(pick(both(), None, &screens, 1), CodexProcess::Unknown);
        assert_eq!(
            pick(both(), Some("  \n "), &screens, 1),
            CodexProcess::Unknown
        );
        let no_screen = |_: &Candidate| None;
        assert_eq!(
            pick(both(), Some("hello"), &no_screen, 1),
            CodexProcess::Unknown
        );
        // One candidate needs no screen; none is unknown.
        assert_eq!(
            pick(vec![candidate(3, "%3")], None, &no_screen, 1),
            tui(3, "%3")
        );
        assert_eq!(
            pick(Vec::new(), Some("x"), &screens, 1),
            CodexProcess::Unknown
        );
        // The prompt drawn a moment after the hook started is found by a later read.
        let reads = std::cell::Cell::new(0);
        let late = |c: &Candidate| {
            reads.set(reads.get() + 1);
            Some(
                if c.pid == 2 && reads.get() > 4 {
                    "> late one"
                } else {
                    ""
                }
                .to_owned(),
            )
        };
        assert_eq!(
            pick(both(), Some("late one"), &late, SCREEN_TRIES),
            tui(2, "%2")
        );
    }

    #[test]
    fn a_candidates_tmux_server_is_the_socket_of_its_tmux_variable() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let a = r.join("a");
        std::fs::create_dir_all(&a).unwrap();
        let daemon = ["codex", "app-server", "--managed-daemon"];
        entry(r, 10, "codex", &daemon, &["CODEX_HOME=/h"], &a);
        entry(
            r,
            20,
            "codex",
            &["codex"],
            &["CODEX_HOME=/h", "TMUX=/tmp/tmux-0/lab,99,0", "TMUX_PANE=%4"],
            &a,
        );
        entry(
            r,
            30,
            "codex",
            &["codex"],
            &["CODEX_HOME=/h", "TMUX_PANE=%5"],
            &a,
        );
        let Found::Tuis(tuis) = candidates(r, 10, Some(&a)) else {
            panic!("the daemon's hook has candidates");
        };
        assert_eq!(
            tuis,
            vec![
                Candidate {
                    pid: 20,
                    tmux_pane: Some("%4".into()),
                    tmux_socket: Some("/tmp/tmux-0/lab".into()),
                },
                candidate(30, "%5"),
            ]
        );
    }
}
