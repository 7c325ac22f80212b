//! `atmctl setup codex`: atm-hook in Codex CLI's `config.toml` and `hooks.json` (under
//! `$CODEX_HOME`, else `~/.codex`).
//!
//! What install adds, and so exactly what uninstall removes:
//!
//! - `config.toml`: top-level `notify = ["<atm-hook>", "--agent", "codex", "--notify"]` (Codex
//!   appends the turn's JSON as the last argument), and `hooks = true` under `features` (the
//!   key Codex 0.171 reads; the older `codex_hooks` it reports as deprecated on every start, so
//!   one atm added earlier is replaced). The key is marked with a trailing
//!   `# added by atmctl setup codex` comment so that uninstall removes only what it added, and
//!   written as a dotted `features.hooks` key when there is no `[features]` table, so nothing
//!   is appended after the user's tables. Codex runs one notify program: a
//!   different one already configured is refused unless `--force`, which keeps it in a comment
//!   above `notify` for uninstall to put back. The file goes through `toml_edit`, so comments,
//!   order and formatting survive.
//! - `hooks.json`: for each event in [`EVENTS`], one group `{"hooks":[{"type":"command",
//!   "command":"<atm-hook> --agent codex","timeout":5}]}` (no matcher: every tool, every source),
//!   merged like Claude's hooks ([`super::hooks`]).
//! - Codex asks the user to trust new hooks before it runs them; the trust entries it writes
//!   for atm's handlers are removed by uninstall ([`super::codex_trust`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use serde_json::{Value, json};
use toml_edit::{Array, DocumentMut, Item, Table};

use super::hooks::{HookCommand, edit_root, finish, install_hooks, json_edit};
use super::{SetupArgs, SetupError, ShapeError, file};

/// The Codex hook events atm installs: the codex adapter's own list of the events that say a
/// state (all Codex 0.171 offers but `PreModelRequest`/`PostModelRequest`, which fire around
/// every model request and say nothing a state needs). Read from the adapter, not copied, so
/// the two cannot drift apart.
pub const EVENTS: &[&str] = adapter_codex::translate::KNOWN_EVENTS;

/// Seconds Codex waits for the hook (see the Claude module for why 5).
pub const HOOK_TIMEOUT_SECS: u64 = 5;

/// Codex 0.171 clamps the timeout of these events to 3 s (and warns at every start about a
/// longer one), so they get 3.
const SHORT_TIMEOUT_EVENTS: &[&str] = &["SessionEnd", "Interrupt"];
const SHORT_TIMEOUT_SECS: u64 = 3;

/// The feature key that turns hooks on (on by default in Codex 0.171), and the deprecated
/// alias earlier versions of atm wrote.
const FEATURE: &str = "hooks";
const OLD_FEATURE: &str = "codex_hooks";

/// Marks the feature key install added.
const MARK: &str = "# added by atmctl setup codex";
/// Starts the comment line that keeps a replaced `notify` (one TOML value after it).
const PREVIOUS_NOTIFY: &str = "# atm-previous-notify = ";

#[derive(Debug, Clone, clap::Args)]
pub struct CodexArgs {
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Replace a `notify` program you configured (it is kept for --uninstall).
    #[arg(long)]
    pub force: bool,
}

/// Why `config.toml` cannot take atm's notify program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigChangeError {
    #[error("`notify` already runs {existing}")]
    NotifyTaken { existing: String },
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

fn our_notify(hook: &HookCommand) -> toml_edit::Value {
    let mut argv = Array::new();
    for arg in [hook.program(), "--agent", "codex", "--notify"] {
        argv.push(arg);
    }
    toml_edit::Value::Array(argv)
}

/// True when a `notify` value runs atm-hook (from any path).
fn is_our_notify(value: &toml_edit::Value, hook: &HookCommand) -> bool {
    value
        .as_array()
        .and_then(|a| a.get(0))
        .and_then(toml_edit::Value::as_str)
        .is_some_and(|program| hook.is_ours(program))
}

/// `config` with atm's notify program and the hooks feature key installed (replacing a
/// `codex_hooks` key atm added before). Pure and idempotent.
pub fn install_config(
    config: &DocumentMut,
    hook: &HookCommand,
    force: bool,
) -> Result<DocumentMut, ConfigChangeError> {
    let mut doc = config.clone();
    let root = doc.as_table_mut();
    match root.get_key_value_mut("notify") {
        None => {
            root.insert("notify", Item::Value(our_notify(hook)));
        }
        Some((mut key, item)) => {
            let Some(value) = item.as_value_mut() else {
                return Err(super::hooks::wrong("notify", "a list of strings").into());
            };
            if !is_our_notify(value, hook) {
                let previous = value.clone().decorated("", "").to_string();
                if !force {
                    return Err(ConfigChangeError::NotifyTaken { existing: previous });
                }
                let decor = key.leaf_decor_mut();
                let prefix = decor.prefix().and_then(|p| p.as_str()).unwrap_or("");
                decor.set_prefix(format!("{prefix}{PREVIOUS_NOTIFY}{previous}\n"));
            }
            let decor = value.decor().clone();
            *value = our_notify(hook);
            *value.decor_mut() = decor;
        }
    }
    let mut enabled = toml_edit::value(true);
    if let Some(v) = enabled.as_value_mut() {
        v.decor_mut().set_suffix(format!(" {MARK}"));
    }
    match root.get_mut("features") {
        None => {
            let mut features = Table::new();
            features.set_dotted(true);
            features.insert(FEATURE, enabled);
            root.insert("features", Item::Table(features));
        }
        Some(item) => {
            let features = item
                .as_table_like_mut()
                .ok_or_else(|| super::hooks::wrong("features", "a table"))?;
            if is_marked(features.get(OLD_FEATURE)) {
                features.remove(OLD_FEATURE);
            }
            // The user's own `codex_hooks` (either value) is their choice of the same switch.
            if features.get(FEATURE).is_none() && features.get(OLD_FEATURE).is_none() {
                features.insert(FEATURE, enabled);
            }
        }
    }
    Ok(doc)
}

/// `config` without what [`install_config`] added, with a notify program it replaced put back.
/// Pure.
pub fn uninstall_config(config: &DocumentMut, hook: &HookCommand) -> DocumentMut {
    let mut doc = config.clone();
    let root = doc.as_table_mut();
    if let Some((mut key, item)) = root.get_key_value_mut("notify")
        && let Some(value) = item.as_value_mut()
        && is_our_notify(value, hook)
    {
        let decor = key.leaf_decor_mut();
        let prefix = decor
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_owned();
        let mut previous = None;
        let kept: String = prefix
            .split_inclusive('\n')
            .filter(|line| match line.strip_prefix(PREVIOUS_NOTIFY) {
                Some(rest) if previous.is_none() => {
                    previous = toml_edit::Value::from_str(rest.trim()).ok();
                    previous.is_none()
                }
                _ => true,
            })
            .collect();
        match previous {
            Some(mut old) => {
                decor.set_prefix(kept);
                *old.decor_mut() = value.decor().clone();
                *value = old;
            }
            None => {
                root.remove("notify");
            }
        }
    }
    if let Some(features) = root.get_mut("features").and_then(Item::as_table_like_mut) {
        let mut ours = false;
        for key in [FEATURE, OLD_FEATURE] {
            if is_marked(features.get(key)) {
                features.remove(key);
                ours = true;
            }
        }
        let emptied_dotted = ours
            && features.is_empty()
            && root
                .get("features")
                .and_then(Item::as_table)
                .is_some_and(Table::is_dotted);
        if emptied_dotted {
            root.remove("features");
        }
    }
    doc
}

/// True for a value install added (it carries [`MARK`]).
fn is_marked(item: Option<&Item>) -> bool {
    item.and_then(Item::as_value)
        .and_then(|v| v.decor().suffix())
        .and_then(|s| s.as_str())
        .is_some_and(|s| s.contains(MARK))
}

/// `hooks` (the parsed `hooks.json`) with atm-hook on every event in [`EVENTS`]. Pure.
pub fn install_hook_file(hooks: &Value, hook: &HookCommand) -> Result<Value, ShapeError> {
    let command = hook.agent_command("codex");
    edit_root(hooks, |root| {
        install_hooks(root, EVENTS, hook, &command, |event| {
            let timeout = if SHORT_TIMEOUT_EVENTS.contains(&event) {
                SHORT_TIMEOUT_SECS
            } else {
                HOOK_TIMEOUT_SECS
            };
            json!({"hooks": [{"type": "command", "command": command, "timeout": timeout}]})
        })
    })
}

/// `hooks` without atm-hook's handlers. Pure.
pub use super::hooks::without_hooks as uninstall_hook_file;

/// Parses `config.toml`; errors carry the line and column.
pub fn parse_config(loaded: &file::TextFile) -> Result<DocumentMut, SetupError> {
    let text = loaded.text();
    DocumentMut::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start).min(text.len());
        let before = text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SetupError::MalformedToml {
            path: loaded.path.clone(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })
}

/// Codex's configuration directory: `--config-dir`, `$CODEX_HOME`, else `~/.codex`.
pub fn config_dir(args: &SetupArgs) -> Result<PathBuf, SetupError> {
    super::hooks::config_dir(args.config_dir.as_deref(), "CODEX_HOME", ".codex")
}

pub fn run(CodexArgs { setup: args, force }: &CodexArgs) -> anyhow::Result<ExitCode> {
    let dir = config_dir(args)?;
    let hook = HookCommand::from_arg(args.hook_command.as_deref())?;
    // Both files are read and both changes computed before anything is written.
    let config_file = file::load_text(&dir.join("config.toml"))?;
    let config = parse_config(&config_file)?;
    let hooks_file = file::load(&dir.join("hooks.json"))?;
    let config_path = config_file.path.clone();
    let new_config = if args.uninstall {
        let slots = super::codex_trust::our_handler_slots(&hooks_file.value, &hook);
        let without_trust =
            super::codex_trust::remove_trust(&config, &hooks_file.file.path, &slots);
        uninstall_config(&without_trust, &hook)
    } else {
        install_config(&config, &hook, *force).map_err(|e| match e {
            ConfigChangeError::NotifyTaken { existing } => SetupError::NotifyTaken {
                path: config_path.clone(),
                existing,
            },
            ConfigChangeError::Shape(shape) => SetupError::Shape {
                path: config_path.clone(),
                shape,
            },
        })?
    };
    let hooks_shape = |shape| SetupError::Shape {
        path: hooks_file.file.path.clone(),
        shape,
    };
    let new_hooks = if args.uninstall {
        uninstall_hook_file(&hooks_file.value, &hook).map_err(hooks_shape)?
    } else {
        install_hook_file(&hooks_file.value, &hook).map_err(hooks_shape)?
    };

    let mut edits = Vec::new();
    let new_config_text = new_config.to_string();
    if new_config_text != config_file.text() {
        edits.push(super::hooks::Edit {
            file: config_file.clone(),
            new_text: new_config_text,
        });
    }
    edits.extend(json_edit(&hooks_file, &new_hooks));

    let shown = format!(
        "{} and {}",
        config_file.path.display(),
        hooks_file.file.path.display()
    );
    for key in [FEATURE, OLD_FEATURE] {
        let off = new_config
            .get("features")
            .and_then(|f| f.get(key))
            .and_then(Item::as_bool)
            == Some(false);
        if off && !args.uninstall {
            eprintln!(
                "warning: `{key} = false` under [features] in {}: Codex runs no hook (only notify) until you remove it",
                config_file.path.display()
            );
        }
    }
    let (unchanged, done) = if args.uninstall {
        (
            format!("atm's notify program and hooks are not installed in {shown}"),
            format!("removed atm's notify program and hooks from {shown}\n"),
        )
    } else {
        (
            format!("atm's notify program and hooks are already installed in {shown}"),
            format!(
                "installed {} as the notify program and for {} Codex hook events in {shown}\n\
                 At its next start Codex asks you to trust the new hooks (\"Hooks need review\"): \
                 choose \"Trust all and continue\" (or review them in `/hooks`). With \
                 \"Continue without trusting\" Codex runs none of them and atm sees only turn ends. \
                 Codex sessions started before now need a restart.\n",
                hook.agent_command("codex"),
                EVENTS.len(),
            ),
        )
    };
    finish(&edits, args.dry_run, &unchanged, done)
}

#[cfg(test)]
mod tests {
    use super::super::hooks::test_hook as hook;
    use super::*;
    use proptest::prelude::*;

    fn doc(text: &str) -> DocumentMut {
        text.parse().unwrap()
    }

    /// `text` with atm's hook installed (`force`: over a user's own `notify`).
    fn installed(text: &str, force: bool) -> String {
        install_config(&doc(text), &hook(), force)
            .unwrap()
            .to_string()
    }

    fn uninstalled(text: &str) -> String {
        uninstall_config(&doc(text), &hook()).to_string()
    }

    const USER_CONFIG: &str = r#"# My Codex config
model = "gpt-5-codex"   # the default model
approval_policy = "on-request"

[projects."/home/me/src/api"]
trust_level = "trusted"

# MCP servers
[mcp_servers.docs]
command = "docs-mcp"
"#;

    #[test]
    fn install_adds_notify_before_tables_and_keeps_comments() {
        let out = installed(USER_CONFIG, false);
        assert_eq!(
            out,
            r#"# My Codex config
model = "gpt-5-codex"   # the default model
approval_policy = "on-request"
notify = ["/opt/atm/bin/atm-hook", "--agent", "codex", "--notify"]
features.hooks = true # added by atmctl setup codex

[projects."/home/me/src/api"]
trust_level = "trusted"

# MCP servers
[mcp_servers.docs]
command = "docs-mcp"
"#
        );
        // Codex reads it as intended.
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["features"]["hooks"].as_bool(), Some(true));
        assert_eq!(parsed["notify"][3].as_str(), Some("--notify"));
        let again = installed(&out, false);
        assert_eq!(again, out);
        assert_eq!(uninstalled(&out), USER_CONFIG);
    }

    #[test]
    fn existing_features_table_gets_the_key_and_loses_only_ours() {
        let text = "[features]\nweb_search = true\n";
        let out = installed(text, false);
        assert!(out.contains("notify = ["), "{out}");
        assert!(
            out.ends_with(
                "[features]\nweb_search = true\nhooks = true # added by atmctl setup codex\n"
            ),
            "{out}"
        );
        assert_eq!(uninstalled(&out), text);
        // The user's own codex_hooks (true or false) is theirs: left alone both ways.
        for own in [
            "[features]\ncodex_hooks = true\n",
            "[features]\ncodex_hooks = false\n",
        ] {
            let out = installed(own, false);
            assert!(out.ends_with(own), "{out}");
            assert_eq!(uninstalled(&out), own);
        }
        assert!(matches!(
            install_config(&doc("features = 3\n"), &hook(), false),
            Err(ConfigChangeError::Shape(_))
        ));
    }

    #[test]
    fn a_codex_hooks_key_atm_added_before_becomes_the_current_key() {
        let old = "[features]\ncodex_hooks = true # added by atmctl setup codex\n";
        let out = installed(old, false);
        assert!(
            out.ends_with("[features]\nhooks = true # added by atmctl setup codex\n"),
            "{out}"
        );
        assert!(!out.contains("codex_hooks"), "{out}");
        // Uninstall takes either key of ours away.
        assert_eq!(uninstalled(old), "[features]\n");
    }

    #[test]
    fn a_users_notify_is_refused_then_replaced_with_force_and_restored() {
        let text = "# ping me\nnotify = [\"notify-send\", \"Codex\"] # desktop\n";
        assert_eq!(
            install_config(&doc(text), &hook(), false).err(),
            Some(ConfigChangeError::NotifyTaken {
                existing: r#"["notify-send", "Codex"]"#.to_owned()
            })
        );
        let out = installed(text, true);
        assert!(
            out.starts_with(
                "# ping me\n# atm-previous-notify = [\"notify-send\", \"Codex\"]\nnotify = [\"/opt/atm/bin/atm-hook\", \"--agent\", \"codex\", \"--notify\"] # desktop\n"
            ),
            "{out}"
        );
        // Installed again (even without --force): ours is recognised, nothing changes.
        assert_eq!(installed(&out, false), out);
        assert_eq!(uninstalled(&out), text);
        // Ours from another path is updated in place.
        let moved = install_config(
            &doc(&out),
            &HookCommand::new("/new/atm-hook").unwrap(),
            false,
        )
        .unwrap()
        .to_string();
        assert!(moved.contains("notify = [\"/new/atm-hook\""), "{moved}");
        assert!(moved.contains(PREVIOUS_NOTIFY));
    }

    #[test]
    fn hook_file_gets_every_event_without_matcher() {
        let user =
            json!({"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]}});
        let out = install_hook_file(&user, &hook()).unwrap();
        for event in EVENTS {
            let ours = out["hooks"][event].as_array().unwrap().last().unwrap();
            let timeout = if ["SessionEnd", "Interrupt"].contains(event) {
                3
            } else {
                5
            };
            assert_eq!(
                ours,
                &json!({"hooks": [{"type": "command",
                    "command": "/opt/atm/bin/atm-hook --agent codex", "timeout": timeout}]})
            );
        }
        for event in ["SessionEnd", "Interrupt", "SubagentStart", "SubagentStop"] {
            assert!(EVENTS.contains(&event), "{event} is installed");
        }
        assert_eq!(out["hooks"]["Stop"][0], user["hooks"]["Stop"][0]);
        assert_eq!(install_hook_file(&out, &hook()).unwrap(), out);
        let back = uninstall_hook_file(&out, &hook()).unwrap();
        assert_eq!(back.to_string(), user.to_string());
        assert_eq!(
            install_hook_file(&json!([]), &hook()),
            Err(ShapeError::NotAnObject)
        );
    }

    fn arb_config() -> impl Strategy<Value = String> {
        let key = "[a-z]{1,6}";
        let scalar = prop_oneof![
            any::<i32>().prop_map(|i| i.to_string()),
            "[a-z ]{0,6}".prop_map(|s| format!("\"{s}\"")),
            any::<bool>().prop_map(|b| b.to_string()),
        ];
        let line =
            (key, scalar, proptest::option::of("[a-z ]{0,8}")).prop_map(|(k, v, c)| match c {
                Some(c) => format!("{k} = {v} # {c}\n"),
                None => format!("{k} = {v}\n"),
            });
        let table = (
            prop::sample::select(vec!["features", "tui", "profiles.fast", "mcp_servers.x"]),
            prop::collection::vec(line.clone(), 0..3),
        )
            .prop_map(|(name, lines)| format!("\n[{name}]\n{}", lines.concat()));
        (
            proptest::option::of("# [a-z ]{0,10}\n"),
            prop::collection::vec(line, 0..4),
            prop::collection::vec(table, 0..3),
        )
            .prop_map(|(head, lines, tables)| {
                format!(
                    "{}{}{}",
                    head.unwrap_or_default(),
                    lines.concat(),
                    tables.concat()
                )
            })
            .prop_filter("valid TOML", |t| t.parse::<DocumentMut>().is_ok())
    }

    proptest! {
        #[test]
        fn config_round_trip_and_idempotence(text in arb_config()) {
            let original = doc(&text);
            // A user notify (a random key named notify is unlikely) is forced over and restored.
            let once = install_config(&original, &hook(), true).unwrap();
            let twice = install_config(&once, &hook(), false).unwrap();
            prop_assert_eq!(once.to_string(), twice.to_string());
            let parsed: toml::Value = toml::from_str(&once.to_string()).unwrap();
            prop_assert!(parsed.get("notify").is_some());
            prop_assert_eq!(uninstall_config(&once, &hook()).to_string(), text);
        }
    }
}
