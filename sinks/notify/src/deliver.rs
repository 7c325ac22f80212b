//! The deliverer: the one task that owns the D-Bus connection and speaks
//! `org.freedesktop.Notifications`.
//!
//! One long-lived connection, because servers (dunst, GNOME Shell, ...) send `ActionInvoked`
//! and `NotificationClosed` only to the connection that created the notification. The task
//! keeps, per session, the notification it shows (so a new state *replaces* it and `working`
//! closes it) and the wish it has not delivered yet (rate limit, absent server).
//!
//! Failure policy, so that nothing here is ever fatal or blocks other sinks:
//! - no bus: one log line, then reconnect with backoff (1 s doubling to 60 s);
//! - no server, or a server that errors or times out: one log line per outage, the wish is kept
//!   and retried with backoff, and at once when a server takes the name;
//! - a lost connection: reconnect; notifications of the old connection are forgotten;
//! - the name changes hands (a server restarts, or is started by D-Bus activation): only the
//!   notifications the new owner answered for are kept (see `Shown::owner`). Server signals are
//!   handled before new wishes, so no wish goes out with an id of a server that is gone.
//!
//! Rate limit: a session's next popup waits until `rate_limit` after its last one; if the
//! session moves on meanwhile, the newer wish replaces the waiting one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use atm_core::{RegistryHandle, Session, SessionKey};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zbus::Variant;
use zbus::connection::Builder;
use zbus::proxy::CacheProperties;

use crate::config::NotifyConfig;
use crate::content;
use crate::plan::{Desired, Show};
use crate::queue::DesiredQueue;
use crate::tmux::Tmux;

/// The longest a D-Bus call may take before the server counts as failing.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a custom focus command may run.
const FOCUS_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many focus actions run at once; more clicks meanwhile are ignored.
const FOCUS_SLOTS: usize = 4;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    // `Notify` is called through `Proxy::call_method`: its reply's sender tells which server
    // instance holds the notification (see `Shown::owner`).

    fn close_notification(&self, id: u32) -> zbus::Result<()>;

    fn get_capabilities(&self) -> zbus::Result<Vec<String>>;

    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    fn notification_closed(&self, id: u32, reason: u32) -> zbus::Result<()>;
}

/// Doubling delays between `BACKOFF_MIN` and `BACKOFF_MAX`.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        now
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// What the server can do, from `GetCapabilities`.
#[derive(Debug, Clone, Copy)]
struct Caps {
    actions: bool,
    markup: bool,
}

/// A notification on screen.
struct Shown {
    id: u32,
    session: Arc<Session>,
    /// The unique bus name of the server that answered. When the name changes hands, only
    /// notifications held by the new owner survive: a server started by D-Bus activation for
    /// our very first `Notify` takes the name *before* it answers, and that notification must
    /// not be forgotten.
    owner: Option<String>,
}

/// The connection and the streams that must live as long as it.
struct Bus {
    proxy: NotificationsProxy<'static>,
    actions: ActionInvokedStream,
    closed: NotificationClosedStream,
    owners: zbus::proxy::OwnerChangedStream<'static>,
}

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

/// A zbus error seen from here: the server's fault, or the connection's.
fn connection_lost(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::InputOutput(io) if io.kind() != std::io::ErrorKind::TimedOut)
}

pub struct Deliverer {
    config: Arc<NotifyConfig>,
    /// Where the focus action looks up the session's current pane.
    registry: Option<RegistryHandle>,
    queue: Arc<DesiredQueue>,
    tmux: Tmux,
    focus_slots: Arc<Semaphore>,
    /// Wishes not delivered yet, one per session.
    pending: HashMap<SessionKey, Desired>,
    shown: HashMap<SessionKey, Shown>,
    by_id: HashMap<u32, SessionKey>,
    /// When each session last popped up (for the rate limit); dropped with the session.
    last_popup: HashMap<SessionKey, Instant>,
    caps: Option<Caps>,
    /// Set while the server is failing: when to try again.
    retry_at: Option<Instant>,
    server_backoff: Backoff,
    server_down: bool,
}

impl Deliverer {
    pub fn new(config: Arc<NotifyConfig>, queue: Arc<DesiredQueue>, tmux: Tmux) -> Self {
        Self {
            config,
            registry: None,
            queue,
            tmux,
            focus_slots: Arc::new(Semaphore::new(FOCUS_SLOTS)),
            pending: HashMap::new(),
            shown: HashMap::new(),
            by_id: HashMap::new(),
            last_popup: HashMap::new(),
            caps: None,
            retry_at: None,
            server_backoff: Backoff::new(),
            server_down: false,
        }
    }

    /// Lets the focus action use the session as it is at the click, not as it was notified.
    pub fn with_registry(mut self, registry: RegistryHandle) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Connects (and reconnects) until cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut outage_logged = false;
        loop {
            let connected = tokio::select! {
                () = cancel.cancelled() => return,
                c = self.connect() => c,
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
                            warn!(reason = %why, "lost the D-Bus connection; reconnecting");
                            outage_logged = true;
                            self.forget_server();
                        }
                    }
                }
                Err(e) => {
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

    async fn connect(&self) -> zbus::Result<Bus> {
        let builder = match &self.config.address {
            Some(address) => Builder::address(address.as_str()),
            None => Builder::session(),
        };
        let conn = tokio::time::timeout(CALL_TIMEOUT, builder.method_timeout(CALL_TIMEOUT).build())
            .await
            .map_err(|_| {
                zbus::Error::InputOutput(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the bus timed out",
                )))
            })??;
        // No property cache: it would introspect, which could auto-start a server just to look.
        let proxy = NotificationsProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let actions = proxy.receive_action_invoked().await?;
        let closed = proxy.receive_notification_closed().await?;
        let owners = proxy.inner().receive_owner_changed().await?;
        Ok(Bus {
            proxy,
            actions,
            closed,
            owners,
        })
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
                    if let Some(key) = self.by_id.remove(&id)
                        && self.shown.get(&key).is_some_and(|s| s.id == id)
                    {
                        self.shown.remove(&key);
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
        self.shown
            .retain(|_, s| owner.is_some() && s.owner.as_deref() == owner);
        let shown = &self.shown;
        self.by_id
            .retain(|id, key| shown.get(key).is_some_and(|s| s.id == *id));
        self.caps = None;
        self.retry_at = None;
        self.server_backoff.reset();
    }

    /// When the earliest waiting wish may go out.
    fn next_due(&self) -> Option<Instant> {
        let now = Instant::now();
        self.pending
            .iter()
            .map(|(key, d)| self.due_at(key, d, now))
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
                Desired::Show(show) => self.show(proxy, key, show).await?,
                Desired::Close => self.close(proxy, &key).await?,
                Desired::Forget => {
                    self.close(proxy, &key).await?;
                    self.last_popup.remove(&key);
                }
            }
        }
        Ok(())
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
        let actions: &[&str] = if caps.actions && self.can_focus(&show.session) {
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
        let replaces = self.shown.get(&key).map_or(0, |s| s.id);
        let body = (
            self.config.app_name.as_str(),
            replaces,
            "",
            text.summary.as_str(),
            text.body.as_str(),
            actions,
            hints,
            -1i32,
        );
        let sent = match proxy.inner().call_method("Notify", &body).await {
            Ok(reply) => reply.body().deserialize::<u32>().map(|id| {
                let owner = reply.header().sender().map(|n| n.to_string());
                (id, owner)
            }),
            Err(e) => Err(e),
        };
        match sent {
            Ok((id, owner)) => {
                self.server_ok();
                if replaces != 0 && replaces != id {
                    self.by_id.remove(&replaces);
                }
                debug!(id, session = %show.session.id, kind = ?show.kind, "notified");
                self.by_id.insert(id, key.clone());
                self.last_popup.insert(key.clone(), Instant::now());
                self.shown.insert(
                    key,
                    Shown {
                        id,
                        session: show.session,
                        owner,
                    },
                );
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
        let Some(shown) = self.shown.remove(key) else {
            return Ok(());
        };
        self.by_id.remove(&shown.id);
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
        let list = proxy.get_capabilities().await?;
        let caps = Caps {
            actions: list.iter().any(|c| c == "actions"),
            markup: list.iter().any(|c| c == "body-markup"),
        };
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

    fn can_focus(&self, s: &Session) -> bool {
        self.config.focus_command.is_some() || s.tmux_pane.is_some()
    }

    /// `default` or `focus` on one of our notifications: take the user to the session.
    fn on_action(&self, id: u32, action: &str) {
        if action != "default" && action != "focus" {
            return;
        }
        let Some((key, shown)) = self
            .by_id
            .get(&id)
            .and_then(|k| Some((k.clone(), self.shown.get(k)?)))
        else {
            return;
        };
        let Ok(permit) = self.focus_slots.clone().try_acquire_owned() else {
            debug!("focus actions busy; click ignored");
            return;
        };
        let notified = shown.session.clone();
        let registry = self.registry.clone();
        let tmux = self.tmux.clone();
        let command = self.config.focus_command.clone();
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        assert_eq!(b.next(), Duration::from_secs(1));
        assert_eq!(b.next(), Duration::from_secs(2));
        for _ in 0..20 {
            b.next();
        }
        assert_eq!(b.next(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }

    #[tokio::test]
    async fn a_popup_waits_for_the_rate_limit_and_a_failing_server_but_closes_never_wait() {
        use atm_core::chrono::Utc;
        use atm_core::{Harness, SessionId};
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

    #[tokio::test]
    async fn a_new_server_keeps_only_its_own_notifications() {
        use atm_core::chrono::Utc;
        use atm_core::{Harness, SessionId};
        let mut d = Deliverer::new(
            Arc::default(),
            Arc::default(),
            Tmux::new(crate::tmux::TmuxSocket::Default),
        );
        let key = |id: &str| SessionKey::Id {
            harness: Harness::claude(),
            id: SessionId::new(id),
        };
        for (n, owner) in [(1, ":1.7"), (2, ":1.9")] {
            let k = key(&format!("s{n}"));
            let session = Session::new(k.clone(), SessionId::new("s"), None, "t", Utc::now());
            d.by_id.insert(n, k.clone());
            d.shown.insert(
                k,
                Shown {
                    id: n,
                    session: Arc::new(session),
                    owner: Some(owner.to_owned()),
                },
            );
        }
        // An activated server took the name after answering our first call: its ids stay.
        d.server_changed(Some(":1.9"));
        assert_eq!(d.by_id.keys().copied().collect::<Vec<_>>(), [2]);
        assert!(d.shown.contains_key(&key("s2")) && !d.shown.contains_key(&key("s1")));
        // The server left: nothing it showed can be closed or clicked any more.
        d.server_changed(None);
        assert!(d.shown.is_empty() && d.by_id.is_empty());
    }

    #[test]
    fn only_io_errors_other_than_timeouts_mean_a_lost_connection() {
        let io = |k| zbus::Error::InputOutput(Arc::new(std::io::Error::from(k)));
        assert!(connection_lost(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(!connection_lost(&io(std::io::ErrorKind::TimedOut)));
        assert!(!connection_lost(&zbus::Error::Failure("x".into())));
    }
}
