//! Test helpers: Claude fixtures, and under this crate's names the shared helpers of
//! `atm_core::testing` (a running adapter on a real socket, a protocol-v1 client, a real child
//! process standing in for Claude, fixture loading).

#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers fail by panicking

use atm_core::testing::fixtures::Fixtures;
pub use atm_core::testing::fixtures::{patch, with_process};
pub use atm_core::testing::ingest::{
    FakeAgent as FakeClaude, IngestClient as Client, RunningAdapter as Running, socket_table,
};
use serde_json::Value;

pub fn fixtures() -> Fixtures {
    Fixtures::of(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture's JSON (as Claude sends it, without `pid` / `tmux_pane`).
pub fn fixture(name: &str) -> Value {
    fixtures().load(name)
}
