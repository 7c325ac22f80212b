//! The deliverer: the one task that owns the D-Bus connection ([`crate::server`]) and turns
//! wishes into notifications.
//!
//! The task keeps, per session, the notification it shows ([`crate::shown`], so a new state
//! *replaces* it and `working` closes it) and the wish it has not delivered yet (rate limit,
//! absent server).
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
//! Rate limit: a session's next popup waits until `rate_limit` after its last one; if the
//! session moves on meanwhile, the newer wish replaces the waiting one. Across sessions, past
//! `max_popups` per `popup_window`, wishes are gathered into one summary ([`crate::burst`]).

use std::collections::HashMap;
use std::sync::Arc;

use atm_core::{RegistryHandle, SessionKey};
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zbus::Variant;

use crate::burst::{Burst, SummaryUpdate};
use crate::config::NotifyConfig;
use crate::content;
use crate::focus::Focus;
use crate::plan::{Desired, Show};
use crate::queue::DesiredQueue;
use crate::server::{self, Backoff, Bus, Caps, Notification, NotificationsProxy, connection_lost};
use crate::shown::{OnScreen, Shown};
use crate::stats::NotifyStats;
use crate::tmux::Tmux;

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
    Closed(u32),
    OwnerChanged(Option<String>),
    StreamEnded,
}

pub struct Deliverer {
    config: Arc<NotifyConfig>,
    queue: Arc<DesiredQueue>,
    tmux: Tmux,
    focus: Focus,
    /// Wishes not delivered yet, one per session.
    pending: HashMap<SessionKey, Desired>,
    on_screen: OnScreen,
    /// When each session last popped up (for the rate limit); dropped with the session.
    last_popup: HashMap<SessionKey, Instant>,
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
        Self {
            config,
            queue,
            tmux,
            focus,
            pending: HashMap::new(),
            on_screen: OnScreen::default(),
            last_popup: HashMap::new(),
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

    /// Lets the focus action use the session as it is at the click, not as it was notified.
    pub fn with_registry(mut self, registry: RegistryHandle) -> Self {
        self.focus.set_registry(registry);
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
            for (key, desired) in self.queue.drain() {
                self.pending.insert(key, desired);
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
                () = queue.changed() => Wake::Queue,
                () = sleep_until_opt(wake_at) => Wake::Timer,
            };
            match woke {
                Wake::Cancelled => return Served::Cancelled,
                Wake::Queue | Wake::Timer => {}
                Wake::Action(id, key) => self.on_action(id, &key),
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
            .iter()
            .map(|(key, d)| self.due_at(key, d, now))
            .chain(summary)
            .min()
    }

    /// When a wish may go out, `now` at the earliest.
    fn due_at(&self, key: &SessionKey, desired: &Desired, now: Instant) -> Instant {
        match desired {
            Desired::Show(_) => {
                let rate = self
                    .last_popup
                    .get(key)
                    .map_or(now, |t| *t + self.config.rate_limit);
                rate.max(self.retry_at.unwrap_or(now))
            }
            Desired::Close | Desired::Forget => now,
        }
    }

    /// Delivers every wish that is due. `Err` means the connection is lost.
    async fn deliver_due(&mut self, proxy: &NotificationsProxy<'static>) -> Result<(), String> {
        let now = Instant::now();
        let due: Vec<SessionKey> = self
            .pending
            .iter()
            .filter(|(k, d)| self.due_at(k, d, now) <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(desired) = self.pending.remove(&key) else {
                continue;
            };
            // An earlier wish in this round found the server failing: the rest wait too.
            if matches!(desired, Desired::Show(_)) && self.retry_at.is_some_and(|t| t > now) {
                self.pending.insert(key, desired);
                continue;
            }
            match desired {
                // Past the global rate: gathered into the summary instead of a popup.
                Desired::Show(show) if !self.burst.allows(now) => self.burst.gather(key, &show),
                Desired::Show(show) => self.show(proxy, key, show).await?,
                Desired::Close => {
                    self.burst.release(&key);
                    self.close(proxy, &key).await?;
                }
                Desired::Forget => {
                    self.burst.release(&key);
                    self.close(proxy, &key).await?;
                    self.last_popup.remove(&key);
                }
            }
        }
        if self.retry_at.is_none_or(|t| t <= now) {
            self.update_summary(proxy, now).await?;
        }
        Ok(())
    }

    /// Shows, replaces or closes the summary notification when it is due.
    async fn update_summary(
        &mut self,
        proxy: &NotificationsProxy<'static>,
        now: Instant,
    ) -> Result<(), String> {
        let markup = self.caps.is_some_and(|c| c.markup);
        match self.burst.update(now, markup) {
            None => Ok(()),
            Some(SummaryUpdate::Close) => {
                if let Some(id) = self.burst.summary_id {
                    match proxy.close_notification(id).await {
                        Err(e) if connection_lost(&e) => return Err(e.to_string()),
                        Err(e) => debug!(error = %e, id, "closing the summary failed"),
                        Ok(()) => {}
                    }
                }
                self.burst.updated(now, None);
                Ok(())
            }
            Some(SummaryUpdate::Show(text)) => {
                let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
                hints.insert("urgency", Variant::U8(1));
                hints.insert("category", Variant::from("x-atm.summary"));
                if let Some(entry) = &self.config.desktop_entry {
                    hints.insert("desktop-entry", Variant::from(entry.as_str()));
                }
                let notification = Notification {
                    app_name: &self.config.app_name,
                    replaces: self.burst.summary_id.unwrap_or(0),
                    summary: &text.summary,
                    body: &text.body,
                    actions: &[],
                    hints,
                };
                match server::notify(proxy, notification).await {
                    Ok((id, _)) => {
                        debug!(id, summary = %text.summary, "summary notification");
                        self.burst.updated(now, Some(id));
                        Ok(())
                    }
                    Err(e) if connection_lost(&e) => Err(e.to_string()),
                    Err(e) => {
                        debug!(error = %e, "the summary notification failed; retried later");
                        self.retry_at = Some(now + self.server_backoff.next());
                        Ok(())
                    }
                }
            }
        }
    }

    async fn show(
        &mut self,
        proxy: &NotificationsProxy<'static>,
        key: SessionKey,
        show: Box<Show>,
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
            Err(e) => return self.server_failed(key, show, "GetCapabilities", e),
        };
        let location = match &pane {
            Some(p) => self.tmux.location(p).await,
            None => None,
        };
        let text = content::render(&show, location.as_deref(), caps.markup);
        let actions: &[&str] = if caps.actions && self.focus.can_focus(&show.session) {
            &["default", "Focus", "focus", "Focus"]
        } else {
            &[]
        };
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
        let notification = Notification {
            app_name: &self.config.app_name,
            replaces,
            summary: &text.summary,
            body: &text.body,
            actions,
            hints,
        };
        match server::notify(proxy, notification).await {
            Ok((id, owner)) => {
                self.server_ok();
                debug!(id, session = %show.session.id, kind = ?show.kind, "notified");
                let now = Instant::now();
                self.last_popup.insert(key.clone(), now);
                self.burst.popped(now);
                self.burst.release(&key);
                let shown = Shown {
                    id,
                    session: show.session,
                    owner,
                };
                self.on_screen.record(key, replaces, shown);
                Ok(())
            }
            Err(e) => self.server_failed(key, show, "Notify", e),
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
        call: &str,
        e: zbus::Error,
    ) -> Result<(), String> {
        if connection_lost(&e) {
            self.pending.entry(key).or_insert(Desired::Show(show));
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
        self.pending.entry(key).or_insert(Desired::Show(show));
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

    /// `default` or `focus` on one of our notifications: take the user to the session.
    fn on_action(&self, id: u32, action: &str) {
        if action != "default" && action != "focus" {
            return;
        }
        if let Some((key, notified)) = self.on_screen.clicked(id) {
            self.focus.start(key, notified);
        }
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
    use std::time::Duration;

    #[tokio::test]
    async fn a_popup_waits_for_the_rate_limit_and_a_failing_server_but_closes_never_wait() {
        use atm_core::chrono::Utc;
        use atm_core::{Harness, Session, SessionId};
        let config = NotifyConfig {
            rate_limit: Duration::from_secs(10),
            ..NotifyConfig::default()
        };
        let mut d = Deliverer::new(
            Arc::new(config),
            Arc::default(),
            Tmux::new(crate::tmux::TmuxSocket::Default),
        );
        let key = SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new("s"),
        };
        let session = Session::new(key.clone(), SessionId::new("s"), None, "t", Utc::now());
        let show = Desired::Show(Box::new(Show {
            kind: crate::plan::Kind::Permission,
            session: Arc::new(session),
            turn: None,
        }));
        let now = Instant::now();
        assert_eq!(d.due_at(&key, &show, now), now);
        d.last_popup.insert(key.clone(), now);
        assert_eq!(d.due_at(&key, &show, now), now + Duration::from_secs(10));
        assert_eq!(d.due_at(&key, &Desired::Close, now), now);
        d.retry_at = Some(now + Duration::from_secs(30));
        assert_eq!(d.due_at(&key, &show, now), now + Duration::from_secs(30));
        assert_eq!(d.due_at(&key, &Desired::Forget, now), now);
        // What is due now is due when checked a moment later (no busy loop).
        d.pending.insert(key.clone(), Desired::Close);
        let next = d.next_due().unwrap();
        assert!(d.due_at(&key, &Desired::Close, Instant::now()) >= next);
    }
}
