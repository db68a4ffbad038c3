//! The farm's one clock: the only place in mxfarm that reads time.
//!
//! Farm time is tokio's `Instant` since the farm started, plus an offset that
//! [`Clock::advance`] moves forward. Building on tokio's clock means
//! `#[tokio::test(start_paused = true)]` works; the offset lets a test jump a greylist delay
//! or a command timeout without sleeping. Every wait in the farm goes through
//! [`Clock::sleep`], which wakes early when the offset moves past its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// An advance that would move farm time past [`Clock::MAX_OFFSET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot advance farm time by {}: all advances together may add at most {} years",
    humantime::format_duration(*by),
    Clock::MAX_OFFSET.as_secs() / (365 * 86_400)
)]
pub struct TooFar {
    pub by: Duration,
}

/// A cheaply cloneable handle to the farm's clock.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    /// Nanoseconds added by `advance`.
    offset_nanos: AtomicU64,
    /// Bumped on every `advance`, so that sleepers re-check their deadline.
    advanced: watch::Sender<u64>,
}

impl Clock {
    /// How far all advances together may move farm time: a hundred years, so that any
    /// farm time plus any scenario duration (at most a year) stays far from overflow.
    pub const MAX_OFFSET: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// A clock that reads zero now.
    pub fn new() -> Self {
        let (advanced, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                start: Instant::now(),
                offset_nanos: AtomicU64::new(0),
                advanced,
            }),
        }
    }

    /// Farm time: how long the farm has run, including every `advance`.
    pub fn now(&self) -> Duration {
        self.inner.start.elapsed() + self.offset()
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_nanos.load(Ordering::Acquire))
    }

    /// Moves farm time forward by `by`, waking every sleeper whose deadline has now passed.
    /// Refused, with time left as it was, when farm time would pass [`Clock::MAX_OFFSET`].
    pub fn advance(&self, by: Duration) -> Result<(), TooFar> {
        let nanos = u64::try_from(by.as_nanos()).map_err(|_| TooFar { by })?;
        self.inner
            .offset_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |offset| {
                offset
                    .checked_add(nanos)
                    .filter(|total| *total <= Self::MAX_OFFSET.as_nanos() as u64)
            })
            .map_err(|_| TooFar { by })?;
        self.inner.advanced.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Waits until farm time has moved `duration` past now.
    pub async fn sleep(&self, duration: Duration) {
        let deadline = self.now().saturating_add(duration);
        self.sleep_until(deadline).await;
    }

    /// Waits until farm time reaches `deadline`, by tokio's timer or by `advance`,
    /// whichever gets there first.
    pub async fn sleep_until(&self, deadline: Duration) {
        let mut advanced = self.inner.advanced.subscribe();
        loop {
            let now = self.now();
            if now >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(deadline - now) => {}
                changed = advanced.changed() => {
                    if changed.is_err() {
                        // The clock is gone with the farm; fall back to real time alone.
                        tokio::time::sleep(deadline.saturating_sub(self.now())).await;
                        return;
                    }
                }
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn advance_moves_now_and_wakes_sleepers() {
        let clock = Clock::new();
        assert_eq!(clock.now(), Duration::ZERO);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move {
                clock.sleep(Duration::from_secs(3600)).await;
                clock.now()
            })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3600)).unwrap();
        let woke_at = sleeper.await.unwrap();
        assert!(woke_at >= Duration::from_secs(3600));
        assert!(woke_at < Duration::from_secs(3601));
    }

    #[tokio::test(start_paused = true)]
    async fn an_advance_past_the_range_is_refused_and_time_stays() {
        let clock = Clock::new();
        clock.advance(Duration::from_secs(60)).unwrap();
        // u64::MAX nanoseconds would wrap the offset back to nearly zero.
        let wrap = Duration::from_nanos(u64::MAX);
        assert_eq!(clock.advance(wrap), Err(TooFar { by: wrap }));
        assert_eq!(
            clock.advance(Duration::MAX),
            Err(TooFar { by: Duration::MAX })
        );
        let year = Duration::from_secs(365 * 86_400);
        for _ in 0..99 {
            clock.advance(year).unwrap();
        }
        assert!(clock.advance(year).is_err());
        assert_eq!(clock.now(), Duration::from_secs(60) + 99 * year);
        assert!(
            clock
                .advance(year)
                .unwrap_err()
                .to_string()
                .contains("at most 100 years"),
            "{}",
            clock.advance(year).unwrap_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_also_ends_by_real_time() {
        let clock = Clock::new();
        clock.sleep(Duration::from_secs(5)).await;
        assert!(clock.now() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_advance_leaves_the_rest_to_wait() {
        let clock = Clock::new();
        let c2 = clock.clone();
        let sleeper = tokio::spawn(async move { c2.sleep(Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(4)).unwrap();
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        sleeper.await.unwrap();
        assert!(clock.now() >= Duration::from_secs(10));
    }
}
