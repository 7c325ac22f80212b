//! Codex's trust entries for atm's hooks, so that `atmctl setup codex --uninstall` leaves
//! nothing behind that exists because of atm.
//!
//! Codex 0.171 runs a hook only once the user trusted it (its "Hooks need review" dialog at
//! start, or `/hooks`). It records that in `config.toml` as one table per handler:
//!
//! ```toml
//! [hooks.state."/home/me/.codex/hooks.json:pre_tool_use:0:0"]
//! trusted_hash = "sha256:..."
//! ```
//!
//! keyed by the hooks file's path, the event in snake case, the matcher group's index and the
//! handler's index in that group. Uninstall computes the keys of atm's handlers from the
//! hooks file as it was (before they are removed) and drops exactly those entries; a
//! `[hooks.state]` or `[hooks]` table left empty by that goes too. atm never writes a trust
//! entry itself: trusting a program to run is the user's decision.

use std::path::Path;

use serde_json::Value;
use toml_edit::{DocumentMut, Item};

use super::hooks::HookCommand;

/// `PreToolUse` -> `pre_tool_use`, as Codex names events in its trust keys.
pub fn snake_case(event: &str) -> String {
    let mut out = String::with_capacity(event.len() + 4);
    for (i, c) in event.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `event:group:handler` part of the trust key of each atm handler in `hooks` (the parsed
/// `hooks.json`).
pub fn our_handler_slots(hooks: &Value, hook: &HookCommand) -> Vec<String> {
    let Some(events) = hooks.get("hooks").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut slots = Vec::new();
    for (event, groups) in events {
        let Some(groups) = groups.as_array() else {
            continue;
        };
        for (g, group) in groups.iter().enumerate() {
            let Some(handlers) = group.get("hooks").and_then(Value::as_array) else {
                continue;
            };
            for (h, handler) in handlers.iter().enumerate() {
                if hook.is_our_handler(handler) {
                    slots.push(format!("{}:{g}:{h}", snake_case(event)));
                }
            }
        }
    }
    slots
}

/// `config` without the trust entries of `slots` in the hooks file at `hooks_path` (also
/// matched through its canonical path, as Codex may resolve symlinks). Pure but for the
/// path's canonicalization.
pub fn remove_trust(config: &DocumentMut, hooks_path: &Path, slots: &[String]) -> DocumentMut {
    let mut doc = config.clone();
    let mut prefixes = vec![hooks_path.display().to_string()];
    if let Ok(real) = std::fs::canonicalize(hooks_path) {
        prefixes.push(real.display().to_string());
    }
    let ours = |key: &str| {
        prefixes.iter().any(|p| {
            key.strip_prefix(p.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|slot| slots.iter().any(|s| s == slot))
        })
    };
    let Some(hooks) = doc
        .as_table_mut()
        .get_mut("hooks")
        .and_then(Item::as_table_like_mut)
    else {
        return doc;
    };
    let Some(state) = hooks.get_mut("state").and_then(Item::as_table_like_mut) else {
        return doc;
    };
    let before = state.len();
    let drop: Vec<String> = state
        .iter()
        .map(|(k, _)| k.to_owned())
        .filter(|k| ours(k))
        .collect();
    for key in &drop {
        state.remove(key);
    }
    if drop.is_empty() || before == 0 {
        return doc;
    }
    if state.is_empty() {
        hooks.remove("state");
    }
    if hooks.is_empty() {
        doc.as_table_mut().remove("hooks");
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::super::hooks::test_hook as hook;
    use super::*;
    use serde_json::json;

    #[test]
    fn event_names_become_codexs_snake_case() {
        assert_eq!(snake_case("PreToolUse"), "pre_tool_use");
        assert_eq!(snake_case("SessionEnd"), "session_end");
        assert_eq!(snake_case("Stop"), "stop");
        assert_eq!(snake_case(""), "");
    }

    #[test]
    fn slots_name_only_atms_handlers() {
        let hooks = json!({"hooks": {
            "Stop": [
                {"hooks": [{"type": "command", "command": "say done"}]},
                {"hooks": [{"type": "command", "command": "say again"},
                           {"type": "command", "command": "/opt/atm/bin/atm-hook --agent codex"}]}],
            "PreToolUse": [{"hooks": [{"type": "command", "command": "/opt/atm/bin/atm-hook --agent codex"}]}],
            "Broken": 3,
        }});
        let mut slots = our_handler_slots(&hooks, &hook());
        slots.sort();
        assert_eq!(slots, vec!["pre_tool_use:0:0", "stop:1:1"]);
        assert!(our_handler_slots(&json!([]), &hook()).is_empty());
    }

    #[test]
    fn uninstall_drops_atms_trust_entries_and_keeps_the_users() {
        let text = "model = \"m\"\n\n\
            [hooks.state.\"/h/hooks.json:stop:0:0\"]\ntrusted_hash = \"sha256:user\"\n\n\
            [hooks.state.\"/h/hooks.json:stop:1:1\"]\ntrusted_hash = \"sha256:atm\"\n\n\
            [hooks.state.\"/other/hooks.json:pre_tool_use:0:0\"]\ntrusted_hash = \"sha256:other\"\n";
        let doc: DocumentMut = text.parse().unwrap();
        let slots = vec!["stop:1:1".to_owned(), "pre_tool_use:0:0".to_owned()];
        let out = remove_trust(&doc, Path::new("/h/hooks.json"), &slots).to_string();
        assert!(!out.contains("sha256:atm"), "{out}");
        assert!(out.contains("sha256:user"), "{out}");
        assert!(
            out.contains("sha256:other"),
            "another file's entry is not ours: {out}"
        );
        // Only ours: the tables Codex made for them go too.
        let only = "model = \"m\"\n\n[hooks.state]\n\n\
            [hooks.state.\"/h/hooks.json:stop:1:1\"]\ntrusted_hash = \"sha256:atm\"\n";
        let out = remove_trust(&only.parse().unwrap(), Path::new("/h/hooks.json"), &slots);
        assert_eq!(out.to_string(), "model = \"m\"\n");
        // Nothing of ours: unchanged, even an empty table the user keeps.
        let none = "[hooks.state]\n";
        let out = remove_trust(&none.parse().unwrap(), Path::new("/h/hooks.json"), &slots);
        assert_eq!(out.to_string(), none);
    }
}
