//! Attempt counters for `attempt` conditions: how many times a client connected, a sender
//! started a transaction, or a recipient (alone or as a triplet) was offered — farm-wide,
//! across hosts, as a sender sees it when it retries on another MX.
//!
//! Only the keys that some rule uses are counted, and each key's table is bounded, so an
//! address-spraying client cannot grow the farm's memory without limit: when a table is
//! full, the key counted longest ago is forgotten (it counts from 1 again), one at a time,
//! so no count ever walks the table (see `bounded`).

use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;

use super::Seen;
use super::bounded::{Bounded, Keys};

use crate::scenario::{AttemptKey, Condition, Scenario};

/// Entries per key kind; when full, the one counted longest ago is forgotten.
const MAX_ENTRIES: usize = 200_000;

/// The farm's attempt counters.
#[derive(Debug, Default)]
pub struct AttemptCounters {
    /// Which keys some rule counts; changed when the scenario is replaced.
    counted: [std::sync::atomic::AtomicBool; 4],
    keys: Keys,
    tables: [Mutex<Bounded<Entry>>; 4],
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    n: u32,
    first: Duration,
}

fn index(key: AttemptKey) -> usize {
    match key {
        AttemptKey::Client => 0,
        AttemptKey::Sender => 1,
        AttemptKey::Recipient => 2,
        AttemptKey::Triplet => 3,
    }
}

impl AttemptCounters {
    /// Counters for the keys that the scenario's rules use.
    pub fn for_scenario(scenario: &Scenario) -> Self {
        let counters = Self::default();
        counters.count_for(scenario);
        counters
    }

    /// Counts the keys that `scenario`'s rules use, and only those, from now on; the
    /// counts of keys still counted go on.
    pub fn count_for(&self, scenario: &Scenario) {
        let mut counted = [false; 4];
        for rule in scenario.hosts.iter().flat_map(|h| h.rules.iter()) {
            for condition in &rule.when {
                if let Condition::Attempt { per, .. } | Condition::FirstAttemptWithin { per, .. } =
                    condition
                {
                    counted[index(*per)] = true;
                }
            }
        }
        for (flag, on) in self.counted.iter().zip(counted) {
            flag.store(on, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Forgets every count: each next attempt is a first one again.
    pub fn clear(&self) {
        for table in &self.tables {
            *table.lock() = Bounded::default();
        }
    }

    /// Whether any rule counts `key`.
    pub fn counts(&self, key: AttemptKey) -> bool {
        self.counted[index(key)].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one more attempt for `value` at farm time `now`; returns its number (1 for
    /// the first) and when the first was. Zero if no rule counts this key.
    fn bump(&self, key: AttemptKey, value: &impl std::hash::Hash, now: Duration) -> Seen {
        if !self.counts(key) {
            return Seen::default();
        }
        // Each kind has its own table, so the same value counted as two kinds is two keys.
        let hashed = self.keys.of(value);
        let mut table = self.tables[index(key)].lock();
        table.make_room(&hashed, MAX_ENTRIES);
        let entry = table.touch(hashed, || Entry { n: 0, first: now });
        entry.n = entry.n.saturating_add(1);
        Seen {
            n: entry.n,
            first: entry.first,
        }
    }

    /// Counts a connection from `client`.
    pub fn connection(&self, client: IpAddr, now: Duration) -> Seen {
        self.bump(AttemptKey::Client, &client, now)
    }

    /// Counts an offer of `recipient` from `sender` by `client`: returns what the
    /// recipient and the triplet counters say.
    pub fn recipient(
        &self,
        client: IpAddr,
        sender: &str,
        recipient: &str,
        now: Duration,
    ) -> (Seen, Seen) {
        if !self.counts(AttemptKey::Recipient) && !self.counts(AttemptKey::Triplet) {
            return (Seen::default(), Seen::default());
        }
        let recipient = recipient.to_ascii_lowercase();
        let by_recipient = self.bump(AttemptKey::Recipient, &recipient, now);
        let by_triplet = if self.counts(AttemptKey::Triplet) {
            let triplet = (client, sender.to_ascii_lowercase(), &recipient);
            self.bump(AttemptKey::Triplet, &triplet, now)
        } else {
            Seen::default()
        };
        (by_recipient, by_triplet)
    }

    /// Counts a transaction started by `sender`.
    pub fn sender(&self, sender: &str, now: Duration) -> Seen {
        if !self.counts(AttemptKey::Sender) {
            return Seen::default();
        }
        self.bump(AttemptKey::Sender, &sender.to_ascii_lowercase(), now)
    }

    /// Keys counted now for `key`.
    #[cfg(test)]
    pub fn len(&self, key: AttemptKey) -> usize {
        self.tables[index(key)].lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(keys: &[AttemptKey]) -> AttemptCounters {
        let c = AttemptCounters::default();
        for k in keys {
            c.counted[index(*k)].store(true, std::sync::atomic::Ordering::Relaxed);
        }
        c
    }

    #[test]
    fn counts_only_keys_in_use() {
        let c = counting(&[AttemptKey::Recipient]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Duration::from_secs(7);
        assert_eq!(c.connection(ip, t).n, 0);
        let (r, triplet) = c.recipient(ip, "a@x.test", "B@y.test", t);
        assert_eq!((r.n, triplet.n), (1, 0));
        let (r, _) = c.recipient(ip, "a@x.test", "b@y.test", t * 2);
        assert_eq!((r.n, r.first), (2, t), "the first attempt's time is kept");
    }

    #[test]
    fn triplets_differ_by_client_and_sender() {
        let c = counting(&[AttemptKey::Triplet]);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Duration::ZERO;
        assert_eq!(c.recipient(one, "a@x.test", "r@y.test", t).1.n, 1);
        assert_eq!(c.recipient(one, "a@x.test", "r@y.test", t).1.n, 2);
        assert_eq!(c.recipient(two, "a@x.test", "r@y.test", t).1.n, 1);
        assert_eq!(c.recipient(one, "", "r@y.test", t).1.n, 1);
    }

    #[test]
    fn forgets_the_key_counted_longest_ago_when_full() {
        let c = counting(&[AttemptKey::Sender]);
        let t = Duration::ZERO;
        for i in 0..MAX_ENTRIES {
            c.sender(&format!("s{i}@x.test"), t);
        }
        // Counting s0 again makes s1 the one counted longest ago.
        assert_eq!(c.sender("s0@x.test", t).n, 2);
        assert_eq!(c.sender("new@x.test", t).n, 1);
        assert_eq!(c.len(AttemptKey::Sender), MAX_ENTRIES);
        assert_eq!(c.sender("s0@x.test", t).n, 3, "s0 is kept");
        assert_eq!(c.sender("s1@x.test", t).n, 1, "s1 was forgotten");
    }
}
