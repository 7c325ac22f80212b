//! `atmctl`: the command-line client for people and scripts. Thin: every subcommand lives in the
//! library (`atm_cli::client`, `status`, `focus`, `requests`, `web`, `setup`, `doctor`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "atmctl",
    version,
    about = "Query and configure atm, the monitor for AI coding agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List sessions (table, or JSON with --json).
    List(atm_cli::client::ListArgs),
    /// Print live session updates as lines.
    Watch(atm_cli::client::WatchArgs),
    /// One short line for a status bar: counts per state and total cost (--format for tmux,
    /// waybar, i3blocks, polybar; --follow to print each change).
    Status(atm_cli::status::StatusArgs),
    /// Show one session.
    Get(atm_cli::client::GetArgs),
    /// Switch the attached tmux client to an agent's pane (or the next one that waits for you).
    Focus(atm_cli::focus::FocusArgs),
    /// The agents waiting for your answer: permissions and questions, with their ids.
    Pending(atm_cli::requests::PendingArgs),
    /// Allow a waiting agent's request (--always to also add the rule it offers).
    Approve(atm_cli::requests::ApproveArgs),
    /// Refuse a waiting agent's request (--message tells the agent why).
    Deny(atm_cli::requests::DenyArgs),
    /// Answer a waiting agent's questions (a choice's number, or text).
    Answer(atm_cli::requests::AnswerArgs),
    /// Where the web board is and how to log in (its token; --open opens it).
    Web(atm_cli::web::WebArgs),
    /// Install or remove atm's hooks in an agent's settings.
    #[command(subcommand)]
    Setup(atm_cli::setup::SetupCommand),
    /// Per agent: is atm set up, do its events arrive, and what to do if not.
    Doctor(atm_cli::doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(a) => atm_cli::client::list(&a),
        Command::Watch(a) => atm_cli::client::watch(&a),
        Command::Status(a) => atm_cli::status::status(&a),
        Command::Get(a) => atm_cli::client::get(&a),
        Command::Focus(a) => atm_cli::focus::focus(&a),
        Command::Pending(a) => atm_cli::requests::pending(&a),
        Command::Approve(a) => atm_cli::requests::approve(&a),
        Command::Deny(a) => atm_cli::requests::deny(&a),
        Command::Answer(a) => atm_cli::requests::answer(&a),
        Command::Web(a) => atm_cli::web::web(&a),
        Command::Setup(c) => atm_cli::setup::run(c),
        Command::Doctor(a) => atm_cli::doctor::doctor(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("atmctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
