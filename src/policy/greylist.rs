//! Greylisting with postgrey's semantics (postgrey 1.37; see the reference notes §4.1).
//!
//! The key is (client network, normalised sender, recipient). A new triplet is deferred;
//! a retry before `delay` is deferred again and keeps its first-seen time; a first retry
//! later than `retry_window` starts over; once passed, the triplet passes until it has not
//! been seen for `expiry`. A client IP that passed `whitelist_after` times (at most one pass
//! per hour counts) skips greylisting altogether.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::Mutex;
use serde::Serialize;

use super::bounded::{Bounded, Key, Keys, Stamp};
use crate::scenario::{Greylist, StateScope};

/// The greylisting verdict for one triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreyVerdict {
    /// Let it through to the next rules.
    Pass,
    /// Defer; the delay has this much left.
    Defer { remaining: Duration },
}

/// One triplet: its times, plus its key and its place in the order (see `bounded`), and
/// the triplet itself, kept only so that the control API can show it
/// ([`GreylistStore::entries`]): the lookups use the key.
#[derive(Debug, Clone)]
struct Entry {
    first_seen: Stamp,
    last_seen: Stamp,
    passed: bool,
    triplet: Box<Triplet>,
}

/// What a triplet is, as compared: the client network, the sender and the recipient.
#[derive(Debug, Clone, Hash)]
struct Triplet {
    net: IpNet,
    sender: String,
    recipient: String,
}

/// One client's passes, for the whitelist.
#[derive(Debug, Clone, Copy)]
struct Whitelist {
    client: IpAddr,
    passes: u32,
    last_counted: Stamp,
    last_seen: Stamp,
    /// Whitelisted by hand ([`GreylistStore::whitelist`]): passes whatever the rule's
    /// `whitelist-after` says, until not seen for `expiry`.
    by_hand: bool,
}

impl Whitelist {
    /// Whether the client skips greylisting at `now`: whitelisted by hand, or by passes,
    /// and seen within the expiry.
    fn skips(&self, config: &Greylist, now: Stamp) -> bool {
        self.last_seen.age(now) <= config.expiry
            && (self.by_hand || config.whitelist_after.is_some_and(|n| self.passes >= n))
    }
}

/// One triplet as the control API shows it (`GET /greylist`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GreylistEntry {
    /// What names it for [`Farm::forget_greylisted`](crate::Farm::forget_greylisted) (`DELETE /greylist/{id}`).
    pub id: String,
    /// Which greylist: the rule (`mx1/rule 1`), and `@host` when its state is per host.
    pub greylist: String,
    /// The client network the triplet is for (a /24 or /64 by default).
    pub client_network: String,
    pub sender: String,
    pub recipient: String,
    /// Farm time of the first attempt of this triplet (ms in JSON).
    #[serde(rename = "first_seen_ms", with = "crate::millis")]
    pub first_seen: Duration,
    #[serde(rename = "last_seen_ms", with = "crate::millis")]
    pub last_seen: Duration,
    /// Whether it has passed: then it passes until not seen for `expiry`.
    pub passed: bool,
    /// From when a retry passes: first seen plus the delay.
    #[serde(rename = "passes_at_ms", with = "crate::millis")]
    pub passes_at: Duration,
    /// When it is forgotten unless seen again: the end of the retry window for a
    /// triplet that has not passed, `expiry` after it was last seen for one that has.
    #[serde(rename = "forgotten_at_ms", with = "crate::millis")]
    pub forgotten_at: Duration,
}

/// One client on a greylist's whitelist, as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhitelistEntry {
    pub greylist: String,
    pub client: IpAddr,
    /// Passes counted towards `whitelist-after` (at most one an hour).
    pub passes: u32,
    /// Whether the client skips greylisting now.
    pub whitelisted: bool,
    /// Whitelisted by hand (`POST /greylist/whitelist`).
    pub by_hand: bool,
    #[serde(rename = "last_seen_ms", with = "crate::millis")]
    pub last_seen: Duration,
}

/// The state of one greylist: one rule's, and one host's if its state is per host, so
/// that two greylist rules never see each other's triplets and a host that has no
/// greylist rule never touches any. Its triplets and its whitelisted clients are each
/// kept to `max-entries`; when a table is full, the entry seen longest ago is forgotten
/// (a triplet forgotten so is greylisted again at its next attempt, as a new one).
#[derive(Debug)]
pub struct GreylistStore {
    /// The rule's settings, for listings (the checks get the rule's own).
    config: parking_lot::RwLock<Greylist>,
    max_entries: usize,
    keys: Keys,
    triplets: Mutex<Bounded<Entry>>,
    clients: Mutex<Bounded<Whitelist>>,
    /// Whether a client was ever whitelisted by hand: until then a rule without
    /// `whitelist-after` never takes the clients' lock, as before the control API.
    by_hand: std::sync::atomic::AtomicBool,
}

/// What identifies one greylist's state: the rule, and the host if the state is per host.
pub fn state_key(rule_id: &str, scope: StateScope, host: &str) -> String {
    match scope {
        StateScope::Shared => rule_id.to_string(),
        StateScope::Host => format!("{rule_id}@{host}"),
    }
}

impl GreylistStore {
    /// An empty store for a greylist configured as `config`.
    pub fn new(config: &Greylist) -> Self {
        Self {
            config: parking_lot::RwLock::new(config.clone()),
            max_entries: config.max_entries,
            keys: Keys::default(),
            triplets: Mutex::default(),
            clients: Mutex::default(),
            by_hand: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Checks (and records) one triplet at farm time `now`.
    pub fn check(
        &self,
        config: &Greylist,
        client: IpAddr,
        sender: &str,
        recipient: &str,
        now: Duration,
    ) -> GreyVerdict {
        let now = Stamp::at(now);
        let client_key = self.keys.of(&client);
        let by_hand = self.by_hand.load(std::sync::atomic::Ordering::Relaxed);
        if config.whitelist_after.is_some() || by_hand {
            let mut clients = self.clients.lock();
            clients.expire(|w| w.last_seen.age(now) > config.expiry);
            let listed = clients
                .get(&client_key)
                .is_some_and(|w| w.skips(config, now));
            if listed {
                self.count_pass(&mut clients, client, client_key, now);
                return GreyVerdict::Pass;
            }
        }
        // The key is made before the lock is taken: normalising and hashing the triplet
        // is most of the work.
        let triplet = triplet(config, client, sender, recipient);
        let key = self.keys.of(&triplet);
        let verdict = {
            let mut triplets = self.triplets.lock();
            // A triplet not seen for `expiry` is forgotten, and so is one that never
            // passed and whose retry window is over: its next attempt starts over anyway.
            triplets.expire(|e| {
                e.last_seen.age(now) > config.expiry
                    || (!e.passed && e.first_seen.age(now) > config.retry_window)
            });
            triplets.make_room(&key, self.max_entries);
            let entry = triplets.touch(key, || Entry {
                first_seen: now,
                last_seen: now,
                passed: false,
                triplet: Box::new(triplet),
            });
            let expired = entry.last_seen.age(now) > config.expiry;
            let waited = entry.first_seen.age(now);
            if expired || (!entry.passed && waited > config.retry_window) {
                entry.first_seen = now;
                entry.passed = false;
            }
            entry.last_seen = now;
            let waited = entry.first_seen.age(now);
            if entry.passed || waited >= config.delay {
                entry.passed = true;
                GreyVerdict::Pass
            } else {
                GreyVerdict::Defer {
                    remaining: config.delay - waited,
                }
            }
        };
        if verdict == GreyVerdict::Pass && config.whitelist_after.is_some() {
            self.count_pass(&mut self.clients.lock(), client, client_key, now);
        }
        verdict
    }

    /// Lists with `config` from now on: the rule's settings in a replaced scenario.
    pub fn reconfigure(&self, config: &Greylist) {
        let mut current = self.config.write();
        if *current != *config {
            *current = config.clone();
        }
    }

    /// Every triplet kept now, expired ones not yet forgotten included, as the control
    /// API shows them; `name` is this store's [`state_key`].
    pub fn entries(&self, name: &str) -> Vec<GreylistEntry> {
        let config = self.config.read().clone();
        let at = |stamp: Stamp| Duration::from_nanos(stamp.nanos());
        self.triplets
            .lock()
            .iter()
            .map(|(key, e)| GreylistEntry {
                id: key.to_hex(),
                greylist: name.to_string(),
                client_network: e.triplet.net.to_string(),
                sender: e.triplet.sender.clone(),
                recipient: e.triplet.recipient.clone(),
                first_seen: at(e.first_seen),
                last_seen: at(e.last_seen),
                passed: e.passed,
                passes_at: at(e.first_seen).saturating_add(config.delay),
                forgotten_at: if e.passed {
                    at(e.last_seen).saturating_add(config.expiry)
                } else {
                    at(e.first_seen).saturating_add(config.retry_window)
                },
            })
            .collect()
    }

    /// The clients on this greylist's whitelist, counting or listed.
    pub fn whitelist_entries(&self, name: &str, now: Duration) -> Vec<WhitelistEntry> {
        let config = self.config.read().clone();
        let now = Stamp::at(now);
        self.clients
            .lock()
            .iter()
            .map(|(_, w)| WhitelistEntry {
                greylist: name.to_string(),
                client: w.client,
                passes: w.passes,
                whitelisted: w.skips(&config, now),
                by_hand: w.by_hand,
                last_seen: Duration::from_nanos(w.last_seen.nanos()),
            })
            .collect()
    }

    /// Forgets the triplet whose [`GreylistEntry::id`] is `id`: its next attempt is
    /// greylisted as a new one. False if this store has no such triplet.
    pub fn forget(&self, id: &str) -> bool {
        Key::from_hex(id).is_some_and(|key| self.triplets.lock().remove(&key).is_some())
    }

    /// Puts `client` on the whitelist by hand, at farm time `now`: it skips this
    /// greylist until it has not been seen for `expiry`.
    pub fn whitelist(&self, client: IpAddr, now: Duration) {
        let now = Stamp::at(now);
        let key = self.keys.of(&client);
        self.by_hand
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut clients = self.clients.lock();
        clients.make_room(&key, self.max_entries);
        let entry = clients.touch(key, || Whitelist {
            client,
            passes: 0,
            last_counted: Stamp::default(),
            last_seen: now,
            by_hand: true,
        });
        entry.by_hand = true;
        entry.last_seen = now;
    }

    /// Forgets every triplet and every client.
    pub fn clear(&self) {
        *self.triplets.lock() = Bounded::default();
        *self.clients.lock() = Bounded::default();
    }

    fn count_pass(
        &self,
        clients: &mut Bounded<Whitelist>,
        client: IpAddr,
        client_key: Key,
        now: Stamp,
    ) {
        clients.make_room(&client_key, self.max_entries);
        let entry = clients.touch(client_key, || Whitelist {
            client,
            passes: 0,
            last_counted: Stamp::default(),
            last_seen: now,
            by_hand: false,
        });
        entry.last_seen = now;
        // postgrey counts at most one successful delivery per hour towards the whitelist.
        if entry.passes == 0 || entry.last_counted.age(now) >= Duration::from_secs(3600) {
            entry.passes = entry.passes.saturating_add(1);
            entry.last_counted = now;
        }
    }

    /// Triplets kept now, expired ones not yet forgotten included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.triplets.lock().len()
    }

    /// Whitelist entries (clients) kept now.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.clients.lock().len()
    }
}

/// What identifies a triplet within one store: the client network and the sender and
/// recipient as compared.
fn triplet(config: &Greylist, client: IpAddr, sender: &str, recipient: &str) -> Triplet {
    let net = client_network(client, config.ipv4_prefix, config.ipv6_prefix);
    let sender = if config.normalize_sender {
        normalize_sender(sender)
    } else {
        sender.to_ascii_lowercase()
    };
    Triplet {
        net,
        sender,
        recipient: recipient.to_ascii_lowercase(),
    }
}

/// The client's network at the given prefix lengths (32 and 128 keep the exact address).
pub fn client_network(client: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> IpNet {
    let prefix = match client {
        IpAddr::V4(_) => ipv4_prefix.min(32),
        IpAddr::V6(_) => ipv6_prefix.min(128),
    };
    IpNet::new(client, prefix)
        .map(|net| net.trunc())
        .unwrap_or_else(|_| IpNet::from(client))
}

/// postgrey's sender normalisation: lowercase, BATV `prvs=tag=` stripped, `+extension`
/// stripped, and each run of digits in the local part replaced by `#` (VERP).
pub fn normalize_sender(sender: &str) -> String {
    let sender = sender.to_ascii_lowercase();
    let Some((local, domain)) = sender.rsplit_once('@') else {
        return sender;
    };
    let local = match local.strip_prefix("prvs=") {
        Some(rest) => rest.split_once('=').map_or(rest, |(_, user)| user),
        None => local,
    };
    let local = local.split_once('+').map_or(local, |(user, _)| user);
    let mut out = String::with_capacity(local.len() + domain.len() + 1);
    let mut in_digits = false;
    for c in local.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out.push('@');
    out.push_str(domain);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Reply;

    fn postgrey() -> Greylist {
        Greylist {
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86400),
            expiry: Duration::from_secs(35 * 86400),
            whitelist_after: Some(5),
            scope: StateScope::Shared,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            normalize_sender: true,
            max_entries: 1_000_000,
            reply: Reply::new(450, Some("4.2.0"), "Greylisted"),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn masks_client_networks() {
        let cases = [
            ("192.0.2.77", 24, 64, "192.0.2.0/24"),
            ("192.0.2.77", 32, 64, "192.0.2.77/32"),
            ("2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:2:3:4:5:6", 24, 128, "2001:db8:1:2:3:4:5:6/128"),
        ];
        for (ip, v4, v6, expected) in cases {
            let net = client_network(ip.parse().unwrap(), v4, v6);
            assert_eq!(net.to_string(), expected, "{ip}");
        }
    }

    #[test]
    fn normalizes_senders_like_postgrey() {
        let cases = [
            ("Bob@Example.test", "bob@example.test"),
            ("bob+news@example.test", "bob@example.test"),
            ("prvs=1234abcd=bob@example.test", "bob@example.test"),
            ("bounce-12345-678@lists.test", "bounce-#-#@lists.test"),
            ("", ""),
        ];
        for (sender, expected) in cases {
            assert_eq!(normalize_sender(sender), expected, "{sender}");
        }
    }

    #[test]
    fn follows_the_postgrey_timeline() {
        let g = postgrey();
        let store = GreylistStore::new(&g);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let check =
            |at: u64, client: IpAddr| store.check(&g, client, "a@x.test", "r@y.test", secs(at));
        // (farm time, client, expected)
        let steps: [(u64, IpAddr, GreyVerdict); 5] = [
            (
                0,
                ip,
                GreyVerdict::Defer {
                    remaining: secs(300),
                },
            ),
            // Early retry: deferred, and first-seen stays at 0.
            (
                120,
                ip,
                GreyVerdict::Defer {
                    remaining: secs(180),
                },
            ),
            // Another address in the same /24 is the same triplet.
            (
                200,
                "192.0.2.99".parse().unwrap(),
                GreyVerdict::Defer {
                    remaining: secs(100),
                },
            ),
            (300, ip, GreyVerdict::Pass),
            // Once passed, it passes.
            (86400, ip, GreyVerdict::Pass),
        ];
        for (at, client, expected) in steps {
            assert_eq!(check(at, client), expected, "at {at}s");
        }
    }

    #[test]
    fn a_retry_after_the_window_starts_over_and_old_entries_expire() {
        let g = postgrey();
        let store = GreylistStore::new(&g);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let check = |at: u64| store.check(&g, ip, "a@x.test", "r@y.test", secs(at));
        assert!(matches!(check(0), GreyVerdict::Defer { .. }));
        let late = 2 * 86400 + 1;
        assert_eq!(
            check(late),
            GreyVerdict::Defer {
                remaining: secs(300)
            }
        );
        assert_eq!(check(late + 300), GreyVerdict::Pass);
        // Not seen for more than 35 days: greylisted again.
        let much_later = late + 300 + 35 * 86400 + 1;
        assert!(matches!(check(much_later), GreyVerdict::Defer { .. }));
    }

    #[test]
    fn whitelists_a_client_after_five_passes_at_most_one_per_hour() {
        let g = postgrey();
        let store = GreylistStore::new(&g);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let mut t = 0;
        for i in 0..5 {
            let rcpt = format!("r{i}@y.test");
            store.check(&g, ip, "a@x.test", &rcpt, secs(t));
            store.check(&g, ip, "a@x.test", &rcpt, secs(t + 300));
            // A second pass within the hour does not count.
            store.check(&g, ip, "a@x.test", &rcpt, secs(t + 600));
            t += 3600;
        }
        let fresh = store.check(&g, ip, "new@x.test", "new@y.test", secs(t));
        assert_eq!(fresh, GreyVerdict::Pass);
        // The whitelist is per IP, not per network.
        let neighbour: IpAddr = "192.0.2.11".parse().unwrap();
        let other = store.check(&g, neighbour, "new2@x.test", "new@y.test", secs(t));
        assert!(matches!(other, GreyVerdict::Defer { .. }));
    }

    #[test]
    fn four_passes_are_not_enough_and_zero_disables() {
        let mut g = postgrey();
        let store = GreylistStore::new(&g);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        for i in 0..4u64 {
            let rcpt = format!("r{i}@y.test");
            store.check(&g, ip, "a@x.test", &rcpt, secs(i * 3600));
            store.check(&g, ip, "a@x.test", &rcpt, secs(i * 3600 + 300));
        }
        let fifth = store.check(&g, ip, "a@x.test", "z@y.test", secs(5 * 3600));
        assert!(matches!(fifth, GreyVerdict::Defer { .. }));
        g.whitelist_after = None;
        let off = GreylistStore::new(&g);
        assert!(matches!(
            off.check(&g, ip, "a@x.test", "r@y.test", secs(0)),
            GreyVerdict::Defer { .. }
        ));
    }

    /// A triplet that never passed is dead once its retry window is over (its next
    /// attempt would start over), so it leaves then, long before the expiry.
    #[test]
    fn triplets_that_never_passed_leave_after_the_retry_window() {
        let g = postgrey();
        let store = GreylistStore::new(&g);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        for i in 0..20 {
            store.check(&g, ip, "a@x.test", &format!("r{i}@y.test"), secs(0));
        }
        store.check(&g, ip, "a@x.test", "new@y.test", secs(2 * 86400));
        assert_eq!(store.len(), 21, "within the window");
        store.check(&g, ip, "a@x.test", "new2@y.test", secs(2 * 86400 + 1));
        let step = super::super::bounded::EXPIRE_PER_CALL;
        assert_eq!(store.len(), 22 - step);
    }

    #[test]
    fn a_full_store_forgets_the_triplet_seen_longest_ago() {
        let mut g = postgrey();
        g.max_entries = 3;
        let store = GreylistStore::new(&g);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        for (i, at) in [(0, 0), (1, 10), (2, 20), (0, 30), (3, 40)] {
            store.check(&g, ip, "a@x.test", &format!("r{i}@y.test"), secs(at));
        }
        assert_eq!(store.len(), 3);
        // r1 was seen longest ago (r0 came back at 30): it starts over, r0 does not.
        assert_eq!(
            store.check(&g, ip, "a@x.test", "r1@y.test", secs(400)),
            GreyVerdict::Defer {
                remaining: secs(300)
            }
        );
        assert_eq!(
            store.check(&g, ip, "a@x.test", "r0@y.test", secs(400)),
            GreyVerdict::Pass
        );
    }
}
