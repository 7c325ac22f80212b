//! `SessionView`: what clients receive (protocol v1). Every field the published `atm` 0.2.x
//! clients read keeps its name and JSON type; our additions only add fields.
//!
//! Views are computed from a [`Session`] at snapshot time, because several fields are relative to
//! "now" (`5s ago`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{AgentState, Attention, RateLimits, Session};
use crate::text::prefix_chars;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub id_short: String,
    pub agent_type: String,
    pub model: String,
    pub status: String,
    pub status_label: String,
    pub activity_detail: Option<String>,
    pub should_blink: bool,
    pub status_icon: String,
    pub context_percentage: f64,
    pub context_display: String,
    pub context_warning: bool,
    pub context_critical: bool,
    pub cost_usd: f64,
    pub cost_display: String,
    pub duration_seconds: f64,
    pub duration_display: String,
    pub lines_display: String,
    pub working_directory: Option<String>,
    pub needs_attention: bool,
    pub last_activity_display: String,
    pub age_display: String,
    pub started_at: String,
    pub last_activity: String,
    pub tmux_pane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_session_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_prompt: Option<String>,
    pub harness: String,
    // ---- additions (never renames) ----
    pub state: AgentState,
    pub state_since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    pub context_window_size: u64,
    pub context_tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "RateLimits::is_empty")]
    pub rate_limits: RateLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// `1m 5s`, `2h 3m`, `42s`.
pub fn format_duration(secs: f64) -> String {
    let total = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn format_ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    if secs < 60 {
        format!("{secs}s ago")
    } else if secs < 3600 {
        format!("{}m ago", secs / 60)
    } else if secs < 86_400 {
        format!("{}h ago", secs / 3600)
    } else {
        format!("{}d ago", secs / 86_400)
    }
}

/// `84K`, `1.2M`, `950`.
pub fn format_tokens(n: u64) -> String {
    if n >= 1_000_000 {
        let m = n as f64 / 1_000_000.0;
        if (m - m.round()).abs() < 0.05 {
            format!("{}M", m.round() as u64)
        } else {
            format!("{m:.1}M")
        }
    } else if n >= 1_000 {
        format!("{}K", n / 1_000)
    } else {
        n.to_string()
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl SessionView {
    pub fn from_session(s: &Session, now: DateTime<Utc>) -> Self {
        let attention_state = s.state.needs_attention();
        let (status, status_label, icon) = match s.state {
            AgentState::NeedsPermission | AgentState::NeedsInput => {
                ("attention_needed", "needs input", "!")
            }
            AgentState::Working => ("working", "working", ">"),
            AgentState::Idle | AgentState::Starting => ("idle", "idle", "-"),
        };
        let u = &s.usage;
        let pct = if u.context_used_percentage.is_finite() {
            round1(u.context_used_percentage.clamp(0.0, 100.0))
        } else {
            0.0
        };
        let context_display = if u.context_window_size > 0 {
            format!(
                "{pct:.1}% ({}/{})",
                format_tokens(u.context_tokens),
                format_tokens(u.context_window_size)
            )
        } else {
            format!("{pct:.1}%")
        };
        let duration_seconds = if u.total_duration_ms > 0 {
            u.total_duration_ms as f64 / 1000.0
        } else {
            ((now - s.started_at).num_milliseconds().max(0) as f64) / 1000.0
        };
        let cost = if u.cost_usd.is_finite() {
            u.cost_usd
        } else {
            0.0
        };
        Self {
            id: s.id.as_str().to_owned(),
            id_short: prefix_chars(s.id.as_str(), 8).to_owned(),
            agent_type: s.agent_type.clone(),
            model: s
                .model_name
                .clone()
                .or_else(|| s.model_id.clone())
                .unwrap_or_else(|| "unknown".to_owned()),
            status: status.to_owned(),
            status_label: status_label.to_owned(),
            activity_detail: s.activity.clone(),
            should_blink: attention_state,
            status_icon: icon.to_owned(),
            context_percentage: pct,
            context_display,
            context_warning: pct >= 80.0,
            context_critical: pct >= 90.0,
            cost_usd: cost,
            cost_display: format!("${cost:.2}"),
            duration_seconds: round1(duration_seconds),
            duration_display: format_duration(duration_seconds),
            lines_display: format!("+{} -{}", u.lines_added, u.lines_removed),
            working_directory: s.cwd.clone(),
            needs_attention: attention_state || pct >= 80.0,
            last_activity_display: format_ago(s.last_activity, now),
            age_display: format_ago(s.started_at, now),
            started_at: s.started_at.to_rfc3339(),
            last_activity: s.last_activity.to_rfc3339(),
            tmux_pane: s.tmux_pane.clone(),
            project_root: s.git.project_root.clone(),
            worktree_path: s.git.worktree_path.clone(),
            worktree_branch: s.git.branch.clone(),
            parent_session_id: s.parent_id.as_ref().map(|p| p.as_str().to_owned()),
            child_session_ids: s.children.clone(),
            first_prompt: s.first_prompt.clone(),
            harness: s.harness.as_str().to_owned(),
            state: s.state,
            state_since: s.state_since.to_rfc3339(),
            attention: s.attention.clone(),
            error: s.last_error.clone(),
            pid: s.pid(),
            model_id: s.model_id.clone(),
            context_window_size: u.context_window_size,
            context_tokens: u.context_tokens,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            rate_limits: u.rate_limits.clone(),
            cpu_percent: s.cpu_percent.map(round1),
            rss_bytes: s.rss_bytes,
            agent_version: s.agent_version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Harness, SessionId, SessionKey};

    fn session() -> Session {
        let now = Utc::now();
        let key = SessionKey::Id {
            harness: Harness::claude(),
            id: "8e11bfb5-7dc2-432b".into(),
        };
        Session::new(key, SessionId::new("8e11bfb5-7dc2-432b"), None, "test", now)
    }

    #[test]
    fn formats_like_the_published_daemon() {
        assert_eq!(format_duration(65.0), "1m 5s");
        assert_eq!(format_duration(7322.0), "2h 2m");
        assert_eq!(format_duration(f64::NAN), "0s");
        assert_eq!(format_tokens(84_000), "84K");
        assert_eq!(format_tokens(200_000), "200K");
        assert_eq!(format_tokens(1_000_000), "1M");
        assert_eq!(format_tokens(1_250_000), "1.2M");
    }

    #[test]
    fn view_has_every_field_old_clients_read() {
        let mut s = session();
        s.state = AgentState::NeedsPermission;
        s.usage.context_used_percentage = 85.26;
        s.usage.context_tokens = 170_000;
        s.usage.context_window_size = 200_000;
        s.usage.cost_usd = 0.42;
        s.usage.total_duration_ms = 65_000;
        s.usage.lines_added = 12;
        s.usage.lines_removed = 3;
        let v = SessionView::from_session(&s, Utc::now());
        let json = serde_json::to_value(&v).unwrap();
        for field in [
            "id",
            "id_short",
            "agent_type",
            "model",
            "status",
            "status_label",
            "activity_detail",
            "should_blink",
            "status_icon",
            "context_percentage",
            "context_display",
            "context_warning",
            "context_critical",
            "cost_usd",
            "cost_display",
            "duration_seconds",
            "duration_display",
            "lines_display",
            "working_directory",
            "needs_attention",
            "last_activity_display",
            "age_display",
            "started_at",
            "last_activity",
            "tmux_pane",
            "harness",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["status"], "attention_needed");
        assert_eq!(json["state"], "needs_permission");
        assert_eq!(json["context_display"], "85.3% (170K/200K)");
        assert_eq!(json["cost_display"], "$0.42");
        assert_eq!(json["duration_display"], "1m 5s");
        assert_eq!(json["lines_display"], "+12 -3");
        assert_eq!(json["id_short"], "8e11bfb5");
        assert_eq!(json["should_blink"], true);
        assert_eq!(json["context_warning"], true);
        assert_eq!(json["context_critical"], false);
        let back: SessionView = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn multibyte_ids_and_paths_never_split_characters() {
        let mut s = session();
        s.id = SessionId::new("日本語のセッション識別子");
        s.cwd = Some("/home/ü/проект/🦀".into());
        s.model_name = Some("Ωpus ④.⑥".into());
        let v = SessionView::from_session(&s, Utc::now());
        assert_eq!(v.id_short, "日本語のセッショ");
        assert_eq!(v.working_directory.as_deref(), Some("/home/ü/проект/🦀"));
    }
}
