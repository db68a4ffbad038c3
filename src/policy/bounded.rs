//! The table under every store of policy state: entries ordered by when they were last
//! used, so that what is forgotten first, by expiry or to stay within a cap, is always at
//! the front, and no operation ever walks the whole table.
//!
//! Each operation costs a few B-tree steps (logarithmic, never a rehash of everything), so
//! a store's lock is held for microseconds even with millions of entries; the callers
//! forget expired entries a few at a time ([`EXPIRE_PER_CALL`]) as they go, instead of
//! sweeping.
//!
//! Entries are keyed by a 128-bit keyed hash of what identifies them ([`Keys`]) instead of
//! the text, which keeps an entry small whatever the length of the addresses in it: two
//! different triplets share a key with a probability of about 2⁻¹²⁸, and the hash keys
//! are random per store, so a client cannot choose values that collide.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::time::Duration;

/// How many expired entries one call forgets at most: more than it adds (one), so expired
/// entries leave faster than new ones come, and few enough that a call stays short when a
/// jump of farm time expires a whole table at once (each costs about a microsecond in a
/// table of a million). Expired entries that wait cost only memory, within the cap: they
/// are the oldest, so they are the first forgotten to make room.
pub const EXPIRE_PER_CALL: usize = 4;

/// What identifies an entry: a keyed hash of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key(u64, u64);

/// The hash keys of one store: two independent SipHash keys, for 128 bits.
#[derive(Debug, Default)]
pub struct Keys {
    first: RandomState,
    second: RandomState,
}

impl Key {
    /// The key as 32 hex digits, to name an entry outside the farm (the control API).
    pub fn to_hex(self) -> String {
        format!("{:016x}{:016x}", self.0, self.1)
    }

    /// The key that [`Key::to_hex`] wrote, or `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Key> {
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let first = u64::from_str_radix(&hex[..16], 16).ok()?;
        let second = u64::from_str_radix(&hex[16..], 16).ok()?;
        Some(Key(first, second))
    }
}

impl Keys {
    /// The key of an entry identified by `parts`.
    pub fn of(&self, parts: &impl Hash) -> Key {
        Key(self.first.hash_one(parts), self.second.hash_one(parts))
    }
}

/// A farm time as nanoseconds: half the size of a `Duration` (farm time is bounded by
/// `Clock::MAX_OFFSET`, a hundred years, well within 584).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Stamp(u64);

impl Stamp {
    pub fn at(now: Duration) -> Self {
        Self(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn nanos(self) -> u64 {
        self.0
    }

    /// How long before `now` this was (zero if it is not before).
    pub fn age(self, now: Stamp) -> Duration {
        Duration::from_nanos(now.0.saturating_sub(self.0))
    }
}

/// Entries by key, with the order in which they were last used.
#[derive(Debug)]
pub struct Bounded<V> {
    entries: BTreeMap<Key, Slot<V>>,
    /// Keys by the use number of their last use: the least recently used first.
    order: BTreeMap<u64, Key>,
    uses: u64,
}

#[derive(Debug)]
struct Slot<V> {
    used: u64,
    value: V,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            uses: 0,
        }
    }
}

impl<V> Bounded<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry of `key`, without counting this as a use.
    pub fn get(&self, key: &Key) -> Option<&V> {
        self.entries.get(key).map(|slot| &slot.value)
    }

    /// The entry of `key`, made by `make` if there is none, now the most recently used.
    /// The caller keeps the table within its cap (see [`Bounded::pop_oldest`]).
    pub fn touch(&mut self, key: Key, make: impl FnOnce() -> V) -> &mut V {
        self.uses += 1;
        let used = self.uses;
        let slot = self.entries.entry(key).or_insert_with(|| Slot {
            used,
            value: make(),
        });
        if slot.used != used {
            self.order.remove(&slot.used);
            slot.used = used;
        }
        self.order.insert(used, key);
        &mut slot.value
    }

    /// Whether `key` has an entry.
    /// Every entry with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &V)> {
        self.entries.iter().map(|(key, slot)| (*key, &slot.value))
    }

    /// Forgets the entry of `key`, if there is one.
    pub fn remove(&mut self, key: &Key) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.used);
        Some(slot.value)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Forgets the least recently used entry if `forget` says so, and returns it.
    pub fn pop_oldest_if(&mut self, forget: impl FnOnce(&V) -> bool) -> Option<V> {
        let (_, key) = self.order.first_key_value()?;
        let slot = self.entries.get(key)?;
        if !forget(&slot.value) {
            return None;
        }
        let (_, key) = self.order.pop_first()?;
        self.entries.remove(&key).map(|slot| slot.value)
    }

    /// Forgets the least recently used entry, and returns it.
    pub fn pop_oldest(&mut self) -> Option<V> {
        self.pop_oldest_if(|_| true)
    }

    /// Forgets up to [`EXPIRE_PER_CALL`] of the least recently used entries, as long as
    /// `expired` says each is; returns how many.
    pub fn expire(&mut self, expired: impl Fn(&V) -> bool) -> usize {
        let mut forgotten = 0;
        while forgotten < EXPIRE_PER_CALL && self.pop_oldest_if(&expired).is_some() {
            forgotten += 1;
        }
        forgotten
    }

    /// Makes room for one more entry in a table of at most `cap`, unless `key` has one.
    pub fn make_room(&mut self, key: &Key, cap: usize) {
        if self.contains(key) {
            return;
        }
        while self.len() >= cap.max(1) && self.pop_oldest().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_least_recently_used_first() {
        let keys = Keys::default();
        let mut table = Bounded::default();
        for i in 0..5u32 {
            *table.touch(keys.of(&i), || 0) += i;
        }
        // Using 0 again makes 1 the least recently used.
        table.touch(keys.of(&0u32), || 0);
        table.make_room(&keys.of(&9u32), 5);
        assert_eq!(table.len(), 4);
        assert!(table.get(&keys.of(&1u32)).is_none());
        assert!(table.get(&keys.of(&0u32)).is_some());
        // A key that is there needs no room.
        table.make_room(&keys.of(&0u32), 4);
        assert_eq!(table.len(), 4);
        assert_eq!(table.pop_oldest(), Some(2));
    }

    #[test]
    fn expires_from_the_front_a_few_at_a_time_and_stops_at_a_live_entry() {
        let keys = Keys::default();
        let mut table = Bounded::default();
        for i in 0..20u32 {
            table.touch(keys.of(&i), || i);
        }
        // Entries below 15 are expired; each call forgets at most EXPIRE_PER_CALL.
        let mut left = 15;
        while left > 0 {
            assert_eq!(table.expire(|v| *v < 15), left.min(EXPIRE_PER_CALL));
            left = left.saturating_sub(EXPIRE_PER_CALL);
        }
        assert_eq!(table.expire(|v| *v < 15), 0);
        assert_eq!(table.len(), 5);
        // A live entry at the front stops expiry, even with expired ones behind it.
        table.touch(keys.of(&3u32), || 3);
        table.touch(keys.of(&15u32), || 15);
        assert_eq!(table.expire(|v| *v != 16), 0);
    }

    #[test]
    fn stamps_are_nanoseconds_and_ages_never_negative() {
        let early = Stamp::at(Duration::from_millis(1500));
        let late = Stamp::at(Duration::from_secs(3));
        assert_eq!(early.age(late), Duration::from_millis(1500));
        assert_eq!(late.age(early), Duration::ZERO);
    }
}
