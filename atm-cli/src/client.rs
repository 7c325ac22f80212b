//! `atmctl list|watch|get`, and the one query connection every `atmctl` command uses
//! ([`Connection::open`]): protocol-v1 queries against the daemon's query socket.
//!
//! Synchronous on purpose: one request and one reply (or a stream of lines for `watch`) need no
//! async runtime, and `atmctl status` runs every second from a tmux status bar, so starting fast
//! matters more than anything else here.
//!
//! Exit codes: 0 success, 2 when the daemon is not running (with how to start it), 1 for every
//! other failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use atm_core::protocol::client_line;
use atm_core::{AgentState, SessionView};

pub use crate::format::{format_details, format_table, format_watch_line};
use serde_json::{Map, Value, json};

/// How long a request may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// `atmctl status` runs from status bars every second: a stopped or stuck daemon must not hang
/// the bar, so it gives up much sooner.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest reply line accepted: a list of 10,000 sessions is about 15 MiB.
const MAX_REPLY: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// The daemon's query socket. Default: $ATM_SOCKET, else <runtime dir>/atm.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print a JSON array of session views instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only sessions in this state: starting, working, needs_permission, needs_input, idle, or
    /// `attention` for both needs_* states.
    #[arg(long, value_name = "S", value_parser = parse_state_filter)]
    pub state: Option<StateFilter>,
    /// Only sessions running on this host (its id, as the HOST column shows it).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Print every message from the daemon as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// A session id, or a prefix of one that matches a single session.
    pub id: String,
    /// Print the session's JSON view.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// Which sessions `list --state` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    One(AgentState),
    /// needs_permission or needs_input.
    Attention,
}

impl StateFilter {
    fn matches(self, state: AgentState) -> bool {
        match self {
            Self::One(s) => s == state,
            Self::Attention => state.needs_attention(),
        }
    }
}

fn parse_state_filter(s: &str) -> Result<StateFilter, String> {
    if s == "attention" {
        return Ok(StateFilter::Attention);
    }
    AgentState::parse(s).map(StateFilter::One).ok_or_else(|| {
        let names: Vec<_> = AgentState::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "unknown state `{s}`; use one of {}, attention",
            names.join(", ")
        )
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("atmd is not running (no socket at {}); start it with `atmd` or `systemctl --user start atmd`", path.display())]
    NoSocket { path: PathBuf },
    #[error("atmd is not running (nothing answers on {}); start it with `atmd` or `systemctl --user start atmd`", path.display())]
    NotAnswering { path: PathBuf },
    #[error("the web board is not running (no {}): start atmd with the http sink (`[[sink]] type = \"http\"` in plugins.toml, on by default)", path.display())]
    NoBoard { path: PathBuf },
    #[error("{0}")]
    Connect(atm_core::trust::ConnectError),
    #[error(
        "the daemon refused this client: {0}; upgrade atmctl or atmd so they speak the same protocol"
    )]
    Rejected(String),
    #[error("the daemon answered with an error ({code}): {message}")]
    Daemon { code: String, message: String },
    #[error("the daemon closed the connection")]
    Closed,
    #[error("atmd not answering: no reply within {}ms; is atmd stopped or stuck? (`systemctl --user restart atmd`)", .0.as_millis())]
    Timeout(Duration),
    #[error("talking to the daemon failed: {0}")]
    Io(std::io::Error),
    #[error("the daemon sent something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    pub(crate) fn not_running(&self) -> bool {
        matches!(
            self,
            Self::NoSocket { .. } | Self::NotAnswering { .. } | Self::NoBoard { .. }
        )
    }
}

fn io_error(e: std::io::Error, timeout: Duration) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::Timeout(timeout)
        }
        _ => ClientError::Io(e),
    }
}

/// One connected (handshake done) query connection.
pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Duration,
}

impl Connection {
    /// Connects to `socket` (or the default) and performs the handshake.
    pub fn open(socket: Option<&Path>) -> Result<Self, ClientError> {
        Self::open_within(socket, REPLY_TIMEOUT)
    }

    /// [`Connection::open`] where every reply must come within `timeout`.
    pub fn open_within(socket: Option<&Path>, timeout: Duration) -> Result<Self, ClientError> {
        let path = socket
            .map(Path::to_path_buf)
            .unwrap_or_else(atm_core::paths::query_socket);
        let stream = atm_core::trust::connect(&path, timeout).map_err(|e| match e.io_kind() {
            Some(std::io::ErrorKind::NotFound) => ClientError::NoSocket { path: path.clone() },
            Some(std::io::ErrorKind::ConnectionRefused) => {
                ClientError::NotAnswering { path: path.clone() }
            }
            Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                ClientError::Timeout(timeout)
            }
            _ => ClientError::Connect(e),
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        let writer = stream.try_clone().map_err(ClientError::Io)?;
        let mut conn = Self {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            timeout,
        };
        // A socket whose listener is gone can still take a connection for a moment (a child
        // forked before it closed holds it until its exec), then resets it: a daemon that
        // hangs up before its hello is not answering, like one that refuses.
        let not_answering = |e: ClientError| match e {
            ClientError::Closed => ClientError::NotAnswering { path: path.clone() },
            ClientError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                ClientError::NotAnswering { path: path.clone() }
            }
            other => other,
        };
        conn.send("connect", json!({"client_id": "atmctl"}))
            .map_err(not_answering)?;
        let reply = conn.recv().map_err(not_answering)?;
        match reply.get("type").and_then(Value::as_str) {
            Some("connected") => Ok(conn),
            Some("rejected") => Err(ClientError::Rejected(
                reply
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
                    .to_owned(),
            )),
            _ => Err(unexpected(&reply)),
        }
    }

    pub fn send(&mut self, kind: &str, fields: Value) -> Result<(), ClientError> {
        let fields = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let timeout = self.timeout;
        self.writer
            .write_all(&client_line(kind, fields))
            .map_err(|e| io_error(e, timeout))
    }

    /// The next message. `error` messages become [`ClientError::Daemon`].
    pub fn recv(&mut self) -> Result<Value, ClientError> {
        let mut line = Vec::new();
        let timeout = self.timeout;
        let n = (&mut self.reader)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(e, timeout))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(ClientError::Closed);
        }
        let value: Value = serde_json::from_slice(&line)
            .map_err(|e| ClientError::Protocol(format!("a line that is not JSON ({e})")))?;
        if value.get("type").and_then(Value::as_str) == Some("error") {
            return Err(ClientError::Daemon {
                code: value
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned(),
                message: value
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        Ok(value)
    }

    /// Every session, as the daemon's JSON objects (unknown fields kept).
    pub fn list_sessions(&mut self) -> Result<Vec<Value>, ClientError> {
        self.send("list_sessions", json!({}))?;
        loop {
            let msg = self.recv()?;
            if msg.get("type").and_then(Value::as_str) == Some("session_list") {
                return sessions_of(msg);
            }
        }
    }

    /// Stops the reply timeout (for `watch`, where silence is normal).
    pub(crate) fn wait_forever(&mut self) -> Result<(), ClientError> {
        self.reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(ClientError::Io)
    }
}

fn unexpected(msg: &Value) -> ClientError {
    let mut text = msg.to_string();
    if text.chars().count() > 200 {
        text = atm_core::text::truncate_chars(&text, 200);
    }
    ClientError::Protocol(text)
}

pub(crate) fn sessions_of(msg: Value) -> Result<Vec<Value>, ClientError> {
    match msg {
        Value::Object(mut m) => match m.remove("sessions") {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(ClientError::Protocol(
                "a session_list without `sessions`".into(),
            )),
        },
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn view_of(v: &Value) -> Result<SessionView<'static>, ClientError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ClientError::Protocol(format!("a session the client cannot read ({e})")))
}

/// Runs a command body and maps its outcome to an exit code.
pub(crate) fn run(
    body: impl FnOnce(&mut dyn Write) -> Result<(), ClientError>,
) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = body(&mut out).and_then(|()| out.flush().map_err(ClientError::Io));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `atmctl list | head`: the reader left; that is not a failure.
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.not_running() => {
            eprintln!("atmctl: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn out_err(e: std::io::Error) -> ClientError {
    ClientError::Io(e)
}

pub fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    run(|out| {
        let mut conn = Connection::open(args.socket.socket.as_deref())?;
        let mut sessions = conn.list_sessions()?;
        if args.state.is_some() || args.host.is_some() {
            let mut kept = Vec::new();
            for s in sessions {
                let v = view_of(&s)?;
                let state_ok = args.state.is_none_or(|f| f.matches(v.state));
                let host_ok = args.host.as_deref().is_none_or(|h| v.host == h);
                if state_ok && host_ok {
                    kept.push(s);
                }
            }
            sessions = kept;
        }
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &sessions)
                .map_err(|e| ClientError::Io(e.into()))?;
            writeln!(out).map_err(out_err)?;
            return Ok(());
        }
        let views = sessions
            .iter()
            .map(view_of)
            .collect::<Result<Vec<_>, _>>()?;
        out.write_all(format_table(&views).as_bytes())
            .map_err(out_err)
    })
}

pub fn watch(args: &WatchArgs) -> anyhow::Result<ExitCode> {
    run(|out| {
        let mut conn = Connection::open(args.socket.socket.as_deref())?;
        conn.send("subscribe", json!({}))?;
        conn.wait_forever()?;
        loop {
            let msg = conn.recv()?;
            if args.json {
                writeln!(out, "{msg}").map_err(out_err)?;
            } else {
                let time = chrono::Local::now().format("%H:%M:%S").to_string();
                for line in format_watch(&msg)? {
                    writeln!(out, "{time}  {line}").map_err(out_err)?;
                }
            }
            out.flush().map_err(out_err)?;
        }
    })
}

/// `watch`'s lines for one message (a list gives one line per session).
pub fn format_watch(msg: &Value) -> Result<Vec<String>, ClientError> {
    match msg.get("type").and_then(Value::as_str) {
        Some("session_updated") => {
            let v = view_of(msg.get("session").unwrap_or(&Value::Null))?;
            Ok(vec![format_watch_line(&v)])
        }
        Some("session_removed") => {
            let id = msg.get("session_id").and_then(Value::as_str).unwrap_or("?");
            Ok(vec![format!(
                "{}  removed",
                atm_core::text::prefix_chars(id, 8)
            )])
        }
        Some("session_list") => {
            let sessions = sessions_of(msg.clone())?;
            let mut lines = vec![format!("{} sessions", sessions.len())];
            for s in &sessions {
                lines.push(format_watch_line(&view_of(s)?));
            }
            Ok(lines)
        }
        _ => Ok(Vec::new()),
    }
}

pub fn get(args: &GetArgs) -> anyhow::Result<ExitCode> {
    run(|out| {
        let mut conn = Connection::open(args.socket.socket.as_deref())?;
        let sessions = conn.list_sessions()?;
        let found = find_session(&sessions, &args.id)?;
        if args.json {
            serde_json::to_writer_pretty(&mut *out, found)
                .map_err(|e| ClientError::Io(e.into()))?;
            writeln!(out).map_err(out_err)
        } else {
            out.write_all(format_details(&view_of(found)?).as_bytes())
                .map_err(out_err)
        }
    })
}

/// The session whose id is `id`, else the one session whose id starts with it.
pub(crate) fn find_session<'a>(sessions: &'a [Value], id: &str) -> Result<&'a Value, ClientError> {
    find_by_id(
        sessions,
        id,
        &Lookup {
            noun: "session",
            nouns: "sessions",
            none_hint: "; `atmctl list` shows the ids",
        },
    )
}

/// What [`find_by_id`] looks for, as its errors name it.
pub(crate) struct Lookup<'s> {
    pub noun: &'s str,
    pub nouns: &'s str,
    /// Said after "no NOUN matches `ID`": where to find the ids.
    pub none_hint: &'s str,
}

/// The item (a JSON object with an `id`) whose id is `id`, else the one whose id starts with it.
pub(crate) fn find_by_id<'a>(
    items: &'a [Value],
    id: &str,
    what: &Lookup<'_>,
) -> Result<&'a Value, ClientError> {
    let id_of = |s: &Value| s.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(exact) = items.iter().find(|s| id_of(s) == id) {
        return Ok(exact);
    }
    let matches: Vec<&Value> = items
        .iter()
        .filter(|s| !id.is_empty() && id_of(s).starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ClientError::Usage(format!(
            "no {} matches `{id}`{}",
            what.noun, what.none_hint
        ))),
        many => {
            let ids: Vec<String> = many.iter().map(|s| id_of(s)).collect();
            Err(ClientError::Usage(format!(
                "`{id}` matches {} {} ({}); give more characters",
                many.len(),
                what.nouns,
                ids.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_exactly_or_by_unique_prefix() {
        let sessions = vec![
            json!({"id": "abc-1"}),
            json!({"id": "abc-2"}),
            json!({"id": "abd"}),
            json!({"id": "ab"}),
        ];
        assert_eq!(find_session(&sessions, "abd").unwrap()["id"], "abd");
        assert_eq!(find_session(&sessions, "abc-2").unwrap()["id"], "abc-2");
        assert_eq!(find_session(&sessions, "ab").unwrap()["id"], "ab");
        let err = find_session(&sessions, "abc").unwrap_err().to_string();
        assert!(err.contains("matches 2 sessions"), "{err}");
        let err = find_session(&sessions, "zzz").unwrap_err().to_string();
        assert!(err.contains("no session matches"), "{err}");
    }

    #[test]
    fn state_filters_parse_and_explain() {
        assert_eq!(
            parse_state_filter("idle"),
            Ok(StateFilter::One(AgentState::Idle))
        );
        assert!(StateFilter::Attention.matches(AgentState::NeedsInput));
        let err = parse_state_filter("busy").unwrap_err();
        assert!(err.contains("needs_permission"), "{err}");
    }
}
