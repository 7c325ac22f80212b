//! `NotifyConfig`: the `[[sink]] type = "notify"` table.
//!
//! Every key has a default so an empty table gives the documented behaviour; validation that
//! serde cannot express (mutually exclusive tmux socket keys, an empty focus command) happens in
//! [`NotifyConfig::validate`], before the sink is built, so a bad config is refused at start-up
//! with the key named.

use std::time::Duration;

use atm_core::ConfigError;
use atm_core::plugin::duration;
use serde::Deserialize;

/// Why a notification pops up: the states (and the failed turn) a user can switch on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// Entering `needs_permission`.
    NeedsPermission,
    /// Entering `needs_input`.
    NeedsInput,
    /// Entering `idle` after a turn that worked at least `min_turn`.
    Idle,
    /// Entering `idle` after a turn that failed with an API error.
    Error,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Which transitions notify.
    #[serde(default = "default_on")]
    pub on: Vec<NotifyOn>,
    /// An idle notification needs a turn at least this long: short answers need no popup.
    /// From 0 to 24 hours.
    #[serde(
        with = "duration::Within::<0, 86_400_000>",
        default = "default_min_turn"
    )]
    pub min_turn: Duration,
    /// No notification while the session's tmux pane is the active pane of an attached client
    /// (the user is looking at it already).
    #[serde(default = "default_true")]
    pub quiet_when_pane_active: bool,
    /// Projects that never notify: a repository name (basename of the project root or cwd) or
    /// a full path (`~/` and `$VAR` allowed).
    #[serde(default)]
    pub mute_projects: Vec<String>,
    /// The minimum time between two notifications popping up for one session. A notification
    /// that comes sooner waits (and is dropped if the session moves on meanwhile). From 0 to 24
    /// hours.
    #[serde(
        with = "duration::Within::<0, 86_400_000>",
        default = "default_rate_limit"
    )]
    pub rate_limit: Duration,
    /// How long a notification waits before it pops up: a wait answered (or a session back at
    /// work) within it gets none, and a request's buttons are there from the first popup. An
    /// update of a notification on screen never waits. From 0 to 1 hour.
    #[serde(with = "duration::Within::<0, 3_600_000>", default = "default_grace")]
    pub grace: Duration,
    /// At most this many notifications pop up in any `popup_window`, across all sessions
    /// (from 1 to 10000); past that, the sessions are gathered into one summary notification
    /// ("12 agents need you") instead of one popup each.
    #[serde(default = "default_max_popups")]
    pub max_popups: usize,
    /// The window of `max_popups`. From 1 s to 1 hour.
    #[serde(
        with = "duration::Within::<1_000, 3_600_000>",
        default = "default_popup_window"
    )]
    pub popup_window: Duration,
    /// The command the `default` and `Focus` actions run, instead of selecting the tmux pane:
    /// program and arguments, no shell. `{pane}`, `{session_id}` and `{cwd}` are replaced.
    #[serde(default)]
    pub focus_command: Option<Vec<String>>,
    /// The tmux server's socket path (`tmux -S`). Default: tmux's own default server.
    #[serde(default)]
    pub tmux_socket: Option<String>,
    /// The tmux server's socket name (`tmux -L`).
    #[serde(default)]
    pub tmux_socket_name: Option<String>,
    /// The D-Bus address to use instead of the session bus.
    #[serde(default)]
    pub address: Option<String>,
    /// The application name notifications carry.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// The `desktop-entry` hint (the `.desktop` file name without extension), if any.
    #[serde(default)]
    pub desktop_entry: Option<String>,
}

fn default_on() -> Vec<NotifyOn> {
    vec![
        NotifyOn::NeedsPermission,
        NotifyOn::NeedsInput,
        NotifyOn::Idle,
        NotifyOn::Error,
    ]
}

fn default_min_turn() -> Duration {
    Duration::from_secs(20)
}

fn default_rate_limit() -> Duration {
    Duration::from_secs(10)
}

fn default_grace() -> Duration {
    Duration::from_secs(1)
}

fn default_max_popups() -> usize {
    5
}

fn default_popup_window() -> Duration {
    Duration::from_secs(10)
}

/// The range of `max_popups`.
pub const MAX_POPUPS: std::ops::RangeInclusive<usize> = 1..=10_000;

fn default_true() -> bool {
    true
}

fn default_app_name() -> String {
    "atm".to_owned()
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            on: default_on(),
            min_turn: default_min_turn(),
            quiet_when_pane_active: true,
            mute_projects: Vec::new(),
            rate_limit: default_rate_limit(),
            grace: default_grace(),
            max_popups: default_max_popups(),
            popup_window: default_popup_window(),
            focus_command: None,
            tmux_socket: None,
            tmux_socket_name: None,
            address: None,
            app_name: default_app_name(),
            desktop_entry: None,
        }
    }
}

impl NotifyConfig {
    /// Parses and validates a config table.
    pub fn from_toml(value: &atm_core::toml::Value) -> Result<Self, ConfigError> {
        let config: Self = atm_core::plugin::parse_config(value)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tmux_socket.is_some() && self.tmux_socket_name.is_some() {
            return Err(ConfigError::for_key(
                "tmux_socket_name",
                "set either `tmux_socket` (a path) or `tmux_socket_name` (a -L name), not both",
            ));
        }
        if let Some(cmd) = &self.focus_command
            && cmd.first().is_none_or(|p| p.trim().is_empty())
        {
            return Err(ConfigError::for_key(
                "focus_command",
                "`focus_command` needs a program, e.g. [\"wmctrl\", \"-a\", \"Terminal\"]; remove the key to select the tmux pane",
            ));
        }
        if !MAX_POPUPS.contains(&self.max_popups) {
            return Err(ConfigError::for_key(
                "max_popups",
                format!(
                    "`max_popups` = {} is out of range: use a number from {} to {}, e.g. 5",
                    self.max_popups,
                    MAX_POPUPS.start(),
                    MAX_POPUPS.end()
                ),
            ));
        }
        if self.app_name.trim().is_empty() {
            return Err(ConfigError::for_key(
                "app_name",
                "`app_name` must not be empty",
            ));
        }
        if let Some(addr) = &self.address
            && addr.trim().is_empty()
        {
            return Err(ConfigError::for_key(
                "address",
                "`address` must be a D-Bus address such as \"unix:path=/run/user/1000/bus\"; remove the key to use the session bus",
            ));
        }
        Ok(())
    }

    pub fn notifies(&self, on: NotifyOn) -> bool {
        self.on.contains(&on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NotifyConfig, ConfigError> {
        NotifyConfig::from_toml(&atm_core::testing::config_table(s))
    }

    #[test]
    fn empty_table_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.on, default_on());
        assert_eq!(c.min_turn, Duration::from_secs(20));
        assert_eq!(c.rate_limit, Duration::from_secs(10));
        assert_eq!(c.grace, Duration::from_secs(1));
        assert_eq!((c.max_popups, c.popup_window), (5, Duration::from_secs(10)));
        assert!(c.quiet_when_pane_active);
        assert_eq!(c.app_name, "atm");
        assert!(c.focus_command.is_none() && c.address.is_none());
    }

    #[test]
    fn the_sample_parses_to_the_defaults_it_documents() {
        let reg = atm_core::plugin::find(atm_core::plugin::PluginKind::Sink, "notify").unwrap();
        let mut table = atm_core::testing::sample_table(reg);
        if let atm_core::toml::Value::Table(t) = &mut table {
            t.remove("type");
        }
        let c = NotifyConfig::from_toml(&table).unwrap();
        let d = NotifyConfig::default();
        assert_eq!(c.on, d.on);
        assert_eq!((c.grace, c.rate_limit), (d.grace, d.rate_limit));
        assert_eq!(
            (c.max_popups, c.popup_window),
            (d.max_popups, d.popup_window)
        );
        assert_eq!(c.min_turn, d.min_turn);
    }

    #[test]
    fn keys_parse() {
        let c = parse(
            r#"on = ["needs_permission", "idle"]
               min_turn = "200ms"
               rate_limit = "0s"
               grace = "250ms"
               mute_projects = ["scratch"]
               focus_command = ["wmctrl", "-a", "{pane}"]
               tmux_socket_name = "work"
               desktop_entry = "org.example.Terminal""#,
        )
        .unwrap();
        assert_eq!(c.on, vec![NotifyOn::NeedsPermission, NotifyOn::Idle]);
        assert!(!c.notifies(NotifyOn::Error));
        assert_eq!(c.min_turn, Duration::from_millis(200));
        assert_eq!(c.rate_limit, Duration::ZERO);
        assert_eq!(c.grace, Duration::from_millis(250));
    }

    #[test]
    fn bad_configs_name_their_key() {
        let e = parse(r#"on = ["sleeping"]"#).unwrap_err();
        assert!(e.message.contains("sleeping"), "{e}");
        let e = parse("tmux_socket = \"/tmp/x\"\ntmux_socket_name = \"y\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tmux_socket_name"));
        let e = parse("focus_command = []").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("focus_command"));
        let e = parse("min_turn = \"soon\"").unwrap_err();
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = parse("max_popups = 0").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("max_popups"));
        assert!(e.message.contains("out of range"), "{e}");
        let e = parse("popup_window = \"300000000000y\"").unwrap_err();
        assert!(e.message.contains("popup_window"), "{e}");
        let e = parse("popup_window = \"0s\"").unwrap_err();
        assert!(e.message.contains("popup_window"), "{e}");
        let e = parse("grace = \"2h\"").unwrap_err();
        assert!(e.message.contains("grace"), "{e}");
        let e = parse("app_name = \" \"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("app_name"));
        let e = parse("adress = \"unix:path=/x\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("adress"));
    }
}
