//! The retry-behaviour report: what a mail engineer checks in a sender's retries, per
//! delivery and overall, each finding with the attempts that show it.
//!
//! It is computed from a [`Transcript`] alone (pure, no I/O), so a journal read back from a
//! file gives the same report as a live farm. [`report`] knows only the transcript;
//! [`report_journal`] and [`report_journal_until`] (what [`Farm::report`](crate::Farm::report) uses) also know every domain's MX hosts (from the
//! journal's farm-started event) and how long the journal went on, which some checks need.
//!
//! # Tries
//!
//! A sender works in *tries*: in one go it walks the MX hosts until one takes the message,
//! then waits before the next try. An attempt belongs to the try before it when it follows
//! a deferred attempt within [`TRY_GAP`] and goes to a host not yet used in that try;
//! otherwise it starts a new try. Moving on to the next MX is therefore never counted as a
//! retry: intervals, backoff, hammering and early retries are about tries.
//!
//! # The checks
//!
//! Each check gives at most one finding per delivery, with a [`Severity`]: `Problem` (the
//! sender is wrong), `Info` (worth knowing, often normal) or `Ok` (the check applied and
//! passed). A check that does not apply gives no finding.
//!
//! - **early-retry**: an attempt in a later try, deferred again, before the known end of
//!   an earlier deferral on the same host or with the same code and enhanced status (the
//!   farm journals that end for greylisting and `first-attempt-within` quotas). Compared
//!   are the farm times at which the attempts ended. `Problem` when the deferral asked for
//!   at most [`SHORT_DEFERRAL`] (greylisting: a sender is expected to wait that out),
//!   `Info` when every wasted retry was against a longer one (a quota whose end the sender
//!   cannot know).
//! - **mx-failover**: after a 421 or a lost connection, the next attempt should go to
//!   another MX when the domain has more than one. `Problem` when it went to the same host.
//! - **mx-preference**: within a try, an attempt on a host while a host of lower
//!   preference was not tried in that try. `Info`, not `Problem`: a connection refused at
//!   TCP or at the greeting never reaches a delivery, so the lower host may have been tried.
//! - **mx-spread**: when the lowest preference has several hosts and the delivery took more
//!   than one attempt, did the sender use more than one of them (RFC 5321 §5.1)? `Info` if
//!   not.
//! - **retry-after-5xx**: any attempt after one refused with a 5xx. `Problem`.
//! - **recipient-retry**: after a per-recipient 4xx at RCPT (not a 421) in a transaction
//!   where other recipients were accepted, the retry should carry only the deferred
//!   recipients. `Problem` when it carried an already accepted recipient again (with the
//!   same Message-ID, when known): the whole message was resent.
//! - **backoff**: with at least three tries, the interval between tries should grow.
//!   `Info` when the last interval is not longer than the first.
//! - **hammering**: more than [`HAMMERING_PER_HOUR`] tries within any hour, i.e. on
//!   average under 5 minutes apart. `Problem`.
//! - **retry-interval**: RFC 5321 §4.5.4.1 suggests at least 30 minutes between tries.
//!   Real MTAs retry sooner, so a shorter interval is `Info`.
//! - **give-up**: a delivery still deferred, followed by silence until the end of what
//!   was observed: at least an hour, and at least the longest interval between its tries. The journal cannot tell whether the sender gave up or waits longer, so
//!   the finding says so. `Problem` when it never retried at all (one try, a temporary
//!   failure treated as permanent); `Info` when it stopped within 4 days (RFC 5321
//!   §4.5.4.1 suggests 4-5 days); `Ok` when it kept trying at least that long.
//! - **duplicate**: the same Message-ID accepted more than once for a recipient. `Problem`,
//!   with the cause: the whole message resent after a per-recipient 4xx, or resent after
//!   it was accepted; `Info` when the farm lost the reply to the first acceptance (then a
//!   resend is right, RFC 1047). Accepted twice without a Message-ID is `Info`.
//!
//! Attempts refused before any recipient was given (a 421 at MAIL, say) form a delivery
//! without a recipient; the journal does not say which recipients they were for, so such a
//! delivery is listed but not analysed.
//!
//! The overall findings give, per check, the worst severity and the deliveries that have
//! it.

mod across;
mod checks;
mod overall;
mod render;
mod tries;

pub use render::duration;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::journal::{DomainRecord, Event, EventKind, Missing};
use crate::transcript::{DeliveryOutcome, Transcript};
use across::Env;
use overall::overall;

/// Attempts that follow a deferred one within this time, on another host, are the same try.
pub const TRY_GAP: Duration = Duration::from_secs(60);
/// More tries than this within one hour hammer the MX.
pub const HAMMERING_PER_HOUR: usize = 12;
/// A deferral that clears within this time is one a sender is expected to wait out.
pub const SHORT_DEFERRAL: Duration = Duration::from_secs(3600);
/// RFC 5321 §4.5.4.1: "the retry interval SHOULD be at least 30 minutes".
pub const RFC_RETRY_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// RFC 5321 §4.5.4.1: "the give-up time generally needs to be at least 4-5 days".
pub const RFC_GIVE_UP: Duration = Duration::from_secs(4 * 86_400);
/// The least silence after a deferred delivery's last attempt before it counts as over.
pub const SILENCE: Duration = Duration::from_secs(3600);

/// The report: per delivery, then overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Set when events are missing from the journal: findings may then be wrong, and the
    /// rendering says so first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Missing>,
    pub deliveries: Vec<DeliveryReport>,
    /// Per check, the worst severity across deliveries and which deliveries have it.
    pub overall: Vec<Finding>,
}

/// The findings of one (sender, recipient) delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryReport {
    pub sender: String,
    /// `None` for attempts refused before any recipient was given (not analysed).
    pub recipient: Option<String>,
    pub outcome: DeliveryOutcome,
    /// How many attempts the delivery has.
    pub attempts: usize,
    /// In the order of [`Check::ALL`].
    pub findings: Vec<Finding>,
    /// Intervals between tries, when there were at least two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals: Option<IntervalStats>,
}

/// Intervals between the starts of tries (see the module docs for what a try is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntervalStats {
    pub tries: usize,
    #[serde(rename = "min_ms", serialize_with = "crate::millis::serialize")]
    pub min: Duration,
    /// The lower median.
    #[serde(rename = "median_ms", serialize_with = "crate::millis::serialize")]
    pub median: Duration,
    #[serde(rename = "max_ms", serialize_with = "crate::millis::serialize")]
    pub max: Duration,
    /// The most tries within any one-hour window.
    pub max_per_hour: usize,
}

/// One finding, with the attempts that show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// 1-based attempt numbers within the delivery, as the transcript shows them.
    pub attempts: Vec<usize>,
    /// For overall findings: the 1-based numbers of the deliveries concerned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<usize>,
    pub text: String,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The sender does something wrong.
    Problem,
    /// Worth knowing; often what real MTAs do.
    Info,
    /// The check applied and passed.
    Ok,
}

impl Severity {
    fn rank(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Info => 1,
            Severity::Problem => 2,
        }
    }
}

/// The checks, in the order findings are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    EarlyRetry,
    MxFailover,
    MxPreference,
    MxSpread,
    RetryAfter5xx,
    RecipientRetry,
    Backoff,
    Hammering,
    RetryInterval,
    GiveUp,
    Duplicate,
}

impl Check {
    pub const ALL: [Check; 11] = [
        Check::EarlyRetry,
        Check::MxFailover,
        Check::MxPreference,
        Check::MxSpread,
        Check::RetryAfter5xx,
        Check::RecipientRetry,
        Check::Backoff,
        Check::Hammering,
        Check::RetryInterval,
        Check::GiveUp,
        Check::Duplicate,
    ];

    /// The name in the text rendering and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::EarlyRetry => "early-retry",
            Check::MxFailover => "mx-failover",
            Check::MxPreference => "mx-preference",
            Check::MxSpread => "mx-spread",
            Check::RetryAfter5xx => "retry-after-5xx",
            Check::RecipientRetry => "recipient-retry",
            Check::Backoff => "backoff",
            Check::Hammering => "hammering",
            Check::RetryInterval => "retry-interval",
            Check::GiveUp => "give-up",
            Check::Duplicate => "duplicate",
        }
    }
}

/// What was found, with the numbers behind it; one variant per check, plus the overall
/// summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum FindingKind {
    /// Retries made before a deferral's known end, and deferred again.
    EarlyRetry {
        /// How many such wasted retries.
        early: usize,
        /// How many retries followed a deferral with a known end.
        checked: usize,
        /// The wait before the first wasted retry, or before the closest retry if none.
        #[serde(rename = "waited_ms", serialize_with = "crate::millis::serialize")]
        waited: Duration,
        /// What the deferral before it asked for.
        #[serde(rename = "asked_ms", serialize_with = "crate::millis::serialize")]
        asked: Duration,
    },
    /// After a 421 or a lost connection: did the next attempt go to another MX?
    MxFailover {
        failures: usize,
        /// How many times the next attempt went to the same host.
        same_host: usize,
    },
    /// Attempts on a host while a lower-preference host was not tried in that try.
    MxPreference { out_of_order: usize },
    /// Of the hosts sharing the lowest preference, how many the delivery used.
    MxSpread { used: usize, equal: usize },
    /// Attempts made after a permanent refusal.
    RetryAfter5xx { code: u16, retries: usize },
    /// After a per-recipient 4xx: did the retry resend to recipients already accepted?
    RecipientRetry {
        whole_message: bool,
        resent_to: Vec<String>,
    },
    /// Whether the interval between tries grows.
    Backoff {
        #[serde(rename = "first_ms", serialize_with = "crate::millis::serialize")]
        first: Duration,
        #[serde(rename = "last_ms", serialize_with = "crate::millis::serialize")]
        last: Duration,
        growing: bool,
    },
    /// The most tries within one hour.
    Hammering { max_per_hour: usize },
    /// The shortest interval between tries, against RFC 5321's 30 minutes.
    RetryInterval {
        #[serde(rename = "shortest_ms", serialize_with = "crate::millis::serialize")]
        shortest: Duration,
    },
    /// A delivery still deferred when the journal went quiet.
    GiveUp {
        tries: usize,
        /// From the first attempt to the last.
        #[serde(rename = "retried_for_ms", serialize_with = "crate::millis::serialize")]
        retried_for: Duration,
        /// From the last attempt to the end of what was observed.
        #[serde(rename = "silence_ms", serialize_with = "crate::millis::serialize")]
        silence: Duration,
    },
    /// The same message accepted more than once.
    Duplicate {
        times: usize,
        message_id: Option<String>,
        cause: DuplicateCause,
    },
    /// Overall: the worst severity of a check and in how many deliveries.
    Summary {
        of: Check,
        /// Deliveries with the worst severity.
        deliveries: usize,
        /// Deliveries where the check applied.
        applied: usize,
    },
}

impl FindingKind {
    /// The check this finding belongs to.
    pub fn check(&self) -> Check {
        match self {
            FindingKind::EarlyRetry { .. } => Check::EarlyRetry,
            FindingKind::MxFailover { .. } => Check::MxFailover,
            FindingKind::MxPreference { .. } => Check::MxPreference,
            FindingKind::MxSpread { .. } => Check::MxSpread,
            FindingKind::RetryAfter5xx { .. } => Check::RetryAfter5xx,
            FindingKind::RecipientRetry { .. } => Check::RecipientRetry,
            FindingKind::Backoff { .. } => Check::Backoff,
            FindingKind::Hammering { .. } => Check::Hammering,
            FindingKind::RetryInterval { .. } => Check::RetryInterval,
            FindingKind::GiveUp { .. } => Check::GiveUp,
            FindingKind::Duplicate { .. } => Check::Duplicate,
            FindingKind::Summary { of, .. } => *of,
        }
    }
}

/// Why a message was accepted twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicateCause {
    /// The farm kept the message but closed before its 250: resending is right.
    LostReply,
    /// Resent to every recipient after a per-recipient 4xx for another one.
    WholeMessageResent,
    /// Resent after it was accepted, for no reason the journal shows.
    Resent,
    /// Accepted more than once without a Message-ID to tell copies from new messages.
    Unknown,
}

/// What a report knows beyond the transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Each domain's MX hosts with their preferences. Hosts seen in the transcript's
    /// attempts are added to these.
    pub domains: Vec<DomainRecord>,
    /// Farm time up to which the journal was observed; the latest attempt if `None`.
    pub observed_until: Option<Duration>,
}

impl Context {
    /// The MX hosts from the journal's farm-started event; observed until its last event.
    pub fn from_journal(events: &[Event]) -> Context {
        let domains = events
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EventKind::FarmStarted { domains, .. } => Some(domains.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Context {
            domains,
            observed_until: events.last().map(|e| e.at),
        }
    }
}

/// The report of a transcript, knowing only what it shows: a domain's MX hosts are those
/// its attempts used, and the journal is taken to end at the latest attempt (so the
/// give-up check never fires). Prefer [`report_journal`] or [`report_journal_until`].
pub fn report(transcript: &Transcript) -> Report {
    report_with(transcript, &Context::default())
}

/// The report of a journal: every domain's MX hosts are known, and it ends at its last
/// event.
pub fn report_journal(events: &[Event]) -> Report {
    report_with(
        &Transcript::from_events(events),
        &Context::from_journal(events),
    )
}

/// The report of a journal observed until farm time `now` (a running farm's: silence up
/// to now counts for the give-up check).
pub fn report_journal_until(events: &[Event], now: Duration) -> Report {
    let mut context = Context::from_journal(events);
    context.observed_until = Some(now.max(context.observed_until.unwrap_or_default()));
    report_with(&Transcript::from_events(events), &context)
}

/// The report of a transcript with what the context adds.
pub fn report_with(transcript: &Transcript, context: &Context) -> Report {
    let env = Env::new(transcript, context);
    let deliveries: Vec<DeliveryReport> = (0..transcript.deliveries.len())
        .map(|d| env.delivery(d))
        .collect();
    let overall = overall(&deliveries);
    Report {
        incomplete: transcript.incomplete,
        deliveries,
        overall,
    }
}

impl Report {
    /// Every per-delivery finding of severity `Problem`.
    pub fn problems(&self) -> Vec<&Finding> {
        self.deliveries
            .iter()
            .flat_map(|d| &d.findings)
            .filter(|f| f.severity == Severity::Problem)
            .collect()
    }

    /// The findings of the delivery of `sender` to `recipient`, if there is one.
    pub fn delivery(&self, sender: &str, recipient: &str) -> Option<&DeliveryReport> {
        self.deliveries.iter().find(|d| {
            d.sender.eq_ignore_ascii_case(sender)
                && d.recipient
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
        })
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl DeliveryReport {
    /// The finding of one check, if it applied.
    pub fn finding(&self, check: Check) -> Option<&Finding> {
        self.findings.iter().find(|f| f.kind.check() == check)
    }
}

impl Finding {
    fn new(kind: FindingKind, severity: Severity, attempts: &[usize], text: String) -> Finding {
        let attempts: BTreeSet<usize> = attempts.iter().map(|i| i + 1).collect();
        Finding {
            kind,
            severity,
            attempts: attempts.into_iter().collect(),
            deliveries: Vec::new(),
            text,
        }
    }
}

#[cfg(test)]
mod tests;
