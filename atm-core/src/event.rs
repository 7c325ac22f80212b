//! `AgentEvent`: the one vocabulary every input adapter translates into. The registry never sees
//! vendor JSON, so adding an agent means writing a translator, not touching the registry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    AgentState, Harness, PermissionSuggestion, ProcessIdentity, SessionId, UsageUpdate,
};
use crate::request::Question;

/// Why a session (re)started. `Clear`, `Resume` and `Fork` bring a new session id for the same
/// process: the registry re-keys instead of adding a second row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartSource {
    Startup,
    Resume,
    Clear,
    Compact,
    Fork,
    Other,
}

impl StartSource {
    pub fn parse(s: &str) -> Self {
        match s {
            "startup" => Self::Startup,
            "resume" => Self::Resume,
            "clear" => Self::Clear,
            "compact" => Self::Compact,
            "fork" => Self::Fork,
            _ => Self::Other,
        }
    }
}

/// What an agent did, in agent-neutral terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    SessionStarted {
        source: StartSource,
        model: Option<String>,
    },
    /// The session is over. `continues` is true for `/clear` and resume, where a new id follows
    /// for the same process: the session is kept, not removed.
    SessionEnded {
        reason: String,
        continues: bool,
    },
    PromptSubmitted {
        prompt: Option<String>,
    },
    ToolStarted {
        tool: String,
        detail: Option<String>,
    },
    /// A tool call ended, whether it succeeded, failed or was denied: the agent goes on
    /// thinking either way, which is all a watcher needs (no sink shows how a tool ended).
    ToolFinished {
        tool: Option<String>,
    },
    PermissionRequested {
        tool: String,
        detail: Option<String>,
        /// What the agent offers to remember with an "always" answer (may be empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        suggestions: Vec<PermissionSuggestion>,
    },
    /// The agent asks its user questions with choices (Claude's `AskUserQuestion`): a wait that
    /// can be answered from outside the terminal, with the answers.
    QuestionsAsked {
        tool: String,
        detail: Option<String>,
        questions: Vec<Question>,
    },
    /// A question, elicitation or approval. `reason` is a short machine word (`input`,
    /// `elicitation`, `plan_approval`, ...).
    InputRequested {
        reason: String,
        tool: Option<String>,
        detail: Option<String>,
    },
    TurnFinished,
    /// The turn ended while work the agent started runs on in the background (Claude's `Stop`
    /// with `background_tasks`). `awaited`: the agent waits for that work and goes on by
    /// itself when it ends (a background subagent: "Waiting for 1 background agent"), so the
    /// session is still working; otherwise (a background shell or monitor) the turn is over
    /// and the work is only shown. `work` is a short label of what runs.
    TurnBackgrounded {
        awaited: bool,
        work: String,
    },
    TurnFailed {
        error: String,
    },
    Compacting,
    CompactFinished,
    /// A subagent started; the session lists it among its children (by id) until it stops.
    SubagentStarted {
        agent_id: String,
    },
    SubagentStopped {
        agent_id: String,
    },
    UsageUpdated(Box<UsageUpdate>),
    CwdChanged {
        cwd: String,
    },
    /// A notification from the agent. `kind` is the agent's own word; the adapter maps the
    /// ones that mean a state (permission prompt, elicitation) to the events above.
    Notification {
        kind: String,
        message: Option<String>,
    },
    /// Something happened (an event with no meaning for state): only `last_activity` moves.
    Activity {
        what: String,
    },
    /// A late, coarser echo of something the session may already show: Claude's
    /// `permission_prompt` notification about 6 s after the `PermissionRequest` that named the
    /// tool and command, its `idle_prompt` 60 s after a question was asked, opencode's repeated
    /// `running` tool parts and `busy` statuses while a permission is pending. The state machine
    /// decides: if the session already waits on its user, the richer attention stays and only
    /// `last_activity` moves; otherwise `of` applies as itself. An adapter says what the event
    /// is and never reads the session to decide.
    Reminder {
        of: Box<AgentEvent>,
    },
}

impl AgentEvent {
    /// A short stable name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SessionStarted { .. } => "session_started",
            Self::SessionEnded { .. } => "session_ended",
            Self::PromptSubmitted { .. } => "prompt_submitted",
            Self::ToolStarted { .. } => "tool_started",
            Self::ToolFinished { .. } => "tool_finished",
            Self::PermissionRequested { .. } => "permission_requested",
            Self::QuestionsAsked { .. } => "questions_asked",
            Self::InputRequested { .. } => "input_requested",
            Self::TurnFinished => "turn_finished",
            Self::TurnBackgrounded { .. } => "turn_backgrounded",
            Self::TurnFailed { .. } => "turn_failed",
            Self::Compacting => "compacting",
            Self::CompactFinished => "compact_finished",
            Self::SubagentStarted { .. } => "subagent_started",
            Self::SubagentStopped { .. } => "subagent_stopped",
            Self::UsageUpdated(_) => "usage_updated",
            Self::CwdChanged { .. } => "cwd_changed",
            Self::Notification { .. } => "notification",
            Self::Activity { .. } => "activity",
            Self::Reminder { .. } => "reminder",
        }
    }

    /// True for an event that asks the user something (a wait the user must answer).
    pub fn asks(&self) -> bool {
        matches!(
            self,
            Self::PermissionRequested { .. }
                | Self::QuestionsAsked { .. }
                | Self::InputRequested { .. }
        )
    }

    /// `of`, as a reminder of a wait that may already be shown ([`AgentEvent::Reminder`]).
    pub fn reminder(of: AgentEvent) -> Self {
        Self::Reminder { of: Box::new(of) }
    }
}

/// Who an event is about, as the adapter knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSource {
    pub harness: Harness,
    /// The agent's session id, as carried by the event.
    pub session_id: SessionId,
    /// The agent process, when the adapter could identify it (PID + start time).
    pub process: Option<ProcessIdentity>,
    pub tmux_pane: Option<String>,
    pub cwd: Option<String>,
    /// Set when the event comes from inside a subagent of the session (Claude's `agent_id`).
    pub subagent_id: Option<String>,
    /// The agent's id of the turn the event belongs to (Codex's `turn_id`, Claude's
    /// `prompt_id`); the session shows its current turn.
    #[serde(default)]
    pub turn_id: Option<String>,
    /// The adapter's name, for provenance.
    pub adapter: String,
}

impl EventSource {
    pub fn new(harness: Harness, session_id: SessionId, adapter: &str) -> Self {
        Self {
            harness,
            session_id,
            process: None,
            tmux_pane: None,
            cwd: None,
            subagent_id: None,
            turn_id: None,
            adapter: adapter.to_owned(),
        }
    }
}

/// An event with its subject and time: what adapters hand to `RegistryHandle::apply_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub source: EventSource,
    pub event: AgentEvent,
    pub at: DateTime<Utc>,
}

impl EventEnvelope {
    pub fn now(source: EventSource, event: AgentEvent) -> Self {
        Self {
            source,
            event,
            at: Utc::now(),
        }
    }
}

/// A process found by a discovery adapter: what `RegistryHandle::register_discovered` takes.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub harness: Harness,
    pub process: ProcessIdentity,
    /// The agent's session id, when the adapter could learn it without a hook.
    pub session_id: Option<SessionId>,
    pub cwd: Option<String>,
    pub tmux_pane: Option<String>,
    /// What the agent itself said it was doing: sets the state until a hook has, and after
    /// that when it is newer than the last hook (see [`crate::state::hint`]).
    pub state_hint: Option<AgentState>,
    /// When the agent wrote `state_hint`, by its own clock (Claude's `statusUpdatedAt`); `None`
    /// when it does not say.
    pub state_hint_at: Option<DateTime<Utc>>,
    pub usage: UsageUpdate,
    pub adapter: String,
}

impl Discovered {
    /// `process`, a `harness` agent found by `adapter`, with nothing else known about it yet.
    pub fn new(harness: Harness, process: ProcessIdentity, adapter: impl Into<String>) -> Self {
        Self {
            harness,
            process,
            session_id: None,
            cwd: None,
            tmux_pane: None,
            state_hint: None,
            state_hint_at: None,
            usage: UsageUpdate::default(),
            adapter: adapter.into(),
        }
    }
}
