//! `atm-hook`: the program Claude Code runs for every hook event and status-line refresh.
//!
//! It sits on the agent's critical path (a synchronous hook delays every tool call), so it is
//! shaped by three promises rather than by convenience:
//!
//! - **Silent**: nothing on stdout in hook mode (Claude reads a hook's stdout as a decision or as
//!   model context), but the one decision a person made through atm ([`decision`]) and exit status 0 whatever happens (other codes block actions or show errors).
//!   That is also why arguments are parsed by hand: a parser that exits 2 on a typo would break
//!   the user's Claude session.
//! - **Bounded**: after the input has arrived, everything that involves the daemon (connecting,
//!   writing, waiting for the daemon to take the event) shares one [`BUDGET`] of 50 ms
//!   ([`BUDGET_ENV`] changes it), enforced with socket timeouts
//!   on the remaining time, so an absent, stuck or slow daemon costs at most that. Waiting for the
//!   caller to close stdin is bounded separately ([`STDIN_WAIT`]).
//! - **Cheap**: std, serde_json and a few raw syscalls; no async runtime, no config file. The
//!   event is forwarded as one protocol-v1 line on a fresh connection to the ingest socket.
//!
//! Other agents use the same binary: `--agent NAME` routes the event to that agent's adapter
//! (`hook_event:NAME`) and picks how the agent's process is recognised among the ancestors
//! ([`AgentKind`]); `--notify` takes the JSON from the last argument instead of stdin (Codex's
//! `notify` program contract). Gemini CLI shows a hook's stderr to the user, so atm-hook writes
//! nothing on stderr either (the binary silences even the panic message), with one exception
//! meant to be seen: a socket that belongs to another user is refused with one line there.
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
//!
//! One hook prints on stdout: Claude's `PermissionRequest`, when a person answers it through
//! atm ([`decision`]); it waits for that answer beside Claude's own dialog, never in its way.
//!
//! The pieces, one role each: [`args`] (the hand-parsed command line), [`input`] (bounded,
//! time-limited stdin), [`event`] (the protocol line: stripping and identity fields),
//! [`decision`] (answers to permission requests),
//! [`agent_process`] (which ancestor is the agent), [`connection`] (the bounded exchange with
//! the daemon) and [`statusline`] (status-line mode and its default line).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

mod agent_process;
mod args;
mod codex_daemon;
mod connection;
pub mod decision;
mod event;
mod input;
mod statusline;

pub use agent_process::{AgentKind, find_agent_pid};
pub use args::HookArgs;
pub use connection::send;
pub use event::{Reply, STRIPPED_FIELDS, event_line, event_line_of, strip_large_fields};
pub use input::{Input, read_input};
pub use statusline::default_status_line;

/// Time allowed for everything that involves the daemon, counted once the input has arrived.
pub const BUDGET: Duration = Duration::from_millis(50);
/// The environment variable that replaces [`BUDGET`] (milliseconds, 1 to [`MAX_BUDGET_MS`]):
/// for a machine so loaded that 50 ms is not enough, and for tests that must tell "waits for
/// the daemon" from "was too slow".
pub const BUDGET_ENV: &str = "ATM_HOOK_BUDGET_MS";
/// The largest budget [`BUDGET_ENV`] may set: an agent waits this long at most per hook.
pub const MAX_BUDGET_MS: u64 = 10_000;

/// [`BUDGET`], or what [`BUDGET_ENV`] sets it to when that is a number in range.
pub fn budget() -> Duration {
    std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| (1..=MAX_BUDGET_MS).contains(ms))
        .map_or(BUDGET, Duration::from_millis)
}
/// Longest time to wait for the caller to finish writing stdin. Claude writes the whole event at
/// once and closes the pipe; this only keeps a misbehaving caller (or a terminal) from hanging us.
pub const STDIN_WAIT: Duration = Duration::from_secs(1);
/// Largest line forwarded; the daemon refuses longer lines anyway.
pub const MAX_INPUT: usize = atm_core::protocol::MAX_LINE;
/// Largest input read: an event over [`MAX_INPUT`] may fit once [`STRIPPED_FIELDS`] are gone.
/// Bounded so that a runaway tool output cannot make the hook hold more than a few times this.
pub const MAX_RAW_INPUT: usize = 8 * MAX_INPUT;
/// Smallest remaining budget worth a syscall; also keeps socket timeouts away from zero, which
/// the kernel reads as "no timeout".
const MIN_SLICE: Duration = Duration::from_millis(1);

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
        if let Some(line) = event_line("hook_event", payload, args.agent.as_deref(), Reply::None) {
            let _ = send(&socket, &line, Instant::now() + budget(), false);
        }
        return;
    }
    let input = read_input(stdin, MAX_RAW_INPUT, STDIN_WAIT);
    if args.statusline {
        let deadline = Instant::now() + budget();
        statusline::run_statusline(&args, input, &socket, deadline, stdout);
    } else if let Input::Complete(bytes) = input {
        hook_event(&args, &bytes, &socket, stdout);
    }
}

/// Forwards one hook event; for one that can be answered through atm (Claude's
/// `PermissionRequest`), waits for the decision and prints it for the agent
/// ([`decision`]). Prints nothing otherwise.
fn hook_event(args: &HookArgs, bytes: &[u8], socket: &std::path::Path, stdout: &mut impl Write) {
    let Ok(data) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
    else {
        return;
    };
    let agent = args.agent.as_deref();
    let wait = decision::decision_wait();
    if decision::wants_decision(agent, &data, wait) {
        let Some(line) = event_line_of("hook_event", data.clone(), agent, Reply::Decision) else {
            return;
        };
        let now = Instant::now();
        let reply = connection::wait_for_reply(socket, &line, now + budget(), now + wait);
        if let Some(out) = reply.and_then(|r| decision::claude_output(&r, &data)) {
            let _ = writeln!(stdout, "{out}");
            let _ = stdout.flush();
        }
        return;
    }
    // The budget is for the daemon (connect, write): it starts once the line is built, so a
    // large payload that takes a while to strip is still delivered.
    if let Some(line) = event_line_of("hook_event", data, agent, Reply::None) {
        let _ = send(socket, &line, Instant::now() + budget(), false);
    }
}
