//! One D-Bus step and what its failure means: every bus operation of the sink runs with a
//! timeout ([`send`]) and fails with a [`BusError`] that names the bus and tells which outage
//! it is part of (no bus, or the name taken), so the bus task can log each outage once; and the
//! waits the bus task races against its work.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zbus::fdo::Properties;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, Variant};

/// A bus that takes longer than this to accept one message is treated as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the service is not on the bus, as logged once per outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outage {
    /// No bus, a bus that went away or stopped answering: the same outage while it lasts.
    NoBus,
    /// A bus, but someone else owns the name.
    NameTaken,
}

/// A failed D-Bus step.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach the {bus}: {source} (is a bus running? set `address` to choose one)")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error(
        "the name {name} is owned by another process on the {bus} (another atmd?); waiting for it to be released"
    )]
    NameTaken { name: String, bus: String },
    #[error("registering the D-Bus objects on the {bus} failed: {source}")]
    Register {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("the {bus} did not answer within {}s", .after.as_secs())]
    Timeout { bus: String, after: Duration },
    #[error("the {bus} went away (the connection was closed)")]
    Lost { bus: String },
    #[error("sending on the {bus} failed: {source}")]
    Send {
        bus: String,
        #[source]
        source: zbus::Error,
    },
}

impl BusError {
    pub(crate) fn outage(&self) -> Outage {
        match self {
            Self::NameTaken { .. } => Outage::NameTaken,
            Self::Connect { .. }
            | Self::Register { .. }
            | Self::Timeout { .. }
            | Self::Lost { .. }
            | Self::Send { .. } => Outage::NoBus,
        }
    }
}

/// An emitter for one of our own paths (always valid: built from escaped segments).
pub(crate) fn emitter(conn: &Connection, path: &str) -> Result<SignalEmitter<'static>, BusError> {
    SignalEmitter::new(conn, path.to_owned()).map_err(|source| BusError::Send {
        bus: format!("object path {path}"),
        source,
    })
}

/// One `PropertiesChanged` carrying exactly `changed`.
pub(crate) async fn properties_changed(
    emitter: &SignalEmitter<'_>,
    interface: &'static str,
    changed: HashMap<&str, Variant<'_>>,
) -> zbus::Result<()> {
    Properties::properties_changed(
        emitter,
        InterfaceName::from_static_str_unchecked(interface),
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}

/// Runs one bus operation with the send timeout, naming the bus in the error.
pub(crate) async fn send(
    bus: &str,
    op: impl Future<Output = zbus::Result<()>>,
) -> Result<(), BusError> {
    match tokio::time::timeout(SEND_TIMEOUT, op).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(BusError::Send {
            bus: bus.to_owned(),
            source,
        }),
        Err(_) => Err(BusError::Timeout {
            bus: bus.to_owned(),
            after: SEND_TIMEOUT,
        }),
    }
}

pub(crate) async fn until_cancelled<T>(
    cancel: &CancellationToken,
    f: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        v = f => Some(v),
    }
}

pub(crate) async fn closed(conn: Option<Connection>) {
    match conn {
        Some(c) => c.closed().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
