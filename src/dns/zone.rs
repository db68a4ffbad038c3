//! The records the farm serves, built once from the scenario: one source of truth for the
//! DNS server, for the checks sessions make through it, and for `mxfarm dns`.
//!
//! - each `[[domain]]`: its MX records (to each host's `hostname`), or the null MX, and
//!   its TXT records;
//! - each `[[host]]`: an A or AAAA record for its `hostname` (its `address`, else the
//!   address it listens on), and a PTR record for that address, if no other host shares
//!   it, it is not a loopback address (which the senders under test share) and
//!   `[reverse-dns]` does not name it;
//! - `[reverse-dns]`: a PTR record for each address;
//! - `[dns] records`.
//!
//! Each owner name belongs to a zone with an SOA and an NS record: a `[[domain]]` if the
//! name is in one, else the name's parent (its own name when the parent is a top-level
//! domain). Names outside every zone get `[dns] outside-zones`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use crate::scenario::{DnsRecord, OutsideZones, RecordData, RecordKind, Scenario, reverse_name};

/// The name the farm's SOA and NS records give as the zones' server.
pub(crate) const SERVER_NAME: &str = "ns.mxfarm.test";
/// The mailbox in the SOA records.
const HOSTMASTER: &str = "hostmaster.mxfarm.test";
/// How many CNAMEs an answer follows at most: a loop in the scenario's records ends.
const MAX_CNAME_CHAIN: usize = 8;

/// What one owner name holds, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Served {
    Record(RecordData),
    /// The zone's SOA (at its apex).
    Soa,
    /// The zone's NS (at its apex).
    Ns,
}

impl Served {
    pub(crate) fn kind(&self) -> RecordKind {
        match self {
            Served::Record(data) => data.kind(),
            Served::Soa => RecordKind::Soa,
            Served::Ns => RecordKind::Ns,
        }
    }
}

/// The zone's answer to a query, before any rule changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Records (owner, data); a CNAME chain comes first.
    Records {
        zone: String,
        records: Vec<(String, Served)>,
    },
    /// The name exists, but has no record of that type.
    NoData { zone: String },
    /// The name does not exist in its zone.
    NxDomain { zone: String },
    /// The name is in no zone of the scenario.
    Outside(OutsideZones),
}

/// Every record of the scenario, by owner name.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// Zone apexes: a name's zone is the longest of them it ends with, found by walking
    /// its labels (never by comparing with every apex).
    apexes: HashSet<String>,
    names: HashMap<String, Vec<Served>>,
    /// Names that exist only because names below them do (empty non-terminals): NODATA,
    /// not NXDOMAIN.
    between: BTreeSet<String>,
    pub ttl: Duration,
    outside: OutsideZones,
}

impl Zone {
    /// The zone of `scenario`, with each host at `address_of(host name)`: the address it
    /// is bound to, or the scenario's for a zone printed without a running farm.
    pub(crate) fn build(scenario: &Scenario, address_of: impl Fn(&str) -> Option<IpAddr>) -> Zone {
        let mut records: Vec<DnsRecord> = Vec::new();
        let hostname_of: HashMap<&str, &str> = scenario
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.hostname.as_str()))
            .collect();
        for domain in &scenario.domains {
            if domain.null_mx {
                records.push(record(&domain.name, mx(0, String::new())));
            }
            for entry in &domain.mx {
                if let Some(hostname) = hostname_of.get(entry.host.as_str())
                    && !hostname.starts_with('[')
                {
                    records.push(record(
                        &domain.name,
                        mx(entry.preference, hostname.to_string()),
                    ));
                }
            }
            for text in &domain.txt {
                records.push(record(&domain.name, RecordData::Txt(text.clone())));
            }
        }
        let mut by_address: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
        for host in &scenario.hosts {
            if host.hostname.starts_with('[') {
                continue;
            }
            let ip = host
                .address
                .or_else(|| address_of(&host.name))
                .filter(|ip| !ip.is_unspecified());
            let Some(ip) = ip else { continue };
            let data = match ip {
                IpAddr::V4(v4) => RecordData::A(v4),
                IpAddr::V6(v6) => RecordData::Aaaa(v6),
            };
            let a = record(&host.hostname, data);
            if !records.contains(&a) {
                records.push(a);
            }
            let names = by_address.entry(ip).or_default();
            if !names.contains(&host.hostname.as_str()) {
                names.push(&host.hostname);
            }
        }
        for (ip, names) in &by_address {
            // Not for loopback: senders under test share it with the hosts, and what
            // their address's PTR says is the scenario's to write ([reverse-dns]).
            if let [only] = names[..]
                && !ip.is_loopback()
                && !scenario.reverse_dns.contains_key(ip)
            {
                records.push(record(
                    &reverse_name(*ip),
                    RecordData::Ptr(only.to_string()),
                ));
            }
        }
        for (ip, name) in &scenario.reverse_dns {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            records.push(record(&reverse_name(*ip), RecordData::Ptr(name)));
        }
        records.extend(scenario.dns.records.iter().cloned());
        Self::from_records(scenario, records)
    }

    fn from_records(scenario: &Scenario, mut records: Vec<DnsRecord>) -> Zone {
        let mut apexes: HashSet<String> = scenario.domains.iter().map(|d| d.name.clone()).collect();
        // Fewer labels first, so that the zones do not depend on the order records are
        // written in: `m.x.test` makes the zone `x.test` before `a.b.x.test` is placed.
        records.sort_by_key(|r| r.name.split('.').count());
        for r in &records {
            if longest_apex(&apexes, &r.name).is_none() {
                apexes.insert(own_zone(&r.name));
            }
        }
        let mut names: HashMap<String, Vec<Served>> = HashMap::new();
        for apex in &apexes {
            names
                .entry(apex.clone())
                .or_default()
                .extend([Served::Soa, Served::Ns]);
        }
        let mut between = BTreeSet::new();
        for r in records {
            if let Some(zone) = longest_apex(&apexes, &r.name) {
                let mut name = r.name.as_str();
                while let Some((_, parent)) = name.split_once('.') {
                    if parent.len() < zone.len() {
                        break;
                    }
                    between.insert(parent.to_string());
                    name = parent;
                }
            }
            let held = names.entry(r.name).or_default();
            let served = Served::Record(r.data);
            if !held.contains(&served) {
                held.push(served);
            }
        }
        Zone {
            apexes,
            names,
            between,
            ttl: scenario.dns.ttl,
            outside: scenario.dns.outside_zones,
        }
    }

    /// The zone `name` (lower case, no final dot) is in.
    pub(crate) fn zone_of(&self, name: &str) -> Option<&str> {
        longest_apex(&self.apexes, name)
    }

    /// The answer to a query of `kind` (`None`: ANY, every record of the name) for `name`.
    pub(crate) fn lookup(&self, name: &str, kind: Option<RecordKind>) -> Answer {
        let Some(zone) = self.zone_of(name) else {
            return Answer::Outside(self.outside);
        };
        let zone = zone.to_string();
        let mut records = Vec::new();
        let mut owner = name.to_string();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(held) = self.names.get(&owner) else {
                break;
            };
            let matching: Vec<&Served> = held
                .iter()
                .filter(|s| kind.is_none_or(|k| s.kind() == k))
                .collect();
            if !matching.is_empty() {
                records.extend(matching.into_iter().map(|s| (owner.clone(), s.clone())));
                break;
            }
            let cname = held.iter().find_map(|s| match s {
                Served::Record(RecordData::Cname(target)) => Some(target.clone()),
                _ => None,
            });
            let Some(target) = cname else { break };
            records.push((
                owner.clone(),
                Served::Record(RecordData::Cname(target.clone())),
            ));
            owner = target;
        }
        if !records.is_empty() {
            return Answer::Records { zone, records };
        }
        if self.names.contains_key(name) || self.between.contains(name) {
            Answer::NoData { zone }
        } else {
            Answer::NxDomain { zone }
        }
    }

    /// The SOA record's data for `zone`, as a zone file writes it.
    pub(crate) fn soa_text(&self, zone: &str) -> String {
        let _ = zone;
        let ttl = self.ttl.as_secs();
        format!("{SERVER_NAME}. {HOSTMASTER}. 1 3600 600 86400 {ttl}")
    }

    /// Every zone as zone-file text, zone by zone, owners and types in order: what the
    /// farm will answer.
    pub(crate) fn zone_file(&self) -> String {
        let mut out = String::new();
        let ttl = self.ttl.as_secs();
        // Each owner under its zone, in one pass.
        let mut zones: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for owner in self.names.keys() {
            if let Some(zone) = self.zone_of(owner) {
                zones.entry(zone).or_default().push(owner);
            }
        }
        let _ = writeln!(out, "$TTL {ttl}");
        for (apex, mut owners) in zones {
            let _ = writeln!(out, "\n; zone {apex}");
            owners.sort_by_key(|n| (n.as_str() != apex, n.split('.').rev().collect::<Vec<_>>()));
            for owner in owners {
                let mut held: Vec<&Served> = self.names[owner].iter().collect();
                // SOA and NS first, as zone files start.
                held.sort_by_key(|s| {
                    (
                        s.kind() != RecordKind::Soa,
                        s.kind() != RecordKind::Ns,
                        s.kind(),
                    )
                });
                for served in held {
                    let _ = writeln!(out, "{}", self.line(owner, served, apex));
                }
            }
        }
        match self.outside {
            OutsideZones::Nxdomain => out.push_str("\n; any other name: NXDOMAIN\n"),
            OutsideZones::Refused => out.push_str("\n; any other name: REFUSED\n"),
        }
        out
    }

    /// One record as a zone-file line.
    pub(crate) fn line(&self, owner: &str, served: &Served, zone: &str) -> String {
        let data = match served {
            Served::Record(data) => data.to_string(),
            Served::Soa => self.soa_text(zone),
            Served::Ns => format!("{SERVER_NAME}."),
        };
        format!(
            "{owner}.\t{}\tIN\t{}\t{data}",
            self.ttl.as_secs(),
            served.kind()
        )
    }

    /// How many names hold records.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

fn record(name: &str, data: RecordData) -> DnsRecord {
    DnsRecord {
        name: name.to_string(),
        data,
    }
}

fn mx(preference: u16, exchange: String) -> RecordData {
    RecordData::Mx {
        preference,
        exchange,
    }
}

/// The longest of `apexes` that `name` is, or is below: `name` itself, then each parent.
fn longest_apex<'a>(apexes: &'a HashSet<String>, name: &str) -> Option<&'a str> {
    let mut candidate = name;
    loop {
        if let Some(apex) = apexes.get(candidate) {
            return Some(apex.as_str());
        }
        candidate = candidate.split_once('.')?.1;
    }
}

/// The zone of a name in no `[[domain]]`: its parent, unless that is a top-level domain.
fn own_zone(name: &str) -> String {
    match name.split_once('.') {
        Some((_, parent)) if parent.contains('.') => parent.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load_str;

    fn zone(extra: &str) -> Zone {
        let text = format!(
            "name = \"z\"\n[[host]]\nname = \"mx1\"\nlisten = \"192.0.2.1:25\"\nhostname = \"mx1.a.test\"\n[[host]]\nname = \"mx2\"\nlisten = \"0.0.0.0:26\"\nhostname = \"mx2.b.test\"\n[[domain]]\nname = \"a.test\"\nmx = [{{ host = \"mx1\" }}, {{ host = \"mx2\", preference = 20 }}]\n{extra}"
        );
        let scenario = load_str("z.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        Zone::build(&scenario, |name| scenario.host(name).map(|h| h.listen.ip()))
    }

    #[test]
    fn names_in_zones_exist_or_not_and_others_are_outside() {
        let z = zone(
            "[dns]\nrecords = [\"deep.x.sub.a.test A 192.0.2.9\", \"loop1.a.test CNAME loop2.a.test\", \"loop2.a.test CNAME loop1.a.test\"]\n",
        );
        assert!(
            matches!(z.lookup("a.test", Some(RecordKind::Mx)), Answer::Records { records, .. } if records.len() == 2)
        );
        // A host on 0.0.0.0 without `address` has no A record; its name is not in a zone
        // of its own then either.
        assert_eq!(
            z.lookup("mx2.b.test", Some(RecordKind::A)),
            Answer::Outside(OutsideZones::Nxdomain)
        );
        // An empty non-terminal exists: NODATA, not NXDOMAIN.
        assert_eq!(
            z.lookup("sub.a.test", Some(RecordKind::A)),
            Answer::NoData {
                zone: "a.test".into()
            }
        );
        assert_eq!(
            z.lookup("nope.a.test", Some(RecordKind::A)),
            Answer::NxDomain {
                zone: "a.test".into()
            }
        );
        assert_eq!(
            z.lookup("example.com", Some(RecordKind::A)),
            Answer::Outside(OutsideZones::Nxdomain)
        );
        // A CNAME loop ends.
        assert!(
            matches!(z.lookup("loop1.a.test", Some(RecordKind::A)), Answer::Records { records, .. } if records.len() == MAX_CNAME_CHAIN)
        );
        // Host addresses get a PTR, loopback ones do not.
        assert!(matches!(
            z.lookup("1.2.0.192.in-addr.arpa", Some(RecordKind::Ptr)),
            Answer::Records { .. }
        ));
    }

    #[test]
    fn the_zone_file_lists_every_record_with_soa_first() {
        let text = zone("").zone_file();
        let apex = text
            .lines()
            .skip_while(|l| l != &"; zone a.test")
            .nth(1)
            .unwrap_or("");
        assert!(apex.contains("IN\tSOA\tns.mxfarm.test."), "{text}");
        assert!(
            text.contains("a.test.\t60\tIN\tMX\t20 mx2.b.test."),
            "{text}"
        );
        assert!(text.contains("mx1.a.test.\t60\tIN\tA\t192.0.2.1"), "{text}");
        assert!(text.contains("; any other name: NXDOMAIN"), "{text}");
    }
}
