//! The custom build behaves as `atmd` does, with the extra plugin: `plugins` lists it next to
//! the built-in ones, `check-config` accepts a config that uses it and refuses a typo in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_atm-example-custom-atmd");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("ATM_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap()
}

#[test]
fn plugins_lists_the_extra_plugin_with_the_built_in_ones() {
    let out = run(&["plugins"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for plugin in ["adapter jsonl", "adapter claude-hooks", "sink socket"] {
        assert!(text.contains(plugin), "{plugin} missing from:\n{text}");
    }
}

/// `check-config` on a config file holding `text`.
fn check_config(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atmd.toml");
    std::fs::write(&path, text).unwrap();
    run(&["--config", path.to_str().unwrap(), "check-config"])
}

#[test]
fn check_config_accepts_the_extra_plugin_and_names_a_bad_key() {
    let out = check_config("[[adapter]]\ntype = \"jsonl\"\nsocket = \"/tmp/x.sock\"\n");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 adapters, 0 sinks)"));

    let out = check_config("[[adapter]]\ntype = \"jsonl\"\nsockt = \"/tmp/x.sock\"\n");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sockt") && err.contains(":3:"), "{err}");
}
