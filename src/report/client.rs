//! What a client did across all its stories: every contact it made, in time order, and
//! its rhythm. A client is a network (/24 or /64, [`network_of`]), as in the stories:
//! what one address of a sender's pool learnt of a host, the pool knows. Checks about hosts (did the sender move on to another MX, did it skip a
//! host it had just found refusing) need this, because a sender's knowledge of a host
//! comes from every message it sent there, not only from the delivery being judged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::tries::window;
use crate::deliveries::{Outcome, network_of};
use crate::journal::DnsReply;
use crate::scenario::Stage;
use crate::transcript::{Transcript, TranscriptAttempt};

/// One contact of a client: a transaction or a contact before MAIL.
#[derive(Debug, Clone)]
pub(super) struct ClientContact {
    pub started: Duration,
    pub ended: Duration,
    pub host: String,
    pub conn: u64,
    /// It ended in a connection-level failure.
    pub failed: bool,
}

/// One client's contacts and move-on window.
#[derive(Debug, Clone)]
pub(super) struct Client {
    contacts: Vec<ClientContact>,
    pub window: Duration,
    /// Per host, the client's address lookups of its hostname through the farm's DNS:
    /// (farm time, whether it got an address).
    lookups: HashMap<String, Vec<(Duration, bool)>>,
}

/// Every client of a transcript.
pub(super) struct Clients {
    by_ip: HashMap<IpAddr, Client>,
}

/// Whether an attempt ended in a connection-level failure: a 421, a contact refused or
/// failed before MAIL, or a connection lost without a reply (a lost reply after the end
/// of data included: the sender saw a lost connection).
pub(super) fn failed(a: &TranscriptAttempt) -> bool {
    match a.outcome {
        Outcome::Unreached => true,
        Outcome::Deferred => a.reply.as_ref().is_none_or(|r| r.code == 421),
        Outcome::Delivered => a.reply.is_none(),
        Outcome::Rejected | Outcome::Abandoned | Outcome::Open => false,
    }
}

/// Whether a failure is one after which the sender should move on to another MX: any
/// but one after the content was sent (then RFC 5321 leaves the choice to the sender).
/// (After a failed TLS handshake, trying the same host again at once in clear is right
/// too: the check allows that.)
pub(super) fn calls_for_failover(a: &TranscriptAttempt) -> bool {
    failed(a) && a.stage != Stage::EndOfData
}

/// Whether an attempt failed its TLS handshake: the next contact with the same host, in
/// clear, is the same try.
pub(super) fn tls_failed(a: &TranscriptAttempt) -> bool {
    a.outcome == Outcome::Unreached && a.stage == Stage::Starttls
}

impl Clients {
    pub(super) fn new(transcript: &Transcript) -> Clients {
        let mut stories: HashMap<IpAddr, Vec<&[TranscriptAttempt]>> = HashMap::new();
        let mut contacts: HashMap<IpAddr, HashMap<(u64, u32), ClientContact>> = HashMap::new();
        let all = transcript
            .deliveries
            .iter()
            .map(|d| d.attempts.as_slice())
            .chain(
                transcript
                    .unattributed
                    .iter()
                    .map(|c| c.attempts.as_slice()),
            );
        for attempts in all {
            let Some(first) = attempts.first() else {
                continue;
            };
            stories
                .entry(network_of(first.attempt.client))
                .or_default()
                .push(attempts);
            for a in attempts {
                // A transaction is in the story of each of its recipients: once here.
                let entry = contacts
                    .entry(network_of(a.attempt.client))
                    .or_default()
                    .entry((a.conn, a.attempt.transaction))
                    .or_insert_with(|| ClientContact {
                        started: a.attempt.started,
                        ended: a.attempt.at,
                        host: a.host.clone(),
                        conn: a.conn,
                        failed: false,
                    });
                entry.ended = entry.ended.max(a.attempt.at);
                entry.failed |= failed(a);
            }
        }
        // What each client's resolver asked of each host's hostname.
        let host_of: HashMap<&str, &str> = transcript
            .hostnames
            .iter()
            .map(|(host, hostname)| (hostname.as_str(), host.as_str()))
            .collect();
        let mut lookups: HashMap<IpAddr, HashMap<String, Vec<(Duration, bool)>>> = HashMap::new();
        for client in &transcript.dns {
            for l in client
                .lookups
                .iter()
                .filter(|l| matches!(l.qtype.as_str(), "A" | "AAAA"))
            {
                if let Some(host) = host_of.get(l.name.as_str()) {
                    lookups
                        .entry(network_of(client.client))
                        .or_default()
                        .entry(host.to_string())
                        .or_default()
                        .push((l.at, l.answer == DnsReply::Records));
                }
            }
        }
        let by_ip = contacts
            .into_iter()
            .map(|(ip, list)| {
                let mut list: Vec<ClientContact> = list.into_values().collect();
                list.sort_by_key(|c| (c.started, c.conn));
                let window = window(stories.get(&ip).map_or(&[][..], Vec::as_slice));
                (
                    ip,
                    Client {
                        contacts: list,
                        window,
                        lookups: lookups.remove(&ip).unwrap_or_default(),
                    },
                )
            })
            .collect();
        Clients { by_ip }
    }

    /// The client (network) that `ip` belongs to.
    pub(super) fn of(&self, ip: IpAddr) -> Option<&Client> {
        self.by_ip.get(&network_of(ip))
    }
}

impl Client {
    /// Whether the client looked up `host`'s address through the farm's DNS by `by` and
    /// never got one (a rule gave it no A/AAAA record, SERVFAIL, no answer): then a
    /// sender cannot use that host, and is right not to.
    pub(super) fn unresolved(&self, host: &str, by: Duration) -> bool {
        self.lookups.get(host).is_some_and(|l| {
            let asked: Vec<bool> = l
                .iter()
                .filter(|(at, _)| *at <= by)
                .map(|(_, ok)| *ok)
                .collect();
            !asked.is_empty() && !asked.contains(&true)
        })
    }

    /// Whether the client's last contact with `host` that ended before `before` failed:
    /// then a sender is right to avoid that host for a while.
    pub(super) fn last_failed(&self, host: &str, before: Duration) -> bool {
        // Contacts are sorted by start; one that ended by `before` started by then too.
        // The latest started of them is taken as the last (contacts seldom overlap).
        let upto = self.contacts.partition_point(|c| c.started <= before);
        self.contacts[..upto]
            .iter()
            .rev()
            .find(|c| c.host == host && c.ended <= before)
            .is_some_and(|c| c.failed)
    }

    /// A contact with one of `hosts` made after connection `conn` (which started at
    /// `from`) and starting by `until`. Connections are numbered in the order they
    /// opened, which tells apart contacts that started at the same farm time.
    pub(super) fn contact_within(
        &self,
        hosts: &[&str],
        conn: u64,
        from: Duration,
        until: Duration,
    ) -> Option<&ClientContact> {
        let at = self
            .contacts
            .partition_point(|c| (c.started, c.conn) <= (from, conn));
        self.contacts[at..]
            .iter()
            .take_while(|c| c.started <= until)
            .find(|c| hosts.contains(&c.host.as_str()))
    }

    /// A contact with one of `others` earlier in the same try as connection `conn`
    /// (started at `started`): walking back through the client's contacts with `hosts`
    /// (the domain's) while each ended within `window` of the next one's start.
    pub(super) fn earlier_in_try(
        &self,
        hosts: &[&str],
        others: &[&str],
        conn: u64,
        started: Duration,
        window: Duration,
    ) -> Option<&ClientContact> {
        let at = self
            .contacts
            .partition_point(|c| (c.started, c.conn) < (started, conn));
        let mut edge = started;
        for c in self.contacts[..at].iter().rev() {
            if !hosts.contains(&c.host.as_str()) {
                continue;
            }
            if edge.saturating_sub(c.ended) > window {
                return None;
            }
            if others.contains(&c.host.as_str()) {
                return Some(c);
            }
            edge = c.started;
        }
        None
    }

    /// The first contact with one of `hosts` that started after `after`, other than
    /// connection `not`.
    pub(super) fn next_contact(
        &self,
        hosts: &[&str],
        after: Duration,
        not: u64,
    ) -> Option<&ClientContact> {
        let at = self.contacts.partition_point(|c| c.started <= after);
        self.contacts[at..]
            .iter()
            .find(|c| c.conn != not && hosts.contains(&c.host.as_str()))
    }
}
