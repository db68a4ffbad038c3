//! Where a sender finds a domain's MX hosts: the farm's own DNS when it runs one (real
//! queries, with the scenario's DNS faults: a SERVFAIL defers, a host without an address
//! is skipped), else the scenario's MX records as written.
//!
//! Answers are kept for the zone's TTL, as the caching resolver beside a real MTA keeps
//! them; failures are not kept, so a fault that ends is seen to end at the next try.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;

use super::model::Mx;
use crate::dns::lookup::{Lookups, MxLookup};
use crate::farm::Farm;
use crate::policy::learnt::Looked;

/// The hosts to try for a domain, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    Hosts(Vec<Mx>),
    /// The domain cannot take mail: its recipients bounce.
    Permanent(String),
    /// A lookup failed for now: the recipients stay queued.
    Temporary(String),
}

/// Answers by name, with the farm time until which each holds.
type Cache<T> = Mutex<HashMap<String, (Duration, T)>>;

pub(super) struct Resolver {
    lookups: Option<Lookups>,
    client: IpAddr,
    ttl: Duration,
    /// Held while a lookup is made, so that the looks that fall due together ask once
    /// and the others read the answer from the cache.
    asking: tokio::sync::Mutex<()>,
    mx: Cache<MxLookup>,
    addresses: Cache<Looked<Vec<IpAddr>>>,
}

impl Resolver {
    pub(super) fn new(farm: &Farm, client: IpAddr) -> Resolver {
        Resolver {
            lookups: farm
                .dns_addr()
                .map(|addr| Lookups::new(addr, farm.clock().clone()).asking_as_sender()),
            client,
            ttl: farm.scenario().dns.ttl,
            asking: tokio::sync::Mutex::default(),
            mx: Mutex::default(),
            addresses: Mutex::default(),
        }
    }

    /// The MX hosts of `domain`, as farm host names with their preference.
    pub(super) async fn resolve(&self, farm: &Farm, domain: &str) -> Resolved {
        let Some(lookups) = &self.lookups else {
            return from_scenario(farm, domain);
        };
        let _asking = self.asking.lock().await;
        let now = farm.now();
        let cached = self
            .mx
            .lock()
            .get(domain)
            .filter(|(until, _)| *until > now)
            .map(|(_, found)| found.clone());
        let found = match cached {
            Some(found) => found,
            None => {
                let found = lookups.mx(domain).await;
                if found != MxLookup::TempError {
                    self.mx
                        .lock()
                        .insert(domain.to_string(), (farm.now() + self.ttl, found.clone()));
                }
                found
            }
        };
        let exchanges = match found {
            MxLookup::Exchanges(exchanges) => exchanges,
            // RFC 5321 5.1: without MX records, the domain's own address is the MX.
            MxLookup::NoData => vec![(0, domain.to_string())],
            MxLookup::NullMx => {
                return Resolved::Permanent(format!(
                    "Domain {domain} does not accept mail (nullMX)"
                ));
            }
            MxLookup::NxDomain => {
                return Resolved::Permanent(format!(
                    "Host or domain name not found. Name service error for name={domain} type=MX: Host not found"
                ));
            }
            MxLookup::TempError => {
                return Resolved::Temporary(format!(
                    "Host or domain name not found. Name service error for name={domain} type=MX: Host not found, try again"
                ));
            }
        };
        let mut hosts = Vec::new();
        let mut temporary = None;
        for (preference, exchange) in exchanges {
            match self.addresses(lookups, farm, &exchange).await {
                Looked::Found(_) => {
                    if let Some(host) = host_named(farm, &exchange) {
                        hosts.push(Mx { host, preference });
                    }
                }
                Looked::Missing => {}
                Looked::TempError => {
                    temporary = Some(format!(
                        "Host or domain name not found. Name service error for name={exchange} type=A: Host not found, try again"
                    ));
                }
            }
        }
        match (hosts.is_empty(), temporary) {
            (false, _) => Resolved::Hosts(hosts),
            (true, Some(why)) => Resolved::Temporary(why),
            (true, None) => Resolved::Permanent(format!(
                "Host or domain name not found: no MX host of {domain} has an address"
            )),
        }
    }

    async fn addresses(&self, lookups: &Lookups, farm: &Farm, name: &str) -> Looked<Vec<IpAddr>> {
        let now = farm.now();
        let cached = self
            .addresses
            .lock()
            .get(name)
            .filter(|(until, _)| *until > now)
            .map(|(_, found)| found.clone());
        if let Some(found) = cached {
            return found;
        }
        let found = lookups.addresses(name, self.client).await;
        if !matches!(found, Looked::TempError) {
            self.addresses
                .lock()
                .insert(name.to_string(), (farm.now() + self.ttl, found.clone()));
        }
        found
    }
}

/// The farm host whose name in DNS is `exchange`.
fn host_named(farm: &Farm, exchange: &str) -> Option<String> {
    farm.scenario()
        .hosts
        .iter()
        .find(|h| h.hostname.eq_ignore_ascii_case(exchange))
        .map(|h| h.name.clone())
}

/// The MX hosts of `domain` as the scenario writes them, for a farm without DNS.
fn from_scenario(farm: &Farm, domain: &str) -> Resolved {
    let scenario = farm.scenario();
    let Some(d) = scenario
        .domains
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(domain))
    else {
        return Resolved::Permanent(format!(
            "Host or domain name not found: {domain} is not a domain of the scenario"
        ));
    };
    if d.null_mx {
        return Resolved::Permanent(format!("Domain {domain} does not accept mail (nullMX)"));
    }
    if d.mx.is_empty() {
        return Resolved::Permanent(format!("{domain} has no MX host in the scenario"));
    }
    Resolved::Hosts(
        d.mx.iter()
            .map(|m| Mx {
                host: m.host.clone(),
                preference: m.preference,
            })
            .collect(),
    )
}
