//! Claude's `permission_suggestions`: the rules a `PermissionRequest` offers to add with an
//! "always allow" answer, kept with the wait so a client answering from outside can echo one
//! back (`updatedPermissions`), and labelled for people.
//!
//! Claude Code 2.1.332 sends a list of `{type, destination, ...}`: `addRules` /
//! `replaceRules` / `removeRules` (`rules: [{toolName, ruleContent?}]`, `behavior`),
//! `setMode` (`mode`), `addDirectories` / `removeDirectories` (`directories`). `destination` is
//! `session`, `localSettings`, `projectSettings` or `userSettings`. Entries that are not objects,
//! or whose JSON is larger than [`MAX_RULE_BYTES`], are left out; the list is cut at
//! [`MAX_SUGGESTIONS`].

use atm_core::fields::{self, Object};
use atm_core::model::PermissionSuggestion;
use atm_core::serde_json::Value;
use atm_core::text::one_line_preview;

/// How many suggestions are kept (the registry's limit).
pub const MAX_SUGGESTIONS: usize = atm_core::registry::limits::SUGGESTIONS;
/// The largest suggestion kept, as JSON (the registry's limit).
pub const MAX_RULE_BYTES: usize = atm_core::registry::limits::SUGGESTION_BYTES;
/// A label's length, in characters.
const LABEL_CHARS: usize = 120;

/// The suggestions of a `PermissionRequest` payload's `permission_suggestions`.
pub fn permission_suggestions(value: Option<&Value>) -> Vec<PermissionSuggestion> {
    let Some(list) = value.and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|rule| {
            let obj = rule.as_object()?;
            let size = atm_core::serde_json::to_vec(rule).map_or(usize::MAX, |v| v.len());
            (size <= MAX_RULE_BYTES).then(|| PermissionSuggestion {
                label: one_line_preview(&label(obj), LABEL_CHARS),
                rule: rule.clone(),
            })
        })
        .take(MAX_SUGGESTIONS)
        .collect()
}

/// "allow Bash(npm test:*) for this session", "add directory /srv for this project", ...
fn label(obj: &Object) -> String {
    let kind = fields::opt_str(obj, "type").unwrap_or("unknown");
    let what = match kind {
        "addRules" | "replaceRules" | "removeRules" => {
            let verb = match kind {
                "addRules" => fields::opt_str(obj, "behavior").unwrap_or("allow"),
                "replaceRules" => "set rules",
                _ => "remove rules",
            };
            format!("{verb} {}", rules(obj))
        }
        "setMode" => format!(
            "switch to {} mode",
            fields::opt_str(obj, "mode").unwrap_or("?")
        ),
        "addDirectories" | "removeDirectories" => {
            let dirs = strings(obj.get("directories"));
            let verb = if kind == "addDirectories" {
                "add"
            } else {
                "remove"
            };
            let noun = if dirs.len() == 1 {
                "directory"
            } else {
                "directories"
            };
            format!("{verb} {noun} {}", dirs.join(", "))
        }
        other => other.to_owned(),
    };
    match fields::opt_str(obj, "destination") {
        Some("session") => format!("{what} for this session"),
        Some("localSettings") => format!("{what} in local settings"),
        Some("projectSettings") => format!("{what} for this project"),
        Some("userSettings") => format!("{what} for all projects"),
        Some(other) => format!("{what} ({other})"),
        None => what,
    }
}

/// `Bash(npm test:*), Read`.
fn rules(obj: &Object) -> String {
    let Some(list) = obj.get("rules").and_then(Value::as_array) else {
        return "?".to_owned();
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|r| {
            let tool = fields::opt_str(r, "toolName").unwrap_or("?");
            match fields::opt_str(r, "ruleContent") {
                Some(content) => format!("{tool}({content})"),
                None => tool.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::serde_json::json;

    #[test]
    fn claudes_suggestions_are_kept_whole_and_labelled() {
        // As Claude Code 2.1.332 sent them (tests/agents/recorded/claude-2.1.332).
        let real = json!([
            {"type": "addDirectories", "directories": ["/tmp/exp"], "destination": "session"},
            {"type": "setMode", "mode": "acceptEdits", "destination": "session"},
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "npm test:*"}],
             "behavior": "allow", "destination": "localSettings"},
        ]);
        let got = permission_suggestions(Some(&real));
        let labels: Vec<_> = got.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "add directory /tmp/exp for this session",
                "switch to acceptEdits mode for this session",
                "allow Bash(npm test:*) in local settings",
            ]
        );
        assert_eq!(got[0].rule, real[0], "echoed back as sent");
    }

    #[test]
    fn odd_lists_are_bounded_and_never_fail() {
        assert!(permission_suggestions(None).is_empty());
        assert!(permission_suggestions(Some(&json!("x"))).is_empty());
        assert!(permission_suggestions(Some(&json!([1, null, "a"]))).is_empty());
        let many: Vec<_> = (0..100)
            .map(|i| json!({"type": "setMode", "mode": i}))
            .collect();
        assert_eq!(
            permission_suggestions(Some(&json!(many))).len(),
            MAX_SUGGESTIONS
        );
        let huge = json!([{"type": "addDirectories", "directories": ["/x".repeat(2000)]},
                          {"type": "other\u{202e}\n".repeat(100)}]);
        let got = permission_suggestions(Some(&huge));
        assert_eq!(got.len(), 1, "the oversized one is left out");
        assert!(got[0].label.chars().count() <= LABEL_CHARS);
        assert!(!got[0].label.contains('\n'));
    }
}
