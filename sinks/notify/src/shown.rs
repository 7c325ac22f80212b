//! The notifications on screen: per session the one it shows, and the way back from a server's
//! notification id (in `ActionInvoked` and `NotificationClosed`) to the session.
//!
//! Ids belong to one server instance. When the name `org.freedesktop.Notifications` changes
//! hands (a server restarts, or is started by D-Bus activation), only the notifications the new
//! owner answered for are kept ([`Shown::owner`]): the others can no longer be replaced, closed
//! or clicked.

use std::collections::HashMap;
use std::sync::Arc;

use atm_core::request::RequestId;
use atm_core::{Session, SessionKey};

use crate::plan::Kind;

/// A notification on screen.
pub(crate) struct Shown {
    pub(crate) id: u32,
    pub(crate) kind: Kind,
    pub(crate) session: Arc<Session>,
    /// The unique bus name of the server that answered. When the name changes hands, only
    /// notifications held by the new owner survive: a server started by D-Bus activation for
    /// our very first `Notify` takes the name *before* it answers, and that notification must
    /// not be forgotten.
    pub(crate) owner: Option<String>,
}

/// Every notification on screen, by session and by id.
#[derive(Default)]
pub(crate) struct OnScreen {
    shown: HashMap<SessionKey, Shown>,
    by_id: HashMap<u32, SessionKey>,
}

impl OnScreen {
    /// The id a new notification for `key` replaces (0: none).
    pub(crate) fn replaces(&self, key: &SessionKey) -> u32 {
        self.shown.get(key).map_or(0, |s| s.id)
    }

    /// `shown` is now on screen for `key`, in place of the notification `replaced` (0: none).
    pub(crate) fn record(&mut self, key: SessionKey, replaced: u32, shown: Shown) {
        if replaced != 0 && replaced != shown.id {
            self.by_id.remove(&replaced);
        }
        self.by_id.insert(shown.id, key.clone());
        self.shown.insert(key, shown);
    }

    /// Takes the notification shown for `key` off the books (to close it).
    pub(crate) fn take(&mut self, key: &SessionKey) -> Option<Shown> {
        let shown = self.shown.remove(key)?;
        self.by_id.remove(&shown.id);
        Some(shown)
    }

    /// The server closed notification `id` (expired, dismissed).
    pub(crate) fn closed_by_server(&mut self, id: u32) {
        if let Some(key) = self.by_id.remove(&id)
            && self.shown.get(&key).is_some_and(|s| s.id == id)
        {
            self.shown.remove(&key);
        }
    }

    /// The session and its notified version behind notification `id`, for a click.
    pub(crate) fn clicked(&self, id: u32) -> Option<(SessionKey, Arc<Session>)> {
        let key = self.by_id.get(&id)?;
        Some((key.clone(), self.shown.get(key)?.session.clone()))
    }

    /// Whether the notification on screen for `key` is about request `id`.
    pub(crate) fn shows_request(&self, key: &SessionKey, id: &RequestId) -> bool {
        self.shown
            .get(key)
            .is_some_and(|s| request_of(&s.session).is_some_and(|(r, _)| r == id))
    }

    /// The request whose answer buttons the notification on screen for `key` offers, if any.
    pub(crate) fn offered_request(&self, key: &SessionKey) -> Option<&RequestId> {
        let (r, answerable) = request_of(&self.shown.get(key)?.session)?;
        answerable.then_some(r)
    }

    /// The session whose notification `id` still offers answers to `request` (it has not been
    /// replaced by another request's, nor updated to say nothing waits any more), with what it
    /// shows.
    pub(crate) fn offering(&self, id: u32, request: &RequestId) -> Option<(SessionKey, &Shown)> {
        let key = self.by_id.get(&id)?;
        let shown = self.shown.get(key).filter(|s| s.id == id)?;
        (request_of(&shown.session) == Some((request, true))).then(|| (key.clone(), shown))
    }

    /// The name has a new owner (or none): other servers' ids mean nothing to it.
    pub(crate) fn server_changed(&mut self, owner: Option<&str>) {
        self.shown
            .retain(|_, s| owner.is_some() && s.owner.as_deref() == owner);
        let shown = &self.shown;
        self.by_id
            .retain(|id, key| shown.get(key).is_some_and(|s| s.id == *id));
    }
}

/// The request a notified session shows, and whether it was answerable.
fn request_of(s: &Session) -> Option<(&RequestId, bool)> {
    let r = s.attention.as_ref()?.request.as_ref()?;
    Some((&r.id, r.answerable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::SessionId;
    use atm_core::chrono::Utc;

    use atm_core::testing::claude_key as key;

    fn shown(n: u32, owner: &str) -> Shown {
        let session = Session::new(key("s"), SessionId::new("s"), None, "t", Utc::now());
        Shown {
            id: n,
            kind: Kind::Permission,
            session: Arc::new(session),
            owner: Some(owner.to_owned()),
        }
    }

    #[test]
    fn a_new_server_keeps_only_its_own_notifications() {
        let mut on = OnScreen::default();
        for (n, owner) in [(1, ":1.7"), (2, ":1.9")] {
            on.record(key(&format!("s{n}")), 0, shown(n, owner));
        }
        // An activated server took the name after answering our first call: its ids stay.
        on.server_changed(Some(":1.9"));
        assert_eq!(on.by_id.keys().copied().collect::<Vec<_>>(), [2]);
        assert!(on.shown.contains_key(&key("s2")) && !on.shown.contains_key(&key("s1")));
        // The server left: nothing it showed can be closed or clicked any more.
        on.server_changed(None);
        assert!(on.shown.is_empty() && on.by_id.is_empty());
    }

    #[test]
    fn a_replacement_retires_the_old_id_and_server_closes_are_matched_by_id() {
        let mut on = OnScreen::default();
        on.record(key("a"), 0, shown(1, ":1.7"));
        assert_eq!(on.replaces(&key("a")), 1);
        on.record(key("a"), 1, shown(5, ":1.7"));
        assert!(on.clicked(1).is_none());
        assert_eq!(on.clicked(5).map(|(k, _)| k), Some(key("a")));
        // A late close of the old id leaves the new notification alone.
        on.closed_by_server(1);
        assert_eq!(on.replaces(&key("a")), 5);
        on.closed_by_server(5);
        assert_eq!(on.replaces(&key("a")), 0);
        assert!(on.take(&key("a")).is_none());
    }
}
