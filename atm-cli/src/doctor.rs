//! `atmctl doctor`: for each agent, is atm set up, and do its events arrive?
//!
//! A user who ran `atmctl setup codex` and sees nothing in `atmctl list` has three suspects: the
//! daemon, the agent's settings, and the agent never running the hooks. Doctor asks each one the
//! way the real code path does, so its answer cannot drift from the truth: the settings check is
//! "would `atmctl setup <agent>` change anything?" (the same pure install and uninstall functions,
//! never a second copy of which events atm needs), and the events check is the daemon's own
//! session list, per harness, with the time of the last event.

use std::process::ExitCode;

use atm_core::chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::client::{Connection, STATUS_TIMEOUT, SocketArg};
use crate::setup::hooks::HookCommand;
use crate::setup::{SetupArgs, SetupError, claude, codex, file, gemini, pi};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The atm-hook program setup would install [default: the atm-hook beside this atmctl,
    /// else `atm-hook` from PATH].
    #[arg(long, value_name = "PATH")]
    pub hook_command: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// How an agent's settings stand against what `atmctl setup` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// Setup would change nothing.
    Installed,
    /// Nothing of atm's is there.
    Missing,
    /// Some of atm's hooks are there, or another atm-hook, or a setting is off.
    Partial(String),
    /// The settings could not be read or understood.
    Unreadable(String),
}

/// The agents `atmctl setup` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agent {
    Claude,
    Codex,
    Gemini,
    Pi,
}

impl Agent {
    const ALL: [Agent; 4] = [Agent::Claude, Agent::Codex, Agent::Gemini, Agent::Pi];

    /// Its `atmctl setup` subcommand, which is also the harness name of its sessions.
    fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
            Agent::Pi => "pi",
        }
    }

    /// How its settings stand against what `atmctl setup` writes with `hook`.
    fn setup(self, args: &SetupArgs, hook: &HookCommand) -> Setup {
        match self {
            Agent::Claude => json_agent(
                claude::config_dir(args).map(|d| d.join("settings.json")),
                file::load,
                |v| claude::install(v, hook).map_err(|e| e.to_string()),
                |v| claude::uninstall(v, hook).map_err(|e| e.to_string()),
            ),
            Agent::Gemini => json_agent(
                gemini::config_dir(args).map(|d| d.join("settings.json")),
                gemini::load,
                |v| gemini::install(v, hook).map_err(|e| e.to_string()),
                |v| gemini::uninstall(v, hook).map_err(|e| e.to_string()),
            ),
            Agent::Codex => codex_setup(codex::config_dir(args), hook),
            Agent::Pi => pi_setup(),
        }
    }
}

/// One agent's findings.
#[derive(Debug, Clone)]
pub struct AgentReport {
    /// The agent's setup subcommand and harness name (`claude`, `codex`, `gemini`).
    pub agent: &'static str,
    pub setup: Setup,
    /// Sessions of this agent the daemon holds now (`None`: the daemon did not answer).
    pub sessions: Option<usize>,
    pub last_event: Option<DateTime<Utc>>,
}

impl AgentReport {
    /// What to do next, if anything.
    pub fn fix(&self) -> Option<String> {
        let setup = format!("atmctl setup {}", self.agent);
        match &self.setup {
            Setup::Missing => Some(format!("run `{setup}`")),
            Setup::Partial(why) => Some(format!(
                "{why}: run `{setup}` (add --dry-run to see the change)"
            )),
            Setup::Unreadable(why) => Some(format!("{why}; fix the file, then run `{setup}`")),
            Setup::Installed if self.sessions == Some(0) => Some(format!(
                "set up, but no {} session is known: start one (sessions started before setup \
                 need a restart){}",
                self.agent,
                if self.agent == "codex" {
                    "; Codex runs new hooks only after you trust them (`/hooks` in Codex)"
                } else {
                    ""
                }
            )),
            Setup::Installed => None,
        }
    }
}

/// Compares `current` with what install and uninstall make of it.
fn judge(
    current: &Value,
    installed: Result<Value, String>,
    removed: Result<Value, String>,
) -> Setup {
    match (installed, removed) {
        (Err(e), _) | (_, Err(e)) => Setup::Unreadable(e),
        (Ok(i), _) if i == *current => Setup::Installed,
        (_, Ok(r)) if r == *current => Setup::Missing,
        _ => Setup::Partial("some of atm's hooks are missing or point at another atm-hook".into()),
    }
}

fn json_agent(
    path: Result<std::path::PathBuf, SetupError>,
    load: fn(&std::path::Path) -> Result<file::Loaded, SetupError>,
    install: impl Fn(&Value) -> Result<Value, String>,
    uninstall: impl Fn(&Value) -> Result<Value, String>,
) -> Setup {
    let loaded = match path.and_then(|p| load(&p)) {
        Ok(l) => l,
        Err(e) => return Setup::Unreadable(e.to_string()),
    };
    judge(
        &loaded.value,
        install(&loaded.value),
        uninstall(&loaded.value),
    )
}

fn codex_setup(dir: Result<std::path::PathBuf, SetupError>, hook: &HookCommand) -> Setup {
    let read = || -> Result<(file::TextFile, file::Loaded), SetupError> {
        let dir = dir?;
        Ok((
            file::load_text(&dir.join("config.toml"))?,
            file::load(&dir.join("hooks.json"))?,
        ))
    };
    let (config_file, hooks) = match read() {
        Ok(r) => r,
        Err(e) => return Setup::Unreadable(e.to_string()),
    };
    let config = match codex::parse_config(&config_file) {
        Ok(c) => c,
        Err(e) => return Setup::Unreadable(e.to_string()),
    };
    let config_ok = match codex::install_config(&config, hook, false) {
        Ok(new) => new.to_string() == config_file.text(),
        Err(codex::ConfigChangeError::NotifyTaken { existing }) => {
            return Setup::Partial(format!(
                "config.toml runs another notify program ({existing}); `--force` replaces it"
            ));
        }
        Err(e) => return Setup::Unreadable(e.to_string()),
    };
    let hooks_setup = judge(
        &hooks.value,
        codex::install_hook_file(&hooks.value, hook).map_err(|e| e.to_string()),
        codex::uninstall_hook_file(&hooks.value, hook).map_err(|e| e.to_string()),
    );
    let config_untouched = codex::uninstall_config(&config, hook).to_string() == config_file.text();
    match (config_ok, hooks_setup) {
        (true, Setup::Installed) => Setup::Installed,
        (false, Setup::Missing) if config_untouched => Setup::Missing,
        (_, Setup::Unreadable(e)) => Setup::Unreadable(e),
        (true, _) => Setup::Partial("hooks.json lacks some of atm's hooks".into()),
        (false, _) => {
            Setup::Partial("config.toml lacks atm's notify program or `[features] hooks`".into())
        }
    }
}

/// pi: is this atmctl's extension the file in pi's extensions directory?
fn pi_setup() -> Setup {
    let args = pi::PiArgs {
        dry_run: true,
        uninstall: false,
        config_dir: None,
    };
    let file = match pi::agent_dir(&args).and_then(|d| file::load_text(&pi::extension_path(&d))) {
        Ok(f) => f,
        Err(e) => return Setup::Unreadable(e.to_string()),
    };
    match &file.original {
        None => Setup::Missing,
        Some(_) if file.text() == pi::EXTENSION => Setup::Installed,
        Some(_) if pi::is_ours(file.text()) => {
            Setup::Partial("another version of atm's pi extension is installed".into())
        }
        Some(_) => Setup::Partial(format!(
            "{} is not atm's extension; move it away",
            file.path.display()
        )),
    }
}

/// Checks every agent atm can set up, and asks the daemon what it has seen.
pub fn examine(args: &DoctorArgs) -> (Result<Vec<Value>, String>, Vec<AgentReport>) {
    let setup_args = SetupArgs {
        dry_run: true,
        uninstall: false,
        hook_command: args.hook_command.clone(),
        config_dir: None,
    };
    let hook = HookCommand::from_arg(args.hook_command.as_deref());
    let daemon = Connection::open_within(args.socket.socket.as_deref(), STATUS_TIMEOUT)
        .and_then(|mut c| c.list_sessions())
        .map_err(|e| e.to_string());
    let mut reports = Vec::new();
    for agent in Agent::ALL {
        let setup = match &hook {
            Err(e) => Setup::Unreadable(e.to_string()),
            Ok(hook) => agent.setup(&setup_args, hook),
        };
        let mine = daemon.as_ref().ok().map(|all| {
            all.iter()
                .filter(|s| s.get("harness").and_then(Value::as_str) == Some(agent.name()))
                .collect::<Vec<_>>()
        });
        let last_event = mine.as_ref().and_then(|m| {
            m.iter()
                .filter_map(|s| s.get("last_activity").and_then(Value::as_str))
                .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .max()
        });
        reports.push(AgentReport {
            agent: agent.name(),
            setup,
            sessions: mine.map(|m| m.len()),
            last_event,
        });
    }
    (daemon, reports)
}

/// opencode has nothing to set up: atmd follows the server of every opencode it finds. Its
/// sessions still named `pending-<pid>` are opencode processes with no server atm can read (a
/// TUI started without `--port`), or not read yet.
pub fn opencode_line(sessions: Option<&[Value]>) -> String {
    let fix = "start the TUI as `opencode --port 0` (or run `opencode serve`)";
    let Some(all) = sessions else {
        return format!(
            "opencode: nothing to set up; atmd follows every opencode with a server: {fix}"
        );
    };
    let mine: Vec<&Value> = all
        .iter()
        .filter(|s| s.get("harness").and_then(Value::as_str) == Some("opencode"))
        .collect();
    let unread = mine
        .iter()
        .filter(|s| {
            s.get("id")
                .and_then(Value::as_str)
                .is_some_and(|i| i.starts_with("pending-"))
        })
        .count();
    let followed = mine.len() - unread;
    let mut line = format!(
        "opencode: nothing to set up; {followed} session{} followed",
        if followed == 1 { "" } else { "s" }
    );
    if unread > 0 {
        line.push_str(&format!(
            "\n  fix: {unread} opencode process{} without a server atm can read: {fix}",
            if unread == 1 { "" } else { "es" }
        ));
    }
    line
}

fn setup_word(s: &Setup) -> &'static str {
    match s {
        Setup::Installed => "set up",
        Setup::Missing => "not set up",
        Setup::Partial(_) => "partly set up",
        Setup::Unreadable(_) => "settings unreadable",
    }
}

/// Runs `atmctl doctor`. Exits 1 when the daemon does not answer or an agent is partly set up
/// or unreadable (an agent not set up at all may simply not be used here).
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let (daemon, reports) = examine(args);
    let now = Utc::now();
    let trouble = daemon.is_err()
        || reports
            .iter()
            .any(|r| matches!(r.setup, Setup::Partial(_) | Setup::Unreadable(_)));
    if args.json {
        let agents: Vec<Value> = reports
            .iter()
            .map(|r| {
                json!({
                    "agent": r.agent,
                    "setup": setup_word(&r.setup),
                    "sessions": r.sessions,
                    "last_event": r.last_event.map(|t| t.to_rfc3339()),
                    "fix": r.fix(),
                })
            })
            .collect();
        let out = json!({
            "daemon": match &daemon { Ok(_) => json!({"answering": true}), Err(e) => json!({"answering": false, "error": e}) },
            "agents": agents,
        });
        println!("{out}");
    } else {
        match &daemon {
            Ok(_) => println!("atmd: answering"),
            Err(e) => println!("atmd: not answering: {e}"),
        }
        for r in &reports {
            let seen = match (r.sessions, r.last_event) {
                (None, _) => String::new(),
                (Some(0), _) => ", no session known".to_owned(),
                (Some(n), Some(t)) => format!(
                    ", {n} session{} (last event {}s ago)",
                    if n == 1 { "" } else { "s" },
                    (now - t).num_seconds().max(0)
                ),
                (Some(n), None) => format!(", {n} session{}", if n == 1 { "" } else { "s" }),
            };
            println!("{}: {}{seen}", r.agent, setup_word(&r.setup));
            if let Some(fix) = r.fix() {
                println!("  fix: {fix}");
            }
        }
        println!("{}", opencode_line(daemon.as_ref().ok().map(Vec::as_slice)));
    }
    Ok(if trouble {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opencode_needs_no_setup_and_a_process_without_a_server_gets_the_fix() {
        assert!(opencode_line(None).contains("--port 0"));
        let all = vec![
            json!({"harness": "opencode", "id": "ses_1"}),
            json!({"harness": "opencode", "id": "pending-42"}),
            json!({"harness": "claude", "id": "pending-7"}),
        ];
        let line = opencode_line(Some(&all));
        assert!(
            line.starts_with("opencode: nothing to set up; 1 session followed"),
            "{line}"
        );
        assert!(
            line.contains("1 opencode process without a server"),
            "{line}"
        );
        assert!(line.contains("opencode --port 0"), "{line}");
        let line = opencode_line(Some(&all[..1]));
        assert!(!line.contains("fix"), "{line}");
    }
}
