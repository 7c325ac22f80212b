//! Limits on what one session may hold, and the one function that enforces them.
//!
//! Whatever adapters send, a session's memory stays bounded: every free-text field is cut (by
//! characters, never inside one) to its limit here, after every change the state machine makes
//! and before any record enters the registry. A module of its own so that the state machine,
//! the registry and the translators read the same numbers without depending on each other.

use crate::model::{Session, SessionId};
use crate::text::truncate_chars;

pub const ID: usize = 256;
pub const PATH: usize = 4096;
pub const NAME: usize = 128;
pub const PREVIEW: usize = 200;
pub const FIRST_PROMPT: usize = 200;
pub const CHILDREN: usize = 64;
pub const RETIRED_IDS: usize = 8;
/// Rate-limit windows kept per session (Claude reports two).
pub const RATE_LIMITS: usize = 8;

/// How far in the future a session's times may be before they are taken for a clock that was
/// wrong (a snapshot written by a clock that ran ahead, a clock set back while running).
pub const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(1);

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
    }
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
