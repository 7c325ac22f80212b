//! Which process is the agent: the hook's ancestors are walked in `/proc` (a root passed in, so
//! tests use a fake tree) until one is recognised as the agent, skipping the transient shells
//! the agent starts to run the hook command.

use std::path::Path;

/// How many ancestors to inspect when looking for the agent process (hook -> shell -> agent is
/// two; wrappers such as `npx` or `env` add a few).
const MAX_ANCESTORS: usize = 8;

/// Which agent runs the hook, so that its process can be recognised among the ancestors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// `claude`, or `node` running Claude Code's `cli.js` (npm installs).
    Claude,
    /// A program whose name starts with `codex` (the npm launcher starts a native binary such
    /// as `codex-x86_64-unknown-linux-musl`), or `node` running codex.
    Codex,
    /// `gemini`, or `node` running Gemini CLI (its usual form).
    Gemini,
    /// An agent atm-hook has no rule for: only the fallback applies.
    Other,
}

impl AgentKind {
    /// The kind for `--agent NAME` (`None`: Claude, the default route).
    pub fn from_name(agent: Option<&str>) -> Self {
        match agent {
            None | Some("claude") => Self::Claude,
            Some("codex") => Self::Codex,
            Some("gemini") => Self::Gemini,
            Some(_) => Self::Other,
        }
    }

    /// The name its processes carry: what `comm`, the executable or node's command line shows.
    fn program(self) -> Option<&'static [u8]> {
        match self {
            Self::Claude => Some(b"claude"),
            Self::Codex => Some(b"codex"),
            Self::Gemini => Some(b"gemini"),
            Self::Other => None,
        }
    }
}

/// The agent process among the ancestors of the hook, starting at `parent`: the first that
/// [`AgentKind`] recognises. Without one, the parent, except that transient shells (`sh -c`
/// and the like, which the agent starts to run the hook command and which exit with it) are
/// skipped: the registry watches this PID and would drop the session as soon as it exits.
pub fn find_agent_pid(proc_root: &Path, parent: u32, agent: AgentKind) -> u32 {
    let mut pid = parent;
    // The fallback: the first ancestor that is not a transient shell, once one is seen.
    let mut fallback = None;
    for _ in 0..MAX_ANCESTORS {
        let Some((comm, ppid)) = read_stat(proc_root, pid) else {
            break;
        };
        if is_agent(proc_root, pid, &comm, agent) {
            return pid;
        }
        if fallback.is_none() && !is_transient_shell(proc_root, pid, &comm) {
            fallback = Some(pid);
        }
        if ppid <= 1 {
            break;
        }
        pid = ppid;
    }
    fallback.unwrap_or(parent)
}

/// `(comm, ppid)` from `/proc/<pid>/stat`. The name sits in parentheses and may itself contain
/// spaces and parentheses, so the fields after it are found from the last `)`.
fn read_stat(proc_root: &Path, pid: u32) -> Option<(Vec<u8>, u32)> {
    let stat = std::fs::read(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = stat.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let ppid = rest.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

fn is_agent(proc_root: &Path, pid: u32, comm: &[u8], agent: AgentKind) -> bool {
    let Some(name) = agent.program() else {
        return false;
    };
    // Codex's native binaries carry a target suffix; Claude and Gemini are matched exactly.
    let matches = |candidate: &[u8]| {
        if agent == AgentKind::Codex {
            candidate.starts_with(name)
        } else {
            candidate == name
        }
    };
    if matches(comm) {
        return true;
    }
    let dir = proc_root.join(pid.to_string());
    if comm == b"node" {
        // npm installs: `node .../@anthropic-ai/claude-code/cli.js`, `node .../bin/gemini`.
        return read_cmdline(&dir)
            .is_some_and(|c| c.windows(name.len()).any(|w| w.eq_ignore_ascii_case(name)));
    }
    std::fs::read_link(dir.join("exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| matches(n.as_encoded_bytes()))
    })
}

fn read_cmdline(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join("cmdline")).ok()
}

/// A shell running a command string (`sh -c ...`): what agents start to run a hook command.
/// An interactive shell (no `-c`) is where a person ran the hook by hand, so it is kept.
fn is_transient_shell(proc_root: &Path, pid: u32, comm: &[u8]) -> bool {
    if !matches!(comm, b"sh" | b"bash" | b"dash" | b"zsh") {
        return false;
    }
    read_cmdline(&proc_root.join(pid.to_string())).is_some_and(|c| {
        c.split(|&b| b == 0)
            .skip(1)
            .any(|arg| arg.starts_with(b"-") && !arg.starts_with(b"--") && arg.contains(&b'c'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc() -> (tempfile::TempDir, impl Fn(u32, &str, u32, &[u8])) {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().to_owned();
        let entry = move |pid: u32, comm: &str, ppid: u32, cmdline: &[u8]| {
            let d = base.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("stat"), format!("{pid} ({comm}) S {ppid} 1 1 0 -1")).unwrap();
            std::fs::write(d.join("cmdline"), cmdline).unwrap();
        };
        (root, entry)
    }

    /// Writes each of `procs` (pid, comm, cmdline) with `entry` as the child of the next one;
    /// the last one's parent is init.
    fn chain(entry: impl Fn(u32, &str, u32, &[u8]), procs: &[(u32, &str, &[u8])]) {
        for (i, &(pid, comm, cmdline)) in procs.iter().enumerate() {
            let ppid = procs.get(i + 1).map_or(1, |&(parent, _, _)| parent);
            entry(pid, comm, ppid, cmdline);
        }
    }

    #[test]
    fn finds_claude_among_fake_ancestors() {
        let (root, proc_entry) = fake_proc();
        let find = |pid| find_agent_pid(root.path(), pid, AgentKind::Claude);
        proc_entry(100, "sh", 90, b"sh\0-c\0atm-hook\0");
        proc_entry(90, "claude", 80, b"claude\0");
        proc_entry(80, "bash", 1, b"bash\0");
        assert_eq!(find(100), 90);
        // npm install: node running claude's cli.js, behind a shell whose name has a `) `.
        proc_entry(200, "we ird) x", 190, b"sh\0");
        proc_entry(
            190,
            "node",
            1,
            b"node\0/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js\0",
        );
        assert_eq!(find(200), 190);
        // Plain node and no claude anywhere: the transient `sh -c` is skipped for its parent.
        proc_entry(300, "sh", 290, b"sh\0-c\0atm-hook\0");
        proc_entry(290, "node", 1, b"node\0server.js\0");
        assert_eq!(find(300), 290);
        // An interactive shell (someone ran the hook by hand) is kept.
        proc_entry(350, "bash", 340, b"-bash\0");
        proc_entry(340, "sshd", 1, b"sshd\0");
        assert_eq!(find(350), 350);
        // Missing or garbage stat: the parent.
        assert_eq!(find(999), 999);
        let d = root.path().join("400");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("stat"), b"\xff garbage").unwrap();
        assert_eq!(find(400), 400);
    }

    #[test]
    fn finds_codex_and_gemini_among_fake_ancestors() {
        let (root, proc_entry) = fake_proc();
        // npm Codex: node launcher -> native binary (comm cut to 15 bytes) -> sh -c -> hook.
        chain(
            &proc_entry,
            &[
                (100, "sh", b"sh\0-c\0atm-hook --agent codex\0"),
                (
                    90,
                    "codex-x86_64-un",
                    b"/usr/lib/codex-x86_64-unknown-linux-musl\0",
                ),
                (
                    80,
                    "node",
                    b"node\0/usr/lib/node_modules/@openai/codex/bin/codex.js\0",
                ),
                (70, "bash", b"bash\0"),
            ],
        );
        assert_eq!(find_agent_pid(root.path(), 100, AgentKind::Codex), 90);
        // The same chain is no Claude: skip the shell, take the native binary as the fallback.
        assert_eq!(find_agent_pid(root.path(), 100, AgentKind::Claude), 90);
        // Codex running notify directly, under node only.
        assert_eq!(find_agent_pid(root.path(), 80, AgentKind::Codex), 80);

        // Gemini: node re-launched by node, hook behind `bash -c`.
        chain(
            &proc_entry,
            &[
                (200, "bash", b"bash\0-c\0atm-hook --agent gemini\0"),
                (
                    190,
                    "node",
                    b"node\0--max-old-space-size=8192\0/usr/bin/gemini\0",
                ),
                (180, "node", b"node\0/usr/bin/gemini\0"),
            ],
        );
        assert_eq!(find_agent_pid(root.path(), 200, AgentKind::Gemini), 190);
        proc_entry(300, "gemini", 1, b"gemini\0");
        assert_eq!(find_agent_pid(root.path(), 300, AgentKind::Gemini), 300);
        // Node running something else is not Gemini; an unknown agent gets the fallback only.
        proc_entry(400, "sh", 390, b"sh\0-c\0x\0");
        proc_entry(390, "node", 1, b"node\0server.js\0");
        assert_eq!(find_agent_pid(root.path(), 400, AgentKind::Gemini), 390);
        assert_eq!(find_agent_pid(root.path(), 100, AgentKind::Other), 90);
        assert_eq!(AgentKind::from_name(Some("pi")), AgentKind::Other);
        assert_eq!(AgentKind::from_name(None), AgentKind::Claude);
    }
}
