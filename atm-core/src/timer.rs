//! Sleeping long without waking early: a one-shot kernel timer (`timerfd`) for the waits of an
//! idle daemon.
//!
//! tokio's timer wheel keeps a far deadline in a coarse slot and moves it to finer slots as it
//! nears, and every move is a wake-up of the runtime: a 10-second sleep costs three (seen with
//! `strace` on an idle atmd: wake-ups 9.6 s, 0.4 s and 45 ms apart before each discovery pass).
//! An idle daemon's whole budget is a few wake-ups a minute, so its periodic waits (discovery's
//! idle pass, the janitor) use [`sleep_until`]: the kernel wakes the runtime once, at the
//! deadline. Short and busy waits keep using tokio's timers, which are cheaper to arm.

use std::os::fd::OwnedFd;

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Waits until `deadline` with one wake-up. Falls back to tokio's timer when the kernel timer
/// cannot be made (no `timerfd`, out of descriptors): the wait is then as long, only less
/// frugal. Cancel-safe: dropping the future disarms the timer.
pub async fn sleep_until(deadline: Instant) {
    let wait = deadline.saturating_duration_since(Instant::now());
    if wait.is_zero() {
        return;
    }
    match arm(wait) {
        Ok(fd) => {
            // Readable once it has expired; a failed wait falls back to tokio's timer.
            if fd.readable().await.is_ok() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
        Err(_) => tokio::time::sleep_until(deadline).await,
    }
}

fn arm(wait: std::time::Duration) -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let once = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(wait.subsec_nanos()),
        },
    };
    timerfd_settime(&fd, TimerfdTimerFlags::empty(), &once)?;
    crate::liveness::async_owned_fd(fd)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_at_the_deadline_not_before() {
        for ms in [0u64, 30, 120] {
            let start = Instant::now();
            sleep_until(start + Duration::from_millis(ms)).await;
            assert!(start.elapsed() >= Duration::from_millis(ms), "{ms} ms");
        }
        // A deadline in the past returns at once.
        sleep_until(Instant::now() - Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn dropping_the_wait_cancels_it() {
        let far = Instant::now() + Duration::from_secs(3600);
        let raced = tokio::time::timeout(Duration::from_millis(20), sleep_until(far)).await;
        assert!(raced.is_err());
    }
}
