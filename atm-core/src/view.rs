//! `SessionView`: what clients receive (protocol v1). Every field the published `atm` 0.2.x
//! clients read keeps its name and JSON type; our additions only add fields.
//!
//! Views are computed from a [`Session`] at snapshot time, because several fields are relative to
//! "now" (`5s ago`).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{AgentState, Attention, PromptCache, RateLimits, Session};
use crate::request::RequestRecord;
use crate::text::prefix_chars;

/// View text: borrowed from the session where it can be, owned where it is computed.
pub type Text<'a> = Cow<'a, str>;

#[allow(clippy::ptr_arg)] // serde hands `skip_serializing_if` the field itself
fn is_empty_slice(v: &Cow<'_, [String]>) -> bool {
    v.is_empty()
}

#[allow(clippy::ptr_arg)] // as above
fn is_empty_map(v: &Cow<'_, RateLimits>) -> bool {
    v.is_empty()
}

/// One session as clients see it. Text borrows from the [`Session`] it was made from, so the
/// daemon renders views (10,000 for one `session_list`) without copying every string first;
/// what clients deserialize is owned (`SessionView<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView<'a> {
    pub id: Text<'a>,
    pub id_short: Text<'a>,
    pub agent_type: Text<'a>,
    pub model: Text<'a>,
    pub status: Text<'a>,
    pub status_label: Text<'a>,
    pub activity_detail: Option<Text<'a>>,
    pub should_blink: bool,
    pub status_icon: Text<'a>,
    pub context_percentage: f64,
    pub context_display: Text<'a>,
    pub context_warning: bool,
    pub context_critical: bool,
    pub cost_usd: f64,
    pub cost_display: Text<'a>,
    pub duration_seconds: f64,
    pub duration_display: Text<'a>,
    pub lines_display: Text<'a>,
    pub working_directory: Option<Text<'a>>,
    pub needs_attention: bool,
    pub last_activity_display: Text<'a>,
    pub age_display: Text<'a>,
    pub started_at: Text<'a>,
    pub last_activity: Text<'a>,
    pub tmux_pane: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_root: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree_path: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree_branch: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session_id: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "is_empty_slice")]
    pub child_session_ids: Cow<'a, [String]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_prompt: Option<Text<'a>>,
    pub harness: Text<'a>,
    // ---- additions (never renames) ----
    pub state: AgentState,
    pub state_since: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Cow<'a, Attention>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<Text<'a>>,
    pub context_window_size: u64,
    pub context_tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub rate_limits: Cow<'a, RateLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<Text<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<PromptCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<Text<'a>>,
    /// The session's title, when the agent names its sessions (opencode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Text<'a>>,
    /// How its last requests ended: answered (decision, surface, uid) or withdrawn (why).
    #[serde(default, skip_serializing_if = "is_empty_log")]
    pub request_log: Cow<'a, [RequestRecord]>,
    /// The machine the session runs on (this daemon's own host for its own sessions; empty
    /// from a daemon older than hosts).
    #[serde(default)]
    pub host: Text<'a>,
    /// True for a session of another machine, mirrored here (the `nats` adapter).
    #[serde(default, skip_serializing_if = "is_false")]
    pub remote: bool,
    /// True while the mirrored session's host has not been heard for too long: what is shown
    /// may be out of date.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stale: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[allow(clippy::ptr_arg)] // as above
fn is_empty_log(v: &Cow<'_, [RequestRecord]>) -> bool {
    v.is_empty()
}

/// `1m 5s`, `2h 3m`, `42s`.
fn format_duration(secs: f64) -> String {
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
fn format_ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
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
fn format_tokens(n: u64) -> String {
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

impl<'a> SessionView<'a> {
    pub fn from_session(s: &'a Session, now: DateTime<Utc>) -> Self {
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
            id: Cow::Borrowed(s.id.as_str()),
            id_short: Cow::Borrowed(prefix_chars(s.id.as_str(), 8)),
            agent_type: Cow::Borrowed(&s.agent_type),
            model: Cow::Borrowed(
                s.model_name
                    .as_deref()
                    .or(s.model_id.as_deref())
                    .unwrap_or("unknown"),
            ),
            status: Cow::Borrowed(status),
            status_label: Cow::Borrowed(status_label),
            activity_detail: s.activity.as_deref().map(Cow::Borrowed),
            should_blink: attention_state,
            status_icon: Cow::Borrowed(icon),
            context_percentage: pct,
            context_display: Cow::Owned(context_display),
            context_warning: pct >= 80.0,
            context_critical: pct >= 90.0,
            cost_usd: cost,
            cost_display: Cow::Owned(format!("${cost:.2}")),
            duration_seconds: round1(duration_seconds),
            duration_display: Cow::Owned(format_duration(duration_seconds)),
            lines_display: Cow::Owned(format!("+{} -{}", u.lines_added, u.lines_removed)),
            working_directory: s.cwd.as_deref().map(Cow::Borrowed),
            needs_attention: attention_state || pct >= 80.0,
            last_activity_display: Cow::Owned(format_ago(s.last_activity, now)),
            age_display: Cow::Owned(format_ago(s.started_at, now)),
            started_at: Cow::Owned(s.started_at.to_rfc3339()),
            last_activity: Cow::Owned(s.last_activity.to_rfc3339()),
            tmux_pane: s.tmux_pane.as_deref().map(Cow::Borrowed),
            project_root: s.git.project_root.as_deref().map(Cow::Borrowed),
            worktree_path: s.git.worktree_path.as_deref().map(Cow::Borrowed),
            worktree_branch: s.git.branch.as_deref().map(Cow::Borrowed),
            // Protocol v1 field: atm tracks subagents as their parent's children, never as
            // sessions of their own, so no session has a parent.
            parent_session_id: None,
            child_session_ids: Cow::Borrowed(&s.children),
            first_prompt: s.first_prompt.as_deref().map(Cow::Borrowed),
            harness: Cow::Borrowed(s.harness.as_str()),
            state: s.state,
            state_since: Cow::Owned(s.state_since.to_rfc3339()),
            attention: s.attention.as_ref().map(Cow::Borrowed),
            error: s.last_error.as_deref().map(Cow::Borrowed),
            pid: s.pid(),
            model_id: s.model_id.as_deref().map(Cow::Borrowed),
            context_window_size: u.context_window_size,
            context_tokens: u.context_tokens,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            rate_limits: Cow::Borrowed(&u.rate_limits),
            cpu_percent: s.cpu_percent.map(round1),
            rss_bytes: s.rss_bytes,
            agent_version: s.agent_version.as_deref().map(Cow::Borrowed),
            prompt_cache: u.prompt_cache,
            turn_id: s.turn_id.as_deref().map(Cow::Borrowed),
            title: s.title.as_deref().map(Cow::Borrowed),
            request_log: Cow::Borrowed(&s.request_log),
            host: Cow::Borrowed(s.host.as_str()),
            remote: s.is_remote(),
            stale: s.remote.is_some_and(|r| r.stale),
        }
    }

    /// The same view, owning its text (for messages that outlive the session they describe).
    pub fn into_owned(self) -> SessionView<'static> {
        fn own(t: Text<'_>) -> Text<'static> {
            Cow::Owned(t.into_owned())
        }
        let SessionView {
            id,
            id_short,
            agent_type,
            model,
            status,
            status_label,
            activity_detail,
            should_blink,
            status_icon,
            context_percentage,
            context_display,
            context_warning,
            context_critical,
            cost_usd,
            cost_display,
            duration_seconds,
            duration_display,
            lines_display,
            working_directory,
            needs_attention,
            last_activity_display,
            age_display,
            started_at,
            last_activity,
            tmux_pane,
            project_root,
            worktree_path,
            worktree_branch,
            parent_session_id,
            child_session_ids,
            first_prompt,
            harness,
            state,
            state_since,
            attention,
            error,
            pid,
            model_id,
            context_window_size,
            context_tokens,
            input_tokens,
            output_tokens,
            rate_limits,
            cpu_percent,
            rss_bytes,
            agent_version,
            prompt_cache,
            turn_id,
            title,
            request_log,
            host,
            remote,
            stale,
        } = self;
        SessionView {
            id: own(id),
            id_short: own(id_short),
            agent_type: own(agent_type),
            model: own(model),
            status: own(status),
            status_label: own(status_label),
            activity_detail: activity_detail.map(own),
            should_blink,
            status_icon: own(status_icon),
            context_percentage,
            context_display: own(context_display),
            context_warning,
            context_critical,
            cost_usd,
            cost_display: own(cost_display),
            duration_seconds,
            duration_display: own(duration_display),
            lines_display: own(lines_display),
            working_directory: working_directory.map(own),
            needs_attention,
            last_activity_display: own(last_activity_display),
            age_display: own(age_display),
            started_at: own(started_at),
            last_activity: own(last_activity),
            tmux_pane: tmux_pane.map(own),
            project_root: project_root.map(own),
            worktree_path: worktree_path.map(own),
            worktree_branch: worktree_branch.map(own),
            parent_session_id: parent_session_id.map(own),
            child_session_ids: Cow::Owned(child_session_ids.into_owned()),
            first_prompt: first_prompt.map(own),
            harness: own(harness),
            state,
            state_since: own(state_since),
            attention: attention.map(|a| Cow::Owned(a.into_owned())),
            error: error.map(own),
            pid,
            model_id: model_id.map(own),
            context_window_size,
            context_tokens,
            input_tokens,
            output_tokens,
            rate_limits: Cow::Owned(rate_limits.into_owned()),
            cpu_percent,
            rss_bytes,
            agent_version: agent_version.map(own),
            prompt_cache,
            turn_id: turn_id.map(own),
            title: title.map(own),
            request_log: Cow::Owned(request_log.into_owned()),
            host: own(host),
            remote,
            stale,
        }
    }
}

/// The pending request a session's JSON view (`SessionView`, as `list_sessions` sends it)
/// holds, as `atmctl pending --json` prints it and the web board's `/api/pending` serves it:
/// id, session, agent, project, pane, reason, tool, detail, questions, suggestions, whether it
/// can be answered from outside, and when it was asked. `None` when nothing is pending.
pub fn pending_of(session: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::{Value, json};
    let attention = session.get("attention")?;
    let request = attention.get("request")?;
    Some(json!({
        "id": request.get("id")?,
        "session_id": session.get("id"),
        "harness": session.get("harness"),
        "project": session.get("project_root").or(session.get("working_directory")),
        "tmux_pane": session.get("tmux_pane"),
        "reason": attention.get("reason"),
        "tool": attention.get("tool"),
        "detail": attention.get("detail"),
        "questions": attention.get("questions").cloned().unwrap_or(json!([])),
        "suggestions": attention.get("suggestions").cloned().unwrap_or(json!([])),
        "answerable": request.get("answerable").and_then(Value::as_bool).unwrap_or(false),
        "asked_at": request.get("asked_at"),
    }))
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

    #[test]
    fn borrowed_and_owned_views_serialize_alike() {
        let mut s = session();
        s.state = AgentState::NeedsPermission;
        s.attention = Some(crate::testing::permission_attention(
            "Bash",
            Some("rm -rf target"),
        ));
        s.children = vec!["agent-1".into(), "agent-2".into()];
        s.git.project_root = Some("/src/atm".into());
        s.git.branch = Some("main".into());
        s.usage.rate_limits.insert(
            "five_hour".into(),
            crate::model::RateLimit {
                used_percentage: 12.5,
                resets_at: None,
            },
        );
        s.activity = Some("Bash: \"quoted\" \u{1F980}".into());
        let now = Utc::now();
        let borrowed = SessionView::from_session(&s, now);
        let json = serde_json::to_string(&borrowed).unwrap();
        let owned = borrowed.clone().into_owned();
        assert_eq!(serde_json::to_string(&owned).unwrap(), json);
        let back: SessionView<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, owned);
        assert_eq!(back.child_session_ids.len(), 2);
        assert_eq!(
            back.attention.as_ref().map(|a| a.reason.as_str()),
            Some("permission")
        );
    }
}
