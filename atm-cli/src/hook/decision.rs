//! Answering Claude Code's `PermissionRequest` from outside the terminal.
//!
//! Claude runs this hook beside its own permission dialog: whichever answers first wins, and a
//! late hook answer is discarded. So atm-hook registers the request with the daemon
//! (`"await_decision": true`) and waits for its end: a decision made through atm (a
//! notification button, D-Bus, `atmctl approve`) is printed as Claude's `hookSpecificOutput`;
//! anything else (the request answered in the terminal, withdrawn, the daemon gone, a reply it
//! cannot read, the wait's time up) prints nothing, which Claude reads as "no decision": its
//! normal flow goes on. The hook never denies by itself and never blocks the dialog.
//!
//! The wait is bounded by [`DECISION_WAIT`] (under the 600 s hook timeout `atmctl setup
//! claude` installs), and [`DECISION_WAIT_ENV`] shortens it (`0` turns answering off).

use std::time::Duration;

use serde_json::{Map, Value, json};

/// How long atm-hook waits for a decision: just under the hook timeout `atmctl setup claude`
/// sets for `PermissionRequest` (600 s), so the hook ends by itself before Claude kills it.
pub const DECISION_WAIT: Duration = Duration::from_secs(590);
/// Replaces [`DECISION_WAIT`] (seconds, at most its value); `0` sends the event without
/// waiting, as for any other hook.
pub const DECISION_WAIT_ENV: &str = "ATM_HOOK_DECISION_WAIT_SECS";

/// The wait for a decision: [`DECISION_WAIT`], or what [`DECISION_WAIT_ENV`] says.
pub fn decision_wait() -> Duration {
    std::env::var(DECISION_WAIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DECISION_WAIT, |s| Duration::from_secs(s).min(DECISION_WAIT))
}

/// True when this hook event can be answered through atm: Claude's `PermissionRequest`
/// (`agent` unset or `claude`), with a wait that is not off.
pub fn wants_decision(agent: Option<&str>, event: &Map<String, Value>, wait: Duration) -> bool {
    matches!(agent, None | Some("claude"))
        && event.get("hook_event_name").and_then(Value::as_str) == Some("PermissionRequest")
        && !wait.is_zero()
}

/// What Claude is to read on stdout for the daemon's reply `reply` to the request `event`:
/// `Some` only for a `decision` that makes sense for it.
pub fn claude_output(reply: &[u8], event: &Map<String, Value>) -> Option<String> {
    let reply: Value = serde_json::from_slice(reply).ok()?;
    if reply.get("type").and_then(Value::as_str) != Some("decision") {
        return None;
    }
    let verdict = reply.get("verdict")?.as_object()?;
    let decision = match verdict.get("behavior").and_then(Value::as_str)? {
        "allow" => allow(verdict, event)?,
        "deny" => {
            let mut d = Map::new();
            d.insert("behavior".into(), "deny".into());
            if let Some(m) = verdict.get("message").and_then(Value::as_str) {
                d.insert("message".into(), m.into());
            }
            if verdict.get("interrupt").and_then(Value::as_bool) == Some(true) {
                d.insert("interrupt".into(), true.into());
            }
            Value::Object(d)
        }
        _ => return None,
    };
    let out = json!({"hookSpecificOutput": {
        "hookEventName": "PermissionRequest",
        "decision": decision,
    }});
    serde_json::to_string(&out).ok()
}

/// Claude's `allow`: with the rules to remember (`updatedPermissions`) and, for a question,
/// the tool's input with its `answers`, keyed by each question's text as Claude asked it
/// (the daemon only saw a cut, neutralised copy, so the keys come from the event itself).
fn allow(verdict: &Map<String, Value>, event: &Map<String, Value>) -> Option<Value> {
    let mut d = Map::new();
    d.insert("behavior".into(), "allow".into());
    if let Some(rules) = verdict
        .get("updated_permissions")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    {
        d.insert("updatedPermissions".into(), Value::Array(rules.clone()));
    }
    let answers = verdict
        .get("answers")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    if let Some(answers) = answers {
        let mut input = event.get("tool_input")?.as_object()?.clone();
        let questions = input.get("questions")?.as_array()?;
        let texts = questions
            .iter()
            .filter_map(|q| q.get("question").and_then(Value::as_str));
        let mut keyed = Map::new();
        for (question, answer) in texts.zip(answers) {
            keyed.insert(
                question.to_owned(),
                Value::String(answer.as_str()?.to_owned()),
            );
        }
        // An answer for each question, or none: a partial answer would look like a refusal.
        if keyed.len() != answers.len() {
            return None;
        }
        input.insert("answers".into(), Value::Object(keyed));
        d.insert("updatedInput".into(), Value::Object(input));
    }
    Some(Value::Object(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_claudes_permission_request_waits() {
        let ask = obj(json!({"hook_event_name": "PermissionRequest"}));
        let wait = Duration::from_secs(5);
        assert!(wants_decision(None, &ask, wait));
        assert!(wants_decision(Some("claude"), &ask, wait));
        assert!(!wants_decision(Some("codex"), &ask, wait));
        assert!(!wants_decision(None, &ask, Duration::ZERO));
        let other = obj(json!({"hook_event_name": "PreToolUse"}));
        assert!(!wants_decision(None, &other, wait));
    }

    #[test]
    fn verdicts_become_claudes_decisions() {
        let event = obj(json!({"hook_event_name": "PermissionRequest", "tool_name": "Bash"}));
        let out = |reply: Value| {
            claude_output(&serde_json::to_vec(&reply).unwrap(), &event)
                .map(|s| serde_json::from_str::<Value>(&s).unwrap())
        };
        assert_eq!(
            out(json!({"type": "decision", "verdict": {"behavior": "allow",
                "updated_permissions": [{"type": "addRules"}]}})),
            Some(
                json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                "decision": {"behavior": "allow", "updatedPermissions": [{"type": "addRules"}]}}})
            )
        );
        assert_eq!(
            out(
                json!({"type": "decision", "verdict": {"behavior": "deny", "message": "no",
                "interrupt": true}})
            ),
            Some(
                json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                "decision": {"behavior": "deny", "message": "no", "interrupt": true}}})
            )
        );
        // Anything but a decision is no decision.
        for reply in [
            json!({"type": "request_closed", "reason": "answered in the terminal"}),
            json!({"type": "decision", "verdict": {"behavior": "maybe"}}),
            json!({"type": "decision"}),
            json!({"type": "error", "code": "internal"}),
        ] {
            assert_eq!(out(reply.clone()), None, "{reply}");
        }
        assert_eq!(claude_output(b"not json", &event), None);
        assert_eq!(claude_output(b"\xff\xfe", &event), None);
    }

    #[test]
    fn answers_are_keyed_by_the_questions_claude_asked() {
        let input = json!({"questions": [
            {"question": "Which \u{202e}database?", "options": [{"label": "SQLite"}]},
            {"question": "Why?", "options": []}
        ]});
        let event = obj(json!({"hook_event_name": "PermissionRequest",
            "tool_name": "AskUserQuestion", "tool_input": input}));
        let reply = json!({"type": "decision", "verdict": {"behavior": "allow",
            "answers": ["SQLite", "small"]}});
        let out: Value = serde_json::from_str(
            &claude_output(&serde_json::to_vec(&reply).unwrap(), &event).unwrap(),
        )
        .unwrap();
        let updated = &out["hookSpecificOutput"]["decision"]["updatedInput"];
        assert_eq!(updated["questions"], input["questions"]);
        assert_eq!(
            updated["answers"],
            json!({"Which \u{202e}database?": "SQLite", "Why?": "small"})
        );
        // More answers than questions: no decision rather than a wrong one.
        let reply = json!({"type": "decision", "verdict": {"behavior": "allow",
            "answers": ["a", "b", "c"]}});
        assert_eq!(
            claude_output(&serde_json::to_vec(&reply).unwrap(), &event),
            None
        );
    }
}
