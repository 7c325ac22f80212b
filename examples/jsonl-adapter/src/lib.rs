//! `jsonl`, the worked example of docs/writing-a-plugin.md: programs write JSON lines such as
//! `{"session":"s1","state":"working"}` to a Unix socket or a FIFO. Depends on `atm-core` alone:
//! serde (for the config), tokio and the bounded line reader all come through it.

use atm_core::event::{AgentEvent as E, EventEnvelope, EventSource, StartSource};
use atm_core::lines::{LineError, LineReader};
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError, parse_config};
use atm_core::protocol::{ErrorCode, MAX_LINE, ServerMessage, WireError};
use atm_core::tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use atm_core::tokio::net::unix::{OwnedWriteHalf as Writer, pipe};
use atm_core::tokio::{sync::Semaphore, time::timeout};
use atm_core::unix_socket::{BindError, bind_private, check_peer};
use atm_core::{Harness, SessionId, async_trait, paths::expand, serde_json, tokio};

atm_core::register_plugin! {
    adapter "jsonl",
    description: "Generic JSON lines ({\"session\",\"state\"}) on a Unix socket or FIFO",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(JsonlAdapter(JsonlConfig::parse(cfg)?))),
}

/// Connections served at once (each buffers at most one 1 MiB line); extra ones are closed.
const MAX_CONNECTIONS: usize = 64;
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const BAD_STATE: &str =
    "`state` must be starting, working, needs_permission, needs_input, idle or ended";

/// `[[adapter]] type = "jsonl"`: `socket` (default `<runtime dir>/jsonl.sock`) or `fifo`.
/// Derived through atm-core's serde re-export, so the crate needs no serde dependency.
#[derive(Debug, Clone, Default, PartialEq, Eq, atm_core::serde::Deserialize)]
#[serde(crate = "atm_core::serde", deny_unknown_fields)]
pub struct JsonlConfig {
    pub socket: Option<String>,
    pub fifo: Option<String>,
}

impl JsonlConfig {
    /// An unknown key is an error naming it (`deny_unknown_fields`).
    pub fn parse(cfg: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        parse_config(cfg)
    }
}

pub struct JsonlAdapter(pub JsonlConfig);

#[async_trait]
impl InputAdapter for JsonlAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        if let Some(fifo) = self.0.fifo.as_deref().map(expand) {
            // Opened read-write, a FIFO never reports end-of-file when its writer closes it.
            let opened = pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&fifo);
            let reader = opened.map_err(|e| PluginError::io(fifo.display().to_string(), e))?;
            ctx.mark_ready();
            serve(BufReader::new(reader), None, ctx).await;
            return Ok(());
        }
        let path = self
            .0
            .socket
            .as_deref()
            .map_or(ctx.env.runtime_dir.join("jsonl.sock"), expand);
        let listener = bind_private(&path).map_err(|e| match e {
            BindError::InUse => PluginError::Other(format!("{} is in use", path.display())),
            BindError::Io(e) => PluginError::io(format!("cannot listen on {}", path.display()), e),
        })?;
        ctx.mark_ready();
        let permits = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                () = ctx.cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let permit = permits.clone().try_acquire_owned();
            let (Ok(permit), Some(_)) = (permit, check_peer(&stream, "jsonl")) else {
                continue; // Over the limit, or another user's program: dropping closes it.
            };
            let ((read, write), conn_ctx) = (stream.into_split(), ctx.clone());
            // Spawned through the context, so the daemon's shutdown waits for it.
            ctx.spawn(async move {
                serve(BufReader::new(read), Some(write), conn_ctx).await;
                drop(permit);
            });
        }
        let _ = std::fs::remove_file(&path);
        Ok(())
    }
}

/// Applies lines until end of input or cancellation. Errors go back on `tx` (a socket), or
/// to the log (a FIFO); a client that does not read its errors gets none after 2 s.
async fn serve(rx: impl AsyncBufRead + Unpin, mut tx: Option<Writer>, ctx: AdapterContext) {
    // Bounded lines: an oversized or non-UTF-8 line is an error, and reading resumes after it.
    let mut lines = LineReader::new(rx, MAX_LINE);
    loop {
        let read = tokio::select! {
            () = ctx.cancel.cancelled() => return,
            read = lines.next_line() => read,
        };
        let (applied, too_long) = match read {
            Ok(None) | Err(LineError::Io(_)) => return, // End of input, or a read error.
            Ok(Some(line)) => (apply(&line, &ctx).await, false),
            Err(e) => (
                Err(WireError::from(&e)),
                matches!(e, LineError::TooLong { .. }),
            ),
        };
        let Err(e) = applied else { continue };
        atm_core::tracing::debug!(adapter = ctx.name, error = %e, "bad jsonl line");
        if let Some(w) = tx.as_mut() {
            let reply = ServerMessage::error(&e).to_line();
            let _ = timeout(WRITE_TIMEOUT, w.write_all(&reply)).await;
        }
        if too_long {
            return; // A client that sends such lines is not speaking this protocol.
        }
    }
}

async fn apply(line: &str, ctx: &AdapterContext) -> Result<(), WireError> {
    let Some(event) = translate(line.as_bytes(), &ctx.name)? else {
        return Ok(());
    };
    ctx.registry
        .apply_event(event)
        .await
        .map(drop)
        .map_err(|e| {
            WireError::new(
                ErrorCode::Internal,
                format!("registry refused the event: {e}"),
            )
        })
}

/// One line to one event (`None` for a blank line). Pure but for one `/proc` read for `pid`.
pub fn translate(line: &[u8], adapter: &str) -> Result<Option<EventEnvelope>, WireError> {
    let invalid = |code, message: &str| Err(WireError::new(code, message));
    if line.len() > MAX_LINE {
        return invalid(ErrorCode::TooLarge, "line exceeds the 1 MiB limit");
    } else if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return invalid(ErrorCode::ParseError, "line is not JSON (or not UTF-8)");
    };
    let text = |key| {
        v.get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let tool: Option<String> = text("tool").map(Into::into);
    let detail = text("detail").map(|d| d.chars().take(200).collect());
    let event = match text("state").unwrap_or_default() {
        "starting" => E::SessionStarted {
            source: StartSource::Startup,
            model: None,
        },
        "working" => E::ToolStarted {
            tool: tool.unwrap_or("working".into()),
            detail,
        },
        "needs_permission" => E::PermissionRequested {
            tool: tool.unwrap_or("unknown".into()),
            detail,
            suggestions: Vec::new(),
        },
        "needs_input" => E::InputRequested {
            reason: "input".into(),
            tool,
            detail,
        },
        "idle" => E::TurnFinished,
        "ended" => E::SessionEnded {
            reason: "ended".into(),
            continues: false,
        },
        _ => return invalid(ErrorCode::InvalidMessage, BAD_STATE),
    };
    let Some(session) = text("session").filter(|s| s.chars().count() <= 256) else {
        return invalid(
            ErrorCode::InvalidMessage,
            "`session` must have 1-256 characters",
        );
    };
    let harness: String = text("harness")
        .unwrap_or("jsonl")
        .chars()
        .take(64)
        .collect();
    let mut source = EventSource::new(Harness::new(harness), SessionId::new(session), adapter);
    let pid = v
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u32::try_from(p).ok());
    source.process = pid.and_then(atm_core::process::identity);
    source.cwd = text("cwd").map(Into::into);
    Ok(Some(EventEnvelope::now(source, event)))
}
