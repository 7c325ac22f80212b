//! Which panes to mark and unmark, decided from registry changes alone (pure, so every rule is
//! tested without tmux).
//!
//! A mark belongs to one *waiting episode*: a session that needs its user (permission or
//! input), in a tmux pane, since a given `state_since`. A new episode marks again even if the
//! user cleared the last one by looking; more changes within one episode (activity, usage)
//! never re-mark a window the user has already seen.

use std::collections::HashMap;

use atm_core::chrono::{DateTime, Utc};
use atm_core::{Session, SessionKey};

/// One waiting episode of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Episode {
    pane: String,
    since: DateTime<Utc>,
}

/// What to do in tmux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The agent in this pane started waiting: flag its pane and window.
    Mark(String),
    /// The agent in this pane no longer waits: clear its pane, and its window unless another
    /// pane there still waits.
    Unmark(String),
}

/// The episodes this sink has marked, by session.
#[derive(Debug, Default)]
pub struct MarkPlanner {
    waiting: HashMap<SessionKey, Episode>,
}

fn episode_of(s: &Session) -> Option<Episode> {
    let pane = s.tmux_pane.as_deref()?;
    (s.state.needs_attention() && pane.starts_with('%')).then(|| Episode {
        pane: pane.to_owned(),
        since: s.state_since,
    })
}

impl MarkPlanner {
    /// The steps for one session after a change; `removed` when it left the registry.
    pub fn on_session(&mut self, s: &Session, removed: bool) -> Vec<Step> {
        let want = if removed { None } else { episode_of(s) };
        let had = self.waiting.get(&s.key).cloned();
        match (had, want) {
            (None, None) => Vec::new(),
            (Some(had), Some(want)) if had == want => Vec::new(),
            (had, Some(want)) => {
                let mut steps = Vec::new();
                if let Some(had) = had.filter(|h| h.pane != want.pane) {
                    steps.push(Step::Unmark(had.pane));
                }
                steps.push(Step::Mark(want.pane.clone()));
                self.waiting.insert(s.key.clone(), want);
                steps
            }
            (Some(had), None) => {
                self.waiting.remove(&s.key);
                vec![Step::Unmark(had.pane)]
            }
        }
    }

    /// The steps that bring tmux in line with a fresh snapshot (start, or after lagging).
    pub fn resync(&mut self, sessions: &[std::sync::Arc<Session>]) -> Vec<Step> {
        let mut steps = Vec::new();
        let present: std::collections::HashSet<&SessionKey> =
            sessions.iter().map(|s| &s.key).collect();
        let gone: Vec<SessionKey> = self
            .waiting
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(had) = self.waiting.remove(&key) {
                steps.push(Step::Unmark(had.pane));
            }
        }
        for s in sessions {
            steps.extend(self.on_session(s, false));
        }
        steps
    }

    /// Every pane currently marked (to clear them all on stop).
    pub fn marked_panes(&self) -> Vec<String> {
        self.waiting.values().map(|e| e.pane.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::AgentState;
    use std::sync::Arc;

    fn session(id: &str, state: AgentState, pane: Option<&str>, since: i64) -> Session {
        let at = DateTime::from_timestamp(since, 0).unwrap();
        let mut s = atm_core::testing::claude_session(id, at);
        s.state = state;
        s.state_since = at;
        s.tmux_pane = pane.map(str::to_owned);
        s
    }

    #[test]
    fn an_episode_marks_once_and_ends_with_an_unmark() {
        let mut p = MarkPlanner::default();
        let wait = session("a", AgentState::NeedsPermission, Some("%1"), 10);
        assert_eq!(p.on_session(&wait, false), [Step::Mark("%1".into())]);
        assert_eq!(p.on_session(&wait, false), [], "same episode: no re-mark");
        let next = session("a", AgentState::NeedsInput, Some("%1"), 20);
        assert_eq!(p.on_session(&next, false), [Step::Mark("%1".into())]);
        let done = session("a", AgentState::Working, Some("%1"), 30);
        assert_eq!(p.on_session(&done, false), [Step::Unmark("%1".into())]);
        assert_eq!(p.on_session(&done, false), []);
    }

    #[test]
    fn a_moved_pane_a_removal_and_no_pane() {
        let mut p = MarkPlanner::default();
        p.on_session(&session("a", AgentState::NeedsInput, Some("%1"), 1), false);
        let moved = session("a", AgentState::NeedsInput, Some("%2"), 1);
        assert_eq!(
            p.on_session(&moved, false),
            [Step::Unmark("%1".into()), Step::Mark("%2".into())]
        );
        assert_eq!(p.on_session(&moved, true), [Step::Unmark("%2".into())]);
        let outside = session("b", AgentState::NeedsInput, None, 1);
        assert_eq!(p.on_session(&outside, false), []);
        let garbage = session("c", AgentState::NeedsInput, Some("not a pane"), 1);
        assert_eq!(p.on_session(&garbage, false), []);
    }

    #[test]
    fn resync_unmarks_the_vanished_and_marks_the_new() {
        let mut p = MarkPlanner::default();
        p.on_session(&session("a", AgentState::NeedsInput, Some("%1"), 1), false);
        let now = [Arc::new(session(
            "b",
            AgentState::NeedsPermission,
            Some("%2"),
            1,
        ))];
        assert_eq!(
            p.resync(&now),
            [Step::Unmark("%1".into()), Step::Mark("%2".into())]
        );
        assert_eq!(p.marked_panes(), ["%2"]);
    }
}
