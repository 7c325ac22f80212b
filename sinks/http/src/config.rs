//! The `http` sink's configuration: where it listens, where its token lives, and the limits
//! that bound what one client (or a thousand) can make it hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atm_core::coalesce::{Overflow, QueuePolicy, ResyncAt};
use atm_core::plugin::{ConfigError, duration};
use serde::{Deserialize, Serialize};

/// The port of the default address: the board lives at `http://127.0.0.1:7378/`.
pub const DEFAULT_PORT: u16 = 7378;

/// hyper's smallest read buffer: a header limit below it cannot be honoured.
const MIN_HEADER_BYTES: usize = 8192;

/// Configuration of the `http` sink. Every key is optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// TCP address to listen on (`host:port`); `""` for none (a Unix socket only). Default
    /// `127.0.0.1:7378`: loopback, so only this machine reaches it (and its other users, which is
    /// why every endpoint but `/healthz` needs the token).
    pub listen: String,
    /// A Unix socket to listen on as well, for a reverse proxy (`~/` and `$VAR` expanded);
    /// created `0600`, and only this user's connections are served. Default: none.
    pub unix_socket: Option<String>,
    /// Where the token is kept (`~/` and `$VAR` expanded). Default: `<state dir>/web-token`.
    pub token_file: Option<String>,
    /// Open connections at most (1 to 65536); more are closed at once.
    pub max_clients: usize,
    /// Changes queued per live-stream client before they coalesce per session (1 to 4096).
    pub client_queue: usize,
    /// Sessions a lagging live-stream client may have coalesced before it gets a fresh snapshot
    /// instead (1 to 65536).
    pub client_coalesced: usize,
    /// Largest request body accepted (256 B to 1 MiB); larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) accepted (8 KiB to 1 MiB); larger
    /// ones get 431.
    pub max_header_bytes: usize,
    /// A client that has not sent its request head within this is disconnected (100 ms to 10 min).
    #[serde(with = "duration::Within::<100, 600_000>")]
    pub header_timeout: Duration,
    /// A comment line sent on idle live streams this often, so proxies keep them open (1 s to 1 h).
    #[serde(with = "duration::Within::<1000, 3_600_000>")]
    pub keepalive: Duration,
    /// Sessions with series of their own on `/metrics` (cost, context, wait) at most (1 to
    /// 1000): the waiting ones first, then the most recently active; the rest are counted in
    /// `atm_session_series_omitted`. Bounds what a scrape stores.
    pub max_session_series: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            unix_socket: None,
            token_file: None,
            max_clients: 1100,
            client_queue: 32,
            client_coalesced: 64,
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            max_session_series: crate::metrics::DEFAULT_SESSION_SERIES,
        }
    }
}

impl HttpConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.tcp_address()?;
        for (key, value, min, max) in [
            ("max_clients", self.max_clients, 1, 65_536),
            ("client_queue", self.client_queue, 1, 4096),
            ("client_coalesced", self.client_coalesced, 1, 65_536),
            (
                "max_session_series",
                self.max_session_series,
                1,
                crate::metrics::MAX_SESSION_SERIES,
            ),
            ("max_body_bytes", self.max_body_bytes, 256, 1 << 20),
            (
                "max_header_bytes",
                self.max_header_bytes,
                MIN_HEADER_BYTES,
                1 << 20,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::for_key(
                    key,
                    format!("`{key}` = {value} is out of range: use a number from {min} to {max}"),
                ));
            }
        }
        if self.tcp_address()?.is_none() && self.unix_socket.is_none() {
            return Err(ConfigError::for_key(
                "listen",
                "`listen` is empty and there is no `unix_socket`: the sink would serve nothing; \
                 set one of them",
            ));
        }
        Ok(())
    }

    /// The TCP address, `None` when `listen` is empty.
    pub fn tcp_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            ConfigError::for_key(
                "listen",
                format!(
                    "`listen` = {listen:?} is not an address: use host:port with an IP, \
                     e.g. \"127.0.0.1:{DEFAULT_PORT}\" or \"[::1]:{DEFAULT_PORT}\""
                ),
            )
        })
    }

    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        self.unix_socket.as_deref().map(atm_core::paths::expand)
    }

    pub fn token_path(&self, state_dir: &Path) -> PathBuf {
        match &self.token_file {
            Some(p) => atm_core::paths::expand(p),
            None => state_dir.join(atm_core::paths::WEB_TOKEN_FILE),
        }
    }

    /// Each live-stream client's queue: `client_queue` changes in order, then the latest per
    /// session for up to `client_coalesced` sessions, then a resync: everything pending is
    /// dropped and the client gets a fresh snapshot when it next reads. A stuck client thus
    /// holds at most `client_queue + client_coalesced` shared frames, and never slows the
    /// fan-out or another client.
    pub(crate) fn client_policy(&self) -> QueuePolicy {
        QueuePolicy {
            ordered: self.client_queue,
            max_keys: self.client_coalesced,
            max_age: Some(Duration::from_secs(5)),
            on_overflow: Overflow::Resync,
            resync: ResyncAt::Now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_and_limits_are_refused_naming_the_key() {
        let ok = HttpConfig::default();
        assert!(ok.validate().is_ok());
        let bad = HttpConfig {
            listen: "localhost".into(),
            ..HttpConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key.as_deref(), Some("listen"));
        let none = HttpConfig {
            listen: String::new(),
            ..HttpConfig::default()
        };
        assert!(none.validate().is_err());
        let unix_only = HttpConfig {
            listen: String::new(),
            unix_socket: Some("/tmp/x.sock".into()),
            ..HttpConfig::default()
        };
        assert!(unix_only.validate().is_ok());
        let small = HttpConfig {
            max_header_bytes: 100,
            ..HttpConfig::default()
        };
        assert_eq!(
            small.validate().unwrap_err().key.as_deref(),
            Some("max_header_bytes")
        );
    }
}
