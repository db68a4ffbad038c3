//! Transcripts: the journal as a sender's retry story, one block per delivery, stable
//! between runs so that it can be snapshotted or diffed against a golden file.
//!
//! Only what is stable is shown: offsets from the delivery's first attempt at a chosen
//! granularity, host names with their MX preference, per-farm connection numbers, the
//! stage where each attempt ended and the reply. Never ports, wall-clock dates or the
//! random Message-IDs of real senders.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::deliveries::{Attempt, Delivery, Outcome, deliveries};
use crate::journal::{Event, EventKind, Missing, gaps};
use crate::render::{Granularity, offset};
use crate::scenario::{Reply, Stage};

/// Every delivery of a journal, with its attempts and outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    /// Set when events are missing from the journal (dropped from a full one): then the
    /// stories may lack attempts, and the rendering says so first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Missing>,
    pub deliveries: Vec<DeliveryTranscript>,
}

/// One (sender, recipient) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryTranscript {
    pub sender: String,
    /// `None` for attempts refused before any recipient was given.
    pub recipient: Option<String>,
    pub attempts: Vec<TranscriptAttempt>,
    pub outcome: DeliveryOutcome,
}

/// One attempt, as a transcript shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptAttempt {
    /// Time since the delivery's first attempt.
    #[serde(rename = "offset_ms", serialize_with = "crate::millis::serialize")]
    pub offset: Duration,
    pub host: String,
    /// The host's MX preference for the recipient's domain, if it is one of its MX hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preference: Option<u16>,
    pub conn: u64,
    pub stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// Why the connection ended without a reply, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
    pub outcome: Outcome,
    /// The underlying attempt, with farm times, the client and the Message-ID.
    #[serde(skip)]
    pub attempt: Attempt,
}

/// How a delivery ended, as far as the journal shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum DeliveryOutcome {
    Delivered {
        attempts: usize,
        #[serde(rename = "after_ms", serialize_with = "crate::millis::serialize")]
        after: Duration,
    },
    /// Accepted more than once: a duplicate.
    DeliveredTwice { times: usize },
    /// The last attempt was deferred (or the connection was lost).
    StillDeferred { attempts: usize },
    /// Refused with a 5xx: the sender should bounce it.
    Bounced { attempts: usize },
    /// The client gave up the transaction on its own.
    Abandoned { attempts: usize },
}

impl Transcript {
    /// The transcript of a journal (a live farm's or one read from a file).
    pub fn from_events(events: &[Event]) -> Transcript {
        let preferences = mx_preferences(events);
        let deliveries = deliveries(events)
            .list
            .into_iter()
            .map(|d| DeliveryTranscript::new(d, &preferences))
            .collect();
        Transcript {
            incomplete: gaps(events),
            deliveries,
        }
    }

    /// The delivery of `sender` to `recipient`, if the journal has one.
    pub fn delivery(&self, sender: &str, recipient: &str) -> Option<&DeliveryTranscript> {
        self.deliveries.iter().find(|d| {
            d.sender.eq_ignore_ascii_case(sender)
                && d.recipient
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
        })
    }

    /// The stable text form, one block per delivery.
    pub fn render(&self, granularity: Granularity) -> String {
        let mut out = String::new();
        if let Some(missing) = &self.incomplete {
            let _ = writeln!(out, "{missing}");
        }
        for delivery in &self.deliveries {
            delivery.render_into(&mut out, granularity);
        }
        out
    }

    /// The JSON form of the same data.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// (domain, host) -> preference, from the journal's farm-started event.
fn mx_preferences(events: &[Event]) -> HashMap<(String, String), u16> {
    let mut preferences = HashMap::new();
    for event in events {
        if let EventKind::FarmStarted { domains, .. } = &event.kind {
            for domain in domains {
                for (host, preference) in &domain.mx {
                    preferences.insert((domain.name.clone(), host.clone()), *preference);
                }
            }
        }
    }
    preferences
}

impl DeliveryTranscript {
    fn new(delivery: Delivery, preferences: &HashMap<(String, String), u16>) -> Self {
        let domain = delivery
            .recipient
            .as_deref()
            .and_then(|r| r.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        let first = delivery.attempts.first().map_or(Duration::ZERO, |a| a.at);
        let attempts: Vec<TranscriptAttempt> = delivery
            .attempts
            .iter()
            .map(|a| TranscriptAttempt {
                offset: a.at.saturating_sub(first),
                host: a.host.clone(),
                preference: domain
                    .as_ref()
                    .and_then(|d| preferences.get(&(d.clone(), a.host.clone())).copied()),
                conn: a.conn,
                stage: a.stage,
                reply: a.reply.clone(),
                closed: a.closed.clone(),
                outcome: a.outcome,
                attempt: a.clone(),
            })
            .collect();
        let n = attempts.len();
        let delivered: Vec<&TranscriptAttempt> = attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Delivered)
            .collect();
        let outcome = match (delivered.len(), attempts.last().map(|a| a.outcome)) {
            (0, Some(Outcome::Rejected)) => DeliveryOutcome::Bounced { attempts: n },
            (0, Some(Outcome::Abandoned)) => DeliveryOutcome::Abandoned { attempts: n },
            (0, _) => DeliveryOutcome::StillDeferred { attempts: n },
            (1, _) => {
                let at = attempts
                    .iter()
                    .position(|a| a.outcome == Outcome::Delivered)
                    .unwrap_or(0);
                DeliveryOutcome::Delivered {
                    attempts: at + 1,
                    after: attempts[at].offset,
                }
            }
            (times, _) => DeliveryOutcome::DeliveredTwice { times },
        };
        DeliveryTranscript {
            sender: delivery.sender,
            recipient: delivery.recipient,
            attempts,
            outcome,
        }
    }

    /// Whether some attempt handed the message over.
    pub fn delivered(&self) -> bool {
        matches!(
            self.outcome,
            DeliveryOutcome::Delivered { .. } | DeliveryOutcome::DeliveredTwice { .. }
        )
    }

    /// This delivery alone, as text.
    pub fn render(&self, granularity: Granularity) -> String {
        let mut out = String::new();
        self.render_into(&mut out, granularity);
        out
    }

    fn render_into(&self, out: &mut String, granularity: Granularity) {
        let recipient = self
            .recipient
            .as_deref()
            .map_or("(no recipient given)".to_string(), |r| format!("<{r}>"));
        let _ = writeln!(out, "delivery <{}> -> {recipient}", self.sender);
        let host_width = self
            .attempts
            .iter()
            .map(|a| host_label(a).len())
            .max()
            .unwrap_or(0);
        for (i, attempt) in self.attempts.iter().enumerate() {
            let time = match granularity {
                Granularity::None => String::new(),
                _ => format!("{:<9} ", offset(attempt.offset, granularity)),
            };
            let what = match (&attempt.reply, &attempt.closed) {
                (Some(reply), _) => reply.one_line(),
                (None, Some(closed)) => closed.clone(),
                (None, None) => "no reply".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<4}{time}{:<host_width$}  conn {:<3} {:<12} {what}",
                format!("#{}", i + 1),
                host_label(attempt),
                attempt.conn,
                attempt.stage.as_str().to_uppercase(),
            );
        }
        let verdict = match &self.outcome {
            DeliveryOutcome::Delivered { attempts, after } => format!(
                "delivered after {attempts} attempt{} in {}",
                if *attempts == 1 { "" } else { "s" },
                span(*after, granularity)
            ),
            DeliveryOutcome::DeliveredTwice { times } => {
                format!("delivered {times} times: duplicate")
            }
            DeliveryOutcome::StillDeferred { attempts } => format!(
                "still deferred after {attempts} attempt{}",
                if *attempts == 1 { "" } else { "s" }
            ),
            DeliveryOutcome::Bounced { attempts } => {
                format!("bounced: permanent failure at attempt {attempts}")
            }
            DeliveryOutcome::Abandoned { attempts } => {
                format!("abandoned by the sender after {attempts} attempt(s)")
            }
        };
        let _ = writeln!(out, "  {verdict}");
    }
}

/// `mx1 (10)`: the host and its MX preference when it has one for the domain.
fn host_label(attempt: &TranscriptAttempt) -> String {
    match attempt.preference {
        Some(p) => format!("{} ({p})", attempt.host),
        None => attempt.host.clone(),
    }
}

/// A duration at the transcript's granularity, without the leading `+`.
fn span(d: Duration, granularity: Granularity) -> String {
    match granularity {
        Granularity::None => "-".to_string(),
        g => offset(d, g).trim_start_matches('+').to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Command, DomainRecord};
    use std::sync::Arc;

    fn event(seq: u64, secs: u64, kind: EventKind) -> Event {
        Event {
            seq,
            at: Duration::from_secs(secs),
            kind,
        }
    }

    /// A journal of two connections: a 451 at RCPT, then delivery 5 minutes later on
    /// another MX.
    fn greylisted_then_delivered() -> Vec<Event> {
        let host = |h: &str| -> Arc<str> { Arc::from(h) };
        let mut events = vec![event(
            1,
            0,
            EventKind::FarmStarted {
                scenario: "t".into(),
                domains: vec![DomainRecord {
                    name: "aol.test".into(),
                    mx: vec![("mx1".into(), 10), ("mx2".into(), 20)],
                }],
            },
        )];
        let mut seq = 2;
        let mut push = |secs: u64, kind: EventKind| {
            events.push(event(seq, secs, kind));
            seq += 1;
        };
        for (conn, name, secs, code) in [(1, "mx1", 0, 451), (2, "mx2", 300, 250)] {
            let h = host(name);
            push(
                secs,
                EventKind::ConnectionOpened {
                    host: h.clone(),
                    conn,
                    client: "192.0.2.1:1000".parse().unwrap(),
                },
            );
            push(
                secs,
                EventKind::Command {
                    host: h.clone(),
                    conn,
                    line: "MAIL FROM:<a@x.test>".into(),
                    command: Command::Mail {
                        sender: "a@x.test".into(),
                        size: None,
                    },
                },
            );
            push(
                secs,
                EventKind::Reply {
                    host: h.clone(),
                    conn,
                    stage: Some(Stage::Mail),
                    reply: Reply::new(250, None, "Ok"),
                    rule: None,
                    retry_after: None,
                    retry_after_told: false,
                },
            );
            push(
                secs,
                EventKind::Command {
                    host: h.clone(),
                    conn,
                    line: "RCPT TO:<bob@aol.test>".into(),
                    command: Command::Rcpt {
                        recipient: "bob@aol.test".into(),
                    },
                },
            );
            let stage = if code == 451 {
                Stage::Rcpt
            } else {
                push(
                    secs,
                    EventKind::Reply {
                        host: h.clone(),
                        conn,
                        stage: Some(Stage::Rcpt),
                        reply: Reply::new(250, None, "Ok"),
                        rule: None,
                        retry_after: None,
                        retry_after_told: false,
                    },
                );
                push(
                    secs,
                    EventKind::Reply {
                        host: h.clone(),
                        conn,
                        stage: Some(Stage::Data),
                        reply: Reply::new(354, None, "Go"),
                        rule: None,
                        retry_after: None,
                        retry_after_told: false,
                    },
                );
                Stage::EndOfData
            };
            push(
                secs,
                EventKind::Reply {
                    host: h.clone(),
                    conn,
                    stage: Some(stage),
                    reply: Reply::new(
                        code,
                        None,
                        if code == 451 { "Greylisted" } else { "queued" },
                    ),
                    rule: None,
                    retry_after: (code == 451).then_some(Duration::from_secs(300)),
                    retry_after_told: false,
                },
            );
        }
        events
    }

    #[test]
    fn shows_offsets_preferences_and_the_outcome() {
        let transcript = Transcript::from_events(&greylisted_then_delivered());
        assert_eq!(
            transcript.render(Granularity::Seconds),
            "delivery <a@x.test> -> <bob@aol.test>\n  \
             #1  +0s       mx1 (10)  conn 1   RCPT         451 Greylisted\n  \
             #2  +5m00s    mx2 (20)  conn 2   END-OF-DATA  250 queued\n  \
             delivered after 2 attempts in 5m00s\n"
        );
        let json: serde_json::Value = serde_json::from_str(&transcript.to_json()).unwrap();
        assert_eq!(json["deliveries"][0]["attempts"][1]["offset_ms"], 300_000);
        assert_eq!(json["deliveries"][0]["outcome"]["result"], "delivered");
    }

    #[test]
    fn a_journal_survives_json_lines_unchanged() {
        let events = greylisted_then_delivered();
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let back: Vec<Event> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, events);
    }
}
