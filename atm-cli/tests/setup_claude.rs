//! `atmctl setup claude` on real settings files in a temp `CLAUDE_CONFIG_DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{ATM_HOOK, ATMCTL, atmctl_setup, ok, refused};
use serde_json::Value;

/// What a user's file looks like: four-space indent, hooks of their own (one on PreToolUse), a
/// status line with padding, keys in a non-alphabetical order.
const USER_SETTINGS: &str = r#"{
    "permissions": {
        "allow": ["Bash(cargo test:*)"]
    },
    "model": "opus",
    "hooks": {
        "PreToolUse": [
            {
                "matcher": "Bash",
                "hooks": [
                    {"type": "command", "command": "~/bin/guard.sh", "timeout": 10}
                ]
            }
        ],
        "FileChanged": [
            {"hooks": [{"type": "command", "command": "make -q"}]}
        ]
    },
    "statusLine": {
        "type": "command",
        "command": "bash ~/.claude/statusline.sh \"$HOME\"",
        "padding": 0
    },
    "env": {"FOO": "1"},
    "alwaysThinkingEnabled": true
}
"#;

struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn with(contents: Option<&[u8]>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(c) = contents {
            std::fs::write(dir.path().join("settings.json"), c).unwrap();
        }
        Self { dir }
    }

    fn settings(&self) -> PathBuf {
        self.dir.path().join("settings.json")
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.settings()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes()).unwrap()
    }

    fn backups(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".atm-backup-"))
            .collect();
        v.sort();
        v
    }

    fn atmctl(&self, extra: &[&str]) -> Output {
        atmctl_setup("claude", "CLAUDE_CONFIG_DIR", self.dir.path(), extra)
    }
}

/// Every key path in document order, so that order is compared too (map equality ignores it).
fn key_order(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = format!("{prefix}/{k}");
                out.push(path.clone());
                key_order(v, &path, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                key_order(v, &format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    key_order(v, "", &mut out);
    out
}

#[test]
fn install_twice_then_uninstall_gives_back_the_original() {
    let cfg = ConfigDir::with(Some(USER_SETTINGS.as_bytes()));
    std::fs::set_permissions(cfg.settings(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let original: Value = serde_json::from_str(USER_SETTINGS).unwrap();

    let stdout = ok(&cfg.atmctl(&[]));
    assert!(stdout.contains("installed"), "{stdout}");
    let installed = cfg.json();
    let hook_path = Path::new(ATM_HOOK).canonicalize().unwrap();
    let hook = hook_path.to_str().unwrap();
    // Every event has our handler, after the user's; the user's PreToolUse guard comes first.
    // Every event the claude-hooks adapter translates is hooked.
    for event in adapter_claude_hooks::translate::KNOWN_EVENTS {
        let groups = installed["hooks"][event].as_array().unwrap();
        assert_eq!(
            groups.last().unwrap()["hooks"][0]["command"],
            hook,
            "{event}"
        );
    }
    assert_eq!(
        installed["hooks"]["PreToolUse"][0],
        original["hooks"]["PreToolUse"][0]
    );
    assert_eq!(
        installed["hooks"]["FileChanged"],
        original["hooks"]["FileChanged"]
    );
    // The status line wraps the user's command, which the shell passes on as one argument.
    let line = installed["statusLine"]["command"].as_str().unwrap();
    assert_eq!(
        shlex::split(line).unwrap(),
        [
            hook,
            "statusline",
            "--",
            "bash ~/.claude/statusline.sh \"$HOME\""
        ]
    );
    assert_eq!(installed["statusLine"]["padding"], 0);
    // Other keys kept, in order; style and mode kept; one backup holding the original bytes.
    let top: Vec<_> = installed.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        top,
        [
            "permissions",
            "model",
            "hooks",
            "statusLine",
            "env",
            "alwaysThinkingEnabled"
        ]
    );
    assert!(
        String::from_utf8(cfg.bytes())
            .unwrap()
            .contains("\n    \"model\": \"opus\",\n")
    );
    let mode = std::fs::metadata(cfg.settings())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    let backups = cfg.backups();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read(&backups[0]).unwrap(),
        USER_SETTINGS.as_bytes()
    );
    let name = backups[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let stamp = name.strip_prefix("settings.json.atm-backup-").unwrap();
    assert_eq!(stamp.len(), 15, "{name}");
    assert_eq!(&stamp[8..9], "T");

    // Again: nothing changes, not even a backup.
    let after_first = cfg.bytes();
    let stdout = ok(&cfg.atmctl(&[]));
    assert!(stdout.contains("already installed"), "{stdout}");
    assert_eq!(cfg.bytes(), after_first);
    assert_eq!(cfg.backups().len(), 1);

    // Uninstall: the original meaning, in the original order, status line included.
    ok(&cfg.atmctl(&["--uninstall"]));
    let restored = cfg.json();
    assert_eq!(restored, original);
    assert_eq!(keys(&restored), keys(&original));
    let stdout = ok(&cfg.atmctl(&["--uninstall"]));
    assert!(stdout.contains("not installed"), "{stdout}");
}

#[test]
fn dry_run_prints_a_diff_and_changes_nothing() {
    let cfg = ConfigDir::with(Some(USER_SETTINGS.as_bytes()));
    let stdout = ok(&cfg.atmctl(&["--dry-run", "--hook-command", "/usr/local/bin/atm-hook"]));
    assert_eq!(cfg.bytes(), USER_SETTINGS.as_bytes());
    assert!(cfg.backups().is_empty());
    assert!(
        stdout.contains("--- ") && stdout.contains("+++ ") && stdout.contains("@@"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+                        \"command\": \"/usr/local/bin/atm-hook\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("-        \"command\": \"bash ~/.claude/statusline.sh"),
        "{stdout}"
    );

    // Dry-run uninstall of an installed file shows the removal, and changes nothing either.
    ok(&cfg.atmctl(&["--hook-command", "/usr/local/bin/atm-hook"]));
    let installed = cfg.bytes();
    let stdout = ok(&cfg.atmctl(&["--uninstall", "--dry-run"]));
    assert!(
        stdout.contains("-                        \"command\": \"/usr/local/bin/atm-hook\""),
        "{stdout}"
    );
    assert_eq!(cfg.bytes(), installed);
}

#[test]
fn malformed_file_is_reported_with_its_position_and_left_alone() {
    let bad = b"{\n  \"model\": \"opus\",\n  \"hooks\": {,}\n}\n";
    let cfg = ConfigDir::with(Some(bad));
    for args in [&[][..], &["--uninstall"], &["--dry-run"]] {
        let out = cfg.atmctl(args);
        let stderr = refused(&out, &format!("{args:?}"));
        assert!(stderr.contains("settings.json:3:13"), "{stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert!(out.stdout.is_empty());
        assert_eq!(cfg.bytes(), bad);
        assert!(cfg.backups().is_empty());
    }
}

#[test]
fn non_utf8_file_is_a_clear_error() {
    let bad = b"{\n  \"model\": \"op\xffus\"\n}\n";
    let cfg = ConfigDir::with(Some(bad));
    let stderr = refused(&cfg.atmctl(&[]), "non-UTF-8");
    assert!(
        stderr.contains("not valid UTF-8") && stderr.contains("line 2"),
        "{stderr}"
    );
    assert_eq!(cfg.bytes(), bad);
}

#[test]
fn wrong_shape_is_an_error_and_left_alone() {
    let bad = br#"{"hooks": ["not", "an", "object"]}"#;
    let cfg = ConfigDir::with(Some(bad));
    let stderr = refused(&cfg.atmctl(&[]), "wrong shape");
    assert!(stderr.contains("`hooks` must be an object"), "{stderr}");
    assert_eq!(cfg.bytes(), bad);
}

#[test]
fn missing_file_is_created_and_config_dir_flag_wins() {
    let cfg = ConfigDir::with(None);
    let other = tempfile::tempdir().unwrap();
    let nested = other.path().join("not/yet/there");
    let out = Command::new(ATMCTL)
        .args(["setup", "claude", "--config-dir"])
        .arg(&nested)
        .args(["--hook-command", "/opt/my tools/atm-hook"])
        .env("CLAUDE_CONFIG_DIR", cfg.dir.path())
        .output()
        .unwrap();
    ok(&out);
    assert!(!cfg.settings().exists());
    let path = nested.join("settings.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        v["statusLine"]["command"],
        "'/opt/my tools/atm-hook' statusline"
    );
    assert_eq!(
        v["hooks"]["Stop"][0]["hooks"][0]["command"],
        "'/opt/my tools/atm-hook'"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(&nested)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["settings.json"],
        "no backup and no temp file left behind"
    );

    // Uninstall of what we created leaves an empty object, not our leftovers.
    let out = Command::new(ATMCTL)
        .args(["setup", "claude", "--uninstall", "--config-dir"])
        .arg(&nested)
        .output()
        .unwrap();
    ok(&out);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v, serde_json::json!({}));
}
