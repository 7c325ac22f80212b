//! What an agent's tmux pane shows, as a state hint: the signal for the moves an agent fires no
//! hook for.
//!
//! Agents leave states without a word: Gemini CLI fires no hook when an approval is answered or
//! Esc pressed, Codex none while it waits at its first prompt. Their screens show it. So while
//! a session of an agent that has a [`PaneScreen`] is in one of its watched states and runs in
//! a tmux pane, [`watch`] reads the pane (`tmux capture-pane`, on the server named by the
//! process's `$TMUX`) every [`POLL`] and classifies it with the agent's own `classify`. When
//! two reads in a row, both at least [`GRACE`] after the session entered its state, show
//! another state, that is reported as a discovery *hint* dated by the first of them: the state
//! machine's hint rule ([`crate::state::hint`]) applies it only when it is newer than the last
//! hook (or says idle while the session is still `starting`), so the hooks, which name the tool
//! and the command, keep their say. Sessions in other states are not read at all: the watcher
//! then sleeps until the registry changes.
//!
//! Shaped as one generic loop with a per-agent classifier (a plain `fn`, so it is a `const` of
//! the agent's [`crate::ingest_adapter::Translator`]) because the reading, the debounce and the
//! hint are the same for every agent; only what its screen looks like differs.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::event::Discovered;
use crate::model::{AgentState, ProcessIdentity, Session, SessionId};
use crate::registry::RegistryHandle;
use crate::registry_follow::RegistryFollower;
use crate::tmux::{Tmux, TmuxSocket};

/// How often a watched pane is read.
pub const POLL: Duration = Duration::from_millis(250);

/// How long after a session entered its state the screen is not believed: an agent draws what
/// a hook announced a little later (a dialog after its hook, a spinner after the prompt's),
/// more so on a loaded machine.
pub const GRACE: Duration = Duration::from_secs(1);

/// How long a state a hook announced and the agent draws (a dialog, a spinner) may go unseen
/// before the screen's disagreement counts anyway. Until the screen has shown the state once,
/// what it shows is taken for the agent not having drawn it yet (seen: Gemini's spinner kept
/// for 2 s after its permission hook on a loaded machine), not for the user having moved on.
pub const UNSEEN_GRACE: Duration = Duration::from_secs(5);

/// How one agent's screen is read.
#[derive(Debug, Clone, Copy)]
pub struct PaneScreen {
    /// The states in which a session's pane is read: the ones the agent may leave silently.
    pub watched: &'static [AgentState],
    /// The state a captured screen (`tmux capture-pane -p`) shows, `None` when it says nothing
    /// sure (starting up, another dialog, not the agent's screen).
    pub classify: fn(&str) -> Option<AgentState>,
}

/// What the watcher remembers of one pane: reads since the session entered its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    state_since: DateTime<Utc>,
    /// The class of the last believed read and when it was first read in a row.
    last: Option<(Option<AgentState>, DateTime<Utc>)>,
    /// The screen has shown the session's state since it began.
    seen: bool,
}

impl Track {
    pub fn new(state_since: DateTime<Utc>) -> Self {
        Self {
            state_since,
            last: None,
            seen: false,
        }
    }

    /// Takes one read at `at` (what it shows: `shown`) of a session in `state` since
    /// `state_since`; returns the hint to report: a state other than `state` that two reads in a
    /// row show, dated by the first. Reads within [`GRACE`] of the state's start are not
    /// believed, nor, for a state the agent draws (`working`, `needs_permission`), reads that
    /// disagree before the screen has shown that state once, within [`UNSEEN_GRACE`].
    pub fn read(
        &mut self,
        shown: Option<AgentState>,
        at: DateTime<Utc>,
        state: AgentState,
        state_since: DateTime<Utc>,
    ) -> Option<(AgentState, DateTime<Utc>)> {
        if self.state_since != state_since {
            *self = Self::new(state_since);
        }
        // Any read that shows the state counts as seen, within the grace too: the user may
        // answer a dialog sooner than the grace.
        self.seen |= shown == Some(state);
        let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
        if at < state_since + grace {
            return None;
        }
        let drawn = matches!(state, AgentState::Working | AgentState::NeedsPermission);
        let unseen_grace = chrono::Duration::from_std(UNSEEN_GRACE).unwrap_or_default();
        if drawn && !self.seen && at < state_since + unseen_grace {
            return None;
        }
        match self.last {
            Some((last, first)) if last == shown => {
                shown.filter(|s| *s != state).map(|s| (s, first))
            }
            _ => {
                self.last = Some((shown, at));
                None
            }
        }
    }
}

/// The tmux server a process's pane lives on: the socket path in its `$TMUX`.
fn tmux_socket(pid: u32) -> Option<std::path::PathBuf> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let tmux = crate::process::environ_var(&environ, "TMUX")?;
    let path = tmux.split(',').next().filter(|p| !p.is_empty())?;
    Some(path.into())
}

/// A session worth reading: `harness`'s, in a tmux pane, in a watched state.
fn watched(s: &Session, harness: &str, screen: &PaneScreen) -> Option<(ProcessIdentity, String)> {
    (screen.watched.contains(&s.state) && s.harness.as_str() == harness)
        .then(|| s.process.zip(s.tmux_pane.clone()))
        .flatten()
}

/// Reads the panes of `harness`'s sessions in the states `screen` watches and reports what they
/// show as hints, until `cancel` fires. `adapter` names the hints' source.
pub async fn watch(
    registry: RegistryHandle,
    cancel: CancellationToken,
    adapter: String,
    harness: &'static str,
    screen: PaneScreen,
) {
    let Ok((_, mut follower)) = RegistryFollower::start(registry.clone(), cancel.clone()).await
    else {
        return;
    };
    let mut tracks: HashMap<SessionId, Track> = HashMap::new();
    loop {
        let sessions = registry.get_all_sessions().await.unwrap_or_default();
        let active: Vec<_> = sessions
            .iter()
            .filter_map(|s| watched(s, harness, &screen).map(|w| (s, w)))
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
            let shown = (screen.classify)(&text);
            let hint = tracks
                .entry(s.id.clone())
                .or_insert_with(|| Track::new(s.state_since))
                .read(shown, Utc::now(), s.state, s.state_since);
            if let Some((state, at)) = hint {
                debug!(session = %s.id, ?shown, %state, %at, "the screen says");
                let mut found = Discovered::new(s.harness.clone(), process, adapter.clone());
                found.state_hint = Some(state);
                found.state_hint_at = Some(at);
                let _ = registry.register_discovered(found).await;
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(ms).unwrap()
    }

    /// Feeds `track` what the pane showed (`(state shown, at ms)`, in order) while the session
    /// is in `state` since `since` ms: the hint of each read.
    fn reads(
        track: &mut Track,
        screens: &[(Option<AgentState>, i64)],
        state: AgentState,
        since: i64,
    ) -> Vec<Option<(AgentState, DateTime<Utc>)>> {
        screens
            .iter()
            .map(|&(shown, at)| track.read(shown, t(at), state, t(since)))
            .collect()
    }

    #[test]
    fn two_reads_after_the_grace_make_a_hint_dated_by_the_first() {
        use AgentState as S;
        let (busy, dialog, prompt) = (Some(S::Working), Some(S::NeedsPermission), Some(S::Idle));
        let mut track = Track::new(t(0));
        // Within the grace the screen may still show what came before the hook; then the
        // dialog, as the state says: no hint; approved: the spinner, twice.
        let waiting = [(busy, 300), (busy, 600), (dialog, 1100), (dialog, 1350)];
        let approved = [(busy, 1600), (busy, 1850)];
        assert_eq!(
            reads(&mut track, &waiting, S::NeedsPermission, 0),
            [None; 4]
        );
        assert_eq!(
            reads(&mut track, &approved, S::NeedsPermission, 0),
            [None, Some((S::Working, t(1600)))]
        );
        // A new state starts a new track; one odd read is not enough.
        let stopped = [(prompt, 3100), (busy, 3350), (prompt, 3600), (prompt, 3850)];
        assert_eq!(
            reads(&mut track, &stopped, S::Working, 2000),
            [None, None, None, Some((S::Idle, t(3600)))]
        );
        // The spinner still up after the permission hook (the dialog not drawn yet): no hint
        // until the dialog has been seen, or the wait has gone unseen for UNSEEN_GRACE.
        let mut track = Track::new(t(0));
        let late = [
            (busy, 1100),
            (busy, 1350),
            (busy, 2500),
            (dialog, 2750),
            (busy, 3000),
            (busy, 3250),
        ];
        assert_eq!(
            reads(&mut track, &late, S::NeedsPermission, 0),
            [None, None, None, None, None, Some((S::Working, t(3000)))]
        );
        let mut track = Track::new(t(0));
        let never_drawn = [(prompt, 4900), (prompt, 5100), (prompt, 5350)];
        // Seen within the grace (answered at once): the prompt after it counts at the grace.
        let mut quick = Track::new(t(0));
        let answered = [(dialog, 300), (prompt, 600), (prompt, 1100), (prompt, 1350)];
        assert_eq!(
            reads(&mut quick, &answered, S::NeedsPermission, 0),
            [None, None, None, Some((S::Idle, t(1100)))]
        );
        assert_eq!(
            reads(&mut track, &never_drawn, S::NeedsPermission, 0),
            [None, None, Some((S::Idle, t(5100)))]
        );
        // A screen that says nothing is no hint.
        let mut track = Track::new(t(0));
        let unknown = [(None, 1100), (None, 1350)];
        assert_eq!(reads(&mut track, &unknown, S::Starting, 0), [None; 2]);
    }
}
