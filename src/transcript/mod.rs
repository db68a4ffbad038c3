//! Transcripts: the journal as a sender's retry stories, one block per delivery (one
//! message to one recipient), then per client the contacts tied to no message, then per
//! client what it asked the farm's DNS ([`dns`]); stable
//! between runs so that it can be snapshotted or diffed against a golden file.
//!
//! Only what is stable is shown: offsets from the delivery's first attempt at a chosen
//! granularity, message numbers (never the random Message-IDs of real senders), host names
//! with their MX preference, per-farm connection numbers, the stage where each attempt
//! ended and the reply. Never ports or wall-clock dates. Where the journal cannot tell
//! which message an attempt was for, or whether attempts were one message or several, the
//! transcript says so.

mod dns;

pub use dns::{ClientDns, DnsLookup};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::deliveries::{
    Attempt, Delivery, Identity, MessageInfo, Outcome, deliveries, domain_records,
};
use crate::journal::{DomainRecord, Event, Missing};
use crate::render::{Granularity, offset, span};
use crate::scenario::{Reply, Stage};

/// Every delivery of a journal, with its attempts and outcome, and the contacts tied to
/// no message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    /// Set when events are missing from the journal (dropped from a full one): then the
    /// stories may lack attempts, and the rendering says so first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Missing>,
    /// The messages, numbered from 1 in the order of their first attempts.
    pub messages: Vec<MessageInfo>,
    pub deliveries: Vec<DeliveryTranscript>,
    /// Per client, contacts that were for no message the journal shows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unattributed: Vec<ClientTranscript>,
    /// Per client, what it asked the farm's DNS (when the farm ran one) and got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<ClientDns>,
    /// Each host's hostname (the name the farm's DNS gives an address for).
    #[serde(skip)]
    pub hostnames: HashMap<String, String>,
    /// Every jump of the farm's clock by hand: (farm time after it, how far). The report
    /// needs them to tell a sender's silence from time that it never had.
    #[serde(skip)]
    pub clock_jumps: Vec<(Duration, Duration)>,
}

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryTranscript {
    /// The message's number (from 1).
    pub message: usize,
    pub sender: String,
    /// `None` when no attempt of the message named a recipient.
    pub recipient: Option<String>,
    pub attempts: Vec<TranscriptAttempt>,
    pub outcome: DeliveryOutcome,
    /// Jumps of the farm's clock by hand ([`Farm::advance`](crate::Farm::advance), the
    /// API) between its first attempt and its last: time the sender did not wait.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clock_jumps: Vec<ClockJump>,
}

/// The farm's clock moved forward by hand, as a delivery's story shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockJump {
    /// Time from the start of the story's first attempt to the jump's end.
    #[serde(rename = "offset_ms", serialize_with = "crate::millis::serialize")]
    pub offset: Duration,
    #[serde(rename = "by_ms", serialize_with = "crate::millis::serialize")]
    pub by: Duration,
    /// Farm time after the jump.
    #[serde(skip)]
    pub at: Duration,
}

/// The contacts of one client tied to no message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientTranscript {
    pub client: IpAddr,
    pub attempts: Vec<TranscriptAttempt>,
}

/// One attempt, as a transcript shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscriptAttempt {
    /// Time from the start of the story's first attempt to the start of this one.
    #[serde(rename = "offset_ms", serialize_with = "crate::millis::serialize")]
    pub offset: Duration,
    pub host: String,
    /// The host's MX preference for the recipient's domain, if it is one of its MX hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preference: Option<u16>,
    pub conn: u64,
    /// The transaction's number on the connection, from 1; 0 for a contact that ended
    /// before any MAIL.
    pub transaction: u32,
    pub stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    /// Why the connection ended without a reply, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
    pub outcome: Outcome,
    /// Every recipient the transaction named (none when it ended before RCPT).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<String>,
    /// Other messages this attempt could have been for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_possible: Vec<usize>,
    /// The underlying attempt, with farm times, the client and the Message-ID.
    #[serde(skip)]
    pub attempt: Attempt,
}

/// How a delivery ended, as far as the journal shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum DeliveryOutcome {
    /// Accepted once, at attempt number `attempts`.
    Delivered {
        attempts: usize,
        /// From the start of the first attempt to the end of the one that delivered.
        #[serde(rename = "after_ms", serialize_with = "crate::millis::serialize")]
        after: Duration,
    },
    /// Accepted `times` times: the same message delivered more than once.
    Duplicated { times: usize },
    /// The last attempt was deferred (or the connection was lost or refused).
    StillDeferred { attempts: usize },
    /// Refused with a 5xx: the sender should bounce it.
    Bounced { attempts: usize },
    /// The client gave up the transaction on its own.
    Abandoned { attempts: usize },
    /// The last attempt was still going on when the journal ended.
    InProgress { attempts: usize },
}

impl DeliveryOutcome {
    /// The one wording of an outcome, which the report uses too.
    pub fn describe(&self, granularity: Granularity) -> String {
        let attempts = |n: usize| format!("{n} attempt{}", if n == 1 { "" } else { "s" });
        match self {
            DeliveryOutcome::Delivered { attempts: n, after } => match granularity {
                Granularity::None => format!("delivered after {}", attempts(*n)),
                g => format!("delivered after {} in {}", attempts(*n), span(*after, g)),
            },
            DeliveryOutcome::Duplicated { times } => {
                format!("delivered {times} times: a duplicate")
            }
            DeliveryOutcome::StillDeferred { attempts: n } => {
                format!("still deferred after {}", attempts(*n))
            }
            DeliveryOutcome::Bounced { attempts: n } => {
                format!("bounced: permanent failure at attempt {n}")
            }
            DeliveryOutcome::Abandoned { attempts: n } => {
                format!("abandoned by the sender after {}", attempts(*n))
            }
            DeliveryOutcome::InProgress { attempts: n } => {
                format!("in progress: attempt {n} had not ended when the journal did")
            }
        }
    }
}

impl Transcript {
    /// The transcript of a journal (a live farm's or one read from a file).
    pub fn from_events(events: &[Event]) -> Transcript {
        let events = &*crate::journal::since_last_reset(events);
        let domains = domain_records(events);
        let preferences = Preferences::new(&domains);
        let all = deliveries(events);
        let jumps: Vec<(Duration, Duration)> = events
            .iter()
            .filter_map(|e| match e.kind {
                crate::journal::EventKind::ClockAdvanced { by } => Some((e.at, by)),
                _ => None,
            })
            .collect();
        let delivery_list = all
            .list
            .iter()
            .map(|d| DeliveryTranscript::new(d, &preferences).with_jumps(&jumps))
            .collect();
        let unattributed = all
            .unattributed
            .iter()
            .map(|c| ClientTranscript {
                client: c.client,
                attempts: transcribe(&c.attempts, None, &preferences),
            })
            .collect();
        Transcript {
            incomplete: all.incomplete,
            messages: all.messages,
            deliveries: delivery_list,
            unattributed,
            dns: dns::lookups(events),
            hostnames: dns::hostnames(events),
            clock_jumps: jumps,
        }
    }

    /// The first delivery of `sender` to `recipient`, if the journal has one; see
    /// [`Transcript::deliveries_to`] when the sender sent several messages.
    pub fn delivery(&self, sender: &str, recipient: &str) -> Option<&DeliveryTranscript> {
        self.deliveries_to(sender, recipient).into_iter().next()
    }

    /// Every delivery of `sender` to `recipient`: one per message.
    pub fn deliveries_to(&self, sender: &str, recipient: &str) -> Vec<&DeliveryTranscript> {
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

    /// The delivery to `recipient` of the message with this Message-ID (without `<>`).
    pub fn delivery_of(&self, message_id: &str, recipient: &str) -> Option<&DeliveryTranscript> {
        let number = self
            .messages
            .iter()
            .find(|m| {
                matches!(&m.identity, Identity::MessageId { message_id: id } if id == message_id)
            })?
            .number;
        self.deliveries.iter().find(|d| {
            d.message == number
                && d.recipient
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
        })
    }

    /// The message with this number (from 1).
    pub fn message(&self, number: usize) -> Option<&MessageInfo> {
        number.checked_sub(1).and_then(|i| self.messages.get(i))
    }

    /// The stable text form: one block per delivery, then the contacts tied to no message.
    pub fn render(&self, granularity: Granularity) -> String {
        let mut out = String::new();
        if let Some(missing) = &self.incomplete {
            let _ = writeln!(out, "{missing}");
        }
        for delivery in &self.deliveries {
            delivery.render_into(&mut out, self.message(delivery.message), granularity);
        }
        for client in &self.unattributed {
            let _ = writeln!(
                out,
                "contacts from {} for no message the journal shows",
                client.client
            );
            render_attempts(&mut out, &client.attempts, &[], granularity);
        }
        for client in &self.dns {
            dns::render(&mut out, client, granularity);
        }
        out
    }

    /// The JSON form of the same data.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Which preference each host has in each domain.
struct Preferences {
    /// (domain, host) -> preference
    by_domain: HashMap<(String, String), u16>,
    /// host -> its preference in the first domain that has it
    by_host: HashMap<String, u16>,
}

impl Preferences {
    fn new(domains: &[DomainRecord]) -> Preferences {
        let mut by_domain = HashMap::new();
        let mut by_host = HashMap::new();
        for domain in domains {
            for (host, preference) in &domain.mx {
                by_domain.insert(
                    (domain.name.to_ascii_lowercase(), host.clone()),
                    *preference,
                );
                by_host.entry(host.clone()).or_insert(*preference);
            }
        }
        Preferences { by_domain, by_host }
    }

    fn of(&self, domain: Option<&str>, host: &str) -> Option<u16> {
        match domain {
            Some(d) => self
                .by_domain
                .get(&(d.to_string(), host.to_string()))
                .copied(),
            None => self.by_host.get(host).copied(),
        }
    }
}

fn transcribe(
    attempts: &[Attempt],
    domain: Option<&str>,
    preferences: &Preferences,
) -> Vec<TranscriptAttempt> {
    let first = attempts.first().map_or(Duration::ZERO, |a| a.started);
    attempts
        .iter()
        .map(|a| TranscriptAttempt {
            offset: a.started.saturating_sub(first),
            host: a.host.clone(),
            preference: preferences.of(domain, &a.host),
            conn: a.conn,
            transaction: a.transaction,
            stage: a.stage,
            reply: a.reply.clone(),
            closed: a.closed.clone(),
            outcome: a.outcome,
            carried: a.carried.clone(),
            also_possible: a.also_possible.clone(),
            attempt: a.clone(),
        })
        .collect()
}

impl DeliveryTranscript {
    fn new(delivery: &Delivery, preferences: &Preferences) -> Self {
        let domain = delivery
            .recipient
            .as_deref()
            .and_then(|r| r.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        let attempts = transcribe(&delivery.attempts, domain.as_deref(), preferences);
        let outcome = outcome_of(&attempts);
        DeliveryTranscript {
            message: delivery.message,
            sender: delivery.sender.clone(),
            recipient: delivery.recipient.clone(),
            attempts,
            outcome,
            clock_jumps: Vec::new(),
        }
    }

    /// With the clock's jumps `(farm time after, by)` that fell between its first
    /// attempt's start and its last's.
    fn with_jumps(mut self, jumps: &[(Duration, Duration)]) -> Self {
        let (Some(first), Some(last)) = (self.attempts.first(), self.attempts.last()) else {
            return self;
        };
        let (start, end) = (first.attempt.started, last.attempt.started);
        self.clock_jumps = jumps
            .iter()
            .filter(|(at, _)| *at > start && *at <= end)
            .map(|&(at, by)| ClockJump {
                offset: at - start,
                by,
                at,
            })
            .collect();
        self
    }

    /// Whether some attempt handed the message over.
    pub fn delivered(&self) -> bool {
        matches!(
            self.outcome,
            DeliveryOutcome::Delivered { .. } | DeliveryOutcome::Duplicated { .. }
        )
    }

    /// This delivery alone, as text.
    pub fn render(&self, granularity: Granularity) -> String {
        let mut out = String::new();
        self.render_into(&mut out, None, granularity);
        out
    }

    fn render_into(
        &self,
        out: &mut String,
        message: Option<&MessageInfo>,
        granularity: Granularity,
    ) {
        let recipient = self
            .recipient
            .as_deref()
            .map_or("(no recipient given)".to_string(), |r| format!("<{r}>"));
        let others = message.map_or(0, |m| m.recipients.len().saturating_sub(1));
        let with = match others {
            0 => String::new(),
            1 => ", with 1 other recipient".to_string(),
            n => format!(", with {n} other recipients"),
        };
        let _ = writeln!(
            out,
            "delivery <{}> -> {recipient} (message {}{with})",
            self.sender, self.message
        );
        // Only when the grouping by envelope took more than one attempt together.
        if self.attempts.len() > 1 && message.is_some_and(|m| m.identity == Identity::Envelope) {
            let _ = writeln!(
                out,
                "  its content was never sent, so these attempts are told apart from other messages by envelope and size only: they may be several messages"
            );
        }
        render_attempts(out, &self.attempts, &self.clock_jumps, granularity);
        let _ = writeln!(out, "  {}", self.outcome.describe(granularity));
    }
}

/// How a delivery's attempts ended it.
fn outcome_of(attempts: &[TranscriptAttempt]) -> DeliveryOutcome {
    let n = attempts.len();
    let delivered: Vec<usize> = (0..n)
        .filter(|&i| attempts[i].outcome == Outcome::Delivered)
        .collect();
    match (delivered.as_slice(), attempts.last().map(|a| a.outcome)) {
        ([], Some(Outcome::Rejected)) => DeliveryOutcome::Bounced { attempts: n },
        ([], Some(Outcome::Abandoned)) => DeliveryOutcome::Abandoned { attempts: n },
        ([], Some(Outcome::Open)) => DeliveryOutcome::InProgress { attempts: n },
        ([], _) => DeliveryOutcome::StillDeferred { attempts: n },
        ([i], _) => DeliveryOutcome::Delivered {
            attempts: i + 1,
            after: attempts[*i]
                .attempt
                .at
                .saturating_sub(attempts[0].attempt.started),
        },
        (many, _) => DeliveryOutcome::Duplicated { times: many.len() },
    }
}

fn render_attempts(
    out: &mut String,
    attempts: &[TranscriptAttempt],
    jumps: &[ClockJump],
    granularity: Granularity,
) {
    let host_width = attempts
        .iter()
        .map(|a| host_label(a).len())
        .max()
        .unwrap_or(0);
    let mut jumps = jumps.iter().peekable();
    for (i, attempt) in attempts.iter().enumerate() {
        // A jump before this attempt: the gap above it is partly time nobody waited.
        while let Some(jump) = jumps.next_if(|j| j.at <= attempt.attempt.started) {
            let by = match granularity {
                Granularity::None => String::new(),
                g => format!(" by {}", span(jump.by, g)),
            };
            let _ = writeln!(out, "      farm clock advanced{by} by hand");
        }
        let time = match granularity {
            Granularity::None => String::new(),
            _ => format!("{:<9} ", offset(attempt.offset, granularity)),
        };
        let mut what = match (&attempt.reply, &attempt.closed) {
            (Some(reply), _) => reply.one_line(),
            (None, Some(closed)) => closed.clone(),
            (None, None) => "no reply".to_string(),
        };
        if attempt.reply.is_none()
            && attempt.outcome == Outcome::Delivered
            && !what.contains("kept")
        {
            what.push_str(" (the farm kept the message)");
        }
        if !attempt.also_possible.is_empty() {
            let list: Vec<String> = attempt.also_possible.iter().map(usize::to_string).collect();
            let _ = write!(what, "  [or message {}]", list.join(", "));
        }
        let _ = writeln!(
            out,
            "  {:<4}{time}{:<host_width$}  conn {:<3} {:<12} {what}",
            format!("#{}", i + 1),
            host_label(attempt),
            attempt.conn,
            attempt.stage.as_str().to_uppercase(),
        );
    }
}

/// `mx1 (10)`: the host and its MX preference when it has one for the domain.
fn host_label(attempt: &TranscriptAttempt) -> String {
    match attempt.preference {
        Some(p) => format!("{} ({p})", attempt.host),
        None => attempt.host.clone(),
    }
}
