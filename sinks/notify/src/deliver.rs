//! The deliverer: the one task that owns the D-Bus connection ([`crate::server`]) and turns
//! wishes into notifications.
//!
//! The task keeps, per session, the notification it shows ([`crate::shown`], so a new state
//! *replaces* it and `working` closes it) and the wish it has not delivered yet
//! ([`crate::pending`]: grace delay, rate limit, absent server). It offers the buttons of
//! [`crate::actions`] and hands their clicks to the registry; an answer the registry refuses
//! takes the buttons off the notification that offered it (updated in place).
//!
//! Failure policy, so that nothing here is ever fatal or blocks other sinks:
//! - no bus: one log line, then reconnect with backoff (1 s doubling to 60 s);
//! - no server, or a server that errors or times out: one log line per outage, the wish is kept
//!   and retried with backoff, and at once when a server takes the name;
//! - a lost connection: reconnect; notifications of the old connection are forgotten;
//! - the name changes hands (a server restarts, or is started by D-Bus activation): only the
//!   notifications the new owner answered for are kept (see [`crate::shown`]). Server signals
//!   are handled before new wishes, so no wish goes out with an id of a server that is gone.
//!
//! Grace and rate limit: a popup waits `grace` after the session asked, and until `rate_limit`
//! after the session's last popup; if the session moves on meanwhile, the newer wish replaces
//! the waiting one (a close: nothing pops up). Across sessions, past `max_popups` per
//! `popup_window`, popups are gathered into one summary ([`crate::burst`]). An update of the
//! notification on screen for the same request is no popup: none of these hold it.

use std::collections::HashMap;
use std::sync::Arc;

use atm_core::{RegistryHandle, SessionKey};
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zbus::Variant;

use crate::actions::{self, Answerer, Clicked, Refused};
use crate::burst::Burst;
use crate::config::NotifyConfig;
use crate::content;
use crate::focus::Focus;
use crate::pending::{Pending, Wish};
use crate::plan::{Desired, Show};
use crate::queue::DesiredQueue;
use crate::server::{self, Backoff, Bus, Caps, Notification, NotificationsProxy, connection_lost};
use crate::shown::{OnScreen, Shown};
use crate::stats::NotifyStats;
use crate::tmux::Tmux;

mod summary;

/// Why `serve` returned.
enum Served {
    Cancelled,
    Lost(String),
}

/// What woke the serve loop.
enum Wake {
    Cancelled,
    Queue,
    Timer,
    Action(u32, String),
    Refused(Refused),
    Closed(u32),
    OwnerChanged(Option<String>),
    StreamEnded,
}

pub struct Deliverer {
    config: Arc<NotifyConfig>,
    queue: Arc<DesiredQueue>,
    tmux: Tmux,
    focus: Focus,
    answerer: Answerer,
    refused: tokio::sync::mpsc::Receiver<Refused>,
    /// Wishes not delivered yet, one per session.
    pending: Pending,
    on_screen: OnScreen,
    caps: Option<Caps>,
    /// Set while the server is failing: when to try again.
    retry_at: Option<Instant>,
    server_backoff: Backoff,
    server_down: bool,
    stats: NotifyStats,
    /// The global popup rate and the summary past it ([`crate::burst`]).
    burst: Burst,
}

impl Deliverer {
    pub fn new(config: Arc<NotifyConfig>, queue: Arc<DesiredQueue>, tmux: Tmux) -> Self {
        let focus = Focus::new(tmux.clone(), config.focus_command.clone());
        let burst = Burst::new(config.max_popups, config.popup_window);
        let (answerer, refused) = Answerer::new();
        let pending = Pending::new(config.rate_limit, config.grace);
        Self {
            config,
            queue,
            tmux,
            focus,
            answerer,
            refused,
            pending,
            on_screen: OnScreen::default(),
            caps: None,
            retry_at: None,
            server_backoff: Backoff::new(),
            server_down: false,
            stats: NotifyStats::default(),
            burst,
        }
    }

    /// Counts into `stats` (the sink's) instead of counters of its own.
    pub fn with_stats(mut self, stats: NotifyStats) -> Self {
        self.stats = stats;
        self
    }

    /// Lets the focus action use the session as it is at the click, not as it was notified,
    /// and the buttons answer requests.
    pub fn with_registry(mut self, registry: RegistryHandle) -> Self {
        self.focus.set_registry(registry.clone());
        self.answerer.set_registry(registry);
        self
    }

    /// Connects (and reconnects) until cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut outage_logged = false;
        loop {
            let connected = tokio::select! {
                () = cancel.cancelled() => return,
                c = server::connect(self.config.address.as_deref()) => c,
            };
            match connected {
                Ok(mut bus) => {
                    debug!("connected to the bus");
                    if outage_logged {
                        info!("connected to D-Bus; desktop notifications resume");
                    }
                    backoff.reset();
                    match self.serve(&mut bus, &cancel).await {
                        Served::Cancelled => return,
                        Served::Lost(why) => {
                            self.stats.sink().failed();
                            warn!(reason = %why, "lost the D-Bus connection; reconnecting");
                            outage_logged = true;
                            self.forget_server();
                        }
                    }
                }
                Err(e) => {
                    self.stats.sink().failed();
                    if outage_logged {
                        debug!(error = %e, "still cannot connect to the D-Bus bus");
                    } else {
                        warn!(error = %e, "cannot connect to the D-Bus bus; desktop notifications wait for one");
                        outage_logged = true;
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    async fn serve(&mut self, bus: &mut Bus, cancel: &CancellationToken) -> Served {
        loop {
            let now = Instant::now();
            for (key, desired) in self.queue.drain() {
                self.pending.put(key, desired, now);
            }
            // A slow server or tmux must not delay stopping: delivery is abandoned on cancel.
            let delivered = tokio::select! {
                () = cancel.cancelled() => return Served::Cancelled,
                d = self.deliver_due(&bus.proxy) => d,
            };
            if let Err(why) = delivered {
                return Served::Lost(why);
            }
            let wake_at = self.next_due();
            let queue = self.queue.clone();
            // Biased: facts about the server (a new owner, closed ids) are applied before new
            // wishes are delivered, so a wish never goes out with a stale `replaces_id`.
            let woke = tokio::select! {
                biased;
                () = cancel.cancelled() => Wake::Cancelled,
                owner = bus.owners.next() => match owner {
                    Some(owner) => Wake::OwnerChanged(owner.map(|o| o.to_string())),
                    None => Wake::StreamEnded,
                },
                sig = bus.closed.next() => match sig {
                    Some(sig) => match sig.args() {
                        Ok(a) => Wake::Closed(a.id),
                        Err(e) => { debug!(error = %e, "malformed NotificationClosed"); Wake::Timer }
                    },
                    None => Wake::StreamEnded,
                },
                sig = bus.actions.next() => match sig {
                    Some(sig) => match sig.args() {
                        Ok(a) => Wake::Action(a.id, a.action_key.to_owned()),
                        Err(e) => { debug!(error = %e, "malformed ActionInvoked"); Wake::Timer }
                    },
                    None => Wake::StreamEnded,
                },
                refused = self.refused.recv() => match refused {
                    Some(r) => Wake::Refused(r),
                    None => Wake::Timer,
                },
                () = queue.changed() => Wake::Queue,
                () = sleep_until_opt(wake_at) => Wake::Timer,
            };
            match woke {
                Wake::Cancelled => return Served::Cancelled,
                Wake::Queue | Wake::Timer => {}
                Wake::Action(id, key) => self.on_action(id, &key),
                Wake::Refused(r) => self.on_refused(r),
                Wake::Closed(id) => {
                    self.stats.server_closed();
                    if self.burst.summary_id == Some(id) {
                        self.burst.dismissed();
                    } else {
                        self.on_screen.closed_by_server(id);
                    }
                }
                Wake::OwnerChanged(owner) => {
                    debug!(?owner, "notification server changed");
                    self.server_changed(owner.as_deref());
                }
                Wake::StreamEnded => return Served::Lost("signal stream ended".to_owned()),
            }
        }
    }

    /// Forgets everything tied to the current server: ids, capabilities, the retry delay.
    fn forget_server(&mut self) {
        self.server_changed(None);
    }

    /// The name has a new owner (or none): other servers' ids mean nothing to it, its
    /// capabilities may differ, and a server that just appeared deserves a try at once.
    fn server_changed(&mut self, owner: Option<&str>) {
        self.on_screen.server_changed(owner);
        self.burst.server_changed();
        self.caps = None;
        self.retry_at = None;
        self.server_backoff.reset();
    }

    /// When the earliest waiting wish may go out.
    fn next_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let summary = self
            .burst
            .due()
            .map(|t| t.max(self.retry_at.unwrap_or(now)));
        self.pending
            .next_due(&self.on_screen, self.retry_at, now)
            .into_iter()
            .chain(summary)
            .min()
    }

    /// Delivers every wish that is due. `Err` means the connection is lost.
    async fn deliver_due(&mut self, proxy: &NotificationsProxy<'static>) -> Result<(), String> {
        let now = Instant::now();
        for key in self.pending.due(&self.on_screen, self.retry_at, now) {
            let Some(wish) = self.pending.take(&key) else {
                continue;
            };
            // An earlier wish in this round found the server failing: the rest wait too.
            if matches!(wish.desired, Desired::Show(_)) && self.retry_at.is_some_and(|t| t > now) {
                self.pending.keep(key, wish);
                continue;
            }
            let since = wish.since;
            match wish.desired {
                // Past the global rate: gathered into the summary instead of a popup.
                Desired::Show(show)
                    if !Pending::is_update(&self.on_screen, &key, &show)
                        && !self.burst.allows(now) =>
                {
                    self.burst.gather(key, &show)
                }
                Desired::Show(show) => self.show(proxy, key, show, since).await?,
                Desired::Close => {
                    self.burst.release(&key);
                    self.close(proxy, &key).await?;
                }
                Desired::Forget => {
                    self.burst.release(&key);
                    self.close(proxy, &key).await?;
                    self.pending.forget(&key);
                }
            }
        }
        if self.retry_at.is_none_or(|t| t <= now) {
            self.update_summary(proxy, now).await?;
        }
        Ok(())
    }

    async fn show(
        &mut self,
        proxy: &NotificationsProxy<'static>,
        key: SessionKey,
        show: Box<Show>,
        since: Instant,
    ) -> Result<(), String> {
        let pane = show.session.tmux_pane.clone();
        if self.config.quiet_when_pane_active
            && let Some(pane) = &pane
            && self.tmux.pane_is_watched(pane).await
        {
            debug!(id = %show.session.id, pane, "pane is being watched; no notification");
            return self.close(proxy, &key).await;
        }
        let caps = match self.capabilities(proxy).await {
            Ok(caps) => caps,
            Err(e) => return self.server_failed(key, show, since, "GetCapabilities", e),
        };
        let location = match &pane {
            Some(p) => self.tmux.location(p).await,
            None => None,
        };
        let text = content::render(&show, location.as_deref(), caps.markup);
        let offered = if caps.actions {
            actions::offered(&show.session, self.focus.can_focus(&show.session))
        } else {
            Vec::new()
        };
        let actions: Vec<&str> = offered
            .iter()
            .flat_map(|(k, l)| [k.as_str(), l.as_str()])
            .collect();
        let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
        hints.insert("urgency", Variant::U8(show.kind.urgency()));
        hints.insert("category", Variant::from(show.kind.category()));
        if let Some(entry) = &self.config.desktop_entry {
            hints.insert("desktop-entry", Variant::from(entry.as_str()));
        }
        if show.kind.transient() {
            hints.insert("transient", Variant::Bool(true));
        }
        let replaces = self.on_screen.replaces(&key);
        let update = Pending::is_update(&self.on_screen, &key, &show);
        let notification = Notification {
            app_name: &self.config.app_name,
            replaces,
            summary: &text.summary,
            body: &text.body,
            actions: &actions,
            hints,
        };
        match server::notify(proxy, notification).await {
            Ok((id, owner)) => {
                self.server_ok();
                debug!(id, session = %show.session.id, kind = ?show.kind, update, "notified");
                let now = Instant::now();
                if !update {
                    self.pending.popped(key.clone(), now);
                    self.burst.popped(now);
                }
                self.burst.release(&key);
                let shown = Shown {
                    id,
                    kind: show.kind,
                    session: show.session,
                    owner,
                };
                self.on_screen.record(key, replaces, shown);
                Ok(())
            }
            Err(e) => self.server_failed(key, show, since, "Notify", e),
        }
    }

    async fn close(
        &mut self,
        proxy: &NotificationsProxy<'static>,
        key: &SessionKey,
    ) -> Result<(), String> {
        let Some(shown) = self.on_screen.take(key) else {
            return Ok(());
        };
        match proxy.close_notification(shown.id).await {
            Ok(()) => Ok(()),
            Err(e) if connection_lost(&e) => Err(e.to_string()),
            // Best effort: the server may have closed it already, or be gone.
            Err(e) => {
                debug!(error = %e, id = shown.id, "CloseNotification failed");
                Ok(())
            }
        }
    }

    async fn capabilities(&mut self, proxy: &NotificationsProxy<'static>) -> zbus::Result<Caps> {
        if let Some(caps) = self.caps {
            return Ok(caps);
        }
        let caps = Caps::fetch(proxy).await?;
        self.caps = Some(caps);
        Ok(caps)
    }

    /// Keeps the wish for a retry and logs the outage once.
    fn server_failed(
        &mut self,
        key: SessionKey,
        show: Box<Show>,
        since: Instant,
        call: &str,
        e: zbus::Error,
    ) -> Result<(), String> {
        let wish = Wish {
            desired: Desired::Show(show),
            since,
        };
        if connection_lost(&e) {
            self.pending.keep(key, wish);
            return Err(e.to_string());
        }
        self.stats.sink().failed();
        let delay = self.server_backoff.next();
        if self.server_down {
            debug!(error = %e, call, "notification server still failing");
        } else {
            warn!(error = %e, call, retry_in = ?delay,
                "no working notification server (org.freedesktop.Notifications); notifications wait and retry");
            self.server_down = true;
        }
        self.caps = None;
        self.retry_at = Some(Instant::now() + delay);
        self.pending.keep(key, wish);
        Ok(())
    }

    fn server_ok(&mut self) {
        if self.server_down {
            info!("notification server is available again");
            self.server_down = false;
        }
        self.retry_at = None;
        self.server_backoff.reset();
    }

    /// A click on one of our notifications: take the user to the session, or answer the
    /// request it shows.
    fn on_action(&self, id: u32, action: &str) {
        let Some((key, notified)) = self.on_screen.clicked(id) else {
            return;
        };
        match actions::clicked(action, &notified) {
            Some(Clicked::Focus) => self.focus.start(key, notified),
            Some(Clicked::Decide { request, decision }) => {
                debug!(id, %request, decision = decision.name(), "answer clicked");
                self.answerer.start(id, request, decision);
            }
            None => debug!(
                id,
                action, "click on a button this notification no longer has"
            ),
        }
    }

    /// The registry refused an answer clicked on notification `r.notification` (the request
    /// has ended, or nothing waits for the answer any more): if it still offers that request's
    /// buttons, it is updated in place without them, unless a newer wish for the session
    /// waits (it says more). A session that moved on has its close on the way.
    fn on_refused(&mut self, r: Refused) {
        let Some((key, shown)) = self.on_screen.offering(r.notification, &r.request) else {
            return;
        };
        let mut session = (*shown.session).clone();
        if let Some(req) = session.attention.as_mut().and_then(|a| a.request.as_mut()) {
            req.answerable = false;
        }
        let show = Show {
            kind: shown.kind,
            session: Arc::new(session),
            turn: None,
        };
        let wish = Wish {
            desired: Desired::Show(Box::new(show)),
            since: Instant::now(),
        };
        self.pending.keep(key, wish);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Kind;
    use atm_core::chrono::Utc;
    use atm_core::request::{PendingRequest, RequestId};

    #[tokio::test]
    async fn a_refused_answer_takes_the_buttons_off_the_notification_that_still_offers_it() {
        let mut d = Deliverer::new(
            Arc::new(NotifyConfig::default()),
            Arc::default(),
            Tmux::new(crate::tmux::TmuxSocket::Default),
        );
        let key = atm_core::testing::claude_key("s");
        let id = RequestId::parse(&"ab".repeat(16)).unwrap();
        let mut s = atm_core::testing::claude_session("s", Utc::now());
        let mut a = atm_core::testing::permission_attention("Bash", Some("ls"));
        a.request = Some(PendingRequest {
            id: id.clone(),
            asked_at: Utc::now(),
            answerable: true,
        });
        s.attention = Some(a);
        let shown = |session| Shown {
            id: 7,
            kind: Kind::Permission,
            session: Arc::new(session),
            owner: None,
        };
        d.on_screen.record(key.clone(), 0, shown(s.clone()));
        // Another request's answer, or another notification: nothing to take back.
        let other = RequestId::parse(&"cd".repeat(16)).unwrap();
        for (notification, request) in [(7, other), (8, id.clone())] {
            d.on_refused(Refused::new(notification, request));
            assert!(d.pending.take(&key).is_none());
        }
        d.on_refused(Refused::new(7, id.clone()));
        let wish = d.pending.take(&key).expect("an update");
        let Desired::Show(show) = &wish.desired else {
            panic!("{wish:?}")
        };
        assert_eq!(show.kind, Kind::Permission);
        assert!(Pending::is_update(&d.on_screen, &key, show));
        assert_eq!(actions::offered(&show.session, true).len(), 2, "Focus only");
        // Once updated so (nothing waits any more), a late refusal changes nothing.
        let mut unanswerable = s;
        if let Some(r) = unanswerable
            .attention
            .as_mut()
            .and_then(|a| a.request.as_mut())
        {
            r.answerable = false;
        }
        d.on_screen.record(key.clone(), 7, shown(unanswerable));
        d.on_refused(Refused::new(7, id));
        assert!(d.pending.take(&key).is_none());
    }
}
