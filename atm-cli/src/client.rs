//! `atmctl list|watch|status|get`: protocol-v1 queries against the daemon's query socket.
//! (Being written: these placeholders exist so the binary builds.)

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ListArgs {}
#[derive(Debug, clap::Args)]
pub struct WatchArgs {}
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}
#[derive(Debug, clap::Args)]
pub struct GetArgs {}

pub fn list(_: &ListArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn watch(_: &WatchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn status(_: &StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn get(_: &GetArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
