//! `atm-hook`: the program Claude Code runs for every hook event and status-line refresh.
//!
//! It sits on the agent's critical path (a synchronous hook delays every tool call), so it is
//! shaped by three promises rather than by convenience:
//!
//! - **Silent**: nothing on stdout in hook mode (Claude reads a hook's stdout as a decision or as
//!   model context) and exit status 0 whatever happens (other codes block actions or show errors).
//!   That is also why arguments are parsed by hand: a parser that exits 2 on a typo would break
//!   the user's Claude session.
//! - **Bounded**: after the input has arrived, everything that involves the daemon (connecting,
//!   writing, waiting for a reply) shares one [`BUDGET`] of 50 ms, enforced with socket timeouts
//!   on the remaining time, so an absent, stuck or slow daemon costs at most that. Waiting for the
//!   caller to close stdin is bounded separately ([`STDIN_WAIT`]).
//! - **Cheap**: std, serde_json and a few raw syscalls; no async runtime, no config file. The
//!   event is forwarded as one protocol-v1 line on a fresh connection to the ingest socket.
//!
//! Other agents use the same binary: `--agent NAME` routes the event to that agent's adapter
//! (`hook_event:NAME`) and picks how the agent's process is recognised among the ancestors
//! ([`AgentKind`]); `--notify` takes the JSON from the last argument instead of stdin (Codex's
//! `notify` program contract). Gemini CLI shows a hook's stderr to the user, so atm-hook writes
//! nothing on stderr either (the binary silences even the panic message).
//!
//! Fields no adapter reads but that can be huge (tool output, model requests and responses,
//! whole transcripts: [`STRIPPED_FIELDS`]) are removed from the parsed event before the size
//! check, so a big tool result does not cost the whole event. That is why stdin may bring up to
//! [`MAX_RAW_INPUT`]; what is still over [`MAX_INPUT`] after stripping is dropped. Input larger
//! than [`MAX_RAW_INPUT`] is read to its end and discarded: sending a truncated document would be
//! worse than sending nothing, and draining lets the writer finish cleanly.
//!
//! `atm-hook statusline [-- CMD ...]` forwards the status-line JSON the same way (`status_update`)
//! and then prints the status line: the user's own command's output (same stdin, stdout passed
//! through unchanged; the command runs while we talk to the daemon), or a compact default built
//! from the JSON and the daemon's reply. Only the default line needs that reply, so only then does
//! the message carry `"want_reply": true` (top level) and wait, within the budget, for the
//! daemon's `{"type":"session_updated","session":{...}}`. It never prints a blank line.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Time allowed for everything that involves the daemon, counted once the input has arrived.
pub const BUDGET: Duration = Duration::from_millis(50);
/// Longest time to wait for the caller to finish writing stdin. Claude writes the whole event at
/// once and closes the pipe; this only keeps a misbehaving caller (or a terminal) from hanging us.
pub const STDIN_WAIT: Duration = Duration::from_secs(1);
/// Largest line forwarded; the daemon refuses longer lines anyway.
pub const MAX_INPUT: usize = atm_core::protocol::MAX_LINE;
/// Largest input read: an event over [`MAX_INPUT`] may fit once [`STRIPPED_FIELDS`] are gone.
/// Bounded so that a runaway tool output cannot make the hook hold more than a few times this.
pub const MAX_RAW_INPUT: usize = 8 * MAX_INPUT;
/// Event fields removed before forwarding: none of the adapters reads them (checked against
/// claude-hooks, codex and gemini) and each can be megabytes. `tool_response` keeps its `error`
/// (Gemini's failed-tool signal); the rest go whole.
pub const STRIPPED_FIELDS: &[&str] = &[
    "tool_response",
    "prompt_response",
    "llm_request",
    "llm_response",
    "input-messages",
    "last-assistant-message",
];
/// How many ancestors to inspect when looking for the agent process (hook -> shell -> agent is
/// two; wrappers such as `npx` or `env` add a few).
const MAX_ANCESTORS: usize = 8;
/// Shown when the status line has nothing else to show: never leave Claude's line blank.
const FALLBACK_STATUS: &str = "claude";
/// Smallest remaining budget worth a syscall; also keeps socket timeouts away from zero, which
/// the kernel reads as "no timeout".
const MIN_SLICE: Duration = Duration::from_millis(1);

/// What `atm-hook` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookArgs {
    /// `--agent NAME`: routes the event to another agent's adapter (`hook_event:NAME`).
    pub agent: Option<String>,
    /// `statusline`: status-line mode.
    pub statusline: bool,
    /// Everything after `--` in status-line mode: the user's own status-line command.
    pub user_command: Vec<OsString>,
    /// `--notify`: the event is the last argument, not stdin (Codex's `notify` program gets
    /// its JSON appended to the configured command). Empty when no argument followed.
    pub notify: Option<Vec<u8>>,
}

impl HookArgs {
    /// Parses `[--agent NAME] [statusline [--agent NAME] [-- CMD ...]]` or
    /// `[--agent NAME] --notify JSON`. Unknown arguments are ignored: a hook must not fail
    /// because its command line has a typo.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Self {
        let mut out = Self::default();
        let mut args = args.into_iter();
        let mut last = None;
        while let Some(arg) = args.next() {
            if arg == "--" {
                out.user_command = args.collect();
                break;
            }
            if arg == "statusline" {
                out.statusline = true;
            } else if arg == "--notify" {
                out.notify = Some(Vec::new());
            } else if arg == "--agent" {
                out.agent = args.next().and_then(|a| a.into_string().ok());
            } else if let Some(name) = arg.to_str().and_then(|a| a.strip_prefix("--agent=")) {
                out.agent = Some(name.to_owned());
            }
            last = Some(arg);
        }
        // The payload is whatever came last, wherever `--notify` stood: Codex appends it.
        if let Some(payload) = out.notify.as_mut()
            && let Some(last) = last.filter(|a| a != "--notify")
        {
            *payload = last.into_encoded_bytes();
        }
        // Claude is the default route; naming it explicitly must not change the route.
        if out
            .agent
            .as_deref()
            .is_some_and(|a| a.is_empty() || a == "claude")
        {
            out.agent = None;
        }
        if !out.statusline {
            out.user_command.clear();
        } else {
            out.notify = None;
        }
        out
    }
}

/// What came in on stdin.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// The whole input, at most [`MAX_INPUT`] bytes.
    Complete(Vec<u8>),
    /// More than [`MAX_INPUT`] bytes (drained and dropped), or the caller did not close stdin
    /// within [`STDIN_WAIT`]: nothing usable.
    Unusable,
}

/// Reads all of `source` (at most `limit` bytes kept), waiting at most `wait` in total for data.
pub fn read_input<R: Read + AsFd>(mut source: R, limit: usize, wait: Duration) -> Input {
    let deadline = Instant::now() + wait;
    let mut kept = Vec::new();
    // Larger than `Stdin`'s own 8 KiB buffer, so reads bypass it and never leave bytes buffered
    // where `poll` on the descriptor cannot see them.
    let mut chunk = vec![0u8; 64 * 1024];
    let mut overflow = false;
    loop {
        let Some(left) = remaining(deadline) else {
            return Input::Unusable;
        };
        let mut fds = [rustix::event::PollFd::new(
            &source,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Input::Unusable,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            // Not pollable (never seen for pipes, files or ttys): fall back to plain reads.
            Err(_) => {}
        }
        match source.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) if overflow => {}
            Ok(n) => {
                if kept.len() + n > limit {
                    overflow = true;
                    kept = Vec::new();
                } else {
                    kept.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Input::Unusable,
        }
    }
    if overflow {
        Input::Unusable
    } else {
        Input::Complete(kept)
    }
}

/// Time left until `deadline`, or `None` when too little is left to be worth a syscall.
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (left >= MIN_SLICE).then_some(left)
}

/// Runs `atm-hook` with these arguments and this stdin; the binary's `main` is just this.
/// Never fails: every error ends in silence (hook mode) or in the default line (status line).
pub fn run(args: HookArgs, stdin: impl Read + AsFd, stdout: &mut impl Write) {
    let socket = atm_core::paths::hooks_socket();
    if let Some(payload) = &args.notify {
        // Stdin is not ours to read here: Codex may leave it at a terminal.
        let deadline = Instant::now() + BUDGET;
        if let Some(line) = event_line("hook_event", payload, args.agent.as_deref(), false) {
            let _ = send(&socket, &line, deadline, false);
        }
        return;
    }
    let input = read_input(stdin, MAX_RAW_INPUT, STDIN_WAIT);
    let deadline = Instant::now() + BUDGET;
    if args.statusline {
        run_statusline(&args, input, &socket, deadline, stdout);
    } else if let Input::Complete(bytes) = input
        && let Some(line) = event_line("hook_event", &bytes, args.agent.as_deref(), false)
    {
        let _ = send(&socket, &line, deadline, false);
    }
}

/// Builds the protocol-v1 line for `input` (a JSON object), without [`STRIPPED_FIELDS`] and with
/// `pid` and `tmux_pane` added. `None` when the input is not a JSON object or the line would
/// still exceed the daemon's limit.
pub fn event_line(
    kind: &str,
    input: &[u8],
    agent: Option<&str>,
    want_reply: bool,
) -> Option<Vec<u8>> {
    let mut data: Map<String, Value> = serde_json::from_slice(input).ok()?;
    strip_large_fields(&mut data);
    let kind_of_agent = AgentKind::from_name(agent);
    let pid = find_agent_pid(Path::new("/proc"), parent_pid()?, kind_of_agent);
    data.insert("pid".to_owned(), Value::from(pid));
    if let Some(pane) = std::env::var_os("TMUX_PANE").and_then(|p| p.into_string().ok()) {
        data.insert("tmux_pane".to_owned(), Value::String(pane));
    }
    let mut fields = Map::new();
    if let Some(agent) = agent {
        fields.insert("agent".to_owned(), Value::String(agent.to_owned()));
    }
    if want_reply {
        fields.insert("want_reply".to_owned(), Value::Bool(true));
    }
    fields.insert("data".to_owned(), Value::Object(data));
    let line = atm_core::protocol::client_line(kind, fields);
    (line.len() <= MAX_INPUT).then_some(line)
}

/// Removes [`STRIPPED_FIELDS`] from an event, keeping `tool_response.error` when it is set.
pub fn strip_large_fields(data: &mut Map<String, Value>) {
    for field in STRIPPED_FIELDS {
        let Some(value) = data.remove(*field) else {
            continue;
        };
        if *field == "tool_response"
            && let Value::Object(mut response) = value
            && let Some(error) = response.remove("error").filter(|e| !e.is_null())
        {
            let mut kept = Map::new();
            kept.insert("error".to_owned(), error);
            data.insert((*field).to_owned(), Value::Object(kept));
        }
    }
}

fn parent_pid() -> Option<u32> {
    rustix::process::getppid().and_then(|p| u32::try_from(p.as_raw_nonzero().get()).ok())
}

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

/// Sends `line` on a fresh connection to `socket` within `deadline`; with `want_reply`, returns
/// the first line the daemon answers. Any failure or timeout gives `None`.
pub fn send(socket: &Path, line: &[u8], deadline: Instant, want_reply: bool) -> Option<Vec<u8>> {
    let mut stream = connect(socket, deadline)?;
    // Small lines fit in the socket buffer and return at once; a daemon that stopped reading
    // makes a big line block, which the write timeout cuts off.
    let mut written = 0;
    while written < line.len() {
        stream.set_write_timeout(Some(remaining(deadline)?)).ok()?;
        match stream.write(line.get(written..)?) {
            Ok(0) => return None,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    if !want_reply {
        return None;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    read_reply_line(&mut stream, deadline)
}

/// Connects with the send timeout set first: on Linux it also bounds `connect` on a Unix socket
/// whose accept queue is full (a daemon that stopped accepting).
fn connect(socket: &Path, deadline: Instant) -> Option<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let addr = SocketAddrUnix::new(socket).ok()?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Send,
        Some(remaining(deadline)?),
    )
    .ok()?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR) => {
                remaining(deadline)?;
            }
            Err(_) => return None,
        }
    }
    Some(UnixStream::from(fd))
}

/// Reads one `\n`-terminated line (at most [`MAX_INPUT`] bytes) before `deadline`.
fn read_reply_line(stream: &mut UnixStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                let got = chunk.get(..n)?;
                if let Some(end) = got.iter().position(|&b| b == b'\n') {
                    reply.extend_from_slice(got.get(..end)?);
                    return Some(reply);
                }
                reply.extend_from_slice(got);
                if reply.len() > MAX_INPUT {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

fn run_statusline(
    args: &HookArgs,
    input: Input,
    socket: &Path,
    deadline: Instant,
    stdout: &mut impl Write,
) {
    let bytes = match input {
        Input::Complete(b) => b,
        Input::Unusable => Vec::new(),
    };
    // Start the user's command first so that it runs while we talk to the daemon.
    let user = if args.user_command.is_empty() || bytes.is_empty() {
        None
    } else {
        UserCommand::start(&args.user_command, &bytes)
    };
    // The reply only feeds the default line; with a user command nobody would read it.
    let want_reply = user.is_none();
    let reply = event_line("status_update", &bytes, args.agent.as_deref(), want_reply)
        .and_then(|line| send(socket, &line, deadline, want_reply));
    if let Some(output) = user.and_then(UserCommand::finish) {
        let _ = stdout.write_all(&output);
        let _ = stdout.flush();
        return;
    }
    let status: Option<Map<String, Value>> = serde_json::from_slice(&bytes).ok();
    let session = reply
        .and_then(|r| serde_json::from_slice::<Value>(&r).ok())
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("session_updated"))
        .and_then(|mut r| r.get_mut("session").map(Value::take));
    let line = default_status_line(status.as_ref(), session.as_ref());
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The user's own status-line command, running.
struct UserCommand {
    child: std::process::Child,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl UserCommand {
    /// A single argument is a shell command line (what `statusLine.command` holds); several are
    /// an argv.
    fn start(argv: &[OsString], input: &[u8]) -> Option<Self> {
        let (program, rest) = argv.split_first()?;
        let mut cmd = if rest.is_empty() {
            let mut c = Command::new("sh");
            c.arg("-c").arg(program);
            c
        } else {
            let mut c = Command::new(program);
            c.args(rest);
            c
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        // A thread, because a command that prints before reading could otherwise deadlock
        // against us on a full pipe.
        let feeder = child.stdin.take().map(|mut pipe| {
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })
        });
        Some(Self { child, feeder })
    }

    /// Waits for the command; its stdout, unless blank (then the default line is shown instead:
    /// Claude must never show an empty status line because a user script failed).
    fn finish(self) -> Option<Vec<u8>> {
        let output = self.child.wait_with_output().ok();
        if let Some(feeder) = self.feeder {
            let _ = feeder.join();
        }
        let stdout = output?.stdout;
        stdout
            .iter()
            .any(|b| !b.is_ascii_whitespace())
            .then_some(stdout)
    }
}

/// `Opus 4.6 · 42% · $0.42 · working`: model, context used, cost and state, each only when
/// known. The status-line JSON is fresher; the daemon's view of the session fills the gaps.
pub fn default_status_line(status: Option<&Map<String, Value>>, session: Option<&Value>) -> String {
    let get = |path: &[&str]| -> Option<&Value> {
        let mut v = status?.get(*path.first()?)?;
        for key in path.get(1..)? {
            v = v.get(key)?;
        }
        Some(v).filter(|v| !v.is_null())
    };
    let from_session = |key: &str| session.and_then(|s| s.get(key)).filter(|v| !v.is_null());
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };

    let mut parts: Vec<String> = Vec::new();
    if let Some(model) = text(get(&["model", "display_name"]))
        .or_else(|| text(get(&["model", "id"])))
        .or_else(|| text(from_session("model")))
    {
        parts.push(model);
    }
    let percent = get(&["context_window", "used_percentage"])
        .and_then(Value::as_f64)
        .or_else(|| computed_context_percent(get(&["context_window"])?))
        .or_else(|| from_session("context_percentage").and_then(Value::as_f64));
    if let Some(p) = percent.filter(|p| p.is_finite()) {
        parts.push(format!("{:.0}%", p.clamp(0.0, 100.0)));
    }
    let cost = get(&["cost", "total_cost_usd"])
        .and_then(Value::as_f64)
        .or_else(|| from_session("cost_usd").and_then(Value::as_f64));
    if let Some(c) = cost.filter(|c| c.is_finite() && *c >= 0.0) {
        parts.push(format!("${c:.2}"));
    }
    if let Some(state) = text(from_session("state")) {
        parts.push(state.replace('_', " "));
    }
    if parts.is_empty() {
        FALLBACK_STATUS.to_owned()
    } else {
        parts.join(" · ")
    }
}

/// Context use from `current_usage` when Claude gave no percentage.
fn computed_context_percent(window: &Value) -> Option<f64> {
    let size = window.get("context_window_size")?.as_f64()?;
    let usage = window.get("current_usage")?;
    let used: f64 = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| usage.get(k).and_then(Value::as_f64))
    .sum();
    (size > 0.0).then(|| used / size * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_arguments_leniently() {
        assert_eq!(HookArgs::parse(os(&[])), HookArgs::default());
        let a = HookArgs::parse(os(&["--agent", "codex"]));
        assert_eq!(a.agent.as_deref(), Some("codex"));
        assert!(!a.statusline);
        assert_eq!(HookArgs::parse(os(&["--agent=claude"])).agent, None);
        assert_eq!(HookArgs::parse(os(&["--agent"])).agent, None);
        let s = HookArgs::parse(os(&["statusline", "--", "echo hi", "--agent", "x"]));
        assert!(s.statusline);
        assert_eq!(s.agent, None);
        assert_eq!(s.user_command, os(&["echo hi", "--agent", "x"]));
        let junk = HookArgs::parse(os(&["--bogus", "-x", "statusline"]));
        assert!(junk.statusline && junk.user_command.is_empty());
        // `--` outside status-line mode carries nothing.
        assert!(HookArgs::parse(os(&["--", "rm"])).user_command.is_empty());
        // Notify: the payload is the last argument, wherever `--notify` stands.
        let n = HookArgs::parse(os(&["--agent", "codex", "--notify", r#"{"type":"x"}"#]));
        assert_eq!(n.agent.as_deref(), Some("codex"));
        assert_eq!(n.notify.as_deref(), Some(&br#"{"type":"x"}"#[..]));
        let n = HookArgs::parse(os(&["--notify", "--agent", "codex", "{}"]));
        assert_eq!(n.notify.as_deref(), Some(&b"{}"[..]));
        assert_eq!(
            HookArgs::parse(os(&["--notify"])).notify.as_deref(),
            Some(&b""[..])
        );
        assert_eq!(HookArgs::parse(os(&["{}"])).notify, None);
        assert_eq!(
            HookArgs::parse(os(&["statusline", "--notify"])).notify,
            None
        );
    }

    #[test]
    fn strips_large_fields_keeping_the_tool_error() {
        let mut data = json!({
            "session_id": "s",
            "tool_input": {"command": "ls"},
            "tool_response": {"llmContent": "x".repeat(100), "error": "ENOENT"},
            "prompt_response": "long answer",
            "llm_request": {"messages": []},
            "llm_response": {"candidates": []},
            "input-messages": ["a"],
            "last-assistant-message": "b"
        });
        strip_large_fields(data.as_object_mut().unwrap());
        assert_eq!(
            data,
            json!({"session_id": "s", "tool_input": {"command": "ls"},
                "tool_response": {"error": "ENOENT"}})
        );
        for response in [json!({"error": null, "x": 1}), json!("text"), json!({})] {
            let mut data = json!({"session_id": "s", "tool_response": response});
            strip_large_fields(data.as_object_mut().unwrap());
            assert_eq!(data, json!({"session_id": "s"}));
        }
    }

    #[test]
    fn reads_input_within_the_limit_and_drops_more() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"{\"a\":1}").unwrap();
        let f = std::fs::File::open(&small).unwrap();
        assert_eq!(
            read_input(f, 16, STDIN_WAIT),
            Input::Complete(b"{\"a\":1}".to_vec())
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100_000]).unwrap();
        let f = std::fs::File::open(&big).unwrap();
        assert_eq!(read_input(f, 99_999, STDIN_WAIT), Input::Unusable);
        let f = std::fs::File::open(&big).unwrap();
        assert!(
            matches!(read_input(f, 100_000, STDIN_WAIT), Input::Complete(v) if v.len() == 100_000)
        );
    }

    #[test]
    fn stdin_that_never_closes_is_given_up() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let start = Instant::now();
        assert_eq!(
            read_input(reader, 16, Duration::from_millis(50)),
            Input::Unusable
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn event_line_adds_pid_and_refuses_non_objects() {
        let line = event_line(
            "hook_event",
            br#"{"session_id":"s","pid":"bogus"}"#,
            Some("codex"),
            false,
        )
        .unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "hook_event");
        assert_eq!(v["agent"], "codex");
        assert_eq!(v["protocol_version"], json!({"major":1,"minor":0}));
        assert!(v["data"]["pid"].as_u64().unwrap() > 0);
        assert_eq!(v["data"]["session_id"], "s");
        assert!(v.get("want_reply").is_none());
        for bad in [&b""[..], b"[1]", b"\"s\"", b"{", b"\xff\xfe", b"null"] {
            assert!(
                event_line("hook_event", bad, None, false).is_none(),
                "{bad:?}"
            );
        }
    }

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
        proc_entry(100, "sh", 90, b"sh\0-c\0atm-hook --agent codex\0");
        proc_entry(
            90,
            "codex-x86_64-un",
            80,
            b"/usr/lib/codex-x86_64-unknown-linux-musl\0",
        );
        proc_entry(
            80,
            "node",
            70,
            b"node\0/usr/lib/node_modules/@openai/codex/bin/codex.js\0",
        );
        proc_entry(70, "bash", 1, b"bash\0");
        assert_eq!(find_agent_pid(root.path(), 100, AgentKind::Codex), 90);
        // The same chain is no Claude: skip the shell, take the native binary as the fallback.
        assert_eq!(find_agent_pid(root.path(), 100, AgentKind::Claude), 90);
        // Codex running notify directly, under node only.
        assert_eq!(find_agent_pid(root.path(), 80, AgentKind::Codex), 80);

        // Gemini: node re-launched by node, hook behind `bash -c`.
        proc_entry(200, "bash", 190, b"bash\0-c\0atm-hook --agent gemini\0");
        proc_entry(
            190,
            "node",
            180,
            b"node\0--max-old-space-size=8192\0/usr/bin/gemini\0",
        );
        proc_entry(180, "node", 1, b"node\0/usr/bin/gemini\0");
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

    #[test]
    fn default_line_uses_status_then_session() {
        let status = json!({
            "model": {"id": "claude-opus-4-6", "display_name": "Opus 4.6"},
            "context_window": {"used_percentage": 42.4, "context_window_size": 200000},
            "cost": {"total_cost_usd": 0.4199}
        });
        let session = json!({"state": "needs_permission", "model": "Other"});
        assert_eq!(
            default_status_line(status.as_object(), Some(&session)),
            "Opus 4.6 · 42% · $0.42 · needs permission"
        );
        // Percentage computed from current_usage when Claude gives none (1M window).
        let status = json!({
            "model": {"id": "claude-sonnet-4-5"},
            "context_window": {"used_percentage": null, "context_window_size": 1_000_000,
                "current_usage": {"input_tokens": 100_000, "cache_read_input_tokens": 150_000,
                    "output_tokens": 999_999}}
        });
        assert_eq!(
            default_status_line(status.as_object(), None),
            "claude-sonnet-4-5 · 25%"
        );
        let session =
            json!({"model": "Haiku", "context_percentage": 7.0, "cost_usd": 1.5, "state": "idle"});
        assert_eq!(
            default_status_line(None, Some(&session)),
            "Haiku · 7% · $1.50 · idle"
        );
        assert_eq!(default_status_line(None, None), FALLBACK_STATUS);
        let weird = json!({"model": {"display_name": "  "}, "cost": {"total_cost_usd": "x"}});
        assert_eq!(
            default_status_line(weird.as_object(), None),
            FALLBACK_STATUS
        );
    }
}
