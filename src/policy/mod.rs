//! Deciding what a host answers (DESIGN principle 2): [`HostPolicy::decide`] takes the
//! host's rules, the point being decided, the facts the session knows, the connection's
//! own policy state and farm time, and returns a [`Verdict`] that says everything the
//! session must do. Refusing mail is a verdict, never an error.
//!
//! Policy owns the state that rules keep: the attempt counters ([`attempts`]), greylisting
//! ([`greylist`]), rate limits ([`rate`]) and connection slots ([`concurrency`]), all
//! updated here as commands are decided, never by the session. Each stateful rule has a
//! store of its own (shared by the hosts that share its state), found once when the host
//! is set up: a decision never looks a store up, a host without such rules never touches
//! one, and every store is bounded and forgets in time order ([`bounded`]), so its lock
//! is held for microseconds. Time and chance are inputs:
//! `now` comes from the caller, randomness from the connection's generator, seeded from
//! the scenario's seed and the connection number.

pub(crate) mod attempts;
pub(crate) mod bench;
mod bounded;
pub(crate) mod concurrency;
mod conditions;
pub(crate) mod dns;
pub(crate) mod greylist;
pub(crate) mod learnt;
mod placeholders;
mod points;
pub(crate) mod rate;
mod verdict;

#[cfg(test)]
mod learnt_tests;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;

pub(crate) use points::{Connect, Data, Ehlo, EndOfData, Mail, Point, Quit, Rcpt, Rset, Starttls};
pub(crate) use verdict::{Act, HideStarttls, LoseReply, Verdict};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::scenario::{ActionKind, Condition, Host, RateKey, Rule, Scenario, Stage};
use attempts::AttemptCounters;
use concurrency::{ConcurrencySlot, ConcurrencyStore};
use conditions::{Attempts, Known};
use greylist::{GreyVerdict, GreylistStore};
use placeholders::Values;
use rate::RateStore;

/// How often, and since when, a key has been seen: the attempt number of the current
/// command (0 where not counted) and the farm time of the key's first attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub n: u32,
    pub first: Duration,
}

/// What the farm's policy keeps between connections, for all its hosts.
#[derive(Debug)]
pub(crate) struct PolicyState {
    attempts: AttemptCounters,
    /// The stores of greylist and rate-limit rules by state key, for hosts to find theirs
    /// as they are set up (never while deciding).
    greylists: Mutex<HashMap<String, Arc<GreylistStore>>>,
    rates: Mutex<HashMap<String, Arc<RateStore>>>,
    /// The scenario's seed; changed when the scenario is replaced with its state kept.
    seed: AtomicU64,
}

impl PolicyState {
    /// Empty stores for a farm playing `scenario`.
    pub(crate) fn for_scenario(scenario: &Scenario) -> Arc<Self> {
        Arc::new(Self {
            attempts: AttemptCounters::for_scenario(scenario),
            greylists: Mutex::default(),
            rates: Mutex::default(),
            seed: AtomicU64::new(scenario.seed),
        })
    }

    /// Goes on with `scenario` (replacing the farm's, state kept): its seed, and attempt
    /// counts for the keys its rules use. Greylists and rate limits keep their state per
    /// rule: a rule of the same name (`mx1/rule 1`) in the new scenario finds it.
    pub(crate) fn adopt(&self, scenario: &Scenario) {
        self.seed.store(scenario.seed, Ordering::Relaxed);
        self.attempts.count_for(scenario);
    }

    /// The greylists' stores with their names, sorted by name, so that listings are
    /// stable.
    fn greylist_stores(&self) -> Vec<(String, Arc<GreylistStore>)> {
        let mut stores: Vec<_> = self
            .greylists
            .lock()
            .iter()
            .map(|(name, store)| (name.clone(), store.clone()))
            .collect();
        stores.sort_by(|a, b| a.0.cmp(&b.0));
        stores
    }

    /// Every greylist triplet kept, by greylist, then oldest first.
    pub(crate) fn greylist_entries(&self) -> Vec<greylist::GreylistEntry> {
        let mut entries = Vec::new();
        for (name, store) in self.greylist_stores() {
            let mut of_store = store.entries(&name);
            of_store.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
            entries.extend(of_store);
        }
        entries
    }

    /// Every client on a greylist's whitelist (counting passes or listed).
    pub(crate) fn whitelist_entries(&self, now: Duration) -> Vec<greylist::WhitelistEntry> {
        let mut entries = Vec::new();
        for (name, store) in self.greylist_stores() {
            let mut of_store = store.whitelist_entries(&name, now);
            of_store.sort_by_key(|w| w.client);
            entries.extend(of_store);
        }
        entries
    }

    /// Forgets the triplet `id` names, in whichever greylist holds it.
    pub(crate) fn forget_greylisted(&self, id: &str) -> bool {
        self.greylist_stores()
            .iter()
            .any(|(_, store)| store.forget(id))
    }

    /// Whitelists `client` by hand on every greylist; returns how many greylists there are.
    pub(crate) fn whitelist(&self, client: IpAddr, now: Duration) -> usize {
        let stores = self.greylist_stores();
        for (_, store) in &stores {
            store.whitelist(client, now);
        }
        stores.len()
    }

    /// Forgets what the stateful rules learnt: greylist triplets and whitelists, rate
    /// counts, attempt counts. Open connections stay counted: they are still open.
    pub(crate) fn clear(&self) {
        for (_, store) in self.greylist_stores() {
            store.clear();
        }
        for store in self.rates.lock().values() {
            store.clear();
        }
        self.attempts.clear();
    }
}

/// The store a rule keeps its state in.
#[derive(Debug)]
enum RuleStore {
    /// A rule without state.
    None,
    Greylist(Arc<GreylistStore>),
    Rate(Arc<RateStore>),
    Concurrency(Arc<ConcurrencyStore>),
}

/// One host's rules over the farm's policy state: what decides every reply of the host.
#[derive(Debug)]
pub(crate) struct HostPolicy {
    hostname: String,
    rules: Arc<[Rule]>,
    /// The store of each rule, in the order of `rules`.
    stores: Vec<RuleStore>,
    state: Arc<PolicyState>,
    /// Connections this host has had, for `connection` conditions.
    connections: AtomicU64,
    /// The DNS lookups the rules of each stage test, by `Stage::rank`.
    dns_needs: [learnt::DnsNeeds; Stage::ALL.len()],
}

/// The policy's side of one connection: the connection's random generator, what the
/// attempt counters said at its connect and its last MAIL, and the connection slots that
/// concurrency limits gave it. The session holds it and hands it to every decision.
#[derive(Debug)]
pub(crate) struct Conversation {
    client: IpAddr,
    host_connection: u64,
    rng: ChaCha8Rng,
    client_seen: Seen,
    sender_seen: Seen,
    slots: Vec<ConcurrencySlot>,
}

impl Conversation {
    /// Gives back the connection slots, as the connection ends (before the client can see
    /// that it ended, so that a sender reconnecting at once finds its slot free).
    pub(crate) fn release(&mut self) {
        self.slots.clear();
    }
}

/// What the session knows of the conversation when a point is decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    /// The EHLO/HELO name, once given.
    pub helo: Option<&'a str>,
    /// Whether STARTTLS has completed.
    pub tls: bool,
    /// The transaction in progress, if any: its sender (empty for `<>`), the SIZE= of its
    /// MAIL and the recipients accepted so far.
    pub sender: Option<&'a str>,
    pub declared_size: Option<u64>,
    pub accepted: &'a [String],
    /// Transactions started (MAIL accepted) on this connection so far.
    pub transactions: u32,
    /// What the farm's DNS said of the client (the lookups the rules need).
    pub dns: &'a learnt::DnsFacts,
}

impl Default for Facts<'_> {
    /// What a session knows before the client has said anything.
    fn default() -> Self {
        static NOTHING: learnt::DnsFacts = learnt::DnsFacts {
            ptr: None,
            fcrdns: None,
            helo: None,
            spf: None,
        };
        Facts {
            helo: None,
            tls: false,
            sender: None,
            declared_size: None,
            accepted: &[],
            transactions: 0,
            dns: &NOTHING,
        }
    }
}

impl HostPolicy {
    pub(crate) fn new(host: &Host, state: Arc<PolicyState>) -> Self {
        let stores = host
            .rules
            .iter()
            .map(|rule| match &rule.then.kind {
                ActionKind::Greylist(greylist) => {
                    let key = greylist::state_key(&rule.origin, greylist.scope, &host.name);
                    let mut stores = state.greylists.lock();
                    let store = stores
                        .entry(key)
                        .or_insert_with(|| Arc::new(GreylistStore::new(greylist)));
                    // A scenario replaced with its state kept may have changed the rule.
                    store.reconfigure(greylist);
                    RuleStore::Greylist(store.clone())
                }
                ActionKind::RateLimit(limit) => {
                    let key = greylist::state_key(&rule.origin, limit.scope, &host.name);
                    let mut stores = state.rates.lock();
                    let store = stores
                        .entry(key)
                        .or_insert_with(|| Arc::new(RateStore::new(limit)));
                    RuleStore::Rate(store.clone())
                }
                // Connections are counted per host: each MX host has its own limit.
                ActionKind::Concurrency(_) => RuleStore::Concurrency(Arc::default()),
                _ => RuleStore::None,
            })
            .collect();
        Self {
            hostname: host.hostname.clone(),
            rules: host.rules.clone(),
            stores,
            state,
            connections: AtomicU64::new(0),
            dns_needs: Stage::ALL.map(|stage| learnt::DnsNeeds::of(&host.rules, stage)),
        }
    }

    /// The policy of `host` where `old` served until a scenario replacement, on the same
    /// listener: the connections the old one counts still hold their concurrency slots
    /// (a concurrency rule of the same name keeps its store), and with the state kept,
    /// the host's connections go on being numbered from where they were.
    pub(crate) fn succeeding(
        host: &Host,
        state: Arc<PolicyState>,
        old: &HostPolicy,
        keep_state: bool,
    ) -> Self {
        let mut policy = Self::new(host, state);
        for (rule, store) in policy.rules.iter().zip(policy.stores.iter_mut()) {
            if !matches!(store, RuleStore::Concurrency(_)) {
                continue;
            }
            let before = old
                .rules
                .iter()
                .zip(&old.stores)
                .find_map(|(r, s)| match s {
                    RuleStore::Concurrency(open) if r.origin == rule.origin => Some(open.clone()),
                    _ => None,
                });
            if let Some(open) = before {
                *store = RuleStore::Concurrency(open);
            }
        }
        if keep_state {
            let taken = old.connections.load(Ordering::Relaxed);
            policy.connections.store(taken, Ordering::Relaxed);
        }
        policy
    }

    /// The DNS lookups the rules of `stage` test, which the session makes before
    /// asking for a decision.
    pub(crate) fn dns_needs(&self, stage: Stage) -> learnt::DnsNeeds {
        self.dns_needs
            .get(stage.rank())
            .copied()
            .unwrap_or_default()
    }

    /// The policy side of connection `conn` (the farm's number for it) from `client`.
    pub(crate) fn open(&self, conn: u64, client: IpAddr) -> Conversation {
        // Each connection draws from its own generator, derived from the farm's seed and
        // the connection number, so sessions neither contend for one generator nor change
        // each other's draws.
        let seed =
            self.state.seed.load(Ordering::Relaxed) ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Conversation {
            client,
            host_connection: self.connections.fetch_add(1, Ordering::Relaxed) + 1,
            rng: ChaCha8Rng::seed_from_u64(seed),
            client_seen: Seen::default(),
            sender_seen: Seen::default(),
            slots: Vec::new(),
        }
    }

    /// Decides `point`: counts the attempt it is, then tries the rules of its stage in
    /// order. The first rule whose conditions hold decides, except that a stateful rule
    /// that lets the command pass (greylisting once the delay is over, a limit not
    /// reached) hands the decision on to the rules after it, as postgrey's DUNNO does.
    /// No rule: the stage's usual positive reply.
    pub(crate) fn decide<P: Point>(
        &self,
        point: P,
        facts: &Facts<'_>,
        conv: &mut Conversation,
        now: Duration,
    ) -> Verdict<P::Effect> {
        let ask = point.ask();
        let attempts = self.count(P::STAGE, &ask, facts, conv, now);
        let known = Known {
            client: conv.client,
            helo: facts.helo,
            sender: ask.sender.or(facts.sender),
            recipient: ask.recipient,
            accepted: facts.accepted,
            size: ask.size.or(facts.declared_size),
            now,
            host_connection: conv.host_connection,
            message: facts.transactions + u32::from(P::STAGE == Stage::Mail),
            dns: facts.dns,
            tls: facts.tls,
            attempts,
        };
        let values = Values {
            known: &known,
            hostname: &self.hostname,
            remaining: None,
        };
        let rules = self.rules.iter().zip(&self.stores);
        for (rule, store) in rules.filter(|(r, _)| r.stage == P::STAGE) {
            if !conditions::all_hold(rule, &known, &mut conv.rng) {
                continue;
            }
            let decided = |act: Act<P::Effect>, retry_after: Option<Duration>| Verdict {
                rule: Some(rule.origin.clone()),
                delay: rule.then.delay,
                act,
                retry_after,
                retry_after_told: false,
            };
            let act = match (&rule.then.kind, store) {
                (ActionKind::Accept, _) => Act::Accept(None),
                (ActionKind::Reply { reply, close }, _) => {
                    let reply = values.fill(reply);
                    let close = *close || reply.closes_connection();
                    let act = if reply.code < 400 && !close {
                        Act::Accept(Some(reply))
                    } else {
                        Act::Refuse { reply, close }
                    };
                    return decided(act, quota_clears(rule, &known));
                }
                (ActionKind::Close, _) => Act::Close,
                (ActionKind::Hang(limit), _) => Act::Hang(*limit),
                (ActionKind::Reset, _) => Act::Reset,
                (ActionKind::Greylist(greylist), RuleStore::Greylist(store)) => {
                    let recipients: Vec<&str> = match known.recipient {
                        Some(recipient) => vec![recipient],
                        None => known.accepted.iter().map(String::as_str).collect(),
                    };
                    let sender = known.sender.unwrap_or("");
                    let longest = recipients
                        .into_iter()
                        .filter_map(|recipient| {
                            match store.check(greylist, conv.client, sender, recipient, now) {
                                GreyVerdict::Pass => None,
                                GreyVerdict::Defer { remaining } => Some(remaining),
                            }
                        })
                        .max();
                    let Some(remaining) = longest else { continue };
                    let values = Values {
                        remaining: Some(remaining),
                        ..values
                    };
                    let told = tells_remaining(&greylist.reply);
                    let reply = values.fill(&greylist.reply);
                    let close = reply.closes_connection();
                    let verdict = decided(Act::Refuse { reply, close }, Some(remaining));
                    return Verdict {
                        retry_after_told: told,
                        ..verdict
                    };
                }
                (ActionKind::RateLimit(limit), RuleStore::Rate(store)) => {
                    let Some(value) = counted_value(limit.per, &known) else {
                        continue;
                    };
                    if store.admit(limit, &value, now) {
                        continue;
                    }
                    let reply = values.fill(&limit.reply);
                    let close = limit.close || reply.closes_connection();
                    Act::Refuse { reply, close }
                }
                (ActionKind::Concurrency(limit), RuleStore::Concurrency(store)) => {
                    let Some(value) = counted_value(limit.per, &known) else {
                        continue;
                    };
                    match store.enter(value, limit.limit) {
                        Some(slot) => {
                            conv.slots.push(slot);
                            continue;
                        }
                        None => Act::Refuse {
                            reply: values.fill(&limit.reply),
                            close: true,
                        },
                    }
                }
                // `new` gives every stateful rule its store; were one without, closing is
                // the least wrong thing to do.
                (
                    ActionKind::Greylist(_) | ActionKind::RateLimit(_) | ActionKind::Concurrency(_),
                    _,
                ) => Act::Close,
                (ActionKind::LoseReply | ActionKind::TlsFault(_) | ActionKind::HideStarttls, _) => {
                    match P::effect(&rule.then.kind) {
                        Some(effect) => Act::Effect(effect),
                        // The loader allows these actions only at their own stage; were
                        // one elsewhere, closing is the least wrong thing to do.
                        None => Act::Close,
                    }
                }
            };
            return decided(act, None);
        }
        Verdict::accept()
    }

    /// Counts the attempt that this command is, for the keys it counts, and returns what
    /// every counter says of it.
    fn count(
        &self,
        stage: Stage,
        ask: &points::Ask<'_>,
        facts: &Facts<'_>,
        conv: &mut Conversation,
        now: Duration,
    ) -> Attempts {
        let counters = &self.state.attempts;
        let mut attempts = Attempts {
            client: conv.client_seen,
            // A transaction's sender was counted at its MAIL.
            sender: if facts.sender.is_some() {
                conv.sender_seen
            } else {
                Seen::default()
            },
            ..Attempts::default()
        };
        match stage {
            Stage::Connect => {
                conv.client_seen = counters.connection(conv.client, now);
                attempts.client = conv.client_seen;
            }
            Stage::Mail => {
                conv.sender_seen = counters.sender(ask.sender.unwrap_or(""), now);
                attempts.sender = conv.sender_seen;
            }
            Stage::Rcpt => {
                let sender = facts.sender.unwrap_or("");
                let recipient = ask.recipient.unwrap_or("");
                (attempts.recipient, attempts.triplet) =
                    counters.recipient(conv.client, sender, recipient, now);
            }
            _ => {}
        }
        attempts
    }
}

/// Whether a reply's text tells the client how long to wait (`{remaining}`).
fn tells_remaining(reply: &crate::scenario::Reply) -> bool {
    reply.lines.iter().any(|line| line.contains("{remaining"))
}

/// A deferral that lasts while a first attempt is recent clears when that time is up:
/// how long until then, for reports on early retries.
fn quota_clears(rule: &Rule, known: &Known<'_>) -> Option<Duration> {
    rule.when.iter().find_map(|condition| match condition {
        Condition::FirstAttemptWithin { per, within } => {
            let first = known.attempts.get(*per).first;
            Some(within.saturating_sub(known.now.saturating_sub(first)))
        }
        _ => None,
    })
}

/// The value a rate or concurrency limit counts by, if this point knows it.
fn counted_value(per: RateKey, known: &Known<'_>) -> Option<String> {
    match per {
        RateKey::Client => Some(known.client.to_string()),
        RateKey::ClientNet => Some(greylist::client_network(known.client, 24, 64).to_string()),
        RateKey::Sender => known.sender.map(str::to_ascii_lowercase),
        RateKey::Recipient => known.recipient.map(str::to_ascii_lowercase),
    }
}
