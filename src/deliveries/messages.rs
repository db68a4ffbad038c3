//! Which message each contact was for.
//!
//! Once the content was sent, the Message-ID (or, without one, the digest of the content)
//! names the message. Earlier-ending transactions are tied to a message by what a
//! sender keeps the same across its retries: the envelope sender, the recipients (a
//! retry carries some of them), the `SIZE=` it declares, the client's network (/24 or
//! /64, since big senders retry from another address of their pool), and time
//! (the message must still have had those recipients to deliver). Transactions that
//! match no such message are grouped by envelope into messages of their own, which the
//! stories mark as told apart by envelope only. Contacts that ended before any MAIL,
//! when the farm refused or failed them, go to a message the client had in flight then;
//! without one, and for contacts the client ended without offering a message, they go to
//! the client's own section.
//!
//! A sender offers a message to a recipient on one connection at a time: a transaction is
//! never tied to a message that another connection was offering one of its recipients at
//! the same moment (their spans overlap in the journal's order, which tells apart what
//! happened at once even at the same farm time), such as two messages greylisted in
//! parallel.
//!
//! Where several messages fit, the nearest in time is taken and the others are kept as
//! alternatives, so that the stories can say so instead of guessing silently.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::Outcome;
use super::contacts::{Contact, Transaction};
use super::outcomes::{recipient_outcomes, unreached};

/// One transaction, or one contact without transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OfferRef {
    pub contact: usize,
    pub tx: Option<usize>,
}

/// What names a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    MessageId(String),
    Digest(String),
    /// Never got as far as its content.
    Envelope,
}

/// A message and the offers tied to it.
#[derive(Debug, Clone)]
pub(super) struct Grouped {
    pub sender: String,
    pub key: Key,
    pub clients: Vec<IpAddr>,
    pub size: Option<u64>,
    /// In the order first given.
    pub recipients: Vec<String>,
    /// With the other messages each could also have been for.
    pub offers: Vec<(OfferRef, Vec<usize>)>,
}

/// The messages, and per contact without a message the reason.
pub(super) struct Attribution {
    pub messages: Vec<Grouped>,
    /// Contacts tied to no message.
    pub unattributed: Vec<usize>,
}

/// Ties every offer of `contacts` to a message or to no message. `domains_of` gives the
/// domains a host serves (empty: unknown), so that a host's refusal is tied only to
/// messages for one of its domains.
pub(super) fn attribute(
    contacts: &[Contact],
    domains_of: &dyn Fn(&str) -> Vec<String>,
) -> Attribution {
    let mut messages: Vec<Grouped> = Vec::new();
    let mut by_key: HashMap<(String, Key), usize> = HashMap::new();
    let mut contentless: Vec<OfferRef> = Vec::new();
    let mut before_mail: Vec<usize> = Vec::new();
    let mut unattributed: Vec<usize> = Vec::new();

    // Messages named by their content.
    for (c, contact) in contacts.iter().enumerate() {
        if contact.transactions.is_empty() {
            if unreached(contact) {
                before_mail.push(c);
            } else {
                unattributed.push(c);
            }
            continue;
        }
        for (t, tx) in contact.transactions.iter().enumerate() {
            let offer = OfferRef {
                contact: c,
                tx: Some(t),
            };
            let key = tx.content.as_ref().and_then(|content| {
                content
                    .message_id
                    .clone()
                    .map(Key::MessageId)
                    .or_else(|| content.digest.clone().map(Key::Digest))
            });
            let Some(key) = key else {
                contentless.push(offer);
                continue;
            };
            let m = *by_key
                .entry((tx.sender.clone(), key.clone()))
                .or_insert_with(|| {
                    messages.push(Grouped {
                        sender: tx.sender.clone(),
                        key,
                        clients: Vec::new(),
                        size: None,
                        recipients: Vec::new(),
                        offers: Vec::new(),
                    });
                    messages.len() - 1
                });
            messages[m].add(contacts, offer);
        }
    }
    let named = messages.len();

    // Transactions that ended before their content, in time order.
    contentless.sort_by_key(|o| (tx_of(contacts, *o).started, o.contact));
    for offer in contentless {
        let tx = tx_of(contacts, offer);
        let client = contacts[offer.contact].client;
        let host_domains = domains_of(&contacts[offer.contact].host);
        let alike = |m: &Grouped| {
            m.sender == tx.sender
                && m.came_from_network_of(client)
                && sizes_agree(m.size, tx.declared_size)
                && tx.recipients.iter().all(|r| {
                    m.recipients
                        .iter()
                        .any(|x| x.eq_ignore_ascii_case(&r.address))
                })
                && serves(&host_domains, &m.recipients)
        };
        let fits: Vec<usize> = (0..named)
            .filter(|&m| {
                alike(&messages[m])
                    && messages[m].unfinished(contacts, tx.started, &tx_addresses(tx))
            })
            .collect();
        let busy = |m: usize| messages[m].offered_at_once(contacts, offer);
        let candidates: Vec<usize> = fits
            .iter()
            .copied()
            .filter(|&m| busy(m).is_none())
            .collect();
        // Ruled out only by an offer that was itself a guess: still a possibility.
        let guessed: Vec<usize> = fits
            .iter()
            .copied()
            .filter(|&m| busy(m) == Some(false))
            .collect();
        if let Some((m, mut also)) = nearest(&messages, contacts, &candidates, tx.started, tx.ended)
        {
            also.extend(guessed);
            messages[m].add_as(contacts, offer, also);
            continue;
        }
        // Messages told apart by their envelope only: the latest alike, finished or not
        // (a retry after a 5xx must show as one).
        let envelope = (named..messages.len()).rev().find(|&m| {
            let m = &messages[m];
            alike(m)
                && (tx.recipients.is_empty() || !m.recipients.is_empty())
                && m.offered_at_once(contacts, offer).is_none()
        });
        match envelope {
            Some(m) => messages[m].add(contacts, offer),
            None => {
                messages.push(Grouped {
                    sender: tx.sender.clone(),
                    key: Key::Envelope,
                    clients: Vec::new(),
                    size: None,
                    recipients: Vec::new(),
                    offers: Vec::new(),
                });
                let m = messages.len() - 1;
                messages[m].add(contacts, offer);
            }
        }
    }

    // Contacts the farm refused or failed before any MAIL.
    for c in before_mail {
        let contact = &contacts[c];
        let host_domains = domains_of(&contact.host);
        let candidates: Vec<usize> = (0..messages.len())
            .filter(|&m| {
                let m = &messages[m];
                m.came_from_network_of(contact.client)
                    && serves(&host_domains, &m.recipients)
                    && m.unfinished(contacts, contact.opened, &[])
            })
            .collect();
        let offer = OfferRef {
            contact: c,
            tx: None,
        };
        match nearest(
            &messages,
            contacts,
            &candidates,
            contact.opened,
            contact.ended,
        ) {
            Some((m, also)) => messages[m].offers.push((offer, also)),
            None => unattributed.push(c),
        }
    }

    for m in &mut messages {
        m.offers
            .sort_by_key(|(o, _)| (start_of(contacts, *o), o.contact, o.tx));
    }
    unattributed.sort_unstable();
    Attribution {
        messages,
        unattributed,
    }
}

impl Grouped {
    /// Whether the message came from `client`'s network: the same /24 (IPv4) or /64
    /// (IPv6), as greylisting reckons it, since big senders retry from another address of
    /// their pool.
    fn came_from_network_of(&self, client: IpAddr) -> bool {
        self.clients.iter().any(|c| same_network(*c, client))
    }

    fn add(&mut self, contacts: &[Contact], offer: OfferRef) {
        self.add_as(contacts, offer, Vec::new());
    }

    fn add_as(&mut self, contacts: &[Contact], offer: OfferRef, also: Vec<usize>) {
        let contact = &contacts[offer.contact];
        if !self.clients.contains(&contact.client) {
            self.clients.push(contact.client);
        }
        if let Some(t) = offer.tx {
            let tx = &contact.transactions[t];
            if self.size.is_none() {
                self.size = tx.declared_size;
            }
            for r in &tx.recipients {
                if !self
                    .recipients
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(&r.address))
                {
                    self.recipients.push(r.address.clone());
                }
            }
        }
        self.offers.push((offer, also));
    }

    /// Whether another connection was offering this message to one of the recipients of
    /// transaction `offer` while it went on: `Some(true)` when that offer is certainly
    /// this message's, `Some(false)` when it was tied to it as the nearest fit only.
    fn offered_at_once(&self, contacts: &[Contact], offer: OfferRef) -> Option<bool> {
        let tx = tx_of(contacts, offer);
        let at_once = self.offers.iter().filter(|(o, _)| {
            let Some(t) = o.tx.filter(|_| o.contact != offer.contact) else {
                return false;
            };
            let other = &contacts[o.contact].transactions[t];
            other.seqs.0 <= tx.seqs.1
                && tx.seqs.0 <= other.seqs.1
                && other.recipients.iter().any(|r| {
                    tx.recipients
                        .iter()
                        .any(|x| x.address.eq_ignore_ascii_case(&r.address))
                })
        });
        at_once
            .map(|(_, also)| also.is_empty())
            .reduce(|a, b| a || b)
    }

    /// Whether, at farm time `at`, one of `recipients` (any recipient, if empty) was not
    /// yet delivered or refused for good by an offer that ended before it.
    pub(super) fn unfinished(
        &self,
        contacts: &[Contact],
        at: Duration,
        recipients: &[&str],
    ) -> bool {
        if self.recipients.is_empty() {
            // Nothing known to be finished.
            return !self.offers.iter().any(|(o, _)| {
                o.tx.is_some_and(|t| {
                    let tx = &contacts[o.contact].transactions[t];
                    tx.ended < at && matches!(tx_outcome_without_recipients(tx), Outcome::Rejected)
                })
            });
        }
        let wanted: Vec<&str> = if recipients.is_empty() {
            self.recipients.iter().map(String::as_str).collect()
        } else {
            recipients.to_vec()
        };
        wanted
            .iter()
            .any(|r| !self.finished_before(contacts, r, at))
    }

    /// Whether `recipient` was delivered or refused for good before `at`.
    pub(super) fn finished_before(
        &self,
        contacts: &[Contact],
        recipient: &str,
        at: Duration,
    ) -> bool {
        self.offers.iter().any(|(o, _)| {
            let Some(t) = o.tx else { return false };
            let tx = &contacts[o.contact].transactions[t];
            recipient_outcomes(tx).iter().any(|(r, outcome, ended)| {
                *ended < at
                    && r.eq_ignore_ascii_case(recipient)
                    && matches!(outcome, Outcome::Delivered | Outcome::Rejected)
            })
        })
    }
}

/// The outcome of a transaction that named no recipient.
fn tx_outcome_without_recipients(tx: &Transaction) -> Outcome {
    super::outcomes::end_outcome(tx).0
}

fn tx_addresses(tx: &Transaction) -> Vec<&str> {
    tx.recipients.iter().map(|r| r.address.as_str()).collect()
}

fn tx_of(contacts: &[Contact], offer: OfferRef) -> &Transaction {
    let contact = &contacts[offer.contact];
    &contact.transactions[offer.tx.unwrap_or(0)]
}

pub(super) fn start_of(contacts: &[Contact], offer: OfferRef) -> Duration {
    let contact = &contacts[offer.contact];
    match offer.tx {
        Some(t) => contact.transactions[t].started,
        None => contact.opened,
    }
}

fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

fn sizes_agree(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether a host serving `domains` (empty: unknown) could be an MX for one of
/// `recipients` (empty: unknown).
fn serves(domains: &[String], recipients: &[String]) -> bool {
    domains.is_empty()
        || recipients.is_empty()
        || recipients.iter().any(|r| {
            r.rsplit_once('@')
                .is_some_and(|(_, d)| domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
        })
}

/// Of `candidates`, the message whose own offers come nearest after the one between
/// `from` and `to` (a sender goes on with the message it was trying), else nearest
/// before it; with the other candidates.
fn nearest(
    messages: &[Grouped],
    contacts: &[Contact],
    candidates: &[usize],
    from: Duration,
    to: Duration,
) -> Option<(usize, Vec<usize>)> {
    let rank = |m: usize| {
        let offers = messages[m].offers.iter().map(|(o, _)| *o);
        let after = offers
            .clone()
            .map(|o| start_of(contacts, o))
            .filter(|&s| s >= to)
            .min();
        match after {
            Some(s) => (0, s.saturating_sub(to)),
            None => {
                let before = offers
                    .map(|o| start_of(contacts, o))
                    .filter(|&s| s <= from)
                    .max()
                    .unwrap_or_default();
                (1, from.saturating_sub(before))
            }
        }
    };
    let best = candidates.iter().copied().min_by_key(|&m| (rank(m), m))?;
    let also = candidates.iter().copied().filter(|&m| m != best).collect();
    Some((best, also))
}
