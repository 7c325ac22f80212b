//! What a Gemini CLI pane shows, as a state hint: the signal for the moves Gemini fires no hook
//! for.
//!
//! Gemini CLI 0.61 fires no hook when the user answers its approval dialog with "Allow" (the
//! tool then runs, and only `AfterTool` follows when it is done), with Esc or "No" (the turn is
//! cancelled: nothing follows), or presses Esc while the model works, and it fires
//! `SessionStart` before its prompt is up. Its chat file records a cancel but not an approval,
//! and the process shows an approved shell command but nothing else; the screen shows all of
//! them. So while a Gemini session in a tmux pane is `starting`, `working` or
//! `needs_permission`, [`watch`] reads the pane (`tmux capture-pane`, on the server named by
//! the process's `$TMUX`) every [`POLL`] and classifies it ([`classify`]). When two reads in a
//! row, both at least [`GRACE`] after the session entered its state, show another state, that
//! is reported as a discovery *hint* dated by the first of them: the state machine's hint rule
//! ([`atm_core::state::hint`]) applies it only when it is newer than the last hook (or says
//! idle while the session is still `starting`), so the hooks, which name the tool and the command, keep their
//! say. Idle sessions are not read at all: the
//! watcher then sleeps until the registry changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use atm_core::chrono::{DateTime, Utc};
use atm_core::event::Discovered;
use atm_core::model::{AgentState, Harness, ProcessIdentity, Session, SessionId};
use atm_core::registry::RegistryHandle;
use atm_core::registry_follow::RegistryFollower;
use atm_core::tmux::{Tmux, TmuxSocket};
use atm_core::tokio_util::sync::CancellationToken;
use atm_core::tracing::debug;

/// How often an active Gemini pane is read.
pub const POLL: Duration = Duration::from_millis(250);

/// What a Gemini CLI 0.61 pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// A confirmation dialog ("Allow once", "Allow for this session", "No, suggest changes").
    Dialog,
    /// The model or a tool at work: the spinner line ends in "(esc to cancel, 3s)".
    Busy,
    /// The input box, nothing running, no dialog.
    Prompt,
    /// Anything else (starting up, another dialog, not Gemini's screen).
    Unknown,
}

impl Screen {
    /// The state this screen means, if any.
    pub fn state(self) -> Option<AgentState> {
        match self {
            Self::Dialog => Some(AgentState::NeedsPermission),
            Self::Busy => Some(AgentState::Working),
            Self::Prompt => Some(AgentState::Idle),
            Self::Unknown => None,
        }
    }
}

/// Classifies a captured Gemini CLI screen (`tmux capture-pane -p`).
pub fn classify(screen: &str) -> Screen {
    if screen.contains("Allow once") {
        Screen::Dialog
    } else if screen.contains("esc to cancel") {
        Screen::Busy
    } else if screen.contains("Type your message") || screen.contains("? for shortcuts") {
        Screen::Prompt
    } else {
        Screen::Unknown
    }
}

/// How long after a session entered its state the screen is not believed: Gemini draws what a
/// hook announced a little later (the dialog after its `Notification`, the spinner after
/// `BeforeAgent`), more so on a loaded machine.
pub const GRACE: Duration = Duration::from_secs(1);

/// What the watcher remembers of one pane: reads since the session entered its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    state_since: DateTime<Utc>,
    /// The class of the last believed read and when it was first read in a row.
    last: Option<(Screen, DateTime<Utc>)>,
}

impl Track {
    pub fn new(state_since: DateTime<Utc>) -> Self {
        Self {
            state_since,
            last: None,
        }
    }

    /// Takes one read at `at` of a session in `state` since `state_since`; returns the hint
    /// to report: a state other than `state` that two reads in a row show, dated by the first.
    /// Reads within [`GRACE`] of the state's start are not believed.
    pub fn read(
        &mut self,
        class: Screen,
        at: DateTime<Utc>,
        state: AgentState,
        state_since: DateTime<Utc>,
    ) -> Option<(AgentState, DateTime<Utc>)> {
        if self.state_since != state_since {
            *self = Self::new(state_since);
        }
        let grace = atm_core::chrono::Duration::from_std(GRACE).unwrap_or_default();
        if at < state_since + grace {
            return None;
        }
        match self.last {
            Some((last, first)) if last == class => {
                class.state().filter(|s| *s != state).map(|s| (s, first))
            }
            _ => {
                self.last = Some((class, at));
                None
            }
        }
    }
}

/// The tmux server a process's pane lives on: the socket path in its `$TMUX`.
fn tmux_socket(pid: u32) -> Option<PathBuf> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"TMUX="))
        .and_then(|v| v.split(|b| *b == b',').next())
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
}

/// A session worth reading: Gemini's, in a tmux pane, doing something a hook may not end.
fn watched(s: &Session) -> Option<(ProcessIdentity, String)> {
    let active = matches!(
        s.state,
        AgentState::Starting | AgentState::Working | AgentState::NeedsPermission
    );
    (active && s.harness.as_str() == Harness::GEMINI)
        .then(|| s.process.zip(s.tmux_pane.clone()))
        .flatten()
}

/// Reads the panes of active Gemini sessions and reports what they show as hints, until
/// `cancel` fires. `adapter` names the hints' source.
pub async fn watch(registry: RegistryHandle, cancel: CancellationToken, adapter: String) {
    let Ok((_, mut follower)) = RegistryFollower::start(registry.clone(), cancel.clone()).await
    else {
        return;
    };
    let mut tracks: HashMap<SessionId, Track> = HashMap::new();
    loop {
        let sessions = registry.get_all_sessions().await.unwrap_or_default();
        let active: Vec<_> = sessions
            .iter()
            .filter_map(|s| watched(s).map(|w| (s, w)))
            .collect();
        tracks.retain(|id, _| active.iter().any(|(s, _)| &s.id == id));
        if active.is_empty() {
            // Nothing to read: wait for the registry to change.
            if follower.next().await.is_none() {
                return;
            }
            continue;
        }
        for (s, (process, pane)) in active {
            let Some(socket) = tmux_socket(process.pid) else {
                debug!(session = %s.id, pid = process.pid, "no $TMUX: the screen is not read");
                continue;
            };
            let text = match Tmux::new(TmuxSocket::Path(socket))
                .run(&["capture-pane", "-p", "-t", &pane])
                .await
            {
                Ok(text) => text,
                Err(e) => {
                    debug!(session = %s.id, error = %e, "reading the pane failed");
                    continue;
                }
            };
            let class = classify(&text);
            let hint = tracks
                .entry(s.id.clone())
                .or_insert_with(|| Track::new(s.state_since))
                .read(class, Utc::now(), s.state, s.state_since);
            if let Some((state, at)) = hint {
                debug!(session = %s.id, ?class, %state, %at, "the screen says");
                let mut found = Discovered::new(s.harness.clone(), process, adapter.clone());
                found.state_hint = Some(state);
                found.state_hint_at = Some(at);
                let _ = registry.register_discovered(found).await;
            }
        }
        atm_core::tokio::select! {
            () = cancel.cancelled() => return,
            () = atm_core::tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_screens_are_classified() {
        let dialog = "│ ? Shell  touch /tmp/x\n│ Allow execution of [Shell]?\n│ ● 1. Allow once\n│   2. Allow for this session\n│   3. No, suggest changes (esc)\n";
        assert_eq!(classify(dialog), Screen::Dialog);
        let busy = " ⠼ Thinking... (esc to cancel, 1s)      ? for shortcuts\n >   Type your message or @path/to/file\n";
        assert_eq!(classify(busy), Screen::Busy);
        let prompt =
            "ℹ Request cancelled.\n    ? for shortcuts\n >   Type your message or @path/to/file\n";
        assert_eq!(classify(prompt), Screen::Prompt);
        assert_eq!(
            classify(" > half typed\n   ? for shortcuts\n"),
            Screen::Prompt
        );
        assert_eq!(classify("Gemini CLI v0.61.0\n"), Screen::Unknown);
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap()
    }

    /// Feeds `track` what the pane showed (`(screen, at ms)`, in order) while the session is in
    /// `state` since `since` ms: the hint of each read.
    fn reads(
        track: &mut Track,
        screens: &[(Screen, i64)],
        state: AgentState,
        since: i64,
    ) -> Vec<Option<(AgentState, DateTime<Utc>)>> {
        screens
            .iter()
            .map(|&(screen, at)| track.read(screen, t(at), state, t(since)))
            .collect()
    }

    #[test]
    fn two_reads_after_the_grace_make_a_hint_dated_by_the_first() {
        use AgentState as S;
        use Screen::{Busy, Dialog, Prompt, Unknown};
        let mut track = Track::new(t(0));
        // Within the grace the screen may still show what came before the hook; then the
        // dialog, as the state says: no hint; approved: the spinner, twice.
        let waiting = [(Busy, 300), (Busy, 600), (Dialog, 1100), (Dialog, 1350)];
        let approved = [(Busy, 1600), (Busy, 1850)];
        assert_eq!(
            reads(&mut track, &waiting, S::NeedsPermission, 0),
            [None; 4]
        );
        assert_eq!(
            reads(&mut track, &approved, S::NeedsPermission, 0),
            [None, Some((S::Working, t(1600)))]
        );
        // A new state starts a new track; one odd read is not enough.
        let stopped = [(Prompt, 3100), (Busy, 3350), (Prompt, 3600), (Prompt, 3850)];
        assert_eq!(
            reads(&mut track, &stopped, S::Working, 2000),
            [None, None, None, Some((S::Idle, t(3600)))]
        );
        // A screen that says nothing is no hint.
        let mut track = Track::new(t(0));
        let unknown = [(Unknown, 1100), (Unknown, 1350)];
        assert_eq!(reads(&mut track, &unknown, S::Starting, 0), [None; 2]);
    }
}
