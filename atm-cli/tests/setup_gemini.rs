//! `atmctl setup gemini` on real settings files under a temp `GEMINI_CLI_HOME`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ATM_HOOK, atmctl_setup, ok, refused};
use serde_json::Value;

const USER_SETTINGS: &str = r#"{
  "general": {
    "vimMode": true
  },
  "hooksConfig": {
    "enabled": true
  },
  "hooks": {
    "BeforeTool": [
      {
        "matcher": "run_shell_command",
        "hooks": [
          {
            "name": "guard",
            "type": "command",
            "command": "~/bin/guard.sh"
          }
        ]
      }
    ]
  },
  "ui": {
    "theme": "GitHub"
  }
}
"#;

use atm_cli::setup::gemini::EVENTS;

#[test]
fn installed_events_are_the_ones_the_adapter_knows_with_before_model() {
    for event in EVENTS {
        assert!(
            adapter_gemini::translate::KNOWN_EVENTS.contains(event),
            "{event}"
        );
    }
    // Per streamed chunk, or per model call with nothing atm uses: too often for a process per
    // event. BeforeModel is per model call too, but it is the only hook that names the model
    // (about 4 ms of atm-hook per call, against seconds of the model's own).
    for noisy in ["AfterModel", "BeforeToolSelection"] {
        assert!(!EVENTS.contains(&noisy), "{noisy}");
    }
    assert!(EVENTS.contains(&"BeforeModel"));
}

struct GeminiHome(tempfile::TempDir);

impl GeminiHome {
    fn with(settings: Option<&[u8]>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".gemini")).unwrap();
        let home = Self(dir);
        if let Some(s) = settings {
            std::fs::write(home.settings(), s).unwrap();
        }
        home
    }

    fn settings(&self) -> PathBuf {
        self.0.path().join(".gemini/settings.json")
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.settings()).unwrap()
    }

    fn atmctl(&self, extra: &[&str]) -> Output {
        atmctl_setup("gemini", "GEMINI_CLI_HOME", self.0.path(), extra)
    }
}

#[test]
fn dry_run_install_twice_uninstall() {
    let home = GeminiHome::with(Some(USER_SETTINGS.as_bytes()));
    let diff = ok(&home.atmctl(&["--dry-run"]));
    assert!(
        diff.contains("--agent gemini") && diff.contains("\"timeout\": 5000"),
        "{diff}"
    );
    assert_eq!(home.bytes(), USER_SETTINGS.as_bytes());

    ok(&home.atmctl(&[]));
    let hook = Path::new(ATM_HOOK).canonicalize().unwrap();
    let installed: Value = serde_json::from_slice(&home.bytes()).unwrap();
    for event in EVENTS {
        let ours = installed["hooks"][event]
            .as_array()
            .unwrap()
            .last()
            .unwrap();
        assert_eq!(
            ours["hooks"][0]["command"],
            format!("{} --agent gemini", hook.display()),
            "{event}"
        );
        assert_eq!(ours["hooks"][0]["name"], "atm");
        assert_eq!(ours["hooks"][0]["timeout"], 5000);
        assert!(ours.get("matcher").is_none());
    }
    assert!(installed["hooks"].get("AfterModel").is_none());
    assert_eq!(
        installed["hooks"]["BeforeTool"][0]["hooks"][0]["name"],
        "guard"
    );
    assert_eq!(installed["hooksConfig"]["enabled"], true);
    let top: Vec<_> = installed.as_object().unwrap().keys().cloned().collect();
    assert_eq!(top, ["general", "hooksConfig", "hooks", "ui"]);

    let after_first = home.bytes();
    assert!(ok(&home.atmctl(&[])).contains("already installed"));
    assert_eq!(home.bytes(), after_first);

    ok(&home.atmctl(&["--uninstall"]));
    assert_eq!(String::from_utf8(home.bytes()).unwrap(), USER_SETTINGS);
}

#[test]
fn comments_are_refused_with_their_position_and_kept() {
    let commented = b"{\n  \"general\": {\"vimMode\": true},\n  // my hooks\n  \"hooks\": {}\n}\n";
    let home = GeminiHome::with(Some(commented));
    for args in [&[][..], &["--uninstall"], &["--dry-run"]] {
        let err = refused(&home.atmctl(args), &format!("{args:?}"));
        assert!(
            err.contains("settings.json:3:") && err.contains("comments"),
            "{err}"
        );
        assert_eq!(home.bytes(), commented);
    }
    // A plain syntax error is reported as such.
    let home = GeminiHome::with(Some(b"{\"a\": 1,,}"));
    let err = String::from_utf8_lossy(&home.atmctl(&[]).stderr).into_owned();
    assert!(
        err.contains("not valid JSON") && err.contains(":1:"),
        "{err}"
    );
}

#[test]
fn missing_file_is_created_and_hooks_off_warns() {
    let home = GeminiHome::with(None);
    ok(&home.atmctl(&["--hook-command", "/opt/atm-hook"]));
    let v: Value = serde_json::from_slice(&home.bytes()).unwrap();
    assert_eq!(v["hooks"].as_object().unwrap().len(), 9);
    ok(&home.atmctl(&["--uninstall", "--hook-command", "/opt/atm-hook"]));
    assert_eq!(
        serde_json::from_slice::<Value>(&home.bytes()).unwrap(),
        serde_json::json!({})
    );

    let home = GeminiHome::with(Some(br#"{"hooksConfig": {"enabled": false}}"#));
    let out = home.atmctl(&[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hooksConfig.enabled"));
}
