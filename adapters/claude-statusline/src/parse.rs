//! Claude Code status-line JSON -> [`UsageUpdate`], as a pure function.
//!
//! The status line is the only place Claude reports cost, context use, model display name and
//! rate limits. Each block can be absent or `null` (older versions, non-subscribers, the first
//! refresh of a session), and an absent figure must leave what is known alone, so every field
//! of the update is `None` unless the payload carries a usable value for it. Nothing here
//! touches state: a status line is data, not activity.

use atm_core::SessionId;
use atm_core::chrono::{DateTime, Utc};
use atm_core::fields::{self, Object};
use atm_core::model::{PromptCache, RateLimit, RateLimits, UsageUpdate};
use atm_core::protocol::WireError;
use atm_core::registry::limits;
use atm_core::serde_json::Value;
use atm_core::text::truncate_chars;

/// Rate-limit windows kept per status line (Claude sends two: `five_hour`, `seven_day`).
const MAX_RATE_LIMITS: usize = 8;

/// One parsed status line.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusLine {
    pub session_id: SessionId,
    /// The Claude process as `atm-hook` found it.
    pub pid: Option<u32>,
    pub tmux_pane: Option<String>,
    /// `workspace.current_dir`, else `cwd`.
    pub cwd: Option<String>,
    pub usage: UsageUpdate,
}

/// Parses one status-line payload (Claude's JSON plus `pid` / `tmux_pane`). Fails only when
/// `data` is not an object or `session_id` is missing, empty or not a string.
pub fn parse_status_line(data: &Value) -> Result<StatusLine, WireError> {
    fields::object(data, "Claude's status-line JSON").and_then(parse_status_object)
}

/// [`parse_status_line`] for a payload already known to be an object.
pub fn parse_status_object(obj: &Object) -> Result<StatusLine, WireError> {
    let session_id = fields::session_id(obj)?;
    let workspace = fields::opt_object(obj, "workspace");
    let cwd = workspace
        .and_then(|w| fields::opt_str(w, "current_dir"))
        .or_else(|| fields::opt_str(obj, "cwd"))
        .map(str::to_owned);
    let mut usage = UsageUpdate {
        agent_version: fields::opt_str(obj, "version").map(|v| truncate_chars(v, limits::NAME)),
        cwd: cwd.clone(),
        ..UsageUpdate::default()
    };
    model(obj, &mut usage);
    if let Some(cost) = fields::opt_object(obj, "cost") {
        usage.cost_usd = fields::opt_f64(cost, "total_cost_usd").filter(|c| *c >= 0.0);
        usage.total_duration_ms = fields::opt_u64(cost, "total_duration_ms");
        usage.api_duration_ms = fields::opt_u64(cost, "total_api_duration_ms");
        usage.lines_added = fields::opt_u64(cost, "total_lines_added");
        usage.lines_removed = fields::opt_u64(cost, "total_lines_removed");
    }
    if let Some(cw) = fields::opt_object(obj, "context_window") {
        context(cw, &mut usage);
    }
    usage.rate_limits = fields::opt_object(obj, "rate_limits").and_then(rate_limits);
    usage.prompt_cache = fields::opt_object(obj, "prompt_cache").and_then(prompt_cache);
    git_facts(obj, workspace, &mut usage);
    Ok(StatusLine {
        session_id,
        pid: fields::pid(obj),
        tmux_pane: fields::tmux_pane(obj),
        cwd,
        usage,
    })
}

/// `model: {id, display_name}`; a bare string is taken as the id.
fn model(obj: &Object, usage: &mut UsageUpdate) {
    match obj.get("model") {
        Some(Value::Object(m)) => {
            usage.model_id = fields::opt_str(m, "id").map(|s| truncate_chars(s, limits::NAME));
            usage.model_name =
                fields::opt_str(m, "display_name").map(|s| truncate_chars(s, limits::NAME));
        }
        Some(Value::String(s)) if !s.is_empty() => {
            usage.model_id = Some(truncate_chars(s, limits::NAME));
        }
        _ => {}
    }
}

/// Claude's own `used_percentage` and `context_window_size` win (windows can be 1M tokens);
/// the percentage is computed from `current_usage` only when Claude gave none.
fn context(cw: &Object, usage: &mut UsageUpdate) {
    let window = fields::opt_u64(cw, "context_window_size").filter(|w| *w > 0);
    let reported = fields::opt_f64(cw, "used_percentage").map(|p| p.clamp(0.0, 100.0));
    let current = fields::opt_object(cw, "current_usage").and_then(|cu| {
        let parts = [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .map(|k| fields::opt_u64(cu, k));
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    });
    usage.context_window_size = window;
    usage.context_used_percentage = reported.or_else(|| {
        let (tokens, window) = (current?, window?);
        Some((tokens as f64 * 100.0 / window as f64).clamp(0.0, 100.0))
    });
    usage.context_tokens = current.or_else(|| {
        // Only a percentage: derive the token count so "42% (84K/200K)" stays consistent.
        let (pct, window) = (reported?, window?);
        Some((pct / 100.0 * window as f64).round() as u64)
    });
    usage.input_tokens = fields::opt_u64(cw, "total_input_tokens");
    usage.output_tokens = fields::opt_u64(cw, "total_output_tokens");
}

/// `rate_limits: {five_hour: {used_percentage, resets_at}, seven_day: {...}}`; `resets_at` is
/// an RFC 3339 string or Unix seconds. Windows without a usable percentage are skipped.
fn rate_limits(obj: &Object) -> Option<RateLimits> {
    let limits: RateLimits = obj
        .iter()
        .filter_map(|(name, v)| {
            let w = v.as_object()?;
            let used_percentage = fields::opt_f64(w, "used_percentage")?.clamp(0.0, 100.0);
            let resets_at = match w.get("resets_at") {
                Some(Value::String(s)) if !s.is_empty() => Some(truncate_chars(s, limits::NAME)),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
                    .map(|t| t.to_rfc3339()),
                _ => None,
            };
            Some((
                truncate_chars(name, limits::NAME),
                RateLimit {
                    used_percentage,
                    resets_at,
                },
            ))
        })
        .take(MAX_RATE_LIMITS)
        .collect();
    (!limits.is_empty()).then_some(limits)
}

/// `prompt_cache: {warm, hit_ratio, expires_at, requests, misses, recache_tokens_if_cold, ...}`
/// (Claude Code 2.1.332; `expires_at` in Unix seconds or null). A block without `warm` is
/// not a report.
fn prompt_cache(obj: &Object) -> Option<PromptCache> {
    let warm = obj.get("warm").and_then(Value::as_bool)?;
    Some(PromptCache {
        warm,
        hit_ratio: fields::opt_f64(obj, "hit_ratio")
            .filter(|r| r.is_finite())
            .map_or(0.0, |r| r.clamp(0.0, 1.0)),
        expires_at: obj
            .get("expires_at")
            .and_then(Value::as_i64)
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0)),
        requests: fields::opt_u64(obj, "requests").unwrap_or(0),
        misses: fields::opt_u64(obj, "misses").unwrap_or(0),
        recache_tokens_if_cold: fields::opt_u64(obj, "recache_tokens_if_cold").unwrap_or(0),
    })
}

/// `workspace.project_dir` -> project root; `workspace.git_worktree` (a path, or an object
/// with `path` / `branch`) and the top-level `worktree` block (`claude --worktree`) ->
/// worktree path and branch.
fn git_facts(obj: &Object, workspace: Option<&Object>, usage: &mut UsageUpdate) {
    if let Some(ws) = workspace {
        usage.project_root = fields::opt_str(ws, "project_dir").map(str::to_owned);
        match ws.get("git_worktree") {
            Some(Value::String(p)) if !p.is_empty() => usage.worktree_path = Some(p.clone()),
            Some(Value::Object(w)) => worktree_block(Some(w), usage),
            _ => {}
        }
        if let Some(repo) = fields::opt_object(ws, "repo")
            && usage.branch.is_none()
        {
            usage.branch = fields::opt_str(repo, "branch").map(str::to_owned);
        }
    }
    worktree_block(fields::opt_object(obj, "worktree"), usage);
}

fn worktree_block(w: Option<&Object>, usage: &mut UsageUpdate) {
    let Some(w) = w else {
        return;
    };
    if usage.worktree_path.is_none() {
        usage.worktree_path = fields::opt_str(w, "path").map(str::to_owned);
    }
    if usage.branch.is_none() {
        usage.branch = fields::opt_str(w, "branch").map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::protocol::ErrorCode;
    use atm_core::serde_json::json;
    use proptest::prelude::*;

    fn full() -> Value {
        json!({
            "hook_event_name": "Status",
            "session_id": "8e11bfb5-7dc2-432b-9206-928fa5c35731",
            "transcript_path": "/home/u/.claude/projects/-home-u-app/x.jsonl",
            "cwd": "/home/u/app",
            "version": "2.1.212",
            "model": {"id": "claude-opus-4-6", "display_name": "Opus 4.6"},
            "workspace": {"current_dir": "/home/u/app/src", "project_dir": "/home/u/app"},
            "cost": {"total_cost_usd": 0.42, "total_duration_ms": 65000,
                     "total_api_duration_ms": 30000, "total_lines_added": 12, "total_lines_removed": 3},
            "context_window": {"total_input_tokens": 15234, "total_output_tokens": 4521,
                "context_window_size": 200000, "used_percentage": 42.5, "remaining_percentage": 57.5,
                "current_usage": {"input_tokens": 8500, "output_tokens": 1200,
                    "cache_creation_input_tokens": 5000, "cache_read_input_tokens": 2000}},
            "rate_limits": {"five_hour": {"used_percentage": 23.5, "resets_at": 1_764_000_000},
                            "seven_day": {"used_percentage": 41.2, "resets_at": "2026-11-30T00:00:00Z"}},
            "pid": 4242, "tmux_pane": "%5"
        })
    }

    #[test]
    fn reads_the_prompt_cache_as_claude_2_1_332_sends_it() {
        let mut v = full();
        v["prompt_cache"] = json!({"warm": true, "caching_observed": true, "ttl": "5m",
            "expires_at": 1_796_234_500, "requests": 4, "misses": 1, "expected_rebuilds": 0,
            "hit_ratio": 0.75, "cache_write_tokens": 1200, "miss_recache_tokens": 0,
            "last_miss_at": null, "last_miss_cause": null, "miss_causes": {},
            "recache_tokens_if_cold": 5400});
        let cache = parse_status_line(&v).unwrap().usage.prompt_cache.unwrap();
        assert_eq!(
            cache,
            PromptCache {
                warm: true,
                hit_ratio: 0.75,
                expires_at: DateTime::from_timestamp(1_796_234_500, 0),
                requests: 4,
                misses: 1,
                recache_tokens_if_cold: 5400,
            }
        );
        // The first status line of a session: cold, nothing expires yet.
        v["prompt_cache"] = json!({"warm": false, "expires_at": null, "hit_ratio": 0,
            "requests": 1, "misses": 0, "recache_tokens_if_cold": 1200});
        let cold = parse_status_line(&v).unwrap().usage.prompt_cache.unwrap();
        assert_eq!((cold.warm, cold.expires_at), (false, None));
        for odd in [
            json!(null),
            json!("warm"),
            json!({"hit_ratio": 0.5}),
            json!({"warm": "yes"}),
        ] {
            v["prompt_cache"] = odd.clone();
            assert_eq!(
                parse_status_line(&v).unwrap().usage.prompt_cache,
                None,
                "{odd}"
            );
        }
        v["prompt_cache"] = json!({"warm": true, "hit_ratio": 7.5, "expires_at": 1e300,
            "requests": -3});
        let clamped = parse_status_line(&v).unwrap().usage.prompt_cache.unwrap();
        assert_eq!(
            (clamped.hit_ratio, clamped.expires_at, clamped.requests),
            (1.0, None, 0)
        );
    }

    #[test]
    fn reads_every_block() {
        let s = parse_status_line(&full()).unwrap();
        assert_eq!(
            s.session_id.as_str(),
            "8e11bfb5-7dc2-432b-9206-928fa5c35731"
        );
        assert_eq!(s.pid, Some(4242));
        assert_eq!(s.tmux_pane.as_deref(), Some("%5"));
        assert_eq!(s.cwd.as_deref(), Some("/home/u/app/src"));
        let u = s.usage;
        assert_eq!(u.model_id.as_deref(), Some("claude-opus-4-6"));
        assert_eq!(u.model_name.as_deref(), Some("Opus 4.6"));
        assert_eq!(u.agent_version.as_deref(), Some("2.1.212"));
        assert_eq!(u.cost_usd, Some(0.42));
        assert_eq!(u.total_duration_ms, Some(65000));
        assert_eq!(u.api_duration_ms, Some(30000));
        assert_eq!((u.lines_added, u.lines_removed), (Some(12), Some(3)));
        assert_eq!(u.context_window_size, Some(200_000));
        assert_eq!(
            u.context_used_percentage,
            Some(42.5),
            "Claude's own figure wins"
        );
        assert_eq!(u.context_tokens, Some(15_500));
        assert_eq!((u.input_tokens, u.output_tokens), (Some(15234), Some(4521)));
        assert_eq!(u.project_root.as_deref(), Some("/home/u/app"));
        let rl = u.rate_limits.unwrap();
        assert_eq!(rl["five_hour"].used_percentage, 23.5);
        assert!(
            rl["five_hour"]
                .resets_at
                .as_deref()
                .unwrap()
                .starts_with("2025-11-24T")
        );
        assert_eq!(
            rl["seven_day"].resets_at.as_deref(),
            Some("2026-11-30T00:00:00Z")
        );
    }

    #[test]
    fn a_million_token_window_uses_claudes_figures() {
        let s = parse_status_line(&json!({
            "session_id": "s",
            "context_window": {"context_window_size": 1_000_000, "used_percentage": 12.3,
                "current_usage": {"input_tokens": 100_000, "cache_creation_input_tokens": 20_000,
                                  "cache_read_input_tokens": 3_000}}
        }))
        .unwrap();
        assert_eq!(s.usage.context_window_size, Some(1_000_000));
        assert_eq!(s.usage.context_used_percentage, Some(12.3));
        assert_eq!(s.usage.context_tokens, Some(123_000));
    }

    #[test]
    fn percentage_is_computed_only_when_missing() {
        let s = parse_status_line(&json!({
            "session_id": "s",
            "context_window": {"context_window_size": 1_000_000, "used_percentage": null,
                "current_usage": {"input_tokens": 250_000, "cache_read_input_tokens": 250_000}}
        }))
        .unwrap();
        assert_eq!(s.usage.context_used_percentage, Some(50.0));
        assert_eq!(s.usage.context_tokens, Some(500_000));
        // Only a percentage: tokens derived from it.
        let s = parse_status_line(&json!({
            "session_id": "s",
            "context_window": {"context_window_size": 200_000, "used_percentage": 10,
                               "current_usage": null}
        }))
        .unwrap();
        assert_eq!(s.usage.context_tokens, Some(20_000));
        // Neither: nothing.
        let s = parse_status_line(&json!({
            "session_id": "s",
            "context_window": {"context_window_size": 200_000, "current_usage": null,
                               "used_percentage": null}
        }))
        .unwrap();
        assert_eq!(s.usage.context_used_percentage, None);
        assert_eq!(s.usage.context_tokens, None);
        assert_eq!(s.usage.context_window_size, Some(200_000));
        // No window size, no percentage: tokens but no invented percentage.
        let s = parse_status_line(&json!({
            "session_id": "s",
            "context_window": {"current_usage": {"input_tokens": 5}}
        }))
        .unwrap();
        assert_eq!(s.usage.context_tokens, Some(5));
        assert_eq!(s.usage.context_used_percentage, None);
    }

    #[test]
    fn absent_or_null_blocks_change_nothing() {
        let s = parse_status_line(&json!({
            "session_id": "s", "cost": null, "context_window": null, "model": null,
            "rate_limits": null, "workspace": null
        }))
        .unwrap();
        assert!(s.usage.is_empty(), "{:?}", s.usage);
        let s = parse_status_line(&json!({"session_id": "s"})).unwrap();
        assert!(s.usage.is_empty());
        let s = parse_status_line(&json!({"session_id": "s", "cost": {"total_lines_added": 4}}))
            .unwrap();
        assert_eq!(
            s.usage.cost_usd, None,
            "a cost block without the cost keeps the cost"
        );
        assert_eq!(s.usage.lines_added, Some(4));
    }

    #[test]
    fn odd_values_are_clamped_or_ignored() {
        let s = parse_status_line(&json!({
            "session_id": "s",
            "cost": {"total_cost_usd": -3.0, "total_duration_ms": "soon"},
            "context_window": {"context_window_size": 0, "used_percentage": 140.0},
            "rate_limits": {"five_hour": {"used_percentage": "x"}, "weird": 5},
            "model": "claude-sonnet-4-5",
        }))
        .unwrap();
        assert_eq!(s.usage.cost_usd, None);
        assert_eq!(s.usage.total_duration_ms, None);
        assert_eq!(s.usage.context_window_size, None);
        assert_eq!(s.usage.context_used_percentage, Some(100.0));
        assert_eq!(s.usage.rate_limits, None);
        assert_eq!(s.usage.model_id.as_deref(), Some("claude-sonnet-4-5"));
    }

    #[test]
    fn worktree_facts() {
        let s = parse_status_line(&json!({
            "session_id": "s",
            "workspace": {"current_dir": "/w/app-feat", "project_dir": "/w/app",
                          "git_worktree": "/w/app-feat"},
            "worktree": {"name": "feat", "path": "/w/other", "branch": "feature/x"}
        }))
        .unwrap();
        assert_eq!(s.usage.worktree_path.as_deref(), Some("/w/app-feat"));
        assert_eq!(s.usage.branch.as_deref(), Some("feature/x"));
        assert_eq!(s.usage.project_root.as_deref(), Some("/w/app"));
        let s = parse_status_line(&json!({
            "session_id": "s",
            "worktree": {"name": "feat", "path": "/w/other", "branch": "feature/y"}
        }))
        .unwrap();
        assert_eq!(s.usage.worktree_path.as_deref(), Some("/w/other"));
        assert_eq!(s.usage.branch.as_deref(), Some("feature/y"));
    }

    #[test]
    fn bad_payloads_are_invalid_messages() {
        for data in [
            json!(null),
            json!("s"),
            json!({}),
            json!({"session_id": 3}),
            json!({"session_id": ""}),
        ] {
            assert_eq!(
                parse_status_line(&data).unwrap_err().code,
                ErrorCode::InvalidMessage,
                "{data}"
            );
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        atm_core::testing::arb_json(&[
            "session_id",
            "model",
            "id",
            "display_name",
            "cost",
            "total_cost_usd",
            "context_window",
            "context_window_size",
            "used_percentage",
            "current_usage",
            "input_tokens",
            "rate_limits",
            "five_hour",
            "resets_at",
            "workspace",
            "git_worktree",
            "worktree",
            "repo",
            "path",
            "branch",
            "version",
            "pid",
            "tmux_pane",
            "x",
        ])
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            if let Ok(s) = parse_status_line(&v) {
                if let Some(p) = s.usage.context_used_percentage {
                    prop_assert!((0.0..=100.0).contains(&p));
                }
                prop_assert!(s.usage.cost_usd.is_none_or(|c| c.is_finite() && c >= 0.0));
            }
        }

        #[test]
        fn never_panics_and_percent_stays_in_range(
            size in proptest::option::of(any::<u64>()),
            pct in proptest::option::of(any::<f64>()),
            tokens in proptest::option::of(any::<u64>()),
            cost in proptest::option::of(any::<f64>()),
        ) {
            let v = json!({
                "session_id": "s",
                "cost": {"total_cost_usd": cost},
                "context_window": {"context_window_size": size, "used_percentage": pct,
                                   "current_usage": {"input_tokens": tokens}},
            });
            let s = parse_status_line(&v).unwrap();
            if let Some(p) = s.usage.context_used_percentage {
                prop_assert!((0.0..=100.0).contains(&p));
            }
        }
    }
}
