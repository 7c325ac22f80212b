//! The NATS connection the `nats` sink and adapter share: where, as whom, over what.
//!
//! Secrets come from files named in the config, never from the config itself: a
//! `plugins.toml` gets copied, pasted into issues and backed up; a file with mode `0600` does
//! not. The client reconnects by itself (every server of `servers` in turn, a short capped
//! delay between tries); the returned [`watch`](tokio::sync::watch) counts connections, so a
//! plugin sees every reconnect and can resynchronise.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::paths::expand;
use crate::plugin::{ConfigError, PluginError};

/// Where and how to reach NATS. The same keys for the `nats` sink and adapter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConnection {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); several for a cluster.
    pub servers: Vec<String>,
    /// The key-value bucket holding every host's sessions.
    pub bucket: String,
    /// The first token of the subjects answers travel on (`<prefix>.<host>.decide`).
    pub subject_prefix: String,
    /// User name, with its password in `password_file`.
    pub user: Option<String>,
    pub password_file: Option<String>,
    /// A file holding a token.
    pub token_file: Option<String>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_file: Option<String>,
    /// A `.creds` file (a user JWT and its seed, as `nsc` writes them).
    pub creds_file: Option<String>,
    /// A CA certificate (PEM) to verify the servers with; implies TLS.
    pub tls_ca_file: Option<String>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// Require TLS even without a CA file (the system's roots verify the server).
    pub tls_required: bool,
    /// The prefix of this client's reply subjects (default `_INBOX`). Give each host its own
    /// (`_INBOX_devbox`), so that its permissions to receive replies cover nobody else's.
    pub inbox_prefix: Option<String>,
    /// How long a request (a key-value write, an answer) may take before it fails.
    #[serde(with = "crate::duration")]
    pub request_timeout: Duration,
}

impl Default for NatsConnection {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            bucket: "atm".to_owned(),
            subject_prefix: "atm".to_owned(),
            user: None,
            password_file: None,
            token_file: None,
            nkey_file: None,
            creds_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            inbox_prefix: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsConnection {
    /// Every key of this table, for plugins that take them beside keys of their own.
    pub const KEYS: &'static [&'static str] = &[
        "servers",
        "bucket",
        "subject_prefix",
        "user",
        "password_file",
        "token_file",
        "nkey_file",
        "creds_file",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_required",
        "inbox_prefix",
        "request_timeout",
    ];

    /// Splits a plugin's table into these keys and the plugin's own, parses these and checks
    /// them (one way to authenticate, names NATS accepts). The rest is the plugin's to parse.
    pub fn split(value: &toml::Value) -> Result<(Self, toml::Value), ConfigError> {
        let (conn, own) = split_keys(value, Self::KEYS);
        let parsed: Self = crate::plugin::parse_config(&conn)?;
        parsed.check()?;
        Ok((parsed, own))
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::for_key("servers", "name at least one server"));
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token_ok(&self.bucket) {
            return Err(ConfigError::for_key(
                "bucket",
                "a bucket name is letters, digits, `-` and `_`",
            ));
        }
        if !token_ok(&self.subject_prefix) {
            return Err(ConfigError::for_key(
                "subject_prefix",
                "the prefix is one subject token: letters, digits, `-` and `_`",
            ));
        }
        let ways = [
            self.user.is_some(),
            self.token_file.is_some(),
            self.nkey_file.is_some(),
            self.creds_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(ConfigError::for_key(
                "user",
                "set one way to authenticate: `user` + `password_file`, `token_file`, \
                 `nkey_file` or `creds_file`",
            ));
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(ConfigError::for_key(
                "password_file",
                "`user` and `password_file` go together",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::for_key(
                "tls_key_file",
                "`tls_cert_file` and `tls_key_file` go together",
            ));
        }
        if let Some(p) = &self.inbox_prefix
            && (p.is_empty()
                || !p.split('.').all(|t| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }))
        {
            return Err(ConfigError::for_key(
                "inbox_prefix",
                "a subject without wildcards, e.g. `_INBOX_devbox`",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::for_key(
                "request_timeout",
                "must be above zero",
            ));
        }
        Ok(())
    }
}

/// `value`'s table split into the entries named in `keys` and the rest.
fn split_keys(value: &toml::Value, keys: &[&str]) -> (toml::Value, toml::Value) {
    let mut taken = toml::Table::new();
    let mut rest = toml::Table::new();
    if let Some(t) = value.as_table() {
        for (k, v) in t {
            if keys.contains(&k.as_str()) {
                taken.insert(k.clone(), v.clone());
            } else {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    (toml::Value::Table(taken), toml::Value::Table(rest))
}

/// Whether a plugin creates the bucket when it is missing, and with how many replicas. The
/// same keys for the `nats` sink and adapter, taken beside [`NatsConnection`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketCreation {
    /// Create the bucket when it is missing (default on).
    pub create_bucket: bool,
    /// Replicas of a bucket this plugin creates (default 1, at most 5).
    pub replicas: usize,
}

impl Default for BucketCreation {
    fn default() -> Self {
        Self {
            create_bucket: true,
            replicas: 1,
        }
    }
}

impl BucketCreation {
    /// Every key of this table.
    pub const KEYS: &'static [&'static str] = &["create_bucket", "replicas"];

    /// Like [`NatsConnection::split`]: these keys parsed and checked, and the rest.
    pub fn split(value: &toml::Value) -> Result<(Self, toml::Value), ConfigError> {
        let (taken, rest) = split_keys(value, Self::KEYS);
        let parsed: Self = crate::plugin::parse_config(&taken)?;
        if !(1..=5).contains(&parsed.replicas) {
            return Err(ConfigError::for_key("replicas", "use 1 to 5"));
        }
        Ok((parsed, rest))
    }

    /// What [`open_bucket`] creates a missing bucket with; `None` where it may not.
    pub fn settings(&self) -> Option<BucketSettings> {
        self.create_bucket.then_some(BucketSettings {
            replicas: self.replicas,
        })
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read the {what} file {path}: {source}")]
    Secret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} file {path} is empty")]
    EmptySecret { what: &'static str, path: PathBuf },
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    /// True when the server is not there (yet): worth retrying quietly, not an error. A
    /// server that answers but whose TLS handshake fails (a certificate not trusted, no client
    /// certificate) is there: that needs the user, like a refused secret.
    pub fn is_unavailable(&self) -> bool {
        let Self::Connect { source, .. } = self else {
            return false;
        };
        match source.kind() {
            async_nats::ConnectErrorKind::Io => !failed_handshake(source),
            async_nats::ConnectErrorKind::TimedOut | async_nats::ConnectErrorKind::Dns => true,
            _ => false,
        }
    }
}

/// The client reports a TLS handshake the server or the client refused as an I/O error of kind
/// `InvalidData` (rustls's error inside); a server that is down or unreachable is another kind.
fn failed_handshake(e: &async_nats::ConnectError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}

fn read_secret(what: &'static str, path: &str) -> Result<String, ConnectError> {
    let path = expand(path);
    let text = std::fs::read_to_string(&path).map_err(|source| ConnectError::Secret {
        what,
        path: path.clone(),
        source,
    })?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(ConnectError::EmptySecret { what, path });
    }
    Ok(text)
}

/// Connects as `name` (shown by the server's monitoring). Returns the client and a count of
/// its connections that changes at every (re)connect.
pub async fn connect(
    cfg: &NatsConnection,
    name: &str,
) -> Result<(async_nats::Client, watch::Receiver<u64>), ConnectError> {
    let mut opts = async_nats::ConnectOptions::new();
    if let (Some(user), Some(file)) = (&cfg.user, &cfg.password_file) {
        opts = opts.user_and_password(user.clone(), read_secret("password", file)?);
    }
    if let Some(file) = &cfg.token_file {
        opts = opts.token(read_secret("token", file)?);
    }
    if let Some(file) = &cfg.nkey_file {
        opts = opts.nkey(read_secret("nkey seed", file)?);
    }
    if let Some(file) = &cfg.creds_file {
        let creds = read_secret("credentials", file)?;
        opts = opts
            .credentials(&creds)
            .map_err(|source| ConnectError::Secret {
                what: "credentials",
                path: expand(file),
                source,
            })?;
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(expand(ca)).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(expand(cert), expand(key));
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(prefix) = &cfg.inbox_prefix {
        opts = opts.custom_inbox_prefix(prefix);
    }
    let (tx, rx) = watch::channel(0u64);
    let opts = opts
        .name(name)
        .connection_timeout(cfg.request_timeout)
        .request_timeout(Some(cfg.request_timeout))
        // Keep trying for ever, every server in turn, at most 2 s apart: a hub must come back
        // by itself after any outage, and soon.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).min(2_000))
        })
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tx.send_modify(|n| *n += 1);
                        tracing::info!("nats: connected");
                    }
                    async_nats::Event::Disconnected => tracing::info!("nats: disconnected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        });
    let client =
        opts.connect(cfg.servers.clone())
            .await
            .map_err(|source| ConnectError::Connect {
                servers: cfg.servers.join(", "),
                source,
            })?;
    Ok((client, rx))
}

impl From<ConnectError> for PluginError {
    /// As the supervisor should hear it: a server that is not there is "not yet" (retried
    /// quietly), anything else (a bad secret file) an error.
    fn from(e: ConnectError) -> Self {
        if e.is_unavailable() {
            PluginError::Unavailable(e.to_string())
        } else {
            PluginError::Other(e.to_string())
        }
    }
}

/// What a `nats` plugin starts from: a client, its count of connections (see [`connect`]) and
/// the open bucket.
pub struct Opened {
    pub client: async_nats::Client,
    pub connects: watch::Receiver<u64>,
    pub store: async_nats::jetstream::kv::Store,
}

/// A plugin's start: connects as `client_name` and opens the bucket (creating it as
/// `creation` allows), with errors as the supervisor should hear them. `None` when `cancel`
/// fires first.
pub async fn connect_and_open(
    cfg: &NatsConnection,
    creation: &BucketCreation,
    client_name: &str,
    cancel: &CancellationToken,
) -> Result<Option<Opened>, PluginError> {
    let connected = tokio::select! {
        () = cancel.cancelled() => return Ok(None),
        c = connect(cfg, client_name) => c,
    };
    let (client, connects) = connected?;
    let opened = tokio::select! {
        () = cancel.cancelled() => return Ok(None),
        s = open_bucket(&client, cfg, creation.settings()) => s,
    };
    let store = opened.map_err(|e| PluginError::Unavailable(e.to_string()))?;
    Ok(Some(Opened {
        client,
        connects,
        store,
    }))
}

/// Why the bucket could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error(
        "the key-value bucket {bucket} does not exist and this plugin may not create it \
         (`create_bucket = false`): create it, or let a hub with `create_bucket = true` do so"
    )]
    Missing { bucket: String },
    #[error("cannot open the key-value bucket {bucket}: {message}")]
    Open { bucket: String, message: String },
    #[error("cannot list the keys of host {host} in bucket {bucket}: {message}")]
    List {
        bucket: String,
        host: String,
        message: String,
    },
}

/// The bucket's settings when a plugin creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSettings {
    /// Copies kept in a JetStream cluster (1 for a single server, 3 for a 3-node cluster).
    pub replicas: usize,
}

/// Opens the bucket, creating it (`create: Some`) when it does not exist. One value per key
/// (no history: only the latest view matters), values capped at [`super::MAX_ENTRY`], kept on
/// disk so a server restart keeps every host's view.
pub async fn open_bucket(
    client: &async_nats::Client,
    cfg: &NatsConnection,
    create: Option<BucketSettings>,
) -> Result<async_nats::jetstream::kv::Store, BucketError> {
    use async_nats::jetstream::context::KeyValueErrorKind;
    let js = async_nats::jetstream::new(client.clone());
    let open_err = |e: &dyn std::fmt::Display| BucketError::Open {
        bucket: cfg.bucket.clone(),
        message: e.to_string(),
    };
    match js.get_key_value(cfg.bucket.clone()).await {
        Ok(store) => return Ok(store),
        Err(e) if e.kind() == KeyValueErrorKind::GetBucket && create.is_some() => {}
        Err(e) if e.kind() == KeyValueErrorKind::GetBucket => {
            return Err(BucketError::Missing {
                bucket: cfg.bucket.clone(),
            });
        }
        Err(e) => return Err(open_err(&e)),
    }
    let settings = create.unwrap_or(BucketSettings { replicas: 1 });
    // The stream a key-value bucket is, as the client's `create_key_value` would make it.
    // Made by hand because that call first reads the account's JetStream info in a shape
    // servers before 2.10 do not send (Debian 12 ships 2.9).
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name: format!("KV_{}", cfg.bucket),
        description: Some("atm: every host's agent sessions".to_owned()),
        subjects: vec![format!("$KV.{}.>", cfg.bucket)],
        max_messages_per_subject: 1,
        max_message_size: i32::try_from(super::MAX_ENTRY).unwrap_or(i32::MAX),
        storage: stream::StorageType::File,
        num_replicas: settings.replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    if let Err(e) = js.create_stream(config).await {
        // Another plugin may have created it meanwhile: opening tells.
        tracing::debug!(error = %e, "nats: creating the bucket failed");
    }
    js.get_key_value(cfg.bucket.clone())
        .await
        .map_err(|e| open_err(&e))
}

/// The keys `host` holds in the bucket now (deleted ones left out): what a host that starts
/// over compares with what it has, to delete what ended while it was away.
pub async fn host_keys(
    store: &async_nats::jetstream::kv::Store,
    client: &async_nats::Client,
    host: &crate::host::HostId,
    timeout: Duration,
) -> Result<std::collections::HashSet<String>, BucketError> {
    use futures_util::StreamExt;
    let list_err = |message: String| BucketError::List {
        bucket: store.name.clone(),
        host: host.to_string(),
        message,
    };
    let filter = format!("{}{host}.", store.prefix);
    // A named consumer is created on a subject that names its filter
    // (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`), so a host's permissions can allow
    // listing its own keys and nobody else's.
    let name = crate::request::RequestId::generate()
        .map(|r| format!("atm-keys-{host}-{r}"))
        .map_err(|e| list_err(format!("no random name: {e}")))?;
    let consumer = store
        .stream
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            name: Some(name),
            deliver_subject: client.new_inbox(),
            filter_subject: format!("{filter}>"),
            headers_only: true,
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| list_err(e.to_string()))?;
    let mut pending = consumer.cached_info().num_pending;
    let mut keys = std::collections::HashSet::new();
    if pending == 0 {
        return Ok(keys);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| list_err(e.to_string()))?;
    let read = async {
        while pending > 0 {
            let Some(m) = messages.next().await else {
                return Err(list_err("the listing ended early".to_owned()));
            };
            let m = m.map_err(|e| list_err(e.to_string()))?;
            pending -= 1;
            let deleted = m
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            if let Some(key) = m.subject.as_str().strip_prefix(&store.prefix)
                && !deleted
            {
                keys.insert(key.to_owned());
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| list_err(format!("no answer within {timeout:?}")))??;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(toml: &str) -> Result<(NatsConnection, toml::Value), ConfigError> {
        NatsConnection::split(&toml::from_str::<toml::Value>(toml).unwrap())
    }

    #[test]
    fn connection_keys_are_split_from_the_plugins_own() {
        let (c, own) =
            split("servers = [\"nats://a:1\"]\nbucket = \"fleet\"\nheartbeat = \"2s\"").unwrap();
        assert_eq!(c.servers, ["nats://a:1"]);
        assert_eq!(c.bucket, "fleet");
        assert_eq!(own.as_table().unwrap().len(), 1);
        assert_eq!(split("").unwrap().0, NatsConnection::default());
    }

    #[test]
    fn bucket_creation_keys_are_split_from_the_plugins_own() {
        let value = toml::from_str("replicas = 3\nheartbeat = \"2s\"").unwrap();
        let (b, own) = BucketCreation::split(&value).unwrap();
        assert_eq!(
            b,
            BucketCreation {
                create_bucket: true,
                replicas: 3
            }
        );
        assert_eq!(b.settings(), Some(BucketSettings { replicas: 3 }));
        assert_eq!(own.as_table().unwrap().len(), 1);
        let value = toml::from_str("create_bucket = false").unwrap();
        assert_eq!(BucketCreation::split(&value).unwrap().0.settings(), None);
        for bad in ["replicas = 0", "replicas = 6"] {
            let e = BucketCreation::split(&toml::from_str(bad).unwrap()).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("replicas"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_connections_name_their_key() {
        for (toml, key) in [
            ("servers = []", "servers"),
            ("bucket = \"a.b\"", "bucket"),
            ("subject_prefix = \"a.>\"", "subject_prefix"),
            ("user = \"u\"", "password_file"),
            (
                "user = \"u\"\npassword_file = \"p\"\ntoken_file = \"t\"",
                "user",
            ),
            ("tls_cert_file = \"c\"", "tls_key_file"),
            ("request_timeout = \"0s\"", "request_timeout"),
            ("servers = 3", "servers"),
        ] {
            let e = split(toml).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{toml}: {e}");
        }
    }

    #[tokio::test]
    async fn a_missing_or_empty_secret_file_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let mut cfg = NatsConnection {
            token_file: Some(dir.path().join("nope").display().to_string()),
            ..Default::default()
        };
        let e = connect(&cfg, "t").await.unwrap_err();
        assert!(
            e.to_string().contains("token file") && e.to_string().contains("nope"),
            "{e}"
        );
        cfg.token_file = Some(empty.display().to_string());
        let e = connect(&cfg, "t").await.unwrap_err();
        assert!(matches!(e, ConnectError::EmptySecret { .. }), "{e}");
    }
}
