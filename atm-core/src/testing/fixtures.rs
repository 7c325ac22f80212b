//! Recorded payloads in a crate's `tests/fixtures`: one loader, and the checks every hook-style
//! translator's fixtures get (each one translated, each one surviving mutated fields, all of
//! them replayed in a realistic order through the running adapter).
//!
//! A fixture directory holds one payload a file, as the agent sends it (without what `atm-hook`
//! adds), and [`REPLAY`]: `{"steps": [{"fixture": <file>, "expect": {...}}, ...]}`, where
//! `expect` is checked by [`check_replay_step`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::ingest::{FakeAgent, RunningAdapter, check_replay_step};
use crate::ingest::IngestStats;
use crate::ingest_adapter::{Translation, Translator};
use crate::model::Session;
use crate::protocol::{ErrorCode, WireError};
use crate::registry::RegistryConfig;

/// The file of replay steps; every other file in a fixture directory is one payload.
pub const REPLAY: &str = "replay.json";

/// Every payload in `malformed` is refused by `translate` with `invalid_message` and a message
/// saying why (the payload is named when it is not).
pub fn check_refused<T: std::fmt::Debug>(
    translate: impl Fn(&Value) -> Result<T, WireError>,
    malformed: impl IntoIterator<Item = Value>,
) {
    for payload in malformed {
        let e = translate(&payload).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage, "{payload}");
        assert!(!e.message.is_empty(), "{payload}");
    }
}

/// The pane [`Fixtures::replay`] says the agent runs in.
pub const PANE: &str = "%7";

/// Adds what `atm-hook` adds to every payload it forwards: the agent's PID and `$TMUX_PANE`.
pub fn with_process(mut data: Value, pid: u32, pane: &str) -> Value {
    data["pid"] = json!(pid);
    data["tmux_pane"] = json!(pane);
    data
}

/// Sets fields of a payload (a JSON object merge, one level).
pub fn patch(mut data: Value, fields: Value) -> Value {
    if let (Some(o), Value::Object(f)) = (data.as_object_mut(), fields) {
        o.extend(f);
    }
    data
}

/// A crate's fixture directory.
#[derive(Debug, Clone)]
pub struct Fixtures {
    dir: PathBuf,
}

impl Fixtures {
    /// `tests/fixtures` of the crate at `manifest_dir` (`env!("CARGO_MANIFEST_DIR")`).
    pub fn of(manifest_dir: &str) -> Self {
        Self {
            dir: Path::new(manifest_dir).join("tests/fixtures"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One fixture's JSON; fails the test naming the file.
    pub fn load(&self, name: &str) -> Value {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    /// A JSON-lines fixture (a recording of a real agent, `real-<version>/<test>.jsonl`): one
    /// value per line; fails the test naming the file.
    pub fn load_lines(&self, name: &str) -> Vec<Value> {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        text.lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
            })
            .collect()
    }

    /// The names of the payload files (every file but [`REPLAY`]; directories, such as a
    /// recording of a real agent, are not payloads), sorted.
    pub fn payloads(&self) -> Vec<String> {
        let entries = std::fs::read_dir(&self.dir)
            .unwrap_or_else(|e| panic!("fixtures {}: {e}", self.dir.display()));
        let mut names: Vec<String> = entries
            .map(Result::unwrap)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != REPLAY)
            .collect();
        names.sort();
        names
    }

    /// Every payload translates, and is known unless its name says `unknown`.
    pub fn check_translated(&self, translate: impl Fn(&Value) -> Result<Translation, WireError>) {
        for n in self.payloads() {
            let t = translate(&self.load(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(t.known, !n.contains("unknown"), "{n}");
        }
    }

    /// Every field of every payload removed or replaced by a value of another type (or a huge
    /// or multi-byte string): `translate` never panics, and only the `required` fields make it
    /// refuse the payload, with `invalid_message`.
    pub fn check_mutated_fields(
        &self,
        translate: impl Fn(&Value) -> Result<Translation, WireError>,
        required: &[&str],
    ) {
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
        for n in self.payloads() {
            let original = self.load(&n);
            for key in original.as_object().unwrap().keys() {
                let mut removed = original.clone();
                removed.as_object_mut().unwrap().remove(key);
                let replaced = replacements.iter().map(|r| {
                    let mut v = original.clone();
                    v[key.as_str()] = r.clone();
                    v
                });
                for v in std::iter::once(removed).chain(replaced) {
                    if let Err(e) = translate(&v) {
                        assert_eq!(e.code, ErrorCode::InvalidMessage, "{n}/{key}");
                        assert!(
                            required.contains(&key.as_str()),
                            "{n}: `{key}` is not required: {e}"
                        );
                    }
                }
            }
        }
    }

    /// The whole replay check of a hook translator: the generic adapter with `T` on its own
    /// socket, a real process as the agent, [`replay`](Self::replay) with `extra` beside each
    /// payload; every session it makes is `T`'s harness in `cwd`, and the adapter counted
    /// `unknown_events` unknown events and no bad message.
    pub async fn check_replay<T: Translator>(&self, extra: Value, cwd: &str, unknown_events: u64) {
        let (run, stats) = RunningAdapter::start_translator::<T>(RegistryConfig::default()).await;
        let agent = FakeAgent::spawn();
        self.replay(&run, agent.pid(), extra, |s, name| {
            assert_eq!(s.harness.as_str(), T::HARNESS, "{name}");
            assert_eq!(s.cwd.as_deref(), Some(cwd), "{name}");
        })
        .await;
        assert_eq!(IngestStats::get(&stats.unknown_events), unknown_events);
        assert_eq!(IngestStats::get(&stats.bad_messages), 0);
        run.stop().await;
    }

    /// Plays [`REPLAY`] through `run`: each step's payload is sent as `atm-hook` sends it (a
    /// `hook_event` with `extra` beside `data`, e.g. `{"agent": "codex"}`, and the agent's `pid`
    /// and [`PANE`] added), then the registry must come to match the step's `expect`, and
    /// while there is one session `each_step(session, fixture)` checks it. Fails when a payload
    /// file takes no part in the replay.
    pub async fn replay(
        &self,
        run: &RunningAdapter,
        pid: u32,
        extra: Value,
        each_step: impl Fn(&Session, &str),
    ) {
        let replay = self.load(REPLAY);
        let mut client = run.client().await;
        let mut used = BTreeSet::new();
        for step in replay["steps"].as_array().unwrap() {
            let name = step["fixture"].as_str().unwrap();
            used.insert(name.to_owned());
            let data = with_process(self.load(name), pid, PANE);
            client.send("hook_event", data, extra.clone()).await;
            let expect = step["expect"].as_object().unwrap();
            run.wait_until(name, |all| check_replay_step(all, expect).is_ok())
                .await;
            if let [s] = run.sessions().await.as_slice() {
                assert_eq!(s.pid(), Some(pid), "{name}: the agent's process");
                assert_eq!(s.tmux_pane.as_deref(), Some(PANE), "{name}");
                each_step(s, name);
            }
        }
        for n in self.payloads() {
            assert!(used.contains(&n), "fixture {n} is not replayed");
        }
    }
}

/// The tests every hook agent's translator crate runs on its fixtures and its plugin, in the
/// crate's integration test file: a `fixtures()` for the crate's `tests/fixtures`, and the
/// tests `replays_every_fixture_in_a_realistic_order` ([`Fixtures::check_replay`], each step sent
/// with the `agent` fields beside `data`, as `atm-hook --agent` sends it),
/// `every_fixture_translates_with_the_right_known_flag`, `every_fixture_survives_mutated_fields`
/// (with the `required` fields) and `keeps_the_plugin_contract` (the plugin `name` on a socket of
/// its own). The crate needs `tokio` and `tempfile` as dev-dependencies.
///
/// ```ignore
/// atm_core::translator_tests! {
///     "amp", AmpHooks, translate: adapter_amp::translate,
///     replay: (json!({"agent": "amp"}), "/home/dev/src/app", unknown: 1),
///     required: &["session_id", "hook_event_name"],
/// }
/// ```
#[macro_export]
macro_rules! translator_tests {
    (
        $name:literal, $translator:ty, translate: $translate:path,
        replay: ($agent:expr, $cwd:literal, unknown: $unknown:expr),
        required: $required:expr $(,)?
    ) => {
        fn fixtures() -> $crate::testing::fixtures::Fixtures {
            $crate::testing::fixtures::Fixtures::of(env!("CARGO_MANIFEST_DIR"))
        }

        #[::tokio::test]
        async fn replays_every_fixture_in_a_realistic_order() {
            fixtures()
                .check_replay::<$translator>($agent, $cwd, $unknown)
                .await;
        }

        #[test]
        fn every_fixture_translates_with_the_right_known_flag() {
            fixtures().check_translated($translate);
        }

        #[test]
        fn every_fixture_survives_mutated_fields() {
            fixtures().check_mutated_fields($translate, $required);
        }

        #[::tokio::test]
        async fn keeps_the_plugin_contract() {
            let dir = ::tempfile::tempdir().unwrap();
            let socket = $crate::testing::ingest::socket_table(&dir.path().join("contract.sock"));
            $crate::testing::check_adapter_contract($name, socket, dir.path()).await;
        }
    };
}
