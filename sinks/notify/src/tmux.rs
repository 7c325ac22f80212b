//! Talking to the tmux server a session's pane lives on: is the pane being looked at (the quiet
//! rule), where is it (for the body), and take the user there (the focus action).
//!
//! Every call is a child process run asynchronously with a timeout and `kill_on_drop`, so a
//! hung tmux server can delay one notification by at most [`TMUX_TIMEOUT`] and never blocks the
//! sink's event loop. Failures are answers too: an unknown pane or no server means "not active"
//! and "location unknown".

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

#[derive(Debug, thiserror::Error)]
pub enum TmuxError {
    #[error("could not run tmux (is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("tmux {command} did not answer within {TMUX_TIMEOUT:?}")]
    Timeout { command: String },
    #[error("tmux {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
}

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
            return Err(TmuxError::Failed {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// True when `pane` is the active pane of the current window of some attached client.
    pub async fn pane_is_watched(&self, pane: &str) -> bool {
        match self.run(&["list-clients", "-F", "#{pane_id}"]).await {
            Ok(out) => watched_in(&out, pane),
            Err(e) => {
                debug!(error = %e, "tmux quiet-rule check failed; notifying");
                false
            }
        }
    }

    /// `session:window.pane` for a pane id, when the server knows it.
    pub async fn location(&self, pane: &str) -> Option<String> {
        let out = self
            .run(&[
                "display-message",
                "-p",
                "-t",
                pane,
                "#{session_name}:#{window_index}.#{pane_index}",
            ])
            .await
            .ok()?;
        let loc = out.trim();
        (!loc.is_empty()).then(|| loc.to_owned())
    }

    /// Switches the most recent client to the pane's session, then selects its window and the
    /// pane. Without an attached client `switch-client` fails; selecting still makes the pane
    /// the one the next attach shows.
    pub async fn focus(&self, pane: &str) -> Result<(), TmuxError> {
        if let Err(e) = self.run(&["switch-client", "-t", pane]).await {
            debug!(error = %e, pane, "tmux switch-client failed (no attached client?)");
        }
        self.run(&["select-window", "-t", pane]).await?;
        self.run(&["select-pane", "-t", pane]).await?;
        Ok(())
    }
}

/// Parses `list-clients -F '#{pane_id}'` output.
fn watched_in(list_clients: &str, pane: &str) -> bool {
    list_clients.lines().any(|l| l.trim() == pane)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_panes_are_exact_matches() {
        assert!(watched_in("%1\n%5\n", "%5"));
        assert!(!watched_in("%15\n%51\n", "%5"));
        assert!(!watched_in("", "%5"));
        assert!(!watched_in("\u{fffd}garbage", "%5"));
    }

    #[tokio::test]
    async fn a_missing_server_means_not_watched_and_no_location() {
        let tmux = Tmux::new(TmuxSocket::Name(format!(
            "atm-notify-none-{}",
            std::process::id()
        )));
        assert!(!tmux.pane_is_watched("%0").await);
        assert_eq!(tmux.location("%0").await, None);
        assert!(tmux.focus("%0").await.is_err());
    }
}
