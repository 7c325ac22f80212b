//! `plugins.toml`: finding it, parsing it, and validating every plugin block against the
//! compiled-in plugins.
//!
//! Errors name the file, line and column, and list what is allowed (plugin names or keys). The
//! whole file is validated, including building every plugin from its block, before anything
//! starts, so `atmd check-config` and a SIGHUP reload reject exactly what a start would reject.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atm_core::RegistryConfig;
use atm_core::plugin::{self, PluginFactory, PluginKind, PluginRegistration};
use serde::Deserialize;
use toml::Spanned;

/// The repository's `plugins.toml`, compiled in: what runs when no file is found.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../plugins.toml");

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Embedded => f.write_str("<embedded default plugins.toml>"),
        }
    }
}

/// Resolution order: `--config`, `$ATM_CONFIG`, `$XDG_CONFIG_HOME/atm/plugins.toml` (else
/// `~/.config/atm/plugins.toml`) if it exists, then the embedded default.
pub fn resolve(cli: Option<&Path>) -> ConfigSource {
    if let Some(p) = cli {
        return ConfigSource::File(p.to_owned());
    }
    if let Some(p) = std::env::var_os("ATM_CONFIG").filter(|v| !v.is_empty()) {
        return ConfigSource::File(PathBuf::from(p));
    }
    if let Some(dir) = atm_core::paths::default_config_dir() {
        let p = dir.join("plugins.toml");
        if p.is_file() {
            return ConfigSource::File(p);
        }
    }
    ConfigSource::Embedded
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}:{line}:{column}: {message}")]
    At {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Whole {
        source_name: String,
        message: String,
    },
}

/// `[daemon]`: settings of the daemon itself.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// Runtime dir for sockets and the lock (default `$XDG_RUNTIME_DIR/atm` or `/tmp/atm-$UID`).
    pub runtime_dir: Option<String>,
    /// State dir for the session snapshot (default `$XDG_STATE_HOME/atm`).
    pub state_dir: Option<String>,
    /// Log filter when `RUST_LOG` is not set (default `info`).
    pub log: Option<String>,
    /// Most sessions the registry holds (default 10000, from 1 to 1000000).
    pub max_sessions: Option<usize>,
    /// Sessions with no process to watch expire after this silence (default `30min`).
    pub session_expiry: Option<String>,
    /// How often dead processes are looked for (default `5s`).
    pub cleanup_interval: Option<String>,
    /// Delay before a change is written to the snapshot (default `250ms`; under a stream of
    /// changes, writes still come at most once a second).
    pub snapshot_debounce: Option<String>,
    /// Threads of the async runtime (default 1; read at start only). atmd's work is I/O around
    /// one registry actor, and large lists render on separate blocking threads: one worker
    /// gives the lowest latency on a small machine shared with the agents. Raise it for
    /// thousands of busy subscribers on a many-core machine.
    pub worker_threads: Option<usize>,
    /// Open connections on each ingest socket (`hooks.sock`) at most (default 1024, from 1 to
    /// 65536). When full, the persistent connection quiet the longest makes room; else a new
    /// one is refused with `too_many_clients` (logged at warn).
    pub max_ingest_connections: Option<usize>,
    /// An ingest connection that has not said `connect` is closed after this long without a
    /// complete line (default `60s`, from 1 s to 24 hours). Persistent clients (the pi
    /// extension) say `connect` and are exempt while there is room.
    pub ingest_idle_timeout: Option<String>,
    /// This machine's id among several (the `nats` sink and adapter), stamped on its sessions
    /// (default: the host name's first label; letters, digits, `-` and `_`, at most 64).
    pub host: Option<String>,
}

/// The range of `[daemon] max_sessions`.
pub const MAX_SESSIONS: std::ops::RangeInclusive<usize> = 1..=1_000_000;

/// The range of `[daemon] max_ingest_connections`.
pub const MAX_INGEST_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=65_536;

/// One `[[adapter]]` or `[[sink]]` block, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    pub kind: PluginKind,
    /// Plugin type (`type` key).
    pub plugin: String,
    /// Instance name (`name` key, else the type; `#2`, `#3`... for unnamed repeats).
    pub instance: String,
    /// The block without `type` and `name`: what the factory gets.
    pub settings: toml::Value,
}

impl PluginEntry {
    pub fn registration(&self) -> Option<&'static PluginRegistration> {
        plugin::find(self.kind, &self.plugin)
    }
}

/// A validated config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConfigSource,
    pub daemon: DaemonSection,
    pub daemon_durations: DaemonDurations,
    pub plugins: Vec<PluginEntry>,
}

/// The range of each `[daemon]` duration: `session_expiry` from 1 s to 30 days,
/// `cleanup_interval` from 0 (off) to 1 hour, `snapshot_debounce` from 0 to 1 minute,
/// `ingest_idle_timeout` from 1 s to 24 hours.
pub const DAEMON_RANGES: [(&str, Duration, Duration); 4] = [
    (
        "session_expiry",
        Duration::from_secs(1),
        Duration::from_secs(30 * 24 * 3600),
    ),
    (
        "cleanup_interval",
        Duration::ZERO,
        Duration::from_secs(3600),
    ),
    ("snapshot_debounce", Duration::ZERO, Duration::from_secs(60)),
    (
        "ingest_idle_timeout",
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonDurations {
    pub session_expiry: Duration,
    pub cleanup_interval: Duration,
    pub snapshot_debounce: Duration,
    pub ingest_idle_timeout: Duration,
}

type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: Option<Spanned<DaemonSection>>,
    #[serde(default)]
    adapter: Vec<Spanned<SpannedTable>>,
    #[serde(default)]
    sink: Vec<Spanned<SpannedTable>>,
}

/// Reads and validates the config from `source`.
pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
    let text = match source {
        ConfigSource::Embedded => EMBEDDED_DEFAULT.to_owned(),
        ConfigSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
                path: path.clone(),
                source: e,
            })?;
            String::from_utf8(bytes).map_err(|e| ConfigError::Whole {
                source_name: source.to_string(),
                message: format!(
                    "not valid UTF-8 (at byte {}); save the file as UTF-8",
                    e.utf8_error().valid_up_to()
                ),
            })?
        }
    };
    parse(&text, source.clone())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses and validates config text.
pub fn parse(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
    let source_name = source.to_string();
    let at = |span: Range<usize>, message: String| {
        let (line, column) = line_col(text, span.start);
        ConfigError::At {
            source_name: source_name.clone(),
            line,
            column,
            message,
        }
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_owned();
        let message = if message.contains("unknown field") {
            format!("{message} (top-level tables are [daemon], [[adapter]] and [[sink]])")
        } else {
            message
        };
        match e.span() {
            Some(span) => at(span, message),
            None => ConfigError::Whole {
                source_name: source_name.clone(),
                message,
            },
        }
    })?;

    let daemon = raw.daemon.map(Spanned::into_inner).unwrap_or_default();
    // Every duration has a range (see `DAEMON_RANGES`): a value nobody meant must be refused
    // here, not overflow the registry's time arithmetic later.
    let duration = |key: &str, value: &Option<String>, default: Duration| {
        let Some(v) = value else {
            return Ok(default);
        };
        let whole = |message| ConfigError::Whole {
            source_name: source_name.clone(),
            message,
        };
        let parsed = humantime::parse_duration(v).map_err(|e| {
            whole(format!(
                "[daemon] {key} = {v:?} is not a duration ({e}); write e.g. \"5s\" or \"30min\""
            ))
        })?;
        let (min, max) = DAEMON_RANGES
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or((Duration::ZERO, Duration::MAX), |&(_, min, max)| (min, max));
        atm_core::plugin::duration::check_range(parsed, min, max)
            .map_err(|m| whole(format!("[daemon] {key} = {v:?}: {m}")))
    };
    if let Some(host) = &daemon.host
        && let Err(e) = atm_core::HostId::parse(host)
    {
        return Err(ConfigError::Whole {
            source_name: source_name.clone(),
            message: format!("[daemon] host: {e}"),
        });
    }
    if daemon.worker_threads == Some(0) {
        return Err(ConfigError::Whole {
            source_name: source_name.clone(),
            message: "[daemon] worker_threads = 0: atmd needs at least one thread; remove the \
                      key for the default (1)"
                .to_owned(),
        });
    }
    if let Some(n) = daemon.max_sessions
        && !MAX_SESSIONS.contains(&n)
    {
        return Err(ConfigError::Whole {
            source_name: source_name.clone(),
            message: format!(
                "[daemon] max_sessions = {n} is out of range: use a number from {} to {}, \
                 e.g. 10000",
                MAX_SESSIONS.start(),
                MAX_SESSIONS.end()
            ),
        });
    }
    if let Some(n) = daemon.max_ingest_connections
        && !MAX_INGEST_CONNECTIONS.contains(&n)
    {
        return Err(ConfigError::Whole {
            source_name: source_name.clone(),
            message: format!(
                "[daemon] max_ingest_connections = {n} is out of range: use a number from {} to \
                 {}, e.g. 1024",
                MAX_INGEST_CONNECTIONS.start(),
                MAX_INGEST_CONNECTIONS.end()
            ),
        });
    }
    // The registry's and the ingest socket's defaults are written once, in atm-core.
    let daemon_durations = DaemonDurations {
        session_expiry: duration(
            "session_expiry",
            &daemon.session_expiry,
            RegistryConfig::DEFAULT_SILENCE_EXPIRY,
        )?,
        cleanup_interval: duration(
            "cleanup_interval",
            &daemon.cleanup_interval,
            RegistryConfig::DEFAULT_CLEANUP_INTERVAL,
        )?,
        snapshot_debounce: duration(
            "snapshot_debounce",
            &daemon.snapshot_debounce,
            RegistryConfig::DEFAULT_SNAPSHOT_DEBOUNCE,
        )?,
        ingest_idle_timeout: duration(
            "ingest_idle_timeout",
            &daemon.ingest_idle_timeout,
            atm_core::ingest::IngestLimits::DEFAULT_IDLE_TIMEOUT,
        )?,
    };

    let mut plugins = Vec::new();
    let mut seen_names: BTreeMap<(PluginKind, String), usize> = BTreeMap::new();
    for (kind, blocks) in [
        (PluginKind::Adapter, raw.adapter),
        (PluginKind::Sink, raw.sink),
    ] {
        for block in blocks {
            let block_span = block.span();
            let table = block.into_inner();
            // The built-in default names the built-in plugins; a build that leaves some out
            // (per-plugin features) runs the default without them instead of refusing it.
            if source == ConfigSource::Embedded && !compiled_in(kind, &table) {
                continue;
            }
            let entry = validate_block(kind, block_span, table, &at, &mut seen_names)?;
            plugins.push(entry);
        }
    }
    Ok(Config {
        source,
        daemon,
        daemon_durations,
        plugins,
    })
}

fn allowed_names(kind: PluginKind) -> String {
    let names: Vec<&str> = plugin::registered()
        .into_iter()
        .filter(|p| p.kind() == kind)
        .map(|p| p.name)
        .collect();
    names.join(", ")
}

/// Whether the plugin a block's `type` names is linked into this binary.
fn compiled_in(kind: PluginKind, table: &SpannedTable) -> bool {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == "type")
        .and_then(|(_, v)| v.get_ref().as_str())
        .is_some_and(|name| plugin::find(kind, name).is_some())
}

fn validate_block(
    kind: PluginKind,
    block_span: Range<usize>,
    table: SpannedTable,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
    seen_names: &mut BTreeMap<(PluginKind, String), usize>,
) -> Result<PluginEntry, ConfigError> {
    let table_name = kind.table();
    let find = |name: &str| table.iter().find(|(k, _)| k.get_ref() == name);
    let Some((_, type_value)) = find("type") else {
        return Err(at(
            block_span,
            format!(
                "[[{table_name}]] needs `type = \"<plugin>\"`; available: {}",
                allowed_names(kind)
            ),
        ));
    };
    let Some(plugin_name) = type_value.get_ref().as_str().map(str::to_owned) else {
        return Err(at(type_value.span(), "`type` must be a string".to_owned()));
    };
    let Some(reg) = plugin::find(kind, &plugin_name) else {
        return Err(at(
            type_value.span(),
            format!(
                "unknown {table_name} type `{plugin_name}`; available {table_name}s: {} (see `atmd plugins`)",
                allowed_names(kind)
            ),
        ));
    };
    let instance = match find("name") {
        Some((_, v)) => match v.get_ref().as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => return Err(at(v.span(), "`name` must be a non-empty string".to_owned())),
        },
        None => plugin_name.clone(),
    };
    let count = seen_names.entry((kind, instance.clone())).or_insert(0);
    *count += 1;
    let explicit_name = find("name").is_some();
    if *count > 1 && explicit_name {
        let span = find("name").map_or(block_span.clone(), |(_, v)| v.span());
        return Err(at(
            span,
            format!("two [[{table_name}]] blocks are named `{instance}`; names must be unique"),
        ));
    }
    let instance = if *count > 1 {
        format!("{instance}#{count}")
    } else {
        instance
    };
    let mut settings = toml::Table::new();
    for (k, v) in &table {
        if k.get_ref() != "type" && k.get_ref() != "name" {
            settings.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    let settings = toml::Value::Table(settings);
    let built = match reg.factory {
        PluginFactory::Adapter(f) => f(&settings).map(|_| ()),
        PluginFactory::Sink(f) => f(&settings).map(|_| ()),
    };
    if let Err(e) = built {
        let span = e
            .key
            .as_deref()
            .and_then(|key| table.iter().find(|(k, _)| k.get_ref() == key))
            .map_or(block_span, |(k, _)| k.span());
        return Err(at(
            span,
            format!("[[{table_name}]] type `{plugin_name}`: {}", e.message),
        ));
    }
    Ok(PluginEntry {
        kind,
        plugin: plugin_name,
        instance,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Config, ConfigError> {
        parse(s, ConfigSource::File(PathBuf::from("/etc/test.toml")))
    }

    /// The error `s` must give, as the user reads it.
    fn error_of(s: &str) -> String {
        parse_str(s).unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = load(&ConfigSource::Embedded).unwrap();
        assert!(c.plugins.iter().any(|p| p.plugin == "socket"));
        assert!(c.plugins.iter().any(|p| p.plugin == "claude-hooks"));
        // The fleet needs a server somewhere: shown commented out, never on by default.
        assert!(!c.plugins.iter().any(|p| p.plugin == "nats"));
    }

    #[test]
    fn the_host_id_is_read_and_a_bad_one_is_refused() {
        let c = parse_str("[daemon]\nhost = \"devbox-2\"\n").unwrap();
        assert_eq!(c.daemon.host.as_deref(), Some("devbox-2"));
        check_errors(&[(
            "[daemon]\nhost = \"dev.box\"\n",
            &["[daemon] host", "not a host id"],
        )]);
    }

    #[test]
    fn worker_threads_are_read_and_zero_is_refused() {
        let c = parse_str("[daemon]\nworker_threads = 2\n").unwrap();
        assert_eq!(c.daemon.worker_threads, Some(2));
        assert_eq!(parse_str("").unwrap().daemon.worker_threads, None);
        check_errors(&[(
            "[daemon]\nworker_threads = 0\n",
            &["worker_threads = 0", "at least one"],
        )]);
    }

    #[test]
    fn unknown_plugin_names_file_line_column_and_choices() {
        let err = error_of("[[adapter]]\ntype = \"clade-hooks\"\n");
        assert!(
            err.starts_with("/etc/test.toml:2:8: unknown adapter type `clade-hooks`"),
            "{err}"
        );
        assert!(err.contains("claude-hooks"), "{err}");
    }

    #[test]
    fn unknown_plugin_key_points_at_the_key() {
        let err = error_of("[[sink]]\ntype = \"socket\"\n\nsockett = \"/tmp/x\"\n");
        assert!(err.starts_with("/etc/test.toml:4:1:"), "{err}");
        assert!(err.contains("sockett"), "{err}");
    }

    #[test]
    fn the_commented_defaults_are_the_registrys() {
        // plugins.toml documents the defaults in comments; atm-core's RegistryConfig is their
        // one source, and this keeps the comments honest.
        let commented = |key: &str| {
            EMBEDDED_DEFAULT
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# {key} = ")))
                .and_then(|v| v.split_whitespace().next())
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("plugins.toml has no commented `{key}`"))
        };
        assert_eq!(
            commented("max_sessions").parse::<usize>().unwrap(),
            RegistryConfig::DEFAULT_MAX_SESSIONS
        );
        assert_eq!(
            humantime::parse_duration(&commented("session_expiry")).unwrap(),
            RegistryConfig::DEFAULT_SILENCE_EXPIRY
        );
        let d = parse_str("").unwrap().daemon_durations;
        assert_eq!(d.session_expiry, RegistryConfig::DEFAULT_SILENCE_EXPIRY);
        assert_eq!(d.cleanup_interval, RegistryConfig::DEFAULT_CLEANUP_INTERVAL);
        assert_eq!(
            d.snapshot_debounce,
            RegistryConfig::DEFAULT_SNAPSHOT_DEBOUNCE
        );
        use atm_core::ingest::IngestLimits;
        assert_eq!(
            commented("max_ingest_connections")
                .parse::<usize>()
                .unwrap(),
            IngestLimits::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(
            humantime::parse_duration(&commented("ingest_idle_timeout")).unwrap(),
            IngestLimits::DEFAULT_IDLE_TIMEOUT
        );
        assert_eq!(d.ingest_idle_timeout, IngestLimits::DEFAULT_IDLE_TIMEOUT);
    }

    #[test]
    fn the_ingest_limits_have_ranges() {
        let c = parse_str("[daemon]\nmax_ingest_connections = 8\ningest_idle_timeout = \"2s\"\n")
            .unwrap();
        assert_eq!(c.daemon.max_ingest_connections, Some(8));
        assert_eq!(
            c.daemon_durations.ingest_idle_timeout,
            Duration::from_secs(2)
        );
        check_errors(&[
            (
                "[daemon]\nmax_ingest_connections = 0\n",
                &[
                    "max_ingest_connections = 0",
                    "out of range",
                    "from 1 to 65536",
                ],
            ),
            (
                "[daemon]\nmax_ingest_connections = 1000000\n",
                &["max_ingest_connections", "out of range"],
            ),
            (
                "[daemon]\nmax_sessions = 0\n",
                &["max_sessions = 0", "out of range", "from 1 to 1000000"],
            ),
            (
                "[daemon]\ningest_idle_timeout = \"0s\"\n",
                &["ingest_idle_timeout", "out of range"],
            ),
            (
                "[daemon]\ningest_idle_timeout = \"300000000000y\"\n",
                &["ingest_idle_timeout", "out of range"],
            ),
        ]);
    }

    /// Each config gives an error that contains every one of its strings.
    fn check_errors(cases: &[(&str, &[&str])]) {
        for (toml, wants) in cases {
            let err = error_of(toml);
            for want in *wants {
                assert!(err.contains(want), "{toml:?}: {want:?} not in {err}");
            }
        }
    }

    #[test]
    fn unknown_top_level_and_daemon_keys_are_errors() {
        check_errors(&[
            ("[adapters]\n", &[":1:", "[[adapter]]"]),
            (
                "[daemon]\nlog = \"info\"\nmax_session = 5\n",
                &[":3:1:", "max_sessions"],
            ),
        ]);
    }

    #[test]
    fn wrong_types_and_bad_toml_are_located() {
        check_errors(&[
            ("[[adapter]]\ntype = 5\n", &[":2:8:"]),
            ("[[adapter]\ntype = \"x\"\n", &[":1:"]),
            ("[[adapter]]\nname = \"x\"\n", &["needs `type"]),
            ("[daemon]\nsession_expiry = \"soon\"\n", &["not a duration"]),
        ]);
    }

    #[test]
    fn two_instances_of_one_type_are_allowed() {
        let c = parse_str(
            "[[sink]]\ntype = \"socket\"\n[[sink]]\ntype = \"socket\"\nname = \"second\"\nsocket = \"/tmp/atm-second.sock\"\n[[sink]]\ntype = \"socket\"\nsocket = \"/tmp/atm-third.sock\"\n",
        )
        .unwrap();
        let names: Vec<_> = c.plugins.iter().map(|p| p.instance.as_str()).collect();
        assert_eq!(names, ["socket", "second", "socket#2"]);
        let err = error_of(
            "[[sink]]\ntype = \"socket\"\nname = \"a\"\n[[sink]]\ntype = \"socket\"\nname = \"a\"\n",
        );
        assert!(err.contains("names must be unique"), "{err}");
    }

    #[test]
    fn non_utf8_and_missing_files_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plugins.toml");
        std::fs::write(&p, b"[daemon]\nlog = \"\xff\"\n").unwrap();
        let err = load(&ConfigSource::File(p.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid UTF-8"), "{err}");
        let err = load(&ConfigSource::File(dir.path().join("nope.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read config"), "{err}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é = 1\nx", 0), (1, 1));
        assert_eq!(line_col("ü\nüx", 5), (2, 2));
    }
}
