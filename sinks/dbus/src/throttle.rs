//! [`Throttle`]: at most one warning per [`WARN_EVERY`] for a recurring condition (an overload,
//! a failing send), so a sustained problem is a few lines in the log, not one per change.

use std::time::{Duration, Instant};

/// The shortest time between two warnings about one recurring condition.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets a recurring warning through once per [`WARN_EVERY`], counting what it held back.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// `Some(n)` when this occurrence should be logged (`n`: occurrences held back since the
    /// last one logged); `None` to log it at debug level only.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_warning_through_and_counts_the_rest() {
        let mut t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(t.allow(), Some(2));
    }
}
