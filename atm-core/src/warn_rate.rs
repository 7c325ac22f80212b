//! A warning said at most once a minute: every refusal atm makes (a full socket, a full
//! registry, an oversized line) is logged at warn with its fix, but a flood of them must not
//! flood the log. The repeats within the minute go to debug and are counted into the next
//! warning, so the count is never lost.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

/// How often a [`RateLimitedWarn`] speaks at warn.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// One kind of warning, rate-limited to once per [`WARN_EVERY`].
#[derive(Debug, Default)]
pub struct RateLimitedWarn {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarn {
    /// Says `message` (given what to add about suppressed repeats, often empty) at warn, or at
    /// debug within a minute of the last warning. True when it went out at warn.
    pub fn say(&mut self, message: impl FnOnce(String) -> String) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            debug!("{}", message(String::new()));
            return false;
        }
        let suppressed = match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" ({n} more like it in the last minute were logged at debug)"),
        };
        self.last = Some(now);
        warn!(
            "{} (further ones for a minute at debug)",
            message(suppressed)
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_warning_is_said_once_a_minute_and_counts_the_rest() {
        let mut w = RateLimitedWarn::default();
        let said: Vec<bool> = (0..3).map(|_| w.say(|s| s)).collect();
        assert_eq!(said, [true, false, false]);
        assert_eq!(w.suppressed, 2);
        tokio::time::advance(WARN_EVERY).await;
        assert!(w.say(|s| s));
        assert_eq!(w.suppressed, 0);
    }
}
