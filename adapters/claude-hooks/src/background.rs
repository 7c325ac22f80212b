//! What a `Stop` means when work the agent started runs on: Claude's `background_tasks`.
//!
//! Claude Code 2.1.332 runs subagents in the background by default and lets the model run
//! shells in the background. Its `Stop` hook then lists that work as `background_tasks`
//! (`{id, type, status, description, command?, agent_type?}`; an empty list when nothing is in
//! flight). The two kinds end a turn differently, and atm follows what Claude's screen and
//! session file say (both seen with the real CLI, `tests/tests/real_claude.rs`):
//!
//! - a background **subagent** (or workflow): the screen says "Waiting for 1 background agent
//!   to finish", the session file stays `busy`, and Claude goes on by itself with a
//!   `<task-notification>` prompt when it ends: the session is still working;
//! - a background **shell** (or monitor): the screen says "done · 1 shell still running", the
//!   session file says `shell`, and the user may type: the turn is over. Claude still wakes up
//!   by itself when the shell exits, which is then a short turn of its own.

use atm_core::event::AgentEvent;
use atm_core::fields;
use atm_core::serde_json::Value;
use atm_core::text::one_line_preview;

/// How many listed tasks are looked at; Claude lists what one session started.
const MAX_TASKS: usize = 32;
/// The label's length, in characters.
const WORK_CHARS: usize = 80;

/// The event a main-agent `Stop` amounts to, given its `background_tasks`.
pub fn turn_end(tasks: Option<&Value>) -> AgentEvent {
    let in_flight: Vec<&atm_core::fields::Object> = tasks
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .take(MAX_TASKS)
                .filter_map(Value::as_object)
                .filter(|t| !fields::opt_str(t, "status").is_some_and(is_over))
                .collect()
        })
        .unwrap_or_default();
    let Some(first) = in_flight.first() else {
        return AgentEvent::TurnFinished;
    };
    let awaited = in_flight
        .iter()
        .any(|t| fields::opt_str(t, "type").is_some_and(is_awaited));
    let label = |t: &atm_core::fields::Object| {
        let kind = fields::opt_str(t, "type").unwrap_or("task");
        let kind = if kind == "subagent" { "agent" } else { kind };
        let what = fields::opt_str(t, "command")
            .or_else(|| fields::opt_str(t, "description"))
            .or_else(|| fields::opt_str(t, "agent_type"));
        match what {
            Some(what) => format!("{kind} {what}"),
            None => kind.to_owned(),
        }
    };
    let work = match in_flight.len() {
        1 => label(first),
        n => format!("{n} tasks ({}, ...)", label(first)),
    };
    AgentEvent::TurnBackgrounded {
        awaited,
        work: one_line_preview(&work, WORK_CHARS),
    }
}

/// Statuses of work that no longer runs (a list may still name it at the end of a turn).
fn is_over(status: &str) -> bool {
    matches!(
        status,
        "completed" | "failed" | "killed" | "stopped" | "cancelled" | "error"
    )
}

/// Kinds of work Claude waits for and goes on after by itself.
fn is_awaited(kind: &str) -> bool {
    matches!(kind, "subagent" | "agent" | "local_agent" | "workflow")
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::serde_json::json;

    fn backgrounded(awaited: bool, work: &str) -> AgentEvent {
        AgentEvent::TurnBackgrounded {
            awaited,
            work: work.to_owned(),
        }
    }

    #[test]
    fn a_background_subagent_keeps_the_turn_going() {
        // As Claude Code 2.1.332 sent it (tests/agents/recorded).
        let tasks = json!([{"id": "a3e5331346d83821e", "type": "subagent", "status": "running",
            "description": "Scripted subagent", "agent_type": "general-purpose"}]);
        assert_eq!(
            turn_end(Some(&tasks)),
            backgrounded(true, "agent Scripted subagent")
        );
    }

    #[test]
    fn a_background_shell_ends_the_turn_but_is_shown() {
        let tasks = json!([{"id": "bf33d3ta5", "type": "shell", "status": "running",
            "description": "Run the scripted command in the background", "command": "sleep 6"}]);
        assert_eq!(turn_end(Some(&tasks)), backgrounded(false, "shell sleep 6"));
        let both = json!([
            {"type": "shell", "status": "running", "command": "npm run dev"},
            {"type": "subagent", "status": "pending", "description": "Explore"},
        ]);
        assert_eq!(
            turn_end(Some(&both)),
            backgrounded(true, "2 tasks (shell npm run dev, ...)")
        );
    }

    #[test]
    fn nothing_in_flight_is_a_plain_turn_end() {
        for tasks in [
            None,
            Some(json!([])),
            Some(json!("nonsense")),
            Some(json!([1, null, "x"])),
            Some(json!([{"type": "subagent", "status": "completed"}])),
        ] {
            assert_eq!(
                turn_end(tasks.as_ref()),
                AgentEvent::TurnFinished,
                "{tasks:?}"
            );
        }
    }

    #[test]
    fn hostile_labels_are_one_short_line() {
        let long = "x\u{202e}\n".repeat(500);
        let tasks = json!([{"type": long, "status": 7, "description": long}]);
        let AgentEvent::TurnBackgrounded { awaited, work } = turn_end(Some(&tasks)) else {
            panic!("in flight")
        };
        assert!(!awaited);
        assert!(work.chars().count() <= WORK_CHARS, "{work}");
        assert!(!work.contains('\n'));
    }
}
