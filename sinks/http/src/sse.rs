//! `GET /events`: the board's live stream, as server-sent events.
//!
//! A client's stream is a snapshot (`event: snapshot`), then one frame per change
//! (`event: session`, `event: removed`), each the frame the fan-out rendered once for everyone
//! (see [`crate::board`]). When the client fell behind far enough for its queue to resync it
//! gets a fresh snapshot instead of what it missed. Idle streams get a comment line every
//! `keepalive`, so proxies and browsers keep them open; the stream ends when the sink stops.
//!
//! Backpressure: hyper polls the stream only when the socket takes more bytes, so a stuck
//! browser simply stops taking frames out of its own queue; the fan-out never waits for it.
//! What is ready is written as one chunk per poll, so a burst costs one write, not hundreds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};
use bytes::{Bytes, BytesMut};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::board::{Board, Subscription};

const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// What one live client's stream holds between polls.
struct Stream {
    board: Arc<Board>,
    sub: Subscription,
    cancel: CancellationToken,
    keepalive: Duration,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    /// The next chunk to write, or `None` when the stream ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let batch = self.sub.queue.take();
            let snapshot = batch.resync.then(|| self.board.snapshot_frame());
            let mut pieces = snapshot.into_iter().chain(batch.entries);
            if let Some(first) = pieces.next() {
                // One piece is the shared frame itself (no copy: a burst of clients resyncing
                // at once holds one snapshot between them); more are joined into one write.
                let Some(second) = pieces.next() else {
                    return Some(first);
                };
                let rest: Vec<Bytes> = pieces.collect();
                let len = first.len() + second.len() + rest.iter().map(Bytes::len).sum::<usize>();
                let mut out = BytesMut::with_capacity(len);
                for piece in [first, second].iter().chain(&rest) {
                    out.extend_from_slice(piece);
                }
                return Some(out.freeze());
            }
            if batch.closed {
                return None;
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                () = self.sub.queue.ready() => {}
                () = tokio::time::sleep(self.keepalive) => {
                    return Some(Bytes::from_static(KEEPALIVE));
                }
            }
        }
    }
}

/// The response for one live client (`permit`: its place among `max_clients`).
pub(crate) fn response(
    board: &Arc<Board>,
    cancel: CancellationToken,
    keepalive: Duration,
    permit: OwnedSemaphorePermit,
) -> Response<Body> {
    let stream = Stream {
        board: board.clone(),
        sub: board.subscribe(),
        cancel,
        keepalive,
        _permit: permit,
    };
    let chunks = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx not to buffer the stream when it proxies the Unix socket.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
