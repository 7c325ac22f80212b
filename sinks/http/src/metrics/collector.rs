//! The gauges that say how things are now, computed from the session table at each scrape:
//! sessions by host, state and harness, the longest wait per host, and per-session cost,
//! context and wait for a bounded number of sessions; plus the counters of other plugins handed
//! to the metrics.
//!
//! Series about sessions carry each session's own `host` (on a hub: the host that runs it);
//! the rest (omitted series, capped labels, the registry's seq, other plugins' counters) are
//! this daemon's own and carry its host.
//!
//! # Cardinality
//!
//! Per-session series (`atm_session_*`, labels `host`, `session`, `harness`, `project`) exist
//! for at most `max_session_series` sessions (default [`DEFAULT_SESSION_SERIES`]): the sessions
//! waiting on their user first (longest wait first), then the most recently active. The others
//! are counted in `atm_session_series_omitted` and are still in every aggregate (`atm_sessions`,
//! `atm_cost_usd_total`, the histograms). Waiting sessions come first because they are what an
//! alert must name; the most recent next because they are what a dashboard shows. With the
//! default, a scrape carries at most 3 x 100 per-session series, whatever the registry holds
//! (up to its own `max_sessions`), and a session's series go away when it does.
//!
//! The table's lock is held only to count and pick; the text is written after it is released,
//! so a scrape delays the follower by the time of one pass over the sessions.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use atm_core::ingest::{IngestStats, IngestStatsBoard};
use atm_core::model::{AgentState, Session};
use atm_core::sink_stats::SinkStats;
use chrono::Utc;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::labels::clean;
use super::table::Table;

/// Per-session series by default.
pub const DEFAULT_SESSION_SERIES: usize = 100;
/// The most per-session series a config may ask for.
pub const MAX_SESSION_SERIES: usize = 1000;
/// Adapters and sinks whose counters may be handed in.
pub const MAX_WATCHED: usize = 64;

pub const SESSIONS: &str = "atm_sessions";
pub const LONGEST_WAIT: &str = "atm_longest_wait_seconds";
pub const SESSION_COST: &str = "atm_session_cost_usd";
pub const SESSION_CONTEXT: &str = "atm_session_context_ratio";
pub const SESSION_WAITING: &str = "atm_session_waiting_seconds";
pub const OMITTED: &str = "atm_session_series_omitted";
pub const LABELS_CAPPED: &str = "atm_label_values_capped_total";
pub const ADAPTER_EVENTS: &str = "atm_adapter_events_total";
pub const SINK_APPLIED: &str = "atm_sink_applied_seq";
pub const SINK_FAILURES: &str = "atm_sink_failures_total";
pub const REGISTRY_SEQ: &str = "atm_registry_seq";

/// Counters of other plugins: the daemon's board of ingest adapters (from the sink's context,
/// once [`super::Metrics::run`] has it), and what was handed in.
#[derive(Debug, Default)]
pub struct Watched {
    pub board: Option<IngestStatsBoard>,
    pub adapters: BTreeMap<String, Arc<IngestStats>>,
    pub sinks: BTreeMap<String, SinkStats>,
}

/// What the collector reads: the table, the counters handed in, the cap.
#[derive(Debug)]
pub struct Shared {
    /// This daemon's `host` label.
    pub host: String,
    pub table: Mutex<Table>,
    pub watched: Mutex<Watched>,
    pub max_session_series: usize,
}

/// One session's per-session series, picked under the lock.
struct Row {
    session: Arc<Session>,
    host: String,
    harness: String,
}

/// Sessions of one host and harness: the names (interned, so mostly compared by pointer), their
/// labels, the sessions in each of [`AgentState::ALL`].
struct Group<'a> {
    host: &'a str,
    harness: &'a str,
    labels: (String, String),
    counts: [u64; 5],
}

/// What one pass over the table found.
struct Counted {
    /// Per (host, harness) label, sessions in each of [`AgentState::ALL`].
    by_state: BTreeMap<(String, String), [u64; 5]>,
    /// Per host label (this daemon's always there), the longest wait.
    longest_wait: BTreeMap<String, f64>,
    rows: Vec<Row>,
    omitted: usize,
    capped: u64,
    seq: u64,
}

/// The wait of `s` in seconds (0 when it is not waiting).
fn waiting_seconds(s: &Session, now: chrono::DateTime<Utc>) -> f64 {
    if !s.state.needs_attention() {
        return 0.0;
    }
    ((now - s.state_since).num_milliseconds().max(0) as f64) / 1000.0
}

/// Used share of the context window, 0 to 1.
fn context_ratio(s: &Session) -> f64 {
    let u = &s.usage;
    let ratio = if u.context_used_percentage > 0.0 {
        u.context_used_percentage / 100.0
    } else if u.context_window_size > 0 {
        u.context_tokens as f64 / u.context_window_size as f64
    } else {
        0.0
    };
    if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// What the `project` label says: the last part of the project root (else the working
/// directory), never the whole path.
fn project(s: &Session) -> &str {
    let path = s
        .git
        .project_root
        .as_deref()
        .or(s.cwd.as_deref())
        .unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

impl Shared {
    fn count(&self) -> Counted {
        let now = Utc::now();
        let mut longest_wait = BTreeMap::from([(self.host.clone(), 0.0_f64)]);
        let Ok(mut table) = self.table.lock() else {
            return Counted {
                by_state: BTreeMap::new(),
                longest_wait,
                rows: Vec::new(),
                omitted: 0,
                capped: 0,
                seq: 0,
            };
        };
        let table = &mut *table;
        // A handful of groups, so a linear scan.
        let mut groups: Vec<Group<'_>> = Vec::new();
        // Waiting first, longest wait first; then the most recently active. The key is taken
        // once per session: comparing through the records would touch each one many times.
        let mut ranked: Vec<((bool, i64), &Arc<Session>, usize)> =
            Vec::with_capacity(table.sessions.len());
        let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
        for s in table.sessions.values() {
            let (host, harness) = (s.host.as_str(), s.harness.as_str());
            let at = match groups
                .iter()
                .position(|g| same(g.harness, harness) && same(g.host, host))
            {
                Some(at) => at,
                None => {
                    let labels = (table.hosts.value(host), table.harnesses.value(harness));
                    groups.push(Group {
                        host,
                        harness,
                        labels,
                        counts: [0; 5],
                    });
                    groups.len() - 1
                }
            };
            let Some(group) = groups.get_mut(at) else {
                continue;
            };
            let state = AgentState::ALL.iter().position(|st| *st == s.state);
            if let Some(n) = state.and_then(|i| group.counts.get_mut(i)) {
                *n += 1;
            }
            let key = if s.state.needs_attention() {
                let longest = longest_wait.entry(group.labels.0.clone()).or_default();
                *longest = longest.max(waiting_seconds(s, now));
                (true, -s.state_since.timestamp_millis())
            } else {
                (false, s.last_activity.timestamp_millis())
            };
            ranked.push((key, s, at));
        }
        let keep = self.max_session_series.min(ranked.len());
        if keep < ranked.len() && keep > 0 {
            ranked.select_nth_unstable_by_key(keep - 1, |(key, ..)| std::cmp::Reverse(*key));
        }
        ranked.truncate(keep);
        ranked.sort_unstable_by_key(|(key, ..)| std::cmp::Reverse(*key));
        let rows = ranked
            .into_iter()
            .filter_map(|(_, s, at)| {
                let (host, harness) = groups.get(at)?.labels.clone();
                Some(Row {
                    session: s.clone(),
                    host,
                    harness,
                })
            })
            .collect();
        // Two names capped to `other` share its series.
        let mut by_state: BTreeMap<(String, String), [u64; 5]> = BTreeMap::new();
        for g in &groups {
            let sum = by_state.entry(g.labels.clone()).or_default();
            for (total, n) in sum.iter_mut().zip(&g.counts) {
                *total += n;
            }
        }
        let capped = [
            &table.harnesses,
            &table.sources,
            &table.surfaces,
            &table.sinks,
            &table.hosts,
        ]
        .iter()
        .map(|c| c.overflowed())
        .sum();
        Counted {
            by_state,
            longest_wait,
            rows,
            omitted: table.sessions.len().saturating_sub(keep),
            capped,
            seq: table.seq,
        }
    }
}

/// How one per-session gauge reads a session at an instant.
type PerSession = fn(&Session, chrono::DateTime<Utc>) -> f64;

/// The scrape-time part of the registry.
#[derive(Debug)]
pub struct SessionCollector(pub Arc<Shared>);

fn gauge<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, MetricType::Gauge)
}

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.0.count();
        let now = Utc::now();

        let own = [("host", self.0.host.as_str())];
        let mut m = gauge(
            &mut encoder,
            SESSIONS,
            "Sessions by host, state and harness",
        )?;
        for ((host, harness), counts) in &c.by_state {
            for (state, n) in AgentState::ALL.iter().zip(counts) {
                let labels = [
                    ("host", host.as_str()),
                    ("state", state.as_str()),
                    ("harness", harness.as_str()),
                ];
                ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let longest = "Seconds a host's longest-waiting session has waited on its user (0: none)";
        let mut m = gauge(&mut encoder, LONGEST_WAIT, longest)?;
        for (host, seconds) in &c.longest_wait {
            ConstGauge::new(*seconds).encode(m.encode_family(&[("host", host.as_str())])?)?;
        }

        // One label set per series even if two hostile ids clean to the same label.
        let mut seen = HashSet::with_capacity(c.rows.len());
        let rows: Vec<([(&str, String); 4], &Session)> = c
            .rows
            .iter()
            .filter_map(|r| {
                let labels = [
                    ("host", r.host.clone()),
                    ("session", clean(r.session.id.as_str()).into_owned()),
                    ("harness", r.harness.clone()),
                    ("project", clean(project(&r.session)).into_owned()),
                ];
                seen.insert((labels[0].1.clone(), labels[1].1.clone()))
                    .then_some((labels, &*r.session))
            })
            .collect();
        let per_session: [(&str, &str, PerSession); 3] = [
            (
                SESSION_COST,
                "US dollars a session has cost, as its agent reports (bounded set of sessions)",
                |s, _| s.usage.cost_usd,
            ),
            (
                SESSION_CONTEXT,
                "Used share of a session's context window, 0 to 1 (bounded set of sessions)",
                |s, _| context_ratio(s),
            ),
            (
                SESSION_WAITING,
                "Seconds a session has waited on its user, 0 when it is not waiting (bounded set)",
                waiting_seconds,
            ),
        ];
        for (name, help, value) in per_session {
            let mut m = gauge(&mut encoder, name, help)?;
            for (labels, s) in &rows {
                let v = value(s, now);
                ConstGauge::new(if v.is_finite() { v } else { 0.0 })
                    .encode(m.encode_family(labels)?)?;
            }
        }
        let omitted_help = "Sessions without per-session series (beyond max_session_series)";
        let omitted = (c.omitted + c.rows.len() - rows.len()) as i64;
        ConstGauge::new(omitted)
            .encode(gauge(&mut encoder, OMITTED, omitted_help)?.encode_family(&own)?)?;
        let capped = ConstCounter::new(c.capped);
        let capped_help =
            "Label values reported as `other` because their label had too many distinct values";
        capped.encode(
            encoder
                .encode_descriptor(
                    LABELS_CAPPED.trim_end_matches("_total"),
                    capped_help,
                    None,
                    MetricType::Counter,
                )?
                .encode_family(&own)?,
        )?;
        let seq = "Sequence number of the last registry change the metrics took in";
        ConstGauge::new(c.seq as i64)
            .encode(gauge(&mut encoder, REGISTRY_SEQ, seq)?.encode_family(&own)?)?;
        self.encode_watched(&mut encoder)
    }
}

impl SessionCollector {
    fn encode_watched(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (mut adapters, sinks, board) = match self.0.watched.lock() {
            Ok(w) => (
                w.adapters.clone(),
                w.sinks
                    .iter()
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect(),
                w.board.clone(),
            ),
            Err(_) => (BTreeMap::new(), Vec::new(), None),
        };
        // The board is the daemon's own account: it wins over a name handed in, and is as
        // bounded as the rest.
        for (name, stats) in board.map(|b| b.all()).unwrap_or_default() {
            Self::watch(&mut adapters, &name, stats);
        }
        if !adapters.is_empty() {
            let mut m = encoder.encode_descriptor(
                ADAPTER_EVENTS.trim_end_matches("_total"),
                "Events an ingest adapter received, by what became of them",
                None,
                MetricType::Counter,
            )?;
            for (adapter, s) in &adapters {
                for (outcome, counter) in [
                    ("applied", &s.applied),
                    ("unknown", &s.unknown_events),
                    ("ignored", &s.ignored),
                    ("malformed", &s.bad_messages),
                    ("refused", &s.registry_errors),
                ] {
                    let labels = [
                        ("host", self.0.host.as_str()),
                        ("adapter", adapter.as_str()),
                        ("outcome", outcome),
                    ];
                    ConstCounter::new(IngestStats::get(counter))
                        .encode(m.encode_family(&labels)?)?;
                }
            }
        }
        if !sinks.is_empty() {
            let mut m = gauge(
                encoder,
                SINK_APPLIED,
                "Sequence number of the last registry change a sink took in",
            )?;
            for (sink, s) in &sinks {
                let labels = [("host", self.0.host.as_str()), ("sink", sink.as_str())];
                ConstGauge::new(s.applied_seq() as i64).encode(m.encode_family(&labels)?)?;
            }
            let mut m = encoder.encode_descriptor(
                SINK_FAILURES.trim_end_matches("_total"),
                "Failed attempts of a sink to reach what it writes to",
                None,
                MetricType::Counter,
            )?;
            for (sink, s) in &sinks {
                let labels = [("host", self.0.host.as_str()), ("sink", sink.as_str())];
                ConstCounter::new(s.failures()).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// Hands in `stats` under `name` (cleaned); a name given again replaces its stats (a
    /// restarted plugin). Beyond [`MAX_WATCHED`] names, new ones are refused (`false`).
    pub fn watch<T>(map: &mut BTreeMap<String, T>, name: &str, stats: T) -> bool {
        let name = clean(name).into_owned();
        if !map.contains_key(&name) && map.len() >= MAX_WATCHED {
            return false;
        }
        map.insert(name, stats);
        true
    }
}
