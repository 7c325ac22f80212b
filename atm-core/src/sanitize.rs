//! Enforcing [`crate::limits`] on a session: the one place a record is cut to size.
//!
//! Whatever adapters send, a session's memory stays bounded: every free-text field is cut (by
//! characters, never inside one) to its limit here, after every change the state machine makes
//! and before any record enters the registry; times from a clock that ran ahead are brought
//! back.

use crate::limits::{
    CHILDREN, FIRST_PROMPT, FUTURE_TOLERANCE, ID, NAME, PATH, PREVIEW, QUESTION_OPTIONS, QUESTIONS,
    RATE_LIMITS, REQUEST_LOG, SUGGESTION_BYTES, SUGGESTIONS,
};
use crate::model::{Session, SessionId};
use crate::text::truncate_chars;

/// Brings times of `s` that lie in the future (beyond [`FUTURE_TOLERANCE`]) back to `now`: a
/// session stamped in the future would never expire, and no event would ever look newer.
pub fn clamp_future_times(s: &mut Session, now: chrono::DateTime<chrono::Utc>) {
    let limit = now + FUTURE_TOLERANCE;
    for t in [&mut s.last_activity, &mut s.state_since, &mut s.started_at] {
        if *t > limit {
            *t = now;
        }
    }
    if s.turn_started_at.is_some_and(|t| t > limit) {
        s.turn_started_at = Some(now);
    }
    if s.last_hook_at.is_some_and(|t| t > limit) {
        s.last_hook_at = Some(now);
    }
}

/// Cuts every free-text field of `s` to its limit (by characters), so no adapter can grow a
/// session.
pub fn sanitize(s: &mut Session) {
    fn cut(v: &mut Option<String>, max: usize) {
        if let Some(x) = v
            && x.chars().count() > max
        {
            *x = truncate_chars(x, max);
        }
    }
    fn cut_str(x: &mut String, max: usize) {
        if x.chars().count() > max {
            *x = truncate_chars(x, max);
        }
    }
    if s.id.as_str().chars().count() > ID {
        s.id = SessionId::new(truncate_chars(s.id.as_str(), ID));
    }
    cut(&mut s.cwd, PATH);
    cut(&mut s.git.project_root, PATH);
    cut(&mut s.git.worktree_path, PATH);
    cut(&mut s.git.branch, NAME * 2);
    cut(&mut s.tmux_pane, NAME);
    cut(&mut s.model_id, NAME);
    cut(&mut s.model_name, NAME);
    cut(&mut s.agent_version, NAME);
    cut(&mut s.activity, NAME);
    cut(&mut s.last_error, PREVIEW);
    cut(&mut s.first_prompt, FIRST_PROMPT);
    if let Some(a) = &mut s.attention {
        if a.reason.chars().count() > NAME {
            a.reason = truncate_chars(&a.reason, NAME);
        }
        cut(&mut a.tool, NAME);
        cut(&mut a.detail, PREVIEW);
        cut(&mut a.subagent_id, ID);
        a.suggestions.truncate(SUGGESTIONS);
        a.suggestions.retain(|r| {
            serde_json::to_vec(&r.rule).is_ok_and(|json| json.len() <= SUGGESTION_BYTES)
        });
        for r in &mut a.suggestions {
            if r.label.chars().count() > PREVIEW {
                r.label = truncate_chars(&r.label, PREVIEW);
            }
        }
        a.questions.truncate(QUESTIONS);
        for q in &mut a.questions {
            cut_str(&mut q.question, PREVIEW);
            cut(&mut q.header, NAME);
            q.options.truncate(QUESTION_OPTIONS);
            for o in &mut q.options {
                cut_str(&mut o.label, NAME);
                cut(&mut o.description, PREVIEW);
            }
        }
    }
    let over = s.request_log.len().saturating_sub(REQUEST_LOG);
    s.request_log.drain(..over);
    for r in &mut s.request_log {
        cut(&mut r.tool, NAME);
    }
    cut(&mut s.turn_id, ID);
    cut(&mut s.title, PREVIEW);
    s.children.truncate(CHILDREN);
    for c in &mut s.children {
        if c.chars().count() > ID {
            *c = truncate_chars(c, ID);
        }
    }
    if s.usage.rate_limits.len() > RATE_LIMITS {
        let keep: Vec<String> = s
            .usage
            .rate_limits
            .keys()
            .take(RATE_LIMITS)
            .cloned()
            .collect();
        s.usage.rate_limits.retain(|k, _| keep.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attention, PermissionSuggestion};

    #[test]
    fn a_waits_rules_and_the_turn_id_are_bounded() {
        let mut s = crate::testing::claude_session("s", chrono::Utc::now());
        let rule = |n: usize| PermissionSuggestion {
            label: "l".repeat(n),
            rule: serde_json::json!({"type": "addDirectories", "directories": ["d".repeat(n)]}),
        };
        s.attention = Some(Attention {
            reason: "permission".into(),
            suggestions: vec![rule(10), rule(5000), rule(300), rule(1), rule(2), rule(3)],
            ..Attention::default()
        });
        s.turn_id = Some("t".repeat(10 * ID));
        sanitize(&mut s);
        let kept = &s.attention.as_ref().unwrap().suggestions;
        // The first four, less the one whose JSON is too large.
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|r| r.label.chars().count() <= PREVIEW));
        assert_eq!(s.turn_id.unwrap().chars().count(), ID);
    }
}
