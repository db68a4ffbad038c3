//! Rate limits: at most `limit` events per `window` for each key, in sliding windows (the
//! last `window` of farm time) or fixed ones (aligned to farm time 0).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::scenario::RateLimit;

/// Keys kept before idle ones are swept.
const SWEEP_AT: usize = 100_000;

#[derive(Debug)]
enum Window {
    /// Times of the events in the last window, oldest first; at most `limit` kept.
    Sliding(VecDeque<Duration>),
    /// The fixed window's index and its count.
    Fixed { index: u64, count: u32 },
}

/// All rate-limit state of a farm, keyed by the limit's state key and the counted value.
#[derive(Debug, Default)]
pub struct RateStore {
    windows: Mutex<HashMap<String, (Window, Duration)>>,
}

impl RateStore {
    /// Counts one event for `key` at farm time `now`; false if it is over the limit
    /// (an event over the limit is not counted, as a refused event did not happen).
    pub fn admit(&self, limit: &RateLimit, key: &str, now: Duration) -> bool {
        let mut windows = self.windows.lock();
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (_, last)| now.saturating_sub(*last) <= limit.window);
        }
        let fresh = || {
            if limit.sliding {
                Window::Sliding(VecDeque::new())
            } else {
                Window::Fixed { index: 0, count: 0 }
            }
        };
        let (window, last) = windows
            .entry(key.to_string())
            .or_insert_with(|| (fresh(), now));
        *last = now;
        match window {
            Window::Sliding(times) => {
                while times
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) >= limit.window)
                {
                    times.pop_front();
                }
                if times.len() as u64 >= u64::from(limit.limit) {
                    return false;
                }
                times.push_back(now);
                true
            }
            Window::Fixed { index, count } => {
                let window_nanos = limit.window.as_nanos().max(1);
                let current = u64::try_from(now.as_nanos() / window_nanos).unwrap_or(u64::MAX);
                if *index != current {
                    *index = current;
                    *count = 0;
                }
                if *count >= limit.limit {
                    return false;
                }
                *count += 1;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{RateKey, Reply, StateScope};

    fn limit(n: u32, window: u64, sliding: bool) -> RateLimit {
        RateLimit {
            per: RateKey::Client,
            limit: n,
            window: Duration::from_secs(window),
            sliding,
            scope: StateScope::Shared,
            reply: Reply::new(421, Some("4.7.0"), "slow down"),
            close: false,
        }
    }

    #[test]
    fn window_arithmetic() {
        // (sliding, [(time, admitted)]) with a limit of 2 per 60 s.
        let cases: [(bool, &[(u64, bool)]); 2] = [
            (
                true,
                &[
                    (0, true),
                    (10, true),
                    (20, false),
                    (59, false),
                    (60, true),
                    (70, true),
                    (71, false),
                ],
            ),
            (
                false,
                &[
                    (0, true),
                    (10, true),
                    (59, false),
                    (60, true),
                    (61, true),
                    (119, false),
                    (120, true),
                ],
            ),
        ];
        for (sliding, steps) in cases {
            let store = RateStore::default();
            let l = limit(2, 60, sliding);
            for (at, expected) in steps {
                let got = store.admit(&l, "k", Duration::from_secs(*at));
                assert_eq!(got, *expected, "sliding={sliding} at {at}s");
            }
        }
    }

    #[test]
    fn keys_are_counted_apart() {
        let store = RateStore::default();
        let l = limit(1, 60, true);
        assert!(store.admit(&l, "a", Duration::ZERO));
        assert!(store.admit(&l, "b", Duration::ZERO));
        assert!(!store.admit(&l, "a", Duration::ZERO));
    }
}
