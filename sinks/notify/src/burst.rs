//! The global popup rate: at most `max_popups` notifications pop up in any `popup_window`,
//! across all sessions; past that, the sessions that would have popped up are gathered into
//! one summary notification ("12 agents need you") instead of one popup each.
//!
//! The per-session rate limit keeps one chatty session quiet, but 2,000 agents asking at once
//! are 2,000 sessions: without a global rate they would bury the desktop in 2,000 popups. The
//! summary is one notification, replaced in place as its count changes (at most once a
//! second, so a flood does not turn into a flood of updates), and closed when every session in
//! it has moved on or been shown on its own. Sessions gathered in it stay there until they move
//! on (their wish becomes a close) or the user dismisses the summary: the user has been told.
//!
//! Pure bookkeeping: the deliverer asks and tells it, and does the D-Bus calls.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use atm_core::SessionKey;
use tokio::time::Instant;

use crate::content::{Text, escape};
use crate::plan::Show;

/// The summary is updated at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Sessions the summary's body names (the rest are counted).
const NAMED: usize = 5;

/// What the summary notification should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SummaryUpdate {
    /// Show (or replace) the summary with this text.
    Show(Text),
    /// Close it: nobody is gathered in it any more.
    Close,
}

pub(crate) struct Burst {
    max: usize,
    window: Duration,
    /// When the popups of the last `window` went out, oldest first.
    recent: VecDeque<Instant>,
    /// Sessions gathered in the summary, with the one line each contributes to its body.
    gathered: BTreeMap<SessionKey, String>,
    /// The summary's id at the server, while it is on screen.
    pub(crate) summary_id: Option<u32>,
    dirty: bool,
    /// When the summary was last updated; before the first update, when this was made (so
    /// that a first update is due at once, and stays due however late it is checked).
    last_update: Option<Instant>,
    made: Instant,
}

impl Burst {
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            recent: VecDeque::new(),
            gathered: BTreeMap::new(),
            summary_id: None,
            dirty: false,
            last_update: None,
            made: Instant::now(),
        }
    }

    /// Whether one more popup fits in the window ending `now`.
    pub(crate) fn allows(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        self.recent.len() < self.max
    }

    /// A popup went out at `now`.
    pub(crate) fn popped(&mut self, now: Instant) {
        self.recent.push_back(now);
        if self.recent.len() > self.max {
            self.recent.pop_front();
        }
    }

    /// `show` did not fit: its session goes into the summary.
    pub(crate) fn gather(&mut self, key: SessionKey, show: &Show) {
        let line = crate::content::render(show, None, false).summary;
        if self.gathered.insert(key, line.clone()).as_ref() != Some(&line) {
            self.dirty = true;
        }
    }

    /// The session moved on (or is shown on its own now): it leaves the summary.
    pub(crate) fn release(&mut self, key: &SessionKey) {
        if self.gathered.remove(key).is_some() {
            self.dirty = true;
        }
    }

    /// The user (or the server) closed the summary: what it said has been seen.
    pub(crate) fn dismissed(&mut self) {
        self.summary_id = None;
        self.gathered.clear();
        self.dirty = false;
    }

    /// The server changed: its ids mean nothing now; show the summary afresh if needed.
    pub(crate) fn server_changed(&mut self) {
        self.summary_id = None;
        self.dirty = !self.gathered.is_empty();
    }

    /// When the summary should next be updated, if it needs to be.
    pub(crate) fn due(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(self.last_update.map_or(self.made, |t| t + SUMMARY_EVERY))
    }

    /// What to do with the summary at `now`, if it is due (`markup`: the server renders body
    /// markup, so the body is escaped); the caller does it and then calls [`Burst::updated`].
    pub(crate) fn update(&self, now: Instant, markup: bool) -> Option<SummaryUpdate> {
        if self.due().is_none_or(|t| t > now) {
            return None;
        }
        if self.gathered.is_empty() {
            return self.summary_id.map(|_| SummaryUpdate::Close);
        }
        let n = self.gathered.len();
        let summary = if n == 1 {
            "1 agent needs you".to_owned()
        } else {
            format!("{n} agents need you")
        };
        let mut lines: Vec<String> = self
            .gathered
            .values()
            .take(NAMED)
            .map(|l| if markup { escape(l) } else { l.clone() })
            .collect();
        if n > NAMED {
            lines.push(format!("and {} more", n - NAMED));
        }
        lines.push(format!(
            "(more than {} notifications in {}s: gathered here)",
            self.max,
            self.window.as_secs()
        ));
        Some(SummaryUpdate::Show(Text {
            summary,
            body: lines.join("\n"),
        }))
    }

    /// The update went out; `id` is the summary's id now (`None` once closed).
    pub(crate) fn updated(&mut self, now: Instant, id: Option<u32>) {
        self.summary_id = id;
        self.dirty = false;
        self.last_update = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::chrono::Utc;
    use std::sync::Arc;

    fn key(i: usize) -> SessionKey {
        atm_core::testing::claude_key(&format!("s{i}"))
    }

    fn show(i: usize) -> Show {
        let mut s = atm_core::testing::claude_session(&format!("s{i}"), Utc::now());
        s.cwd = Some(format!("/src/repo{i}"));
        Show {
            kind: crate::plan::Kind::Permission,
            session: Arc::new(s),
            turn: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn popups_past_the_rate_are_gathered_into_one_summary_updated_once_a_second() {
        let mut b = Burst::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(b.allows(t0));
            b.popped(t0);
        }
        assert!(!b.allows(t0));
        for i in 0..12 {
            b.gather(key(i), &show(i));
        }
        let Some(SummaryUpdate::Show(text)) = b.update(t0, true) else {
            panic!("no summary");
        };
        assert_eq!(text.summary, "12 agents need you");
        assert!(text.body.contains("and 7 more"), "{}", text.body);
        b.updated(t0, Some(40));
        // More gathered within the second: the update waits.
        b.gather(key(12), &show(12));
        assert!(b.update(t0 + Duration::from_millis(500), true).is_none());
        let Some(SummaryUpdate::Show(text)) = b.update(t0 + SUMMARY_EVERY, true) else {
            panic!("no update");
        };
        assert_eq!(text.summary, "13 agents need you");
        b.updated(t0 + SUMMARY_EVERY, Some(40));
        // Everyone moves on: the summary closes.
        for i in 0..13 {
            b.release(&key(i));
        }
        assert_eq!(
            b.update(t0 + SUMMARY_EVERY * 2, true),
            Some(SummaryUpdate::Close)
        );
        b.updated(t0 + SUMMARY_EVERY * 2, None);
        // The window passes: popups may go out again.
        assert!(b.allows(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn one_agent_is_singular_and_a_dismissal_forgets_the_gathered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut b = Burst::new(1, Duration::from_secs(10));
            b.gather(key(1), &show(1));
            let Some(SummaryUpdate::Show(text)) = b.update(Instant::now(), false) else {
                panic!("no summary");
            };
            assert_eq!(text.summary, "1 agent needs you");
            b.updated(Instant::now(), Some(7));
            b.dismissed();
            assert!(b.due().is_none());
            assert_eq!(b.summary_id, None);
        });
    }

    mod fuzz {
        use super::*;
        use atm_core::testing::arb_hostile_session;
        use atm_core::text::is_portable;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// The summary notification fed hostile sessions: portable text, escaped markup.
            #[test]
            fn the_summary_of_hostile_sessions_is_valid_text(
                sessions in prop::collection::vec(arb_hostile_session(), 1..8),
                markup in any::<bool>(),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                let text = rt.block_on(async {
                    let mut b = Burst::new(1, Duration::from_secs(10));
                    for (i, s) in sessions.into_iter().enumerate() {
                        let show = Show { kind: crate::plan::Kind::Permission, session: Arc::new(s), turn: None };
                        b.gather(key(i), &show);
                    }
                    match b.update(Instant::now(), markup) {
                        Some(SummaryUpdate::Show(t)) => t,
                        other => panic!("{other:?}"),
                    }
                });
                prop_assert!(text.summary.chars().all(is_portable));
                for line in text.body.split('\n') {
                    prop_assert!(line.chars().all(is_portable), "{:?}", line);
                    prop_assert!(!markup || !line.contains(['<', '>']), "{:?}", line);
                    prop_assert!(line.chars().count() <= 6 * crate::content::SUMMARY_MAX, "{:?}", line);
                }
            }
        }
    }
}
