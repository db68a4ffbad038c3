//! The retry-behaviour report: what a mail engineer checks in a sender's retries, per
//! delivery and overall, each finding with the attempts that show it.
//!
//! It is computed from a [`Transcript`] alone (pure, no I/O), so a journal read back from a
//! file gives the same report as a live farm. [`report`] knows only the transcript;
//! [`report_journal`] and [`report_farm`] also know every domain's MX hosts (from the
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

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::deliveries::Outcome;
use crate::journal::{DomainRecord, Event, EventKind, Missing};
use crate::transcript::{
    DeliveryOutcome, DeliveryTranscript, Transcript, TranscriptAttempt, incomplete_warning,
};

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

    fn label(self) -> &'static str {
        match self {
            Severity::Problem => "PROBLEM",
            Severity::Info => "info",
            Severity::Ok => "ok",
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

    /// The stable text form: no wall-clock times, durations like `5m02s`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(missing) = &self.incomplete {
            let _ = writeln!(out, "{}", incomplete_warning(missing));
        }
        let count = |s: Severity| {
            self.deliveries
                .iter()
                .flat_map(|d| &d.findings)
                .filter(|f| f.severity == s)
                .count()
        };
        let _ = writeln!(
            out,
            "retry report: {}; {}, {} to note",
            plural(self.deliveries.len(), "delivery", "deliveries"),
            plural(count(Severity::Problem), "problem", "problems"),
            count(Severity::Info),
        );
        for (i, delivery) in self.deliveries.iter().enumerate() {
            out.push('\n');
            delivery.render_into(&mut out, i + 1);
        }
        if !self.overall.is_empty() {
            out.push_str("\noverall\n");
            for finding in &self.overall {
                finding.render_into(&mut out);
            }
        }
        out
    }
}

impl DeliveryReport {
    /// The finding of one check, if it applied.
    pub fn finding(&self, check: Check) -> Option<&Finding> {
        self.findings.iter().find(|f| f.kind.check() == check)
    }

    fn render_into(&self, out: &mut String, number: usize) {
        let recipient = self
            .recipient
            .as_deref()
            .map_or("(no recipient given)".to_string(), |r| format!("<{r}>"));
        let _ = writeln!(out, "delivery {number} <{}> -> {recipient}", self.sender);
        let _ = writeln!(out, "  {}", verdict(&self.outcome));
        if self.recipient.is_none() {
            let _ = writeln!(
                out,
                "  {} before any recipient was given; not analysed, since the journal does not say which recipients they were for",
                plural(self.attempts, "attempt", "attempts"),
            );
            return;
        }
        match &self.intervals {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "  {} in {}; interval min {}, median {}, max {}; at most {} in an hour",
                    plural(self.attempts, "attempt", "attempts"),
                    plural(i.tries, "try", "tries"),
                    duration(i.min),
                    duration(i.median),
                    duration(i.max),
                    plural(i.max_per_hour, "try", "tries"),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {} in 1 try",
                    plural(self.attempts, "attempt", "attempts")
                );
            }
        }
        for finding in &self.findings {
            finding.render_into(out);
        }
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

    fn render_into(&self, out: &mut String) {
        let _ = write!(
            out,
            "  {:<8}{:<16}{}",
            self.severity.label(),
            self.kind.check().as_str(),
            self.text
        );
        if !self.attempts.is_empty() {
            let _ = write!(out, " [{}]", numbers(&self.attempts));
        }
        out.push('\n');
    }
}

/// `#1-#3, #5` for attempts 1, 2, 3 and 5.
fn numbers(attempts: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < attempts.len() {
        let start = attempts[i];
        let mut end = start;
        while i + 1 < attempts.len() && attempts[i + 1] == end + 1 {
            i += 1;
            end = attempts[i];
        }
        parts.push(if end == start {
            format!("#{start}")
        } else {
            format!("#{start}-#{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// `30s`, `5m02s`, `1h20m00s`, `4d02h00m`: whole seconds, no leading `+`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn verdict(outcome: &DeliveryOutcome) -> String {
    match outcome {
        DeliveryOutcome::Delivered { attempts, after } => format!(
            "delivered after {} in {}",
            plural(*attempts, "attempt", "attempts"),
            duration(*after)
        ),
        DeliveryOutcome::DeliveredTwice { times } => format!("delivered {times} times"),
        DeliveryOutcome::StillDeferred { attempts } => format!(
            "still deferred after {}",
            plural(*attempts, "attempt", "attempts")
        ),
        DeliveryOutcome::Bounced { attempts } => {
            format!("bounced: permanent failure at attempt {attempts}")
        }
        DeliveryOutcome::Abandoned { attempts } => format!(
            "abandoned by the sender after {}",
            plural(*attempts, "attempt", "attempts")
        ),
    }
}

/// What the reply or the lost connection that ended an attempt was, in a few words.
fn what(a: &TranscriptAttempt) -> String {
    match &a.reply {
        Some(r) => match &r.status {
            Some(status) => format!("{} {status}", r.code),
            None => r.code.to_string(),
        },
        None => "lost connection".to_string(),
    }
}

/// `mx1 (10)`.
fn host_label(host: &str, preference: Option<u16>) -> String {
    match preference {
        Some(p) => format!("{host} ({p})"),
        None => host.to_string(),
    }
}

struct Env<'a> {
    transcript: &'a Transcript,
    /// domain -> MX hosts with preferences.
    mx: HashMap<String, Vec<(String, u16)>>,
    until: Duration,
    /// conn -> every (delivery, attempt) that ended on it.
    by_conn: HashMap<u64, Vec<(usize, usize)>>,
}

impl<'a> Env<'a> {
    fn new(transcript: &'a Transcript, context: &Context) -> Env<'a> {
        let mut mx: HashMap<String, Vec<(String, u16)>> = HashMap::new();
        for domain in &context.domains {
            mx.insert(domain.name.to_ascii_lowercase(), domain.mx.clone());
        }
        let mut by_conn: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
        let mut until = context.observed_until.unwrap_or_default();
        for (d, delivery) in transcript.deliveries.iter().enumerate() {
            let domain = delivery.recipient.as_deref().and_then(domain_of);
            for (i, a) in delivery.attempts.iter().enumerate() {
                by_conn.entry(a.conn).or_default().push((d, i));
                if context.observed_until.is_none() {
                    until = until.max(a.attempt.at);
                }
                if let (Some(domain), Some(p)) = (&domain, a.preference) {
                    let hosts = mx.entry(domain.clone()).or_default();
                    if !hosts.iter().any(|(h, _)| *h == a.host) {
                        hosts.push((a.host.clone(), p));
                    }
                }
            }
        }
        Env {
            transcript,
            mx,
            until,
            by_conn,
        }
    }

    fn delivery(&self, d: usize) -> DeliveryReport {
        let delivery = &self.transcript.deliveries[d];
        let mut report = DeliveryReport {
            sender: delivery.sender.clone(),
            recipient: delivery.recipient.clone(),
            outcome: delivery.outcome.clone(),
            attempts: delivery.attempts.len(),
            findings: Vec::new(),
            intervals: None,
        };
        let Some(recipient) = &delivery.recipient else {
            return report;
        };
        let a = &delivery.attempts;
        let mx: &[(String, u16)] = domain_of(recipient)
            .and_then(|domain| self.mx.get(&domain))
            .map_or(&[], Vec::as_slice);
        let tries = tries(a);
        let starts: Vec<Duration> = tries.iter().map(|t| a[t[0]].attempt.at).collect();
        // Saturating: a journal from elsewhere may have times that go backwards.
        let intervals: Vec<Duration> = starts
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect();
        report.intervals = interval_stats(&starts, &intervals);
        let findings = [
            early_retry(a, &tries),
            mx_failover(a, mx),
            mx_preference(a, &tries, mx),
            mx_spread(a, mx),
            retry_after_5xx(a),
            self.recipient_retry(d),
            backoff(&tries, &intervals),
            hammering(&tries, &starts),
            retry_interval(&tries, &intervals),
            self.give_up(delivery, &tries, &intervals),
            self.duplicate(d),
        ];
        report.findings = findings.into_iter().flatten().collect();
        report
    }

    /// Other attempts of the same sender on connection `conn`, with a recipient.
    fn on_conn(&self, d: usize, conn: u64) -> impl Iterator<Item = (usize, usize)> + '_ {
        let sender = &self.transcript.deliveries[d].sender;
        self.by_conn
            .get(&conn)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&(d2, _)| {
                let other = &self.transcript.deliveries[d2];
                d2 != d && other.sender == *sender && other.recipient.is_some()
            })
    }

    fn attempt(&self, d: usize, i: usize) -> &TranscriptAttempt {
        &self.transcript.deliveries[d].attempts[i]
    }

    fn recipient(&self, d: usize) -> &str {
        self.transcript.deliveries[d]
            .recipient
            .as_deref()
            .unwrap_or("")
    }

    /// Recipients accepted on connection `first` that delivery `d2` carried again on
    /// connection `again` (with the same Message-ID, when both are known).
    fn resent_on(&self, d: usize, first: u64, again: u64) -> Vec<usize> {
        let mut resent = Vec::new();
        for (d2, i2) in self.on_conn(d, first) {
            let accepted = self.attempt(d2, i2);
            if accepted.outcome != Outcome::Delivered {
                continue;
            }
            let carried = self.transcript.deliveries[d2]
                .attempts
                .iter()
                .skip(i2 + 1)
                .any(|b| {
                    b.conn == again
                        && match (&accepted.attempt.message_id, &b.attempt.message_id) {
                            (Some(x), Some(y)) => x == y,
                            _ => true,
                        }
                });
            if carried && !resent.contains(&d2) {
                resent.push(d2);
            }
        }
        resent
    }

    fn recipient_retry(&self, d: usize) -> Option<Finding> {
        let a = &self.transcript.deliveries[d].attempts;
        let mut checked = 0;
        let mut bad: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut good: Option<(usize, Vec<usize>)> = None;
        for i in 0..a.len().saturating_sub(1) {
            let x = &a[i];
            let per_recipient = x.stage == crate::scenario::Stage::Rcpt
                && x.outcome == Outcome::Deferred
                && x.reply.as_ref().is_some_and(|r| r.code != 421);
            if !per_recipient {
                continue;
            }
            let accepted: Vec<usize> = self
                .on_conn(d, x.conn)
                .filter(|&(d2, i2)| self.attempt(d2, i2).outcome == Outcome::Delivered)
                .map(|(d2, _)| d2)
                .collect();
            if accepted.is_empty() {
                continue;
            }
            checked += 1;
            let resent = self.resent_on(d, x.conn, a[i + 1].conn);
            if resent.is_empty() {
                good.get_or_insert((i, accepted));
            } else {
                bad.push((i, resent));
            }
        }
        if checked == 0 {
            return None;
        }
        let names = |ds: &[usize]| {
            ds.iter()
                .map(|&d2| format!("<{}>", self.recipient(d2)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some((i, resent)) = bad.first() {
            let attempts: Vec<usize> = bad.iter().flat_map(|(i, _)| [*i, i + 1]).collect();
            let mut all: Vec<usize> = bad.iter().flat_map(|(_, r)| r.clone()).collect();
            all.sort_unstable();
            all.dedup();
            let text = format!(
                "after the {} for this recipient at #{}, #{} resent the whole message: {} accepted on #{}'s connection got it again{}",
                what(&a[*i]),
                i + 1,
                i + 2,
                names(resent),
                i + 1,
                if bad.len() > 1 {
                    format!("; {} retries like this", bad.len())
                } else {
                    String::new()
                },
            );
            let kind = FindingKind::RecipientRetry {
                whole_message: true,
                resent_to: all
                    .iter()
                    .map(|&d2| self.recipient(d2).to_string())
                    .collect(),
            };
            return Some(Finding::new(kind, Severity::Problem, &attempts, text));
        }
        let (i, accepted) = good?;
        let text = format!(
            "after the {} at #{}, #{} carried only the deferred recipients; {} accepted on #{}'s connection not sent again",
            what(&a[i]),
            i + 1,
            i + 2,
            names(&accepted),
            i + 1,
        );
        let kind = FindingKind::RecipientRetry {
            whole_message: false,
            resent_to: Vec::new(),
        };
        Some(Finding::new(kind, Severity::Ok, &[i, i + 1], text))
    }

    fn give_up(
        &self,
        delivery: &DeliveryTranscript,
        tries: &[Vec<usize>],
        intervals: &[Duration],
    ) -> Option<Finding> {
        if !matches!(delivery.outcome, DeliveryOutcome::StillDeferred { .. }) {
            return None;
        }
        let a = &delivery.attempts;
        let (first, last) = (a.first()?, a.last()?);
        let silence = self.until.saturating_sub(last.attempt.at);
        let longest = intervals.iter().copied().max().unwrap_or_default();
        if silence < SILENCE.max(longest) {
            return None;
        }
        let retried_for = last.attempt.at.saturating_sub(first.attempt.at);
        let kind = FindingKind::GiveUp {
            tries: tries.len(),
            retried_for,
            silence,
        };
        let n = a.len();
        if tries.len() == 1 {
            let text = format!(
                "never retried: #{n} was deferred ({}), and nothing followed in the {} the journal goes on; a 4xx asks the sender to try again",
                what(last),
                duration(silence)
            );
            let attempts: Vec<usize> = (0..n).collect();
            return Some(Finding::new(kind, Severity::Problem, &attempts, text));
        }
        if retried_for < RFC_GIVE_UP {
            let text = format!(
                "last try at +{} (#{n}) after {}, then nothing for {}; RFC 5321 suggests retrying for 4-5 days (the journal cannot tell whether the sender gave up or waits longer)",
                duration(last.offset),
                plural(tries.len(), "try", "tries"),
                duration(silence),
            );
            return Some(Finding::new(kind, Severity::Info, &[n - 1], text));
        }
        let text = format!(
            "kept retrying for {} ({}) before going quiet, as long as RFC 5321's 4-5 days",
            duration(retried_for),
            plural(tries.len(), "try", "tries"),
        );
        Some(Finding::new(kind, Severity::Ok, &[0, n - 1], text))
    }

    fn duplicate(&self, d: usize) -> Option<Finding> {
        let a = &self.transcript.deliveries[d].attempts;
        let delivered: Vec<usize> = (0..a.len())
            .filter(|&i| a[i].outcome == Outcome::Delivered)
            .collect();
        if delivered.is_empty() {
            return None;
        }
        let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
        for &i in &delivered {
            let id = a[i].attempt.message_id.as_deref();
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, list)) => list.push(i),
                None => groups.push((id, vec![i])),
            }
        }
        let Some((id, list)) = groups.iter().find(|(_, list)| list.len() > 1) else {
            let text = if groups.len() == 1 {
                format!("accepted once (#{})", delivered[0] + 1)
            } else {
                format!("{} different messages, each accepted once", delivered.len())
            };
            let kind = FindingKind::Duplicate {
                times: 1,
                message_id: groups[0].0.map(str::to_string),
                cause: DuplicateCause::Resent,
            };
            return Some(Finding::new(kind, Severity::Ok, &delivered, text));
        };
        let (first, second) = (list[0], list[1]);
        let cause = match id {
            None => DuplicateCause::Unknown,
            Some(_) if a[first].reply.is_none() => DuplicateCause::LostReply,
            Some(_) => {
                let whole = self.on_conn(d, a[first].conn).any(|(d2, i2)| {
                    let x = self.attempt(d2, i2);
                    x.outcome == Outcome::Deferred
                        && x.stage == crate::scenario::Stage::Rcpt
                        && self.transcript.deliveries[d2]
                            .attempts
                            .iter()
                            .any(|b| b.conn == a[second].conn)
                });
                if whole {
                    DuplicateCause::WholeMessageResent
                } else {
                    DuplicateCause::Resent
                }
            }
        };
        let times = list.len();
        let id_text = id.map_or("without a Message-ID".to_string(), |id| format!("<{id}>"));
        let (severity, why) = match cause {
            DuplicateCause::LostReply => (
                Severity::Info,
                format!(
                    "the farm kept #{} but lost its reply, so resending was right (RFC 1047)",
                    first + 1
                ),
            ),
            DuplicateCause::WholeMessageResent => (
                Severity::Problem,
                format!(
                    "the whole message was resent after another recipient's 4xx on #{}'s connection",
                    first + 1
                ),
            ),
            DuplicateCause::Resent => (
                Severity::Problem,
                format!("resent after #{} was accepted", first + 1),
            ),
            DuplicateCause::Unknown => (
                Severity::Info,
                "no Message-ID to tell copies from new messages".to_string(),
            ),
        };
        let text = format!("{id_text} accepted {times} times: {why}");
        let kind = FindingKind::Duplicate {
            times,
            message_id: id.map(str::to_string),
            cause,
        };
        Some(Finding::new(kind, severity, list, text))
    }
}

fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
}

/// Groups attempts into tries (0-based attempt indices); see the module docs.
fn tries(a: &[TranscriptAttempt]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        let joins = i > 0
            && out.last().is_some_and(|current| {
                let prev = &a[i - 1];
                prev.outcome == Outcome::Deferred
                    && x.attempt.at.saturating_sub(prev.attempt.at) <= TRY_GAP
                    && current.iter().all(|&j| a[j].host != x.host)
            });
        match out.last_mut() {
            Some(current) if joins => current.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

fn interval_stats(starts: &[Duration], intervals: &[Duration]) -> Option<IntervalStats> {
    if intervals.is_empty() {
        return None;
    }
    let mut sorted = intervals.to_vec();
    sorted.sort_unstable();
    Some(IntervalStats {
        tries: starts.len(),
        min: sorted[0],
        median: sorted[(sorted.len() - 1) / 2],
        max: sorted[sorted.len() - 1],
        max_per_hour: busiest_hour(starts).1,
    })
}

/// The first try of the busiest one-hour window, and how many tries it holds.
fn busiest_hour(starts: &[Duration]) -> (usize, usize) {
    let hour = Duration::from_secs(3600);
    (0..starts.len())
        .map(|r| {
            let n = starts[r..]
                .iter()
                .take_while(|&&s| s < starts[r] + hour)
                .count();
            (r, n)
        })
        .fold((0, 0), |best, x| if x.1 > best.1 { x } else { best })
}

fn related(x: &TranscriptAttempt, y: &TranscriptAttempt) -> bool {
    x.host == y.host
        || match (&x.reply, &y.reply) {
            (Some(rx), Some(ry)) => rx.code == ry.code && rx.status == ry.status,
            _ => false,
        }
}

fn early_retry(a: &[TranscriptAttempt], tries: &[Vec<usize>]) -> Option<Finding> {
    let mut try_of = vec![0; a.len()];
    for (t, members) in tries.iter().enumerate() {
        for &i in members {
            try_of[i] = t;
        }
    }
    let mut checked = 0;
    // (earlier, retry, waited, asked)
    let mut early: Vec<(usize, usize, Duration, Duration)> = Vec::new();
    let mut closest: Option<(usize, usize, Duration, Duration)> = None;
    for j in 0..a.len() {
        let Some(i) = (0..j)
            .rev()
            .filter(|&i| try_of[i] < try_of[j])
            .find(|&i| related(&a[i], &a[j]))
        else {
            continue;
        };
        let Some(asked) = a[i]
            .attempt
            .retry_after
            .filter(|_| a[i].outcome == Outcome::Deferred)
        else {
            continue;
        };
        checked += 1;
        let waited = a[j].attempt.at.saturating_sub(a[i].attempt.at);
        if waited < asked && a[j].outcome == Outcome::Deferred {
            early.push((i, j, waited, asked));
        } else if closest
            .is_none_or(|(_, _, w, k)| waited.saturating_sub(asked) < w.saturating_sub(k))
        {
            closest = Some((i, j, waited, asked));
        }
    }
    if checked == 0 {
        return None;
    }
    if let Some(&(i, j, waited, asked)) = early.first() {
        let short = early.iter().any(|e| e.3 <= SHORT_DEFERRAL);
        let attempts: Vec<usize> = early.iter().flat_map(|e| [e.0, e.1]).collect();
        let text = format!(
            "{} came before the known end of a deferral and {} deferred again (wasted); the first: #{} {} after #{}, which asked for {}{}",
            plural(early.len(), "retry", "retries"),
            if early.len() == 1 { "was" } else { "were" },
            j + 1,
            duration(waited),
            i + 1,
            duration(asked),
            if short {
                ""
            } else {
                "; a wait that long is not one a sender can know"
            },
        );
        let kind = FindingKind::EarlyRetry {
            early: early.len(),
            checked,
            waited,
            asked,
        };
        let severity = if short {
            Severity::Problem
        } else {
            Severity::Info
        };
        return Some(Finding::new(kind, severity, &attempts, text));
    }
    let (i, j, waited, asked) = closest?;
    let text = format!(
        "every retry waited out the known end of the deferral before it ({} checked); the closest: #{} {} after #{}, which asked for {}",
        checked,
        j + 1,
        duration(waited),
        i + 1,
        duration(asked),
    );
    let kind = FindingKind::EarlyRetry {
        early: 0,
        checked,
        waited,
        asked,
    };
    Some(Finding::new(kind, Severity::Ok, &[i, j], text))
}

fn mx_failover(a: &[TranscriptAttempt], mx: &[(String, u16)]) -> Option<Finding> {
    if mx.len() < 2 {
        return None;
    }
    let mut failures = Vec::new();
    let mut same = Vec::new();
    for i in 0..a.len().saturating_sub(1) {
        let failed =
            a[i].outcome == Outcome::Deferred && a[i].reply.as_ref().is_none_or(|r| r.code == 421);
        if !failed {
            continue;
        }
        failures.push(i);
        if a[i + 1].host == a[i].host {
            same.push(i);
        }
    }
    let &first = failures.first()?;
    let kind = FindingKind::MxFailover {
        failures: failures.len(),
        same_host: same.len(),
    };
    if let Some(&i) = same.first() {
        let others: Vec<String> = mx
            .iter()
            .filter(|(h, _)| *h != a[i].host)
            .map(|(h, p)| host_label(h, Some(*p)))
            .collect();
        let text = format!(
            "after the {} at #{} on {}, the next attempt #{} went to {} again although the domain has other MX hosts ({}); {} of {}",
            what(&a[i]),
            i + 1,
            a[i].host,
            i + 2,
            a[i].host,
            others.join(", "),
            same.len(),
            plural(failures.len(), "time", "times"),
        );
        let attempts: Vec<usize> = same.iter().flat_map(|&i| [i, i + 1]).collect();
        return Some(Finding::new(kind, Severity::Problem, &attempts, text));
    }
    let text = format!(
        "moved to another MX after each 421 or lost connection ({}); e.g. after the {} at #{} on {}, #{} went to {}",
        plural(failures.len(), "time", "times"),
        what(&a[first]),
        first + 1,
        a[first].host,
        first + 2,
        a[first + 1].host,
    );
    Some(Finding::new(kind, Severity::Ok, &[first, first + 1], text))
}

fn mx_preference(
    a: &[TranscriptAttempt],
    tries: &[Vec<usize>],
    mx: &[(String, u16)],
) -> Option<Finding> {
    let levels: BTreeSet<u16> = mx.iter().map(|(_, p)| *p).collect();
    if levels.len() < 2 {
        return None;
    }
    let preference = |host: &str| mx.iter().find(|(h, _)| h == host).map(|(_, p)| *p);
    let mut out_of_order: Vec<(usize, Vec<String>)> = Vec::new();
    for members in tries {
        let mut tried: Vec<&str> = Vec::new();
        for &j in members {
            if let Some(p) = preference(&a[j].host) {
                let skipped: Vec<String> = mx
                    .iter()
                    .filter(|(h, q)| *q < p && !tried.contains(&h.as_str()))
                    .map(|(h, q)| host_label(h, Some(*q)))
                    .collect();
                if !skipped.is_empty() {
                    out_of_order.push((j, skipped));
                }
            }
            tried.push(&a[j].host);
        }
    }
    let kind = FindingKind::MxPreference {
        out_of_order: out_of_order.len(),
    };
    if let Some((j, skipped)) = out_of_order.first() {
        let text = format!(
            "#{} went to {} while {} had not been tried in that try{} (a connection refused at TCP or at the greeting is not part of a delivery)",
            j + 1,
            host_label(&a[*j].host, preference(&a[*j].host)),
            skipped.join(", "),
            if out_of_order.len() > 1 {
                format!("; {} attempts like this", out_of_order.len())
            } else {
                String::new()
            },
        );
        let attempts: Vec<usize> = out_of_order.iter().map(|(j, _)| *j).collect();
        return Some(Finding::new(kind, Severity::Info, &attempts, text));
    }
    let lowest = *levels.first()?;
    let text =
        format!("every try went to the MX hosts in preference order, from preference {lowest} up");
    // A try that went to more than one host shows the order best.
    let shown = tries.iter().find(|t| t.len() > 1).unwrap_or(&tries[0]);
    Some(Finding::new(kind, Severity::Ok, shown, text))
}

fn mx_spread(a: &[TranscriptAttempt], mx: &[(String, u16)]) -> Option<Finding> {
    let lowest = mx.iter().map(|(_, p)| *p).min()?;
    let equal: Vec<&str> = mx
        .iter()
        .filter(|(_, p)| *p == lowest)
        .map(|(h, _)| h.as_str())
        .collect();
    if equal.len() < 2 || a.len() < 2 {
        return None;
    }
    let mut used: Vec<&str> = Vec::new();
    for x in a {
        if equal.contains(&x.host.as_str()) && !used.contains(&x.host.as_str()) {
            used.push(&x.host);
        }
    }
    let kind = FindingKind::MxSpread {
        used: used.len(),
        equal: equal.len(),
    };
    match used.as_slice() {
        [] => None,
        [only] => {
            let on: Vec<usize> = (0..a.len()).filter(|&i| a[i].host == *only).collect();
            let others: Vec<&str> = equal.iter().copied().filter(|h| h != only).collect();
            let text = format!(
                "all {} at preference {lowest} went to {only}, never to {} of the same preference; RFC 5321 §5.1 asks senders to spread the load among them",
                plural(on.len(), "attempt", "attempts"),
                others.join(", "),
            );
            Some(Finding::new(kind, Severity::Info, &on, text))
        }
        _ => {
            let text = format!(
                "used {} of the {} hosts at preference {lowest} ({})",
                used.len(),
                equal.len(),
                used.join(", ")
            );
            let firsts: Vec<usize> = used
                .iter()
                .filter_map(|h| a.iter().position(|x| x.host == *h))
                .collect();
            Some(Finding::new(kind, Severity::Ok, &firsts, text))
        }
    }
}

fn retry_after_5xx(a: &[TranscriptAttempt]) -> Option<Finding> {
    let i = a.iter().position(|x| x.outcome == Outcome::Rejected)?;
    let code = a[i].reply.as_ref().map_or(0, |r| r.code);
    let retries = a.len() - i - 1;
    let kind = FindingKind::RetryAfter5xx { code, retries };
    if retries == 0 {
        let text = format!("no retry after the permanent {} at #{}", what(&a[i]), i + 1);
        return Some(Finding::new(kind, Severity::Ok, &[i], text));
    }
    let text = format!(
        "tried {} more after the permanent {} at #{}; a 5xx must not be retried",
        plural(retries, "time", "times"),
        what(&a[i]),
        i + 1,
    );
    let attempts: Vec<usize> = (i..a.len()).collect();
    Some(Finding::new(kind, Severity::Problem, &attempts, text))
}

fn firsts(tries: &[Vec<usize>]) -> Vec<usize> {
    tries.iter().map(|t| t[0]).collect()
}

fn backoff(tries: &[Vec<usize>], intervals: &[Duration]) -> Option<Finding> {
    if intervals.len() < 2 {
        return None;
    }
    let (first, last) = (intervals[0], intervals[intervals.len() - 1]);
    let growing = last > first;
    let kind = FindingKind::Backoff {
        first,
        last,
        growing,
    };
    let firsts = firsts(tries);
    if growing {
        let text = format!(
            "the interval between tries grows from {} to {}",
            duration(first),
            duration(last)
        );
        // The tries of the first and the last interval.
        let n = firsts.len();
        let ends = [firsts[0], firsts[1], firsts[n - 2], firsts[n - 1]];
        Some(Finding::new(kind, Severity::Ok, &ends, text))
    } else {
        let text = format!(
            "the interval between tries does not grow: first {}, last {}; a sender should back off",
            duration(first),
            duration(last)
        );
        Some(Finding::new(kind, Severity::Info, &firsts, text))
    }
}

fn hammering(tries: &[Vec<usize>], starts: &[Duration]) -> Option<Finding> {
    if tries.len() < 2 {
        return None;
    }
    let (from, max_per_hour) = busiest_hour(starts);
    let kind = FindingKind::Hammering { max_per_hour };
    if max_per_hour > HAMMERING_PER_HOUR {
        let attempts: Vec<usize> = tries[from..from + max_per_hour]
            .iter()
            .flatten()
            .copied()
            .collect();
        let text = format!(
            "{max_per_hour} tries within one hour from #{}; more than {HAMMERING_PER_HOUR} an hour (under 5 minutes apart) hammers the MX",
            tries[from][0] + 1,
        );
        return Some(Finding::new(kind, Severity::Problem, &attempts, text));
    }
    let text = format!(
        "at most {} in any hour",
        plural(max_per_hour, "try", "tries")
    );
    Some(Finding::new(kind, Severity::Ok, &[], text))
}

fn retry_interval(tries: &[Vec<usize>], intervals: &[Duration]) -> Option<Finding> {
    let (k, &shortest) = intervals.iter().enumerate().min_by_key(|(_, d)| **d)?;
    let kind = FindingKind::RetryInterval { shortest };
    let pair = [tries[k][0], tries[k + 1][0]];
    if shortest < RFC_RETRY_INTERVAL {
        let text = format!(
            "shortest interval {} (#{} to #{}); RFC 5321 suggests at least 30 minutes, though real MTAs retry sooner",
            duration(shortest),
            pair[0] + 1,
            pair[1] + 1,
        );
        Some(Finding::new(kind, Severity::Info, &pair, text))
    } else {
        let text = format!(
            "shortest interval {}, at least the 30 minutes RFC 5321 suggests",
            duration(shortest)
        );
        Some(Finding::new(kind, Severity::Ok, &pair, text))
    }
}

/// Per check, the worst severity across the deliveries where it applied.
fn overall(deliveries: &[DeliveryReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    for check in Check::ALL {
        let found: Vec<(usize, Severity)> = deliveries
            .iter()
            .enumerate()
            .filter_map(|(d, r)| r.finding(check).map(|f| (d + 1, f.severity)))
            .collect();
        let Some(worst) = found.iter().map(|(_, s)| *s).max_by_key(|s| s.rank()) else {
            continue;
        };
        let which: Vec<usize> = found
            .iter()
            .filter(|(_, s)| *s == worst)
            .map(|(d, _)| *d)
            .collect();
        let list = which
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let text = match worst {
            Severity::Ok if found.len() == 1 => "ok in the 1 delivery where it applies".to_string(),
            Severity::Ok => format!("ok in all {} deliveries where it applies", found.len()),
            Severity::Info | Severity::Problem => format!(
                "{} in {} {list} ({} of {} where it applies)",
                if worst == Severity::Problem {
                    "problem"
                } else {
                    "to note"
                },
                if which.len() == 1 {
                    "delivery"
                } else {
                    "deliveries"
                },
                which.len(),
                found.len(),
            ),
        };
        out.push(Finding {
            kind: FindingKind::Summary {
                of: check,
                deliveries: which.len(),
                applied: found.len(),
            },
            severity: worst,
            attempts: Vec::new(),
            deliveries: which,
            text,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliveries::Attempt;
    use crate::scenario::{Reply, Stage};

    /// An attempt at `secs`, on `host` with its preference and connection, ending at
    /// `stage` with `code` (`None`: the connection was lost).
    fn at(secs: u64, host: &str, conn: u64, stage: Stage, code: Option<u16>) -> TranscriptAttempt {
        let reply = code.map(|c| {
            let status = match c {
                250 => "2.0.0",
                421 => "4.3.2",
                451 => "4.7.1",
                452 => "4.2.2",
                _ => "5.1.1",
            };
            Reply::new(c, Some(status), "text")
        });
        let outcome = match code {
            Some(200..=399) => Outcome::Delivered,
            Some(400..=499) | None => Outcome::Deferred,
            Some(_) => Outcome::Rejected,
        };
        let preference = match host {
            "mx1" => Some(10),
            "mx2" => Some(20),
            _ => None,
        };
        TranscriptAttempt {
            offset: Duration::from_secs(secs),
            host: host.to_string(),
            preference,
            conn,
            stage,
            reply: reply.clone(),
            closed: code.is_none().then(|| "closed by farm: reset".to_string()),
            outcome,
            attempt: Attempt {
                at: Duration::from_secs(secs),
                host: host.to_string(),
                conn,
                stage,
                reply,
                outcome,
                closed: None,
                client: "192.0.2.1".parse().unwrap(),
                message_id: (outcome == Outcome::Delivered).then(|| "m@x.test".to_string()),
                retry_after: None,
            },
        }
    }

    fn asks(mut a: TranscriptAttempt, secs: u64) -> TranscriptAttempt {
        a.attempt.retry_after = Some(Duration::from_secs(secs));
        a
    }

    fn delivery(recipient: &str, attempts: Vec<TranscriptAttempt>) -> DeliveryTranscript {
        let n = attempts.len();
        let delivered = attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Delivered)
            .count();
        let outcome = match (delivered, attempts.last().map(|a| a.outcome)) {
            (0, Some(Outcome::Rejected)) => DeliveryOutcome::Bounced { attempts: n },
            (0, _) => DeliveryOutcome::StillDeferred { attempts: n },
            (1, _) => DeliveryOutcome::Delivered {
                attempts: n,
                after: attempts[n - 1].offset,
            },
            (times, _) => DeliveryOutcome::DeliveredTwice { times },
        };
        DeliveryTranscript {
            sender: "s@x.test".into(),
            recipient: Some(recipient.into()),
            attempts,
            outcome,
        }
    }

    fn one(d: DeliveryTranscript, until: u64) -> DeliveryReport {
        let context = Context {
            domains: vec![DomainRecord {
                name: "y.test".into(),
                mx: vec![("mx1".into(), 10), ("mx2".into(), 20)],
            }],
            observed_until: Some(Duration::from_secs(until)),
        };
        let transcript = Transcript {
            incomplete: None,
            deliveries: vec![d],
        };
        report_with(&transcript, &context).deliveries.remove(0)
    }

    fn severity(r: &DeliveryReport, check: Check) -> Option<Severity> {
        r.finding(check).map(|f| f.severity)
    }

    #[test]
    fn durations_and_attempt_lists() {
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(302)), "5m02s");
        assert_eq!(duration(Duration::from_secs(4800)), "1h20m00s");
        assert_eq!(duration(Duration::from_secs(4 * 86_400 + 7200)), "4d02h00m");
        assert_eq!(numbers(&[1, 2, 3, 5, 7, 8]), "#1-#3, #5, #7-#8");
    }

    #[test]
    fn moving_to_the_next_mx_within_a_minute_is_one_try() {
        let a = vec![
            at(0, "mx1", 1, Stage::Rcpt, Some(451)),
            at(1, "mx2", 2, Stage::Rcpt, Some(451)),
            at(300, "mx1", 3, Stage::Rcpt, Some(451)),
            at(330, "mx1", 4, Stage::Rcpt, Some(451)),
        ];
        assert_eq!(tries(&a), vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn an_early_retry_against_greylisting_is_a_problem_and_waiting_is_ok() {
        let early = one(
            delivery(
                "b@y.test",
                vec![
                    asks(at(0, "mx1", 1, Stage::Rcpt, Some(451)), 300),
                    asks(at(30, "mx1", 2, Stage::Rcpt, Some(451)), 270),
                    at(300, "mx1", 3, Stage::EndOfData, Some(250)),
                ],
            ),
            300,
        );
        let finding = early.finding(Check::EarlyRetry).unwrap();
        assert_eq!(finding.severity, Severity::Problem);
        assert_eq!(finding.attempts, vec![1, 2]);
        let patient = one(
            delivery(
                "b@y.test",
                vec![
                    asks(at(0, "mx1", 1, Stage::Rcpt, Some(451)), 300),
                    at(300, "mx1", 2, Stage::EndOfData, Some(250)),
                ],
            ),
            300,
        );
        assert_eq!(severity(&patient, Check::EarlyRetry), Some(Severity::Ok));
    }

    #[test]
    fn a_quota_retried_early_is_only_information() {
        let r = one(
            delivery(
                "b@y.test",
                vec![
                    asks(at(0, "mx1", 1, Stage::Rcpt, Some(452)), 6 * 3600),
                    asks(at(600, "mx1", 2, Stage::Rcpt, Some(452)), 6 * 3600 - 600),
                ],
            ),
            700,
        );
        assert_eq!(severity(&r, Check::EarlyRetry), Some(Severity::Info));
    }

    #[test]
    fn the_same_host_after_a_421_or_a_lost_connection_is_a_problem() {
        let r = one(
            delivery(
                "b@y.test",
                vec![
                    at(0, "mx1", 1, Stage::Rcpt, Some(421)),
                    at(300, "mx1", 2, Stage::Rcpt, None),
                    at(900, "mx1", 3, Stage::EndOfData, Some(250)),
                ],
            ),
            900,
        );
        let finding = r.finding(Check::MxFailover).unwrap();
        assert_eq!(finding.severity, Severity::Problem);
        assert_eq!(
            finding.kind,
            FindingKind::MxFailover {
                failures: 2,
                same_host: 2
            }
        );
        let moved = one(
            delivery(
                "b@y.test",
                vec![
                    at(0, "mx1", 1, Stage::Rcpt, Some(421)),
                    at(1, "mx2", 2, Stage::EndOfData, Some(250)),
                ],
            ),
            1,
        );
        assert_eq!(severity(&moved, Check::MxFailover), Some(Severity::Ok));
        assert_eq!(severity(&moved, Check::MxPreference), Some(Severity::Ok));
    }

    #[test]
    fn a_retry_after_a_5xx_and_a_silent_end_after_one_try() {
        let r = one(
            delivery(
                "b@y.test",
                vec![
                    at(0, "mx1", 1, Stage::Rcpt, Some(550)),
                    at(30, "mx1", 2, Stage::Rcpt, Some(550)),
                ],
            ),
            60,
        );
        let finding = r.finding(Check::RetryAfter5xx).unwrap();
        assert_eq!(finding.severity, Severity::Problem);
        assert_eq!(finding.attempts, vec![1, 2]);

        let gave_up = one(
            delivery("b@y.test", vec![at(0, "mx1", 1, Stage::Rcpt, Some(451))]),
            7200,
        );
        assert_eq!(severity(&gave_up, Check::GiveUp), Some(Severity::Problem));
        let too_soon_to_tell = one(
            delivery("b@y.test", vec![at(0, "mx1", 1, Stage::Rcpt, Some(451))]),
            600,
        );
        assert_eq!(severity(&too_soon_to_tell, Check::GiveUp), None);
    }

    #[test]
    fn a_duplicate_after_a_lost_reply_is_information() {
        let mut lost = at(0, "mx1", 1, Stage::EndOfData, None);
        lost.outcome = Outcome::Delivered;
        lost.attempt.message_id = Some("m@x.test".into());
        let r = one(
            delivery(
                "b@y.test",
                vec![lost, at(300, "mx1", 2, Stage::EndOfData, Some(250))],
            ),
            300,
        );
        let finding = r.finding(Check::Duplicate).unwrap();
        assert_eq!(finding.severity, Severity::Info);
        assert!(matches!(
            finding.kind,
            FindingKind::Duplicate {
                times: 2,
                cause: DuplicateCause::LostReply,
                ..
            }
        ));
    }

    #[test]
    fn the_report_serializes_and_renders() {
        let r = Report {
            incomplete: None,
            deliveries: vec![one(
                delivery(
                    "b@y.test",
                    vec![
                        asks(at(0, "mx1", 1, Stage::Rcpt, Some(451)), 300),
                        at(300, "mx1", 2, Stage::EndOfData, Some(250)),
                    ],
                ),
                300,
            )],
            overall: Vec::new(),
        };
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let finding = &json["deliveries"][0]["findings"][0];
        assert_eq!(finding["kind"]["check"], "early-retry");
        assert_eq!(finding["kind"]["asked_ms"], 300_000);
        assert_eq!(finding["severity"], "ok");
        assert!(
            r.render()
                .contains("ok      early-retry     every retry waited out")
        );
    }
}
