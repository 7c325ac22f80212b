//! `atmctl setup claude`: atm-hook in Claude Code's `settings.json`.
//!
//! What install adds, and so exactly what uninstall removes:
//!
//! - for each event in [`EVENTS`], one matcher group `{"matcher":"*","hooks":[{"type":"command",
//!   "command":"<atm-hook>","timeout":N}]}` appended to that event's list (no `matcher` for the
//!   events that take none);
//! - the status line: the user's command `C` becomes `<atm-hook> statusline -- 'C'` (its other
//!   keys, such as `padding`, untouched); without a status line, `<atm-hook> statusline`.
//!
//! Handlers are recognised and removed as [`super::hooks`] describes; uninstall also unwraps the
//! status line back to the user's command (or removes it when it was ours alone).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

// Re-exported: the command type was born here, and the fuzz targets still name it so.
pub use super::hooks::HookCommand;
use super::hooks::{HooksOff, JsonAgent, install_hooks, run_json_file, uninstall_hooks, wrong};
use super::{SetupArgs, SetupError, ShapeError, file};

/// The events the claude-hooks adapter uses, and whether Claude applies a matcher to them.
pub const EVENTS: &[(&str, bool)] = &[
    ("SessionStart", true),
    ("SessionEnd", true),
    ("UserPromptSubmit", false),
    ("PreToolUse", true),
    ("PostToolUse", true),
    ("PostToolUseFailure", true),
    ("PermissionRequest", true),
    ("PermissionDenied", true),
    ("Notification", true),
    ("Stop", false),
    ("StopFailure", true),
    ("SubagentStart", true),
    ("SubagentStop", true),
    ("PreCompact", true),
    ("PostCompact", true),
    ("CwdChanged", false),
    ("Elicitation", true),
];

/// Seconds Claude waits for the hook. atm-hook gives up on the daemon after 50 ms; this only
/// bounds a machine so loaded that even starting a process is slow.
pub const HOOK_TIMEOUT_SECS: u64 = 5;

/// Seconds Claude waits for the `PermissionRequest` hook: Claude's default (600 s), because
/// atm-hook waits there for an answer given through atm (a notification button, `atmctl
/// approve`), beside Claude's own dialog, which it never delays. atm-hook gives up by itself
/// before this ([`crate::hook::decision::DECISION_WAIT`]); no `onFailure` is set, so a hook
/// that fails or times out is "no decision", never a refusal.
pub const DECISION_HOOK_TIMEOUT_SECS: u64 = 600;

/// The timeout of our handler for `event`.
pub fn hook_timeout(event: &str) -> u64 {
    if event == "PermissionRequest" {
        DECISION_HOOK_TIMEOUT_SECS
    } else {
        HOOK_TIMEOUT_SECS
    }
}

/// The status-line command, wrapping `user` when there is one.
pub fn statusline_command(hook: &HookCommand, user: Option<&str>) -> Result<String, ShapeError> {
    Ok(match user {
        None => format!("{} statusline", hook.event_command()),
        Some(cmd) => {
            let q = shlex::try_quote(cmd).map_err(|_| ShapeError::Nul(cmd.to_owned()))?;
            format!("{} statusline -- {q}", hook.event_command())
        }
    })
}

/// For a status-line command of ours: `Some(user command)` (`Some(None)` when it wraps
/// nothing). `None` when the command is not ours.
fn unwrap_statusline(hook: &HookCommand, command: &str) -> Option<Option<String>> {
    let words = shlex::split(command)?;
    let (program, rest) = words.split_first()?;
    if !hook.is_ours(program) || rest.first().map(String::as_str) != Some("statusline") {
        return None;
    }
    let Some(sep) = rest.iter().position(|w| w == "--") else {
        return Some(None);
    };
    match rest.get(sep + 1..).unwrap_or_default() {
        [] => Some(None),
        [one] => Some(Some(one.clone())),
        many => Some(shlex::try_join(many.iter().map(String::as_str)).ok()),
    }
}

/// `settings` with atm-hook installed. Pure; `install(install(s)) == install(s)`.
pub fn install(settings: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    let mut out = settings.clone();
    let root = out.as_object_mut().ok_or(ShapeError::NotAnObject)?;
    let events: Vec<&str> = EVENTS.iter().map(|(e, _)| *e).collect();
    install_hooks(root, &events, hook, hook.event_command(), |event| {
        let handler = json!({
            "type": "command",
            "command": hook.event_command(),
            "timeout": hook_timeout(event),
        });
        if EVENTS.contains(&(event, true)) {
            json!({"matcher": "*", "hooks": [handler]})
        } else {
            json!({"hooks": [handler]})
        }
    })?;
    // A handler installed by an older atm keeps its place; its timeout is brought up to date.
    set_timeouts(root, hook);
    install_statusline(root, hook)?;
    Ok(out)
}

/// Sets [`hook_timeout`] on each handler of ours.
fn set_timeouts(root: &mut Map<String, Value>, hook: &HookCommand) {
    let Some(Value::Object(hooks)) = root.get_mut("hooks") else {
        return;
    };
    for (event, _) in EVENTS {
        let Some(Value::Array(groups)) = hooks.get_mut(*event) else {
            continue;
        };
        for group in groups.iter_mut() {
            let Some(Value::Array(handlers)) = group.get_mut("hooks") else {
                continue;
            };
            for h in handlers.iter_mut().filter(|h| hook.is_our_handler(h)) {
                if let Some(obj) = h.as_object_mut() {
                    obj.insert("timeout".to_owned(), Value::from(hook_timeout(event)));
                }
            }
        }
    }
}

/// `settings` without anything [`install`] adds (from any atm-hook path). Pure.
pub fn uninstall(settings: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    let mut out = settings.clone();
    let root = out.as_object_mut().ok_or(ShapeError::NotAnObject)?;
    uninstall_hooks(root, hook)?;
    if let Some(Value::Object(line)) = root.get_mut("statusLine")
        && let Some(user) = line
            .get("command")
            .and_then(Value::as_str)
            .and_then(|c| unwrap_statusline(hook, c))
    {
        match user {
            Some(cmd) => {
                line.insert("command".to_owned(), Value::String(cmd));
            }
            None => {
                root.shift_remove("statusLine");
            }
        }
    }
    Ok(out)
}

fn install_statusline(root: &mut Map<String, Value>, hook: &HookCommand) -> Result<(), ShapeError> {
    match root.get_mut("statusLine") {
        None | Some(Value::Null) => {
            root.insert(
                "statusLine".to_owned(),
                json!({"type": "command", "command": statusline_command(hook, None)?}),
            );
        }
        Some(Value::Object(line)) => {
            let Some(current) = line.get("command").and_then(Value::as_str) else {
                // Not a command status line (a future kind): nothing of ours can wrap it.
                return Ok(());
            };
            let user = match unwrap_statusline(hook, current) {
                Some(inner) => inner,
                None => Some(current.to_owned()),
            };
            let wrapped = statusline_command(hook, user.as_deref())?;
            line.insert("command".to_owned(), Value::String(wrapped));
        }
        Some(_) => return Err(wrong("statusLine", "an object")),
    }
    Ok(())
}

/// Where Claude keeps its settings: `--config-dir`, `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn config_dir(args: &SetupArgs) -> Result<PathBuf, SetupError> {
    super::hooks::config_dir(args.config_dir.as_deref(), "CLAUDE_CONFIG_DIR", ".claude")
}

/// Claude Code for [`run_json_file`].
const AGENT: JsonAgent = JsonAgent {
    name: "Claude Code",
    load: file::load,
    install,
    uninstall,
    hooks_off: HooksOff {
        pointer: "/disableAllHooks",
        key: "disableAllHooks",
        off: true,
        undo: "remove it",
    },
    config_dir,
    installed: |hook, shown| {
        format!(
            "installed {} for {} Claude Code hook events and the status line in {shown}\n\
             Claude Code sessions started before now may need a restart to run the hooks.\n",
            hook.event_command(),
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

    fn keys(v: &Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn user_settings() -> Value {
        serde_json::from_str(
            r#"{
              "model": "opus",
              "hooks": {
                "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/guard.sh"}]}],
                "FileChanged": [{"hooks": [{"type": "command", "command": "make -q"}]}]
              },
              "statusLine": {"type": "command", "command": "bash ~/.claude/line.sh 'a b'", "padding": 0},
              "env": {"X": "1"}
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn reinstalling_brings_an_old_permission_hook_timeout_up_to_date() {
        let old = json!({"hooks": {"PermissionRequest": [{"matcher": "*", "hooks": [
            {"type": "command", "command": "/opt/atm/bin/atm-hook", "timeout": 5}]}]}});
        let s = install(&old, &hook()).unwrap();
        let groups = s["hooks"]["PermissionRequest"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{s:#}");
        assert_eq!(groups[0]["hooks"][0]["timeout"], DECISION_HOOK_TIMEOUT_SECS);
    }

    #[test]
    fn install_adds_every_event_and_wraps_the_status_line() {
        let s = install(&user_settings(), &hook()).unwrap();
        assert_eq!(keys(&s), ["model", "hooks", "statusLine", "env"]);
        let hooks = &s["hooks"];
        for (event, takes_matcher) in EVENTS {
            let groups = hooks[event].as_array().unwrap();
            let ours = groups.last().unwrap();
            assert_eq!(
                ours["hooks"][0]["command"], "/opt/atm/bin/atm-hook",
                "{event}"
            );
            assert_eq!(ours["hooks"][0]["timeout"], hook_timeout(event), "{event}");
            assert!(ours["hooks"][0].get("onFailure").is_none(), "{event}");
            assert_eq!(ours.get("matcher").is_some(), *takes_matcher, "{event}");
        }
        assert_eq!(
            hooks["PermissionRequest"][0]["hooks"][0]["timeout"],
            DECISION_HOOK_TIMEOUT_SECS
        );
        // The user's PreToolUse guard is still first, and the unrelated event is untouched.
        assert_eq!(
            hooks["PreToolUse"][0]["hooks"][0]["command"],
            "~/bin/guard.sh"
        );
        assert_eq!(
            hooks["FileChanged"],
            user_settings()["hooks"]["FileChanged"]
        );
        // The shell sees the user's command as one argument after `--`, unchanged.
        let words = shlex::split(s["statusLine"]["command"].as_str().unwrap()).unwrap();
        assert_eq!(
            words,
            [
                "/opt/atm/bin/atm-hook",
                "statusline",
                "--",
                "bash ~/.claude/line.sh 'a b'"
            ]
        );
        assert_eq!(s["statusLine"]["padding"], 0);
        assert_eq!(keys(&s["statusLine"]), ["type", "command", "padding"]);
    }

    #[test]
    fn install_is_idempotent_and_uninstall_restores() {
        let once = install(&user_settings(), &hook()).unwrap();
        let twice = install(&once, &hook()).unwrap();
        assert_eq!(
            serde_json::to_string(&once).unwrap(),
            serde_json::to_string(&twice).unwrap()
        );
        let back = uninstall(&twice, &hook()).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&user_settings()).unwrap()
        );
    }

    #[test]
    fn reinstall_from_another_path_updates_in_place() {
        let old = install(
            &user_settings(),
            &HookCommand::new("/old/atm-hook").unwrap(),
        )
        .unwrap();
        let new = install(&old, &hook()).unwrap();
        assert_eq!(
            serde_json::to_string(&new).unwrap(),
            serde_json::to_string(&install(&user_settings(), &hook()).unwrap()).unwrap()
        );
    }

    #[test]
    fn empty_settings_get_our_status_line_and_lose_it_again() {
        let s = install(&json!({}), &hook()).unwrap();
        assert_eq!(
            s["statusLine"]["command"],
            "/opt/atm/bin/atm-hook statusline"
        );
        assert_eq!(uninstall(&s, &hook()).unwrap(), json!({}));
        // A path with a space is quoted, and still recognised.
        let spaced = HookCommand::new("/home/me/my bin/atm-hook").unwrap();
        let s = install(&json!({}), &spaced).unwrap();
        assert_eq!(
            s["hooks"]["Stop"][0]["hooks"][0]["command"],
            "'/home/me/my bin/atm-hook'"
        );
        assert_eq!(uninstall(&s, &spaced).unwrap(), json!({}));
    }

    #[test]
    fn statusline_as_argv_is_restored_as_one_command() {
        let h = hook();
        let joined = unwrap_statusline(&h, "atm-hook statusline -- printf '%s\\n' 'a b'")
            .unwrap()
            .unwrap();
        assert_eq!(shlex::split(&joined).unwrap(), ["printf", "%s\\n", "a b"]);
        assert_eq!(unwrap_statusline(&h, "atm-hook statusline"), Some(None));
        assert_eq!(unwrap_statusline(&h, "other statusline -- x"), None);
        assert_eq!(unwrap_statusline(&h, "atm-hook --agent x"), None);
        assert_eq!(unwrap_statusline(&h, "'unterminated"), None);
    }

    #[test]
    fn wrong_shapes_are_errors_not_overwrites() {
        assert_eq!(install(&json!([]), &hook()), Err(ShapeError::NotAnObject));
        assert!(matches!(
            install(&json!({"hooks": []}), &hook()),
            Err(ShapeError::WrongType { .. })
        ));
        assert!(matches!(
            install(&json!({"hooks": {"Stop": {}}}), &hook()),
            Err(ShapeError::WrongType { .. })
        ));
        assert!(matches!(
            install(&json!({"statusLine": "x"}), &hook()),
            Err(ShapeError::WrongType { .. })
        ));
        assert!(HookCommand::new("a\0b").is_err());
        // Odd but valid shapes inside groups are left alone.
        let odd = json!({"hooks": {"Stop": [{"hooks": "x"}, 3]}, "statusLine": {"type": "x"}});
        let s = install(&odd, &hook()).unwrap();
        assert_eq!(s["hooks"]["Stop"][0], json!({"hooks": "x"}));
        assert_eq!(s["statusLine"], json!({"type": "x"}));
        assert_eq!(uninstall(&s, &hook()).unwrap(), odd);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        atm_core::testing::arb_json(&["hooks", "statusLine", "type", "command", "matcher"])
    }

    /// Settings in the shape users write, without anything of ours and without empty containers
    /// (which uninstall cannot tell from ones install emptied).
    fn arb_settings() -> impl Strategy<Value = Value> {
        let events = &[
            "PreToolUse",
            "Stop",
            "SessionStart",
            "FileChanged",
            "Notification",
        ];
        let hooks = arb_user_hooks(events, true);
        let statusline = "[a-z ./'\"$-]{1,16}"
            .prop_map(|c| json!({"type": "command", "command": c, "padding": 1}));
        (
            prop::collection::vec(("[a-z]{1,6}", arb_json()), 0..4),
            proptest::option::of(hooks),
            proptest::option::of(statusline),
        )
            .prop_map(|(extra, hooks, line)| {
                settings_from(extra, [("hooks", hooks), ("statusLine", line)])
            })
    }

    proptest! {
        #[test]
        fn round_trip_and_idempotence(s in arb_settings()) {
            check_round_trip(&s, install, uninstall)?;
        }

        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            let h = hook();
            if let Ok(i) = install(&v, &h) {
                let _ = uninstall(&i, &h);
            }
            let _ = uninstall(&v, &h);
        }
    }
}
