//! The connection to the notification server: the `org.freedesktop.Notifications` proxy, the
//! signal streams that must live as long as the connection, what the server can do, and how
//! failures are told apart and retried.
//!
//! One long-lived connection, because servers (dunst, GNOME Shell, ...) send `ActionInvoked`
//! and `NotificationClosed` only to the connection that created the notification.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use zbus::Variant;
use zbus::connection::Builder;
use zbus::proxy::CacheProperties;

/// The longest a D-Bus call may take before the server counts as failing.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
pub(crate) trait Notifications {
    // `Notify` is called through `Proxy::call_method` (see [`notify`]): its reply's sender tells
    // which server instance holds the notification.

    fn close_notification(&self, id: u32) -> zbus::Result<()>;

    fn get_capabilities(&self) -> zbus::Result<Vec<String>>;

    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    fn notification_closed(&self, id: u32, reason: u32) -> zbus::Result<()>;
}

/// Doubling delays between `BACKOFF_MIN` and `BACKOFF_MAX`.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(BACKOFF_MIN)
    }

    pub(crate) fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// What the server can do, from `GetCapabilities`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) actions: bool,
    pub(crate) markup: bool,
}

impl Caps {
    pub(crate) async fn fetch(proxy: &NotificationsProxy<'static>) -> zbus::Result<Caps> {
        let list = proxy.get_capabilities().await?;
        Ok(Caps {
            actions: list.iter().any(|c| c == "actions"),
            markup: list.iter().any(|c| c == "body-markup"),
        })
    }
}

/// The connection and the streams that must live as long as it.
pub(crate) struct Bus {
    pub(crate) proxy: NotificationsProxy<'static>,
    pub(crate) actions: ActionInvokedStream,
    pub(crate) closed: NotificationClosedStream,
    pub(crate) owners: zbus::proxy::OwnerChangedStream<'static>,
}

/// Connects to `address`, else the session bus, and subscribes to the server's signals.
pub(crate) async fn connect(address: Option<&str>) -> zbus::Result<Bus> {
    let builder = match address {
        Some(address) => Builder::address(address),
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

/// One `Notify` call, as the server's specification lists its arguments.
pub(crate) struct Notification<'a> {
    pub(crate) app_name: &'a str,
    pub(crate) replaces: u32,
    pub(crate) summary: &'a str,
    pub(crate) body: &'a str,
    pub(crate) actions: &'a [&'a str],
    pub(crate) hints: HashMap<&'a str, Variant<'a>>,
}

/// Sends `n`; returns its id and the unique bus name of the server that answered (which server
/// instance holds it, see `shown`).
pub(crate) async fn notify(
    proxy: &NotificationsProxy<'static>,
    n: Notification<'_>,
) -> zbus::Result<(u32, Option<String>)> {
    let body = (
        n.app_name, n.replaces, "", n.summary, n.body, n.actions, n.hints, -1i32,
    );
    let reply = proxy.inner().call_method("Notify", &body).await?;
    let id = reply.body().deserialize::<u32>()?;
    let owner = reply.header().sender().map(|n| n.to_string());
    Ok((id, owner))
}

/// A zbus error seen from here: the server's fault, or the connection's.
pub(crate) fn connection_lost(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::InputOutput(io) if io.kind() != std::io::ErrorKind::TimedOut)
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

    #[test]
    fn only_io_errors_other_than_timeouts_mean_a_lost_connection() {
        let io = |k| zbus::Error::InputOutput(Arc::new(std::io::Error::from(k)));
        assert!(connection_lost(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(!connection_lost(&io(std::io::ErrorKind::TimedOut)));
        assert!(!connection_lost(&zbus::Error::Failure("x".into())));
    }
}
