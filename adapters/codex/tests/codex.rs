//! The codex adapter against a real registry: realistic Codex hook and notify payloads, sent the
//! way `atm-hook --agent codex [--notify]` sends them, through the real shared ingest socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapter_codex::{CodexAdapter, CodexStats};
use atm_core::registry::RegistryConfig;
use atm_core::serde_json::{self, Value, json};
use atm_core::testing::check_adapter_contract;
use atm_core::testing::ingest::{FakeAgent, IngestClient, RunningAdapter, check_replay_step};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The codex adapter running on its own socket against a real registry, and its counters.
async fn start() -> (RunningAdapter, Arc<CodexStats>) {
    let mut stats = None;
    let run = RunningAdapter::start(RegistryConfig::default(), |cfg| {
        let a = CodexAdapter::from_config(cfg).unwrap();
        stats = Some(a.stats());
        a
    })
    .await;
    (run, stats.unwrap())
}

/// Sends Codex's JSON as `atm-hook --agent codex` does (adding pid and pane when given).
async fn send_hook(c: &mut IngestClient, mut data: Value, pid: Option<u32>) {
    if let Some(pid) = pid {
        data["pid"] = json!(pid);
        data["tmux_pane"] = json!("%7");
    }
    c.send("hook_event", data, json!({"agent": "codex"})).await;
}

#[tokio::test]
async fn replays_every_fixture_in_a_realistic_order() {
    let (run, stats) = start().await;
    let codex = FakeAgent::spawn();
    let pid = codex.pid();
    let mut client = run.client().await;
    let replay = fixture("replay.json");
    let mut used = std::collections::HashSet::new();
    for step in replay["steps"].as_array().unwrap() {
        let name = step["fixture"].as_str().unwrap();
        used.insert(name.to_owned());
        send_hook(&mut client, fixture(name), Some(pid)).await;
        let expect = step["expect"].as_object().unwrap();
        run.wait_until(name, |all| check_replay_step(all, expect).is_ok())
            .await;
        if let [s] = run.sessions().await.as_slice() {
            assert_eq!(s.harness.as_str(), "codex");
            assert_eq!(s.pid(), Some(pid), "{name}: the real Codex process");
            assert_eq!(s.tmux_pane.as_deref(), Some("%7"));
            assert_eq!(s.cwd.as_deref(), Some("/home/dev/src/api"));
        }
    }
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            n == "replay.json" || used.contains(&n),
            "fixture {n} is not replayed"
        );
    }
    assert_eq!(CodexStats::get(&stats.unknown_events), 2);
    assert_eq!(CodexStats::get(&stats.bad_messages), 0);
    run.stop().await;
}

#[tokio::test]
async fn every_fixture_translates_with_the_right_known_flag() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        if n == "replay.json" {
            continue;
        }
        let t = adapter_codex::translate(&fixture(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(t.known, !n.contains("unknown"), "{n}");
    }
}

#[tokio::test]
async fn notify_alone_makes_an_idle_codex_session() {
    // Users who configure only `notify` (no hooks) still see each finished turn.
    let (run, _) = start().await;
    let codex = FakeAgent::spawn();
    let mut client = run.client().await;
    send_hook(
        &mut client,
        fixture("notify.agent-turn-complete.json"),
        Some(codex.pid()),
    )
    .await;
    run.wait_until("idle codex session", |all| {
        all.len() == 1
            && all[0].state.as_str() == "idle"
            && all[0].harness.as_str() == "codex"
            && all[0].id.as_str() == "0199a213-81c0-7800-8aa1-bbab2a035a53"
            && all[0].pid() == Some(codex.pid())
    })
    .await;
    // The same payload under its own message type (`codex_notify`) is served too.
    let mut other = fixture("notify.agent-turn-complete.json");
    other["thread-id"] = json!("thread-2");
    let line = json!({"type": "codex_notify", "data": other});
    client.write_raw(format!("{line}\n").as_bytes()).await;
    run.wait_until("second session", |all| {
        all.iter()
            .any(|s| s.id.as_str() == "thread-2" && s.state.as_str() == "idle")
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn keeps_the_plugin_contract() {
    use adapter_codex as _;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("contract.sock");
    let mut t = atm_core::toml::Table::new();
    t.insert("socket".into(), sock.display().to_string().into());
    check_adapter_contract("codex", atm_core::toml::Value::Table(t), dir.path()).await;
}

/// Every field of every fixture removed or replaced by a value of another type (or a huge or
/// multi-byte string): the translator never panics, and only the fields it cannot work without
/// make it refuse the payload, with `invalid_message`.
#[test]
fn every_fixture_survives_mutated_fields() {
    let replacements = [
        Value::Null,
        json!(5),
        json!(-1.5),
        json!(true),
        json!([]),
        json!({}),
        json!(""),
        json!("é".repeat(100_000)),
    ];
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        if n == "replay.json" {
            continue;
        }
        let original = fixture(&n);
        for key in original.as_object().unwrap().keys() {
            let mut variants = vec![{
                let mut v = original.clone();
                v.as_object_mut().unwrap().remove(key);
                v
            }];
            for r in &replacements {
                let mut v = original.clone();
                v[key.as_str()] = r.clone();
                variants.push(v);
            }
            for v in variants {
                if let Err(e) = adapter_codex::translate(&v) {
                    assert_eq!(
                        e.code,
                        atm_core::protocol::ErrorCode::InvalidMessage,
                        "{n}/{key}"
                    );
                    assert!(
                        ["session_id", "hook_event_name", "thread-id", "type"]
                            .contains(&key.as_str()),
                        "{n}: `{key}` is not required: {e}"
                    );
                }
            }
        }
    }
}
