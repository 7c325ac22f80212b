//! `atmctl setup <agent>`: installs atm-hook into an agent's settings, and removes it again.
//!
//! Users keep hand-written settings files, so the edit is conservative by construction:
//!
//! - the merge is a pure function from the parsed settings to new settings ([`claude::install`],
//!   [`claude::uninstall`], and the same in [`codex`] and [`gemini`]), so it can be
//!   property-tested without touching files;
//! - everything else in the file survives, in its order (serde_json's `preserve_order` for
//!   JSON; `toml_edit` keeps Codex's TOML comments and layout too);
//! - a file we cannot read is reported (line and column) and never rewritten; so is a JSON file
//!   with comments (Gemini allows them), which a rewrite would lose;
//! - a real change is written atomically (temp file, fsync, rename, same mode) after a
//!   timestamped backup; no change writes nothing; `--dry-run` prints the diff instead.
//!
//! The file handling lives in [`file`], what the agents share (hook lists, the atm-hook
//! command, the diff-or-write flow) in [`hooks`], the agent-specific merge in one module per
//! agent.

use std::path::PathBuf;
use std::process::ExitCode;

pub mod claude;
pub mod codex;
pub mod codex_trust;
pub mod file;
pub mod gemini;
pub mod hooks;
pub mod pi;

/// Agents `atmctl setup` knows.
#[derive(Debug, clap::Subcommand)]
pub enum SetupCommand {
    /// Claude Code: hooks for every event atm uses, and the status line (wrapping yours) in
    /// settings.json ($CLAUDE_CONFIG_DIR, else ~/.claude); --uninstall also restores your own
    /// status line command.
    Claude(SetupArgs),
    /// Codex CLI: the `notify` program and `[features] hooks` in config.toml, and hooks
    /// for every event atm uses in hooks.json ($CODEX_HOME, else ~/.codex); --uninstall also
    /// puts back a notify program --force replaced and drops Codex's trust entries for atm's hooks.
    Codex(codex::CodexArgs),
    /// Gemini CLI: hooks for every event atm uses in settings.json ($GEMINI_CLI_HOME/.gemini,
    /// else ~/.gemini).
    Gemini(SetupArgs),
    /// pi: atm's pi extension as extensions/atm.ts in pi's agent dir ($PI_CODING_AGENT_DIR, else
    /// ~/.pi/agent); --uninstall removes that file.
    Pi(pi::PiArgs),
}

/// The options every `atmctl setup <agent>` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// Print the change as a unified diff (one per file); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove what install added.
    #[arg(long)]
    pub uninstall: bool,
    /// The atm-hook program to install [default: the atm-hook beside this atmctl, else
    /// `atm-hook` from PATH].
    #[arg(long, value_name = "PATH")]
    pub hook_command: Option<String>,
    /// The agent's configuration directory [default: as above].
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// Runs one `atmctl setup` command.
pub fn run(command: SetupCommand) -> anyhow::Result<ExitCode> {
    match command {
        SetupCommand::Claude(args) => claude::run(&args),
        SetupCommand::Codex(args) => codex::run(&args),
        SetupCommand::Gemini(args) => gemini::run(&args),
        SetupCommand::Pi(args) => pi::run(&args),
    }
}

/// Why a settings file could not be changed. Every variant leaves the file as it was.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid UTF-8 (line {line}, byte {offset}); fix or remove it and run again (nothing was changed)"
    )]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        offset: usize,
    },
    #[error(
        "{path}:{line}:{column}: not valid JSON: {message}; fix it and run again (nothing was changed)"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}:{line}:{column}: not valid TOML: {message}; fix it and run again (nothing was changed)"
    )]
    MalformedToml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}:{line}:{column}: the file has comments, which atmctl cannot keep when it rewrites JSON; \
         remove them, or add the hooks by hand (see `--dry-run` on a copy without comments); nothing was changed"
    )]
    Comments {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error(
        "{path}: `notify` already runs {existing}; Codex runs only one notify program. Keep yours \
         (and call `atm-hook --agent codex --notify \"$1\"` from it), or pass --force to replace it \
         (--uninstall puts it back); nothing was changed"
    )]
    NotifyTaken { path: PathBuf, existing: String },
    #[error("{path}: {shape}; fix it by hand and run again (nothing was changed)")]
    Shape { path: PathBuf, shape: ShapeError },
    #[error("cannot back up {path} to {backup}: {source}")]
    Backup {
        path: PathBuf,
        backup: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source} (the old file is unchanged)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} changed while atmctl was editing it (another program wrote it); run again")]
    ChangedMeanwhile { path: PathBuf },
    #[error("cannot find the settings directory: set {variable} or HOME, or pass --config-dir")]
    NoConfigDir { variable: &'static str },
}

/// A settings document whose shape the merge cannot work with (found by the pure functions,
/// which know nothing about files).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("the top level must be a JSON object")]
    NotAnObject,
    #[error("`{key}` must be {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("a command cannot contain a NUL character: {0:?}")]
    Nul(String),
}
