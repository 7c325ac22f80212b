//! The focus action: a click on one of our notifications (`default` or "Focus") takes the user
//! to the session: its tmux pane (`switch-client`, `select-window`, `select-pane`) or the
//! configured `focus_command`.
//!
//! Clicks run as their own small tasks, at most [`FOCUS_SLOTS`] at once (more clicks meanwhile
//! are ignored) and each bounded by a timeout, so a hanging command can never pile up or hold
//! up notifications.

use std::sync::Arc;
use std::time::Duration;

use atm_core::{RegistryHandle, Session, SessionKey};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::server::CALL_TIMEOUT;
use crate::tmux::Tmux;

/// The longest a custom focus command may run.
const FOCUS_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many focus actions run at once.
const FOCUS_SLOTS: usize = 4;

/// Runs focus actions.
pub(crate) struct Focus {
    /// Where the action looks up the session's current pane.
    registry: Option<RegistryHandle>,
    tmux: Tmux,
    command: Option<Vec<String>>,
    slots: Arc<Semaphore>,
}

impl Focus {
    pub(crate) fn new(tmux: Tmux, command: Option<Vec<String>>) -> Self {
        Self {
            registry: None,
            tmux,
            command,
            slots: Arc::new(Semaphore::new(FOCUS_SLOTS)),
        }
    }

    /// Lets the action use the session as it is at the click, not as it was notified.
    pub(crate) fn set_registry(&mut self, registry: RegistryHandle) {
        self.registry = Some(registry);
    }

    /// Whether a click could take the user anywhere for `s` (else no action is offered).
    pub(crate) fn can_focus(&self, s: &Session) -> bool {
        self.command.is_some() || s.tmux_pane.is_some()
    }

    /// Takes the user to the session under `key`, notified as `notified`; never waits.
    pub(crate) fn start(&self, key: SessionKey, notified: Arc<Session>) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            debug!("focus actions busy; click ignored");
            return;
        };
        let registry = self.registry.clone();
        let tmux = self.tmux.clone();
        let command = self.command.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // The pane may have changed since the notification went out.
            let session = match registry {
                Some(r) => current_session(&r, &key).await.unwrap_or(notified),
                None => notified,
            };
            let result = match command {
                Some(argv) => run_focus_command(&argv, &session).await,
                None => match &session.tmux_pane {
                    Some(pane) => tmux.focus(pane).await.map_err(|e| e.to_string()),
                    None => Ok(()),
                },
            };
            if let Err(e) = result {
                warn!(error = %e, session = %session.id, "focusing the session failed");
            }
        });
    }
}

/// The session under `key` now, if the registry answers promptly.
async fn current_session(registry: &RegistryHandle, key: &SessionKey) -> Option<Arc<Session>> {
    let snapshot = tokio::time::timeout(CALL_TIMEOUT, registry.snapshot())
        .await
        .ok()?
        .ok()?;
    snapshot.sessions.into_iter().find(|s| s.key == *key)
}

/// Runs the configured focus command with `{pane}`, `{session_id}` and `{cwd}` replaced.
async fn run_focus_command(argv: &[String], s: &Session) -> Result<(), String> {
    let fill = |arg: &String| {
        arg.replace("{pane}", s.tmux_pane.as_deref().unwrap_or_default())
            .replace("{session_id}", s.id.as_str())
            .replace("{cwd}", s.cwd.as_deref().unwrap_or_default())
    };
    let Some((program, args)) = argv.split_first() else {
        return Err("focus_command is empty".to_owned());
    };
    let mut cmd = tokio::process::Command::new(fill(program));
    cmd.args(args.iter().map(fill))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not run focus_command {program:?}: {e}"))?;
    match tokio::time::timeout(FOCUS_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("focus_command {program:?} exited with {status}")),
        Ok(Err(e)) => Err(format!("focus_command {program:?}: {e}")),
        Err(_) => Err(format!(
            "focus_command {program:?} did not finish within {FOCUS_TIMEOUT:?}"
        )),
    }
}
