//! `/metrics`: the registry's sessions as Prometheus metrics (text format 0.0.4).
//!
//! # What
//!
//! [`Metrics`] follows the registry ([`Metrics::run`], with atm-core's follower) and keeps:
//! - counters and histograms updated as changes arrive ([`families`]): time in each state
//!   (observed when a session leaves it), how long requests waited, requests ended by surface
//!   and outcome, registry changes by source adapter, dollars spent, and sinks' resyncs, lost
//!   changes and drops;
//! - a table of the registry's records, from which each scrape computes the gauges of now
//!   ([`collector`]): sessions by state and harness, the longest wait, and per-session cost,
//!   context ratio and wait for a bounded set of sessions (the cardinality is documented there).
//!
//! Every series carries a `host` label. Series about sessions carry the host of their session:
//! on a fleet's hub (the `nats` adapter), the mirrored sessions count under the host that runs
//! them, so the hub's one scrape describes the whole fleet. The daemon's own series (sinks'
//! counters, adapters' events, the registry's seq) carry this daemon's host id (`[daemon]
//! host`). A Prometheus that scrapes the hub and also the other hosts' daemons sees those hosts'
//! sessions twice, under two `instance`s: scrape the hub alone for the fleet, or filter by
//! `instance`.
//!
//! # Why this shape
//!
//! Gauges of "now" computed at scrape time cannot drift from the registry (no increment can be
//! missed, a resync fixes everything), and cost one pass over the sessions per scrape, not per
//! change. Counters and histograms must see each change, so they are kept as changes arrive.
//! The follower's work per change is a lock, a map update and a few atomic adds: as fast as the
//! registry's own, so no queue sits before it; if it ever falls behind, the follower resyncs
//! and the gap is counted (`atm_sink_resyncs_total{sink="<name>-metrics"}`).
//!
//! The content type is Prometheus's text format ([`CONTENT_TYPE`]), not OpenMetrics: every
//! Prometheus and every scraper (Grafana Agent, VictoriaMetrics, Telegraf) reads it, and it
//! needs none of OpenMetrics's extras (exemplars, `_created`).
//!
//! # Labels
//!
//! No prompt, command, token or path is ever a label: the per-session labels are the session
//! id, the harness and the last part of the project's directory. Values from outside are
//! cleaned and capped ([`labels`]).

mod collector;
#[cfg(test)]
mod dist_tests;
mod families;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod follow_tests;
mod labels;
#[cfg(test)]
mod prometheus_tests;
mod table;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use atm_core::ingest::IngestStats;
use atm_core::plugin::{PluginError, SinkContext};
use atm_core::registry::{SessionEvent, Snapshot};
use atm_core::registry_follow::Followed;
use atm_core::sink_stats::SinkStats;
use prometheus_client::registry::Registry;

pub use collector::{DEFAULT_SESSION_SERIES, MAX_SESSION_SERIES, MAX_WATCHED};
pub use families::SinkCounters;
pub use labels::MAX_VALUE_CHARS;

use collector::{SessionCollector, Shared, Watched};
use families::Families;
use table::Table;

/// The `Content-Type` of what [`Metrics::encode`] writes: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name a scrape can carry (histograms as their base name), for dashboards and
/// their tests.
pub const METRIC_NAMES: &[&str] = &[
    collector::SESSIONS,
    collector::LONGEST_WAIT,
    collector::SESSION_COST,
    collector::SESSION_CONTEXT,
    collector::SESSION_WAITING,
    collector::OMITTED,
    collector::LABELS_CAPPED,
    collector::REGISTRY_SEQ,
    collector::ADAPTER_EVENTS,
    collector::SINK_APPLIED,
    collector::SINK_FAILURES,
    families::STATE_SECONDS,
    families::WAIT_SECONDS,
    families::REQUESTS_ENDED,
    families::SESSION_CHANGES,
    families::COST,
    families::SINK_RESYNCS,
    families::SINK_MISSED,
    families::SINK_DROPPED,
];

/// What the metrics need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// This daemon's host id: the `host` label of its own series (sessions carry theirs).
    pub host: String,
    /// The sink's instance name: the follower's counters are `sink="<name>-metrics"`.
    pub sink: String,
    /// Sessions with per-session series at most (at most [`MAX_SESSION_SERIES`]).
    pub max_session_series: usize,
}

/// Encoding the text failed (a metric's writer refused; not expected with a `String`).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the Prometheus text for /metrics: {0}")]
pub struct EncodeError(#[from] std::fmt::Error);

/// The metrics of one daemon: cheap to clone (an `Arc`); clones share everything.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    families: Families,
    shared: Arc<Shared>,
    /// The follower's own resyncs.
    own: SinkCounters,
    stats: SinkStats,
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Self {
        let host = labels::clean(&config.host).into_owned();
        let mut registry = Registry::default();
        let families = Families::register(&mut registry, &host);
        let shared = Arc::new(Shared {
            host,
            table: Mutex::new(Table::default()),
            watched: Mutex::new(Watched::default()),
            max_session_series: config.max_session_series.min(MAX_SESSION_SERIES),
        });
        registry.register_collector(Box::new(SessionCollector(shared.clone())));
        let own = SinkCounters::new(
            &families,
            labels::clean(&format!("{}-metrics", config.sink)).into_owned(),
        );
        Self(Arc::new(Inner {
            registry,
            families,
            shared,
            own,
            stats: SinkStats::default(),
        }))
    }

    /// Follows the sink's registry ([`SinkContext::follow`]) and keeps the metrics current
    /// until the sink is cancelled or the registry stops (then `Ok(())`). Run it once per
    /// [`Metrics`] (a second run would count every change twice).
    pub async fn run(self, ctx: &SinkContext) -> Result<(), PluginError> {
        if let Ok(mut w) = self.0.shared.watched.lock() {
            w.board = Some(ctx.env.ingest_stats.clone());
        }
        let (snapshot, mut follower) = ctx.follow().await?;
        self.load(&snapshot);
        while let Some(followed) = follower.next().await {
            match followed {
                Followed::Changes(changes) => self.apply(&changes),
                Followed::Resync { snapshot, missed } => {
                    tracing::debug!(missed, "metrics fell behind the registry; resyncing");
                    self.0.own.resynced(missed);
                    self.resync(&snapshot);
                }
            }
        }
        Ok(())
    }

    /// The Prometheus text of every metric now.
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.registry)?;
        Ok(out)
    }

    /// How far the metrics have followed the registry (tests wait on it).
    pub fn stats(&self) -> SinkStats {
        self.0.stats.clone()
    }

    /// The drop and resync counters of sink `sink` (say `http-sse`), for it to bump. Names are
    /// cleaned and capped like every label.
    pub fn sink_counters(&self, sink: &str) -> SinkCounters {
        let label = match self.0.shared.table.lock() {
            Ok(mut t) => t.sinks.value(sink),
            Err(_) => labels::OTHER.to_owned(),
        };
        SinkCounters::new(&self.0.families, label)
    }

    /// Reports an ingest adapter's counters as `atm_adapter_events_total{adapter=name}`
    /// (those on the daemon's board, `PluginEnv::ingest_stats`, are reported once
    /// [`Metrics::run`] starts, without this). The same name again replaces them (a restarted
    /// adapter); beyond [`MAX_WATCHED`] names, new ones are refused (`false`).
    pub fn watch_adapter(&self, name: &str, stats: Arc<IngestStats>) -> bool {
        match self.0.shared.watched.lock() {
            Ok(mut w) => SessionCollector::watch(&mut w.adapters, name, stats),
            Err(_) => false,
        }
    }

    /// Reports a sink's [`SinkStats`] as `atm_sink_applied_seq` and `atm_sink_failures_total`,
    /// as [`Metrics::watch_adapter`] does.
    pub fn watch_sink(&self, name: &str, stats: SinkStats) -> bool {
        match self.0.shared.watched.lock() {
            Ok(mut w) => SessionCollector::watch(&mut w.sinks, name, stats),
            Err(_) => false,
        }
    }

    fn with_table(&self, f: impl FnOnce(&mut Table, &Families)) {
        if let Ok(mut t) = self.0.shared.table.lock() {
            f(&mut t, &self.0.families);
            self.0.stats.applied(t.seq);
        }
    }

    /// Takes `snapshot` as the baseline (nothing counted).
    pub(crate) fn load(&self, snapshot: &Snapshot) {
        self.with_table(|t, _| t.load(snapshot));
    }

    /// Rebuilds from a resync's snapshot.
    pub(crate) fn resync(&self, snapshot: &Snapshot) {
        self.with_table(|t, f| t.resync(snapshot, f));
    }

    /// Applies changes in order.
    pub(crate) fn apply(&self, changes: &[SessionEvent]) {
        let now = chrono::Utc::now();
        self.with_table(|t, f| {
            for e in changes {
                t.apply(e, f, now);
            }
        });
    }
}
