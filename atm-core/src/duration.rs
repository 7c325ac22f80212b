//! Serde helper for durations written as `"2s"`, `"500ms"`, `"30min"` in plugin configs, and
//! [`Within`], the same with a range every config duration must have (a duration
//! nobody meant, such as `"300000000000y"`, is refused at load and by `atmd check-config`,
//! never left to overflow time arithmetic later).
//!
//! Its own module (re-exported as `plugin::duration`, the path configs name in their serde
//! attributes) because the control bus and the snapshot writer use its deadline
//! arithmetic too, not only plugin configs.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A duration from `MIN_MS` to `MAX_MS` milliseconds (both included), for
/// `#[serde(with = "atm_core::plugin::duration::Within::<100, 600_000>")]`. The error names
/// the range and an example; the config loader adds the key.
pub struct Within<const MIN_MS: u64, const MAX_MS: u64>;

impl<const MIN_MS: u64, const MAX_MS: u64> Within<MIN_MS, MAX_MS> {
    pub const MIN: Duration = Duration::from_millis(MIN_MS);
    pub const MAX: Duration = Duration::from_millis(MAX_MS);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = deserialize(d)?;
        check_range(value, Self::MIN, Self::MAX).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        serialize(d, s)
    }
}

/// `value` if it lies in `min..=max`; otherwise what to write instead.
pub fn check_range(value: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if (min..=max).contains(&value) {
        return Ok(value);
    }
    let example = Duration::from_secs(10).clamp(min, max);
    Err(format!(
        "{} is out of range: use a duration from {} to {} (e.g. \"{}\")",
        humantime::format_duration(value),
        show(min),
        show(max),
        humantime::format_duration(example),
    ))
}

/// `from + d`, saturating: a deadline that would overflow `Instant` becomes about 30 years
/// ahead ("never") instead of a panic. Every deadline computed from a configured duration
/// uses this, so even a duration that escaped its range cannot stop a task.
pub fn deadline_after(from: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    from.checked_add(d)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

fn show(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?}: {e} (write e.g. \"2s\", \"500ms\", \"30min\")"
        ))
    })
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}
