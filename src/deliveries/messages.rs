//! Which message each contact was for.
//!
//! Once the content was sent, the Message-ID (or, without one, the digest of the content)
//! names the message. Earlier-ending transactions are tied to a message by what a
//! sender keeps the same across its retries: the envelope sender, recipients in common
//! (a retry carries some of them; a first attempt may name more), the `SIZE=` it
//! declares, the client's network (/24 or /64, since big senders retry from another
//! address of their pool), and time
//! (the message must still have had those recipients to deliver). Transactions that
//! match no such message are grouped by envelope into messages of their own, which the
//! stories mark as told apart by envelope only. Contacts that ended before any MAIL,
//! when the farm refused or failed them, go to a message the client had in flight then
//! (tried before and not yet delivered or refused for good to every recipient), else to
//! the message it began next (or those it began within a second of it); without one,
//! and for contacts the client ended without offering a message, they go to the
//! client's own section.
//!
//! A sender offers a message to a recipient on one connection at a time: a transaction is
//! never tied to a message that another connection was offering one of its recipients at
//! the same moment (their spans overlap in the journal's order, which tells apart what
//! happened at once even at the same farm time), such as two messages greylisted in
//! parallel.
//!
//! Where several messages fit, the nearest in time is taken (the one whose next attempt
//! follows soonest: a sender goes on with the message it was trying) and the next
//! nearest, up to [`MAX_ALTERNATIVES`], are kept as alternatives, so that the stories
//! can say so instead of guessing silently.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::Outcome;
use super::contacts::{Contact, Transaction};
use super::outcomes::{end_outcome, recipient_outcomes, unreached};

/// Messages a client begins within this of the first are begun at once: a refused contact
/// just before them could be for any.
const BEGUN_AT_ONCE: Duration = Duration::from_secs(1);

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
    /// Indices kept as offers are added, so that each question about the message is
    /// answered without walking all its offers (a journal may hold thousands of retries).
    index: Index,
}

/// What [`Grouped`] keeps to answer quickly.
#[derive(Debug, Clone, Default)]
struct Index {
    /// Lowercased recipient -> the earliest end of an offer that delivered it or refused
    /// it for good.
    finished: HashMap<String, Duration>,
    /// For a message without known recipients: the earliest end of a refusal for good.
    refused: Option<Duration>,
    /// The starts of its offers, sorted.
    starts: Vec<Duration>,
    /// Its transactions' spans in sequence numbers, sorted by their start: (first seq,
    /// last seq, contact, whether tied only as the nearest fit, lowercased recipients).
    spans: Vec<(u64, u64, usize, bool, Vec<String>)>,
    /// The longest span, so that a search for overlapping ones can stop.
    longest: u64,
    /// The lowercased domains of its recipients.
    domains: Vec<String>,
    /// When every recipient known was delivered or refused for good, if all were.
    done: Option<Duration>,
}

/// At most this many other messages are named as possibilities for an attempt: the
/// nearest in time. That a guess was made is what matters.
pub(super) const MAX_ALTERNATIVES: usize = 8;

/// The messages with their offers, and the contacts tied to no message.
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
                    messages.push(Grouped::new(&tx.sender, key));
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
        // The same sender, network and size, and recipients in common (a retry carries
        // some of the message's recipients; a first attempt may name more, such as one
        // refused for good before the others got the content), or none known on one side.
        let shared = |m: &Grouped| -> Option<Vec<String>> {
            let common: Vec<String> = tx
                .recipients
                .iter()
                .map(|r| r.address.to_ascii_lowercase())
                .filter(|r| m.recipients.iter().any(|x| x.eq_ignore_ascii_case(r)))
                .collect();
            let any = m.recipients.is_empty() || tx.recipients.is_empty();
            (any || !common.is_empty()).then_some(common)
        };
        let alike = |m: &Grouped| {
            m.sender == tx.sender
                && m.came_from_network_of(client)
                && sizes_agree(m.size, tx.declared_size)
                && m.served_by(&host_domains)
                && shared(m).is_some()
        };
        let fits: Vec<usize> = (0..named)
            .filter(|&m| {
                let m = &messages[m];
                alike(m) && shared(m).is_some_and(|common| m.unfinished(tx.started, &common))
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
        if let Some((m, mut also)) = nearest(&messages, &candidates, tx.started, tx.ended) {
            also.extend(guessed);
            also.truncate(MAX_ALTERNATIVES);
            messages[m].add_as(contacts, offer, also);
            continue;
        }
        // Messages told apart by their envelope only: the latest alike, finished or not
        // (a retry after a 5xx must show as one).
        let envelope = (named..messages.len()).rev().find(|&m| {
            let m = &messages[m];
            alike(m) && m.offered_at_once(contacts, offer).is_none()
        });
        match envelope {
            Some(m) => messages[m].add(contacts, offer),
            None => {
                messages.push(Grouped::new(&tx.sender, Key::Envelope));
                let m = messages.len() - 1;
                messages[m].add(contacts, offer);
            }
        }
    }

    // Contacts the farm refused or failed before any MAIL.
    for c in before_mail {
        let contact = &contacts[c];
        let host_domains = domains_of(&contact.host);
        let possible: Vec<usize> = (0..messages.len())
            .filter(|&m| {
                let m = &messages[m];
                m.came_from_network_of(contact.client)
                    && m.served_by(&host_domains)
                    && m.unfinished(contact.opened, &[])
            })
            .collect();
        // In flight: tried before and not done. Without one, the message the client tried
        // next (or those it began at once).
        let mut candidates: Vec<usize> = possible
            .iter()
            .copied()
            .filter(|&m| {
                messages[m]
                    .first_start()
                    .is_some_and(|s| s <= contact.opened)
            })
            .collect();
        if candidates.is_empty() {
            let next = possible
                .iter()
                .filter_map(|&m| messages[m].first_start())
                .min();
            candidates = possible
                .iter()
                .copied()
                .filter(|&m| {
                    let s = messages[m].first_start();
                    next.is_some_and(|n| s.is_some_and(|s| s <= n + BEGUN_AT_ONCE))
                })
                .collect();
        }
        let offer = OfferRef {
            contact: c,
            tx: None,
        };
        match nearest(&messages, &candidates, contact.opened, contact.ended) {
            Some((m, also)) => messages[m].add_as(contacts, offer, also),
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
    fn new(sender: &str, key: Key) -> Grouped {
        Grouped {
            sender: sender.to_string(),
            key,
            clients: Vec::new(),
            size: None,
            recipients: Vec::new(),
            offers: Vec::new(),
            index: Index::default(),
        }
    }

    /// Whether the message came from `client`'s network: the same /24 (IPv4) or /64
    /// (IPv6), as greylisting reckons it, since big senders retry from another address of
    /// their pool.
    fn came_from_network_of(&self, client: IpAddr) -> bool {
        self.clients.iter().any(|c| same_network(*c, client))
    }

    /// Whether a host serving `domains` (empty: unknown) could be an MX for one of the
    /// message's recipients (none known: it could).
    fn served_by(&self, domains: &[String]) -> bool {
        domains.is_empty()
            || self.recipients.is_empty()
            || self
                .index
                .domains
                .iter()
                .any(|d| domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
    }

    fn first_start(&self) -> Option<Duration> {
        self.index.starts.first().copied()
    }

    fn add(&mut self, contacts: &[Contact], offer: OfferRef) {
        self.add_as(contacts, offer, Vec::new());
    }

    fn add_as(&mut self, contacts: &[Contact], offer: OfferRef, also: Vec<usize>) {
        let contact = &contacts[offer.contact];
        if !self.clients.contains(&contact.client) {
            self.clients.push(contact.client);
        }
        let start = start_of(contacts, offer);
        let at = self.index.starts.partition_point(|&s| s <= start);
        self.index.starts.insert(at, start);
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
                    if let Some((_, domain)) = r.address.rsplit_once('@') {
                        let domain = domain.to_ascii_lowercase();
                        if !self.index.domains.contains(&domain) {
                            self.index.domains.push(domain);
                        }
                    }
                }
            }
            for (r, outcome, ended) in recipient_outcomes(tx) {
                if matches!(outcome, Outcome::Delivered | Outcome::Rejected) {
                    let first = self
                        .index
                        .finished
                        .entry(r.to_ascii_lowercase())
                        .or_insert(ended);
                    *first = (*first).min(ended);
                }
            }
            self.index.done = self
                .recipients
                .iter()
                .map(|r| self.index.finished.get(&r.to_ascii_lowercase()).copied())
                .try_fold(Duration::ZERO, |latest, t| t.map(|t| latest.max(t)))
                .filter(|_| !self.recipients.is_empty());
            if tx.recipients.is_empty() && end_outcome(tx).0 == Outcome::Rejected {
                let refused = self.index.refused.get_or_insert(tx.ended);
                *refused = (*refused).min(tx.ended);
            }
            let span = (
                tx.seqs.0,
                tx.seqs.1,
                offer.contact,
                !also.is_empty(),
                tx.recipients
                    .iter()
                    .map(|r| r.address.to_ascii_lowercase())
                    .collect(),
            );
            self.index.longest = self.index.longest.max(tx.seqs.1.saturating_sub(tx.seqs.0));
            let at = self.index.spans.partition_point(|x| x.0 <= span.0);
            self.index.spans.insert(at, span);
        }
        self.offers.push((offer, also));
    }

    /// Whether another connection was offering this message to one of the recipients of
    /// transaction `offer` while it went on: `Some(true)` when that offer is certainly
    /// this message's, `Some(false)` when it was tied to it as the nearest fit only.
    fn offered_at_once(&self, contacts: &[Contact], offer: OfferRef) -> Option<bool> {
        let tx = tx_of(contacts, offer);
        // A journal file pieced together by hand may number a transaction's events
        // backwards; its span is then the same numbers in order, so `begin <= end` below.
        let (from, to) = (tx.seqs.0.min(tx.seqs.1), tx.seqs.0.max(tx.seqs.1));
        let spans = &self.index.spans;
        // Spans that start by `to` and, being no longer than the longest, may reach `from`.
        let end = spans.partition_point(|x| x.0 <= to);
        let begin = spans.partition_point(|x| x.0 < from.saturating_sub(self.index.longest));
        spans[begin..end]
            .iter()
            .filter(|(_, last, contact, _, recipients)| {
                *contact != offer.contact
                    && *last >= from
                    && recipients.iter().any(|r| {
                        tx.recipients
                            .iter()
                            .any(|x| x.address.eq_ignore_ascii_case(r))
                    })
            })
            .map(|(_, _, _, guessed, _)| !guessed)
            .reduce(|a, b| a || b)
    }

    /// Whether, at farm time `at`, one of `recipients` (lowercased; any recipient of the
    /// message, if empty) was not yet delivered or refused for good by an offer that
    /// ended before it.
    pub(super) fn unfinished(&self, at: Duration, recipients: &[String]) -> bool {
        if self.recipients.is_empty() {
            return self.index.refused.is_none_or(|t| t >= at);
        }
        let open = |r: &str| self.finished_at(r).is_none_or(|t| t >= at);
        if recipients.is_empty() {
            self.index.done.is_none_or(|t| t >= at)
        } else {
            recipients.iter().any(|r| open(r))
        }
    }

    /// When `recipient` was first delivered or refused for good, if it was.
    pub(super) fn finished_at(&self, recipient: &str) -> Option<Duration> {
        self.index
            .finished
            .get(&recipient.to_ascii_lowercase())
            .copied()
    }
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
    super::network_of(a) == super::network_of(b)
}

fn sizes_agree(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Of `candidates`, the message whose own offers come nearest after the one between
/// `from` and `to` (a sender goes on with the message it was trying), else nearest
/// before it; with the next nearest others (at most [`MAX_ALTERNATIVES`]).
fn nearest(
    messages: &[Grouped],
    candidates: &[usize],
    from: Duration,
    to: Duration,
) -> Option<(usize, Vec<usize>)> {
    let rank = |m: usize| {
        let starts = &messages[m].index.starts;
        let after = starts.get(starts.partition_point(|&s| s < to)).copied();
        match after {
            Some(s) => (0, s.saturating_sub(to), m),
            None => {
                let before = starts
                    .partition_point(|&s| s <= from)
                    .checked_sub(1)
                    .and_then(|i| starts.get(i))
                    .copied()
                    .unwrap_or_default();
                (1, from.saturating_sub(before), m)
            }
        }
    };
    let mut ranked: Vec<((u8, Duration, usize), usize)> =
        candidates.iter().map(|&m| (rank(m), m)).collect();
    ranked.sort_unstable();
    let mut ranked = ranked.into_iter().map(|(_, m)| m);
    let best = ranked.next()?;
    Some((best, ranked.take(MAX_ALTERNATIVES).collect()))
}
