//! Rate limits: at most `limit` events per `window` for each key, in sliding windows (the
//! last `window` of farm time) or fixed ones (aligned to farm time 0).
//!
//! One store per limit (and per host if its state is per host). What it remembers is
//! bounded by the limit's `max-entries`: in a sliding window an entry is the time of one
//! event still in the window (a key holds at most `limit`), in fixed windows it is one key.
//! When full, the key used longest ago is forgotten: it counts from zero at its next event.
//! Keys idle for a whole window hold nothing that matters and leave a few at a time.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

use super::bounded::{Bounded, Keys, Stamp};
use crate::scenario::RateLimit;

/// The times of the admitted events of one key in the last window, oldest first. None or
/// one time is kept without a heap allocation, as most keys of a flood have just one, and
/// more behind a box, which keeps every entry small (16 bytes here).
#[derive(Debug)]
enum Times {
    None,
    One(Stamp),
    #[allow(
        clippy::box_collection,
        reason = "the box keeps every key's entry small; only keys with several times pay for it"
    )]
    Many(Box<VecDeque<Stamp>>),
}

impl Times {
    fn len(&self) -> usize {
        match self {
            Times::None => 0,
            Times::One(_) => 1,
            Times::Many(times) => times.len(),
        }
    }

    /// Forgets the times at least `window` before `now`.
    fn forget_before(&mut self, now: Stamp, window: Duration) {
        match self {
            Times::One(t) if t.age(now) >= window => *self = Times::None,
            Times::None | Times::One(_) => {}
            Times::Many(times) => {
                while times.front().is_some_and(|t| t.age(now) >= window) {
                    times.pop_front();
                }
                if times.is_empty() {
                    *self = Times::None;
                }
            }
        }
    }

    fn push(&mut self, now: Stamp) {
        match self {
            Times::None => *self = Times::One(now),
            Times::One(first) => *self = Times::Many(Box::new(VecDeque::from([*first, now]))),
            Times::Many(times) => times.push_back(now),
        }
    }
}

#[derive(Debug)]
enum Window {
    /// The times of the events in the last window; at most `limit` kept.
    Sliding(Times),
    /// The fixed window's index and its count.
    Fixed { index: u64, count: u32 },
}

impl Window {
    /// How many of the store's entries this takes.
    fn weight(&self) -> usize {
        match self {
            Window::Sliding(times) => times.len(),
            Window::Fixed { .. } => 1,
        }
    }
}

#[derive(Debug)]
struct Counted {
    window: Window,
    last: Stamp,
}

#[derive(Debug, Default)]
struct Table {
    keys: Bounded<Counted>,
    /// Entries held: the sum of the keys' weights.
    held: usize,
}

/// The state of one rate limit.
#[derive(Debug)]
pub struct RateStore {
    max_entries: usize,
    keys: Keys,
    table: Mutex<Table>,
}

impl RateStore {
    /// An empty store for `limit`.
    pub fn new(limit: &RateLimit) -> Self {
        Self {
            max_entries: limit.max_entries,
            keys: Keys::default(),
            table: Mutex::default(),
        }
    }

    /// Forgets every count.
    pub fn clear(&self) {
        *self.table.lock() = Table::default();
    }

    /// Counts one event for `key` at farm time `now`; false if it is over the limit
    /// (an event over the limit is not counted, as a refused event did not happen).
    pub fn admit(&self, limit: &RateLimit, key: &str, now: Duration) -> bool {
        let key = self.keys.of(&key);
        let now = Stamp::at(now);
        let mut guard = self.table.lock();
        let table = &mut *guard;
        // A key idle for a whole window has nothing left in it (in fixed windows, its
        // window is over).
        for _ in 0..super::bounded::EXPIRE_PER_CALL {
            match table
                .keys
                .pop_oldest_if(|c| c.last.age(now) >= limit.window)
            {
                Some(gone) => table.held -= gone.window.weight(),
                None => break,
            }
        }
        let fresh = || Counted {
            window: if limit.sliding {
                Window::Sliding(Times::None)
            } else {
                Window::Fixed { index: 0, count: 0 }
            },
            last: now,
        };
        let before = table.keys.get(&key).map_or(0, |c| c.window.weight());
        let counted = table.keys.touch(key, fresh);
        counted.last = now;
        let admitted = match &mut counted.window {
            Window::Sliding(times) => {
                times.forget_before(now, limit.window);
                let room = u64::try_from(times.len()).unwrap_or(u64::MAX) < u64::from(limit.limit);
                if room {
                    times.push(now);
                }
                room
            }
            Window::Fixed { index, count } => {
                let window_nanos = limit.window.as_nanos().max(1);
                let current =
                    u64::try_from(u128::from(now.nanos()) / window_nanos).unwrap_or(u64::MAX);
                if *index != current {
                    *index = current;
                    *count = 0;
                }
                let room = *count < limit.limit;
                if room {
                    *count += 1;
                }
                room
            }
        };
        let after = counted.window.weight();
        table.held = table.held + after - before;
        // Over the cap: forget the keys used longest ago. The key just counted is the
        // most recent, and alone it fits (the loader keeps `limit` within `max-entries`).
        while table.held > self.max_entries && table.keys.len() > 1 {
            match table.keys.pop_oldest() {
                Some(gone) => table.held -= gone.window.weight(),
                None => break,
            }
        }
        admitted
    }

    /// Entries held now (see the module's documentation), and keys.
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let table = self.table.lock();
        (table.held, table.keys.len())
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
            max_entries: 1_000_000,
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
            let l = limit(2, 60, sliding);
            let store = RateStore::new(&l);
            for (at, expected) in steps {
                let got = store.admit(&l, "k", Duration::from_secs(*at));
                assert_eq!(got, *expected, "sliding={sliding} at {at}s");
            }
        }
    }

    #[test]
    fn keys_are_counted_apart() {
        let l = limit(1, 60, true);
        let store = RateStore::new(&l);
        assert!(store.admit(&l, "a", Duration::ZERO));
        assert!(store.admit(&l, "b", Duration::ZERO));
        assert!(!store.admit(&l, "a", Duration::ZERO));
    }
}
