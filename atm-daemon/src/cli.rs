//! The `atmd` command line, as a library function: [`main`] parses the arguments, loads the
//! config, sets up logging and hands over to [`daemon::run`].
//!
//! It lives here rather than in `main.rs` so that a custom build (a binary crate that links
//! extra plugins with `use my_plugin as _;`) gets every subcommand and behaviour of `atmd` by
//! calling `atm_daemon::cli::main()`: the plugin list, `check-config` and `plugins` see
//! whatever plugins the final binary links.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{config, daemon};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "atmd",
    version,
    about = "atm daemon: watches AI coding agents and tells people and programs what each is doing"
)]
struct Cli {
    /// Config file (default: $ATM_CONFIG, then $XDG_CONFIG_HOME/atm/plugins.toml, then the
    /// built-in default).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run in the foreground (the default).
    Run,
    /// Same as `run`. The published `atm` clients start a missing daemon with `atmd start -d`
    /// (already in the background, so `-d` changes nothing).
    #[command(hide = true)]
    Start {
        #[arg(short = 'd', long = "daemon")]
        _detach: bool,
    },
    /// Validate the config and exit (0 if valid).
    CheckConfig,
    /// List every compiled-in plugin with its description and sample config.
    Plugins,
}

/// How long an idle blocking thread of the runtime waits for work before it ends.
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(600);

fn init_logging(config_level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(config_level.unwrap_or("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // One event, one line: ids and reasons from agents cannot forge log lines.
        .with_writer(|| atm_core::text::OneLinePerEvent(std::io::stderr()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn print_plugins() {
    for p in atm_core::plugin::registered() {
        let optional = if p.optional { " (optional)" } else { "" };
        println!(
            "{} {}{optional}\n  {}\n",
            p.kind().table(),
            p.name,
            p.description
        );
        for line in p.sample_config.trim_end().lines() {
            println!("    {line}");
        }
        println!();
    }
}

/// Runs `atmd` with the process's arguments: the whole of `atmd`'s `main`, and of any custom
/// build's. Exit status: 0 on success, 2 for an invalid config or plugin set, 1 otherwise.
pub fn main() -> ExitCode {
    crate::link_plugins();
    let cli = Cli::parse();
    if let Err(e) = atm_core::plugin::check_unique() {
        eprintln!("atmd: {e}");
        return ExitCode::from(2);
    }
    let source = config::resolve(cli.config.as_deref());
    match cli.command.unwrap_or(Command::Run) {
        Command::Plugins => {
            print_plugins();
            ExitCode::SUCCESS
        }
        Command::CheckConfig => match daemon::check(&source) {
            Ok(c) => {
                let adapters = c
                    .plugins
                    .iter()
                    .filter(|p| p.kind == atm_core::plugin::PluginKind::Adapter)
                    .count();
                println!(
                    "{}: OK ({adapters} adapters, {} sinks)",
                    c.source,
                    c.plugins.len() - adapters
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("atmd: invalid config: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run | Command::Start { .. } => {
            let config = match config::load(&source) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("atmd: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(config.daemon.log.as_deref());
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.daemon.worker_threads.unwrap_or(1))
                // The periodic scans run on a blocking thread every few seconds: kept alive
                // between them, instead of tokio's 10 s, so an idle daemon does not create and
                // end a thread per scan (wake-ups, and a fresh stack and allocator arena each).
                .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("atmd: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("atmd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
