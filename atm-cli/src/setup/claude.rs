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
//! A handler is recognised as ours by its program: the configured hook path, or any program
//! named `atm-hook`. That makes install idempotent and lets a reinstall after moving the binary
//! update the path in place instead of adding a second handler. Uninstall also drops the groups,
//! event lists and `hooks` object that become empty by the removal, and unwraps the status line
//! back to the user's command (or removes it when it was ours alone).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::{SetupError, ShapeError, file};

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

/// The program name that marks a handler as ours wherever it is installed.
const HOOK_PROGRAM: &str = "atm-hook";

#[derive(Debug, Clone, clap::Args)]
pub struct ClaudeArgs {
    /// Print the change as a unified diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove atm's hooks and restore your own status line command.
    #[arg(long)]
    pub uninstall: bool,
    /// The atm-hook program to install [default: the atm-hook beside this atmctl, else
    /// `atm-hook` from PATH].
    #[arg(long, value_name = "PATH")]
    pub hook_command: Option<String>,
    /// Claude's configuration directory [default: $CLAUDE_CONFIG_DIR, else ~/.claude].
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// The atm-hook program as it appears in settings: a path, shell-quoted when it needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    program: String,
    quoted: String,
}

impl HookCommand {
    pub fn new(program: &str) -> Result<Self, ShapeError> {
        let quoted = shlex::try_quote(program)
            .map_err(|_| ShapeError::Nul(program.to_owned()))?
            .into_owned();
        Ok(Self {
            program: program.to_owned(),
            quoted,
        })
    }

    /// The command line for hook events.
    pub fn event_command(&self) -> &str {
        &self.quoted
    }

    /// The status-line command, wrapping `user` when there is one.
    pub fn statusline_command(&self, user: Option<&str>) -> Result<String, ShapeError> {
        Ok(match user {
            None => format!("{} statusline", self.quoted),
            Some(cmd) => {
                let q = shlex::try_quote(cmd).map_err(|_| ShapeError::Nul(cmd.to_owned()))?;
                format!("{} statusline -- {q}", self.quoted)
            }
        })
    }

    /// True when `program` (a command's first word) is this hook or any `atm-hook`.
    fn is_ours(&self, program: &str) -> bool {
        program == self.program
            || Path::new(program).file_name() == Some(std::ffi::OsStr::new(HOOK_PROGRAM))
    }

    fn is_our_handler(&self, handler: &Value) -> bool {
        handler
            .get("command")
            .and_then(Value::as_str)
            .and_then(shlex::split)
            .and_then(|words| words.into_iter().next())
            .is_some_and(|program| self.is_ours(&program))
    }

    /// For a status-line command of ours: `Some(user command)` (`Some(None)` when it wraps
    /// nothing). `None` when the command is not ours.
    fn unwrap_statusline(&self, command: &str) -> Option<Option<String>> {
        let words = shlex::split(command)?;
        let (program, rest) = words.split_first()?;
        if !self.is_ours(program) || rest.first().map(String::as_str) != Some("statusline") {
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
}

/// `settings` with atm-hook installed. Pure; `install(install(s)) == install(s)`.
pub fn install(settings: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    let mut out = settings.clone();
    let root = out.as_object_mut().ok_or(ShapeError::NotAnObject)?;
    let hooks = object_entry(root, "hooks")?;
    for &(event, takes_matcher) in EVENTS {
        let groups = array_entry(hooks, event)?;
        install_event(groups, event, takes_matcher, hook)?;
    }
    install_statusline(root, hook)?;
    Ok(out)
}

/// `settings` without anything [`install`] adds (from any atm-hook path). Pure.
pub fn uninstall(settings: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    let mut out = settings.clone();
    let root = out.as_object_mut().ok_or(ShapeError::NotAnObject)?;
    if let Some(hooks_value) = root.get_mut("hooks") {
        let hooks = hooks_value
            .as_object_mut()
            .ok_or(wrong("hooks", "an object"))?;
        let mut emptied = Vec::new();
        for (event, groups) in hooks.iter_mut() {
            let Some(groups) = groups.as_array_mut() else {
                continue;
            };
            if remove_our_handlers(groups, hook) && groups.is_empty() {
                emptied.push(event.clone());
            }
        }
        for event in &emptied {
            hooks.shift_remove(event);
        }
        if !emptied.is_empty() && hooks.is_empty() {
            root.shift_remove("hooks");
        }
    }
    if let Some(Value::Object(line)) = root.get_mut("statusLine")
        && let Some(user) = line
            .get("command")
            .and_then(Value::as_str)
            .and_then(|c| hook.unwrap_statusline(c))
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

fn wrong(key: &str, expected: &'static str) -> ShapeError {
    ShapeError::WrongType {
        key: key.to_owned(),
        expected,
    }
}

fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, ShapeError> {
    map.entry(key)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| wrong(key, "an object"))
}

fn array_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Vec<Value>, ShapeError> {
    map.entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| wrong(&format!("hooks.{key}"), "a list"))
}

/// Keeps exactly one handler of ours for the event, with the current command: the first one
/// found (updated in place), else a new group at the end.
fn install_event(
    groups: &mut Vec<Value>,
    event: &str,
    takes_matcher: bool,
    hook: &HookCommand,
) -> Result<(), ShapeError> {
    let mut kept = false;
    for group in groups.iter_mut() {
        let Some(handlers) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            continue;
        };
        let mut error = None;
        handlers.retain_mut(|h| {
            if !hook.is_our_handler(h) {
                return true;
            }
            if kept {
                return false;
            }
            kept = true;
            match h.as_object_mut() {
                Some(obj) => {
                    obj.insert(
                        "command".to_owned(),
                        Value::String(hook.event_command().to_owned()),
                    );
                }
                None => {
                    error = Some(wrong(
                        &format!("hooks.{event}"),
                        "a list of handler objects",
                    ))
                }
            }
            true
        });
        if let Some(e) = error {
            return Err(e);
        }
    }
    // Groups emptied by dropping duplicates of ours held nothing of the user's.
    groups.retain(|g| {
        g.get("hooks")
            .and_then(Value::as_array)
            .is_none_or(|h| !h.is_empty())
    });
    if !kept {
        let handler = json!({
            "type": "command",
            "command": hook.event_command(),
            "timeout": HOOK_TIMEOUT_SECS,
        });
        let group = if takes_matcher {
            json!({"matcher": "*", "hooks": [handler]})
        } else {
            json!({"hooks": [handler]})
        };
        groups.push(group);
    }
    Ok(())
}

/// Removes our handlers; drops the groups that held nothing else. True if anything was removed.
fn remove_our_handlers(groups: &mut Vec<Value>, hook: &HookCommand) -> bool {
    let mut removed_any = false;
    groups.retain_mut(|group| {
        let Some(handlers) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            return true;
        };
        let before = handlers.len();
        handlers.retain(|h| !hook.is_our_handler(h));
        if handlers.len() == before {
            return true;
        }
        removed_any = true;
        !handlers.is_empty()
    });
    removed_any
}

fn install_statusline(root: &mut Map<String, Value>, hook: &HookCommand) -> Result<(), ShapeError> {
    match root.get_mut("statusLine") {
        None | Some(Value::Null) => {
            root.insert(
                "statusLine".to_owned(),
                json!({"type": "command", "command": hook.statusline_command(None)?}),
            );
        }
        Some(Value::Object(line)) => {
            let Some(current) = line.get("command").and_then(Value::as_str) else {
                // Not a command status line (a future kind): nothing of ours can wrap it.
                return Ok(());
            };
            let user = match hook.unwrap_statusline(current) {
                Some(inner) => inner,
                None => Some(current.to_owned()),
            };
            let wrapped = hook.statusline_command(user.as_deref())?;
            line.insert("command".to_owned(), Value::String(wrapped));
        }
        Some(_) => return Err(wrong("statusLine", "an object")),
    }
    Ok(())
}

/// Where Claude keeps its settings: `--config-dir`, `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
pub fn config_dir(args: &ClaudeArgs) -> Result<PathBuf, SetupError> {
    if let Some(dir) = &args.config_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    atm_core::paths::home_dir()
        .map(|h| h.join(".claude"))
        .ok_or(SetupError::NoConfigDir)
}

/// `--hook-command`, else the atm-hook installed beside this atmctl, else `atm-hook` from PATH.
fn default_hook_program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(HOOK_PROGRAM)))
        .filter(|p| p.is_file())
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_else(|| HOOK_PROGRAM.to_owned())
}

pub fn run(args: &ClaudeArgs) -> anyhow::Result<ExitCode> {
    let path = config_dir(args)?.join("settings.json");
    let program = args
        .hook_command
        .clone()
        .unwrap_or_else(default_hook_program);
    let hook = HookCommand::new(&program).map_err(|shape| SetupError::Shape {
        path: PathBuf::from("--hook-command"),
        shape,
    })?;
    let loaded = file::load(&path)?;
    let shape_err = |shape| SetupError::Shape {
        path: loaded.path.clone(),
        shape,
    };
    let updated = if args.uninstall {
        uninstall(&loaded.value, &hook).map_err(shape_err)?
    } else {
        install(&loaded.value, &hook).map_err(shape_err)?
    };
    let old_text = file::render(&loaded.value, &loaded.style);
    let new_text = file::render(&updated, &loaded.style);
    let what = if args.uninstall {
        "atm's hooks are not installed"
    } else {
        "atm's hooks are already installed"
    };
    // Compare renderings, not values: key order matters to us, and map equality ignores it.
    if old_text == new_text && (loaded.original.is_some() || args.uninstall) {
        say(&format!(
            "{what} in {}; nothing to change\n",
            loaded.path.display()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        let diff = file::unified_diff(&loaded.path, loaded.original_text(), &new_text);
        say(&format!(
            "{diff}(dry run: {} was not changed)\n",
            loaded.path.display()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
    let backup = file::save(&loaded, &new_text, &stamp)?;
    let mut report = if args.uninstall {
        format!("removed atm's hooks from {}\n", loaded.path.display())
    } else {
        format!(
            "installed {} for {} Claude Code hook events and the status line in {}\n",
            hook.event_command(),
            EVENTS.len(),
            loaded.path.display()
        )
    };
    if let Some(b) = backup {
        report.push_str(&format!("previous version saved as {}\n", b.display()));
    }
    if !args.uninstall {
        if loaded.value.get("disableAllHooks") == Some(&Value::Bool(true)) {
            eprintln!(
                "warning: `disableAllHooks` is true in {}: Claude Code runs no hook until you remove it",
                loaded.path.display()
            );
        }
        report.push_str(
            "Claude Code sessions started before now may need a restart to run the hooks.\n",
        );
    }
    say(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth reporting.
fn say(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hook() -> HookCommand {
        HookCommand::new("/opt/atm/bin/atm-hook").unwrap()
    }

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
            assert_eq!(ours["hooks"][0]["timeout"], HOOK_TIMEOUT_SECS);
            assert_eq!(ours.get("matcher").is_some(), *takes_matcher, "{event}");
        }
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
        let joined = h
            .unwrap_statusline("atm-hook statusline -- printf '%s\\n' 'a b'")
            .unwrap()
            .unwrap();
        assert_eq!(shlex::split(&joined).unwrap(), ["printf", "%s\\n", "a b"]);
        assert_eq!(h.unwrap_statusline("atm-hook statusline"), Some(None));
        assert_eq!(h.unwrap_statusline("other statusline -- x"), None);
        assert_eq!(h.unwrap_statusline("atm-hook --agent x"), None);
        assert_eq!(h.unwrap_statusline("'unterminated"), None);
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
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(("[a-zA-Z]{1,5}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Settings in the shape users write, without anything of ours and without empty containers
    /// (which uninstall cannot tell from ones install emptied).
    fn arb_settings() -> impl Strategy<Value = Value> {
        let handler = "[a-z./ '~-]{1,12}"
            .prop_filter("a user's own command", |c| !c.contains(HOOK_PROGRAM))
            .prop_map(|c| json!({"type": "command", "command": c}));
        let group = (
            proptest::option::of("[A-Za-z|*]{1,6}"),
            prop::collection::vec(handler, 1..3),
        )
            .prop_map(|(m, hs)| match m {
                Some(m) => json!({"matcher": m, "hooks": hs}),
                None => json!({"hooks": hs}),
            });
        let event = prop::sample::select(vec![
            "PreToolUse",
            "Stop",
            "SessionStart",
            "FileChanged",
            "Notification",
        ]);
        let hooks = prop::collection::vec((event, prop::collection::vec(group, 1..3)), 1..4)
            .prop_map(|evs| {
                Value::Object(
                    evs.into_iter()
                        .map(|(e, g)| (e.to_owned(), Value::from(g)))
                        .collect(),
                )
            });
        let statusline = "[a-z ./'\"$-]{1,16}"
            .prop_map(|c| json!({"type": "command", "command": c, "padding": 1}));
        (
            prop::collection::vec(("[a-z]{1,6}", arb_json()), 0..4),
            proptest::option::of(hooks),
            proptest::option::of(statusline),
        )
            .prop_map(|(extra, hooks, line)| {
                let mut m = Map::new();
                for (k, v) in extra {
                    m.insert(k, v);
                }
                if let Some(h) = hooks {
                    m.insert("hooks".to_owned(), h);
                }
                if let Some(l) = line {
                    m.insert("statusLine".to_owned(), l);
                }
                Value::Object(m)
            })
    }

    proptest! {
        #[test]
        fn round_trip_and_idempotence(s in arb_settings()) {
            let once = install(&s, &hook()).unwrap();
            let twice = install(&once, &hook()).unwrap();
            prop_assert_eq!(serde_json::to_string(&once).unwrap(), serde_json::to_string(&twice).unwrap());
            let back = uninstall(&once, &hook()).unwrap();
            prop_assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&s).unwrap());
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
