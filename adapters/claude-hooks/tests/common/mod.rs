//! Test helpers: Claude fixtures, and under this crate's names the shared ingest helpers of
//! `atm_core::testing::ingest` (a running adapter on a real socket, a protocol-v1 client, a real
//! child process standing in for Claude).

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

use std::path::{Path, PathBuf};

pub use atm_core::testing::ingest::{
    FakeAgent as FakeClaude, IngestClient as Client, RunningAdapter as Running, socket_table,
};
use serde_json::{Value, json};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture's JSON (as Claude sends it, without `pid` / `tmux_pane`).
pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Adds what `atm-hook` adds: the Claude PID and `$TMUX_PANE`.
pub fn with_process(mut data: Value, pid: u32, pane: &str) -> Value {
    let o = data.as_object_mut().unwrap();
    o.insert("pid".into(), json!(pid));
    o.insert("tmux_pane".into(), json!(pane));
    data
}

/// Sets fields of a payload (JSON object merge, one level).
pub fn patch(mut data: Value, fields: Value) -> Value {
    if let (Some(o), Value::Object(f)) = (data.as_object_mut(), fields) {
        o.extend(f);
    }
    data
}
