//! The metric families that are updated as changes arrive (counters and histograms), their names
//! and buckets. The gauges that describe "now" (sessions by state, per-session cost) are computed
//! at scrape time from the session table instead ([`super::collector`]).
//!
//! Names follow Prometheus conventions: base units (seconds, dollars), `_total` on counters (the
//! encoder adds it to the registered name), one family per meaning.
//!
//! The families about sessions carry each session's own `host` as their first label (a hub's
//! mirrored sessions count under the host that runs them); the sinks' counters are this
//! daemon's own and sit in a sub-registry whose constant `host` label is this daemon's.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A session's `host` and two more labels, each cleaned and capped.
pub type Three = [(&'static str, String); 3];
/// A session's `host` and one more label.
pub type Pair = [(&'static str, String); 2];
pub type One = [(&'static str, String); 1];

type Histograms = Family<Three, Histogram, fn() -> Histogram>;

/// Time in one state, in seconds: a second to a day (one bucket per step people tell apart:
/// "a moment", "a minute", "a coffee", "the afternoon").
pub const STATE_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Time a request waited for its answer, in seconds: half a second to an hour.
pub const WAIT_BUCKETS: [f64; 13] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn state_histogram() -> Histogram {
    Histogram::new(STATE_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

/// Names as scraped (with the suffixes the encoder adds), for the dashboard and its test.
pub const STATE_SECONDS: &str = "atm_state_duration_seconds";
pub const WAIT_SECONDS: &str = "atm_request_wait_seconds";
pub const REQUESTS_ENDED: &str = "atm_requests_ended_total";
pub const SESSION_CHANGES: &str = "atm_session_changes_total";
pub const COST: &str = "atm_cost_usd_total";
pub const SINK_RESYNCS: &str = "atm_sink_resyncs_total";
pub const SINK_MISSED: &str = "atm_sink_missed_changes_total";
pub const SINK_DROPPED: &str = "atm_sink_dropped_total";

/// Registers `name_total` as `name`: prometheus-client adds `_total` to counters itself.
fn counter_name(scraped: &'static str) -> &'static str {
    scraped.strip_suffix("_total").unwrap_or(scraped)
}

/// The families updated as the registry's changes arrive.
#[derive(Debug, Clone)]
pub struct Families {
    /// `host`, `state` (left), `harness`: observed when a session leaves a state.
    pub state_seconds: Histograms,
    /// `host`, `harness`, `outcome` (`answered` / `withdrawn`): asked to ended, per ended
    /// request.
    pub wait_seconds: Histograms,
    /// `host`, `surface` (`none` when withdrawn), `outcome` (`allow`, `allow_always`, `deny`,
    /// `answer`, `withdrawn`).
    pub requests_ended: Family<Three, Counter>,
    /// `host`, `source` (the adapter that first saw the session), `change` (`added` /
    /// `updated` / `removed`).
    pub session_changes: Family<Three, Counter>,
    /// `host`, `harness`: dollars spent while atm watched (increases of each session's
    /// reported cost).
    pub cost: Family<Pair, Counter<f64, AtomicU64>>,
    /// `sink`: times a follower or a queue started over from a snapshot.
    pub sink_resyncs: Family<One, Counter>,
    /// `sink`: registry changes a follower lost before its resync.
    pub sink_missed: Family<One, Counter>,
    /// `sink`: entries an overflow policy dropped.
    pub sink_dropped: Family<One, Counter>,
}

impl Families {
    /// The families, registered in `registry`: the sessions' ones at its root, the sinks'
    /// under the constant label `host="<daemon_host>"`.
    pub fn register(registry: &mut Registry, daemon_host: &str) -> Self {
        let f = Self {
            state_seconds: Family::new_with_constructor(state_histogram as fn() -> Histogram),
            wait_seconds: Family::new_with_constructor(wait_histogram as fn() -> Histogram),
            requests_ended: Family::default(),
            session_changes: Family::default(),
            cost: Family::default(),
            sink_resyncs: Family::default(),
            sink_missed: Family::default(),
            sink_dropped: Family::default(),
        };
        registry.register(
            STATE_SECONDS,
            "Time sessions spent in a state, observed when they leave it (state is the state left)",
            f.state_seconds.clone(),
        );
        registry.register(
            WAIT_SECONDS,
            "Time from a request (permission, question) being asked to its end",
            f.wait_seconds.clone(),
        );
        registry.register(
            counter_name(REQUESTS_ENDED),
            "Ended requests by the surface that answered (none: withdrawn) and outcome",
            f.requests_ended.clone(),
        );
        registry.register(
            counter_name(SESSION_CHANGES),
            "Registry changes by the adapter that first saw the session and kind of change",
            f.session_changes.clone(),
        );
        registry.register(
            counter_name(COST),
            "US dollars spent by sessions while atm watched them (increases of reported cost)",
            f.cost.clone(),
        );
        let registry = registry
            .sub_registry_with_label((Cow::Borrowed("host"), Cow::Owned(daemon_host.to_owned())));
        registry.register(
            counter_name(SINK_RESYNCS),
            "Times a sink's follower or queue fell behind and started over from a snapshot",
            f.sink_resyncs.clone(),
        );
        registry.register(
            counter_name(SINK_MISSED),
            "Registry changes a sink's follower lost before resyncing",
            f.sink_missed.clone(),
        );
        registry.register(
            counter_name(SINK_DROPPED),
            "Entries a sink's bounded queue dropped by its overflow policy",
            f.sink_dropped.clone(),
        );
        f
    }
}

/// One sink's drop and resync counters, for the sink to bump (see
/// [`super::Metrics::sink_counters`]). Clones count together.
#[derive(Debug, Clone)]
pub struct SinkCounters {
    resyncs: Counter,
    missed: Counter,
    dropped: Counter,
}

impl SinkCounters {
    pub(super) fn new(families: &Families, sink: String) -> Self {
        let label = [("sink", sink)];
        Self {
            resyncs: families.sink_resyncs.get_or_create_owned(&label),
            missed: families.sink_missed.get_or_create_owned(&label),
            dropped: families.sink_dropped.get_or_create_owned(&label),
        }
    }

    /// The sink started over from a snapshot after losing `missed` changes (0 when it does not
    /// know how many: a client queue that overflowed).
    pub fn resynced(&self, missed: u64) {
        self.resyncs.inc();
        self.missed.inc_by(missed);
    }

    /// The sink's queue dropped `n` entries.
    pub fn dropped(&self, n: u64) {
        self.dropped.inc_by(n);
    }
}
