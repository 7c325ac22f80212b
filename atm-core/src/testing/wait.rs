//! One way for a test to wait: on a condition, never on a clock.
//!
//! A fixed sleep is either too short on a loaded CI machine (a flaky test) or too long everywhere
//! else (a slow suite). These helpers poll a condition every [`POLL`] and fail with the test's own
//! words after a generous deadline, so a passing test returns as soon as the condition holds.

use std::future::Future;
use std::time::Duration;

/// How often a condition is checked.
pub const POLL: Duration = Duration::from_millis(10);

/// How long a condition may take before the test fails: long enough for a loaded 2-core CI
/// machine, and only ever reached by a failing test.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `true`; panics naming `what` after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(DEADLINE, what, check).await;
}

/// [`wait_until`] with its own deadline.
pub async fn wait_until_within<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        // A check that never returns (a client call without a timeout) is a failure at the
        // deadline too, not a test run that hangs.
        match tokio::time::timeout_at(until, check()).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => panic!("waited {deadline:?} for: {what} (the last check did not return)"),
        }
        if tokio::time::Instant::now() >= until {
            panic!("waited {deadline:?} for: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `get` until it yields `Some`, and returns the value; panics naming `what` after
/// [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut get: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = get().await {
            return v;
        }
        if tokio::time::Instant::now() >= until {
            panic!("waited {DEADLINE:?} for: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The blocking twin of [`wait_until`], for tests without a runtime (CLI binaries, tmux).
pub fn wait_until_blocking(what: &str, check: impl FnMut() -> bool) {
    wait_until_blocking_within(DEADLINE, what, check);
}

/// [`wait_until_blocking`] with its own deadline, for conditions that take a known long time
/// (a daemon's idle timeout).
pub fn wait_until_blocking_within(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    loop {
        if check() {
            return;
        }
        if std::time::Instant::now() >= until {
            panic!("waited {deadline:?} for: {what}");
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let n = AtomicU32::new(0);
        wait_until("three polls", || async {
            n.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(n.load(Ordering::SeqCst), 3);
        let v = wait_for("a value", || async { Some(7) }).await;
        assert_eq!(v, 7);
    }

    #[tokio::test]
    #[should_panic(expected = "waited 50ms for: never")]
    async fn fails_naming_the_condition() {
        wait_until_within(Duration::from_millis(50), "never", || async { false }).await;
    }

    #[test]
    fn blocking_twin_returns_once_the_condition_holds() {
        let mut n = 0;
        wait_until_blocking("two polls", || {
            n += 1;
            n >= 2
        });
        assert_eq!(n, 2);
    }
}
