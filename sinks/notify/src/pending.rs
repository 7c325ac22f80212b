//! The wishes the deliverer has not carried out yet, one per session, and when each may go.
//!
//! A new popup waits for three things: the `grace` delay since the session asked (so a wait
//! answered at once, in the terminal or anywhere, never pops up, and a request's buttons are
//! there from the first popup), the session's `rate_limit` since its last popup, and a failing
//! server's retry delay. An update of the notification already on screen for the same request
//! (the request became answerable, or stopped being so) is no new popup: it waits for nothing
//! but the server. Neither does a popup that replaces buttons for a request that has ended (the
//! agent asked something else meanwhile): stale buttons must not stay on screen for the rate
//! limit's sake. Closing never waits.
//!
//! Bounded like the queue it is filled from: one wish per session, and the popup times are
//! dropped with the session.

use std::collections::HashMap;
use std::time::Duration;

use atm_core::SessionKey;
use atm_core::request::RequestId;
use tokio::time::Instant;

use crate::plan::{Desired, Show};
use crate::shown::OnScreen;

/// A wish and since when it has been waiting.
#[derive(Debug)]
pub(crate) struct Wish {
    pub(crate) desired: Desired,
    /// When the popup was first wished for: a newer show for the same session keeps it.
    pub(crate) since: Instant,
}

pub(crate) struct Pending {
    wishes: HashMap<SessionKey, Wish>,
    /// When each session last popped up (for the rate limit); dropped with the session.
    last_popup: HashMap<SessionKey, Instant>,
    rate_limit: Duration,
    grace: Duration,
}

/// The request a show is about, if any.
pub(crate) fn request_of(show: &Show) -> Option<&RequestId> {
    show.session
        .attention
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .map(|r| &r.id)
}

impl Pending {
    pub(crate) fn new(rate_limit: Duration, grace: Duration) -> Self {
        Self {
            wishes: HashMap::new(),
            last_popup: HashMap::new(),
            rate_limit,
            grace,
        }
    }

    /// The latest wish for `key`, arrived at `now`.
    pub(crate) fn put(&mut self, key: SessionKey, desired: Desired, now: Instant) {
        let since = match (&desired, self.wishes.get(&key)) {
            (Desired::Show(_), Some(old)) if matches!(old.desired, Desired::Show(_)) => old.since,
            _ => now,
        };
        self.wishes.insert(key, Wish { desired, since });
    }

    /// Puts back a wish that could not go out, unless a newer one came meanwhile.
    pub(crate) fn keep(&mut self, key: SessionKey, wish: Wish) {
        self.wishes.entry(key).or_insert(wish);
    }

    pub(crate) fn take(&mut self, key: &SessionKey) -> Option<Wish> {
        self.wishes.remove(key)
    }

    /// A popup for `key` went out at `now`.
    pub(crate) fn popped(&mut self, key: SessionKey, now: Instant) {
        self.last_popup.insert(key, now);
    }

    /// The session is gone.
    pub(crate) fn forget(&mut self, key: &SessionKey) {
        self.last_popup.remove(key);
    }

    /// Whether `show` only updates what `on_screen` shows for `key` (the same request).
    pub(crate) fn is_update(on_screen: &OnScreen, key: &SessionKey, show: &Show) -> bool {
        request_of(show).is_some_and(|r| on_screen.shows_request(key, r))
    }

    /// Whether `show` replaces what `on_screen` shows for `key`: buttons for another request.
    pub(crate) fn replaces_stale(on_screen: &OnScreen, key: &SessionKey, show: &Show) -> bool {
        on_screen
            .offered_request(key)
            .is_some_and(|r| request_of(show) != Some(r))
    }

    /// When `wish` may go out, `now` at the earliest; `retry_at`: a failing server's next try.
    pub(crate) fn due_at(
        &self,
        key: &SessionKey,
        wish: &Wish,
        on_screen: &OnScreen,
        retry_at: Option<Instant>,
        now: Instant,
    ) -> Instant {
        let retry = retry_at.unwrap_or(now).max(now);
        match &wish.desired {
            Desired::Show(show)
                if Self::is_update(on_screen, key, show)
                    || Self::replaces_stale(on_screen, key, show) =>
            {
                retry
            }
            Desired::Show(_) => {
                let rate = self.last_popup.get(key).map(|t| *t + self.rate_limit);
                let grace = wish.since + self.grace;
                retry.max(grace).max(rate.unwrap_or(now))
            }
            Desired::Close | Desired::Forget => now,
        }
    }

    /// The sessions whose wish is due at `now`.
    pub(crate) fn due(
        &self,
        on_screen: &OnScreen,
        retry_at: Option<Instant>,
        now: Instant,
    ) -> Vec<SessionKey> {
        self.wishes
            .iter()
            .filter(|(k, w)| self.due_at(k, w, on_screen, retry_at, now) <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// When the earliest wish may go out.
    pub(crate) fn next_due(
        &self,
        on_screen: &OnScreen,
        retry_at: Option<Instant>,
        now: Instant,
    ) -> Option<Instant> {
        self.wishes
            .iter()
            .map(|(k, w)| self.due_at(k, w, on_screen, retry_at, now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Kind;
    use crate::shown::Shown;
    use atm_core::chrono::Utc;
    use atm_core::request::PendingRequest;
    use std::sync::Arc;

    fn show(request: &str, answerable: bool) -> Desired {
        let mut s = atm_core::testing::claude_session("s", Utc::now());
        let mut a = atm_core::testing::permission_attention("Bash", None);
        a.request = Some(PendingRequest {
            id: RequestId::parse(&request.repeat(16)).unwrap(),
            asked_at: Utc::now(),
            answerable,
        });
        s.attention = Some(a);
        Desired::Show(Box::new(Show {
            kind: Kind::Permission,
            session: Arc::new(s),
            turn: None,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_popup_waits_for_grace_rate_and_retry_but_updates_and_closes_do_not() {
        let key = atm_core::testing::claude_key("s");
        let sec = Duration::from_secs(1);
        let mut p = Pending::new(10 * sec, 2 * sec);
        let mut on = OnScreen::default();
        let t0 = Instant::now();
        p.put(key.clone(), show("ab", false), t0);
        let due = |p: &Pending, on: &OnScreen, retry, now| {
            let w = p.wishes.get(&key).unwrap();
            p.due_at(&key, w, on, retry, now)
        };
        assert_eq!(due(&p, &on, None, t0), t0 + 2 * sec);
        // The same wait said again (now answerable) keeps its place.
        p.put(key.clone(), show("ab", true), t0 + sec);
        assert_eq!(due(&p, &on, None, t0 + sec), t0 + 2 * sec);
        assert!(p.due(&on, None, t0 + sec).is_empty());
        assert_eq!(p.due(&on, None, t0 + 2 * sec), std::slice::from_ref(&key));
        // A failing server pushes it back.
        assert_eq!(due(&p, &on, Some(t0 + 5 * sec), t0), t0 + 5 * sec);
        // Shown: the next popup waits for the rate limit, an update of it for nothing.
        let Some(Wish {
            desired: Desired::Show(shown),
            ..
        }) = p.take(&key)
        else {
            panic!("no show")
        };
        // On screen without buttons (nothing waited for the answer any more).
        let mut plain = (*shown.session).clone();
        if let Some(r) = plain.attention.as_mut().and_then(|a| a.request.as_mut()) {
            r.answerable = false;
        }
        on.record(
            key.clone(),
            0,
            Shown {
                id: 1,
                kind: Kind::Permission,
                session: Arc::new(plain),
                owner: None,
            },
        );
        p.popped(key.clone(), t0 + 2 * sec);
        let t3 = t0 + 3 * sec;
        p.put(key.clone(), show("ab", false), t3);
        assert_eq!(due(&p, &on, None, t3), t3);
        p.put(key.clone(), show("cd", true), t3);
        assert_eq!(due(&p, &on, None, t3), t0 + 12 * sec);
        // Unless what is on screen offers buttons for the request that ended: at once.
        let mut offering = (*shown.session).clone();
        if let Some(r) = offering.attention.as_mut().and_then(|a| a.request.as_mut()) {
            r.answerable = true;
        }
        let stale = Shown {
            id: 1,
            kind: Kind::Permission,
            session: Arc::new(offering),
            owner: None,
        };
        on.record(key.clone(), 1, stale);
        assert_eq!(due(&p, &on, None, t3), t3);
        assert_eq!(due(&p, &on, Some(t3 + sec), t3), t3 + sec);
        // A close goes at once, and a show after it waits its own grace.
        p.put(key.clone(), Desired::Close, t3);
        assert_eq!(due(&p, &on, Some(t0 + 60 * sec), t3), t3);
        assert!(on.take(&key).is_some());
        p.forget(&key);
        let t4 = t0 + 4 * sec;
        p.put(key.clone(), show("ef", true), t4);
        assert_eq!(due(&p, &on, None, t4), t4 + 2 * sec);
        assert_eq!(p.next_due(&on, None, t4), Some(t4 + 2 * sec));
        // What is due now is due when checked a moment later (no busy loop).
        let later = t4 + 5 * sec;
        assert_eq!(p.next_due(&on, None, later), Some(later));
        assert_eq!(p.due(&on, None, later), [key]);
    }
}
