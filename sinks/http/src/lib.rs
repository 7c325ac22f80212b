//! The `http` sink: atm's live web board, its JSON API and `/metrics`, over HTTP on loopback
//! (`127.0.0.1:7378` by default) and optionally a private Unix socket for a reverse proxy.
//!
//! Shape, and why:
//! - [`board`]: ONE fan-out task follows the registry and renders each change once into a
//!   server-sent-events frame shared by every live client; each client has atm-core's bounded
//!   latest-per-key queue with resync, so a stuck browser never slows another.
//! - [`sse`]: a client's `/events` stream (snapshot, then changes).
//! - [`api`]: the routes (page, JSON API, answers through the registry's `decide`, tmux focus,
//!   `/metrics`, `/healthz`); [`auth`]: the token (bearer header or login cookie) and the
//!   cross-site checks of POSTs; [`token`]: the token file.
//! - [`listen`]: the listeners, hyper connections with the head-size and header-timeout
//!   limits, and the connection limit.
//! - [`page`]: the embedded page and assets.
//!
//! A bind failure ends the run with an error naming the address and why; the daemon's
//! supervisor logs it and retries with backoff, and every other plugin keeps running.

mod api;
mod auth;
mod board;
pub mod config;
mod listen;
pub mod metrics;
mod page;
mod sse;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use atm_core::async_trait;
use atm_core::plugin::{ConfigError, OutputSink, PluginError, SinkContext};
use atm_core::tmux::{Tmux, TmuxSocket};
use atm_core::unix_socket::{BindError, PrivateListener};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::HttpConfig;
pub use page::first_load_bytes;
pub use token::Token;

atm_core::register_plugin! {
    sink "http",
    description: "The live web board, a JSON API and /metrics over HTTP (127.0.0.1:7378), behind a token",
    sample_config: include_str!("../sample.toml"),
    factory: |cfg| Ok(Box::new(HttpSink::new(atm_core::plugin::parse_config(cfg)?)?)),
}

/// The web board server.
#[derive(Debug)]
pub struct HttpSink {
    config: HttpConfig,
}

impl HttpSink {
    pub fn new(config: HttpConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }
}

/// How long open connections get to finish when the sink stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

fn bind_tcp(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, PluginError> {
    let fail = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another program uses it: stop that one or set `listen` in the http sink's table"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "; no interface has that address: set `listen` to one this machine has"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need privileges: set `listen` to a higher port"
            }
            _ => "",
        };
        PluginError::io(format!("cannot listen on {addr}{hint}"), e)
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    std_listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(fail)
}

#[async_trait]
impl OutputSink for HttpSink {
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError> {
        let config = self.config;
        let token_path = config.token_path(&ctx.env.state_dir);
        let token =
            Token::load_or_create(&token_path).map_err(|e| PluginError::Other(e.to_string()))?;
        let tcp = match config.tcp_address()? {
            Some(addr) => Some(bind_tcp(addr)?),
            None => None,
        };
        let unix = match config.unix_socket_path() {
            Some(path) => Some(PrivateListener::bind(&path, ctx.env.rebind.clone()).map_err(
                |e| match e {
                    BindError::InUse => PluginError::Other(format!(
                        "cannot listen on {}: another process serves it; stop it or set `unix_socket` in the http sink's table",
                        path.display()
                    )),
                    BindError::Io(e) => {
                        PluginError::io(format!("cannot listen on {}", path.display()), e)
                    }
                },
            )?),
            None => None,
        };
        let url_file = ctx.env.runtime_dir.join(atm_core::paths::WEB_ADDRESS_FILE);
        let url = match tcp.as_ref().and_then(|l| l.local_addr().ok()) {
            Some(addr) => {
                let url = format!("http://{addr}/");
                // For `atmctl web`; the board works without it.
                let _ = std::fs::write(&url_file, format!("{url}\n"));
                info!(%url, token_file = %token_path.display(), "web board listening");
                Some(url)
            }
            None => None,
        };
        if let Some(u) = &unix {
            info!(path = %u.path().display(), "web board listening on its Unix socket");
        }

        let stop = ctx.cancel.child_token();
        let metrics = metrics::Metrics::new(metrics::MetricsConfig {
            host: ctx.registry.host().to_string(),
            sink: ctx.name.clone(),
            max_session_series: config.max_session_series,
        });
        let board = Arc::new(board::Board::new(
            config.client_policy(),
            // The registry's host id (`[daemon] host`), the one every session carries, so the
            // page can tell this machine's sessions from mirrored ones.
            ctx.registry.host().to_string(),
            board::Counters::new(&metrics, &ctx.name),
        ));
        let state = api::AppState {
            token,
            board: board.clone(),
            registry: ctx.registry.clone(),
            cancel: stop.clone(),
            streams: Arc::new(Semaphore::new(config.max_clients)),
            keepalive: config.keepalive,
            tmux: Arc::new(Tmux::new(TmuxSocket::Default)),
            metrics: metrics.clone(),
        };
        let serving = listen::Serving {
            router: api::router(state, config.max_body_bytes),
            max_header_bytes: config.max_header_bytes,
            header_timeout: config.header_timeout,
            places: Arc::new(Semaphore::new(config.max_clients)),
            cancel: stop.clone(),
            tracker: TaskTracker::new(),
        };
        let tracker = serving.tracker.clone();
        let accept_tcp = async {
            match tcp {
                Some(l) => listen::accept_tcp(l, serving.clone()).await,
                None => stop.cancelled().await,
            }
        };
        let accept_unix = async {
            match unix {
                Some(l) => listen::accept_unix(l, serving.clone()).await,
                None => stop.cancelled().await,
            }
        };
        let result = tokio::select! {
            r = board.clone().run(ctx.registry.clone(), stop.clone()) => r,
            r = metrics.clone().run(&ctx) => r,
            ((), ()) = async { tokio::join!(accept_tcp, accept_unix) } => Ok(()),
        };
        stop.cancel();
        tracker.close();
        let _ = tokio::time::timeout(STOP_GRACE, tracker.wait()).await;
        if url.is_some() {
            let _ = std::fs::remove_file(&url_file);
        }
        info!("web board closed");
        result
    }
}
