//! The atm daemon as a library: config loading and validation ([`config`]), plugin supervision
//! ([`supervisor`]) and the daemon's life cycle ([`daemon`]). The `atmd` binary is a thin front
//! end over it; fuzz targets and tests use the config loader directly.
//!
//! This crate names every plugin crate (below) so that `inventory` keeps their registrations:
//! a plugin crate that nothing references is silently dropped by the linker.

pub mod config;
pub mod daemon;
pub mod supervisor;

use adapter_claude_hooks as _;
use adapter_claude_statusline as _;
use adapter_codex as _;
use adapter_gemini as _;
use adapter_opencode as _;
use adapter_pi as _;
use adapter_proc_discovery as _;
use sink_dbus as _;
use sink_notify as _;
use sink_socket as _;

#[cfg(feature = "example-jsonl")]
use atm_example_jsonl as _;

/// Call from a binary or test that must see every plugin: referencing this function links this
/// crate, and with it every plugin crate's registration.
pub fn link_plugins() {}
