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
//! A dialog the screen never showed is not believed gone (the agent may not have drawn it yet),
//! so the watcher must catch it on screen while it stands: it reads at once when a session's
//! state changes, every [`FAST_POLL`] while a drawn state has not been seen, and counts a read
//! that showed the state just before its hook landed (agents draw before their hook reaches
//! atm, more so on a loaded machine). Without that, an answer given within one slow read of the
//! dialog was taken for "not drawn yet" for [`UNSEEN_GRACE`].
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
use crate::registry_follow::{Followed, RegistryFollower};
use crate::tmux::{Tmux, TmuxSocket};

/// How often a watched pane is read.
pub const POLL: Duration = Duration::from_millis(250);

/// How long after a session entered its state the screen is not believed: an agent draws what
/// a hook announced a little later (a dialog after its hook, a spinner after the prompt's),
/// more so on a loaded machine.
pub const GRACE: Duration = Duration::from_secs(1);

/// How often a pane is read while its session is in a drawn state the screen has not shown
/// yet: the user may answer a dialog within a few hundred milliseconds, and a dialog never read
/// is not believed answered until [`UNSEEN_GRACE`]. Only for that short while, so cheap.
pub const FAST_POLL: Duration = Duration::from_millis(50);

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
    /// The screen has shown the session's state since it began (or just before).
    seen: bool,
    /// The latest read of all, kept across states: a read that showed a state shortly before
    /// its hook landed counts as having seen it.
    latest: Option<(Option<AgentState>, DateTime<Utc>)>,
}

impl Track {
    pub fn new(state_since: DateTime<Utc>) -> Self {
        Self {
            state_since,
            last: None,
            seen: false,
            latest: None,
        }
    }

    /// A drawn state (`working`, `needs_permission`) the screen has not shown yet.
    pub fn unseen(&self, state: AgentState) -> bool {
        is_drawn(state) && !self.seen
    }

    /// The pane is to be read every [`FAST_POLL`] at `now`: its drawn state is unseen and the
    /// screen's disagreement is not believed yet. Past [`UNSEEN_GRACE`] it is believed anyway,
    /// so a pane that never shows the state (scrolled, another program) is read at the normal
    /// pace instead of 20 times a second for as long as the session works.
    pub fn hurry(&self, state: AgentState, now: DateTime<Utc>) -> bool {
        let unseen_grace = chrono::Duration::from_std(UNSEEN_GRACE).unwrap_or_default();
        self.unseen(state) && now < self.state_since + unseen_grace
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
        let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
        if self.state_since != state_since {
            let latest = self.latest;
            *self = Self::new(state_since);
            // The agent drew the state before its hook landed: seen, if not long before.
            self.seen = latest.is_some_and(|(class, read_at)| {
                class == Some(state) && read_at + grace >= state_since
            });
            self.latest = latest;
        }
        self.latest = Some((shown, at));
        // Any read that shows the state counts as seen, within the grace too: the user may
        // answer a dialog sooner than the grace.
        self.seen |= shown == Some(state);
        if at < state_since + grace {
            return None;
        }
        let unseen_grace = chrono::Duration::from_std(UNSEEN_GRACE).unwrap_or_default();
        if self.unseen(state) && at < state_since + unseen_grace {
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

/// A state the agent draws (a spinner, a dialog), as opposed to one it may show before its hook.
fn is_drawn(state: AgentState) -> bool {
    matches!(state, AgentState::Working | AgentState::NeedsPermission)
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
        let round = tokio::time::Instant::now();
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
        let mut hurry = false;
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
            let track = tracks
                .entry(s.id.clone())
                .or_insert_with(|| Track::new(s.state_since));
            let now = Utc::now();
            let hint = track.read(shown, now, s.state, s.state_since);
            hurry |= track.hurry(s.state, now);
            if let Some((state, at)) = hint {
                debug!(session = %s.id, ?shown, %state, %at, "the screen says");
                let mut found = Discovered::new(s.harness.clone(), process, adapter.clone());
                found.state_hint = Some(state);
                found.state_hint_at = Some(at);
                let _ = registry.register_discovered(found).await;
            }
        }
        let pause = if hurry { FAST_POLL } else { POLL };
        if !wait_round(&mut follower, &cancel, harness, round, pause).await {
            return;
        }
    }
}

/// Waits `pause` after the read that began at `round`, or less when one of `harness`'s
/// sessions changes state (a hook moved it: its pane is read at once, but no sooner than
/// [`FAST_POLL`] after the last round however busy the registry is). `false`: stop.
async fn wait_round(
    follower: &mut RegistryFollower,
    cancel: &CancellationToken,
    harness: &str,
    round: tokio::time::Instant,
    pause: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + pause;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep_until(deadline) => return true,
            changed = follower.next() => match changed {
                None => return false,
                Some(followed) if moves_one_of(&followed, harness) => break,
                Some(_) => {}
            },
        }
    }
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep_until(round + FAST_POLL) => true,
    }
}

/// The registry moved one of `harness`'s sessions to another state (or may have: a resync).
fn moves_one_of(followed: &Followed, harness: &str) -> bool {
    match followed {
        Followed::Changes(changes) => changes.iter().any(|e| {
            e.session.harness.as_str() == harness && e.previous_state != Some(e.session.state)
        }),
        Followed::Resync { .. } => true,
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
        // The dialog drawn just before its hook landed (the last read in `working` showed it):
        // seen, so the prompt after it is believed at the grace. Drawn long before: not seen.
        let mut early = Track::new(t(0));
        assert_eq!(reads(&mut early, &[(dialog, 900)], S::Working, 0), [None]);
        let answered = [(prompt, 1300), (prompt, 2100), (prompt, 2350)];
        assert_eq!(
            reads(&mut early, &answered, S::NeedsPermission, 1000),
            [None, None, Some((S::Idle, t(2100)))]
        );
        let mut stale = Track::new(t(0));
        assert_eq!(reads(&mut stale, &[(dialog, 900)], S::Working, 0), [None]);
        assert!(stale.unseen(S::Working));
        let _ = reads(&mut stale, &[(prompt, 2500)], S::NeedsPermission, 2000);
        assert!(
            stale.unseen(S::NeedsPermission),
            "a dialog 1.1 s before is not this one"
        );
        assert!(stale.hurry(S::NeedsPermission, t(6900)));
        assert!(
            !stale.hurry(S::NeedsPermission, t(7000)),
            "past UNSEEN_GRACE: the normal pace"
        );
        assert_eq!(
            reads(
                &mut stale,
                &[(prompt, 3100), (prompt, 3350)],
                S::NeedsPermission,
                2000
            ),
            [None, None]
        );
        // A screen that says nothing is no hint.
        let mut track = Track::new(t(0));
        let unknown = [(None, 1100), (None, 1350)];
        assert_eq!(reads(&mut track, &unknown, S::Starting, 0), [None; 2]);
    }
}
