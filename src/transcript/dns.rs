//! The DNS part of a transcript: per client, what it asked the farm's DNS and what it
//! got, so that a story with no attempt for a while is explained (an MX lookup that
//! SERVFAILed, a host without an address). The farm's own lookups for its checks are
//! left out: they are not the sender's behaviour.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::journal::{DnsReply, Event, EventKind};
use crate::render::{Granularity, offset};

/// How many lookups of one client a transcript lists; it counts the rest.
pub const MAX_LISTED: usize = 200;

/// The lookups of one client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientDns {
    pub client: IpAddr,
    pub lookups: Vec<DnsLookup>,
    /// Lookups past [`MAX_LISTED`], not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One query and its answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsLookup {
    /// From the client's first lookup.
    #[serde(rename = "offset_ms", serialize_with = "crate::millis::serialize")]
    pub offset: Duration,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    pub answer: DnsReply,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The farm time of the answer, for the report (not shown: stories show offsets).
    #[serde(skip)]
    pub at: Duration,
}

/// Every client's lookups, in address order.
pub(super) fn lookups(events: &[Event]) -> Vec<ClientDns> {
    let mut by_client: BTreeMap<IpAddr, (Duration, ClientDns)> = BTreeMap::new();
    for event in events {
        let EventKind::DnsQuery {
            client,
            by_farm: false,
            name,
            qtype,
            answer,
            records,
            rule,
            ..
        } = &event.kind
        else {
            continue;
        };
        // A held query is followed by its answer, which is what the client got.
        if *answer == DnsReply::Held {
            continue;
        }
        let (first, entry) = by_client.entry(client.ip()).or_insert_with(|| {
            (
                event.at,
                ClientDns {
                    client: client.ip(),
                    lookups: Vec::new(),
                    more: 0,
                },
            )
        });
        if entry.lookups.len() >= MAX_LISTED {
            entry.more += 1;
            continue;
        }
        entry.lookups.push(DnsLookup {
            offset: event.at.saturating_sub(*first),
            name: name.clone(),
            qtype: qtype.clone(),
            answer: *answer,
            records: records.clone(),
            rule: rule.as_deref().map(str::to_string),
            at: event.at,
        });
    }
    by_client.into_values().map(|(_, c)| c).collect()
}

/// `dns lookups from 127.0.0.1 (times from its first)`, then one line per lookup.
pub(super) fn render(out: &mut String, client: &ClientDns, granularity: Granularity) {
    let _ = writeln!(
        out,
        "dns lookups from {} (times from its first)",
        client.client
    );
    let width = client
        .lookups
        .iter()
        .map(|l| l.name.len() + l.qtype.len() + 1)
        .max()
        .unwrap_or(0);
    for lookup in &client.lookups {
        let time = match granularity {
            Granularity::None => String::new(),
            _ => format!("{:<9} ", offset(lookup.offset, granularity)),
        };
        let asked = format!("{} {}", lookup.name, lookup.qtype);
        let mut got = if lookup.answer == DnsReply::Records && !lookup.records.is_empty() {
            lookup.records.join(", ")
        } else {
            lookup.answer.as_str().to_string()
        };
        if let Some(rule) = &lookup.rule {
            let _ = write!(got, "   [{rule}]");
        }
        let _ = writeln!(out, "  {time}{asked:<width$}  {got}");
    }
    if client.more > 0 {
        let _ = writeln!(out, "  ... and {} more lookups", client.more);
    }
}

/// Each host's hostname, from the journal's `farm-started` event and any
/// `scenario-replaced` after it (the latest that names the host).
pub(super) fn hostnames(events: &[Event]) -> std::collections::HashMap<String, String> {
    let mut names = std::collections::HashMap::new();
    for event in events {
        if let EventKind::FarmStarted { hostnames, .. }
        | EventKind::ScenarioReplaced { hostnames, .. } = &event.kind
        {
            names.extend(hostnames.iter().cloned());
        }
    }
    names
}
