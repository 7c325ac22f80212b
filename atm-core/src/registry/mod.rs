//! The registry: the one actor that owns every session, and the handle everyone else holds.
//!
//! Everyone else holds a [`RegistryHandle`] (a cheap clone of a bounded command sender) and gets
//! answers over `oneshot`. Owning the state in one task keeps the rules of identity (one row per
//! process, re-keying on a new agent id) free of locks, and makes the order of changes the order
//! of the sequence numbers that sinks see. The actor decides nothing itself: what an event or a
//! discovery does to a record, re-keying included, is the pure code of [`crate::state`]; the
//! actor finds the record, stores the outcome and emits it through its one emit path.
//!
//! One role per file: [`config`] (settings and the one source of their defaults), `error`,
//! `change` (what sinks receive), `command` and `handle` (the calls), `actor` (the loop and
//! the emit path), `index` (the identity maps), `sessions` (applying events and discoveries),
//! `janitor` (stale sessions), `requests` (who waits for which pending request), `remote`
//! (sessions mirrored from other hosts, and decisions forwarded to them).
//!
//! Queues and their overflow policies:
//! - commands: bounded `mpsc` (`command_capacity`); callers wait (backpressure on adapters).
//! - changes: bounded `broadcast` (`broadcast_capacity`); a receiver that falls behind is told
//!   how many changes it missed (`Lagged`) and resynchronises from [`RegistryHandle::snapshot`].
//!   The actor never waits for a sink.
//!
//! Liveness work that touches `/proc` for many processes runs outside the actor
//! ([`RegistryHandle::cleanup_stale`]) so a large registry never stalls event handling. The
//! janitor's periodic pass is the fallback; seeing an exit at once is the job of
//! `crate::liveness::ExitWatcher`, a follower of the registry like a sink, which whoever
//! assembles a daemon starts next to it (the registry does not depend on its followers).

mod actor;
mod change;
mod command;
pub mod config;
mod error;
mod handle;
mod index;
mod janitor;
mod remote;
mod requests;
mod sessions;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use crate::event::Discovered;
pub use crate::limits;
pub use change::{ApplyOutcome, REKEYED, RequestChanges, SessionChange, SessionEvent, Snapshot};
pub use config::RegistryConfig;
pub use error::RegistryError;
pub use handle::RegistryHandle;
pub use janitor::Janitor;
pub use remote::{Mirror, REMOTE_DECISIONS, RemoteDecision};
pub use requests::{Awaiting, Decided};

use crate::persist;

/// The running registry: its handle, its task and its janitor.
pub struct Registry {
    pub handle: RegistryHandle,
    pub task: JoinHandle<()>,
    /// Removes dead and silent sessions; stopped by the token given to [`Registry::start_in`].
    pub janitor: Janitor,
}

impl Registry {
    /// [`Registry::start_in`] with a cancellation token of its own: the janitor stops when the
    /// registry does (or on [`Janitor::stop`]).
    pub async fn start(config: RegistryConfig) -> Registry {
        Self::start_in(config, &CancellationToken::new()).await
    }

    /// Loads the snapshot (keeping sessions whose process still lives) and starts the actor
    /// and its janitor, which stops when `cancel` is cancelled (it is a child of `cancel`).
    pub async fn start_in(config: RegistryConfig, cancel: &CancellationToken) -> Registry {
        let restored = match config.snapshot_path.clone() {
            Some(path) => {
                let proc_root = config.proc_root.clone();
                let expiry = config.silence_expiry;
                let max = config.max_sessions;
                tokio::task::spawn_blocking(move || persist::load(&path, &proc_root, expiry, max))
                    .await
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        if !restored.is_empty() {
            info!(sessions = restored.len(), "restored sessions from snapshot");
        }
        let (tx, rx) = mpsc::channel(config.command_capacity.max(1));
        let (events, _) = broadcast::channel(config.broadcast_capacity.max(1));
        let handle = RegistryHandle::new(
            tx,
            config.proc_root.clone(),
            config.silence_expiry,
            config.host.clone(),
        );
        let janitor_interval = config.cleanup_interval;
        let mut actor = actor::Actor::new(config, events);
        for s in restored {
            actor.restore(s);
        }
        let task = tokio::spawn(actor.run(rx));
        let janitor = Janitor::start(handle.clone(), janitor_interval, cancel.child_token());
        Registry {
            handle,
            task,
            janitor,
        }
    }
}
