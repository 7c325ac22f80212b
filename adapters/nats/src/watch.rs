//! Watching the bucket: every current value, then every change, turned into what the registry
//! is told ([`atm_core::registry::Mirror`]), and the clock that judges hosts by their silence.
//!
//! Memory is bounded by the bucket: one entry per key seen (its session key, for the delete
//! that carries none) and one per host. A value that cannot be read is refused with one log
//! line at warn per key and outage (repeats at debug) and changes nothing else. When the watch
//! ends (the server went away for longer than its consumer lives) a new one starts; once it has
//! delivered every current value, the sessions that the old one knew and the new one does not
//! are removed, so deletes missed meanwhile are not missed for good.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation, Store};
use atm_core::fleet::{KeyKind, decode_host, decode_session, parse_key};
use atm_core::plugin::{AdapterContext, PluginError};
use atm_core::registry::Mirror as Said;
use atm_core::{HostId, RegistryError, RegistryHandle, SessionKey};
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::NatsAdapterConfig;

/// Wait before watching again after the watch failed.
const RETRY: Duration = Duration::from_millis(500);

struct HostState {
    last_seen: Instant,
    stale: bool,
}

pub(crate) struct Mirror {
    registry: RegistryHandle,
    own: HostId,
    stale_after: Duration,
    remove_after: Duration,
    /// Every session key mirrored, by its key in the bucket.
    known: HashMap<String, (HostId, SessionKey)>,
    hosts: HashMap<HostId, HostState>,
    /// Keys whose bad value was reported at warn (until a good value comes).
    warned: HashSet<String>,
    /// Values refused, for tests and logs.
    pub refused: u64,
}

impl Mirror {
    pub(crate) fn new(registry: RegistryHandle, own: HostId, cfg: &NatsAdapterConfig) -> Self {
        Self {
            registry,
            own,
            stale_after: cfg.stale_after,
            remove_after: cfg.remove_after,
            known: HashMap::new(),
            hosts: HashMap::new(),
            warned: HashSet::new(),
            refused: 0,
        }
    }

    /// Mirrors the bucket until cancelled. `connects` changes at every (re)connect of the
    /// client: the watch is then made anew at once, since its consumer may have lived on the
    /// server that went away (found otherwise only by missed idle heartbeats, seconds later).
    pub(crate) async fn run(
        mut self,
        store: Store,
        mut connects: tokio::sync::watch::Receiver<u64>,
        ctx: &AdapterContext,
    ) -> Result<(), PluginError> {
        let mut tick = tokio::time::interval((self.stale_after / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ready = false;
        let mut counting = true;
        loop {
            connects.borrow_and_update();
            let watch = tokio::select! {
                () = ctx.cancel.cancelled() => return Ok(()),
                w = store.watch_with_history(">") => w,
            };
            let mut watch = match watch {
                Ok(w) => w,
                Err(e) => {
                    debug!(error = %e, "nats: cannot watch the bucket; trying again");
                    tokio::select! {
                        () = ctx.cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(RETRY) => continue,
                    }
                }
            };
            if !ready {
                ctx.mark_ready();
                ready = true;
            }
            // Keys this watch delivered among its current values.
            let mut current: Option<HashSet<String>> = Some(HashSet::new());
            loop {
                let next = tokio::select! {
                    () = ctx.cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => {
                        self.judge_hosts().await?;
                        continue;
                    }
                    n = watch.next() => n,
                    changed = connects.changed(), if counting => {
                        if changed.is_err() {
                            // No more counts: the watch alone says when it fails.
                            counting = false;
                            continue;
                        }
                        debug!("nats: reconnected; watching again");
                        break;
                    }
                };
                match next {
                    Some(Ok(entry)) => {
                        if let Some(seen) = current.as_mut() {
                            seen.insert(entry.key.clone());
                        }
                        let caught_up = entry.seen_current || entry.delta == 0;
                        self.heard(entry).await?;
                        if caught_up && let Some(seen) = current.take() {
                            self.forget_unseen(&seen).await?;
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "nats: the watch failed; watching again");
                        break;
                    }
                    None => {
                        info!("nats: the watch ended; watching again");
                        break;
                    }
                }
            }
            tokio::select! {
                () = ctx.cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn tell(&self, said: Said) -> Result<(), PluginError> {
        match self.registry.mirror(said).await {
            Ok(_) => Ok(()),
            Err(RegistryError::ChannelClosed) => {
                Err(PluginError::Other("the registry stopped".to_owned()))
            }
            Err(e) => {
                debug!(error = %e, "nats: the registry refused a mirrored session");
                Ok(())
            }
        }
    }

    fn refuse(&mut self, key: &str, why: &str) {
        self.refused += 1;
        if self.warned.insert(key.to_owned()) {
            warn!(
                key,
                why, "nats: a value in the bucket was refused (the watch goes on)"
            );
        } else {
            debug!(key, why, "nats: a value in the bucket was refused again");
        }
    }

    /// How long ago the server stored `entry`.
    fn age(entry: &Entry) -> Duration {
        (atm_core::chrono::Utc::now() - entry.created)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// `host` spoke `age` ago: fresh again if it was stale.
    async fn alive(&mut self, host: &HostId, age: Duration) -> Result<(), PluginError> {
        let now = Instant::now();
        let seen = now.checked_sub(age).unwrap_or(now);
        let state = self.hosts.entry(host.clone()).or_insert(HostState {
            last_seen: seen,
            stale: false,
        });
        if seen > state.last_seen {
            state.last_seen = seen;
        }
        let fresh = now.duration_since(state.last_seen) < self.stale_after;
        if state.stale && fresh {
            state.stale = false;
            info!(%host, "nats: host heard again");
            self.tell(Said::Stale {
                host: host.clone(),
                stale: false,
            })
            .await?;
        }
        Ok(())
    }

    async fn heard(&mut self, entry: Entry) -> Result<(), PluginError> {
        let key = entry.key.clone();
        let Some(kind) = parse_key(&key) else {
            self.refuse(
                &key,
                "not a key of atm's layout (<host>.host or <host>.s.<session>)",
            );
            return Ok(());
        };
        let (KeyKind::Host(host) | KeyKind::Session(host)) = &kind;
        if *host == self.own {
            return Ok(()); // This daemon's own entries: never mirrored.
        }
        let host = host.clone();
        let age = Self::age(&entry);
        match (entry.operation, kind) {
            (Operation::Delete | Operation::Purge, KeyKind::Session(_)) => {
                self.warned.remove(&key);
                self.forget(&key).await?;
            }
            (Operation::Delete | Operation::Purge, KeyKind::Host(_)) => {
                self.host_gone(&host, "its host left the fleet").await?;
            }
            (Operation::Put, KeyKind::Host(_)) => match decode_host(&host, &entry.value) {
                Ok(_) => {
                    self.warned.remove(&key);
                    self.alive(&host, age).await?;
                }
                Err(e) => self.refuse(&key, &e.to_string()),
            },
            (Operation::Put, KeyKind::Session(_)) => {
                let e = match decode_session(&host, &entry.value) {
                    Ok(e) => e,
                    Err(e) => {
                        self.refuse(&key, &e.to_string());
                        return Ok(());
                    }
                };
                self.warned.remove(&key);
                if age >= self.remove_after {
                    return Ok(()); // Left behind by a host long gone.
                }
                self.alive(&host, age).await?;
                let session_key = e.session.key.clone();
                self.known.insert(key, (host.clone(), session_key));
                self.tell(Said::Session {
                    host,
                    session: Box::new(e.session),
                })
                .await?;
            }
        }
        Ok(())
    }

    /// A new watch delivered all its current values (`seen`): what the old one knew and this
    /// one did not was deleted meanwhile.
    async fn forget_unseen(&mut self, seen: &HashSet<String>) -> Result<(), PluginError> {
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.forget(&k).await?;
        }
        Ok(())
    }

    /// The session under bucket key `kv_key` ended on its host (if it was known).
    async fn forget(&mut self, kv_key: &str) -> Result<(), PluginError> {
        if let Some((host, key)) = self.known.remove(kv_key) {
            self.tell(Said::Gone {
                host,
                key,
                reason: "ended on its host".to_owned(),
            })
            .await?;
        }
        Ok(())
    }

    async fn host_gone(&mut self, host: &HostId, reason: &str) -> Result<(), PluginError> {
        self.hosts.remove(host);
        self.known.retain(|_, (h, _)| h != host);
        self.tell(Said::HostGone {
            host: host.clone(),
            reason: reason.to_owned(),
        })
        .await
    }

    /// Marks hosts silent for `stale_after` stale and removes those silent for `remove_after`.
    async fn judge_hosts(&mut self) -> Result<(), PluginError> {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut stale = Vec::new();
        for (host, state) in &mut self.hosts {
            let silent = now.duration_since(state.last_seen);
            if silent >= self.remove_after {
                gone.push((host.clone(), silent));
            } else if silent >= self.stale_after && !state.stale {
                state.stale = true;
                stale.push((host.clone(), silent));
            }
        }
        for (host, silent) in stale {
            info!(%host, silent = ?silent, "nats: host not heard; its sessions are stale");
            self.tell(Said::Stale { host, stale: true }).await?;
        }
        for (host, silent) in gone {
            info!(%host, silent = ?silent, "nats: host not heard for too long; its sessions are removed");
            self.host_gone(
                &host,
                &format!("host {host} not heard for {}s", silent.as_secs()),
            )
            .await?;
        }
        Ok(())
    }
}
