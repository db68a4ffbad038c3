//! What the farm learnt of a client through its own DNS, for the conditions that test it
//! (`ptr`, `fcrdns`, `helo-dns`, `spf`). The session makes the lookups (real queries to
//! the farm's DNS server, so DNS rules apply to them) and hands the results in with the
//! other facts; the policy only reads them, as it reads everything else.

use crate::scenario::{Condition, DnsCheck, HeloDnsCheck, Rule, SpfOutcome, Stage};

/// The outcome of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Looked<T> {
    Found(T),
    /// NXDOMAIN, or no record of the type.
    Missing,
    /// SERVFAIL, REFUSED or no answer in time.
    TempError,
}

/// The results, each `None` until looked up (only a rule that tests it makes the farm
/// look it up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DnsFacts {
    /// The client address's PTR names.
    pub ptr: Option<Looked<Vec<String>>>,
    pub fcrdns: Option<DnsCheck>,
    /// For the EHLO name it was looked up for.
    pub helo: Option<(String, HeloDnsCheck)>,
    /// For the sender it was evaluated for (`<> HELO-NAME` for the null sender, whose
    /// SPF is its HELO name's).
    pub spf: Option<(String, SpfOutcome)>,
}

/// Which lookups the rules of a stage test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DnsNeeds {
    pub ptr: bool,
    pub fcrdns: bool,
    pub helo: bool,
    pub spf: bool,
}

impl DnsNeeds {
    /// What the rules at `stage` test.
    pub(crate) fn of(rules: &[Rule], stage: Stage) -> Self {
        let mut needs = Self::default();
        for condition in rules
            .iter()
            .filter(|r| r.stage == stage)
            .flat_map(|r| &r.when)
        {
            match condition {
                Condition::Ptr(_) => needs.ptr = true,
                Condition::Fcrdns(_) => needs.fcrdns = true,
                Condition::HeloDns(_) => needs.helo = true,
                Condition::Spf(_) => needs.spf = true,
                _ => {}
            }
        }
        needs
    }

    /// Whether any rule of `scenario` tests DNS (then the farm needs its DNS server).
    pub(crate) fn in_scenario(scenario: &crate::scenario::Scenario) -> bool {
        scenario.hosts.iter().any(|h| {
            Stage::ALL
                .iter()
                .any(|stage| Self::of(&h.rules, *stage).any())
        })
    }

    pub(crate) fn any(self) -> bool {
        self.ptr || self.fcrdns || self.helo || self.spf
    }
}
