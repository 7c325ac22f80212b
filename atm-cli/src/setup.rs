//! `atmctl setup <agent>`: installs atm-hook into an agent's settings, safely.
//! (Being written: this placeholder exists so the binary builds.)

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum SetupCommand {
    /// Claude Code: hooks and status line in settings.json.
    Claude,
}

pub fn run(_: SetupCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
