//! Following one opencode server: its event stream, the resynchronisation each time the stream
//! opens, and the end of its sessions when it goes away.
//!
//! A server is either configured (`url`, its process unknown) or found from its process (see
//! [`crate::discover`]). A found TUI is one session in atm, like every other agent: its main
//! sessions carry its process, so the registry binds them to it (the session proc-discovery
//! saw as `pending-<pid>` becomes the real one, and the process's exit removes it at once) and
//! they get its tmux pane. A headless server (`opencode serve`) may hold several clients'
//! sessions at once, so they stay keyed by id; its `pending-<pid>` placeholder is ended.
//! Subagent (child) sessions are never bound to the process.
//!
//! When the server is gone (its process exited, or, for a configured one, its stream ended),
//! every session it named is removed: a server that exits does not say so on its stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use atm_core::event::{AgentEvent, EventEnvelope, EventSource, StartSource};
use atm_core::model::{Harness, ProcessIdentity, SessionId};
use atm_core::plugin::AdapterContext;
use atm_core::tracing::{debug, info, warn};
use atm_core::{AgentState, ApplyOutcome};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use tokio_util::task::AbortOnDropHandle;

use crate::answer::Answerers;
use crate::discover::ServerProcess;
use crate::sse::{SseItem, SseParser};
use crate::stats::OpencodeStats;
use crate::translate::{Translation, parse, parse_pending, parse_sessions, translate};
use crate::url::EventStreamUrl;

/// The first retry delay; it doubles up to `max_backoff` while the server stays away.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// What every followed server shares: limits and counters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub max_event_bytes: usize,
    /// Without a process: sessions updated within this long before the stream opened are
    /// listed on connect (the registry's silence limit).
    pub recent: Duration,
    pub stats: Arc<OpencodeStats>,
}

/// Why one connection to the event stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
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

impl From<hyper::http::uri::InvalidUri> for StreamError {
    fn from(e: hyper::http::uri::InvalidUri) -> Self {
        Self::Body(e.to_string())
    }
}

/// One server being followed.
pub(crate) struct Server {
    pub url: EventStreamUrl,
    /// The server's process, when it was found from it.
    pub process: Option<(ProcessIdentity, ServerProcess)>,
    /// Every session its events or lists named, removed when it goes.
    seen: HashSet<SessionId>,
    /// Sessions known to be subagents (they have a parent).
    children: HashSet<SessionId>,
    /// Whether the stream was open since the server was last judged gone.
    connected: bool,
    /// The requests waiting for an answer given through atm ([`crate::answer`]).
    answerers: Answerers,
}

/// Per-outage bookkeeping: the retry delay and whether the outage was already logged.
struct Link {
    backoff: Duration,
    outage_logged: bool,
}

impl Server {
    pub fn new(url: EventStreamUrl, process: Option<(ProcessIdentity, ServerProcess)>) -> Self {
        Self {
            url,
            process,
            seen: HashSet::new(),
            children: HashSet::new(),
            connected: false,
            answerers: Answerers::new(),
        }
    }

    /// A TUI's main sessions are bound to its process.
    fn bound_process(&self, id: &SessionId) -> Option<ProcessIdentity> {
        match &self.process {
            Some((p, info)) if !info.headless && !self.children.contains(id) => Some(*p),
            _ => None,
        }
    }

    fn alive(&self) -> bool {
        self.process
            .as_ref()
            .is_none_or(|(p, _)| atm_core::process::is_alive(*p))
    }

    /// Connects, reads, reconnects until the server's process exits (a configured server:
    /// forever; the caller cancels it).
    pub async fn follow(&mut self, shared: &Shared, ctx: &AdapterContext) {
        let mut link = Link {
            backoff: INITIAL_BACKOFF,
            outage_logged: false,
        };
        // A configured server whose stream ended and which then refuses connections has
        // exited (a stream that merely dropped is reopened at once and resynchronised).
        let mut suspect = false;
        loop {
            let err = match self.stream_once(shared, ctx, &mut link).await {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let was_open = std::mem::take(&mut self.connected);
            if !self.alive() {
                self.gone(ctx).await;
                info!(adapter = %ctx.name, url = %self.url.display, "opencode server exited");
                return;
            }
            if self.process.is_none() {
                if was_open {
                    suspect = true;
                    continue;
                }
                if std::mem::take(&mut suspect) && matches!(err, StreamError::Connect(_)) {
                    self.gone(ctx).await;
                }
            }
            if link.outage_logged {
                debug!(adapter = %ctx.name, url = %self.url.display, error = %err, "opencode still unavailable");
            } else {
                warn!(
                    adapter = %ctx.name,
                    url = %self.url.display,
                    error = %err,
                    "opencode event stream unavailable; retrying with backoff (logged once per outage)"
                );
                link.outage_logged = true;
            }
            OpencodeStats::bump(&shared.stats.failed_attempts);
            tokio::time::sleep(link.backoff).await;
            link.backoff = (link.backoff * 2).min(shared.max_backoff);
        }
    }

    /// The server went away: its sessions with it.
    async fn gone(&mut self, ctx: &AdapterContext) {
        let ids: Vec<SessionId> = self.seen.drain().collect();
        let mut removed = 0;
        for id in ids {
            if ctx
                .registry
                .remove(id.as_str(), "opencode server gone")
                .await
                .is_ok()
            {
                removed += 1;
            }
        }
        debug!(adapter = %ctx.name, removed, "sessions of a gone opencode server removed");
    }

    /// One connection: returns only with the reason it ended.
    async fn stream_once(
        &mut self,
        shared: &Shared,
        ctx: &AdapterContext,
        link: &mut Link,
    ) -> Result<std::convert::Infallible, StreamError> {
        let (resp, _conn) = get(shared, &self.url, &self.url.target, "text/event-stream").await?;
        OpencodeStats::bump(&shared.stats.connections);
        if link.outage_logged {
            info!(adapter = %ctx.name, url = %self.url.display, "opencode event stream back");
        } else {
            info!(adapter = %ctx.name, url = %self.url.display, "following the opencode event stream");
        }
        *link = Link {
            backoff: INITIAL_BACKOFF,
            outage_logged: false,
        };
        self.connected = true;
        // Events sent while no stream was open are lost; the server's own view brings the
        // registry up to date. The stream is already open, so nothing after is missed either.
        // A server that has just started may not answer in time (seen on a loaded machine:
        // more than 5 s); the view is asked again, with backoff, while the events are followed,
        // or a TUI waiting at its prompt with no session yet would stay `starting`.
        let mut retry = self.resync_or_retry(shared, ctx, None).await;
        let mut body = resp.into_body();
        let mut parser = SseParser::new(shared.max_event_bytes);
        let mut buf = BytesMut::new();
        loop {
            let next = tokio::select! {
                frame = body.frame() => frame,
                () = sleep_until(retry), if retry.is_some() => {
                    retry = self.resync_or_retry(shared, ctx, retry).await;
                    continue;
                }
            };
            let frame = match next {
                None => return Err(StreamError::Closed),
                Some(frame) => frame?,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            buf.extend_from_slice(&data);
            for item in parser.feed(&mut buf) {
                self.handle(item, shared, ctx).await;
                // Counted once handled, so a reader of the counter sees its effect applied.
                OpencodeStats::bump(&shared.stats.events);
            }
        }
    }

    /// [`Server::resync`]; when it fails, when to try again: [`INITIAL_BACKOFF`] after the
    /// first failure, twice the last delay (`retry`: the last attempt's due time and delay)
    /// after each further one, at most `max_backoff`.
    async fn resync_or_retry(
        &mut self,
        shared: &Shared,
        ctx: &AdapterContext,
        retry: Option<(tokio::time::Instant, Duration)>,
    ) -> Option<(tokio::time::Instant, Duration)> {
        match self.resync(shared, ctx).await {
            Ok(n) => {
                debug!(adapter = %ctx.name, sessions = n, "opencode sessions resynchronised");
                None
            }
            Err(e) => {
                let delay = retry.map_or(INITIAL_BACKOFF, |(_, d)| (d * 2).min(shared.max_backoff));
                debug!(adapter = %ctx.name, error = %e, ?delay, "opencode session status unavailable; following events, asking again");
                Some((tokio::time::Instant::now() + delay, delay))
            }
        }
    }

    /// GETs `path` (relative to the server's root) and returns its body, at most the event
    /// size limit.
    async fn get_json(&self, shared: &Shared, target: &Uri) -> Result<Bytes, StreamError> {
        let (resp, _conn) = get(shared, &self.url, target, "application/json").await?;
        let limit = shared.connect_timeout;
        Ok(tokio::time::timeout(
            limit,
            Limited::new(resp.into_body(), shared.max_event_bytes).collect(),
        )
        .await
        .map_err(|_| StreamError::Timeout(limit))?
        .map_err(|e| StreamError::Body(e.to_string()))?
        .to_bytes())
    }

    /// Brings the registry up to the server's view: `GET /session/status` (the sessions that are
    /// not idle), `GET /session` (the sessions and their totals: those updated since the server
    /// started, or recently for a configured server, are listed, idle unless busy),
    /// `GET /permission` and `GET /question` (what waits on the user). Sessions this adapter
    /// holds as working or waiting that the server says are idle have finished. Returns how
    /// many sessions were listed.
    async fn resync(
        &mut self,
        shared: &Shared,
        ctx: &AdapterContext,
    ) -> Result<usize, StreamError> {
        let body = self
            .get_json(shared, &self.url.at("/session/status")?)
            .await?;
        let statuses = crate::translate::parse_statuses(&body)
            .map_err(|e| StreamError::Body(e.to_string()))?;
        let listed = match self.get_json(shared, &self.url.at("/session")?).await {
            Ok(b) => parse_sessions(&b).unwrap_or_default(),
            Err(e) => {
                debug!(adapter = %ctx.name, error = %e, "opencode session list unavailable");
                Vec::new()
            }
        };
        let mut waiting = Vec::new();
        for (path, ty) in [
            ("/permission", "permission.asked"),
            ("/question", "question.asked"),
        ] {
            if let Ok(b) = self.get_json(shared, &self.url.at(path)?).await {
                waiting.extend(parse_pending(&b, ty).unwrap_or_default());
            }
        }
        let since_ms = self.listed_since(shared.recent);
        for s in &listed {
            if s.parent_id.is_some() {
                self.children.insert(s.id.clone());
            }
        }
        let busy = |id: &SessionId| statuses.iter().any(|t| &t.session_id == id);
        let waits = |id: &SessionId| waiting.iter().any(|t| &t.session_id == id);
        let held = match ctx.registry.snapshot().await {
            Ok(s) => s.sessions,
            Err(_) => Vec::new(),
        };
        let finished: Vec<SessionId> = held
            .iter()
            .filter(|s| {
                s.harness.as_str() == Harness::OPENCODE
                    && (self.seen.contains(&s.id)
                        || (self.process.is_none() && s.source == ctx.name))
                    && matches!(
                        s.state,
                        AgentState::Working | AgentState::NeedsPermission | AgentState::NeedsInput
                    )
                    && !busy(&s.id)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in finished {
            self.apply(synthetic(&id, AgentEvent::TurnFinished), shared, ctx)
                .await;
        }
        let known = |id: &SessionId| held.iter().any(|h| &h.id == id);
        let mut count = 0;
        for s in listed
            .iter()
            .filter(|s| s.updated_ms >= since_ms || busy(&s.id) || waits(&s.id))
        {
            count += 1;
            if !known(&s.id) {
                let mut t = synthetic(
                    &s.id,
                    AgentEvent::SessionStarted {
                        source: StartSource::Resume,
                        model: None,
                    },
                );
                t.cwd = s.cwd.clone();
                self.apply(t, shared, ctx).await;
                if !busy(&s.id) {
                    self.apply(synthetic(&s.id, AgentEvent::TurnFinished), shared, ctx)
                        .await;
                }
            }
            if !s.usage.is_empty() {
                let usage = AgentEvent::UsageUpdated(Box::new(s.usage.clone()));
                self.apply(synthetic(&s.id, usage), shared, ctx).await;
            }
        }
        for t in statuses.into_iter().chain(waiting) {
            self.apply(t, shared, ctx).await;
        }
        self.settle_placeholder(ctx).await;
        Ok(count)
    }

    /// Milliseconds since the epoch from which listed sessions count as this server's: its
    /// process's start, or `recent` ago.
    fn listed_since(&self, recent: Duration) -> u64 {
        let now = chrono_now_ms();
        let started = self.process.as_ref().and_then(|(p, _)| {
            crate::discover::started_ms(std::path::Path::new(atm_core::process::PROC_ROOT), *p)
        });
        started.unwrap_or_else(|| {
            now.saturating_sub(u64::try_from(recent.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// proc-discovery's `pending-<pid>` for the server's process: a TUI with no session yet is
    /// waiting at its prompt (idle); a headless server is not a session at all (ended, so it
    /// is not rediscovered).
    async fn settle_placeholder(&mut self, ctx: &AdapterContext) {
        let Some((p, info)) = self.process.clone() else {
            return;
        };
        let pending = SessionId::pending(p.pid);
        let event = if info.headless {
            AgentEvent::SessionEnded {
                reason: "opencode server: its sessions are followed".to_owned(),
                continues: false,
            }
        } else {
            let bound = match ctx.registry.snapshot().await {
                Ok(s) => s.sessions.iter().any(|s| s.process == Some(p)),
                Err(_) => false,
            };
            let placeholder = match ctx.registry.get_session(pending.as_str()).await {
                Ok(s) => s.state == AgentState::Starting,
                Err(_) => false,
            };
            if !bound || !placeholder {
                return;
            }
            AgentEvent::TurnFinished
        };
        let mut source = EventSource::new(Harness::new(Harness::OPENCODE), pending, &ctx.name);
        source.process = Some(p);
        source.tmux_pane = info.tmux_pane.clone();
        let _ = ctx
            .registry
            .apply_event(EventEnvelope::now(source, event))
            .await;
    }

    async fn handle(&mut self, item: SseItem, shared: &Shared, ctx: &AdapterContext) {
        let data = match item {
            SseItem::Event(data) => data,
            SseItem::Oversized => {
                OpencodeStats::bump(&shared.stats.oversized);
                warn!(
                    adapter = %ctx.name,
                    limit = shared.max_event_bytes,
                    "skipped an opencode event larger than the limit"
                );
                return;
            }
        };
        match parse(&data).and_then(|v| translate(&v)) {
            Ok(Some(t)) => {
                let created = (t.event_type == "session.created").then(|| t.session_id.clone());
                self.apply_counted(t, shared, ctx).await;
                // opencode makes a session idle, waiting for its first prompt (its status goes
                // busy when one comes, as the next event): shown so, as a resync shows a listed
                // session that is not busy. A session a web UI or an editor plugin creates on a
                // headless server would otherwise show `starting` until its first prompt.
                if let Some(id) = created {
                    self.apply(synthetic(&id, AgentEvent::TurnFinished), shared, ctx)
                        .await;
                }
            }
            Ok(None) => OpencodeStats::bump(&shared.stats.ignored),
            Err(e) => {
                OpencodeStats::bump(&shared.stats.malformed);
                debug!(adapter = %ctx.name, error = %e, "skipped a malformed opencode event");
            }
        }
    }

    async fn apply_counted(&mut self, t: Translation, shared: &Shared, ctx: &AdapterContext) {
        match self.apply(t, shared, ctx).await {
            Some(ApplyOutcome::Ignored) => OpencodeStats::bump(&shared.stats.ignored),
            Some(_) => OpencodeStats::bump(&shared.stats.applied),
            None => OpencodeStats::bump(&shared.stats.registry_errors),
        }
    }

    async fn apply(
        &mut self,
        t: Translation,
        shared: &Shared,
        ctx: &AdapterContext,
    ) -> Option<ApplyOutcome> {
        if t.parent_id.is_some() {
            self.children.insert(t.session_id.clone());
        }
        let ends = matches!(t.event, AgentEvent::SessionEnded { .. });
        if ends {
            self.seen.remove(&t.session_id);
        } else {
            self.seen.insert(t.session_id.clone());
        }
        let mut source = EventSource::new(Harness::new(Harness::OPENCODE), t.session_id, &ctx.name);
        source.process = self.bound_process(&source.session_id);
        source.tmux_pane = self.process.as_ref().and_then(|(_, i)| i.tmux_pane.clone());
        source.cwd = t.cwd;
        let envelope = EventEnvelope::now(source, t.event);
        // A permission opencode can be answered for over its API: wait for the answer.
        if let Some(opencode_id) = t.request_id {
            return match ctx.registry.apply_awaiting(envelope).await {
                Ok(a) => {
                    if let Some(wait) = a.wait {
                        let timeout = shared.connect_timeout;
                        self.answerers.wait(
                            &self.url,
                            timeout,
                            &ctx.registry,
                            wait,
                            opencode_id,
                            &ctx.cancel,
                        );
                    }
                    Some(a.outcome)
                }
                Err(e) => {
                    debug!(adapter = %ctx.name, error = %e, event = %t.event_type, "registry refused an opencode event");
                    None
                }
            };
        }
        // A reminder (a repeated `running` part or `busy` status) is the state machine's to
        // weigh against a wait already shown: nothing here reads the session.
        match ctx.registry.apply_event(envelope).await {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                debug!(adapter = %ctx.name, error = %e, event = %t.event_type, "registry refused an opencode event");
                None
            }
        }
    }
}

/// Waits until `retry`'s due time (forever without one: the `select!` branch is then off).
async fn sleep_until(retry: Option<(tokio::time::Instant, Duration)>) {
    match retry {
        Some((due, _)) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn synthetic(id: &SessionId, event: AgentEvent) -> Translation {
    Translation {
        event_type: "resync".to_owned(),
        session_id: id.clone(),
        cwd: None,
        parent_id: None,
        event,
        request_id: None,
    }
}

fn chrono_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One GET on a fresh connection: the response (status 200 and the `accept`ed content type
/// checked) and the task driving its connection, which must be kept while the body is read.
async fn get(
    shared: &Shared,
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
    let limit = shared.connect_timeout;
    let (mut sender, conn) = url.connect(limit).await?;
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
