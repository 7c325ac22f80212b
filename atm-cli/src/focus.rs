//! `atmctl focus ID` and `atmctl focus --next-waiting`: take the user to an agent's tmux pane.
//!
//! The daemon says where the agent is (its session's `tmux_pane`); moving the client is
//! [`atm_core::tmux::Tmux::focus_pane`], the same code the notify sink's Focus action uses, so
//! both pick the most recently active client and select session, window and pane alike. A
//! current-thread runtime runs it: focus is a one-off command, so a few hundred microseconds of
//! runtime start-up cost nothing, and one implementation beats a second, blocking one.
//!
//! Silent on success (it is bound to a key; tmux shows a command's output in a view), a clear
//! error otherwise: the session has no pane, tmux is not running, nothing waits.

use std::path::PathBuf;
use std::process::ExitCode;

use atm_core::SessionView;
use atm_core::tmux::{Tmux, TmuxError, TmuxSocket};
use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use crate::client::{ClientError, Connection, SocketArg, find_session, run, view_of};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["id", "next_waiting"])))]
pub struct FocusArgs {
    /// A session id, or a prefix of one that matches a single session.
    pub id: Option<String>,
    /// The agent that has waited for you longest (needs permission or input); run again while
    /// looking at it, the next one.
    #[arg(long)]
    pub next_waiting: bool,
    /// The tmux server's socket path (tmux -S). Default: tmux's own choice ($TMUX, else the
    /// default server).
    #[arg(long, value_name = "PATH", conflicts_with = "tmux_socket_name")]
    pub tmux_socket: Option<PathBuf>,
    /// The tmux server's socket name (tmux -L).
    #[arg(long, short = 'L', value_name = "NAME")]
    pub tmux_socket_name: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

impl FocusArgs {
    fn tmux(&self) -> Tmux {
        Tmux::new(match (&self.tmux_socket, &self.tmux_socket_name) {
            (Some(path), _) => TmuxSocket::Path(path.clone()),
            (None, Some(name)) => TmuxSocket::Name(name.clone()),
            (None, None) => TmuxSocket::Default,
        })
    }
}

pub fn focus(args: &FocusArgs) -> anyhow::Result<ExitCode> {
    run(|_out| {
        let mut conn = Connection::open(args.socket.socket.as_deref())?;
        let sessions = conn.list_sessions()?;
        let runtime = atm_core::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Io)?;
        runtime.block_on(focus_on(args, &sessions))
    })
}

async fn focus_on(args: &FocusArgs, sessions: &[Value]) -> Result<(), ClientError> {
    let tmux = args.tmux();
    let pane = match &args.id {
        Some(id) => {
            let view = view_of(find_session(sessions, id)?)?;
            view.tmux_pane.map(|p| p.into_owned()).ok_or_else(|| {
                ClientError::Usage(format!(
                    "session {} has no tmux pane (it was not started inside tmux)",
                    view.id
                ))
            })?
        }
        None => {
            let views = sessions
                .iter()
                .map(view_of)
                .collect::<Result<Vec<_>, _>>()?;
            let waiting = waiting_panes(&views)?;
            let looking_at = tmux
                .clients()
                .await
                .ok()
                .and_then(|c| atm_core::tmux::most_recent(&c).map(|c| c.pane.clone()));
            next_after(&waiting, looking_at.as_deref()).to_owned()
        }
    };
    let focused = tmux.focus_pane(&pane).await.map_err(tmux_error)?;
    if focused.client.is_none() {
        return Err(ClientError::Usage(format!(
            "no tmux client is attached; selected {} so that `tmux attach` shows it",
            focused.location
        )));
    }
    Ok(())
}

fn tmux_error(e: TmuxError) -> ClientError {
    ClientError::Usage(e.to_string())
}

/// The panes of the sessions that wait for the user, longest-waiting first.
fn waiting_panes(views: &[SessionView]) -> Result<Vec<String>, ClientError> {
    let mut waiting: Vec<(Option<DateTime<FixedOffset>>, &SessionView)> = views
        .iter()
        .filter(|v| v.state.needs_attention())
        .map(|v| (DateTime::parse_from_rfc3339(&v.state_since).ok(), v))
        .collect();
    if waiting.is_empty() {
        return Err(ClientError::Usage("no agent waits for you".to_owned()));
    }
    waiting.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let panes: Vec<String> = waiting
        .iter()
        .filter_map(|(_, v)| v.tmux_pane.as_deref().map(str::to_owned))
        .collect();
    if panes.is_empty() {
        let states: Vec<&str> = waiting.iter().map(|(_, v)| v.state.as_str()).collect();
        return Err(ClientError::Usage(format!(
            "{} agent(s) wait for you ({}), but none runs in tmux; `atmctl list --state attention` shows them",
            waiting.len(),
            states.join(", ")
        )));
    }
    Ok(panes)
}

/// The pane after `current` in `panes` (cyclically), else the first: pressing the key again
/// while looking at a waiting agent moves on to the next one.
fn next_after<'a>(panes: &'a [String], current: Option<&str>) -> &'a str {
    let at = current.and_then(|c| panes.iter().position(|p| p == c));
    let i = at.map_or(0, |i| (i + 1) % panes.len());
    panes.get(i).map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atm_core::AgentState;
    use chrono::{Duration, Utc};

    fn view(id: &str, state: AgentState, pane: Option<&str>, ago: i64) -> SessionView<'static> {
        let now = Utc::now();
        let mut s = atm_core::testing::claude_session(id, now);
        s.state = state;
        s.state_since = now - Duration::seconds(ago);
        s.tmux_pane = pane.map(str::to_owned);
        SessionView::from_session(&s, now).into_owned()
    }

    #[test]
    fn the_longest_waiting_comes_first_and_the_next_press_moves_on() {
        let views = [
            view("new", AgentState::NeedsPermission, Some("%3"), 5),
            view("old", AgentState::NeedsInput, Some("%1"), 50),
            view("busy", AgentState::Working, Some("%9"), 100),
            view("nopane", AgentState::NeedsPermission, None, 80),
        ];
        let panes = waiting_panes(&views).unwrap();
        assert_eq!(panes, ["%1", "%3"]);
        assert_eq!(next_after(&panes, None), "%1");
        assert_eq!(next_after(&panes, Some("%9")), "%1");
        assert_eq!(next_after(&panes, Some("%1")), "%3");
        assert_eq!(next_after(&panes, Some("%3")), "%1");
    }

    #[test]
    fn nothing_waiting_and_nothing_in_tmux_are_explained() {
        let none = [view("a", AgentState::Idle, Some("%1"), 1)];
        let e = waiting_panes(&none).unwrap_err().to_string();
        assert_eq!(e, "no agent waits for you");
        let outside = [view("a", AgentState::NeedsInput, None, 1)];
        let e = waiting_panes(&outside).unwrap_err().to_string();
        assert!(
            e.contains("none runs in tmux") && e.contains("needs_input"),
            "{e}"
        );
    }
}
