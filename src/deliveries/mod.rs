//! Deliveries: the journal seen from the sender's side. A delivery is one message to one
//! recipient, with every attempt to hand it over: on which host and connection, where it
//! ended and how. Every contact the sender made is in exactly one story: an attempt of a
//! message's deliveries, or the client's own list of contacts tied to no message.
//!
//! Derived from the journal alone (DESIGN principle 6), so a journal read back from a
//! JSON-lines file gives the same deliveries as a live farm.
//!
//! - `contacts`: the journal's events as connections and their transactions.
//! - `messages`: which message each contact was for (the rules are in its docs).
//! - `outcomes`: how each contact ended for each recipient: the attempts.

mod contacts;
mod messages;
mod outcomes;

#[cfg(test)]
mod script;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::journal::{DomainRecord, Event, EventKind, Missing, gaps};
use crate::scenario::{Reply, Stage};
use contacts::{Contact, contacts};
use messages::{Grouped, Key, attribute, start_of};
use outcomes::{contact_attempt, tx_attempts};

/// Every attempt to hand one message to one recipient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The message's number in [`Deliveries::messages`] (from 1).
    pub message: usize,
    /// Empty for the null sender.
    pub sender: String,
    /// `None` when no attempt of the message ever named a recipient (every MAIL was
    /// refused, say).
    pub recipient: Option<String>,
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    /// Whether some attempt handed the message over.
    pub fn delivered(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| a.outcome == Outcome::Delivered)
    }

    /// How many attempts delivered it (more than one is a duplicate).
    pub fn times_delivered(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Delivered)
            .count()
    }
}

/// A message as the farm saw it offered, and what tells it apart from others.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageInfo {
    /// From 1, in the order of the messages' first attempts.
    pub number: usize,
    pub sender: String,
    /// Every recipient any of its attempts named, in the order first named.
    pub recipients: Vec<String>,
    /// The client addresses it came from.
    pub clients: Vec<IpAddr>,
    #[serde(flatten)]
    pub identity: Identity,
    /// The `SIZE=` its sender declared on MAIL, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_size: Option<u64>,
}

/// How a message was told apart from others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "identified_by", rename_all = "kebab-case")]
pub enum Identity {
    /// Its `Message-ID` header.
    MessageId { message_id: String },
    /// No Message-ID: a digest of its content (the same bytes on every retry).
    Content { digest: String },
    /// Its content was never sent: attempts with the same envelope sender, recipients in
    /// common, declared size and client network are taken to be one message, which they
    /// need not be.
    Envelope,
}

/// One attempt: one mail transaction (for one of its recipients), or a contact that
/// ended before any MAIL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Farm time when it started: the connection's opening for the first transaction on
    /// a connection, else its MAIL command.
    #[serde(rename = "start_ms", serialize_with = "crate::millis::serialize")]
    pub started: Duration,
    /// Farm time when it ended (for a refused recipient: its RCPT's reply).
    #[serde(rename = "ms", serialize_with = "crate::millis::serialize")]
    pub at: Duration,
    pub host: String,
    pub conn: u64,
    /// The transaction's number on its connection, from 1; 0 for a contact that ended
    /// before any MAIL. With `conn`, it names the contact.
    pub transaction: u32,
    /// The client's address.
    pub client: IpAddr,
    /// The stage at which the attempt ended.
    pub stage: Stage,
    /// The reply that ended it; `None` if it ended without one.
    pub reply: Option<Reply>,
    pub outcome: Outcome,
    /// Set when it ended without a reply: who closed the connection and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
    /// The Message-ID of the content sent in this attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// For a deferral that clears after a known time: how long until then.
    #[serde(
        rename = "retry_after_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::millis::optional::serialize"
    )]
    pub retry_after: Option<Duration>,
    /// Whether the deferral's text told the sender that time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry_after_told: bool,
    /// Farm time when that deferral clears.
    #[serde(
        rename = "clears_at_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::millis::optional::serialize"
    )]
    pub clears_at: Option<Duration>,
    /// Every recipient the transaction named (empty for a contact before MAIL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<String>,
    /// The farm's message number, when it kept the message in this attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<u64>,
    /// Other messages (numbers) this attempt could have been for: nothing it carried
    /// told them apart, and it was tied to the nearest in time. At most the eight next
    /// nearest are named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_possible: Vec<usize>,
}

/// How an attempt ended, as a sender must treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// 250 to the end of data, or kept by the farm without its reply.
    Delivered,
    /// A 4xx, or the connection ended before the message was accepted: retry later.
    Deferred,
    /// A 5xx: do not retry.
    Rejected,
    /// The client reset or quit the transaction on its own.
    Abandoned,
    /// The farm refused or failed the contact before the message was offered (a 4xx or
    /// 5xx greeting or EHLO, a reset, a failed TLS handshake, a wait the client gave
    /// up on): retry, on another MX if there is one.
    Unreached,
    /// Still going on when the journal ends.
    Open,
}

/// Contacts of one client tied to no message: refused or failed while it had no message
/// in flight, or ended by the client before it offered one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientContacts {
    pub client: IpAddr,
    pub attempts: Vec<Attempt>,
}

/// The deliveries of a journal, and whether events are missing from it (then attempts
/// may be missing from the deliveries). Reads as the list of deliveries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deliveries {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Missing>,
    /// The messages, in the order of their first attempts.
    pub messages: Vec<MessageInfo>,
    /// Per message, per recipient.
    pub list: Vec<Delivery>,
    /// Per client, the contacts tied to no message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unattributed: Vec<ClientContacts>,
}

impl std::ops::Deref for Deliveries {
    type Target = Vec<Delivery>;

    fn deref(&self) -> &Vec<Delivery> {
        &self.list
    }
}

impl IntoIterator for Deliveries {
    type Item = Delivery;
    type IntoIter = std::vec::IntoIter<Delivery>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl<'a> IntoIterator for &'a Deliveries {
    type Item = &'a Delivery;
    type IntoIter = std::slice::Iter<'a, Delivery>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl Deliveries {
    /// The message with this number (from 1).
    pub fn message(&self, number: usize) -> Option<&MessageInfo> {
        number.checked_sub(1).and_then(|i| self.messages.get(i))
    }
}

/// The deliveries of a journal's events (in sequence order).
pub fn deliveries(events: &[Event]) -> Deliveries {
    let events = &*crate::journal::since_last_reset(events);
    let domains = domain_records(events);
    let contacts = contacts(events);
    let domains_of = |host: &str| -> Vec<String> {
        domains
            .iter()
            .filter(|d| d.mx.iter().any(|(h, _)| h.eq_ignore_ascii_case(host)))
            .map(|d| d.name.clone())
            .collect()
    };
    let attribution = attribute(&contacts, &domains_of);
    let mut grouped = attribution.messages;

    // Number the messages by their first attempt.
    let mut order: Vec<usize> = (0..grouped.len()).collect();
    order.sort_by_key(|&m| {
        let first = grouped[m].offers.first().map(|(o, _)| *o);
        (
            first.map(|o| start_of(&contacts, o)),
            first.map(|o| o.contact),
            m,
        )
    });
    let mut number = vec![0; grouped.len()];
    for (n, &m) in order.iter().enumerate() {
        number[m] = n + 1;
    }
    for g in &mut grouped {
        for (_, also) in &mut g.offers {
            for m in also.iter_mut() {
                *m = number[*m];
            }
            also.sort_unstable();
        }
    }

    let mut messages = Vec::new();
    let mut list = Vec::new();
    for &m in &order {
        let g = &grouped[m];
        messages.push(info(g, number[m]));
        list.extend(stories(g, number[m], &contacts));
    }
    Deliveries {
        incomplete: gaps(events),
        messages,
        list,
        unattributed: unattributed(&attribution.unattributed, &contacts),
    }
}

/// A client's network, as greylisting reckons it: its /24 (IPv4) or /64 (IPv6). Big
/// senders retry from another address of their pool, so the stories and the checks
/// treat one network as one sender.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

/// The MX hosts of each domain, from the journal's farm-started event and any
/// scenario-replaced events after it: each domain as the latest of them names it.
pub(crate) fn domain_records(events: &[Event]) -> Vec<DomainRecord> {
    let mut records: Vec<DomainRecord> = Vec::new();
    for event in events {
        let (EventKind::FarmStarted { domains, .. } | EventKind::ScenarioReplaced { domains, .. }) =
            &event.kind
        else {
            continue;
        };
        for domain in domains {
            match records.iter_mut().find(|r| r.name == domain.name) {
                Some(known) => *known = domain.clone(),
                None => records.push(domain.clone()),
            }
        }
    }
    records
}

fn info(g: &Grouped, number: usize) -> MessageInfo {
    MessageInfo {
        number,
        sender: g.sender.clone(),
        recipients: g.recipients.clone(),
        clients: g.clients.clone(),
        identity: match &g.key {
            Key::MessageId(id) => Identity::MessageId {
                message_id: id.clone(),
            },
            Key::Digest(d) => Identity::Content { digest: d.clone() },
            Key::Envelope => Identity::Envelope,
        },
        declared_size: g.size,
    }
}

/// One delivery per recipient of the message, each with the attempts that concerned it.
fn stories(g: &Grouped, number: usize, contacts: &[Contact]) -> Vec<Delivery> {
    let recipients: Vec<Option<String>> = if g.recipients.is_empty() {
        vec![None]
    } else {
        g.recipients.iter().cloned().map(Some).collect()
    };
    let mut by_recipient: HashMap<Option<String>, Vec<Attempt>> = HashMap::new();
    for (offer, also) in &g.offers {
        let contact = &contacts[offer.contact];
        let at = start_of(contacts, *offer);
        // The recipients still to deliver then; all of them if none was (a sender that
        // comes back after every recipient was delivered or refused: its story shows it).
        let pending = || -> Vec<Option<String>> {
            let left: Vec<Option<String>> = recipients
                .iter()
                .filter(|r| {
                    r.as_deref()
                        .is_none_or(|r| g.finished_at(r).is_none_or(|t| t >= at))
                })
                .cloned()
                .collect();
            if left.is_empty() {
                recipients.clone()
            } else {
                left
            }
        };
        let attempts = match offer.tx {
            Some(t) => {
                let tx = &contact.transactions[t];
                let number = u32::try_from(t + 1).unwrap_or(u32::MAX);
                // Only a transaction that named no recipient stands for those pending.
                let pending = if tx.recipients.is_empty() {
                    pending()
                } else {
                    Vec::new()
                };
                tx_attempts(contact, number, tx, &pending)
            }
            None => {
                let a = contact_attempt(contact);
                pending().into_iter().map(|r| (r, a.clone())).collect()
            }
        };
        for (recipient, mut attempt) in attempts {
            attempt.also_possible.clone_from(also);
            let key = recipient.and_then(|r| {
                g.recipients
                    .iter()
                    .find(|x| x.eq_ignore_ascii_case(&r))
                    .cloned()
            });
            by_recipient.entry(key).or_default().push(attempt);
        }
    }
    recipients
        .into_iter()
        .filter_map(|r| {
            let attempts = by_recipient.remove(&r)?;
            Some(Delivery {
                message: number,
                sender: g.sender.clone(),
                recipient: r,
                attempts,
            })
        })
        .collect()
}

fn unattributed(indices: &[usize], contacts: &[Contact]) -> Vec<ClientContacts> {
    let mut out: Vec<ClientContacts> = Vec::new();
    for &c in indices {
        let contact = &contacts[c];
        // A contact tied to no message is always one without transactions.
        let attempt = contact_attempt(contact);
        match out.iter_mut().find(|x| x.client == contact.client) {
            Some(x) => x.attempts.push(attempt),
            None => out.push(ClientContacts {
                client: contact.client,
                attempts: vec![attempt],
            }),
        }
    }
    for x in &mut out {
        x.attempts.sort_by_key(|a| (a.started, a.conn));
    }
    out
}
