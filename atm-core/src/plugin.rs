//! The plugin API: [`InputAdapter`] and [`OutputSink`], their contexts, and registration.
//!
//! A plugin is a crate that depends on `atm-core` only. It implements one trait and registers
//! itself with [`register_plugin!`](crate::register_plugin), which submits a
//! [`PluginRegistration`] to `inventory`. The daemon lists, validates and builds plugins from
//! those registrations; it never names a plugin type.
//!
//! Lifecycle: the daemon builds an instance from its config (the factory), calls `run` with a
//! context, and cancels the context's token to stop it. `run` returning an error (or returning
//! before cancellation) makes the daemon log it with the plugin's name and build a fresh instance
//! after a backoff; other plugins keep running.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{ControlBus, ControlRequest};
use crate::ingest::{IngestError, IngestHub};
use crate::ready::Readiness;
use crate::registry::RegistryHandle;

/// Input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    Adapter,
    Sink,
}

impl PluginKind {
    /// The table name in `plugins.toml`: `adapter` or `sink`.
    pub fn table(self) -> &'static str {
        match self {
            Self::Adapter => "adapter",
            Self::Sink => "sink",
        }
    }
}

/// A config that a plugin could not accept. `key` names the offending key when known, so the
/// daemon can point at its line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
    pub key: Option<String>,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            key: None,
        }
    }

    pub fn for_key(key: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            key: Some(key.to_owned()),
        }
    }
}

/// Deserializes a plugin's config table (without `type` and `name`). Plugins should mark their
/// config `#[serde(deny_unknown_fields)]` so a typo is an error, not a silent default.
pub fn parse_config<T: DeserializeOwned>(value: &toml::Value) -> Result<T, ConfigError> {
    value.clone().try_into::<T>().map_err(|e| {
        let message = e.message().trim().to_owned();
        match extract_key(&message) {
            Some(key) => ConfigError {
                message,
                key: Some(key),
            },
            // A value's own error (a duration out of range, a bad type) does not say whose
            // value it is: find the key and say it.
            None => match blame_key::<T>(value, &message) {
                Some(key) => ConfigError {
                    message: format!("`{key}`: {message}"),
                    key: Some(key),
                },
                None => ConfigError { message, key: None },
            },
        }
    })
}

/// The key a message without one is about (serde's "invalid type: integer `3`, expected a
/// string" names no key): the first key whose removal makes that error go away. Config tables
/// are a handful of keys, so trying each is cheap, and only done for an invalid config.
fn blame_key<T: DeserializeOwned>(value: &toml::Value, message: &str) -> Option<String> {
    let table = value.as_table()?;
    table
        .keys()
        .find(|key| {
            let mut rest = table.clone();
            rest.remove(key.as_str());
            match toml::Value::Table(rest).try_into::<T>() {
                Ok(_) => true,
                Err(e) => e.message().trim() != message,
            }
        })
        .cloned()
}

/// Pulls the key out of serde's "unknown field `x`" / "missing field `x`" / "... for key `x`".
fn extract_key(message: &str) -> Option<String> {
    for marker in [
        "unknown field `",
        "missing field `",
        "for key `",
        "duplicate field `",
    ] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            return rest.find('`').map(|end| rest[..end].to_owned());
        }
    }
    None
}

/// Errors a plugin's `run` returns.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something the plugin needs is not there yet (a D-Bus session bus, a server). The daemon
    /// retries with backoff and logs it once per outage, not as a failure.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl PluginError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<IngestError> for PluginError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Bind { path, source } => {
                PluginError::io(format!("cannot listen on {}", path.display()), source)
            }
            // Two adapters claiming one route on one socket is a configuration mistake.
            e @ IngestError::RouteTaken { .. } => {
                PluginError::Config(ConfigError::for_key("socket", e.to_string()))
            }
            e @ IngestError::InUse { .. } => PluginError::Other(e.to_string()),
        }
    }
}

/// Directories a plugin may use.
#[derive(Debug, Clone)]
pub struct PluginEnv {
    /// The daemon's runtime dir (sockets), already created `0700`.
    pub runtime_dir: PathBuf,
    /// The daemon's state dir.
    pub state_dir: PathBuf,
    /// Fires when the daemon recreated its runtime dir: a plugin that listens on a socket there
    /// binds it through [`crate::unix_socket::PrivateListener`] with this, and is found again.
    pub rebind: crate::unix_socket::RebindWatch,
    /// The running ingest adapters' counters (published by [`crate::ingest_adapter`], read by
    /// sinks that report them).
    pub ingest_stats: crate::ingest::IngestStatsBoard,
}

/// What an input adapter gets.
#[derive(Debug, Clone)]
pub struct AdapterContext {
    /// The instance name (`name` in its table, else its type).
    pub name: String,
    pub registry: RegistryHandle,
    pub cancel: CancellationToken,
    /// Shared ingest sockets: attach routes instead of binding your own socket.
    pub ingest: IngestHub,
    pub env: PluginEnv,
    control: ControlBus,
    ready: Readiness,
    /// The tasks this run started ([`AdapterContext::spawn`]); the daemon waits for them when
    /// the run ends.
    tasks: TaskTracker,
}

impl AdapterContext {
    pub fn new(
        name: String,
        registry: RegistryHandle,
        cancel: CancellationToken,
        ingest: IngestHub,
        control: ControlBus,
        env: PluginEnv,
    ) -> Self {
        Self {
            name,
            registry,
            cancel,
            ingest,
            env,
            control,
            ready: Readiness::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Says "I am serving": call it once the adapter takes input (its socket is bound, its
    /// file is open). [`AdapterContext::serve_ingest`] calls it for you. Whoever started the
    /// adapter (the supervisor, a test) awaits [`AdapterContext::readiness`] instead of polling.
    pub fn mark_ready(&self) {
        self.ready.mark_ready();
    }

    /// The readiness flag of this adapter, to await before talking to it.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Runs a task of the adapter's own (a connection, a reader) so that the daemon can wait
    /// for it: when the run ends, the daemon cancels `cancel` and waits for these tasks. Tasks
    /// must stop when `cancel` is cancelled.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// The tracker of the tasks [`AdapterContext::spawn`] started.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Serves `routes` on the shared ingest socket at `path` with `handler` until the adapter is
    /// cancelled: the whole life of an adapter whose input arrives on the ingest socket.
    pub async fn serve_ingest(
        &self,
        path: &std::path::Path,
        routes: &[&str],
        handler: std::sync::Arc<dyn crate::ingest::IngestHandler>,
    ) -> Result<(), PluginError> {
        let attachment = self.ingest.attach(path, routes, handler)?;
        self.mark_ready();
        tracing::info!(adapter = %self.name, socket = %path.display(), ?routes, "serving ingest routes");
        self.cancel.cancelled().await;
        drop(attachment);
        Ok(())
    }

    /// Starts receiving control requests (rescan). Adapters that never call this are never
    /// asked; keep the receiver for as long as you serve requests.
    pub fn control_requests(&self) -> mpsc::Receiver<ControlRequest> {
        self.control.receiver()
    }
}

/// What an output sink gets. Follow the registry with [`SinkContext::follow`] (a consistent
/// snapshot, then changes, a resync when the sink fell behind; see [`crate::registry_follow`]) and put a
/// [`crate::coalesce::SharedQueue`] before anything slower than the registry.
#[derive(Debug, Clone)]
pub struct SinkContext {
    pub name: String,
    pub registry: RegistryHandle,
    pub cancel: CancellationToken,
    /// Sends requests (rescan) to the adapters.
    pub control: ControlBus,
    pub env: PluginEnv,
}

/// An input plugin: turns some agent's signals into `AgentEvent`s on the registry.
#[async_trait]
pub trait InputAdapter: Send + 'static {
    /// Runs until `ctx.cancel` is cancelled (return `Ok(())` then) or fails.
    async fn run(self: Box<Self>, ctx: AdapterContext) -> Result<(), PluginError>;
}

/// An output plugin: tells people and programs about session changes.
#[async_trait]
pub trait OutputSink: Send + 'static {
    /// Runs until `ctx.cancel` is cancelled or the registry's change stream closes (flush what
    /// you have, then return `Ok(())`), or fails.
    async fn run(self: Box<Self>, ctx: SinkContext) -> Result<(), PluginError>;
}

pub type AdapterFactory = fn(&toml::Value) -> Result<Box<dyn InputAdapter>, ConfigError>;
pub type SinkFactory = fn(&toml::Value) -> Result<Box<dyn OutputSink>, ConfigError>;

/// How to build a plugin from its config table.
#[derive(Clone, Copy)]
pub enum PluginFactory {
    Adapter(AdapterFactory),
    Sink(SinkFactory),
}

/// One compiled-in plugin, as submitted to `inventory` by [`register_plugin!`](crate::register_plugin).
pub struct PluginRegistration {
    pub name: &'static str,
    pub description: &'static str,
    /// A complete `[[adapter]]`/`[[sink]]` block that the factory accepts.
    pub sample_config: &'static str,
    /// Optional plugins depend on something outside atm (a session bus): their failures are
    /// logged and retried but never alarm.
    pub optional: bool,
    pub factory: PluginFactory,
    /// Where the registration was written (`module_path!()` of the `register_plugin!` call: the
    /// crate, then the module), so that two plugins claiming one name can both be named.
    pub defined_in: &'static str,
}

impl PluginRegistration {
    pub fn kind(&self) -> PluginKind {
        match self.factory {
            PluginFactory::Adapter(_) => PluginKind::Adapter,
            PluginFactory::Sink(_) => PluginKind::Sink,
        }
    }
}

inventory::collect!(PluginRegistration);

/// Every plugin linked into this binary, sorted by kind then name.
pub fn registered() -> Vec<&'static PluginRegistration> {
    let mut all: Vec<_> = inventory::iter::<PluginRegistration>.into_iter().collect();
    all.sort_by_key(|p| (p.kind(), p.name));
    all
}

/// Two linked plugins that register the same kind and name: the daemon could not tell which one
/// a config block means, so it refuses to start rather than pick one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "two plugins register {kind} `{name}`: one in `{first}`, one in `{second}`; link only one \
     of them, or give one another name in its register_plugin!",
    kind = kind.table()
)]
pub struct DuplicatePlugin {
    pub kind: PluginKind,
    pub name: &'static str,
    pub first: &'static str,
    pub second: &'static str,
}

/// Checks that no two linked plugins share a kind and name. The daemon calls this before
/// anything else; [`find`] would otherwise silently take one of them.
pub fn check_unique() -> Result<(), DuplicatePlugin> {
    unique(&registered())
}

fn unique(sorted: &[&'static PluginRegistration]) -> Result<(), DuplicatePlugin> {
    for pair in sorted.windows(2) {
        if let [a, b] = pair
            && a.kind() == b.kind()
            && a.name == b.name
        {
            let (first, second) = if a.defined_in <= b.defined_in {
                (a.defined_in, b.defined_in)
            } else {
                (b.defined_in, a.defined_in)
            };
            return Err(DuplicatePlugin {
                kind: a.kind(),
                name: a.name,
                first,
                second,
            });
        }
    }
    Ok(())
}

/// Finds a compiled-in plugin by kind and name.
pub fn find(kind: PluginKind, name: &str) -> Option<&'static PluginRegistration> {
    inventory::iter::<PluginRegistration>
        .into_iter()
        .find(|p| p.kind() == kind && p.name == name)
}

/// Registers a plugin with the daemon.
///
/// ```ignore
/// atm_core::register_plugin! {
///     adapter "claude-hooks",
///     description: "Claude Code hook events from atm-hook",
///     sample_config: include_str!("../sample.toml"),
///     factory: |cfg| Ok(Box::new(ClaudeHooksAdapter::new(atm_core::plugin::parse_config(cfg)?))),
/// }
/// ```
/// Use `sink "name"` for an output plugin, and `optional: true,` after the sample for plugins
/// that depend on something outside atm.
#[macro_export]
macro_rules! register_plugin {
    (adapter $name:literal, $($rest:tt)*) => {
        $crate::register_plugin!(@submit Adapter $name, $($rest)*);
    };
    (sink $name:literal, $($rest:tt)*) => {
        $crate::register_plugin!(@submit Sink $name, $($rest)*);
    };
    (@submit $kind:ident $name:literal, description: $desc:expr, sample_config: $sample:expr, $(optional: $opt:expr,)? factory: $factory:expr $(,)?) => {
        $crate::inventory::submit! {
            $crate::plugin::PluginRegistration {
                name: $name,
                description: $desc,
                sample_config: $sample,
                optional: $crate::register_plugin!(@optional $($opt)?),
                factory: $crate::plugin::PluginFactory::$kind($factory),
                defined_in: ::core::module_path!(),
            }
        }
    };
    (@optional) => { false };
    (@optional $opt:expr) => { $opt };
}

/// Serde helpers for config durations ([`crate::duration`]), under the path plugin configs
/// name in their serde attributes (`atm_core::plugin::duration::Within::<..>`).
pub use crate::duration;

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DemoConfig {
        #[serde(with = "duration", default = "two_secs")]
        interval: std::time::Duration,
        #[allow(dead_code)]
        socket: Option<String>,
    }

    fn two_secs() -> std::time::Duration {
        std::time::Duration::from_secs(2)
    }

    fn table(s: &str) -> toml::Value {
        toml::Value::Table(toml::from_str(s).unwrap())
    }

    fn registration(name: &'static str, defined_in: &'static str) -> PluginRegistration {
        PluginRegistration {
            name,
            description: "",
            sample_config: "",
            optional: false,
            factory: PluginFactory::Sink(|_| Err(ConfigError::new("test"))),
            defined_in,
        }
    }

    #[test]
    fn two_plugins_with_one_name_are_refused_naming_both() {
        let a = Box::leak(Box::new(registration("web", "crate_b::plugin")));
        let b = Box::leak(Box::new(registration("web", "crate_a")));
        let c = Box::leak(Box::new(registration("zz", "crate_c")));
        let err = unique(&[a, b, c]).unwrap_err();
        assert_eq!((err.first, err.second), ("crate_a", "crate_b::plugin"));
        let message = err.to_string();
        assert!(message.contains("sink `web`"), "{message}");
        assert!(message.contains("`crate_a`") && message.contains("`crate_b::plugin`"));
        assert_eq!(unique(&[a, c]), Ok(()));
        // The plugins linked into this test binary are unique.
        assert_eq!(check_unique(), Ok(()));
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = parse_config::<DemoConfig>(&table("intervl = \"3s\"")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("intervl"));
        assert!(err.message.contains("interval"), "{}", err.message);
    }

    #[test]
    fn durations_parse_and_bad_ones_explain() {
        let ok = parse_config::<DemoConfig>(&table("interval = \"500ms\"")).unwrap();
        assert_eq!(ok.interval, std::time::Duration::from_millis(500));
        let dflt = parse_config::<DemoConfig>(&table("")).unwrap();
        assert_eq!(dflt.interval, two_secs());
        let err = parse_config::<DemoConfig>(&table("interval = \"soon\"")).unwrap_err();
        assert!(err.message.contains("invalid duration"), "{}", err.message);
        let err = parse_config::<DemoConfig>(&table("interval = 5")).unwrap_err();
        assert!(err.message.contains("invalid type"), "{}", err.message);
        // serde names no key for a wrong type; the key is found all the same.
        assert_eq!(err.key.as_deref(), Some("interval"));
        let err = parse_config::<DemoConfig>(&table("socket = \"s\"\ninterval = [1]")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("interval"));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RangedConfig {
        #[serde(with = "duration::Within::<100, 3_600_000>")]
        timeout: std::time::Duration,
    }

    #[test]
    fn ranged_durations_refuse_what_would_overflow_and_name_key_range_and_example() {
        let ok = parse_config::<RangedConfig>(&table("timeout = \"1h\"")).unwrap();
        assert_eq!(ok.timeout, std::time::Duration::from_secs(3600));
        for bad in ["300000000000y", "1h 1ms", "99ms", "0s"] {
            let err =
                parse_config::<RangedConfig>(&table(&format!("timeout = \"{bad}\""))).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("timeout"), "{bad}: {err:?}");
            for part in [
                "`timeout`",
                "out of range",
                "from 100ms to 1h",
                "e.g. \"10s\"",
            ] {
                assert!(err.message.contains(part), "{bad}: {}", err.message);
            }
        }
    }

    #[tokio::test]
    async fn deadlines_saturate_instead_of_overflowing() {
        let now = tokio::time::Instant::now();
        let far = duration::deadline_after(now, std::time::Duration::MAX);
        assert!(far > now + std::time::Duration::from_secs(3600 * 24 * 365));
        let near = duration::deadline_after(now, std::time::Duration::from_secs(1));
        assert_eq!(near, now + std::time::Duration::from_secs(1));
    }
}
