//! `BusTask`: owns the D-Bus connection and turns registry changes into objects and signals.
//!
//! It is the only writer of the [`Mirror`] and the only user of the connection, and it takes
//! its input from the [`ChangeQueue`], so nothing it waits on (a slow bus, a reconnect) can
//! reach the registry. Changes are applied to the mirror whether or not a bus is connected; connecting
//! publishes the whole mirror before the well-known name is requested, so a client that sees
//! the name appear finds every session already there.
//!
//! Failures (no bus, the name owned by someone else, the bus going away or not answering) end
//! the connection and schedule a new attempt with exponential backoff (`retry_initial` doubling
//! up to `retry_max`). Each outage is logged once when it starts (and again only if its cause
//! changes), and once when it ends; the attempts in between log at debug level. Every failed
//! attempt, and the last change applied, are counted in the sink's [`SinkStats`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use atm_core::coalesce::Batch;
use atm_core::registry::RegistryError;
use atm_core::{RegistryHandle, Session, SessionChange, SessionEvent, SinkStats, Snapshot};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zbus::connection::Builder;
use zbus::fdo::{ObjectManager, RequestNameFlags};
use zbus::object_server::SignalEmitter;
use zbus::{Connection, Variant};

use crate::config::{BusKind, DbusConfig};
use crate::handoff::ChangeQueue;
use crate::path::MANAGER_PATH;
use crate::props::{attention_summary, raises_attention};
use crate::requests::{RequestSignal, Sequenced};
use crate::send::{
    BusError, Outage, closed, emitter, properties_changed, send, sleep_until_opt, until_cancelled,
};
use crate::service::{
    Counts, MANAGER_INTERFACE, Manager, Published, SESSION_INTERFACE, SessionObject, SharedMirror,
};
use crate::throttle::Throttle;

/// Longest wait for connecting, authenticating and registering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A live registration: the connection and the emitter of the manager object.
struct Live {
    conn: Connection,
    manager: SignalEmitter<'static>,
}

pub struct BusTask {
    config: DbusConfig,
    registry: RegistryHandle,
    queue: Arc<ChangeQueue>,
    /// Request signals from the follower (see [`crate::requests`]), each sent once its change
    /// is applied.
    signals: mpsc::Receiver<Sequenced>,
    /// The next request signal, taken from `signals` before its change was applied.
    held: Option<Sequenced>,
    mirror: SharedMirror,
    control: atm_core::control::ControlBus,
    /// The last registry change reflected in the mirror.
    applied_seq: u64,
    live: Option<Live>,
    outage: Option<(Outage, Instant)>,
    backoff: Duration,
    next_attempt: Instant,
    /// A human name for logs: "D-Bus session bus", "D-Bus system bus" or the address.
    bus_label: String,
    send_log: Throttle,
    stats: SinkStats,
}

impl BusTask {
    pub fn new(
        config: DbusConfig,
        registry: RegistryHandle,
        control: atm_core::control::ControlBus,
        queue: Arc<ChangeQueue>,
        signals: mpsc::Receiver<Sequenced>,
        mirror: SharedMirror,
        stats: SinkStats,
    ) -> Self {
        let bus_label = match (&config.address, config.bus) {
            (Some(a), _) => format!("D-Bus bus at {a}"),
            (None, BusKind::Session) => "D-Bus session bus".to_owned(),
            (None, BusKind::System) => "D-Bus system bus".to_owned(),
        };
        Self {
            backoff: config.retry_initial,
            config,
            registry,
            queue,
            signals,
            held: None,
            mirror,
            control,
            applied_seq: 0,
            live: None,
            outage: None,
            next_attempt: Instant::now(),
            bus_label,
            send_log: Throttle::default(),
            stats,
        }
    }

    /// Publishes `initial`, then follows the queue until cancelled or the queue is closed
    /// (after applying what it held).
    pub async fn run(mut self, initial: Snapshot, cancel: CancellationToken) {
        self.resync_to(initial).await;
        let queue = self.queue.clone();
        loop {
            let conn = self.live.as_ref().map(|l| l.conn.clone());
            let retry_at = self.live.is_none().then_some(self.next_attempt);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = queue.ready() => {
                    let batch = queue.take();
                    let closed = batch.closed;
                    if until_cancelled(&cancel, self.apply(batch)).await.is_none() {
                        break;
                    }
                    if closed {
                        // The follower pushed its last signals before closing the queue.
                        let _ = until_cancelled(&cancel, self.request_signals_upto(u64::MAX)).await;
                        break;
                    }
                }
                () = closed(conn) => {
                    let err = BusError::Lost { bus: self.bus_label.clone() };
                    self.lost(&err);
                }
                () = sleep_until_opt(retry_at) => {
                    if until_cancelled(&cancel, self.connect()).await.is_none() {
                        break;
                    }
                }
            }
        }
        if let Some(live) = self.live.take() {
            debug!("leaving the {}", self.bus_label);
            drop(live);
        }
    }

    /// Sends the request signals of the changes up to `seq` (all of them with `u64::MAX`),
    /// keeping the first later one for when its change is applied.
    async fn request_signals_upto(&mut self, seq: u64) {
        loop {
            let next = match self.held.take() {
                Some(held) => Some(held),
                None => self.signals.try_recv().ok(),
            };
            match next {
                Some((at, signal)) if at <= seq => {
                    if let Err(e) = self.request_signal(&signal).await {
                        self.failed_send(&e);
                    }
                }
                Some(later) => {
                    self.held = Some(later);
                    return;
                }
                None => return,
            }
        }
    }

    async fn request_signal(&self, signal: &RequestSignal) -> Result<(), BusError> {
        // Nobody can hear a signal while no bus is connected; ListRequests has the state.
        let Some(live) = &self.live else {
            return Ok(());
        };
        let m = &live.manager;
        match signal {
            RequestSignal::Added {
                id,
                session_id,
                tool,
                detail,
            } => {
                send(
                    &self.bus_label,
                    Manager::request_added(m, id, session_id, tool, detail),
                )
                .await
            }
            RequestSignal::Resolved {
                id,
                session_id,
                fate,
                detail,
            } => {
                send(
                    &self.bus_label,
                    Manager::request_resolved(m, id, session_id, fate, detail),
                )
                .await
            }
        }
    }

    async fn apply(&mut self, batch: Batch<SessionEvent>) {
        if batch.resync {
            match self.registry.snapshot().await {
                Ok(snapshot) => self.resync_to(snapshot).await,
                Err(RegistryError::ChannelClosed) => return,
                Err(e) => warn!(error = %e, "D-Bus sink could not resynchronise"),
            }
        }
        for event in batch.entries {
            if event.seq <= self.applied_seq {
                continue;
            }
            self.applied_seq = event.seq;
            self.stats.applied(event.seq);
            let result = match event.change {
                SessionChange::Added | SessionChange::Updated => self.upsert(&event.session).await,
                SessionChange::Removed { .. } => self.remove(&event.session).await,
            };
            if let Err(e) = result {
                self.failed_send(&e);
            }
            self.request_signals_upto(event.seq).await;
        }
        // Those of changes skipped here because a resync snapshot covered them.
        self.request_signals_upto(self.applied_seq).await;
    }

    /// Makes the mirror equal to `snapshot`, with the signals a client needs to follow.
    async fn resync_to(&mut self, snapshot: Snapshot) {
        let keys: HashSet<_> = snapshot.sessions.iter().map(|s| &s.key).collect();
        let ids: HashSet<_> = snapshot
            .sessions
            .iter()
            .map(|s| (s.harness.clone(), s.id.clone()))
            .collect();
        let gone: Vec<String> = self
            .mirror
            .read()
            .iter()
            .filter(|(_, p)| {
                let kept = keys.contains(&p.key)
                    || matches!(&p.key, atm_core::SessionKey::Id { harness, id }
                        if ids.contains(&(harness.clone(), id.clone())));
                !kept
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            if let Err(e) = self.remove_path(&path).await {
                self.failed_send(&e);
            }
        }
        for s in &snapshot.sessions {
            if let Err(e) = self.upsert(s).await {
                self.failed_send(&e);
            }
        }
        self.applied_seq = self.applied_seq.max(snapshot.seq);
        self.stats.applied(self.applied_seq);
        self.request_signals_upto(self.applied_seq).await;
    }

    async fn upsert(&mut self, s: &Session) -> Result<(), BusError> {
        let new = Published::new(s);
        let (path, old, before, after) = {
            let mut m = self.mirror.write();
            let before = m.counts();
            let (path, old) = match m.find(s).map(str::to_owned) {
                Some(path) => {
                    let old = m.replace(&path, new.clone());
                    (path, old)
                }
                None => (m.insert(new.clone()), None),
            };
            (path, old, before, m.counts())
        };
        let Some(live) = &self.live else {
            return Ok(());
        };
        let bus = &self.bus_label;
        match &old {
            Some(old) => {
                let changed = old.props.changed(&new.props);
                if !changed.is_empty() {
                    let emitter = emitter(&live.conn, &path)?;
                    send(
                        bus,
                        properties_changed(&emitter, SESSION_INTERFACE, changed),
                    )
                    .await?;
                }
                if old.state != new.state {
                    send(
                        bus,
                        Manager::state_changed(
                            &live.manager,
                            &new.props.id,
                            old.state.as_str(),
                            new.state.as_str(),
                            &new.props.attention_reason,
                        ),
                    )
                    .await?;
                }
            }
            None => {
                let object = SessionObject {
                    path: path.clone(),
                    mirror: self.mirror.clone(),
                };
                // Emits InterfacesAdded from the object manager.
                send(bus, async {
                    live.conn
                        .object_server()
                        .at(path.as_str(), object)
                        .await
                        .map(|_| ())
                })
                .await?;
            }
        }
        let old_attention = old.as_ref().map(|o| (o.state, o.attention.as_ref()));
        if raises_attention(old_attention, new.state, new.attention.as_ref())
            && let Some(a) = &new.attention
        {
            let summary = attention_summary(a);
            send(
                bus,
                Manager::attention_needed(
                    &live.manager,
                    &new.props.id,
                    &new.props.attention_reason,
                    &summary,
                ),
            )
            .await?;
        }
        self.counts_changed(before, after).await
    }

    async fn remove(&mut self, s: &Session) -> Result<(), BusError> {
        let path = self.mirror.read().find(s).map(str::to_owned);
        match path {
            Some(path) => self.remove_path(&path).await,
            None => Ok(()),
        }
    }

    async fn remove_path(&mut self, path: &str) -> Result<(), BusError> {
        // Off the bus first, out of the mirror second: while the object is published its
        // getters must find it, or a GetManagedObjects in between would list it without
        // properties. Emits InterfacesRemoved from the object manager.
        let removed = match &self.live {
            Some(live) => Some(
                send(&self.bus_label, async {
                    live.conn
                        .object_server()
                        .remove::<SessionObject, _>(path)
                        .await
                        .map(|_| ())
                })
                .await,
            ),
            None => None,
        };
        let (before, after) = {
            let mut m = self.mirror.write();
            let before = m.counts();
            m.remove(path);
            (before, m.counts())
        };
        match removed {
            None => return Ok(()),
            Some(Err(BusError::Send {
                source: zbus::Error::InterfaceNotFound,
                ..
            })) => debug!(path, "session object was not registered"),
            Some(other) => other?,
        }
        self.counts_changed(before, after).await
    }

    async fn counts_changed(&self, before: Counts, after: Counts) -> Result<(), BusError> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        let mut changed = HashMap::new();
        if before.sessions != after.sessions {
            changed.insert("SessionCount", Variant::from(after.sessions));
        }
        if before.attention != after.attention {
            changed.insert("AttentionCount", Variant::from(after.attention));
        }
        if changed.is_empty() {
            return Ok(());
        }
        send(
            &self.bus_label,
            properties_changed(&live.manager, MANAGER_INTERFACE, changed),
        )
        .await
    }

    /// One connection attempt; on failure, schedules the next one.
    async fn connect(&mut self) {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.register()).await {
            Ok(Ok(live)) => {
                let sessions = self.mirror.read().counts().sessions;
                match self.outage.take() {
                    Some((_, since)) => info!(
                        name = %self.config.service_name,
                        sessions,
                        after_secs = since.elapsed().as_secs(),
                        "D-Bus service back on the {}", self.bus_label
                    ),
                    None => info!(
                        name = %self.config.service_name,
                        sessions,
                        "D-Bus service registered on the {}", self.bus_label
                    ),
                }
                self.live = Some(live);
                self.backoff = self.config.retry_initial;
            }
            Ok(Err(e)) => self.failed(&e),
            Err(_) => self.failed(&BusError::Timeout {
                bus: self.bus_label.clone(),
                after: CONNECT_TIMEOUT,
            }),
        }
    }

    /// Connects, serves the manager and every mirrored session, then takes the name.
    async fn register(&self) -> Result<Live, BusError> {
        let bus = self.bus_label.clone();
        let builder = match (&self.config.address, self.config.bus) {
            (Some(address), _) => Builder::address(address.as_str()),
            (None, BusKind::Session) => Builder::session(),
            (None, BusKind::System) => Builder::system(),
        };
        let manager = Manager {
            mirror: self.mirror.clone(),
            control: self.control.clone(),
            registry: self.registry.clone(),
            uid: atm_core::paths::uid(),
        };
        let conn = builder
            .serve_at(MANAGER_PATH, manager)
            .build()
            .await
            .map_err(|source| BusError::Connect {
                bus: bus.clone(),
                source,
            })?;
        let register = |source| BusError::Register {
            bus: bus.clone(),
            source,
        };
        let server = conn.object_server();
        let paths: Vec<String> = self.mirror.read().iter().map(|(p, _)| p.clone()).collect();
        for path in paths {
            let object = SessionObject {
                path: path.clone(),
                mirror: self.mirror.clone(),
            };
            server.at(path.as_str(), object).await.map_err(register)?;
        }
        server
            .at(MANAGER_PATH, ObjectManager)
            .await
            .map_err(register)?;
        match conn
            .request_name_with_flags(
                self.config.service_name.as_str(),
                RequestNameFlags::DO_NOT_QUEUE,
            )
            .await
        {
            Ok(_) => {}
            Err(zbus::Error::NameTaken) => {
                return Err(BusError::NameTaken {
                    name: self.config.service_name.clone(),
                    bus,
                });
            }
            Err(source) => return Err(register(source)),
        }
        let manager = emitter(&conn, MANAGER_PATH)?;
        Ok(Live { conn, manager })
    }

    /// A send failed: a closed or silent bus ends the connection; anything else is one
    /// message lost, logged, and the service goes on.
    fn failed_send(&mut self, err: &BusError) {
        let broken = matches!(err, BusError::Timeout { .. })
            || self.live.as_ref().is_none_or(|l| l.conn.is_closed());
        if broken {
            self.lost(err);
        } else {
            match self.send_log.allow() {
                Some(earlier) => {
                    warn!(error = %err, earlier_failures = earlier, "D-Bus sink could not publish a change")
                }
                None => debug!(error = %err, "D-Bus sink could not publish a change"),
            }
        }
    }

    /// The connection broke while in use.
    fn lost(&mut self, err: &BusError) {
        if self.live.take().is_none() {
            return;
        }
        self.backoff = self.config.retry_initial;
        self.failed(err);
    }

    /// Logs an outage once (and again only if its cause changes) and schedules a retry.
    fn failed(&mut self, err: &BusError) {
        self.stats.failed();
        let kind = err.outage();
        let retry_in = self.backoff;
        match self.outage {
            Some((k, _)) if k == kind => {
                debug!(error = %err, retry_in_ms = retry_in.as_millis() as u64, "D-Bus still unavailable");
            }
            Some((_, since)) => {
                warn!(error = %err, "D-Bus service still unavailable; retrying with backoff while the sink keeps tracking sessions");
                self.outage = Some((kind, since));
            }
            None => {
                warn!(error = %err, "D-Bus service unavailable; retrying with backoff while the sink keeps tracking sessions");
                self.outage = Some((kind, Instant::now()));
            }
        }
        self.next_attempt = atm_core::plugin::duration::deadline_after(Instant::now(), retry_in);
        self.backoff = (self.backoff * 2).min(self.config.retry_max);
    }
}
