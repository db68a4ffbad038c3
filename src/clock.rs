//! The farm's one clock: the only place in mxfarm that reads time.
//!
//! Farm time is tokio's `Instant` since the farm started, plus an offset that
//! [`Clock::advance`] moves forward. Building on tokio's clock means
//! `#[tokio::test(start_paused = true)]` works; the offset lets a test jump a greylist delay
//! or a command timeout without sleeping. Every wait in the farm goes through a [`Timer`]
//! ([`Clock::sleep`] makes one for a single wait), which wakes early when the offset moves
//! past its deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
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
    /// How many advances there have been: bumped before `advanced` is notified, so that a
    /// timer can tell by one load whether its deadline may have come nearer.
    advances: AtomicU64,
    /// Notified on every `advance`, so that timers re-check their deadline.
    advanced: Arc<Notify>,
}

impl Clock {
    /// How far all advances together may move farm time: a hundred years, so that any
    /// farm time plus any scenario duration (at most a year) stays far from overflow.
    pub const MAX_OFFSET: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// A clock that reads zero now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                start: Instant::now(),
                offset_nanos: AtomicU64::new(0),
                advances: AtomicU64::new(0),
                advanced: Arc::new(Notify::new()),
            }),
        }
    }

    /// Farm time: how long the farm has run, including every `advance`.
    pub fn now(&self) -> Duration {
        self.at(Instant::now())
    }

    /// Farm time at the tokio instant `real`.
    fn at(&self, real: Instant) -> Duration {
        real.saturating_duration_since(self.inner.start) + self.offset()
    }

    /// The tokio instant at which farm time reaches `farm`, unless the clock is advanced
    /// meanwhile: the start, the time since, less the advances. (Farm time is bounded,
    /// so the sum is far from overflowing; past it, the farthest instant.)
    fn real(&self, farm: Duration) -> Instant {
        let since_start = farm.saturating_sub(self.offset());
        self.inner
            .start
            .checked_add(since_start)
            .unwrap_or_else(|| self.inner.start + Self::MAX_OFFSET)
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
        self.inner.advances.fetch_add(1, Ordering::AcqRel);
        self.inner.advanced.notify_waiters();
        Ok(())
    }

    /// A timer for many waits, one after another: see [`Timer`].
    pub fn timer(&self) -> Timer {
        Timer::new(self.clone())
    }

    /// Waits until farm time has moved `duration` past now.
    pub async fn sleep(&self, duration: Duration) {
        let deadline = self.now().saturating_add(duration);
        self.sleep_until(deadline).await;
    }

    /// Waits until farm time reaches `deadline`, by tokio's timer or by `advance`,
    /// whichever gets there first.
    pub async fn sleep_until(&self, deadline: Duration) {
        self.timer().until(deadline).await;
    }
}

/// Waits on farm time, again and again: what a session keeps for its whole life, to wait
/// for its client's next command (or its timeout) hundreds of times.
///
/// Why it is kept rather than made for each wait: a wait must also end when the clock is
/// advanced, and registering for that (and dropping the registration) at every read of
/// every session took two locks each time, with a clock read or two more. A timer
/// registers once, with the task's waker, and again only after an advance or when a
/// different task polls it; until then, one atomic load tells it whether an advance came.
/// The tokio sleep itself is still made for each wait and dropped after it, so that a
/// session that waits for something else (a journal write, a DNS answer) has no timer
/// pending: a test on paused time would otherwise jump to it.
pub struct Timer {
    clock: Clock,
    /// Woken by the next advance after `seen`.
    advanced: Pin<Box<OwnedNotified>>,
    /// The clock's advance count when `advanced` was registered.
    seen: u64,
    /// The waker `advanced` was last polled with: polling it again with the same one
    /// would take its lock for nothing.
    waker: Option<Waker>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").field("seen", &self.seen).finish()
    }
}

impl Timer {
    fn new(clock: Clock) -> Self {
        // The count first: an advance between the two shows in the count.
        let seen = clock.inner.advances.load(Ordering::Acquire);
        let mut advanced = Box::pin(clock.inner.advanced.clone().notified_owned());
        advanced.as_mut().enable();
        Self {
            clock,
            advanced,
            seen,
            waker: None,
        }
    }

    /// Waits until farm time reaches `deadline`, by tokio's timer or by an advance of the
    /// clock, whichever gets there first.
    pub async fn until(&mut self, deadline: Duration) {
        // Where real time meets the deadline, as things stand: worked out without reading
        // the clock (a deadline already passed makes a sleep that rings at once).
        let mut sleep = std::pin::pin!(tokio::time::sleep_until(self.clock.real(deadline)));
        std::future::poll_fn(|cx| {
            loop {
                let advanced = self.look_for_advances(cx);
                let rang = !advanced && sleep.as_mut().poll(cx).is_ready();
                if !advanced && !rang {
                    return Poll::Pending;
                }
                // The deadline is nearer (an advance), or real time got there (the sleep
                // rang): either way, farm time says whether it has come.
                if self.clock.now() >= deadline {
                    return Poll::Ready(());
                }
                sleep.as_mut().reset(self.clock.real(deadline));
            }
        })
        .await;
    }

    /// Whether the clock was advanced since the last look; either way, the task is
    /// registered to be woken by the next advance.
    fn look_for_advances(&mut self, cx: &mut Context<'_>) -> bool {
        let inner = &self.clock.inner;
        let mut advanced = false;
        loop {
            let count = inner.advances.load(Ordering::Acquire);
            if count != self.seen {
                // Spent, or about to be: register for the next advance instead.
                advanced = true;
                self.seen = count;
                self.advanced.set(inner.advanced.clone().notified_owned());
                self.advanced.as_mut().enable();
                self.waker = None;
            }
            if self
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                return advanced;
            }
            if self.advanced.as_mut().poll(cx).is_pending() {
                self.waker = Some(cx.waker().clone());
                return advanced;
            }
            // Notified: by an advance since the count was loaded, or by one the count
            // already showed. Either way register afresh next round (at worst the caller
            // hears of one advance twice, and reads the clock once more).
            self.seen = self.seen.wrapping_sub(1);
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

    /// A timer kept across waits is woken by an advance in each of them, in the task that
    /// waited before (which it does not poll its registration for again) and in another
    /// (whose waker it is handed). Were a wake lost, paused time would end the wait a
    /// real hour later instead, and farm time would say so.
    #[tokio::test(start_paused = true)]
    async fn a_kept_timer_is_woken_by_every_advance() {
        let clock = Clock::new();
        let hour = Duration::from_secs(3600);
        let mut timer = clock.timer();
        for _ in 0..3 {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let c = clock.clone();
            let waiter = tokio::spawn(async move {
                for _ in 0..3 {
                    timer.until(c.now() + hour).await;
                    let _ = tx.send(c.now());
                }
                timer
            });
            for _ in 0..3 {
                tokio::task::yield_now().await;
                let before = clock.now();
                clock.advance(hour).unwrap();
                let woke_at = rx.recv().await.unwrap();
                assert!(
                    woke_at < before + hour + Duration::from_secs(1),
                    "{woke_at:?}"
                );
            }
            timer = waiter.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passed_ends_a_wait_at_once_and_one_ahead_waits() {
        let clock = Clock::new();
        let mut timer = clock.timer();
        clock.advance(Duration::from_secs(10)).unwrap();
        timer.until(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Duration::from_secs(10));
        timer.until(Duration::from_secs(12)).await;
        assert!(clock.now() >= Duration::from_secs(12));
        assert!(clock.now() < Duration::from_secs(13));
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
