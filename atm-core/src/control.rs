//! Control requests: how a sink asks the adapters to do something now (the socket sink's
//! `discover` asks every discovery adapter to rescan).
//!
//! An adapter opts in by taking a receiver from its context; adapters that never take one are
//! never asked, so a request never waits on someone who will not answer. Each receiver's queue is
//! bounded (8); a full queue means the adapter is already busy rescanning, and the request is
//! skipped for it rather than queued without bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// What a sink can ask of adapters.
#[derive(Debug)]
pub enum ControlRequest {
    /// Scan now and report what was found.
    Rescan {
        reply: oneshot::Sender<RescanReport>,
    },
}

/// Result of a rescan: sessions found and processes that could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescanReport {
    pub discovered: u64,
    pub failed: u64,
    /// How many adapters answered.
    pub responders: u64,
}

const QUEUE: usize = 8;

/// Shared by the daemon, the adapters (to take receivers) and the sinks (to send requests).
#[derive(Clone, Default)]
pub struct ControlBus {
    senders: Arc<Mutex<Vec<mpsc::Sender<ControlRequest>>>>,
}

impl std::fmt::Debug for ControlBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlBus")
    }
}

impl ControlBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a listener. Dropping the receiver unregisters it.
    pub fn receiver(&self) -> mpsc::Receiver<ControlRequest> {
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Ok(mut s) = self.senders.lock() {
            s.retain(|t| !t.is_closed());
            s.push(tx);
        }
        rx
    }

    /// Asks every listening adapter to rescan and sums their reports. Adapters that do not
    /// answer within `timeout` are left out. With no listener, returns zero counts.
    pub async fn rescan(&self, timeout: Duration) -> RescanReport {
        let senders: Vec<_> = match self.senders.lock() {
            Ok(mut s) => {
                s.retain(|t| !t.is_closed());
                s.clone()
            }
            Err(_) => Vec::new(),
        };
        let mut waits = Vec::new();
        for tx in senders {
            let (reply, rx) = oneshot::channel();
            if tx.try_send(ControlRequest::Rescan { reply }).is_ok() {
                waits.push(rx);
            }
        }
        let mut total = RescanReport::default();
        let deadline = crate::duration::deadline_after(tokio::time::Instant::now(), timeout);
        for rx in waits {
            if let Ok(Ok(r)) = tokio::time::timeout_at(deadline, rx).await {
                total.discovered += r.discovered;
                total.failed += r.failed;
                total.responders += 1;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_listener_gives_zero_counts_at_once() {
        let bus = ControlBus::new();
        let r = bus.rescan(Duration::from_secs(5)).await;
        assert_eq!(r, RescanReport::default());
    }

    #[tokio::test]
    async fn reports_are_summed_and_dropped_listeners_skipped() {
        let bus = ControlBus::new();
        for n in [2u64, 3] {
            let mut rx = bus.receiver();
            tokio::spawn(async move {
                while let Some(ControlRequest::Rescan { reply }) = rx.recv().await {
                    let _ = reply.send(RescanReport {
                        discovered: n,
                        failed: 1,
                        responders: 0,
                    });
                }
            });
        }
        drop(bus.receiver());
        let r = bus.rescan(Duration::from_secs(5)).await;
        assert_eq!((r.discovered, r.failed, r.responders), (5, 2, 2));
    }
}
