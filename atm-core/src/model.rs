//! The agent-neutral domain model: who a session is (identity), what it is doing (state and
//! attention) and what it has cost (usage).
//!
//! A session is one running agent process. Its internal key is agent kind + PID + process start
//! time, because PIDs are reused and the agent's own session id changes on `/clear`, resume and
//! fork. The agent's id ([`SessionId`]) is an attribute of the record and is what clients see.

use std::fmt;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::host::HostId;
use crate::request::{PendingRequest, Question, RequestRecord};

/// The agent's own session id (Claude's `session_id`), or `pending-<pid>` until it is known.
/// This is the `id` clients see; it can change for the same process.
///
/// Shared (`Arc<str>`): the record, its key, the registry's indexes and every sink's table hold
/// the same id, so a copy is a reference count, not an allocation per holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Arc<str>);

impl SessionId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(Arc::from(id.into()))
    }

    /// The placeholder id of a process found before any hook named its session.
    pub fn pending(pid: u32) -> Self {
        Self::new(format!("pending-{pid}"))
    }

    pub fn is_pending(&self) -> bool {
        self.0.starts_with("pending-")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

/// Which agent runs the session: `claude`, `codex`, `gemini`, `pi`, `opencode`, or any name an
/// out-of-tree adapter brings. A string, not an enum, so new agents need no change here.
///
/// The built-in names are interned: every session of an agent shares one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Harness(Arc<str>);

/// The built-in harness names, allocated once.
static KNOWN_HARNESSES: LazyLock<[Arc<str>; 5]> = LazyLock::new(|| {
    [
        Harness::CLAUDE,
        Harness::CODEX,
        Harness::GEMINI,
        Harness::PI,
        Harness::OPENCODE,
    ]
    .map(Arc::from)
});

impl Harness {
    pub const CLAUDE: &'static str = "claude";
    pub const CODEX: &'static str = "codex";
    pub const GEMINI: &'static str = "gemini";
    pub const PI: &'static str = "pi";
    pub const OPENCODE: &'static str = "opencode";

    pub fn new(name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        match KNOWN_HARNESSES.iter().find(|k| &***k == name) {
            Some(known) => Self(known.clone()),
            None => Self(Arc::from(name)),
        }
    }

    pub fn claude() -> Self {
        Self::new(Self::CLAUDE)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Harness {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl fmt::Display for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running process, identified so that a reused PID is never mistaken for the old process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

/// The registry's internal key. Sessions whose agent reports a PID are keyed by process;
/// the others by their session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum SessionKey {
    Process {
        harness: Harness,
        pid: u32,
        start_time: u64,
    },
    Id {
        harness: Harness,
        id: SessionId,
    },
    /// A session of another machine, mirrored here (the `nats` adapter): its host and the key
    /// it has there. Never a local process: nothing here watches its PID.
    Remote {
        host: HostId,
        key: Box<SessionKey>,
    },
}

impl SessionKey {
    pub fn harness(&self) -> &Harness {
        match self {
            Self::Process { harness, .. } | Self::Id { harness, .. } => harness,
            Self::Remote { key, .. } => key.harness(),
        }
    }

    /// The host of a mirrored session's key (`None` for this machine's own sessions).
    pub fn remote_host(&self) -> Option<&HostId> {
        match self {
            Self::Remote { host, .. } => Some(host),
            _ => None,
        }
    }
}

/// What a session is doing. `ended` sessions are removed, so there is no `Ended` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Exists, no prompt yet.
    Starting,
    Working,
    /// Blocked on a permission dialog.
    NeedsPermission,
    /// Blocked on a question, an elicitation or a plan approval.
    NeedsInput,
    /// Turn finished; waiting for the next prompt.
    Idle,
}

impl AgentState {
    pub const ALL: [AgentState; 5] = [
        Self::Starting,
        Self::Working,
        Self::NeedsPermission,
        Self::NeedsInput,
        Self::Idle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Working => "working",
            Self::NeedsPermission => "needs_permission",
            Self::NeedsInput => "needs_input",
            Self::Idle => "idle",
        }
    }

    pub fn needs_attention(self) -> bool {
        matches!(self, Self::NeedsPermission | Self::NeedsInput)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session needs its user: `permission` / `input` / `plan_approval` / ..., the tool and a
/// short preview of the command, file or question (already cut by characters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The subagent that asked, when a subagent did: its next event means the request was
    /// answered (see `state::speaker`). Internal bookkeeping, so not serialized: not on the
    /// wire, and not in the snapshot (after a restart the parent's next event clears the wait).
    #[serde(skip)]
    pub subagent_id: Option<String>,
    /// The rules the agent offers to add with an "always allow" answer (Claude's
    /// `permission_suggestions`), in its order. What answering from outside echoes back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<PermissionSuggestion>,
    /// The questions asked, when the wait is a question (Claude's `AskUserQuestion`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<Question>,
    /// The request this wait is, for answering it from outside the terminal
    /// ([`crate::request`]). Opened by the state machine with the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<PendingRequest>,
}

impl Attention {
    /// True when `other` asks the same thing (reason, tool, preview, questions, by the same
    /// asker): a wait said again, not a new one.
    pub fn same_wait(&self, other: &Attention) -> bool {
        self.reason == other.reason
            && self.tool == other.tool
            && self.detail == other.detail
            && self.questions == other.questions
            && self.subagent_id == other.subagent_id
    }
}

/// One rule an agent offers to remember with an answer: Claude's `permission_suggestions`
/// entry (`{type: "addRules", rules, behavior, destination}`, `addDirectories`, `setMode`, ...).
/// `label` says it for people ("allow Bash(npm test:*) for this session"); `rule` is the
/// agent's own JSON, kept to be echoed back (as `updatedPermissions`) when the request is
/// answered "always".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionSuggestion {
    pub label: String,
    pub rule: serde_json::Value,
}

/// One rate-limit window reported by the agent (Claude's five-hour and seven-day windows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub used_percentage: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

/// Rate-limit windows, by name (`five_hour`, `seven_day`, ...).
pub type RateLimits = std::collections::BTreeMap<String, RateLimit>;

/// Cost, duration and context figures. Every field is optional in an update: an absent figure
/// changes nothing already known (a status line without `cost` never zeroes the cost).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cost_usd: f64,
    pub total_duration_ms: u64,
    pub api_duration_ms: u64,
    pub lines_added: u64,
    pub lines_removed: u64,
    /// Tokens currently in the context window.
    pub context_tokens: u64,
    pub context_window_size: u64,
    /// Used share of the context window, 0-100.
    pub context_used_percentage: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "RateLimits::is_empty")]
    pub rate_limits: RateLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<PromptCache>,
}

/// The agent's prompt cache, as it reports it (Claude's status line `prompt_cache`): whether
/// the next request would be served warm, how much has been, and what going cold would cost.
/// What users weigh before leaving a session idle past the cache's time to live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptCache {
    pub warm: bool,
    /// Share of requests served from the cache, 0-1.
    pub hit_ratio: f64,
    /// When the cache goes cold if nothing is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub requests: u64,
    pub misses: u64,
    /// Input tokens that would be written to the cache again once it is cold.
    pub recache_tokens_if_cold: u64,
}

/// A partial usage report, as adapters send it. `None` leaves the known value alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageUpdate {
    pub model_id: Option<String>,
    pub model_name: Option<String>,
    pub agent_version: Option<String>,
    pub cost_usd: Option<f64>,
    pub total_duration_ms: Option<u64>,
    pub api_duration_ms: Option<u64>,
    pub lines_added: Option<u64>,
    pub lines_removed: Option<u64>,
    pub context_tokens: Option<u64>,
    pub context_window_size: Option<u64>,
    pub context_used_percentage: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub rate_limits: Option<RateLimits>,
    pub prompt_cache: Option<PromptCache>,
    /// The session's title, when the agent names its sessions (opencode's `title`).
    pub title: Option<String>,
    pub cwd: Option<String>,
    /// Git facts; `Some("")` clears the known value (the cwd is no longer in a repository).
    pub project_root: Option<String>,
    pub worktree_path: Option<String>,
    pub branch: Option<String>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
}

impl UsageUpdate {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Git facts for a session's working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitFacts {
    pub project_root: Option<String>,
    pub worktree_path: Option<String>,
    pub branch: Option<String>,
}

/// The full record the registry keeps for one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub key: SessionKey,
    pub harness: Harness,
    pub id: SessionId,
    pub process: Option<ProcessIdentity>,
    /// `main`, or the subagent type for a session that is itself a subagent.
    pub agent_type: String,
    pub agent_version: Option<String>,
    pub model_id: Option<String>,
    pub model_name: Option<String>,
    pub state: AgentState,
    pub state_since: DateTime<Utc>,
    pub attention: Option<Attention>,
    /// What it is doing now: a tool name, `Thinking`, `Compacting`, `Permission`, ...
    pub activity: Option<String>,
    /// The error that ended the last turn (`rate_limit`, `overloaded`, ...), cleared by the next prompt.
    pub last_error: Option<String>,
    pub cwd: Option<String>,
    pub git: GitFacts,
    pub tmux_pane: Option<String>,
    pub usage: Usage,
    pub first_prompt: Option<String>,
    /// Running subagents (their agent ids), in start order.
    pub children: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    /// When the current (or last) turn started: the first prompt or tool after idle.
    pub turn_started_at: Option<DateTime<Utc>>,
    /// The agent's id of the current (or last) turn, when it names turns (Codex's `turn_id`,
    /// Claude's `prompt_id`).
    #[serde(default)]
    pub turn_id: Option<String>,
    /// The session's title, when the agent names its sessions (opencode's `title`).
    #[serde(default)]
    pub title: Option<String>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Which adapter saw this session first (`claude-hooks`, `proc-discovery`, ...).
    pub source: String,
    /// When an agent event (a hook) last had its say on the state. Until one has, what discovery
    /// reads from the agent itself (its sessions file) drives the state; after, only a status
    /// newer than this does (see [`crate::state::hint`]).
    #[serde(default)]
    pub last_hook_at: Option<DateTime<Utc>>,
    /// The turn ended while the agent waits for work it runs in the background, and it will go
    /// on by itself ([`crate::event::AgentEvent::TurnBackgrounded`] with `awaited`). Claude's
    /// session file says `idle` for a moment between that work's end and the agent going on;
    /// [`crate::state::hint`] does not take that moment for the turn's end.
    #[serde(default)]
    pub awaits_background: bool,
    /// How its last requests ended (answered where and by whom, or withdrawn), newest last,
    /// at most [`crate::limits::REQUEST_LOG`]: the audit trail of answers given through atm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_log: Vec<RequestRecord>,
    /// The machine the session runs on. The registry stamps its own host on every session it
    /// creates; a mirrored session carries the host that owns it.
    #[serde(default)]
    pub host: HostId,
    /// Set for a session mirrored from another machine ([`crate::fleet`]): what this daemon
    /// knows of its link to that host. `None` for this machine's own sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteLink>,
}

/// What a daemon knows of the link to the host a mirrored session comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLink {
    /// The host's heartbeat has not been seen for longer than the mirror allows: what is shown
    /// may be out of date.
    #[serde(default)]
    pub stale: bool,
}

impl Session {
    /// A fresh record in `starting` state.
    pub fn new(
        key: SessionKey,
        id: SessionId,
        process: Option<ProcessIdentity>,
        source: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            harness: key.harness().clone(),
            key,
            id,
            process,
            agent_type: "main".to_owned(),
            agent_version: None,
            model_id: None,
            model_name: None,
            state: AgentState::Starting,
            state_since: now,
            attention: None,
            activity: None,
            last_error: None,
            cwd: None,
            git: GitFacts::default(),
            tmux_pane: None,
            usage: Usage::default(),
            first_prompt: None,
            children: Vec::new(),
            started_at: now,
            last_activity: now,
            turn_started_at: None,
            turn_id: None,
            title: None,
            cpu_percent: None,
            rss_bytes: None,
            source: source.to_owned(),
            last_hook_at: None,
            awaits_background: false,
            request_log: Vec::new(),
            host: HostId::default(),
            remote: None,
        }
    }

    /// True for a session mirrored from another machine.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.map(|p| p.pid)
    }

    /// Applies a partial usage report. Absent figures keep their known values.
    pub fn apply_usage(&mut self, u: &UsageUpdate) {
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        fn set_opt<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        set_opt(&mut self.model_id, &u.model_id);
        set_opt(&mut self.model_name, &u.model_name);
        set_opt(&mut self.agent_version, &u.agent_version);
        set_opt(
            &mut self.title,
            &u.title
                .as_deref()
                .map(|t| crate::text::one_line_preview(t, crate::limits::PREVIEW)),
        );
        let us = &mut self.usage;
        set(
            &mut us.cost_usd,
            &u.cost_usd.filter(|c| c.is_finite() && *c >= 0.0),
        );
        set(&mut us.total_duration_ms, &u.total_duration_ms);
        set(&mut us.api_duration_ms, &u.api_duration_ms);
        set(&mut us.lines_added, &u.lines_added);
        set(&mut us.lines_removed, &u.lines_removed);
        set(&mut us.context_tokens, &u.context_tokens);
        set(&mut us.context_window_size, &u.context_window_size);
        set(
            &mut us.context_used_percentage,
            &u.context_used_percentage
                .filter(|p| p.is_finite())
                .map(|p| p.clamp(0.0, 100.0)),
        );
        set(&mut us.input_tokens, &u.input_tokens);
        set(&mut us.output_tokens, &u.output_tokens);
        if let Some(rl) = &u.rate_limits {
            for (name, limit) in rl {
                us.rate_limits.insert(name.clone(), limit.clone());
            }
        }
        if let Some(cache) = u.prompt_cache {
            us.prompt_cache = Some(PromptCache {
                hit_ratio: if cache.hit_ratio.is_finite() {
                    cache.hit_ratio.clamp(0.0, 1.0)
                } else {
                    0.0
                },
                ..cache
            });
        }
        set_opt(&mut self.cwd, &u.cwd);
        // Git facts: an empty string clears (the cwd left the repository).
        fn set_git(slot: &mut Option<String>, v: &Option<String>) {
            match v.as_deref() {
                None => {}
                Some("") => *slot = None,
                Some(x) => *slot = Some(x.to_owned()),
            }
        }
        set_git(&mut self.git.project_root, &u.project_root);
        set_git(&mut self.git.worktree_path, &u.worktree_path);
        set_git(&mut self.git.branch, &u.branch);
        set_opt(
            &mut self.cpu_percent,
            &u.cpu_percent.filter(|c| c.is_finite() && *c >= 0.0),
        );
        set_opt(&mut self.rss_bytes, &u.rss_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_harnesses_share_one_allocation_and_others_still_work() {
        let a = Harness::claude();
        let b: Harness = serde_json::from_str("\"claude\"").unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(
            Harness::new(String::from("codex")),
            Harness::new(Harness::CODEX)
        );
        let custom: Harness = serde_json::from_str("\"my-agent\"").unwrap();
        assert_eq!(custom.as_str(), "my-agent");
        assert_eq!(serde_json::to_string(&custom).unwrap(), "\"my-agent\"");
    }

    #[test]
    fn session_ids_are_shared_not_copied() {
        let id = SessionId::new("8e11bfb5-7dc2");
        let key = SessionKey::Id {
            harness: Harness::claude(),
            id: id.clone(),
        };
        let SessionKey::Id { id: in_key, .. } = &key else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(&id.0, &in_key.0));
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"8e11bfb5-7dc2\"");
        assert!(SessionId::pending(42).is_pending());
    }
}
