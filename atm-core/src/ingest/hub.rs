//! The ingest hub: one listener per socket path, shared by every adapter that attaches routes
//! to it. The first attachment binds the socket; dropping the last one closes and removes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::connection::accept_loop;
use super::{IngestError, IngestHandler, IngestLimits, Routes};
use crate::unix_socket::{BindError, PrivateListener, RebindWatch};

struct Listener {
    path: PathBuf,
    routes: Arc<Routes>,
    cancel: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            debug!(path = %self.path.display(), error = %e, "cannot remove ingest socket");
        }
        info!(path = %self.path.display(), "ingest socket closed");
    }
}

/// Keeps routes attached; dropping it detaches them (and closes the socket if it was the last).
pub struct IngestAttachment {
    listener: Arc<Listener>,
    routes: Vec<String>,
}

impl IngestAttachment {
    pub fn path(&self) -> &Path {
        &self.listener.path
    }
}

impl Drop for IngestAttachment {
    fn drop(&mut self) {
        if let Ok(mut r) = self.listener.routes.write() {
            for route in &self.routes {
                r.remove(route);
            }
        }
    }
}

/// The daemon's registry of ingest sockets, shared by every adapter's context.
#[derive(Clone, Default)]
pub struct IngestHub {
    listeners: Arc<Mutex<HashMap<PathBuf, Weak<Listener>>>>,
    limits: IngestLimits,
    rebind: RebindWatch,
}

impl std::fmt::Debug for IngestHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngestHub")
    }
}

impl IngestHub {
    pub fn new(limits: IngestLimits) -> Self {
        Self {
            listeners: Arc::default(),
            limits,
            rebind: RebindWatch::default(),
        }
    }

    /// Lets every socket of the hub bind its path again when the daemon says its runtime dir
    /// was recreated ([`crate::unix_socket::RebindSignal`]).
    pub fn with_rebind(mut self, rebind: RebindWatch) -> Self {
        self.rebind = rebind;
        self
    }

    /// Serves `routes` on the socket at `path` with `handler`, binding the socket if no other
    /// adapter has yet.
    pub fn attach(
        &self,
        path: &Path,
        routes: &[&str],
        handler: Arc<dyn IngestHandler>,
    ) -> Result<IngestAttachment, IngestError> {
        let mut listeners = match self.listeners.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let listener = match listeners.get(path).and_then(Weak::upgrade) {
            Some(l) => l,
            None => {
                let l = Arc::new(self.bind(path)?);
                listeners.insert(path.to_owned(), Arc::downgrade(&l));
                l
            }
        };
        listeners.retain(|_, w| w.strong_count() > 0);
        let mut table = match listener.routes.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(taken) = routes.iter().find(|r| table.contains_key(**r)) {
            return Err(IngestError::RouteTaken {
                route: (*taken).to_owned(),
                path: path.to_owned(),
            });
        }
        for r in routes {
            table.insert((*r).to_owned(), handler.clone());
        }
        drop(table);
        Ok(IngestAttachment {
            listener,
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    fn bind(&self, path: &Path) -> Result<Listener, IngestError> {
        let socket = PrivateListener::bind(path, self.rebind.clone()).map_err(|e| match e {
            BindError::InUse => IngestError::InUse {
                path: path.to_owned(),
            },
            BindError::Io(source) => IngestError::Bind {
                path: path.to_owned(),
                source,
            },
        })?;
        info!(path = %path.display(), "ingest socket listening");
        let routes: Arc<Routes> = Arc::default();
        let cancel = CancellationToken::new();
        tokio::spawn(accept_loop(
            socket,
            Arc::downgrade(&routes),
            cancel.clone(),
            self.limits,
        ));
        Ok(Listener {
            path: path.to_owned(),
            routes,
            cancel,
        })
    }
}
