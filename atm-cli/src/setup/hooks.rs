//! What the agent modules share: the atm-hook command as it appears in settings, the
//! Claude-style hook lists (Claude Code, Codex and Gemini CLI all use
//! `{"hooks": {"<Event>": [{"matcher"?, "hooks": [{"type": "command", "command", ...}]}]}}`),
//! and the plan-diff-write flow that ends every `atmctl setup` run.
//!
//! A handler is recognised as ours by its program: the configured hook path, or any program
//! named `atm-hook`. That makes install idempotent and lets a reinstall after moving the binary
//! update the path in place instead of adding a second handler. Uninstall drops only our
//! handlers, plus the groups, event lists and `hooks` object that become empty by the removal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value};

use super::file::{self, Loaded, TextFile};
use super::{SetupArgs, SetupError, ShapeError};

/// The program name that marks a handler as ours wherever it is installed.
pub const HOOK_PROGRAM: &str = "atm-hook";

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

    /// `--hook-command`, else the atm-hook installed beside this atmctl, else `atm-hook` from
    /// PATH; a NUL in it is reported as a bad `--hook-command`.
    pub fn from_arg(arg: Option<&str>) -> Result<Self, SetupError> {
        let program = arg.map_or_else(default_hook_program, str::to_owned);
        Self::new(&program).map_err(|shape| SetupError::Shape {
            path: PathBuf::from("--hook-command"),
            shape,
        })
    }

    /// The program path, unquoted (an argv element, as Codex's `notify` takes it).
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The command line for Claude's hook events.
    pub fn event_command(&self) -> &str {
        &self.quoted
    }

    /// The command line for another agent's hook events: `<atm-hook> --agent NAME`.
    pub fn agent_command(&self, agent: &str) -> String {
        format!("{} --agent {agent}", self.quoted)
    }

    /// True when `program` (a command's first word) is this hook or any `atm-hook`.
    pub fn is_ours(&self, program: &str) -> bool {
        program == self.program
            || Path::new(program).file_name() == Some(std::ffi::OsStr::new(HOOK_PROGRAM))
    }

    pub fn is_our_handler(&self, handler: &Value) -> bool {
        handler
            .get("command")
            .and_then(Value::as_str)
            .and_then(shlex::split)
            .and_then(|words| words.into_iter().next())
            .is_some_and(|program| self.is_ours(&program))
    }
}

/// The atm-hook installed beside this atmctl, else `atm-hook` from PATH.
fn default_hook_program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(HOOK_PROGRAM)))
        .filter(|p| p.is_file())
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_else(|| HOOK_PROGRAM.to_owned())
}

pub fn wrong(key: &str, expected: &'static str) -> ShapeError {
    ShapeError::WrongType {
        key: key.to_owned(),
        expected,
    }
}

pub fn object_entry<'a>(
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

/// Adds our handler to each of `events` in `root.hooks`: `group(event)` is the whole matcher
/// group to append when the event has none of ours; one already there gets `command`.
pub fn install_hooks(
    root: &mut Map<String, Value>,
    events: &[&str],
    hook: &HookCommand,
    command: &str,
    group: impl Fn(&str) -> Value,
) -> Result<(), ShapeError> {
    let hooks = object_entry(root, "hooks")?;
    for &event in events {
        let groups = array_entry(hooks, event)?;
        if !update_ours(groups, event, hook, command)? {
            groups.push(group(event));
        }
    }
    Ok(())
}

/// Keeps exactly one handler of ours for the event, with `command`: the first one found
/// (updated in place). False when there was none.
fn update_ours(
    groups: &mut Vec<Value>,
    event: &str,
    hook: &HookCommand,
    command: &str,
) -> Result<bool, ShapeError> {
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
                    obj.insert("command".to_owned(), Value::String(command.to_owned()));
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
    Ok(kept)
}

/// Removes every handler of ours from `root.hooks`, and what that leaves empty.
/// A copy of `settings` with `edit` applied to its top-level object (which it must be). Pure
/// when `edit` is: what every agent's install and uninstall are built on.
pub fn edit_root(
    settings: &Value,
    edit: impl FnOnce(&mut Map<String, Value>) -> Result<(), ShapeError>,
) -> Result<Value, ShapeError> {
    let mut out = settings.clone();
    edit(out.as_object_mut().ok_or(ShapeError::NotAnObject)?)?;
    Ok(out)
}

/// `settings` without atm-hook's handlers: the whole uninstall of an agent whose install adds
/// nothing but hooks (Codex's `hooks.json`, Gemini's settings). Pure.
pub fn without_hooks(settings: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    edit_root(settings, |root| uninstall_hooks(root, hook))
}

pub fn uninstall_hooks(
    root: &mut Map<String, Value>,
    hook: &HookCommand,
) -> Result<(), ShapeError> {
    let Some(hooks_value) = root.get_mut("hooks") else {
        return Ok(());
    };
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

/// One file to rewrite.
#[derive(Debug)]
pub struct Edit {
    pub file: TextFile,
    pub new_text: String,
}

/// The edit that turns a loaded JSON file into `updated`, or `None` when nothing changes.
/// Renderings are compared, not values: key order matters to us, and map equality ignores it.
pub fn json_edit(loaded: &Loaded, updated: &Value) -> Option<Edit> {
    let new_text = file::render(updated, &loaded.style);
    (file::render(&loaded.value, &loaded.style) != new_text).then(|| Edit {
        file: loaded.file.clone(),
        new_text,
    })
}

/// An agent whose settings are one JSON file (Claude Code, Gemini CLI): what [`run_json_file`]
/// needs to know about it.
pub struct JsonAgent {
    /// Its name in messages ("Claude Code").
    pub name: &'static str,
    /// Reads the settings file (the agent may refuse more than [`file::load`] does).
    pub load: fn(&Path) -> Result<Loaded, SetupError>,
    /// The pure merges.
    pub install: fn(&Value, &HookCommand) -> Result<Value, ShapeError>,
    pub uninstall: fn(&Value, &HookCommand) -> Result<Value, ShapeError>,
    /// A setting of the user's that switches every hook off, warned about after an install.
    pub hooks_off: HooksOff,
    /// The settings file: the agent's config dir for these arguments, joined with `settings.json`.
    pub config_dir: fn(&SetupArgs) -> Result<PathBuf, SetupError>,
    /// What an install did, given the atm-hook command and the file's name (the other messages
    /// are common).
    pub installed: fn(&HookCommand, &str) -> String,
}

/// A setting that switches all of an agent's hooks off: at JSON `pointer`, the value `off`;
/// the warning says `"<key> is <off>"` and that the agent runs no hook until you `undo` it.
pub struct HooksOff {
    pub pointer: &'static str,
    pub key: &'static str,
    pub off: bool,
    pub undo: &'static str,
}

/// The whole run for a [`JsonAgent`]: load its `settings.json`, apply the pure install or
/// uninstall, then [`finish`].
pub fn run_json_file(agent: &JsonAgent, args: &SetupArgs) -> anyhow::Result<ExitCode> {
    let hook = &HookCommand::from_arg(args.hook_command.as_deref())?;
    let (dry_run, uninstall) = (args.dry_run, args.uninstall);
    let loaded = (agent.load)(&(agent.config_dir)(args)?.join("settings.json"))?;
    let change = if uninstall {
        agent.uninstall
    } else {
        agent.install
    };
    let updated = change(&loaded.value, hook).map_err(|shape| SetupError::Shape {
        path: loaded.file.path.clone(),
        shape,
    })?;
    let shown = loaded.file.path.display().to_string();
    let (unchanged, done) = if uninstall {
        (
            format!("atm's hooks are not installed in {shown}"),
            format!("removed atm's hooks from {shown}\n"),
        )
    } else {
        let off = &agent.hooks_off;
        if loaded.value.pointer(off.pointer) == Some(&Value::Bool(off.off)) {
            eprintln!(
                "warning: `{}` is {} in {shown}: {} runs no hook until you {}",
                off.key, off.off, agent.name, off.undo
            );
        }
        (
            format!("atm's hooks are already installed in {shown}"),
            (agent.installed)(hook, &shown),
        )
    };
    let edits: Vec<_> = json_edit(&loaded, &updated).into_iter().collect();
    finish(&edits, dry_run, &unchanged, done)
}

/// The atm-hook the unit tests install.
#[cfg(test)]
pub fn test_hook() -> HookCommand {
    HookCommand::new("/opt/atm/bin/atm-hook").unwrap()
}

/// A user's own `hooks` object for the agents' property tests: one to three of `events`, each
/// with one or two groups of their own commands (never atm-hook); with `matchers`, a group may
/// have a matcher. No container is empty (uninstall cannot tell those from ones it emptied).
#[cfg(test)]
pub fn arb_user_hooks(
    events: &'static [&'static str],
    matchers: bool,
) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    use serde_json::json;
    let handler = "[a-z./ '~-]{1,12}"
        .prop_filter("a user's own command", |c| !c.contains(HOOK_PROGRAM))
        .prop_map(|c| json!({"type": "command", "command": c}));
    let matcher = if matchers {
        proptest::option::of("[A-Za-z|*]{1,6}").boxed()
    } else {
        Just(None).boxed()
    };
    let group = (matcher, prop::collection::vec(handler, 1..3)).prop_map(|(m, hs)| match m {
        Some(m) => json!({"matcher": m, "hooks": hs}),
        None => json!({"hooks": hs}),
    });
    let event = prop::sample::select(events);
    prop::collection::vec((event, prop::collection::vec(group, 1..3)), 1..4).prop_map(|evs| {
        Value::Object(
            evs.into_iter()
                .map(|(e, g)| (e.to_owned(), Value::from(g)))
                .collect(),
        )
    })
}

/// A user's settings for the agents' property tests: `extra` top-level keys of their own, then
/// each of `keys` whose value is there.
#[cfg(test)]
pub fn settings_from<const N: usize>(
    extra: Vec<(String, Value)>,
    keys: [(&str, Option<Value>); N],
) -> Value {
    let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
    for (k, v) in keys {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    }
    Value::Object(m)
}

/// The property of every JSON merge: install is idempotent, and uninstall gives back exactly
/// the user's `settings`.
#[cfg(test)]
pub fn check_round_trip(
    settings: &Value,
    install: fn(&Value, &HookCommand) -> Result<Value, ShapeError>,
    uninstall: fn(&Value, &HookCommand) -> Result<Value, ShapeError>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let hook = test_hook();
    let once = install(settings, &hook).unwrap();
    let twice = install(&once, &hook).unwrap();
    proptest::prop_assert_eq!(once.to_string(), twice.to_string());
    let back = uninstall(&once, &hook).unwrap();
    proptest::prop_assert_eq!(back.to_string(), settings.to_string());
    Ok(())
}

/// Ends a run: nothing to do (`unchanged` is said, as in "atm's hooks are already installed"),
/// a dry-run diff, or the writes (each after its own backup, then `done` is said).
pub fn finish(
    edits: &[Edit],
    dry_run: bool,
    unchanged: &str,
    done: String,
) -> anyhow::Result<ExitCode> {
    let names = edits
        .iter()
        .map(|e| e.file.path.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    if edits.is_empty() {
        say(&format!("{unchanged}; nothing to change\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        let mut out = String::new();
        for e in edits {
            out.push_str(&file::unified_diff(
                &e.file.path,
                e.file.text(),
                &e.new_text,
            ));
        }
        out.push_str(&format!("(dry run: {names} not changed)\n"));
        say(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
    let mut report = done;
    for e in edits {
        if let Some(b) = file::save(&e.file, &e.new_text, &stamp)? {
            report.push_str(&format!("previous version saved as {}\n", b.display()));
        }
    }
    say(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error worth reporting.
pub fn say(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A configuration directory: `--config-dir`, else `$VAR` when set and not empty, else
/// `~/<home_relative>`.
pub fn config_dir(
    arg: Option<&Path>,
    var: &'static str,
    home_relative: &str,
) -> Result<PathBuf, SetupError> {
    if let Some(dir) = arg {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    atm_core::paths::home_dir()
        .map(|h| h.join(home_relative))
        .ok_or(SetupError::NoConfigDir { variable: var })
}
