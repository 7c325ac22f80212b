//! The listeners: a TCP address (loopback by default) and optionally a private Unix socket,
//! each accepting HTTP/1.1 connections served by hyper with the sink's limits.
//!
//! Why hyper's own connection builder and not `axum::serve`: it sets the limits the issue asks
//! for (request head size -> 431, header-read timeout for clients that never finish their
//! request) and lets each connection carry its peer (on the Unix socket, the uid checked by
//! atm-core's `PrivateListener`, which the answers record in the audit trail).
//!
//! Connections beyond `max_clients` are closed at once (the accept loop never waits for a
//! place, so a flood cannot stall it). On cancel, listeners stop accepting and every
//! connection is told to finish its request and close.

use std::sync::Arc;
use std::time::Duration;

use atm_core::unix_socket::PrivateListener;
use atm_core::warn_rate::RateLimitedWarn;
use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The uid of the peer on the Unix socket; `None` over TCP (loopback peers are not known).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerUid(pub(crate) Option<u32>);

/// What every connection is served with.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) router: Router,
    pub(crate) max_header_bytes: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) places: Arc<Semaphore>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// The pause after a failed accept (out of file descriptors, usually).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

impl Serving {
    /// Serves one connection in a task of its own, if there is a place for it.
    fn spawn<IO>(&self, io: IO, peer: PeerUid, refusals: &mut RateLimitedWarn)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            refusals.say(|suppressed| {
                format!(
                    "http connection refused: all places in use{suppressed}; raise `max_clients` in the http sink's table"
                )
            });
            return; // dropping `io` closes it
        };
        let service = self
            .router
            .clone()
            .map_request(move |mut r: Request<Incoming>| {
                r.extensions_mut().insert(peer);
                r
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes.max(16 * 1024))
            .max_headers(64);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let conn =
                builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "http connection ended with an error");
            }
            drop(place);
        });
    }
}

/// Accepts TCP connections until cancelled.
pub(crate) async fn accept_tcp(listener: TcpListener, serving: Serving) {
    let mut refusals = RateLimitedWarn::default();
    loop {
        let accepted = tokio::select! {
            () = serving.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                serving.spawn(stream, PeerUid(None), &mut refusals);
            }
            Err(e) => {
                warn!(error = %e, "http accept failed; retrying in 100 ms");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Accepts this user's connections on the Unix socket until cancelled.
pub(crate) async fn accept_unix(mut listener: PrivateListener, serving: Serving) {
    let mut refusals = RateLimitedWarn::default();
    while let Some((stream, peer)) = listener.accept_own(&serving.cancel, "http").await {
        serving.spawn(stream, PeerUid(Some(peer.uid)), &mut refusals);
    }
}
