//! Attempt counters for `attempt` conditions: how many times a client connected, a sender
//! started a transaction, or a recipient (alone or as a triplet) was offered — farm-wide,
//! across hosts, as a sender sees it when it retries on another MX.
//!
//! Only the keys that some rule uses are counted, and each key's table is bounded, so an
//! address-spraying client cannot grow the farm's memory without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;

use super::Seen;

use crate::scenario::{AttemptKey, Condition, Scenario};

/// Entries per key kind before the oldest half is forgotten.
const MAX_ENTRIES: usize = 200_000;

/// The farm's attempt counters.
#[derive(Debug, Default)]
pub struct AttemptCounters {
    counted: [bool; 4],
    tables: [Mutex<Table>; 4],
}

#[derive(Debug, Default)]
struct Table {
    counts: HashMap<String, Entry>,
    /// Increments so far; an entry's `touched` says when it was last counted.
    tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    n: u32,
    first: Duration,
    touched: u64,
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
        let mut counters = Self::default();
        for rule in scenario.hosts.iter().flat_map(|h| h.rules.iter()) {
            for condition in &rule.when {
                if let Condition::Attempt { per, .. } | Condition::FirstAttemptWithin { per, .. } =
                    condition
                {
                    counters.counted[index(*per)] = true;
                }
            }
        }
        counters
    }

    /// Whether any rule counts `key`.
    pub fn counts(&self, key: AttemptKey) -> bool {
        self.counted[index(key)]
    }

    /// Counts one more attempt for `value` at farm time `now`; returns its number (1 for
    /// the first) and when the first was. Zero if no rule counts this key.
    pub fn bump(&self, key: AttemptKey, value: &str, now: Duration) -> Seen {
        if !self.counts(key) {
            return Seen::default();
        }
        let mut table = self.tables[index(key)].lock();
        table.tick += 1;
        let tick = table.tick;
        if table.counts.len() >= MAX_ENTRIES && !table.counts.contains_key(value) {
            table.forget_oldest_half();
        }
        let entry = table.counts.entry(value.to_string()).or_insert(Entry {
            n: 0,
            first: now,
            touched: tick,
        });
        entry.n = entry.n.saturating_add(1);
        entry.touched = tick;
        Seen {
            n: entry.n,
            first: entry.first,
        }
    }

    /// Counts a connection from `client`.
    pub fn connection(&self, client: IpAddr, now: Duration) -> Seen {
        if !self.counts(AttemptKey::Client) {
            return Seen::default();
        }
        self.bump(AttemptKey::Client, &client.to_string(), now)
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
        let recipient_key = recipient.to_ascii_lowercase();
        let by_recipient = self.bump(AttemptKey::Recipient, &recipient_key, now);
        let by_triplet = if self.counts(AttemptKey::Triplet) {
            let triplet = format!("{client}/{}/{recipient_key}", sender.to_ascii_lowercase());
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
}

impl Table {
    fn forget_oldest_half(&mut self) {
        let mut ticks: Vec<u64> = self.counts.values().map(|e| e.touched).collect();
        let mid = ticks.len() / 2;
        let (_, cutoff, _) = ticks.select_nth_unstable(mid);
        let cutoff = *cutoff;
        self.counts.retain(|_, e| e.touched > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(keys: &[AttemptKey]) -> AttemptCounters {
        let mut c = AttemptCounters::default();
        for k in keys {
            c.counted[index(*k)] = true;
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
    fn forgets_the_least_recently_used_half_when_full() {
        let mut table = Table::default();
        for i in 0..10u64 {
            let entry = Entry {
                n: 1,
                first: Duration::ZERO,
                touched: i,
            };
            table.counts.insert(i.to_string(), entry);
        }
        table.forget_oldest_half();
        assert_eq!(table.counts.len(), 4);
        assert!(table.counts.contains_key("9"));
        assert!(!table.counts.contains_key("0"));
    }
}
