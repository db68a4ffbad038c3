//! Deciding how the farm's DNS answers a query: the scenario's `[[dns.rule]]`s, tried in
//! order, the first that matches deciding, as SMTP rules do. Like the host policy, it
//! decides from its inputs (the query, the asking address, farm time) and keeps only its
//! own state: how often each address asked for each name and type (for `attempt`), and
//! the seeded generator of `chance`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::bounded::{Bounded, Keys};
use crate::scenario::{DnsAction, DnsCondition, DnsRule, RecordKind, Scenario};

/// How many (address, name, type) counters are kept; the least recently asked are
/// forgotten first, so a flood of random names cannot grow the table.
pub(crate) const MAX_QUERY_COUNTERS: usize = 100_000;

/// A query as the rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    /// Lower case, without the final dot.
    pub name: &'a str,
    /// `None`: a type the scenario cannot name (SRV, HTTPS...), which only rules without
    /// a `type` condition match.
    pub kind: Option<RecordKind>,
    /// The number of the query type, for counting types the scenario cannot name apart.
    pub type_code: u16,
    pub client: IpAddr,
    /// The farm's own lookup (for a rule's check), counted apart from the queries of a
    /// sender on the same address.
    pub by_farm: bool,
}

/// What the rules decided for one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsVerdict {
    /// The rule that matched (`dns rule 2`), if one did.
    pub rule: Option<Arc<str>>,
    pub action: DnsAction,
    /// The number of this query among the same address's for the same name and type.
    pub attempt: u32,
}

/// The farm's DNS policy: its rules and what they keep.
#[derive(Debug)]
pub(crate) struct DnsPolicy {
    rules: Arc<[DnsRule]>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    keys: Keys,
    counters: Bounded<u32>,
    rng: ChaCha8Rng,
}

impl DnsPolicy {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        Self {
            rules: Arc::from(scenario.dns.rules.clone()),
            state: Mutex::new(State {
                keys: Keys::default(),
                counters: Bounded::default(),
                // Its own stream: the hosts' draws do not shift when DNS queries come.
                rng: ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x646e_735f_7275_6c65),
            }),
        }
    }

    /// Takes over `old`'s `attempt` counts (a scenario replaced with its state kept).
    pub(crate) fn take_counts(&self, old: &DnsPolicy) {
        let mut old = old.state.lock();
        let mut state = self.state.lock();
        state.keys = std::mem::take(&mut old.keys);
        state.counters = std::mem::take(&mut old.counters);
    }

    /// Forgets the `attempt` counts: each next query is a first one again.
    pub(crate) fn clear(&self) {
        let mut state = self.state.lock();
        state.counters = Bounded::default();
    }

    /// Counts the query and decides it at farm time `now`.
    pub(crate) fn decide(&self, query: Query, now: Duration) -> DnsVerdict {
        let mut state = self.state.lock();
        let State {
            keys,
            counters,
            rng,
        } = &mut *state;
        let key = keys.of(&(query.client, query.by_farm, query.name, query.type_code));
        counters.make_room(&key, MAX_QUERY_COUNTERS);
        let count = counters.touch(key, || 0);
        *count = count.saturating_add(1);
        let attempt = *count;
        for rule in self.rules.iter() {
            // Chance is drawn last, and only when the rest holds, as SMTP rules draw: the
            // generator moves only for queries the rule is about.
            let rest = rule
                .when
                .iter()
                .filter(|c| !matches!(c, DnsCondition::Chance(_)))
                .all(|c| holds(c, &query, attempt, now));
            if rest
                && rule.when.iter().all(|c| match c {
                    DnsCondition::Chance(p) => super::conditions::unit_draw(rng) < *p,
                    _ => true,
                })
            {
                return DnsVerdict {
                    rule: Some(rule.name.clone()),
                    action: rule.then,
                    attempt,
                };
            }
        }
        DnsVerdict {
            rule: None,
            action: DnsAction::default(),
            attempt,
        }
    }
}

fn holds(condition: &DnsCondition, query: &Query, attempt: u32, now: Duration) -> bool {
    match condition {
        DnsCondition::Name(globs) => globs.iter().any(|g| g.matches(query.name)),
        DnsCondition::Type(kinds) => query.kind.is_some_and(|k| kinds.contains(&k)),
        DnsCondition::Client(nets) => nets.iter().any(|n| n.contains(&query.client)),
        DnsCondition::Time(range) => range.contains(now),
        DnsCondition::Attempt(range) => range.contains(attempt),
        DnsCondition::Chance(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{DnsAnswer, load_str};

    fn policy(rules: &str) -> DnsPolicy {
        let text = format!(
            "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n[[domain]]\nname = \"a.test\"\nmx = [{{ host = \"mx1\" }}]\n{rules}"
        );
        let scenario = load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        DnsPolicy::new(&scenario)
    }

    fn ask(p: &DnsPolicy, name: &str, kind: RecordKind, client: &str, at: u64) -> DnsVerdict {
        let query = Query {
            name,
            kind: Some(kind),
            type_code: kind as u16,
            client: client.parse().unwrap(),
            by_farm: false,
        };
        p.decide(query, Duration::from_secs(at))
    }

    #[test]
    fn first_match_decides_on_name_type_time_client_and_attempt() {
        let p = policy(
            r#"
[[dns.rule]]
when = { query = "a.test", type = "MX", time = "<10m" }
then = { answer = "servfail" }
[[dns.rule]]
when = { query = "*.a.test", attempt = "<=2", client = "192.0.2.0/24" }
then = { answer = "drop" }
[[dns.rule]]
when = { type = ["PTR", "TXT"] }
then = { delay = "8s" }
"#,
        );
        type Case<'a> = (
            &'a str,
            RecordKind,
            &'a str,
            u64,
            Option<&'a str>,
            DnsAnswer,
        );
        let cases: &[Case] = &[
            (
                "a.test",
                RecordKind::Mx,
                "127.0.0.1",
                0,
                Some("dns rule 1"),
                DnsAnswer::Servfail,
            ),
            (
                "a.test",
                RecordKind::Mx,
                "127.0.0.1",
                599,
                Some("dns rule 1"),
                DnsAnswer::Servfail,
            ),
            (
                "a.test",
                RecordKind::Mx,
                "127.0.0.1",
                600,
                None,
                DnsAnswer::Records,
            ),
            (
                "a.test",
                RecordKind::A,
                "127.0.0.1",
                0,
                None,
                DnsAnswer::Records,
            ),
            (
                "mx1.a.test",
                RecordKind::A,
                "192.0.2.7",
                0,
                Some("dns rule 2"),
                DnsAnswer::Drop,
            ),
            (
                "mx1.a.test",
                RecordKind::A,
                "192.0.2.7",
                0,
                Some("dns rule 2"),
                DnsAnswer::Drop,
            ),
            // The third query for the same name and type from that address passes.
            (
                "mx1.a.test",
                RecordKind::A,
                "192.0.2.7",
                0,
                None,
                DnsAnswer::Records,
            ),
            // Another type is counted apart.
            (
                "mx1.a.test",
                RecordKind::Aaaa,
                "192.0.2.7",
                0,
                Some("dns rule 2"),
                DnsAnswer::Drop,
            ),
            (
                "mx1.a.test",
                RecordKind::A,
                "198.51.100.1",
                0,
                None,
                DnsAnswer::Records,
            ),
            (
                "x.test",
                RecordKind::Txt,
                "127.0.0.1",
                0,
                Some("dns rule 3"),
                DnsAnswer::Records,
            ),
        ];
        for (name, kind, client, at, rule, answer) in cases {
            let v = ask(&p, name, *kind, client, *at);
            assert_eq!(
                v.rule.as_deref(),
                *rule,
                "{name} {kind} from {client} at {at}s"
            );
            assert_eq!(
                v.action.answer, *answer,
                "{name} {kind} from {client} at {at}s"
            );
        }
        let slow = ask(&p, "x.test", RecordKind::Ptr, "127.0.0.1", 0);
        assert_eq!(slow.action.delay, Duration::from_secs(8));
    }

    #[test]
    fn a_type_the_scenario_cannot_name_matches_only_rules_without_type() {
        let p = policy("[[dns.rule]]\nwhen = { type = \"A\" }\nthen = { answer = \"refused\" }\n");
        let query = Query {
            name: "a.test",
            kind: None,
            type_code: 33,
            client: "127.0.0.1".parse().unwrap(),
            by_farm: false,
        };
        assert_eq!(p.decide(query, Duration::ZERO).rule, None);
    }

    #[test]
    fn counters_stay_within_their_bound() {
        let p = policy("");
        for i in 0..(MAX_QUERY_COUNTERS + 10) {
            let name = format!("n{i}.a.test");
            ask(&p, &name, RecordKind::A, "127.0.0.1", 0);
        }
        assert_eq!(p.state.lock().counters.len(), MAX_QUERY_COUNTERS);
    }
}
