//! Registry settings and their defaults.
//!
//! The one place the registry's defaults are written: `RegistryConfig::default()` is built from
//! the `DEFAULT_*` constants, the daemon's `[daemon]` section falls back to the same constants,
//! and a daemon test checks that the commented defaults in `plugins.toml` say the same.

use std::path::PathBuf;
use std::time::Duration;

/// Registry settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Hard cap on sessions, enforced on every path that creates one.
    pub max_sessions: usize,
    /// Sessions with no process to watch expire after this much silence.
    pub silence_expiry: Duration,
    pub command_capacity: usize,
    pub broadcast_capacity: usize,
    /// Where to persist; `None` keeps everything in memory.
    pub snapshot_path: Option<PathBuf>,
    /// How long to wait after a change before writing the snapshot.
    pub snapshot_debounce: Duration,
    /// How often the janitor looks for dead processes and silent sessions (zero: never).
    pub cleanup_interval: Duration,
    pub proc_root: PathBuf,
    /// This machine's id, stamped on every session the registry creates (`[daemon] host`).
    pub host: crate::host::HostId,
}

impl RegistryConfig {
    /// `[daemon] max_sessions`.
    pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
    /// `[daemon] session_expiry`: 30 minutes.
    pub const DEFAULT_SILENCE_EXPIRY: Duration = Duration::from_secs(30 * 60);
    /// `[daemon] cleanup_interval`: 30 s. Exits are seen at once by the exit watcher (a pidfd
    /// per agent process); the janitor only catches what it cannot watch and expires silent
    /// sessions, so it need not wake an idle daemon often.
    pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(30);
    /// `[daemon] snapshot_debounce`.
    pub const DEFAULT_SNAPSHOT_DEBOUNCE: Duration = Duration::from_millis(250);
    /// Commands queued before callers wait.
    pub const DEFAULT_COMMAND_CAPACITY: usize = 1024;
    /// Changes a subscriber may fall behind before it is told it lagged.
    pub const DEFAULT_BROADCAST_CAPACITY: usize = 16_384;
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            silence_expiry: Self::DEFAULT_SILENCE_EXPIRY,
            command_capacity: Self::DEFAULT_COMMAND_CAPACITY,
            broadcast_capacity: Self::DEFAULT_BROADCAST_CAPACITY,
            snapshot_path: None,
            snapshot_debounce: Self::DEFAULT_SNAPSHOT_DEBOUNCE,
            cleanup_interval: Self::DEFAULT_CLEANUP_INTERVAL,
            proc_root: PathBuf::from(crate::process::PROC_ROOT),
            host: crate::host::HostId::local(),
        }
    }
}
