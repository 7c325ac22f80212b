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
//! Input larger than [`MAX_INPUT`] is read to its end and discarded: sending a truncated document
//! would be worse than sending nothing, and draining lets the writer finish cleanly.
//!
//! `atm-hook statusline [-- CMD ...]` forwards the status-line JSON the same way (`status_update`)
//! and then prints the status line: the user's own command's output (same stdin, stdout passed
//! through unchanged; the command runs while we talk to the daemon), or a compact default built
//! from the JSON and the daemon's reply. Only the default line needs that reply, so only then does
//! the message carry `"want_reply": true` (top level) and wait, within the budget, for the
//! daemon's `{"type":"session_updated","session":{...}}`. It never prints a blank line.

use std::ffi::{OsStr, OsString};
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
/// Largest input forwarded; the daemon refuses longer lines anyway.
pub const MAX_INPUT: usize = atm_core::protocol::MAX_LINE;
/// How many ancestors to inspect when looking for the agent process (hook -> shell -> claude is
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
}

impl HookArgs {
    /// Parses `[--agent NAME] [statusline [--agent NAME] [-- CMD ...]]`. Unknown arguments are
    /// ignored: a hook must not fail because its command line has a typo.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Self {
        let mut out = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                out.user_command = args.collect();
                break;
            }
            if arg == "statusline" {
                out.statusline = true;
            } else if arg == "--agent" {
                out.agent = args.next().and_then(|a| a.into_string().ok());
            } else if let Some(name) = arg.to_str().and_then(|a| a.strip_prefix("--agent=")) {
                out.agent = Some(name.to_owned());
            }
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
    let input = read_input(stdin, MAX_INPUT, STDIN_WAIT);
    let deadline = Instant::now() + BUDGET;
    let socket = atm_core::paths::hooks_socket();
    if args.statusline {
        run_statusline(&args, input, &socket, deadline, stdout);
    } else if let Input::Complete(bytes) = input
        && let Some(line) = event_line("hook_event", &bytes, args.agent.as_deref(), false)
    {
        let _ = send(&socket, &line, deadline, false);
    }
}

/// Builds the protocol-v1 line for `input` (a JSON object), adding `pid` and `tmux_pane` to it.
/// `None` when the input is not a JSON object or the line would exceed the daemon's limit.
pub fn event_line(
    kind: &str,
    input: &[u8],
    agent: Option<&str>,
    want_reply: bool,
) -> Option<Vec<u8>> {
    let mut data: Map<String, Value> = serde_json::from_slice(input).ok()?;
    let pid = find_agent_pid(Path::new("/proc"), parent_pid()?);
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

fn parent_pid() -> Option<u32> {
    rustix::process::getppid().and_then(|p| u32::try_from(p.as_raw_nonzero().get()).ok())
}

/// The agent process among the ancestors of the hook, starting at `parent`: the first whose
/// name or executable is `claude`, or a `node` whose command line mentions claude (npm
/// installs). Falls back to `parent` (Claude may exec the hook directly, or run under a name we
/// do not know).
pub fn find_agent_pid(proc_root: &Path, parent: u32) -> u32 {
    let mut pid = parent;
    for _ in 0..MAX_ANCESTORS {
        let Some((comm, ppid)) = read_stat(proc_root, pid) else {
            break;
        };
        if is_agent(proc_root, pid, &comm) {
            return pid;
        }
        if ppid <= 1 {
            break;
        }
        pid = ppid;
    }
    parent
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

fn is_agent(proc_root: &Path, pid: u32, comm: &[u8]) -> bool {
    if comm == b"claude" {
        return true;
    }
    let dir = proc_root.join(pid.to_string());
    if comm == b"node" {
        // npm installs: `node .../@anthropic-ai/claude-code/cli.js`.
        return std::fs::read(dir.join("cmdline"))
            .is_ok_and(|c| c.windows(6).any(|w| w.eq_ignore_ascii_case(b"claude")));
    }
    std::fs::read_link(dir.join("exe"))
        .is_ok_and(|exe| exe.file_name() == Some(OsStr::new("claude")))
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

    #[test]
    fn finds_claude_among_fake_ancestors() {
        let root = tempfile::tempdir().unwrap();
        let proc_entry = |pid: u32, comm: &str, ppid: u32, cmdline: &[u8]| {
            let d = root.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("stat"), format!("{pid} ({comm}) S {ppid} 1 1 0 -1")).unwrap();
            std::fs::write(d.join("cmdline"), cmdline).unwrap();
        };
        proc_entry(100, "sh", 90, b"sh\0-c\0atm-hook\0");
        proc_entry(90, "claude", 80, b"claude\0");
        proc_entry(80, "bash", 1, b"bash\0");
        assert_eq!(find_agent_pid(root.path(), 100), 90);
        // npm install: node running claude's cli.js, behind a shell whose name has a `) `.
        proc_entry(200, "we ird) x", 190, b"sh\0");
        proc_entry(
            190,
            "node",
            1,
            b"node\0/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js\0",
        );
        assert_eq!(find_agent_pid(root.path(), 200), 190);
        // Plain node and no claude anywhere: the parent.
        proc_entry(300, "sh", 290, b"sh\0");
        proc_entry(290, "node", 1, b"node\0server.js\0");
        assert_eq!(find_agent_pid(root.path(), 300), 300);
        // Missing or garbage stat: the parent.
        assert_eq!(find_agent_pid(root.path(), 999), 999);
        let d = root.path().join("400");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("stat"), b"\xff garbage").unwrap();
        assert_eq!(find_agent_pid(root.path(), 400), 400);
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
