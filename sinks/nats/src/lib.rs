//! `nats`: publishes this host's sessions into a NATS JetStream key-value bucket, so that a hub
//! (the `nats` adapter) shows every machine's agents in one view, and answers the decisions a
//! hub sends for this host's requests.
//!
//! What it writes (the layout is [`atm_core::fleet`]'s): one key per session,
//! `<host>.s.<session>`, holding the session as this host's state machine decided it (without
//! prompt text and previews unless `include_text`), deleted when the session ends; and
//! `<host>.host`, a heartbeat put every `heartbeat`. After every (re)connect it publishes
//! everything again from a fresh registry snapshot and deletes the keys of sessions that ended
//! while it could not write, so what the bucket holds converges on what this host has.
//!
//! Why it never slows the daemon: it follows the registry like every sink, and a bounded
//! latest-per-session queue ([`atm_core::coalesce::SharedQueue`], `queue_capacity` in order,
//! then the latest per session; an overflow drops the queue for a full republish) stands between
//! the follower and NATS. A NATS that is slow or gone only makes this queue coalesce.
//!
//! Answers: a hub asks `<subject_prefix>.<host>.decide` ([`answer`]); the decision goes through
//! the registry's decide like any surface's, once: a repeated request id gets the first reply.

mod answer;
mod publish;

use std::sync::Arc;
use std::time::Duration;

use atm_core::coalesce::{QueuePolicy, SharedQueue};
use atm_core::fleet::{self, BucketCreation, NatsConnection};
use atm_core::plugin::{ConfigError, OutputSink, PluginError, SinkContext};
use atm_core::registry_follow::Followed;
use serde::Deserialize;
use tracing::{debug, info};

atm_core::register_plugin! {
    sink "nats",
    description: "Publishes this host's sessions into a NATS JetStream key-value bucket (with a heartbeat) for a hub, and answers its decisions",
    sample_config: include_str!("../sample.toml"),
    optional: true,
    factory: |cfg| Ok(Box::new(NatsSink::new(NatsSinkConfig::from_toml(cfg)?))),
}

/// The sink's own keys (beside [`NatsConnection`]'s and [`BucketCreation`]'s).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OwnKeys {
    #[serde(with = "atm_core::duration")]
    heartbeat: Duration,
    include_text: bool,
    queue_capacity: usize,
}

impl Default for OwnKeys {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            include_text: false,
            queue_capacity: 1024,
        }
    }
}

/// `[[sink]] type = "nats"`.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSinkConfig {
    pub connection: NatsConnection,
    /// How often the host's heartbeat is put (default 5 s).
    pub heartbeat: Duration,
    /// Publish prompt text, titles, command previews and questions (default off).
    pub include_text: bool,
    /// Changes queued in order before only the latest per session is kept (default 1024).
    pub queue_capacity: usize,
    /// Whether a missing bucket is created, and how.
    pub bucket_creation: BucketCreation,
}

impl NatsSinkConfig {
    pub fn from_toml(value: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        let (connection, own) = NatsConnection::split(value)?;
        let (bucket_creation, own) = BucketCreation::split(&own)?;
        let own: OwnKeys = atm_core::plugin::parse_config(&own)?;
        atm_core::duration::check_range(
            own.heartbeat,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )
        .map_err(|m| ConfigError::for_key("heartbeat", m))?;
        if !(1..=1_000_000).contains(&own.queue_capacity) {
            return Err(ConfigError::for_key(
                "queue_capacity",
                "use a number from 1 to 1000000",
            ));
        }
        Ok(Self {
            connection,
            heartbeat: own.heartbeat,
            include_text: own.include_text,
            queue_capacity: own.queue_capacity,
            bucket_creation,
        })
    }
}

/// The `nats` sink.
pub struct NatsSink {
    config: Arc<NatsSinkConfig>,
}

impl NatsSink {
    pub fn new(config: NatsSinkConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

#[atm_core::async_trait]
impl OutputSink for NatsSink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let cfg = self.config;
        let host = ctx.registry.host().clone();
        let client_name = format!("atm sink {host}");
        let opened = fleet::connect_and_open(
            &cfg.connection,
            &cfg.bucket_creation,
            &client_name,
            &ctx.cancel,
        );
        let Some(nats) = opened.await? else {
            return Ok(());
        };
        info!(sink = ctx.name, %host, bucket = cfg.connection.bucket, "nats: publishing this host's sessions");

        let (_, mut follower) = ctx.follow().await?;
        // Overflow policy: `queue_capacity` changes in order, then the latest per session for
        // as many sessions; past that the queue is dropped and everything is published again
        // from a fresh snapshot.
        let queue = Arc::new(SharedQueue::new(QueuePolicy::ordered_then_latest(
            cfg.queue_capacity,
        )));
        let client = nats.client.clone();
        let publisher = publish::Publisher::new(
            nats,
            ctx.registry.clone(),
            host.clone(),
            cfg.clone(),
            queue.clone(),
        );
        let publishing = tokio::spawn(publisher.run(ctx.cancel.clone()));
        let answering = tokio::spawn(answer::serve(
            client,
            ctx.registry.clone(),
            host,
            cfg.connection.subject_prefix.clone(),
            ctx.cancel.clone(),
        ));
        while let Some(followed) = follower.next().await {
            match followed {
                Followed::Changes(changes) => {
                    for change in changes {
                        if !change.session.is_remote() {
                            let key = change.session.key.clone();
                            queue.push(&key, change);
                        }
                    }
                }
                Followed::Resync { missed, .. } => {
                    debug!(
                        missed,
                        "nats: fell behind the registry; publishing everything again"
                    );
                    queue.request_resync();
                }
            }
        }
        queue.close();
        // A write in flight may wait for NATS up to `request_timeout`: stopping does not.
        let _ = tokio::time::timeout(Duration::from_millis(1500), publishing).await;
        answering.abort();
        Ok(())
    }
}
