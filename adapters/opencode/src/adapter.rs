//! The `opencode` input adapter: follows a running opencode server's event stream.
//!
//! opencode has no hook programs to call us; its server publishes every bus event on
//! `GET <url>/event` as Server-Sent Events. The adapter keeps one plain HTTP/1.1 connection to
//! it (hyper's client connection: no pool, no TLS, because the use case is a local server),
//! feeds the body through the bounded [`SseParser`], translates each event and applies it.
//!
//! The server may be absent when the daemon starts, restart, or go away: each failure is
//! retried with exponential backoff, logged once per outage, and never ends the adapter. Each
//! time the stream opens, `GET <root>/session/status` (which sessions are busy) corrects what
//! was missed while it was closed; a server without that endpoint is simply followed. The
//! server's process is not known, so sessions are keyed by id (no process) and expire after
//! the registry's silence limit; `session.deleted` removes one at once. Without a `url` the
//! adapter does nothing until it is cancelled, so the sample config runs everywhere.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atm_core::event::{AgentEvent, EventEnvelope, EventSource};
use atm_core::model::Harness;
use atm_core::plugin::{AdapterContext, ConfigError, InputAdapter, PluginError};
use atm_core::tracing::{debug, info, warn};
use atm_core::{AgentState, ApplyOutcome, async_trait};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

use crate::sse::{MAX_EVENT_BYTES, SseItem, SseParser};
use crate::translate::{Translation, parse, translate};

/// The first retry delay; it doubles up to `max_backoff` while the server stays away.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// `[[adapter]] type = "opencode"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpencodeConfig {
    /// The opencode server, e.g. `http://127.0.0.1:4096` (`opencode serve --port 4096`). The
    /// event stream is `<url>/event`; a URL that already ends in `/event` is used as it is.
    /// Absent: the adapter stays idle.
    pub url: Option<String>,
    /// Longest wait between reconnection attempts (250 ms to 24 h).
    #[serde(
        with = "atm_core::plugin::duration::Within::<250, 86_400_000>",
        default = "default_max_backoff"
    )]
    pub max_backoff: Duration,
    /// How long connecting and receiving the response headers may take (100 ms to 10 min).
    #[serde(
        with = "atm_core::plugin::duration::Within::<100, 600_000>",
        default = "default_connect_timeout"
    )]
    pub connect_timeout: Duration,
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for OpencodeConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_backoff: default_max_backoff(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// Where the event stream is, checked when the config is read.
#[derive(Debug, Clone)]
struct EventStreamUrl {
    /// As configured, for logs.
    display: String,
    host: String,
    port: u16,
    /// The request target (`/event`).
    target: Uri,
    /// Where the current busy/idle status of every session is (`/session/status`).
    status_target: Uri,
    host_header: HeaderValue,
}

impl EventStreamUrl {
    fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::for_key("url", format!("invalid `url` {url:?}: {why}"));
        let uri = Uri::from_str(url.trim()).map_err(|e| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; opencode serves plain http (e.g. http://127.0.0.1:4096)",
                ));
            }
            _ => {
                return Err(bad(
                    "write it as http://HOST:PORT, e.g. http://127.0.0.1:4096",
                ));
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("no host; write it as http://HOST:PORT"));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = match authority.port_u16() {
            Some(p) if p > 0 => p,
            None if authority.as_str() == authority.host() => 80,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        };
        let given = uri.path().trim_end_matches('/');
        // The server's root: what precedes `/event` or `/global/event` when the URL names the
        // stream itself.
        let (path, root) = match given.strip_suffix("/event") {
            Some(prefix) => (
                given.to_owned(),
                prefix.strip_suffix("/global").unwrap_or(prefix),
            ),
            None => (format!("{given}/event"), given),
        };
        let target = Uri::from_str(&path).map_err(|e| bad(&e.to_string()))?;
        let status_target =
            Uri::from_str(&format!("{root}/session/status")).map_err(|e| bad(&e.to_string()))?;
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            display: format!("http://{}{path}", authority.as_str()),
            host,
            port,
            target,
            status_target,
            host_header,
        })
    }
}

/// Counters, readable while the adapter runs (tests, debug logs).
#[derive(Debug, Default)]
pub struct OpencodeStats {
    /// Successful connections to the event stream.
    pub connections: AtomicU64,
    /// Connections that failed or ended, each followed by a wait and another attempt (counted
    /// once the failure is logged).
    pub failed_attempts: AtomicU64,
    /// Events received and handled (whole SSE events, including skipped ones).
    pub events: AtomicU64,
    /// Events applied to the registry.
    pub applied: AtomicU64,
    /// Valid events that mean nothing for a session's state.
    pub ignored: AtomicU64,
    /// Events skipped as not UTF-8, not JSON, or without a type or session.
    pub malformed: AtomicU64,
    /// Events skipped for exceeding the size limit.
    pub oversized: AtomicU64,
    /// Events the registry refused (full, shutting down).
    pub registry_errors: AtomicU64,
}

impl OpencodeStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The adapter instance the daemon builds from a config table.
#[derive(Debug)]
pub struct OpencodeAdapter {
    config: OpencodeConfig,
    url: Option<EventStreamUrl>,
    max_event_bytes: usize,
    stats: Arc<OpencodeStats>,
}

impl OpencodeAdapter {
    pub fn new(config: OpencodeConfig) -> Result<Self, ConfigError> {
        let url = config
            .url
            .as_deref()
            .map(EventStreamUrl::parse)
            .transpose()?;
        if config.max_backoff < INITIAL_BACKOFF {
            return Err(ConfigError::for_key(
                "max_backoff",
                format!("`max_backoff` must be at least {INITIAL_BACKOFF:?}"),
            ));
        }
        Ok(Self {
            config,
            url,
            max_event_bytes: MAX_EVENT_BYTES,
            stats: Arc::default(),
        })
    }

    /// The factory `register_plugin!` uses.
    pub fn from_config(cfg: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        Self::new(atm_core::plugin::parse_config(cfg)?)
    }

    /// Caps one SSE event (and line) at `bytes` instead of 1 MiB (tests use a small cap).
    pub fn with_max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// This instance's counters (shared with the running adapter).
    pub fn stats(&self) -> Arc<OpencodeStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl InputAdapter for OpencodeAdapter {
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError> {
        let Some(url) = self.url.clone() else {
            info!(adapter = %ctx.name, "no `url` configured: opencode adapter idle");
            ctx.cancel.cancelled().await;
            return Ok(());
        };
        let cancel = ctx.cancel.clone();
        tokio::select! {
            () = cancel.cancelled() => {}
            () = self.follow(&url, &ctx) => {}
        }
        let s = &self.stats;
        debug!(
            adapter = %ctx.name,
            connections = OpencodeStats::get(&s.connections),
            failed_attempts = OpencodeStats::get(&s.failed_attempts),
            events = OpencodeStats::get(&s.events),
            applied = OpencodeStats::get(&s.applied),
            malformed = OpencodeStats::get(&s.malformed),
            oversized = OpencodeStats::get(&s.oversized),
            "opencode adapter stopped"
        );
        Ok(())
    }
}

/// Why one connection to the event stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("the server answered {0}, not 200 (is this an opencode server?)")]
    Status(u16),
    #[error("the server answered {got:?}, not {expected} (is this an opencode server?)")]
    ContentType { expected: &'static str, got: String },
    #[error("unreadable response: {0}")]
    Body(String),
    #[error("the server closed the event stream")]
    Closed,
}

/// Per-outage bookkeeping: the retry delay and whether the outage was already logged.
struct Link {
    backoff: Duration,
    outage_logged: bool,
}

impl OpencodeAdapter {
    /// Connects, reads, reconnects: forever (the caller cancels it).
    async fn follow(&self, url: &EventStreamUrl, ctx: &AdapterContext) {
        let mut link = Link {
            backoff: INITIAL_BACKOFF,
            outage_logged: false,
        };
        loop {
            let err = match self.stream_once(url, ctx, &mut link).await {
                Ok(never) => match never {},
                Err(e) => e,
            };
            if link.outage_logged {
                debug!(adapter = %ctx.name, url = %url.display, error = %err, "opencode still unavailable");
            } else {
                warn!(
                    adapter = %ctx.name,
                    url = %url.display,
                    error = %err,
                    "opencode event stream unavailable; retrying with backoff (logged once per outage)"
                );
                link.outage_logged = true;
            }
            OpencodeStats::bump(&self.stats.failed_attempts);
            tokio::time::sleep(link.backoff).await;
            link.backoff = (link.backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One connection: returns only with the reason it ended.
    async fn stream_once(
        &self,
        url: &EventStreamUrl,
        ctx: &AdapterContext,
        link: &mut Link,
    ) -> Result<std::convert::Infallible, StreamError> {
        let (resp, _conn) = self.get(url, &url.target, "text/event-stream").await?;
        OpencodeStats::bump(&self.stats.connections);
        if link.outage_logged {
            info!(adapter = %ctx.name, url = %url.display, "opencode event stream back");
        } else {
            info!(adapter = %ctx.name, url = %url.display, "following the opencode event stream");
        }
        *link = Link {
            backoff: INITIAL_BACKOFF,
            outage_logged: false,
        };
        // Events sent while no stream was open are lost; the server's own view of which
        // sessions are busy brings the registry up to date. The stream is already open, so
        // nothing that happens from now on is missed either.
        match self.resync(url, ctx).await {
            Ok(n) => {
                debug!(adapter = %ctx.name, busy = n, "opencode session status resynchronised")
            }
            Err(e) => {
                debug!(adapter = %ctx.name, error = %e, "opencode session status unavailable; following events only")
            }
        }

        let mut body = resp.into_body();
        let mut parser = SseParser::new(self.max_event_bytes);
        let mut buf = BytesMut::new();
        loop {
            let frame = match body.frame().await {
                None => return Err(StreamError::Closed),
                Some(frame) => frame?,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            buf.extend_from_slice(&data);
            for item in parser.feed(&mut buf) {
                self.handle(item, ctx).await;
                // Counted once handled, so a reader of the counter sees its effect applied.
                OpencodeStats::bump(&self.stats.events);
            }
        }
    }

    /// One GET on a fresh connection: the response (status 200 and the `accept`ed content
    /// type checked) and the task driving its connection, which must be kept while the body is
    /// read.
    async fn get(
        &self,
        url: &EventStreamUrl,
        target: &Uri,
        accept: &'static str,
    ) -> Result<
        (
            hyper::Response<Incoming>,
            AbortOnDropHandle<Result<(), hyper::Error>>,
        ),
        StreamError,
    > {
        let limit = self.config.connect_timeout;
        let tcp = tokio::time::timeout(limit, TcpStream::connect((url.host.as_str(), url.port)))
            .await
            .map_err(|_| StreamError::Timeout(limit))?
            .map_err(StreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let conn = AbortOnDropHandle::new(tokio::spawn(conn));
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.uri_mut() = target.clone();
        req.headers_mut()
            .insert(header::HOST, url.host_header.clone());
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(accept));
        let resp = tokio::time::timeout(limit, sender.send_request(req))
            .await
            .map_err(|_| StreamError::Timeout(limit))??;
        if resp.status() != hyper::StatusCode::OK {
            return Err(StreamError::Status(resp.status().as_u16()));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with(accept) {
            return Err(StreamError::ContentType {
                expected: accept,
                got: content_type.to_owned(),
            });
        }
        Ok((resp, conn))
    }

    /// Reads `GET /session/status` (`{"<session id>": {"type": "busy" | "retry" | "idle"}}`,
    /// listing the sessions that are not idle) and applies it: listed sessions are busy, the
    /// ones this adapter holds as working or waiting that are not listed have finished. Returns how many
    /// were busy.
    async fn resync(
        &self,
        url: &EventStreamUrl,
        ctx: &AdapterContext,
    ) -> Result<usize, StreamError> {
        let (resp, _conn) = self
            .get(url, &url.status_target, "application/json")
            .await?;
        let limit = self.config.connect_timeout;
        let body = tokio::time::timeout(
            limit,
            Limited::new(resp.into_body(), self.max_event_bytes).collect(),
        )
        .await
        .map_err(|_| StreamError::Timeout(limit))?
        .map_err(|e| StreamError::Body(e.to_string()))?
        .to_bytes();
        let statuses = crate::translate::parse_statuses(&body)
            .map_err(|e| StreamError::Body(e.to_string()))?;
        let busy = statuses.len();
        let held = match ctx.registry.snapshot().await {
            Ok(s) => s.sessions,
            Err(_) => Vec::new(),
        };
        for s in held.iter().filter(|s| {
            s.harness.as_str() == Harness::OPENCODE
                && s.source == ctx.name
                && matches!(
                    s.state,
                    AgentState::Working | AgentState::NeedsPermission | AgentState::NeedsInput
                )
                && !statuses.iter().any(|t| t.session_id == s.id)
        }) {
            self.apply(
                Translation {
                    event_type: "session.status".to_owned(),
                    session_id: s.id.clone(),
                    cwd: None,
                    event: AgentEvent::TurnFinished,
                },
                ctx,
            )
            .await;
        }
        for t in statuses {
            self.apply(t, ctx).await;
        }
        Ok(busy)
    }

    async fn handle(&self, item: SseItem, ctx: &AdapterContext) {
        let data = match item {
            SseItem::Event(data) => data,
            SseItem::Oversized => {
                OpencodeStats::bump(&self.stats.oversized);
                warn!(
                    adapter = %ctx.name,
                    limit = self.max_event_bytes,
                    "skipped an opencode event larger than the limit"
                );
                return;
            }
        };
        let translated = parse(&data).and_then(|v| translate(&v));
        match translated {
            Ok(Some(t)) => self.apply(t, ctx).await,
            Ok(None) => OpencodeStats::bump(&self.stats.ignored),
            Err(e) => {
                OpencodeStats::bump(&self.stats.malformed);
                debug!(adapter = %ctx.name, error = %e, "skipped a malformed opencode event");
            }
        }
    }

    async fn apply(&self, t: Translation, ctx: &AdapterContext) {
        // A reminder (a repeated `running` part or `busy` status) is the state machine's to
        // weigh against a wait already shown: nothing here reads the session.
        let event = t.event;
        let mut source = EventSource::new(Harness::new(Harness::OPENCODE), t.session_id, &ctx.name);
        source.cwd = t.cwd;
        match ctx
            .registry
            .apply_event(EventEnvelope::now(source, event))
            .await
        {
            Ok(ApplyOutcome::Ignored) => OpencodeStats::bump(&self.stats.ignored),
            Ok(_) => OpencodeStats::bump(&self.stats.applied),
            Err(e) => {
                OpencodeStats::bump(&self.stats.registry_errors);
                debug!(adapter = %ctx.name, error = %e, event = %t.event_type, "registry refused an opencode event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls() {
        let u = EventStreamUrl::parse("http://127.0.0.1:4096").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 4096));
        assert_eq!(u.target.path(), "/event");
        assert_eq!(u.host_header, "127.0.0.1:4096");
        let u = EventStreamUrl::parse("http://localhost:4096/base/").unwrap();
        assert_eq!(u.target.path(), "/base/event");
        let u = EventStreamUrl::parse("http://[::1]:9/global/event").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.target.path(), "/global/event");
        assert_eq!(EventStreamUrl::parse("http://h").unwrap().port, 80);
        for bad in [
            "https://h:1",
            "127.0.0.1:4096",
            "ftp://h",
            "http://",
            "",
            "http://h:99999",
        ] {
            let e = EventStreamUrl::parse(bad).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("url"), "{bad}");
        }
    }

    #[test]
    fn config_is_checked() {
        let t = |s: &str| atm_core::toml::Value::Table(atm_core::toml::from_str(s).unwrap());
        assert!(OpencodeAdapter::from_config(&t("")).is_ok());
        assert!(
            OpencodeAdapter::from_config(&t(
                "url = \"http://127.0.0.1:4096\"\nmax_backoff = \"10s\""
            ))
            .is_ok()
        );
        let e = OpencodeAdapter::from_config(&t("max_backoff = \"1ms\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("max_backoff"));
        let e = OpencodeAdapter::from_config(&t("url = \"https://x\"")).unwrap_err();
        assert!(e.message.contains("https"), "{e}");
        let e = OpencodeAdapter::from_config(&t("uri = \"http://x\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("uri"));
    }
}
