//! Readiness: an adapter says "I am serving" (its socket is bound, its file is open), once.
//!
//! Without it, whoever starts an adapter (a test, the supervisor) can only poll for a side
//! effect or sleep and hope. The signal is a `watch` channel holding one flag: setting it twice
//! is harmless, and waiting after it was set returns at once.

use std::sync::Arc;

use tokio::sync::watch;

/// A shared "is serving" flag: cloned into the adapter's context, awaited by whoever started it.
#[derive(Debug, Clone)]
pub struct Readiness {
    flag: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// A flag that is not set yet.
    pub fn new() -> Self {
        Self {
            flag: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Marks the adapter as serving.
    pub fn mark_ready(&self) {
        self.flag.send_replace(true);
    }

    pub fn is_ready(&self) -> bool {
        *self.flag.borrow()
    }

    /// Returns once the flag is set (at once if it already is).
    pub async fn wait(&self) {
        let mut seen = self.flag.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = seen.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_see_the_flag_set_before_or_after_they_wait() {
        let ready = Readiness::new();
        assert!(!ready.is_ready());
        let waiter = tokio::spawn({
            let ready = ready.clone();
            async move { ready.wait().await }
        });
        let early = tokio::time::timeout(Duration::from_millis(20), ready.wait()).await;
        assert!(early.is_err(), "wait returned before the flag was set");
        ready.clone().mark_ready();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(ready.is_ready());
        ready.mark_ready();
        tokio::time::timeout(Duration::from_secs(5), ready.wait())
            .await
            .unwrap();
    }
}
