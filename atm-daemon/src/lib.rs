//! The atm daemon as a library: the `atmd` command line ([`cli`]), config loading and
//! validation ([`config`]), plugin supervision ([`supervisor`]) and the daemon's life cycle
//! ([`daemon`]). The `atmd` binary is one line, `atm_daemon::cli::main()`; a custom build with
//! extra plugins is that line plus a `use my_plugin as _;` per plugin crate. Fuzz targets and
//! tests use the config loader directly.
//!
//! This crate names every built-in plugin crate whose feature is on (below) so that `inventory`
//! keeps their registrations: a plugin crate that nothing references is silently dropped by the
//! linker.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod instance;
pub mod supervisor;

#[cfg(feature = "claude-hooks")]
use adapter_claude_hooks as _;
#[cfg(feature = "claude-statusline")]
use adapter_claude_statusline as _;
#[cfg(feature = "codex")]
use adapter_codex as _;
#[cfg(feature = "gemini")]
use adapter_gemini as _;
#[cfg(feature = "nats")]
use adapter_nats as _;
#[cfg(feature = "opencode")]
use adapter_opencode as _;
#[cfg(feature = "pi")]
use adapter_pi as _;
#[cfg(feature = "proc-discovery")]
use adapter_proc_discovery as _;
#[cfg(feature = "dbus")]
use sink_dbus as _;
#[cfg(feature = "http")]
use sink_http as _;
#[cfg(feature = "nats")]
use sink_nats as _;
#[cfg(feature = "notify")]
use sink_notify as _;
#[cfg(feature = "socket")]
use sink_socket as _;
#[cfg(feature = "tmux-marks")]
use sink_tmux_marks as _;

/// Call from a binary or test that must see every plugin: referencing this function links this
/// crate, and with it every plugin crate's registration.
pub fn link_plugins() {}

/// The built-in plugins this build links (`kind:name`), one per enabled feature. A binary may
/// link more (custom builds add their own); these must all be there.
pub fn built_in_plugins() -> Vec<&'static str> {
    let all = [
        (cfg!(feature = "claude-hooks"), "adapter:claude-hooks"),
        (
            cfg!(feature = "claude-statusline"),
            "adapter:claude-statusline",
        ),
        (cfg!(feature = "codex"), "adapter:codex"),
        (cfg!(feature = "gemini"), "adapter:gemini"),
        (cfg!(feature = "opencode"), "adapter:opencode"),
        (cfg!(feature = "pi"), "adapter:pi"),
        (cfg!(feature = "proc-discovery"), "adapter:proc-discovery"),
        (cfg!(feature = "dbus"), "sink:dbus"),
        (cfg!(feature = "notify"), "sink:notify"),
        (cfg!(feature = "socket"), "sink:socket"),
        (cfg!(feature = "tmux-marks"), "sink:tmux-marks"),
        (cfg!(feature = "http"), "sink:http"),
        (cfg!(feature = "nats"), "adapter:nats"),
        (cfg!(feature = "nats"), "sink:nats"),
    ];
    all.into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
}
