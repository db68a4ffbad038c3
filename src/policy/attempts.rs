//! Attempt counters for `attempt` conditions: how many times a client connected, a sender
//! started a transaction, or a recipient (alone or as a triplet) was offered — farm-wide,
//! across hosts, as a sender sees it when it retries on another MX.
//!
//! Only the keys that some rule uses are counted, and each key's table is bounded, so an
//! address-spraying client cannot grow the farm's memory without limit.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

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
    counts: HashMap<String, (u32, u64)>,
    /// Increments so far; the second field of an entry says when it was last touched.
    tick: u64,
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
                if let Condition::Attempt { per, .. } = condition {
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

    /// Counts one more attempt for `value` and returns its number (1 for the first);
    /// 0 if no rule counts this key.
    pub fn bump(&self, key: AttemptKey, value: &str) -> u32 {
        if !self.counts(key) {
            return 0;
        }
        let mut table = self.tables[index(key)].lock();
        table.tick += 1;
        let tick = table.tick;
        if table.counts.len() >= MAX_ENTRIES && !table.counts.contains_key(value) {
            table.forget_oldest_half();
        }
        let entry = table.counts.entry(value.to_string()).or_insert((0, tick));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = tick;
        entry.0
    }

    /// Counts a connection from `client`.
    pub fn connection(&self, client: IpAddr) -> u32 {
        if !self.counts(AttemptKey::Client) {
            return 0;
        }
        self.bump(AttemptKey::Client, &client.to_string())
    }

    /// Counts an offer of `recipient` from `sender` by `client`: returns the recipient and
    /// the triplet attempt numbers.
    pub fn recipient(&self, client: IpAddr, sender: &str, recipient: &str) -> (u32, u32) {
        let recipient_key = recipient.to_ascii_lowercase();
        let by_recipient = self.bump(AttemptKey::Recipient, &recipient_key);
        let by_triplet = if self.counts(AttemptKey::Triplet) {
            let triplet = format!("{client}/{}/{recipient_key}", sender.to_ascii_lowercase());
            self.bump(AttemptKey::Triplet, &triplet)
        } else {
            0
        };
        (by_recipient, by_triplet)
    }

    /// Counts a transaction started by `sender`.
    pub fn sender(&self, sender: &str) -> u32 {
        if !self.counts(AttemptKey::Sender) {
            return 0;
        }
        self.bump(AttemptKey::Sender, &sender.to_ascii_lowercase())
    }
}

impl Table {
    fn forget_oldest_half(&mut self) {
        let mut ticks: Vec<u64> = self.counts.values().map(|(_, t)| *t).collect();
        let mid = ticks.len() / 2;
        let (_, cutoff, _) = ticks.select_nth_unstable(mid);
        let cutoff = *cutoff;
        self.counts.retain(|_, (_, t)| *t > cutoff);
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
        assert_eq!(c.connection(ip), 0);
        assert_eq!(c.recipient(ip, "a@x.test", "B@y.test"), (1, 0));
        assert_eq!(c.recipient(ip, "a@x.test", "b@y.test"), (2, 0));
    }

    #[test]
    fn triplets_differ_by_client_and_sender() {
        let c = counting(&[AttemptKey::Triplet]);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(c.recipient(one, "a@x.test", "r@y.test").1, 1);
        assert_eq!(c.recipient(one, "a@x.test", "r@y.test").1, 2);
        assert_eq!(c.recipient(two, "a@x.test", "r@y.test").1, 1);
        assert_eq!(c.recipient(one, "", "r@y.test").1, 1);
    }

    #[test]
    fn forgets_the_least_recently_used_half_when_full() {
        let mut table = Table::default();
        for i in 0..10u64 {
            table.counts.insert(i.to_string(), (1, i));
        }
        table.forget_oldest_half();
        assert_eq!(table.counts.len(), 4);
        assert!(table.counts.contains_key("9"));
        assert!(!table.counts.contains_key("0"));
    }
}
