//! Deciding what a host answers: a pure function of the rules, the stage, what is known of
//! the conversation so far, and the farm's seeded randomness (DESIGN principle 2).
//!
//! Refusing mail is a verdict, never an error. Stateful behaviour (attempt counters) lives
//! in [`attempts`]; its counts come in as data, so that `decide` itself stays pure and can
//! be tested with a table.

pub mod attempts;
pub mod concurrency;
pub mod greylist;
pub mod rate;

use std::net::IpAddr;
use std::time::Duration;

use rand_chacha::rand_core::Rng;

use crate::scenario::{AttemptKey, Condition, PtrCheck, Rule, Stage};

/// What is known of the conversation when a stage is decided.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub client: IpAddr,
    /// The EHLO/HELO name, once given.
    pub helo: Option<&'a str>,
    /// The sender, from `mail` on; empty for the null sender.
    pub sender: Option<&'a str>,
    /// At `rcpt`: the recipient being decided.
    pub recipient: Option<&'a str>,
    /// The recipients accepted so far in this transaction.
    pub accepted: &'a [String],
    /// At `mail`: the SIZE= the client declared; at `end-of-data`: the actual size.
    pub size: Option<u64>,
    /// Farm time, for rules that depend on it.
    pub now: Duration,
    /// The host's own number for this connection (1 for its first).
    pub host_connection: u64,
    /// The number of this transaction within the connection (1 for the first MAIL).
    pub message: u32,
    /// The client's PTR name from the scenario's reverse-DNS table.
    pub ptr: Option<&'a str>,
    /// Whether STARTTLS has completed on this connection.
    pub tls: bool,
}

/// How often, and since when, a key has been seen: the attempt number of the current
/// command (0 where not counted) and the farm time of the key's first attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub n: u32,
    pub first: Duration,
}

/// What the attempt counters say of the current command, for each key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptNumbers {
    pub client: Seen,
    pub sender: Seen,
    pub recipient: Seen,
    pub triplet: Seen,
}

impl AttemptNumbers {
    /// What the counters say for `key`.
    pub fn get(&self, key: AttemptKey) -> Seen {
        match key {
            AttemptKey::Client => self.client,
            AttemptKey::Sender => self.sender,
            AttemptKey::Recipient => self.recipient,
            AttemptKey::Triplet => self.triplet,
        }
    }
}

/// The first rule for `stage` whose conditions all hold, or `None`: the default, accept.
///
/// `chance` conditions draw from `rng` only when every other condition of the rule holds,
/// so adding an unrelated rule does not change which draws a later rule sees.
pub fn decide<'r>(
    rules: &'r [Rule],
    stage: Stage,
    envelope: &Envelope<'_>,
    attempts: &AttemptNumbers,
    rng: &mut impl Rng,
) -> Option<&'r Rule> {
    decide_from(rules, 0, stage, envelope, attempts, rng).map(|(_, rule)| rule)
}

/// Like [`decide`], trying only the rules from index `from` on, and returning the index
/// of the rule found: a stateful rule that lets a command pass (greylisting once the
/// delay is over, a rate limit not reached) hands the decision on to the rules after it.
pub fn decide_from<'r>(
    rules: &'r [Rule],
    from: usize,
    stage: Stage,
    envelope: &Envelope<'_>,
    attempts: &AttemptNumbers,
    rng: &mut impl Rng,
) -> Option<(usize, &'r Rule)> {
    let rest = rules.get(from..).unwrap_or(&[]);
    rest.iter()
        .enumerate()
        .map(|(i, rule)| (from + i, rule))
        .filter(|(_, rule)| rule.stage == stage)
        .find(|(_, rule)| {
            rule.when
                .iter()
                .filter(|c| !matches!(c, Condition::Chance(_)))
                .all(|c| holds(c, envelope, attempts))
                && rule.when.iter().all(|c| match c {
                    Condition::Chance(p) => unit_draw(rng) < *p,
                    _ => true,
                })
        })
}

fn holds(condition: &Condition, envelope: &Envelope<'_>, attempts: &AttemptNumbers) -> bool {
    match condition {
        Condition::Client(nets) => nets.iter().any(|net| net.contains(&envelope.client)),
        Condition::Helo(globs) => envelope
            .helo
            .is_some_and(|helo| globs.iter().any(|g| g.matches(helo))),
        Condition::Sender(patterns) => envelope
            .sender
            .is_some_and(|sender| patterns.iter().any(|p| p.matches(sender))),
        Condition::Recipient(patterns) => match envelope.recipient {
            Some(recipient) => patterns.iter().any(|p| p.matches(recipient)),
            None => envelope
                .accepted
                .iter()
                .any(|r| patterns.iter().any(|p| p.matches(r))),
        },
        Condition::SizeAbove(limit) => envelope.size.is_some_and(|size| size > *limit),
        Condition::SizeBelow(limit) => envelope.size.is_some_and(|size| size < *limit),
        Condition::Attempt { per, range } => {
            let n = attempts.get(*per).n;
            n > 0 && range.contains(n)
        }
        Condition::Chance(_) => true,
        Condition::FirstAttemptWithin { per, within } => {
            let seen = attempts.get(*per);
            seen.n > 0 && envelope.now.saturating_sub(seen.first) < *within
        }
        Condition::Time(range) => range.contains(envelope.now),
        Condition::Connection(range) => {
            range.contains(u32::try_from(envelope.host_connection).unwrap_or(u32::MAX))
        }
        Condition::Message(range) => envelope.message > 0 && range.contains(envelope.message),
        Condition::Ptr(check) => match check {
            PtrCheck::Missing => envelope.ptr.is_none(),
            PtrCheck::Present => envelope.ptr.is_some(),
            PtrCheck::MismatchesHelo => match (envelope.ptr, envelope.helo) {
                (Some(ptr), Some(helo)) => !ptr
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(helo.trim_end_matches('.')),
                _ => true,
            },
        },
        Condition::Tls(wanted) => envelope.tls == *wanted,
        Condition::HeloFqdn(wanted) => envelope.helo.is_some_and(|helo| is_fqdn(helo) == *wanted),
    }
}

/// A fully qualified name has a dot between labels and is not an address literal.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.starts_with('[')
        && name.parse::<IpAddr>().is_err()
        && name.split('.').count() >= 2
        && name.split('.').all(|label| !label.is_empty())
}

/// A uniform draw in [0, 1) with 53 bits of precision.
fn unit_draw(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Action, ActionKind, AddressPattern, AttemptRange, Glob, Reply};
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    fn rule(stage: Stage, when: Vec<Condition>, code: u16) -> Rule {
        Rule {
            stage,
            when,
            then: Action {
                delay: None,
                kind: ActionKind::Reply {
                    reply: Reply::new(code, None, "x"),
                    close: false,
                },
            },
            origin: format!("rule {code}"),
        }
    }

    fn envelope() -> Envelope<'static> {
        Envelope {
            client: "192.0.2.10".parse().unwrap(),
            helo: Some("client.example.test"),
            sender: Some("me@example.test"),
            recipient: Some("full-bob@aol.test"),
            accepted: &[],
            size: Some(2048),
            now: Duration::ZERO,
            host_connection: 1,
            message: 1,
            ptr: None,
            tls: false,
        }
    }

    fn first_match(rules: &[Rule], stage: Stage, attempts: AttemptNumbers) -> Option<u16> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        decide(rules, stage, &envelope(), &attempts, &mut rng).map(|r| match &r.then.kind {
            ActionKind::Reply { reply, .. } => reply.code,
            _ => 0,
        })
    }

    #[test]
    fn each_condition_matches_and_misses_as_documented() {
        let net = |s: &str| Condition::Client(vec![s.parse().unwrap()]);
        let addr = |s: &str| AddressPattern::Glob(Glob::new(s));
        let cases: Vec<(Condition, bool)> = vec![
            (net("192.0.2.0/24"), true),
            (net("198.51.100.0/24"), false),
            (Condition::Helo(vec![Glob::new("*.EXAMPLE.test")]), true),
            (Condition::Helo(vec![Glob::new("mail.*")]), false),
            (Condition::Sender(vec![addr("me@example.test")]), true),
            (Condition::Sender(vec![AddressPattern::Null]), false),
            (Condition::Recipient(vec![addr("full-*@aol.test")]), true),
            (
                Condition::Recipient(vec![AddressPattern::Domain("gmail.test".into())]),
                false,
            ),
            (Condition::SizeAbove(1024), true),
            (Condition::SizeAbove(4096), false),
            (Condition::SizeBelow(4096), true),
            (Condition::SizeBelow(1024), false),
        ];
        for (condition, expected) in cases {
            let rules = [rule(Stage::Rcpt, vec![condition.clone()], 451)];
            let got = first_match(&rules, Stage::Rcpt, AttemptNumbers::default()).is_some();
            assert_eq!(got, expected, "{condition:?}");
        }
    }

    #[test]
    fn attempt_ranges_count_per_key() {
        let rules = [rule(
            Stage::Rcpt,
            vec![Condition::Attempt {
                per: AttemptKey::Recipient,
                range: AttemptRange { min: 1, max: 2 },
            }],
            452,
        )];
        let at = |n| AttemptNumbers {
            recipient: Seen {
                n,
                first: Duration::ZERO,
            },
            ..Default::default()
        };
        assert_eq!(first_match(&rules, Stage::Rcpt, at(1)), Some(452));
        assert_eq!(first_match(&rules, Stage::Rcpt, at(2)), Some(452));
        assert_eq!(first_match(&rules, Stage::Rcpt, at(3)), None);
        assert_eq!(first_match(&rules, Stage::Rcpt, at(0)), None, "uncounted");
    }

    #[test]
    fn first_matching_rule_of_the_stage_wins() {
        let rules = [
            rule(Stage::Mail, vec![], 421),
            rule(Stage::Rcpt, vec![Condition::SizeAbove(1 << 30)], 552),
            rule(Stage::Rcpt, vec![], 450),
            rule(Stage::Rcpt, vec![], 451),
        ];
        assert_eq!(
            first_match(&rules, Stage::Rcpt, AttemptNumbers::default()),
            Some(450)
        );
        assert_eq!(
            first_match(&rules, Stage::Quit, AttemptNumbers::default()),
            None
        );
    }

    #[test]
    fn chance_is_seeded_and_roughly_fair() {
        let rules = [rule(Stage::Rcpt, vec![Condition::Chance(0.3)], 451)];
        let count = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..10_000)
                .filter(|_| {
                    decide(
                        &rules,
                        Stage::Rcpt,
                        &envelope(),
                        &AttemptNumbers::default(),
                        &mut rng,
                    )
                    .is_some()
                })
                .count()
        };
        assert_eq!(count(7), count(7));
        let hits = count(7);
        assert!((2700..3300).contains(&hits), "{hits}");
    }
}
