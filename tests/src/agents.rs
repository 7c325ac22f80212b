//! The real-agent lab: a real agent CLI (installed from npm at the version pinned in
//! `tests/agents/versions`) in a real tmux pane, talking to `atm-fake-model` on loopback, with
//! atm's hooks installed by the real `atmctl setup`, reporting to a real `atmd`.
//!
//! The agent, its tmux server and the fake model run inside their own network namespace
//! (`unshare -n`, loopback only) where the machine allows it, so nothing the agent tries can
//! leave the machine; atm's sockets are Unix sockets, which a network namespace does not
//! separate. Tests drive the agent by typing into its pane (`tmux send-keys`) and compare what
//! atm says (`atmctl list --json`) with what the pane shows (`tmux capture-pane`).
//!
//! `ATM_REAL_AGENTS=required` (set by `scripts/test`) makes a missing CLI a failure; otherwise a
//! test whose CLI is not installed says so and passes without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::{Daemon, basic_config, bin};

const VERSIONS: &str = include_str!("../agents/versions");

/// Where `scripts/install-agents` puts the CLIs.
fn agents_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ATM_AGENTS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".cache/atm/agents")
}

/// The pinned version of `name` (or `latest` under `ATM_AGENTS_LATEST=1`) and its binary.
pub fn agent_binary(name: &str) -> Option<PathBuf> {
    let line = VERSIONS
        .lines()
        .map(str::split_whitespace)
        .map(Iterator::collect::<Vec<_>>)
        .find(|f| f.first() == Some(&name))
        .unwrap_or_else(|| panic!("{name} is not in tests/agents/versions"));
    let version = if std::env::var_os("ATM_AGENTS_LATEST").is_some() {
        "latest"
    } else {
        line[2]
    };
    let path = agents_root()
        .join(format!("{name}-{version}"))
        .join("node_modules/.bin")
        .join(line[3]);
    if path.exists() {
        return Some(path);
    }
    let hint = format!(
        "{} is not installed: run scripts/install-agents ({} {version})",
        path.display(),
        line[1]
    );
    assert!(
        std::env::var("ATM_REAL_AGENTS").as_deref() != Ok("required"),
        "{hint}"
    );
    eprintln!("skipped: {hint}");
    None
}

/// True when this process may create a network namespace (root, or unprivileged user
/// namespaces allowed).
fn netns_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// One agent in one tmux pane (more with [`AgentLab::open_pane`]) with its own fake model.
/// Everything is torn down on drop.
pub struct AgentLab {
    pub dir: tempfile::TempDir,
    tmux_socket: String,
}

/// The first pane's target.
pub const FIRST: &str = "agent";

/// How long [`AgentLab::wait_screen`] waits.
pub const SCREEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Shell lines that remove what marks a CI job from the environment (`CI`,
/// `CONTINUOUS_INTEGRATION`, every `CI_*`), as `is-in-ci` and similar checks read it.
const UNSET_CI: &str = "unset CI CONTINUOUS_INTEGRATION BUILD_NUMBER RUN_ID\n\
    for v in $(env | sed -n 's/^\\(CI_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset \"$v\"; done\n";

impl AgentLab {
    /// Starts the fake model and, in a tmux pane whose working directory is `cwd`, runs
    /// `command` with `env` plus `ATM_FAKE_MODEL_URL` (the model's `http://addr`) and the
    /// daemon's environment (so atm-hook finds this test's atmd).
    pub fn start(daemon: &Daemon, cwd: &Path, command: &str, env: &[(&str, String)]) -> AgentLab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tmux_socket = format!("atm-agent-{}-{}", std::process::id(), unique());
        let mut exports = String::new();
        for (k, v) in daemon
            .env()
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .chain(env.iter().cloned())
        {
            exports.push_str(&format!("export {k}={}\n", shell_quote(&v)));
        }
        // The pane is a person's terminal, not a CI job: CI runners set `CI` (and often
        // `CI_*`), and Gemini CLI (through Ink's `is-in-ci`) then refuses interactive mode and
        // exits with "No input provided via stdin". The agents must see what a user's shell has.
        let agent_sh = format!(
            "#!/bin/sh\n{UNSET_CI}{exports}export ATM_FAKE_MODEL_URL=\"http://$(cat {addr})\"\n\
             export PATH={path}:\"$PATH\"\nexec {command}\n",
            addr = d.join("model.addr").display(),
            path = shell_quote(&bin("atm-hook").parent().unwrap().display().to_string()),
        );
        write_exec(&d.join("agent.sh"), &agent_sh);
        let launch = format!(
            "#!/bin/sh\nset -e\nip link set lo up 2>/dev/null || true\n\
             {fake} --port-file {dir}/model.addr 2>{dir}/model.log &\necho $! > {dir}/model.pid\n\
             i=0; while [ ! -s {dir}/model.addr ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n\
             tmux -L {sock} -f /dev/null new-session -d -s agent -x 200 -y 50 -c {cwd} {dir}/agent.sh\n\
             tmux -L {sock} set-option -g remain-on-exit on\n",
            fake = bin("atm-fake-model").display(),
            dir = d.display(),
            sock = tmux_socket,
            cwd = shell_quote(&cwd.display().to_string()),
        );
        write_exec(&d.join("launch.sh"), &launch);
        let mut cmd = if netns_available() {
            let mut c = Command::new("unshare");
            c.args(["-n", "/bin/sh"]);
            c
        } else {
            eprintln!("note: no network namespace here; the agent runs on the host's loopback");
            Command::new("/bin/sh")
        };
        let status = cmd.arg(d.join("launch.sh")).status().unwrap();
        assert!(status.success(), "launching the agent lab failed");
        AgentLab { dir, tmux_socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.tmux_socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The command that runs a program in the agent's network namespace (`nsenter --net=...`;
    /// empty when the lab has none), for a daemon that must reach the agent's loopback
    /// (opencode's server): set it as [`Daemon::wrapper`] and respawn the daemon.
    pub fn netns_prefix(&self) -> Vec<String> {
        let pid = std::fs::read_to_string(self.dir.path().join("model.pid")).unwrap_or_default();
        if !netns_available() || pid.trim().is_empty() {
            return Vec::new();
        }
        vec![
            "nsenter".to_owned(),
            format!("--net=/proc/{}/ns/net", pid.trim()),
            "--".to_owned(),
        ]
    }

    /// Runs the agent (the same command and environment) in a second pane beside the first,
    /// in `cwd`; returns its pane id (`%N`), the target of the `*_in` methods.
    pub fn open_pane(&self, cwd: &Path) -> String {
        let agent = self.dir.path().join("agent.sh");
        self.tmux(&[
            "split-window",
            "-d",
            "-h",
            "-P",
            "-F",
            "#{pane_id}",
            "-t",
            FIRST,
            "-c",
            &cwd.display().to_string(),
            &agent.display().to_string(),
        ])
        .trim()
        .to_owned()
    }

    /// Starts pane `target`'s command again (its process, if still running, is killed).
    pub fn respawn(&self, target: &str) {
        self.tmux(&["respawn-pane", "-k", "-t", target]);
    }

    /// The pane's screen as text.
    pub fn screen(&self) -> String {
        self.screen_in(FIRST)
    }

    /// The screen of pane `target`.
    pub fn screen_in(&self, target: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", target])
    }

    fn pane_field(&self, target: &str, field: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", target, field])
            .trim()
            .to_owned()
    }

    /// The agent's tmux pane id (`%N`), as `TMUX_PANE` tells the agent.
    pub fn pane(&self) -> String {
        self.pane_field(FIRST, "#{pane_id}")
    }

    /// The agent's process id (the pane's process).
    pub fn pid(&self) -> u32 {
        self.pid_in(FIRST)
    }

    /// The process id of pane `target`'s agent.
    pub fn pid_in(&self, target: &str) -> u32 {
        self.pane_field(target, "#{pane_pid}").parse().unwrap_or(0)
    }

    /// True once the pane's process has exited.
    pub fn exited(&self) -> bool {
        self.exited_in(FIRST)
    }

    /// True once pane `target`'s process has exited.
    pub fn exited_in(&self, target: &str) -> bool {
        self.pane_field(target, "#{pane_dead}") == "1"
    }

    /// Types `text` literally and, once the pane shows it, presses Enter. (An Enter that
    /// arrives with the text is taken as part of a paste by some agents, not as "submit".)
    pub fn type_line(&self, text: &str) {
        self.type_line_in(FIRST, text);
    }

    /// [`AgentLab::type_line`] into pane `target`.
    pub fn type_line_in(&self, target: &str, text: &str) {
        self.tmux(&["send-keys", "-t", target, "-l", text]);
        let tail_start = text.char_indices().rev().nth(19).map_or(0, |(i, _)| i);
        let tail = &text[tail_start..];
        self.wait_screen_in(target, &format!("the typed text {text:?}"), |s| {
            s.contains(tail)
        });
        self.keys_in(target, &["Enter"]);
    }

    /// Presses keys by tmux name (`Escape`, `Enter`, `C-c`, `1`).
    pub fn keys(&self, keys: &[&str]) {
        self.keys_in(FIRST, keys);
    }

    /// Presses keys in pane `target`.
    pub fn keys_in(&self, target: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", target];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Presses `keys` until the screen satisfies `done` (at most 5 times, 2 s apart). Agents'
    /// dialogs drop keystrokes that arrive just after they appear (a guard against approving
    /// by accident while typing); a test presses again, as a person would.
    pub fn press_until(&self, keys: &[&str], what: &str, done: impl Fn(&str) -> bool) {
        self.press_until_in(FIRST, keys, what, done);
    }

    /// [`AgentLab::press_until`] in pane `target`.
    pub fn press_until_in(
        &self,
        target: &str,
        keys: &[&str],
        what: &str,
        done: impl Fn(&str) -> bool,
    ) {
        for _ in 0..5 {
            self.keys_in(target, keys);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if done(&self.screen_in(target)) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        panic!(
            "pressing {keys:?} never led to {what}; screen:\n{}",
            self.screen_in(target)
        );
    }

    /// Waits until the screen satisfies `pred`; returns it.
    pub fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_screen_in(FIRST, what, pred)
    }

    /// [`AgentLab::wait_screen`] for pane `target`.
    pub fn wait_screen_in(&self, target: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_screen_within(target, SCREEN_WAIT, what, pred)
    }

    /// [`AgentLab::wait_screen_in`] with its own deadline, for a screen known to take long
    /// (an agent's start on a loaded machine).
    pub fn wait_screen_within(
        &self,
        target: &str,
        within: std::time::Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let found = std::cell::Cell::new(false);
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            last = self.screen_in(target);
            if pred(&last) {
                found.set(true);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            found.get(),
            "the pane never showed {what}; screen:\n{last}\nmodel log:\n{}",
            self.model_log()
        );
        last
    }

    /// What the fake model was asked, one line per request.
    pub fn model_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("model.log")).unwrap_or_default()
    }
}

impl Drop for AgentLab {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.tmux_socket, "kill-server"])
            .output();
        let pid = std::fs::read_to_string(self.dir.path().join("model.pid")).unwrap_or_default();
        if let Some(pid) = pid
            .trim()
            .parse()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// Ends the background server Codex started for `codex_home` (`codex app-server
/// --managed-daemon` and its helper), which outlives its TUIs and the tmux server: their PIDs
/// are in `$CODEX_HOME/app-server-daemon/*.pid` (JSON with a `pid`).
pub fn stop_codex_daemon(codex_home: &Path) {
    for file in ["daemon.pid", "daemon-updater.pid"] {
        let text = std::fs::read_to_string(codex_home.join("app-server-daemon").join(file))
            .unwrap_or_default();
        let pid = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["pid"].as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// atmd as every real suite runs it: the agent's own adapter (`None`: it has none, proc-discovery
/// alone finds it) and proc-discovery every 500 ms.
pub fn lab_daemon(adapter: Option<&str>) -> Daemon {
    let own = adapter
        .map(|a| format!("[[adapter]]\ntype = \"{a}\"\n\n"))
        .unwrap_or_default();
    Daemon::start(&basic_config(&format!(
        "{own}[[adapter]]\ntype = \"proc-discovery\"\ninterval = \"500ms\"\n"
    )))
}

/// A project directory `name` under the daemon's temporary directory, for the agent to run in
/// (its sessions are then this test's; see [`sessions_under`]).
pub fn project_dir(daemon: &Daemon, name: &str) -> PathBuf {
    let dir = daemon.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The one session of `harness` in `atmctl list --json`, if any.
pub fn session_of<'a>(sessions: &'a [Value], harness: &str) -> Option<&'a Value> {
    sessions
        .iter()
        .find(|s| s["agent_type"] == harness || s["harness"] == harness)
}

/// The sessions of `harness` whose project is under `root` (or not known yet): a test's own.
/// proc-discovery also finds the agents of tests running beside it, in their own directories,
/// and learns their state from their session files.
pub fn sessions_under<'a>(sessions: &'a [Value], harness: &str, root: &Path) -> Vec<&'a Value> {
    let root = root.display().to_string();
    sessions_of(sessions, harness)
        .into_iter()
        .filter(|s| {
            s["working_directory"]
                .as_str()
                .is_none_or(|d| d.starts_with(&root))
        })
        .collect()
}

/// Every session of `harness` in `atmctl list --json`.
pub fn sessions_of<'a>(sessions: &'a [Value], harness: &str) -> Vec<&'a Value> {
    sessions
        .iter()
        .filter(|s| s["agent_type"] == harness || s["harness"] == harness)
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Single-quotes `s` for /bin/sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The lines a [`record_through`] tee saw, in order.
pub type Recording = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A tee between an agent's connector and atmd's ingest socket `atmd`: clients connect to
/// `listen` (point the agent's socket variable at it), each line goes on to atmd and is kept.
/// How the real payloads under `adapters/*/tests/fixtures/real-*` are recorded.
pub fn record_through(listen: &Path, atmd: PathBuf) -> Recording {
    use std::io::{BufRead, Write};
    let lines: Recording = Default::default();
    let listener = std::os::unix::net::UnixListener::bind(listen).unwrap();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(mut server) = std::os::unix::net::UnixStream::connect(&atmd) else {
                continue;
            };
            let (mut back, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut back, &mut to_client));
            let kept = kept.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(client)
                    .lines()
                    .map_while(Result::ok)
                {
                    if server.write_all(format!("{line}\n").as_bytes()).is_err() {
                        break;
                    }
                    kept.lock().unwrap().push(line);
                }
            });
        }
    });
    lines
}

/// What a [`record_through`] tee saw, written to its file (one JSON line each) when dropped:
/// how a real suite records the payloads its agent sent.
pub struct RecordingFile {
    path: PathBuf,
    lines: Recording,
}

impl Drop for RecordingFile {
    fn drop(&mut self) {
        let lines = self.lines.lock().unwrap();
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&self.path, text).unwrap();
        eprintln!("recorded {} lines to {}", lines.len(), self.path.display());
    }
}

/// With `<record_var>=<dir>` set: a tee ([`record_through`]) between the agent and atmd's ingest
/// socket, which the agent reaches through `socket_var` (added to `env`); what it sent is
/// written to `<dir>/<test>.jsonl` when the returned file is dropped.
pub fn record_if_asked<'e>(
    daemon: &Daemon,
    record_var: &str,
    test: &str,
    socket_var: &'e str,
    env: &mut Vec<(&'e str, String)>,
) -> Option<RecordingFile> {
    let dir = std::env::var_os(record_var)?;
    let tee = daemon.dir.path().join("record-tee.sock");
    let lines = record_through(&tee, daemon.hooks_socket());
    env.push((socket_var, tee.display().to_string()));
    Some(RecordingFile {
        path: PathBuf::from(dir).join(format!("{test}.jsonl")),
        lines,
    })
}

/// Types `be SLOW please` (the fake model then works for a minute), waits until `agent` shows it
/// works (`esc to interrupt`, the words Claude Code and Codex share) and atm says so
/// (`wait_state("working")`), presses Escape until the agent stops, and waits until atm says
/// `idle`: the user interrupting a turn.
pub fn interrupt_a_slow_turn(lab: &AgentLab, agent: &str, wait_state: impl Fn(&str)) {
    lab.type_line("be SLOW please");
    lab.wait_screen(&format!("{agent} working"), |s| {
        s.contains("esc to interrupt")
    });
    wait_state("working");
    lab.press_until(&["Escape"], &format!("{agent} stopping"), |s| {
        !s.contains("esc to interrupt")
    });
    wait_state("idle");
}

/// A real suite's agent as atm lists it: the suite says which session is this test's own
/// (proc-discovery also lists the agents of the tests running beside it); waiting on it is
/// the same for every agent.
pub trait OwnSession {
    fn daemon(&self) -> &Daemon;

    /// This test's session among every session atmd lists, if it is there.
    fn own<'a>(&self, all: &'a [Value]) -> Option<&'a Value>;

    /// Waits until this test's session satisfies `pred`; returns it.
    fn wait_session(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value
    where
        Self: Sized,
    {
        let sessions = self
            .daemon()
            .wait_sessions(what, |all| self.own(all).is_some_and(&pred));
        self.own(&sessions).cloned().unwrap()
    }

    /// Waits until this test's session is in `state`; returns it.
    fn wait_state(&self, state: &str) -> Value
    where
        Self: Sized,
    {
        self.wait_session(&format!("state {state}"), |s| s["state"] == state)
    }
}
