//! `atmctl status [--format F] [--follow]`: the line a status bar shows.
//!
//! Without `--follow` it asks once (`list_sessions`) and prints one line, for bars that run a
//! command on an interval (`#(atmctl status --format tmux)`). With `--follow` it subscribes
//! (protocol v1 `subscribe`: a `session_list`, then pushed updates and removals), keeps the
//! sessions it was told about, and prints a line only when the rendered line changes, so bars
//! that read a long-running command's lines (Waybar, polybar `tail`, i3blocks `persist`) show a
//! change the moment atmd pushes it, with no polling. When the connection ends (atmd restarts,
//! or sends something unreadable) it prints the "atmd not running" line in the same format and
//! reconnects with backoff, so a bar never shows a stale state.
//!
//! Exit codes as for every query: 0, 2 when the daemon is not running, 1 otherwise. `--follow`
//! exits only when its reader goes away (0) or stdout fails (1).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use atm_core::SessionView;
use serde_json::{Value, json};

use crate::bar::{BarFormat, Down, render, render_down};
use crate::client::{ClientError, Connection, STATUS_TIMEOUT, SocketArg, out_err, run, view_of};

/// The first wait before reconnecting; doubled after each failed attempt.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between attempts: how long a restarted atmd may go unnoticed at worst.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// How to print the line: for a terminal (plain), tmux's status-right (tmux), a Waybar
    /// custom module (waybar), an i3blocks block with format=json (i3blocks), polybar (polybar).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = BarFormat::Plain)]
    pub format: BarFormat,
    /// Keep running: print a new line each time what the bar shows changes, and keep going
    /// (showing "atmd not running") across daemon restarts.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    if args.follow {
        return follow(args);
    }
    run(|out| {
        let views = Connection::open_within(args.socket.socket.as_deref(), STATUS_TIMEOUT)
            .and_then(|mut conn| {
                conn.list_sessions()?
                    .iter()
                    .map(view_of)
                    .collect::<Result<Vec<_>, _>>()
            });
        match views {
            Ok(views) => writeln!(out, "{}", render(args.format, &views)).map_err(out_err),
            // A plain line is for people: the error on stderr says it all. A bar shows what it
            // is given, so it gets the "not running" line too.
            Err(e) if args.format == BarFormat::Plain => Err(e),
            Err(e) => {
                writeln!(out, "{}", render_down(args.format, &down_of(&e))).map_err(out_err)?;
                Err(e)
            }
        }
    })
}

/// How a failed connection shows on a bar.
fn down_of(e: &ClientError) -> Down {
    if e.not_running() || matches!(e, ClientError::Closed) {
        Down::NotRunning
    } else {
        Down::Error(e.to_string())
    }
}

/// Why one followed connection ended.
enum FollowEnd {
    /// Writing to stdout failed: the bar went away, or stdout is broken.
    Output(std::io::Error),
    /// The daemon is gone or misbehaved: show it and reconnect.
    Daemon(ClientError),
}

/// Prints a line only when it differs from the last one printed.
struct Printer<W: Write> {
    out: W,
    last: Option<String>,
}

impl<W: Write> Printer<W> {
    fn show(&mut self, line: String) -> Result<(), FollowEnd> {
        if self.last.as_ref() == Some(&line) {
            return Ok(());
        }
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(FollowEnd::Output)?;
        self.last = Some(line);
        Ok(())
    }
}

fn follow(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut printer = Printer {
        out: stdout.lock(),
        last: None,
    };
    let mut delay = RECONNECT_FIRST;
    loop {
        let Err(end) = follow_connection(args, &mut printer, &mut delay);
        let shown = match end {
            FollowEnd::Daemon(e) => printer.show(render_down(args.format, &down_of(&e))),
            output => Err(output),
        };
        match shown {
            Ok(()) => {}
            Err(FollowEnd::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(ExitCode::SUCCESS);
            }
            Err(FollowEnd::Output(e)) => return Err(ClientError::Io(e).into()),
            Err(FollowEnd::Daemon(e)) => return Err(e.into()),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// Follows one connection until it ends, and says why it ended.
fn follow_connection<W: Write>(
    args: &StatusArgs,
    printer: &mut Printer<W>,
    delay: &mut Duration,
) -> Result<Infallible, FollowEnd> {
    let daemon = FollowEnd::Daemon;
    let mut conn =
        Connection::open_within(args.socket.socket.as_deref(), STATUS_TIMEOUT).map_err(daemon)?;
    conn.send("subscribe", json!({})).map_err(daemon)?;
    conn.wait_forever().map_err(daemon)?;
    let mut sessions: BTreeMap<String, SessionView<'static>> = BTreeMap::new();
    let mut synced = false;
    loop {
        let msg = conn.recv().map_err(daemon)?;
        match msg.get("type").and_then(Value::as_str) {
            // The first reply, and every resync after the daemon dropped our stale updates.
            Some("session_list") => {
                sessions.clear();
                let list = msg.get("sessions").and_then(Value::as_array);
                let Some(list) = list else {
                    let what = "a session_list without `sessions`".to_owned();
                    return Err(daemon(ClientError::Protocol(what)));
                };
                for s in list {
                    let v = view_of(s).map_err(daemon)?;
                    sessions.insert(v.id.to_string(), v);
                }
                synced = true;
                // A working connection: the next outage starts again from a short wait.
                *delay = RECONNECT_FIRST;
            }
            Some("session_updated") => {
                let v = view_of(msg.get("session").unwrap_or(&Value::Null)).map_err(daemon)?;
                sessions.insert(v.id.to_string(), v);
            }
            Some("session_removed") => {
                if let Some(id) = msg.get("session_id").and_then(Value::as_str) {
                    sessions.remove(id);
                }
            }
            _ => continue,
        }
        if synced {
            let views: Vec<SessionView> = sessions.values().cloned().collect();
            printer.show(render(args.format, &views))?;
        }
    }
}
