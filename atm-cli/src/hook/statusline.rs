//! Status-line mode: forward the status-line JSON, then print the status line, either the
//! user's own command's output (run while we talk to the daemon) or a compact default built
//! from the JSON and the daemon's reply. Never a blank line.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Map, Value};

use super::args::HookArgs;
use super::connection::send;
use super::event::{Reply, event_line};
use super::input::Input;

/// Shown when the status line has nothing else to show: never leave Claude's line blank.
const FALLBACK_STATUS: &str = "claude";

pub(super) fn run_statusline(
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
    let reply = event_line(
        "status_update",
        &bytes,
        args.agent.as_deref(),
        if want_reply {
            Reply::Session
        } else {
            Reply::None
        },
    )
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
