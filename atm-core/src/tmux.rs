//! Talking to the tmux server a session's pane lives on: is the pane being looked at, where is
//! it, and take the user there.
//!
//! One home for "jump to the agent": `atmctl focus`, the notify sink's Focus action, the
//! tmux-marks sink and a future web board all call [`Tmux::focus_pane`], so "which client moves"
//! (the most recently active one) and "what counts as there" (its session, window and pane) are
//! decided once.
//!
//! Every call is a child process run asynchronously with a timeout and `kill_on_drop`, so a
//! hung tmux server delays a caller by at most [`TMUX_TIMEOUT`] per call and never blocks an
//! event loop. tmux's own failure messages are sorted into errors a user can act on
//! ([`TmuxError::NoServer`], [`TmuxError::NoPane`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tracing::debug;

/// The longest any one tmux call may take.
pub const TMUX_TIMEOUT: Duration = Duration::from_secs(2);

/// Which tmux server to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmuxSocket {
    /// tmux's own choice (`$TMUX`, else the default socket).
    Default,
    /// `tmux -S <path>`.
    Path(PathBuf),
    /// `tmux -L <name>`.
    Name(String),
}

impl TmuxSocket {
    /// The server a plugin config names: `tmux_socket` (a path, `~` expanded) wins over
    /// `tmux_socket_name` (a `-L` name); neither means tmux's default.
    pub fn from_config(path: Option<&str>, name: Option<&str>) -> Self {
        match (path, name) {
            (Some(path), _) => Self::Path(crate::paths::expand(path)),
            (None, Some(name)) => Self::Name(name.to_owned()),
            (None, None) => Self::Default,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TmuxError {
    #[error("could not run tmux (is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("tmux {command} did not answer within {TMUX_TIMEOUT:?}")]
    Timeout { command: String },
    #[error("tmux is not running ({detail}); start it, or name the server the agents run on")]
    NoServer { detail: String },
    #[error("tmux pane {pane} no longer exists (the agent's window was closed?)")]
    NoPane { pane: String },
    #[error("tmux {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Where [`Tmux::focus_pane`] took the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Focused {
    /// `session:window.pane`.
    pub location: String,
    /// The client that was switched; `None` when no client is attached (the pane is then only
    /// selected, so the next attach shows it).
    pub client: Option<String>,
}

/// One attached client, from `list-clients`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmuxClient {
    pub name: String,
    /// `client_activity`: seconds since the epoch of its last key press or attach.
    pub activity: u64,
    /// The active pane of the client's current window.
    pub pane: String,
}

/// The `list-clients` format [`parse_clients`] reads: control-mode clients (scripts, not people)
/// are marked so they can be skipped.
const CLIENT_FORMAT: &str =
    "#{client_activity}\t#{client_control_mode}\t#{pane_id}\t#{client_name}";

/// A handle on one tmux server.
#[derive(Debug, Clone)]
pub struct Tmux {
    socket: TmuxSocket,
}

impl Tmux {
    pub fn new(socket: TmuxSocket) -> Self {
        Self { socket }
    }

    /// Runs `tmux <socket args> <args>` and returns its stdout.
    pub async fn run(&self, args: &[&str]) -> Result<String, TmuxError> {
        let mut cmd = Command::new("tmux");
        match &self.socket {
            TmuxSocket::Default => {}
            TmuxSocket::Path(p) => {
                cmd.arg("-S").arg(p);
            }
            TmuxSocket::Name(n) => {
                cmd.arg("-L").arg(n);
            }
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let command = args.first().copied().unwrap_or_default().to_owned();
        let child = cmd.spawn().map_err(TmuxError::Spawn)?;
        let out = tokio::time::timeout(TMUX_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| TmuxError::Timeout {
                command: command.clone(),
            })?
            .map_err(TmuxError::Spawn)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(classify_failure(command, stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The attached clients that people use (control-mode clients left out).
    pub async fn clients(&self) -> Result<Vec<TmuxClient>, TmuxError> {
        match self.run(&["list-clients", "-F", CLIENT_FORMAT]).await {
            Ok(out) => Ok(parse_clients(&out)),
            // A server with no sessions has no clients; that is an answer, not a failure.
            Err(TmuxError::NoServer { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// True when `pane` is the active pane of the current window of some attached client.
    pub async fn pane_is_watched(&self, pane: &str) -> bool {
        match self.clients().await {
            Ok(clients) => watched_in(&clients, pane),
            Err(e) => {
                debug!(error = %e, "tmux watched-pane check failed; treating it as not watched");
                false
            }
        }
    }

    /// `session:window.pane` for a pane id, when the server knows it.
    pub async fn location(&self, pane: &str) -> Option<String> {
        self.locate(pane).await.ok()
    }

    async fn locate(&self, pane: &str) -> Result<String, TmuxError> {
        let format = "#{session_name}:#{window_index}.#{pane_index}";
        let out = self
            .run(&["display-message", "-p", "-t", pane, format])
            .await
            .map_err(|e| match e {
                TmuxError::Failed { .. } => TmuxError::NoPane {
                    pane: pane.to_owned(),
                },
                other => other,
            })?;
        let loc = out.trim();
        if loc.is_empty() {
            return Err(TmuxError::NoPane {
                pane: pane.to_owned(),
            });
        }
        Ok(loc.to_owned())
    }

    /// Takes the most recently active attached client to `pane`: its session, window and pane,
    /// across tmux sessions. Without an attached client the pane is still selected, so the next
    /// `tmux attach` shows it.
    pub async fn focus_pane(&self, pane: &str) -> Result<Focused, TmuxError> {
        let location = self.locate(pane).await?;
        let client = most_recent(&self.clients().await?).map(|c| c.name.clone());
        if let Some(name) = &client {
            self.run(&["switch-client", "-c", name, "-t", pane]).await?;
        }
        // switch-client with a pane target already selects it on tmux >= 3.1; selecting
        // explicitly keeps older servers and the no-client case right.
        self.run(&["select-window", "-t", pane]).await?;
        self.run(&["select-pane", "-t", pane]).await?;
        Ok(Focused { location, client })
    }

    /// [`Tmux::focus_pane`] for callers that only need to know it worked.
    pub async fn focus(&self, pane: &str) -> Result<(), TmuxError> {
        self.focus_pane(pane).await.map(drop)
    }
}

/// Sorts a failed call by tmux's message: no server, a gone pane, or anything else verbatim.
fn classify_failure(command: String, stderr: String) -> TmuxError {
    if stderr.starts_with("no server running") || stderr.starts_with("error connecting to") {
        TmuxError::NoServer { detail: stderr }
    } else if let Some(rest) = stderr.strip_prefix("can't find pane") {
        TmuxError::NoPane {
            pane: rest.trim_start_matches(':').trim().to_owned(),
        }
    } else {
        TmuxError::Failed { command, stderr }
    }
}

/// Parses `list-clients -F CLIENT_FORMAT` output; malformed lines are skipped.
pub fn parse_clients(out: &str) -> Vec<TmuxClient> {
    out.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, '\t');
            let activity = parts.next()?.trim().parse().ok()?;
            let control = parts.next()?;
            let pane = parts.next()?;
            let name = parts.next()?;
            (control != "1" && pane.starts_with('%') && !name.is_empty()).then(|| TmuxClient {
                name: name.to_owned(),
                activity,
                pane: pane.to_owned(),
            })
        })
        .collect()
}

/// True when some client is looking at exactly `pane`.
fn watched_in(clients: &[TmuxClient], pane: &str) -> bool {
    clients.iter().any(|c| c.pane == pane)
}

/// The client a person used last (ties: the first listed).
pub fn most_recent(clients: &[TmuxClient]) -> Option<&TmuxClient> {
    clients
        .iter()
        .fold(None, |best: Option<&TmuxClient>, c| match best {
            Some(b) if b.activity >= c.activity => Some(b),
            _ => Some(c),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_parse_and_skip_control_mode_and_garbage() {
        let out = "100\t0\t%1\t/dev/pts/1\n\
                   300\t1\t%2\tcontrol\n\
                   200\t0\t%5\t/dev/pts/3\n\
                   x\t0\t%3\tbad\n\
                   \u{fffd}garbage\n\
                   150\t0\t%4\n";
        let clients = parse_clients(out);
        let names: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["/dev/pts/1", "/dev/pts/3"]);
        assert_eq!(most_recent(&clients).map(|c| c.pane.as_str()), Some("%5"));
        assert_eq!(most_recent(&[]), None);
    }

    #[test]
    fn watched_panes_are_exact_matches() {
        let clients = parse_clients("1\t0\t%1\ta\n2\t0\t%5\tb\n");
        assert!(watched_in(&clients, "%5"));
        let clients = parse_clients("1\t0\t%15\ta\n2\t0\t%51\tb\n");
        assert!(!watched_in(&clients, "%5"));
        assert!(!watched_in(&parse_clients(""), "%5"));
        assert!(!watched_in(&parse_clients("\u{fffd}garbage"), "%5"));
    }

    #[test]
    fn failures_are_sorted_by_what_the_user_can_do() {
        let e = classify_failure("x".into(), "no server running on /tmp/tmux-1/d".into());
        assert!(matches!(e, TmuxError::NoServer { .. }), "{e}");
        let e = classify_failure(
            "x".into(),
            "error connecting to /tmp/a (No such file)".into(),
        );
        assert!(matches!(e, TmuxError::NoServer { .. }), "{e}");
        let e = classify_failure("x".into(), "can't find pane: %9".into());
        assert!(
            matches!(e, TmuxError::NoPane { ref pane } if pane == "%9"),
            "{e}"
        );
        let e = classify_failure("x".into(), "other".into());
        assert!(matches!(e, TmuxError::Failed { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_missing_server_means_not_watched_and_no_location() {
        let tmux = Tmux::new(TmuxSocket::Name(format!(
            "atm-core-none-{}",
            std::process::id()
        )));
        assert!(!tmux.pane_is_watched("%0").await);
        assert_eq!(tmux.location("%0").await, None);
        assert!(tmux.focus("%0").await.is_err());
        let e = tmux.focus_pane("%0").await.unwrap_err();
        assert!(matches!(e, TmuxError::NoServer { .. }), "{e}");
    }
}
