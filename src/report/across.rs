//! The evaluation of one delivery, with what it needs beyond its own attempts: every
//! domain's MX hosts, the end of what was observed (give-up), and the other deliveries'
//! attempts on the same connection (recipient-retry and duplicate, which tell a
//! per-recipient retry from a resent message by what the other recipients got).

use std::collections::HashMap;
use std::time::Duration;

use super::checks::{
    backoff, early_retry, hammering, mx_failover, mx_preference, mx_spread, retry_after_5xx,
    retry_interval,
};
use super::render::{duration, plural, what};
use super::tries::{interval_stats, tries};
use super::{
    Context, DeliveryReport, DuplicateCause, Finding, FindingKind, RFC_GIVE_UP, SILENCE, Severity,
};
use crate::deliveries::Outcome;
use crate::transcript::{DeliveryOutcome, DeliveryTranscript, Transcript, TranscriptAttempt};

pub(super) struct Env<'a> {
    transcript: &'a Transcript,
    /// domain -> MX hosts with preferences.
    mx: HashMap<String, Vec<(String, u16)>>,
    until: Duration,
    /// conn -> every (delivery, attempt) that ended on it.
    by_conn: HashMap<u64, Vec<(usize, usize)>>,
}

impl<'a> Env<'a> {
    pub(super) fn new(transcript: &'a Transcript, context: &Context) -> Env<'a> {
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

    pub(super) fn delivery(&self, d: usize) -> DeliveryReport {
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
