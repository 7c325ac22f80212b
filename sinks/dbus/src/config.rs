//! `DbusConfig`: which bus to join, under which name, and how patiently to retry.
//!
//! Everything has a default, so `[[sink]] type = "dbus"` alone joins the session bus. The
//! service name is checked here, at build time, so a typo is a config error with its key rather
//! than a retry loop that can never succeed.

use std::time::Duration;

use atm_core::ConfigError;
use serde::Deserialize;

/// The well-known name owned by default. Versioned with the interfaces: a rename means `2`.
pub const DEFAULT_SERVICE_NAME: &str = "io.github.atm.Monitor";

/// Which message bus to join when no explicit `address` is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// The user's session bus (`DBUS_SESSION_BUS_ADDRESS`).
    #[default]
    Session,
    /// The system bus (needs a bus policy that lets atmd own the name).
    System,
}

/// The `[[sink]] type = "dbus"` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbusConfig {
    /// `"session"` (default) or `"system"`.
    #[serde(default)]
    pub bus: BusKind,
    /// An explicit bus address (`unix:path=/run/...`); overrides `bus`.
    #[serde(default)]
    pub address: Option<String>,
    /// The well-known name to own.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// First wait before retrying a failed connection; doubles up to `retry_max` (10 ms to 1 h).
    #[serde(
        default = "default_retry_initial",
        with = "atm_core::plugin::duration::Within::<10, 3_600_000>"
    )]
    pub retry_initial: Duration,
    /// Longest wait between two connection attempts (10 ms to 24 h).
    #[serde(
        default = "default_retry_max",
        with = "atm_core::plugin::duration::Within::<10, 86_400_000>"
    )]
    pub retry_max: Duration,
    /// Changes queued toward the bus before changes are coalesced per session (1 to 1048576).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_service_name() -> String {
    DEFAULT_SERVICE_NAME.to_owned()
}

fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

/// The largest `queue_capacity`.
pub const MAX_QUEUE_CAPACITY: usize = 1_048_576;

fn default_queue_capacity() -> usize {
    1024
}

impl Default for DbusConfig {
    fn default() -> Self {
        Self {
            bus: BusKind::default(),
            address: None,
            service_name: default_service_name(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

impl DbusConfig {
    /// Parses and checks a `[[sink]]` table (without `type`/`name`).
    pub fn from_table(value: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        let config: Self = atm_core::plugin::parse_config(value)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = zbus::names::WellKnownName::try_from(self.service_name.as_str()) {
            return Err(ConfigError::for_key(
                "service_name",
                format!(
                    "service_name {:?} is not a valid D-Bus well-known name ({e}); use a dotted name such as \"{DEFAULT_SERVICE_NAME}\"",
                    self.service_name
                ),
            ));
        }
        if self.service_name.starts_with(':') {
            return Err(ConfigError::for_key(
                "service_name",
                "service_name must be a well-known name, not a unique name (no leading ':')",
            ));
        }
        if let Some(address) = &self.address
            && let Err(e) = address.parse::<zbus::Address>()
        {
            return Err(ConfigError::for_key(
                "address",
                format!(
                    "address {address:?} is not a D-Bus address ({e}); write e.g. \"unix:path=/run/user/1000/bus\""
                ),
            ));
        }
        if self.retry_initial.is_zero() {
            return Err(ConfigError::for_key(
                "retry_initial",
                "retry_initial must be greater than zero (e.g. \"1s\")",
            ));
        }
        if self.retry_max < self.retry_initial {
            return Err(ConfigError::for_key(
                "retry_max",
                format!(
                    "retry_max ({}) must be at least retry_initial ({})",
                    humanize(self.retry_max),
                    humanize(self.retry_initial)
                ),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::for_key(
                "queue_capacity",
                "queue_capacity must be at least 1 (default 1024)",
            ));
        }
        if self.queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(ConfigError::for_key(
                "queue_capacity",
                format!(
                    "queue_capacity = {} is out of range: use a number from 1 to \
                     {MAX_QUEUE_CAPACITY} (default 1024)",
                    self.queue_capacity
                ),
            ));
        }
        Ok(())
    }
}

fn humanize(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DbusConfig, ConfigError> {
        DbusConfig::from_table(&atm_core::testing::config_table(s))
    }

    #[test]
    fn an_empty_table_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.bus, BusKind::Session);
        assert_eq!(c.address, None);
        assert_eq!(c.service_name, "io.github.atm.Monitor");
        assert_eq!(c.retry_initial, Duration::from_secs(1));
        assert_eq!(c.retry_max, Duration::from_secs(30));
        assert_eq!(c.queue_capacity, 1024);
    }

    #[test]
    fn every_key_parses() {
        let c = parse(
            r#"
            bus = "system"
            address = "unix:path=/tmp/x.sock"
            service_name = "org.example.Other"
            retry_initial = "200ms"
            retry_max = "5s"
            queue_capacity = 16
            "#,
        )
        .unwrap();
        let want = DbusConfig {
            bus: BusKind::System,
            address: Some("unix:path=/tmp/x.sock".into()),
            service_name: "org.example.Other".into(),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            queue_capacity: 16,
        };
        assert_eq!(c, want);
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            ("service_name = \"no dots here\"", "service_name"),
            ("service_name = \"\"", "service_name"),
            ("service_name = \":1.42\"", "service_name"),
            ("address = \"nonsense\"", "address"),
            ("retry_initial = \"0s\"", "retry_initial"),
            ("retry_initial = \"5s\"\nretry_max = \"1s\"", "retry_max"),
            ("queue_capacity = 0", "queue_capacity"),
            ("buss = \"session\"", "buss"),
        ];
        atm_core::testing::assert_refused_with_key(DbusConfig::from_table, &cases);
    }

    #[test]
    fn wrongly_typed_values_are_refused_with_an_explanation() {
        for (toml, says) in [
            ("bus = \"user\"", "`session` or `system`"),
            ("retry_max = \"soon\"", "invalid duration"),
            ("queue_capacity = -1", "-1"),
            ("address = 5", "invalid type"),
        ] {
            let err = parse(toml).unwrap_err();
            assert!(err.message.contains(says), "{toml}: {err}");
        }
    }
}
