//! `nats`: the hub side of a fleet. Watches the JetStream key-value bucket that the `nats`
//! sinks of other hosts write, and mirrors their sessions into this daemon's registry with
//! their host, so every local sink (atmctl, the socket, D-Bus, notifications) shows the fleet.
//!
//! The adapter says what it heard, never what a session's state is: each session's own host
//! decided it, and the registry takes it as given ([`atm_core::registry::Mirror`]). Entries of
//! this daemon's own host are ignored (no loops). A host whose heartbeat (or any write) is not
//! seen for `stale_after` has its sessions shown as stale; after `remove_after` they are
//! removed. Ages come from the server's timestamps on the values, so a hub that starts late
//! does not show a host that died hours ago as fresh.
//!
//! A value that is oversized, not UTF-8, not an entry, of another version or naming another
//! host than its key is refused with one log line naming the key, and the watch goes on
//! ([`watch`]). Decisions for a mirrored session's request are carried to its host by NATS
//! request/reply ([`decide`]).

mod decide;
mod watch;

use std::time::Duration;

use atm_core::fleet::{self, BucketCreation, NatsConnection};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use serde::Deserialize;
use tracing::info;

atm_core::register_plugin! {
    adapter "nats",
    description: "The hub of a fleet: mirrors other hosts' sessions from a NATS JetStream key-value bucket and carries answers to them",
    sample_config: include_str!("../sample.toml"),
    optional: true,
    factory: |cfg| Ok(Box::new(NatsAdapter::new(NatsAdapterConfig::from_toml(cfg)?))),
}

/// The adapter's own keys (beside [`NatsConnection`]'s and [`BucketCreation`]'s).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OwnKeys {
    #[serde(with = "atm_core::duration")]
    stale_after: Duration,
    #[serde(with = "atm_core::duration")]
    remove_after: Duration,
    #[serde(with = "atm_core::duration")]
    decide_timeout: Duration,
}

impl Default for OwnKeys {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(30),
            remove_after: Duration::from_secs(600),
            decide_timeout: Duration::from_secs(5),
        }
    }
}

/// `[[adapter]] type = "nats"`.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsAdapterConfig {
    pub connection: NatsConnection,
    /// A host not heard this long shows its sessions as stale (default 30 s).
    pub stale_after: Duration,
    /// A host not heard this long has its sessions removed (default 10 min).
    pub remove_after: Duration,
    /// How long an answer waits for its host's confirmation (default 5 s).
    pub decide_timeout: Duration,
    pub bucket_creation: BucketCreation,
}

impl NatsAdapterConfig {
    pub fn from_toml(value: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        let (connection, own) = NatsConnection::split(value)?;
        let (bucket_creation, own) = BucketCreation::split(&own)?;
        let own: OwnKeys = atm_core::plugin::parse_config(&own)?;
        let range = |key: &str, d: Duration, min: Duration, max: Duration| {
            atm_core::duration::check_range(d, min, max)
                .map(|_| ())
                .map_err(|m| ConfigError::for_key(key, m))
        };
        let (ms, day) = (Duration::from_millis(100), Duration::from_secs(86_400));
        range("stale_after", own.stale_after, ms, day)?;
        range("remove_after", own.remove_after, ms, day * 30)?;
        range(
            "decide_timeout",
            own.decide_timeout,
            ms,
            Duration::from_secs(120),
        )?;
        if own.remove_after <= own.stale_after {
            return Err(ConfigError::for_key(
                "remove_after",
                "must be longer than `stale_after` (sessions are shown stale first)",
            ));
        }
        Ok(Self {
            connection,
            stale_after: own.stale_after,
            remove_after: own.remove_after,
            decide_timeout: own.decide_timeout,
            bucket_creation,
        })
    }
}

/// The `nats` adapter.
pub struct NatsAdapter {
    config: NatsAdapterConfig,
}

impl NatsAdapter {
    pub fn new(config: NatsAdapterConfig) -> Self {
        Self { config }
    }
}

#[atm_core::async_trait]
impl InputAdapter for NatsAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let cfg = self.config;
        let host = ctx.registry.host().clone();
        let client_name = format!("atm hub {host}");
        let opened = fleet::connect_and_open(
            &cfg.connection,
            &cfg.bucket_creation,
            &client_name,
            &ctx.cancel,
        );
        let Some(nats) = opened.await? else {
            return Ok(());
        };
        let decisions = ctx
            .registry
            .link_remote()
            .await
            .map_err(|e| PluginError::Other(format!("cannot link to the registry: {e}")))?;
        let forwarder = decide::Forwarder {
            client: nats.client,
            prefix: cfg.connection.subject_prefix.clone(),
            from: host.clone(),
            timeout: cfg.decide_timeout,
        };
        ctx.spawn(forwarder.run(decisions, ctx.cancel.clone()));
        info!(adapter = ctx.name, %host, bucket = cfg.connection.bucket, "nats: mirroring the fleet");
        let mirror = watch::Mirror::new(ctx.registry.clone(), host, &cfg);
        mirror.run(nats.store, nats.connects, &ctx).await
    }
}
