//! `claude-statusline`: Claude Code's status-line data (model, cost, context window, rate
//! limits, version, worktree) as session usage.
//!
//! Claude runs `atm-hook statusline` as its status-line command; `atm-hook` forwards the JSON
//! as a protocol-v1 `status_update` on the shared ingest socket (by default the same
//! `hooks.sock` as `claude-hooks`). This crate is a translator: [`parse_status_line`] (pure)
//! turns the JSON into a usage update, which never changes a session's state, and
//! [`ClaudeStatusLine`] hands it to atm-core's generic ingest adapter. A client that sets
//! `"want_reply": true` gets the session's current view back (`session_updated`), which is what
//! `atm-hook statusline` prints the live state from.

pub mod parse;

use atm_core::event::AgentEvent;
use atm_core::fields;
use atm_core::ingest::IngestMessage;
use atm_core::ingest_adapter::Translation;
use atm_core::model::Harness;
use atm_core::protocol::WireError;

pub use parse::{StatusLine, parse_status_line};

atm_core::translator! {
    /// Claude Code's status line, for the generic ingest adapter.
    pub struct ClaudeStatusLine as "claude-statusline", adapter ClaudeStatuslineAdapter;
    harness: Harness::CLAUDE, agent: "Claude Code status line",
    routes: &["status_update", "status_update:claude"],
    description: "Claude Code status-line data (cost, context, model, rate limits) sent by atm-hook",
    translate: translate_message,
}

/// One `status_update`: a usage update for the session, and the session's view back when the
/// client asks (`want_reply`).
fn translate_message(msg: &IngestMessage) -> Result<Translation, WireError> {
    let data = fields::data_object(&msg.raw.body, "Claude's status-line JSON")?;
    let status = parse::parse_status_object(data)?;
    let event = AgentEvent::UsageUpdated(Box::new(status.usage));
    let mut t = Translation::new("status_line", status.session_id, event);
    t.pid = status.pid;
    t.tmux_pane = status.tmux_pane;
    t.cwd = status.cwd;
    t.want_reply = msg.wants_reply();
    Ok(t)
}
