//! The retry-behaviour report: what a mail engineer checks in a sender's retries, per
//! delivery (one message to one recipient), per client for contacts tied to no message,
//! and overall; each finding with the attempts that show it.
//!
//! It is computed from a [`Transcript`] alone (pure, no I/O), so a journal read back from a
//! file gives the same report as a live farm. [`report`] knows only the transcript;
//! [`report_journal`] and [`report_journal_until`] (what [`Farm::report`](crate::Farm::report)
//! uses) also know every domain's MX hosts (from the journal's farm-started event) and how
//! long the journal went on, which some checks need.
//!
//! A check judges only what the sender could know and should fix: a `Problem` is
//! something a mail engineer would change in the sender. Where the evidence rests on an
//! attempt the journal could not tie to one message for certain (the transcript shows
//! `[or message N]`), or on several attempts of a delivery whose content was never sent
//! (they may be several messages with one envelope, even with equal `SIZE=`), a
//! `Problem` becomes `Info` and says so; mx-failover, which judges the client whatever
//! message a contact was for, stays.
//!
//! # Tries
//!
//! A sender works in *tries*: in one go it walks the MX hosts until one takes the message,
//! then waits before the next try. Tries follow the sender's own rhythm, learnt per client
//! from all its stories, so that senders retrying after seconds (CI) and after hours
//! (production) are both read right:
//!
//! - Attempts on the same connection within the move-on window are one try (a second
//!   transaction right after a per-recipient 4xx is not a retry; one after a long wait on
//!   a kept-open connection is), and so is a contact in clear right after a failed TLS
//!   handshake with the same host.
//! - An attempt starts a new try when it goes back to a host the try already used, or when
//!   the attempt before it delivered or bounced the message: such a start is a certain
//!   retry.
//! - Otherwise it joins the try when it starts within the client's *move-on window* of
//!   the previous attempt's end: a quarter of the client's quickest certain retry, and at
//!   least [`MIN_WINDOW`] (a sender moves to its next MX far quicker than it retries).
//!   A client with no certain retry: the gaps between its attempts sorted by length, cut
//!   at the first that is [`RHYTHM_JUMP`] times the one before; without such a jump,
//!   [`DEFAULT_WINDOW`].
//!
//! Intervals are measured between the starts of tries, and a retry's wait from the end of
//! the attempt it retries.
//!
//! # The checks
//!
//! Each check gives at most one finding per delivery, with a [`Severity`]: `Problem` (the
//! sender is wrong), `Info` (worth knowing, often normal) or `Ok` (the check applied and
//! passed). A check that does not apply gives no finding.
//!
//! - **early-retry**: an attempt in a later try, deferred again, that started before the
//!   known end of an earlier deferral on the same host or with the same code and enhanced
//!   status (the farm journals that end for greylisting and `first-attempt-within`
//!   quotas). `Problem` only when the deferral's text told the sender how long to wait
//!   (a greylisting reply with `{remaining}`); otherwise `Info`: the sender could not know
//!   when it would clear. Times under a minute are given to the millisecond.
//! - **mx-failover**: after a connection-level failure (a 421, a refused or failed
//!   contact before MAIL, a connection lost before the end of data) on one MX host of a
//!   domain with several, the client should try another of the domain's hosts. `Ok` when
//!   it contacted another within its move-on window (for any message: parallel deliveries
//!   count); `Info` when it did only in a later try; `Problem` when its next contact for
//!   the domain went to the same host again. Not judged when every other host's last
//!   contact from that client failed too (the sender is right to avoid them), when
//!   nothing followed, after a failure after the content was sent, or after a failed TLS
//!   handshake that the client followed at once with the same host (in clear, which is
//!   right). A client is a network (/24, /64).
//! - **mx-preference**: within a try, an attempt on a host while a host of lower
//!   preference was not tried in that try, and that host's last contact from the client
//!   had not failed. `Info`: MTAs cache hosts they found down.
//! - **mx-spread**: when the lowest preference has several hosts and the delivery took more
//!   than one attempt, did the sender use more than one of them (RFC 5321 §5.1)? `Info` if
//!   not.
//! - **retry-after-5xx**: an attempt after one refused with a 5xx to MAIL, RCPT, DATA or
//!   the end of data (a 5xx greeting or EHLO only rules out that host). `Problem`; `Info`
//!   for a message whose content was never sent, which a new message with the same
//!   envelope (and the same size: a sender's probes are all alike) cannot be told apart
//!   from.
//! - **recipient-retry**: after a per-recipient 4xx at RCPT (not a 421) in a transaction
//!   that delivered the message to other recipients, the retry should carry only the
//!   deferred recipients. `Problem` when it carried one already delivered again.
//! - **backoff**: with at least three tries, the interval between tries should grow.
//!   `Info` when the last interval is not [`GROWTH`] times the first.
//! - **hammering**: more than [`HAMMERING_PER_HOUR`] tries within one hour (on average
//!   under 5 minutes apart). `Problem` when the last interval is not [`GROWTH`] times the
//!   first (the sender keeps hammering); `Info` when it is (a short backoff, as CI
//!   configurations use).
//! - **retry-interval**: RFC 5321 §4.5.4.1 suggests at least 30 minutes between tries.
//!   Real MTAs retry sooner, so a shorter interval is `Info`.
//! - **give-up**: a delivery still deferred, followed by silence until the end of what
//!   was observed: at least [`SILENCE`], and at least the longest interval between its
//!   tries. The journal cannot tell whether the sender gave up or waits longer, so the
//!   finding says so. `Problem` when it never retried at all (a 4xx treated as
//!   permanent), unless the silence is short once the farm's clock jumps by hand after
//!   the last try are taken out (then `Info`: a real-time sender never had that time); `Info` when it stopped within 4 days (RFC 5321 §4.5.4.1 suggests 4-5
//!   days); `Ok` when it kept trying at least that long.
//! - **duplicate**: the same message accepted more than once for a recipient. `Problem`
//!   for a copy sent after the sender received a 250 for an earlier one (with the cause
//!   when the whole message was resent after another recipient's 4xx); `Info` when every
//!   earlier copy's reply was lost (the farm kept it but the sender never heard: a resend
//!   is right, RFC 1047), or when the copies have no Message-ID and only their identical
//!   content ties them together.
//!
//! Contacts tied to no message (refused while the client had nothing in flight) are
//! judged per client by mx-failover. The overall findings give, per check, the worst
//! severity and the deliveries and clients that have it.

mod across;
mod checks;
mod client;
mod failover;
mod overall;
mod render;
mod tries;

pub use render::duration;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::deliveries::domain_records;
use crate::journal::{DomainRecord, Event, Missing};
use crate::transcript::{DeliveryOutcome, Transcript};
use across::Env;
use overall::overall;

/// The least move-on window: a sender's move to its next MX within this is one try.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The move-on window of a client whose stories show no rhythm.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);
/// How much longer a gap must be than the one before it to part moves from retries.
pub const RHYTHM_JUMP: u32 = 4;
/// More tries than this within one hour hammer the MX.
pub const HAMMERING_PER_HOUR: usize = 12;
/// Intervals that grow to this many times the first are a backoff.
pub const GROWTH: f64 = 1.5;
/// RFC 5321 §4.5.4.1: "the retry interval SHOULD be at least 30 minutes".
pub const RFC_RETRY_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// RFC 5321 §4.5.4.1: "the give-up time generally needs to be at least 4-5 days".
pub const RFC_GIVE_UP: Duration = Duration::from_secs(4 * 86_400);
/// The least silence after a deferred delivery's last attempt before it counts as over.
pub const SILENCE: Duration = Duration::from_secs(3600);

/// The report: per delivery, per client for contacts tied to no message, then overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Set when events are missing from the journal: findings may then be wrong, and the
    /// rendering says so first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Missing>,
    pub deliveries: Vec<DeliveryReport>,
    /// Per client, the findings on its contacts tied to no message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientReport>,
    /// Per check, the worst severity and which deliveries and clients have it.
    pub overall: Vec<Finding>,
}

/// The findings of one delivery: one message to one recipient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryReport {
    /// The message's number, as in the transcript.
    pub message: usize,
    pub sender: String,
    /// `None` when no attempt of the message named a recipient.
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

/// The findings on one client's contacts tied to no message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientReport {
    pub client: IpAddr,
    pub attempts: usize,
    pub findings: Vec<Finding>,
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
    /// For overall findings: the clients whose contacts tied to no message are concerned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<IpAddr>,
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
        /// Whether that deferral's text told the sender how long to wait.
        told: bool,
    },
    /// After a connection-level failure: did the client go to another MX?
    MxFailover {
        /// Failures judged.
        failures: usize,
        /// How many times the client's next contact went to the same host again.
        same_host: usize,
    },
    /// Attempts on a host while a lower-preference host was not tried in that try.
    MxPreference { out_of_order: usize },
    /// Of the hosts sharing the lowest preference, how many the delivery used.
    MxSpread { used: usize, equal: usize },
    /// Attempts made after a permanent refusal.
    RetryAfter5xx { code: u16, retries: usize },
    /// After a per-recipient 4xx: did the retry resend to recipients already delivered?
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
    /// The most tries within one hour, and whether the intervals grew.
    Hammering { max_per_hour: usize, growing: bool },
    /// The shortest interval between tries, against RFC 5321's 30 minutes.
    RetryInterval {
        #[serde(rename = "shortest_ms", serialize_with = "crate::millis::serialize")]
        shortest: Duration,
    },
    /// A delivery still deferred when the journal went quiet.
    GiveUp {
        tries: usize,
        /// From the start of the first attempt to the end of the last.
        #[serde(rename = "retried_for_ms", serialize_with = "crate::millis::serialize")]
        retried_for: Duration,
        /// From the end of the last attempt to the end of what was observed.
        #[serde(rename = "silence_ms", serialize_with = "crate::millis::serialize")]
        silence: Duration,
    },
    /// The same message accepted more than once for one recipient.
    Duplicate {
        /// How many copies were accepted.
        times: usize,
        message_id: Option<String>,
        cause: DuplicateCause,
    },
    /// Overall: the worst severity of a check and where.
    Summary {
        of: Check,
        /// Deliveries with the worst severity (as many as [`Finding::deliveries`] lists).
        deliveries: usize,
        /// Clients whose own contacts have it (as many as [`Finding::clients`] lists).
        clients: usize,
        /// Deliveries and clients where the check applied.
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

/// Why a message was accepted more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicateCause {
    /// Accepted once: no duplicate.
    Once,
    /// Every earlier copy was kept without a reply the sender got: resending is right.
    LostReply,
    /// Resent to every recipient after a per-recipient 4xx for another one.
    WholeMessageResent,
    /// Resent after a 250 the sender received.
    Resent,
    /// Identical content without a Message-ID: perhaps copies, perhaps new messages.
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
        Context {
            domains: domain_records(events),
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
    let clients: Vec<ClientReport> = (0..transcript.unattributed.len())
        .map(|c| env.client(c))
        .collect();
    let overall = overall(&deliveries, &clients);
    Report {
        incomplete: transcript.incomplete,
        deliveries,
        clients,
        overall,
    }
}

impl Report {
    /// Every finding of severity `Problem`, per delivery and per client.
    pub fn problems(&self) -> Vec<&Finding> {
        self.deliveries
            .iter()
            .flat_map(|d| &d.findings)
            .chain(self.clients.iter().flat_map(|c| &c.findings))
            .filter(|f| f.severity == Severity::Problem)
            .collect()
    }

    /// The findings of the first delivery of `sender` to `recipient`, if there is one
    /// (one per message: see [`Report::deliveries_to`]).
    pub fn delivery(&self, sender: &str, recipient: &str) -> Option<&DeliveryReport> {
        self.deliveries_to(sender, recipient).into_iter().next()
    }

    /// The findings of every delivery of `sender` to `recipient`, one per message.
    pub fn deliveries_to(&self, sender: &str, recipient: &str) -> Vec<&DeliveryReport> {
        self.deliveries
            .iter()
            .filter(|d| {
                d.sender.eq_ignore_ascii_case(sender)
                    && d.recipient
                        .as_deref()
                        .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
            })
            .collect()
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

impl ClientReport {
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
            clients: Vec::new(),
            text,
        }
    }
}

#[cfg(test)]
mod tests;
