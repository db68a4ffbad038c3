//! The evaluation of one delivery, with what it needs beyond its own attempts: every
//! domain's MX hosts, the end of what was observed (give-up), what the client did in its
//! other stories (mx-failover, mx-preference, the rhythm of its tries), and the message's
//! other deliveries (recipient-retry and duplicate, which tell a per-recipient retry from
//! a resent message by what the other recipients of the same message got).

use std::collections::HashMap;
use std::time::Duration;

use super::checks::{
    backoff, early_retry, hammering, mx_preference, mx_spread, retry_after_5xx, retry_interval,
};
use super::client::Clients;
use super::failover::mx_failover;
use super::render::{duration, plural, what};
use super::tries::{interval_stats, tries};
use super::{
    ClientReport, Context, DEFAULT_WINDOW, DeliveryReport, DuplicateCause, Finding, FindingKind,
    RFC_GIVE_UP, SILENCE, Severity,
};
use crate::deliveries::{Identity, Outcome};
use crate::scenario::Stage;
use crate::transcript::{DeliveryOutcome, DeliveryTranscript, Transcript, TranscriptAttempt};

pub(super) struct Env<'a> {
    transcript: &'a Transcript,
    /// domain -> MX hosts with preferences.
    mx: HashMap<String, Vec<(String, u16)>>,
    until: Duration,
    clients: Clients,
    /// (conn, transaction) -> every (delivery, attempt) it made.
    by_tx: HashMap<(u64, u32), Vec<(usize, usize)>>,
}

impl<'a> Env<'a> {
    pub(super) fn new(transcript: &'a Transcript, context: &Context) -> Env<'a> {
        let mut mx: HashMap<String, Vec<(String, u16)>> = HashMap::new();
        for domain in &context.domains {
            mx.insert(domain.name.to_ascii_lowercase(), domain.mx.clone());
        }
        let mut by_tx: HashMap<(u64, u32), Vec<(usize, usize)>> = HashMap::new();
        let mut until = context.observed_until.unwrap_or_default();
        for (d, delivery) in transcript.deliveries.iter().enumerate() {
            let domain = delivery.recipient.as_deref().and_then(domain_of);
            for (i, a) in delivery.attempts.iter().enumerate() {
                by_tx
                    .entry((a.conn, a.attempt.transaction))
                    .or_default()
                    .push((d, i));
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
        for client in &transcript.unattributed {
            for a in &client.attempts {
                if context.observed_until.is_none() {
                    until = until.max(a.attempt.at);
                }
            }
        }
        Env {
            transcript,
            mx,
            until,
            clients: Clients::new(transcript),
            by_tx,
        }
    }

    /// The MX hosts of the domain a host serves (the first, if several).
    fn mx_of_host(&self, host: &str) -> &[(String, u16)] {
        let mut domains: Vec<(&String, &Vec<(String, u16)>)> = self
            .mx
            .iter()
            .filter(|(_, hosts)| hosts.iter().any(|(h, _)| h == host))
            .collect();
        domains.sort_by_key(|(name, _)| *name);
        domains.first().map_or(&[], |(_, hosts)| hosts.as_slice())
    }

    pub(super) fn delivery(&self, d: usize) -> DeliveryReport {
        let delivery = &self.transcript.deliveries[d];
        let a = &delivery.attempts;
        let mut report = DeliveryReport {
            message: delivery.message,
            sender: delivery.sender.clone(),
            recipient: delivery.recipient.clone(),
            outcome: delivery.outcome.clone(),
            attempts: a.len(),
            findings: Vec::new(),
            intervals: None,
        };
        let Some(first) = a.first() else {
            return report;
        };
        let mx: &[(String, u16)] = match delivery.recipient.as_deref().and_then(domain_of) {
            Some(domain) => self.mx.get(&domain).map_or(&[], Vec::as_slice),
            None => self.mx_of_host(&first.host),
        };
        let client = self.clients.of(first.attempt.client);
        let window = client.map_or(DEFAULT_WINDOW, |c| c.window);
        // The MX hosts the sender could reach: not those whose address the farm's DNS
        // never gave it (a rule left mx2 without an A record).
        let last = a.last().map_or(first.attempt.at, |x| x.attempt.at);
        let reachable: Vec<(String, u16)> = mx
            .iter()
            .filter(|(h, _)| client.is_none_or(|c| !c.unresolved(h, last + window)))
            .cloned()
            .collect();
        let mx = reachable.as_slice();
        let tries = tries(a, window);
        let starts: Vec<Duration> = tries.iter().map(|t| a[t[0]].attempt.started).collect();
        // Saturating: a journal from elsewhere may have times that go backwards.
        let intervals: Vec<Duration> = starts
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect();
        report.intervals = interval_stats(&starts, &intervals);
        // Attempts that never sent content are one message by envelope only. A retry
        // after a 5xx then cannot be told from a new message (the same SIZE= does not
        // say: a sender's probes are all alike).
        let message = self.transcript.message(delivery.message);
        let by_envelope = message.is_some_and(|m| m.identity == Identity::Envelope);
        // Several content-less attempts under one envelope may be several messages: even
        // an equal SIZE= does not tell (test messages are all alike).
        let envelope_only = by_envelope && a.len() > 1;
        let findings = [
            early_retry(a, &tries),
            mx_failover(a, &|_| mx, &self.clients),
            mx_preference(a, &tries, mx, client),
            mx_spread(a, mx),
            retry_after_5xx(a, by_envelope),
            self.recipient_retry(d),
            backoff(&tries, &intervals),
            hammering(&tries, &starts, &intervals),
            retry_interval(&tries, &intervals),
            self.give_up(delivery, &tries, &intervals),
            self.duplicate(d),
        ];
        report.findings = findings
            .into_iter()
            .flatten()
            .map(|f| uncertain(f, a))
            .map(|f| if envelope_only { one_envelope(f) } else { f })
            .collect();
        report
    }

    pub(super) fn client(&self, c: usize) -> ClientReport {
        let section = &self.transcript.unattributed[c];
        let a = &section.attempts;
        let findings = [mx_failover(a, &|x| self.mx_of_host(&x.host), &self.clients)];
        ClientReport {
            client: section.client,
            attempts: a.len(),
            findings: findings.into_iter().flatten().collect(),
        }
    }

    /// The other deliveries of the same message that transaction `(conn, number)` made
    /// attempts for, with their attempt there.
    fn same_tx(&self, d: usize, a: &TranscriptAttempt) -> Vec<(usize, &TranscriptAttempt)> {
        let message = self.transcript.deliveries[d].message;
        self.by_tx
            .get(&(a.conn, a.attempt.transaction))
            .into_iter()
            .flatten()
            .filter(|&&(d2, _)| d2 != d && self.transcript.deliveries[d2].message == message)
            .map(|&(d2, i2)| (d2, &self.transcript.deliveries[d2].attempts[i2]))
            .collect()
    }

    fn recipient(&self, d: usize) -> &str {
        self.transcript.deliveries[d]
            .recipient
            .as_deref()
            .unwrap_or("")
    }

    fn recipient_retry(&self, d: usize) -> Option<Finding> {
        let a = &self.transcript.deliveries[d].attempts;
        let mut checked = 0;
        let mut bad: Vec<(usize, Vec<String>)> = Vec::new();
        let mut good: Option<(usize, Vec<String>)> = None;
        for i in 0..a.len().saturating_sub(1) {
            let x = &a[i];
            let per_recipient = x.stage == Stage::Rcpt
                && x.outcome == Outcome::Deferred
                && x.reply.as_ref().is_some_and(|r| r.code != 421);
            if !per_recipient {
                continue;
            }
            let delivered: Vec<String> = self
                .same_tx(d, x)
                .into_iter()
                .filter(|(_, other)| other.outcome == Outcome::Delivered)
                .map(|(d2, _)| self.recipient(d2).to_string())
                .collect();
            if delivered.is_empty() {
                continue;
            }
            checked += 1;
            let resent: Vec<String> = delivered
                .iter()
                .filter(|r| {
                    a[i + 1]
                        .attempt
                        .carried
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(r))
                })
                .cloned()
                .collect();
            if resent.is_empty() {
                good.get_or_insert((i, delivered));
            } else {
                bad.push((i, resent));
            }
        }
        if checked == 0 {
            return None;
        }
        let names = |rs: &[String]| {
            rs.iter()
                .map(|r| format!("<{r}>"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some((i, resent)) = bad.first() {
            let attempts: Vec<usize> = bad.iter().flat_map(|(i, _)| [*i, i + 1]).collect();
            let mut all: Vec<String> = bad.iter().flat_map(|(_, r)| r.clone()).collect();
            all.sort_unstable();
            all.dedup();
            let text = format!(
                "after the {} for this recipient at #{}, #{} resent the whole message: {} of the same message, already delivered in #{}'s transaction, got it again{}",
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
                resent_to: all,
            };
            return Some(Finding::new(kind, Severity::Problem, &attempts, text));
        }
        let (i, delivered) = good?;
        let text = format!(
            "after the {} at #{}, #{} carried only the deferred recipients; {}, delivered in #{}'s transaction, not sent again",
            what(&a[i]),
            i + 1,
            i + 2,
            names(&delivered),
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
        // Farm time moved by hand after the last try passed for the farm, not for the
        // sender, which runs on its own clock: only the rest is silence it chose.
        let jumped: Duration = self
            .transcript
            .clock_jumps
            .iter()
            .filter(|(at, _)| *at > last.attempt.at && *at <= self.until)
            .map(|(_, by)| *by)
            .sum();
        let own = silence.saturating_sub(jumped);
        let jump_note = if jumped.is_zero() {
            String::new()
        } else {
            format!(
                "; {} of that is the farm's clock advanced by hand, so the sender's own clock saw {}",
                duration(jumped),
                duration(own)
            )
        };
        let retried_for = last.attempt.at.saturating_sub(first.attempt.started);
        let kind = FindingKind::GiveUp {
            tries: tries.len(),
            retried_for,
            silence,
        };
        let n = a.len();
        if tries.len() == 1 {
            let attempts: Vec<usize> = (0..n).collect();
            if own < SILENCE.max(longest) {
                let text = format!(
                    "no retry yet: #{n} was deferred ({}), and nothing followed in the {} the journal goes on{jump_note}, too little to tell whether it will retry",
                    what(last),
                    duration(silence)
                );
                return Some(Finding::new(kind, Severity::Info, &attempts, text));
            }
            let text = format!(
                "never retried: #{n} was deferred ({}), and nothing followed in the {} the journal goes on{jump_note}; a 4xx asks the sender to try again",
                what(last),
                duration(silence)
            );
            return Some(Finding::new(kind, Severity::Problem, &attempts, text));
        }
        if retried_for < RFC_GIVE_UP {
            let text = format!(
                "last try at +{} (#{n}) after {}, then nothing for {}{jump_note}; RFC 5321 suggests retrying for 4-5 days (the journal cannot tell whether the sender gave up or waits longer)",
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
        let delivery = &self.transcript.deliveries[d];
        let a = &delivery.attempts;
        let copies: Vec<usize> = (0..a.len())
            .filter(|&i| a[i].outcome == Outcome::Delivered)
            .collect();
        let &first = copies.first()?;
        let message = self.transcript.message(delivery.message);
        let message_id = match message.map(|m| &m.identity) {
            Some(Identity::MessageId { message_id }) => Some(message_id.clone()),
            _ => None,
        };
        if copies.len() == 1 {
            let kind = FindingKind::Duplicate {
                times: 1,
                message_id,
                cause: DuplicateCause::Once,
            };
            let text = format!("accepted once (#{})", first + 1);
            return Some(Finding::new(kind, Severity::Ok, &[first], text));
        }
        let times = copies.len();
        let named = message_id
            .as_ref()
            .map_or("the same content".to_string(), |id| format!("<{id}>"));
        // The first copy sent after the sender got a 250 for an earlier one.
        let after_250 = copies.iter().enumerate().skip(1).find_map(|(k, &j)| {
            copies[..k]
                .iter()
                .find(|&&p| a[p].reply.is_some())
                .map(|&p| (p, j))
        });
        let (severity, cause, text, shown) = match after_250 {
            _ if message_id.is_none() => (
                Severity::Info,
                DuplicateCause::Unknown,
                format!(
                    "{named} accepted {times} times: without a Message-ID, identical content may be copies or new messages"
                ),
                copies.clone(),
            ),
            Some((p, j)) => {
                let whole = self.same_tx(d, &a[p]).iter().any(|(_, other)| {
                    other.outcome == Outcome::Deferred && other.stage == Stage::Rcpt
                });
                let (cause, why) = if whole {
                    (
                        DuplicateCause::WholeMessageResent,
                        format!(
                            "#{} resent the whole message after another recipient's 4xx in #{}'s transaction, which the sender had got a 250 for",
                            j + 1,
                            p + 1
                        ),
                    )
                } else {
                    (
                        DuplicateCause::Resent,
                        format!(
                            "#{} was sent after the sender got the 250 for #{}",
                            j + 1,
                            p + 1
                        ),
                    )
                };
                (
                    Severity::Problem,
                    cause,
                    format!("{named} accepted {times} times: {why}"),
                    vec![p, j],
                )
            }
            None => (
                Severity::Info,
                DuplicateCause::LostReply,
                format!(
                    "{named} accepted {times} times: the farm kept {} but the sender never got the 250, so resending was right (RFC 1047)",
                    copies[..times - 1]
                        .iter()
                        .map(|p| format!("#{}", p + 1))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                copies.clone(),
            ),
        };
        let kind = FindingKind::Duplicate {
            times,
            message_id,
            cause,
        };
        Some(Finding::new(kind, severity, &shown, text))
    }
}

/// A `Problem` that rests on an attempt the journal tied to this message only as the
/// nearest fit is not certain: it becomes `Info`, saying so. mx-failover is exempt, since
/// it judges the client, whatever message the contact was for.
fn uncertain(mut finding: Finding, a: &[TranscriptAttempt]) -> Finding {
    if finding.severity != Severity::Problem || finding.kind.check() == super::Check::MxFailover {
        return finding;
    }
    let guessed: Vec<String> = finding
        .attempts
        .iter()
        .filter(|&&n| a.get(n - 1).is_some_and(|x| !x.also_possible.is_empty()))
        .map(|n| format!("#{n}"))
        .collect();
    if !guessed.is_empty() {
        finding.severity = Severity::Info;
        finding.text.push_str(&format!(
            "; but {} may have been for another message, so this is not certain",
            guessed.join(", ")
        ));
    }
    finding
}

/// A `Problem` on a delivery whose attempts are told apart from other messages by
/// envelope only (no content) is not certain either: they may be several messages, each
/// tried once. mx-failover judges the client and stays.
fn one_envelope(mut finding: Finding) -> Finding {
    if finding.severity != Severity::Problem || finding.kind.check() == super::Check::MxFailover {
        return finding;
    }
    finding.severity = Severity::Info;
    finding.text.push_str(
        "; but no content was ever sent, so these attempts may be several messages with one envelope",
    );
    finding
}

fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
}
