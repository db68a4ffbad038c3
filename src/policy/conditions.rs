//! Whether a rule's conditions hold: one arm per condition of the scenario model.

use std::net::IpAddr;
use std::time::Duration;

use rand_chacha::rand_core::Rng;

use super::Seen;
use super::learnt::{DnsFacts, Looked};
use crate::scenario::{AttemptKey, Condition, PtrCheck, Rule};

/// Everything a condition can test at the point being decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known<'a> {
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
    /// Farm time when the command arrived.
    pub now: Duration,
    /// The host's own number for this connection (1 for its first).
    pub host_connection: u64,
    /// The number of this transaction within the connection (1 for the first MAIL).
    pub message: u32,
    /// What the farm's DNS said of the client, its EHLO name and its sender.
    pub dns: &'a DnsFacts,
    /// Whether STARTTLS has completed on this connection.
    pub tls: bool,
    /// What the attempt counters say of this command, per key.
    pub attempts: Attempts,
}

/// What the attempt counters say of the current command, for each key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    pub client: Seen,
    pub sender: Seen,
    pub recipient: Seen,
    pub triplet: Seen,
}

impl Attempts {
    pub(crate) fn get(&self, key: AttemptKey) -> Seen {
        match key {
            AttemptKey::Client => self.client,
            AttemptKey::Sender => self.sender,
            AttemptKey::Recipient => self.recipient,
            AttemptKey::Triplet => self.triplet,
        }
    }
}

/// Whether every condition of `rule` holds. `chance` conditions draw from `rng` only when
/// every other condition holds, so that adding an unrelated rule does not change which
/// draws a later rule sees.
pub(crate) fn all_hold(rule: &Rule, known: &Known<'_>, rng: &mut impl Rng) -> bool {
    rule.when
        .iter()
        .filter(|c| !matches!(c, Condition::Chance(_)))
        .all(|c| holds(c, known))
        && rule.when.iter().all(|c| match c {
            Condition::Chance(p) => unit_draw(rng) < *p,
            _ => true,
        })
}

fn holds(condition: &Condition, k: &Known<'_>) -> bool {
    match condition {
        Condition::Client(nets) => nets.iter().any(|net| net.contains(&k.client)),
        Condition::Helo(globs) => k
            .helo
            .is_some_and(|helo| globs.iter().any(|g| g.matches(helo))),
        Condition::Sender(patterns) => k
            .sender
            .is_some_and(|sender| patterns.iter().any(|p| p.matches(sender))),
        Condition::Recipient(patterns) => match k.recipient {
            Some(recipient) => patterns.iter().any(|p| p.matches(recipient)),
            None => k
                .accepted
                .iter()
                .any(|r| patterns.iter().any(|p| p.matches(r))),
        },
        Condition::SizeAbove(limit) => k.size.is_some_and(|size| size > *limit),
        Condition::SizeBelow(limit) => k.size.is_some_and(|size| size < *limit),
        Condition::Attempt { per, range } => {
            let n = k.attempts.get(*per).n;
            n > 0 && range.contains(n)
        }
        Condition::Chance(_) => true,
        Condition::FirstAttemptWithin { per, within } => {
            let seen = k.attempts.get(*per);
            seen.n > 0 && k.now.saturating_sub(seen.first) < *within
        }
        Condition::Time(range) => range.contains(k.now),
        Condition::Connection(range) => {
            range.contains(u32::try_from(k.host_connection).unwrap_or(u32::MAX))
        }
        Condition::Message(range) => k.message > 0 && range.contains(k.message),
        Condition::Ptr(check) => match (check, &k.dns.ptr) {
            (PtrCheck::Missing, Some(Looked::Missing)) => true,
            (PtrCheck::Present, Some(Looked::Found(_))) => true,
            (PtrCheck::MismatchesHelo, Some(Looked::Missing)) => true,
            (PtrCheck::MismatchesHelo, Some(Looked::Found(names))) => k.helo.is_some_and(|helo| {
                !names.iter().any(|ptr| {
                    ptr.trim_end_matches('.')
                        .eq_ignore_ascii_case(helo.trim_end_matches('.'))
                })
            }),
            (PtrCheck::TempError, Some(Looked::TempError)) => true,
            _ => false,
        },
        Condition::Fcrdns(check) => k.dns.fcrdns == Some(*check),
        Condition::HeloDns(check) => k.dns.helo.as_ref().is_some_and(|(_, c)| c == check),
        Condition::Spf(outcomes) => k
            .dns
            .spf
            .as_ref()
            .is_some_and(|(_, o)| outcomes.contains(o)),
        Condition::Tls(wanted) => k.tls == *wanted,
        Condition::HeloFqdn(wanted) => k.helo.is_some_and(|helo| is_fqdn(helo) == *wanted),
    }
}

/// A fully qualified name has a dot between labels and is not an address literal.
pub(crate) fn is_fqdn(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.starts_with('[')
        && name.parse::<IpAddr>().is_err()
        && name.split('.').count() >= 2
        && name.split('.').all(|label| !label.is_empty())
}

/// A uniform draw in [0, 1) with 53 bits of precision.
pub(super) fn unit_draw(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
