//! `claude-statusline`: Claude Code's status-line data (model, cost, context window, rate
//! limits, version, worktree) as session usage.
//!
//! Claude runs `atm-hook statusline` as its status-line command; `atm-hook` forwards the JSON
//! as a protocol-v1 `status_update`. This crate parses it ([`parse_status_line`], pure) and
//! applies it as a usage update that never changes state ([`adapter`]).

pub mod adapter;
pub mod parse;

pub use adapter::{ClaudeStatuslineAdapter, ClaudeStatuslineConfig, StatuslineStats};
pub use parse::{StatusLine, parse_status_line};

atm_core::register_plugin! {
    adapter "claude-statusline",
    description: "Claude Code status-line data (cost, context, model, rate limits) sent by atm-hook",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(ClaudeStatuslineAdapter::from_config(cfg)?)),
}
