//! Which machine a session runs on: its [`HostId`].
//!
//! Every session carries the host that owns it. Sessions of this daemon carry the local host
//! (the registry stamps it, [`crate::registry::RegistryConfig::host`]); sessions mirrored from
//! another machine (the `nats` adapter) carry theirs. The id is short and restricted to
//! `[A-Za-z0-9_-]` because it is also a token of NATS subjects and key-value keys, where a `.`
//! or a wildcard would let one host's permissions reach another's keys.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest host id, in bytes (all ASCII).
pub const MAX_HOST_ID: usize = 64;

/// A host id: 1 to [`MAX_HOST_ID`] characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HostId(Arc<str>);

/// Why a text is not a host id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a host id: use 1 to 64 characters of letters, digits, `-` and `_` (no dots: the \
     id is one token of NATS subjects)"
)]
pub struct BadHostId(pub String);

impl HostId {
    /// The id `s`, if it is one.
    pub fn parse(s: &str) -> Result<Self, BadHostId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_HOST_ID
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(BadHostId(s.to_owned()))
        }
    }

    /// This machine's id, from its host name: the first label (`devbox` of
    /// `devbox.example.org`), every other character made `-`, cut to [`MAX_HOST_ID`];
    /// `localhost` when the name cannot be read.
    pub fn local() -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        Self::from_name(name.trim())
    }

    /// The id a host name maps to (see [`HostId::local`]).
    pub fn from_name(name: &str) -> Self {
        let label = name.split('.').next().unwrap_or_default();
        let id: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_HOST_ID)
            .collect();
        Self::parse(&id).unwrap_or_else(|_| Self(Arc::from("localhost")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for HostId {
    /// `localhost`: what a record read from an older snapshot holds until the registry stamps it.
    fn default() -> Self {
        Self(Arc::from("localhost"))
    }
}

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_subject_token() {
        assert_eq!(HostId::parse("dev-box_2").unwrap().as_str(), "dev-box_2");
        for bad in ["", "a.b", "a*", "a>", "a b", "é", &"x".repeat(65)] {
            assert!(HostId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<HostId>("\"a.b\"").is_err());
        assert_eq!(
            serde_json::from_str::<HostId>("\"laptop\"").unwrap(),
            HostId::parse("laptop").unwrap()
        );
    }

    #[test]
    fn host_names_map_to_ids() {
        assert_eq!(HostId::from_name("devbox.example.org").as_str(), "devbox");
        assert_eq!(HostId::from_name("my box").as_str(), "my-box");
        assert_eq!(HostId::from_name("").as_str(), "localhost");
        assert_eq!(HostId::from_name(&"a".repeat(100)).as_str().len(), 64);
        assert!(HostId::parse(HostId::local().as_str()).is_ok());
    }
}
