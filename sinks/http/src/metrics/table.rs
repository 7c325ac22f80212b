//! The session table the metrics keep: the registry's own records (shared `Arc`s, so the table
//! costs a pointer per session), and what each change means for the counters and histograms.
//!
//! A change is compared with the record the table held for that session before it:
//! - a new `(state, state_since)` means the session left its old state: the time from the old
//!   `state_since` to the new one is observed (on removal: to now);
//! - the requests the change ended (`SessionEvent::requests`, which the registry computes; a
//!   session removed while a request is open ends it, withdrawn) have their wait (asked to
//!   ended) observed and their surface and outcome counted; after a resync, whose snapshot says
//!   no such thing, the records added to the end of each `request_log` are counted instead;
//! - a higher `usage.cost_usd` adds the difference to the cost counter (a lower one, as after
//!   an agent's `/clear`, adds nothing: the counter only grows).
//!
//! What was already there when the metrics started (the first snapshot) is the baseline and is
//! not counted: a restarted exporter must not count the same dollars and answers again, as
//! Prometheus would take its reset counters' first values for new increases.

use std::collections::HashMap;
use std::sync::Arc;

use atm_core::model::{AgentState, Session, SessionKey};
use atm_core::registry::{REKEYED, SessionChange, SessionEvent, Snapshot};
use atm_core::request::{RequestFate, RequestRecord};
use chrono::{DateTime, Utc};

use super::families::Families;
use super::labels::LabelCap;

/// Distinct harness names kept as labels (six are built in).
pub const MAX_HARNESSES: usize = 16;
/// Distinct adapter names kept as `source` labels.
pub const MAX_SOURCES: usize = 32;
/// Distinct surface names kept as labels (atmctl, dbus, notify, socket, http, ...).
pub const MAX_SURFACES: usize = 32;
/// Distinct sink names kept as `sink` labels.
pub const MAX_SINKS: usize = 32;
/// Distinct hosts kept as `host` labels (a hub's fleet; host ids are short and clean already).
pub const MAX_HOSTS: usize = 256;

/// Every session the registry holds, by key, and the label caps.
#[derive(Debug)]
pub struct Table {
    pub sessions: HashMap<SessionKey, Arc<Session>>,
    pub harnesses: LabelCap,
    pub sources: LabelCap,
    pub surfaces: LabelCap,
    pub sinks: LabelCap,
    pub hosts: LabelCap,
    /// The `seq` of the last change applied.
    pub seq: u64,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            sessions: HashMap::new(),
            harnesses: LabelCap::new(MAX_HARNESSES),
            sources: LabelCap::new(MAX_SOURCES),
            surfaces: LabelCap::new(MAX_SURFACES),
            sinks: LabelCap::new(MAX_SINKS),
            hosts: LabelCap::new(MAX_HOSTS),
            seq: 0,
        }
    }
}

/// Seconds from `from` to `to`, never negative (a clock set back).
fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0) as f64) / 1000.0
}

fn change_name(change: &SessionChange) -> &'static str {
    match change {
        SessionChange::Added => "added",
        SessionChange::Updated => "updated",
        SessionChange::Removed { .. } => "removed",
    }
}

/// The records of `new` that `old` did not have yet: those after `old`'s newest. All of them
/// when `old`'s newest is gone (more ended between two changes than the log keeps).
fn ended_since<'a>(old: &[RequestRecord], new: &'a [RequestRecord]) -> &'a [RequestRecord] {
    let Some(last) = old.last() else {
        return new;
    };
    match new.iter().rposition(|r| r.id == last.id) {
        Some(at) => new.get(at + 1..).unwrap_or_default(),
        None => new,
    }
}

impl Table {
    /// Replaces the table with the first snapshot: the baseline, nothing counted.
    pub fn load(&mut self, snapshot: &Snapshot) {
        self.sessions = snapshot
            .sessions
            .iter()
            .map(|s| (s.key.clone(), s.clone()))
            .collect();
        self.seq = snapshot.seq;
    }

    /// Rebuilds the table from a resync's snapshot. Requests that ended and cost spent in the
    /// gap are still counted (the records and totals say so); state times are not, since the
    /// states in between are unknown.
    pub fn resync(&mut self, snapshot: &Snapshot, f: &Families) {
        let mut old = std::mem::take(&mut self.sessions);
        for s in &snapshot.sessions {
            if let Some(before) = old.remove(&s.key) {
                self.count_requests(&before.request_log, s, f);
                self.count_cost(Some(&before), s, f);
            }
            self.sessions.insert(s.key.clone(), s.clone());
        }
        self.seq = snapshot.seq;
    }

    /// Applies one change from the registry, `now` being when it arrived.
    pub fn apply(&mut self, e: &SessionEvent, f: &Families, now: DateTime<Utc>) {
        self.seq = self.seq.max(e.seq);
        let s = &e.session;
        let source = self.sources.value(&s.source);
        f.session_changes
            .get_or_create(&[
                ("host", self.hosts.value(s.host.as_str())),
                ("source", source),
                ("change", change_name(&e.change).into()),
            ])
            .inc();
        for r in &e.requests.ended {
            self.count_record(s, r, f);
        }
        match &e.change {
            // The same session follows under its new id (an `Added` with the same key).
            SessionChange::Removed { reason } if reason == REKEYED => {}
            SessionChange::Removed { .. } => {
                let before = self.sessions.remove(&s.key);
                let before = before.as_ref().unwrap_or(s);
                self.observe_state(before.state, before.state_since, now, s, f);
            }
            SessionChange::Added | SessionChange::Updated => {
                let before = self.previous(s);
                match &before {
                    Some(b) if Arc::ptr_eq(b, s) => {}
                    Some(b) => {
                        if (b.state, b.state_since) != (s.state, s.state_since) {
                            self.observe_state(b.state, b.state_since, s.state_since, s, f);
                        }
                        self.count_cost(Some(b), s, f);
                    }
                    // A session seen for the first time: what it cost is new to us.
                    None if e.change == SessionChange::Added => self.count_cost(None, s, f),
                    // An update of a session we never saw (cannot happen after a snapshot):
                    // a baseline, like the first snapshot.
                    None => {}
                }
                self.sessions.insert(s.key.clone(), s.clone());
            }
        }
    }

    /// The record this change follows: under its key, or, for a session that just moved from
    /// its id key to its process key, under the id key (which is gone then).
    fn previous(&mut self, s: &Session) -> Option<Arc<Session>> {
        if let Some(b) = self.sessions.get(&s.key) {
            return Some(b.clone());
        }
        let id_key = SessionKey::Id {
            harness: s.harness.clone(),
            id: s.id.clone(),
        };
        if id_key == s.key {
            return None;
        }
        self.sessions.remove(&id_key)
    }

    fn observe_state(
        &mut self,
        state: AgentState,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        s: &Session,
        f: &Families,
    ) {
        let harness = self.harnesses.value(s.harness.as_str());
        f.state_seconds
            .get_or_create(&[
                ("host", self.hosts.value(s.host.as_str())),
                ("state", state.as_str().into()),
                ("harness", harness),
            ])
            .observe(seconds(since, until));
    }

    /// Counts the records `s` logged after `old`'s newest (after a resync).
    fn count_requests(&mut self, old: &[RequestRecord], s: &Session, f: &Families) {
        for r in ended_since(old, &s.request_log) {
            self.count_record(s, r, f);
        }
    }

    /// One ended request of `s`: its wait, and its surface and outcome.
    fn count_record(&mut self, s: &Session, r: &RequestRecord, f: &Families) {
        let host = self.hosts.value(s.host.as_str());
        let harness = self.harnesses.value(s.harness.as_str());
        let (surface, outcome, fate) = match &r.fate {
            RequestFate::Answered { decision, surface } => (
                self.surfaces.value(&surface.name),
                decision.name(),
                "answered",
            ),
            RequestFate::Withdrawn { .. } => ("none".to_owned(), "withdrawn", "withdrawn"),
        };
        f.wait_seconds
            .get_or_create(&[
                ("host", host.clone()),
                ("harness", harness),
                ("outcome", fate.into()),
            ])
            .observe(seconds(r.asked_at, r.ended_at));
        f.requests_ended
            .get_or_create(&[
                ("host", host),
                ("surface", surface),
                ("outcome", outcome.into()),
            ])
            .inc();
    }

    fn count_cost(&mut self, before: Option<&Session>, s: &Session, f: &Families) {
        let old = before.map_or(0.0, |b| b.usage.cost_usd);
        let spent = s.usage.cost_usd - old;
        if spent.is_finite() && spent > 0.0 {
            let labels = [
                ("host", self.hosts.value(s.host.as_str())),
                ("harness", self.harnesses.value(s.harness.as_str())),
            ];
            f.cost.get_or_create(&labels).inc_by(spent);
        }
    }
}
