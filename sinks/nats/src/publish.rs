//! The task between the sink's queue and NATS: puts and deletes session keys, beats, and
//! republishes everything whenever it cannot be sure the bucket has what this host has (the
//! first connect, every reconnect, a failed write, a queue overflow).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use atm_core::coalesce::SharedQueue;
use atm_core::fleet::{
    ENTRY_VERSION, HostEntry, Opened, SessionEntry, host_key, host_keys, published, session_kv_key,
};
use atm_core::tokio_util::sync::CancellationToken;
use atm_core::{HostId, RegistryHandle, Session, SessionChange, SessionEvent, SessionKey};
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::NatsSinkConfig;

/// Writes in flight at once during a full republish.
const PARALLEL_WRITES: usize = 32;
/// Wait between tries while NATS does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// Why a write failed.
#[derive(Debug)]
struct WriteError(String);

pub(crate) struct Publisher {
    store: Store,
    client: async_nats::Client,
    registry: RegistryHandle,
    host: HostId,
    cfg: Arc<NatsSinkConfig>,
    queue: Arc<SharedQueue<SessionKey, SessionEvent>>,
    connects: watch::Receiver<u64>,
    /// The registry `seq` the bucket reflects; `None` until a full republish succeeded.
    synced: Option<u64>,
    /// Keys of sessions this run published and did not delete.
    live: HashSet<String>,
    /// A write failed and has not succeeded since (logged once per outage).
    failing: bool,
}

impl Publisher {
    pub(crate) fn new(
        nats: Opened,
        registry: RegistryHandle,
        host: HostId,
        cfg: Arc<NatsSinkConfig>,
        queue: Arc<SharedQueue<SessionKey, SessionEvent>>,
    ) -> Self {
        let Opened {
            client,
            mut connects,
            store,
        } = nats;
        connects.borrow_and_update();
        Self {
            store,
            client,
            registry,
            host,
            cfg,
            queue,
            connects,
            synced: None,
            live: HashSet::new(),
            failing: false,
        }
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut beat = tokio::time::interval(self.cfg.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.synced.is_none() {
                match self.republish().await {
                    Ok(()) => {}
                    Err(e) => {
                        self.failed(&e);
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            _ = self.connects.changed() => {}
                            () = tokio::time::sleep(RETRY) => {}
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                changed = self.connects.changed() => {
                    if changed.is_ok() {
                        debug!("nats: reconnected; publishing everything again");
                        self.synced = None;
                    }
                    continue;
                }
                () = self.queue.ready() => {}
                _ = beat.tick() => {
                    if let Err(e) = self.beat().await {
                        self.failed(&e);
                        self.synced = None;
                    }
                    continue;
                }
            }
            let batch = self.queue.take();
            if batch.resync {
                self.synced = None;
            } else if let Some(synced) = self.synced {
                for change in batch.entries {
                    if change.seq <= synced {
                        continue;
                    }
                    if let Err(e) = self.publish(&change).await {
                        self.failed(&e);
                        self.synced = None;
                        break;
                    }
                }
            }
            if batch.closed || cancel.is_cancelled() {
                return;
            }
        }
    }

    fn failed(&mut self, e: &WriteError) {
        if self.failing {
            debug!(error = e.0, "nats: still cannot write");
        } else {
            warn!(
                error = e.0,
                "nats: cannot write to the bucket; this host's sessions are published again once NATS answers"
            );
            self.failing = true;
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            info!("nats: writing again; the bucket has this host's sessions");
            self.failing = false;
        }
    }

    fn entry(&self, s: &Session) -> Result<bytes::Bytes, WriteError> {
        let entry = SessionEntry {
            v: ENTRY_VERSION,
            host: self.host.clone(),
            session: published(s, self.cfg.include_text),
        };
        serde_json::to_vec(&entry)
            .map(Into::into)
            .map_err(|e| WriteError(format!("cannot encode session {}: {e}", s.id)))
    }

    async fn put(&self, key: String, value: bytes::Bytes) -> Result<(), WriteError> {
        self.store
            .put(&key, value)
            .await
            .map(|_| ())
            .map_err(|e| WriteError(format!("put {key}: {e}")))
    }

    async fn delete(&self, key: &str) -> Result<(), WriteError> {
        self.store
            .delete(key)
            .await
            .map_err(|e| WriteError(format!("delete {key}: {e}")))
    }

    async fn publish(&mut self, change: &SessionEvent) -> Result<(), WriteError> {
        let key = session_kv_key(&self.host, &change.session.key);
        match change.change {
            SessionChange::Removed { .. } => {
                self.delete(&key).await?;
                self.live.remove(&key);
            }
            SessionChange::Added | SessionChange::Updated => {
                let value = self.entry(&change.session)?;
                self.put(key.clone(), value).await?;
                self.live.insert(key);
            }
        }
        self.recovered();
        Ok(())
    }

    async fn beat(&mut self) -> Result<(), WriteError> {
        let entry = HostEntry {
            v: ENTRY_VERSION,
            host: self.host.clone(),
            heartbeat_ms: u64::try_from(self.cfg.heartbeat.as_millis()).unwrap_or(u64::MAX),
            sessions: self.live.len(),
            at: chrono_now(),
        };
        let value = serde_json::to_vec(&entry)
            .map_err(|e| WriteError(format!("cannot encode the heartbeat: {e}")))?;
        self.put(host_key(&self.host), value.into()).await?;
        self.recovered();
        Ok(())
    }

    /// Publishes every session of a fresh snapshot, deletes the keys of this host that no
    /// session holds any more, and beats.
    async fn republish(&mut self) -> Result<(), WriteError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(WriteError("not connected".to_owned()));
        }
        let snapshot = self
            .registry
            .snapshot()
            .await
            .map_err(|e| WriteError(e.to_string()))?;
        let mut stale = host_keys(
            &self.store,
            &self.client,
            &self.host,
            self.cfg.connection.request_timeout,
        )
        .await
        .map_err(|e| WriteError(e.to_string()))?;
        stale.extend(self.live.drain());
        stale.remove(&host_key(&self.host));
        let mut writes = Vec::new();
        for s in snapshot.sessions.iter().filter(|s| !s.is_remote()) {
            let key = session_kv_key(&self.host, &s.key);
            stale.remove(&key);
            writes.push((key, self.entry(s)?));
        }
        let keys: Vec<String> = writes.iter().map(|(k, _)| k.clone()).collect();
        let results: Vec<Result<(), WriteError>> = futures_util::stream::iter(writes)
            .map(|(k, v)| self.put(k, v))
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        for key in &stale {
            self.delete(key).await?;
        }
        self.live = keys.into_iter().collect();
        self.synced = Some(snapshot.seq);
        self.beat().await?;
        info!(
            sessions = self.live.len(),
            removed = stale.len(),
            "nats: published this host's sessions"
        );
        Ok(())
    }
}

fn chrono_now() -> atm_core::chrono::DateTime<atm_core::chrono::Utc> {
    atm_core::chrono::Utc::now()
}
