//! `atmctl setup gemini`: atm-hook in Gemini CLI's `settings.json` (`$GEMINI_CLI_HOME/.gemini`,
//! else `~/.gemini`; Gemini reads `GEMINI_CLI_HOME` as its home directory).
//!
//! What install adds, and so exactly what uninstall removes: for each event in [`EVENTS`], one
//! group `{"hooks":[{"name":"atm","type":"command","command":"<atm-hook> --agent gemini",
//! "timeout":5000}]}` (Gemini's timeouts are milliseconds; no matcher: every tool and source),
//! merged like Claude's hooks ([`super::hooks`]). `AfterModel` is left out on purpose (it fires
//! for every streamed chunk); `BeforeModel` is in, once per model request, because it is the
//! only hook that names the model (atm-hook costs about 4 ms per call, measured with a 100 KB
//! request, against the seconds of a model call). `hooksConfig.enabled` is the user's (a
//! warning says when it switches hooks off).
//!
//! Gemini accepts comments in `settings.json`. serde_json cannot keep them, so a file with
//! comments is refused with the position of the first one rather than rewritten without them;
//! no maintained Rust crate edits JSONC while keeping comments as simply as `toml_edit` does
//! TOML, and refusing is safe and rare (Gemini itself writes the file without comments).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::hooks::{HookCommand, HooksOff, JsonAgent, edit_root, install_hooks, run_json_file};
use super::{SetupArgs, SetupError, ShapeError, file};

/// The Gemini CLI hook events atm installs: the gemini adapter's own list of the events that
/// say a state, read from the adapter so the two cannot drift apart.
pub const EVENTS: &[&str] = adapter_gemini::translate::KNOWN_EVENTS;

/// Milliseconds Gemini waits for the hook (5 s, as for Claude and Codex).
pub const HOOK_TIMEOUT_MS: u64 = 5000;

/// The handler's `name`, shown by Gemini's `/hooks` panel.
const HOOK_NAME: &str = "atm";

/// `settings` with atm-hook on every event in [`EVENTS`]. Pure and idempotent.
pub fn install(settings: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    let command = hook.agent_command("gemini");
    edit_root(settings, |root| {
        install_hooks(root, EVENTS, hook, &command, |_| {
            json!({"hooks": [{
                "name": HOOK_NAME,
                "type": "command",
                "command": command,
                "timeout": HOOK_TIMEOUT_MS,
            }]})
        })
    })
}

/// `settings` without atm-hook's handlers. Pure.
pub use super::hooks::without_hooks as uninstall;

/// Where Gemini keeps its settings: `--config-dir`, `$GEMINI_CLI_HOME/.gemini`, `~/.gemini`.
pub fn config_dir(args: &SetupArgs) -> Result<PathBuf, SetupError> {
    if let Some(dir) = &args.config_dir {
        return Ok(dir.clone());
    }
    std::env::var_os("GEMINI_CLI_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(atm_core::paths::home_dir)
        .map(|home| home.join(".gemini"))
        .ok_or(SetupError::NoConfigDir {
            variable: "GEMINI_CLI_HOME",
        })
}

/// [`file::load`], with a JSON error caused by a comment reported as such.
pub fn load(path: &std::path::Path) -> Result<file::Loaded, SetupError> {
    file::load(path).map_err(|e| match e {
        SetupError::Malformed {
            path, line, column, ..
        } if comment_at(
            &std::fs::read_to_string(&path).unwrap_or_default(),
            line,
            column,
        ) =>
        {
            SetupError::Comments { path, line, column }
        }
        other => other,
    })
}

/// True when a `//` or `/*` comment starts at (or right after) `line`:`column` (1-based, as
/// serde_json reports the character it stumbled on).
fn comment_at(text: &str, line: usize, column: usize) -> bool {
    let Some(row) = text.split('\n').nth(line.saturating_sub(1)) else {
        return false;
    };
    let start: usize = row
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    let rest = row.get(start..).unwrap_or("");
    let rest = rest.trim_start();
    rest.starts_with("//")
        || rest.starts_with("/*")
        || row
            .get(start.saturating_sub(1)..)
            .is_some_and(|r| r.starts_with("//") || r.starts_with("/*"))
}

/// Gemini CLI for [`run_json_file`].
const AGENT: JsonAgent = JsonAgent {
    name: "Gemini CLI",
    load,
    install,
    uninstall,
    hooks_off: HooksOff {
        pointer: "/hooksConfig/enabled",
        key: "hooksConfig.enabled",
        off: false,
        undo: "change it",
    },
    config_dir,
    installed: |hook, shown| {
        format!(
            "installed {} for {} Gemini CLI hook events in {shown}\n\
             Gemini CLI sessions started before now need a restart to run the hooks.\n",
            hook.agent_command("gemini"),
            EVENTS.len(),
        )
    },
};

pub fn run(args: &SetupArgs) -> anyhow::Result<ExitCode> {
    run_json_file(&AGENT, args)
}

#[cfg(test)]
mod tests {
    use super::super::hooks::test_hook as hook;
    use super::super::hooks::{arb_user_hooks, check_round_trip, settings_from};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn install_adds_every_event_keeps_the_rest_and_uninstall_restores() {
        let user = json!({
            "general": {"vimMode": true},
            "hooksConfig": {"enabled": true},
            "hooks": {"BeforeTool": [{"matcher": "run_shell_command",
                "hooks": [{"name": "guard", "type": "command", "command": "~/guard.sh"}]}]},
            "ui": {"theme": "GitHub"}
        });
        let out = install(&user, &hook()).unwrap();
        for event in EVENTS {
            assert_eq!(
                out["hooks"][event].as_array().unwrap().last().unwrap(),
                &json!({"hooks": [{"name": "atm", "type": "command",
                    "command": "/opt/atm/bin/atm-hook --agent gemini", "timeout": 5000}]}),
                "{event}"
            );
        }
        assert!(out["hooks"].get("AfterModel").is_none());
        assert_eq!(
            out["hooks"]["BeforeTool"][0],
            user["hooks"]["BeforeTool"][0]
        );
        assert_eq!(out["hooksConfig"], user["hooksConfig"]);
        let keys: Vec<_> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["general", "hooksConfig", "hooks", "ui"]);
        assert_eq!(install(&out, &hook()).unwrap().to_string(), out.to_string());
        assert_eq!(
            uninstall(&out, &hook()).unwrap().to_string(),
            user.to_string()
        );
        assert_eq!(install(&json!("x"), &hook()), Err(ShapeError::NotAnObject));
        assert!(install(&json!({"hooks": {"AfterAgent": {}}}), &hook()).is_err());
    }

    #[test]
    fn finds_comments_where_serde_json_stops() {
        let text = "{\n  // mine\n  \"a\": 1\n}\n";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert!(comment_at(text, e.line(), e.column()));
        let text = "{\"a\": 1, /* x */ \"b\": 2}";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert!(comment_at(text, e.line(), e.column()));
        let text = "{\"a\": 1,, \"b\": \"//\"}";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert!(!comment_at(text, e.line(), e.column()));
        assert!(!comment_at("", 5, 9));
    }

    fn arb_settings() -> impl Strategy<Value = Value> {
        let hooks = arb_user_hooks(&["BeforeTool", "AfterAgent", "BeforeModel", "Stop"], false);
        (
            prop::collection::vec(("[a-z]{1,6}", any::<i64>()), 0..4),
            proptest::option::of(hooks),
        )
            .prop_map(|(extra, hooks)| {
                let extra = extra.into_iter().map(|(k, v)| (k, Value::from(v)));
                settings_from(extra.collect(), [("hooks", hooks)])
            })
    }

    proptest! {
        #[test]
        fn round_trip_and_idempotence(s in arb_settings()) {
            check_round_trip(&s, install, uninstall)?;
        }
    }
}
