//! `atmctl setup codex` on real files in a temp `CODEX_HOME`: config.toml (comments and order
//! kept, a user's notify refused or replaced with --force and restored) and hooks.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use atm_cli::setup::codex::EVENTS;
use common::{ATM_HOOK, atmctl_setup, ok};
use serde_json::Value;

const USER_CONFIG: &str = r#"# Codex settings
model = "gpt-5-codex"  # default
approval_policy = "on-request"

[features]
web_search_request = true

[mcp_servers.docs]
command = "docs-mcp"
"#;

const USER_HOOKS: &str = r#"{
  "hooks": {
    "Stop": [
      {"hooks": [{"type": "command", "command": "notify-send done"}]}
    ]
  }
}
"#;

struct CodexHome(tempfile::TempDir);

impl CodexHome {
    fn with(config: Option<&str>, hooks: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(c) = config {
            std::fs::write(dir.path().join("config.toml"), c).unwrap();
        }
        if let Some(h) = hooks {
            std::fs::write(dir.path().join("hooks.json"), h).unwrap();
        }
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn backups(&self) -> usize {
        std::fs::read_dir(self.0.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".atm-backup-")
            })
            .count()
    }

    fn atmctl(&self, extra: &[&str]) -> Output {
        atmctl_setup("codex", "CODEX_HOME", self.0.path(), extra)
    }
}

fn hook_path() -> String {
    Path::new(ATM_HOOK)
        .canonicalize()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn dry_run_install_twice_uninstall() {
    let home = CodexHome::with(Some(USER_CONFIG), Some(USER_HOOKS));
    std::fs::set_permissions(
        home.path("config.toml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();

    let diff = ok(&home.atmctl(&["--dry-run"]));
    assert!(diff.contains("+notify = ["), "{diff}");
    assert!(diff.contains("+hooks = true"), "{diff}");
    assert!(diff.contains("--agent codex"), "{diff}");
    assert_eq!(home.text("config.toml"), USER_CONFIG);
    assert_eq!(home.text("hooks.json"), USER_HOOKS);
    assert_eq!(home.backups(), 0);

    let out = ok(&home.atmctl(&[]));
    assert!(out.contains("installed"), "{out}");
    let config = home.text("config.toml");
    let hook = hook_path();
    // notify sits before the first table; comments and the rest are unchanged.
    let notify = format!("notify = [\"{hook}\", \"--agent\", \"codex\", \"--notify\"]\n");
    assert!(config.starts_with(&format!(
        "# Codex settings\nmodel = \"gpt-5-codex\"  # default\napproval_policy = \"on-request\"\n{notify}"
    )), "{config}");
    let parsed: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(parsed["features"]["hooks"].as_bool(), Some(true));
    assert_eq!(
        parsed["features"]["web_search_request"].as_bool(),
        Some(true)
    );
    assert_eq!(
        parsed["mcp_servers"]["docs"]["command"].as_str(),
        Some("docs-mcp")
    );
    let mode = std::fs::metadata(home.path("config.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    let hooks: Value = serde_json::from_str(&home.text("hooks.json")).unwrap();
    for event in EVENTS {
        let ours = hooks["hooks"][event].as_array().unwrap().last().unwrap();
        assert_eq!(
            ours["hooks"][0]["command"],
            format!("{hook} --agent codex"),
            "{event}"
        );
        // Codex 0.171 allows Interrupt and SessionEnd hooks 3 s at most.
        let timeout = if ["Interrupt", "SessionEnd"].contains(event) {
            3
        } else {
            5
        };
        assert_eq!(ours["hooks"][0]["timeout"], timeout, "{event}");
    }
    assert_eq!(
        hooks["hooks"]["Stop"][0]["hooks"][0]["command"],
        "notify-send done"
    );
    assert_eq!(home.backups(), 2);

    let again = ok(&home.atmctl(&[]));
    assert!(again.contains("already installed"), "{again}");
    assert_eq!(home.backups(), 2);

    ok(&home.atmctl(&["--uninstall"]));
    assert_eq!(home.text("config.toml"), USER_CONFIG);
    let back: Value = serde_json::from_str(&home.text("hooks.json")).unwrap();
    assert_eq!(back, serde_json::from_str::<Value>(USER_HOOKS).unwrap());
    let again = ok(&home.atmctl(&["--uninstall"]));
    assert!(again.contains("not installed"), "{again}");
}

/// The events installed are the ones the codex adapter has realistic fixtures for.
#[test]
fn installed_events_have_adapter_fixtures() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../adapters/codex/tests/fixtures");
    let names: Vec<String> = std::fs::read_dir(fixtures)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for event in EVENTS {
        assert!(
            names.iter().any(|n| n.starts_with(&format!("{event}."))),
            "{event}: {names:?}"
        );
    }
}

#[test]
fn fresh_home_gets_both_files() {
    let home = CodexHome::with(None, None);
    ok(&home.atmctl(&["--hook-command", "/opt/atm/bin/atm-hook"]));
    assert_eq!(
        home.text("config.toml"),
        "notify = [\"/opt/atm/bin/atm-hook\", \"--agent\", \"codex\", \"--notify\"]\n\
         features.hooks = true # added by atmctl setup codex\n"
    );
    let hooks: Value = serde_json::from_str(&home.text("hooks.json")).unwrap();
    assert_eq!(hooks["hooks"].as_object().unwrap().len(), 12);
    let mode = std::fs::metadata(home.path("config.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_users_notify_is_refused_unless_forced_and_comes_back_on_uninstall() {
    let user = "notify = [\"notify-send\", \"Codex\"]\n\n[tui]\nnotifications = true\n";
    let home = CodexHome::with(Some(user), None);
    let out = home.atmctl(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notify") && err.contains("--force"), "{err}");
    assert_eq!(home.text("config.toml"), user);
    assert!(
        !home.path("hooks.json").exists(),
        "nothing written on refusal"
    );

    ok(&home.atmctl(&["--force"]));
    let config = home.text("config.toml");
    let parsed: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(parsed["notify"][0].as_str(), Some(hook_path().as_str()));
    assert!(config.contains("[\"notify-send\", \"Codex\"]"), "{config}");

    ok(&home.atmctl(&["--uninstall"]));
    assert_eq!(home.text("config.toml"), user);
}

#[test]
fn malformed_files_are_reported_and_left_alone() {
    let bad_toml = "model = \"x\"\nnotify = [\"a\",\n[features\n";
    let home = CodexHome::with(Some(bad_toml), Some(USER_HOOKS));
    let out = home.atmctl(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml:3:") && err.contains("not valid TOML"),
        "{err}"
    );
    assert_eq!(home.text("config.toml"), bad_toml);
    assert_eq!(home.text("hooks.json"), USER_HOOKS);

    let home = CodexHome::with(Some(USER_CONFIG), Some("{\n  \"hooks\": {,\n}\n"));
    let out = home.atmctl(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hooks.json:2:"), "{err}");
    assert_eq!(home.text("config.toml"), USER_CONFIG);

    let home = CodexHome::with(Some("model = \"\u{0}\"\n"), None);
    std::fs::write(home.path("config.toml"), b"model = \"\xff\"\n").unwrap();
    let out = home.atmctl(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"));
}
