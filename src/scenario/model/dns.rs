//! The farm's DNS as a scenario describes it: what it serves besides the records the
//! domains and hosts imply, what names outside its zones get, and the rules that play
//! DNS faults. The zone itself (MX from `[[domain]]`, A/AAAA and PTR from `[[host]]`,
//! PTR from `[reverse-dns]`) is built from the whole scenario by the `dns` module.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::{AttemptRange, Glob, TimeRange};

/// `[dns]`: everything about the farm's DNS that is not implied by domains and hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// What a query for a name outside every zone of the scenario gets. The farm never
    /// recurses: it is the authority for its `.test` names and nothing else.
    pub outside_zones: OutsideZones,
    /// The TTL of every record it serves (and of the SOA's negative answers). Short, so
    /// that a resolver which caches does not hide a fault that starts later.
    pub ttl: Duration,
    /// Records written out (`records = ["mail.sender.test A 192.0.2.1"]`).
    pub records: Vec<DnsRecord>,
    /// The fault rules, tried in order; the first that matches decides.
    pub rules: Vec<DnsRule>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            outside_zones: OutsideZones::Nxdomain,
            ttl: Duration::from_secs(60),
            records: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// The answer for a name outside the scenario's zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsideZones {
    /// "No such name": what a `.test` name (RFC 6761) gets from any real resolver.
    #[default]
    Nxdomain,
    /// "I do not serve that": what an authoritative server says of a zone it lacks.
    Refused,
}

/// One record: an owner name (lower case, without the final dot) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub data: RecordData,
}

/// What a record holds. Names are lower case, without the final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    /// An empty `exchange` is the null MX of RFC 7505 (`MX 0 .`).
    Mx {
        preference: u16,
        exchange: String,
    },
    Ptr(String),
    Txt(String),
}

impl RecordData {
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordData::A(_) => RecordKind::A,
            RecordData::Aaaa(_) => RecordKind::Aaaa,
            RecordData::Cname(_) => RecordKind::Cname,
            RecordData::Mx { .. } => RecordKind::Mx,
            RecordData::Ptr(_) => RecordKind::Ptr,
            RecordData::Txt(_) => RecordKind::Txt,
        }
    }
}

impl fmt::Display for RecordData {
    /// As a zone file writes the data: `10 mx1.aol.test.`, `"v=spf1 -all"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let absolute = |name: &str| {
            if name.is_empty() {
                ".".to_string()
            } else {
                format!("{name}.")
            }
        };
        match self {
            RecordData::A(ip) => write!(f, "{ip}"),
            RecordData::Aaaa(ip) => write!(f, "{ip}"),
            RecordData::Cname(name) | RecordData::Ptr(name) => f.write_str(&absolute(name)),
            RecordData::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {}", absolute(exchange)),
            RecordData::Txt(text) => {
                // One quoted string per DNS string: a zone file's strings hold at most
                // 255 bytes too, so a long SPF record reads back as the wire has it.
                let quoted: Vec<String> = txt_strings(text)
                    .into_iter()
                    .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
                    .collect();
                f.write_str(&quoted.join(" "))
            }
        }
    }
}

/// A TXT record's text in strings of at most 255 bytes, cut between characters, as DNS
/// holds it (RFC 1035 3.3.14: a long SPF record is several strings, which readers join).
pub fn txt_strings(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if at + c.len_utf8() - start > 255 {
            out.push(&text[start..at]);
            start = at;
        }
    }
    out.push(&text[start..]);
    out
}

/// The types a scenario can name: those it serves, and SOA and NS, which every zone has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Ptr,
    Soa,
    Txt,
}

impl RecordKind {
    pub const ALL: [RecordKind; 8] = [
        RecordKind::A,
        RecordKind::Aaaa,
        RecordKind::Cname,
        RecordKind::Mx,
        RecordKind::Ns,
        RecordKind::Ptr,
        RecordKind::Soa,
        RecordKind::Txt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Cname => "CNAME",
            RecordKind::Mx => "MX",
            RecordKind::Ns => "NS",
            RecordKind::Ptr => "PTR",
            RecordKind::Soa => "SOA",
            RecordKind::Txt => "TXT",
        }
    }

    /// The type named `text`, in any case.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[dns.rule]]`: when a query gets something other than the zone's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsRule {
    /// How the journal and the summary name it: `dns rule 1`.
    pub name: Arc<str>,
    /// All must hold.
    pub when: Vec<DnsCondition>,
    pub then: DnsAction,
}

/// A condition on a query.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsCondition {
    /// The query name matches one of these globs (case-insensitive, no final dot).
    Name(Vec<Glob>),
    /// The query type is one of these.
    Type(Vec<RecordKind>),
    /// The asking address is in one of these networks.
    Client(Vec<IpNet>),
    /// Farm time lies in this range.
    Time(TimeRange),
    /// The number of this query among those from the same address for the same name and
    /// type (1 for the first) lies in the range: "the first two MX lookups fail".
    Attempt(AttemptRange),
    /// A draw from the farm's seeded generator is below this probability.
    Chance(f64),
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsAction {
    pub answer: DnsAnswer,
    /// How long, on the farm's clock, before the answer is sent.
    pub delay: Duration,
}

/// The answer a rule gives instead of (or as) the zone's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsAnswer {
    /// The zone's own answer (with a rule's `delay`: a slow answer).
    #[default]
    Records,
    /// SERVFAIL: a temporary failure; MTAs defer ("Name service error").
    Servfail,
    /// NXDOMAIN: the name does not exist; MTAs bounce.
    Nxdomain,
    /// REFUSED.
    Refused,
    /// NOERROR without records (NODATA): "mx2 has no A record".
    Empty,
    /// Nothing at all: the resolver times out.
    Drop,
    /// Over UDP, an empty answer with the TC bit, so the resolver asks again over TCP,
    /// where it gets the zone's answer.
    Truncated,
}

impl DnsAnswer {
    pub const NAMES: &'static [(&'static str, DnsAnswer)] = &[
        ("records", DnsAnswer::Records),
        ("servfail", DnsAnswer::Servfail),
        ("nxdomain", DnsAnswer::Nxdomain),
        ("refused", DnsAnswer::Refused),
        ("empty", DnsAnswer::Empty),
        ("drop", DnsAnswer::Drop),
        ("truncated", DnsAnswer::Truncated),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("records", |(n, _)| *n)
    }
}

impl fmt::Display for DnsRule {
    /// One line for the startup summary: `dns rule 1: MX aol.test time <10m -> servfail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.name)?;
        for condition in &self.when {
            match condition {
                DnsCondition::Name(globs) => {
                    let names: Vec<&str> = globs.iter().map(|g| g.text.as_str()).collect();
                    write!(f, " name={}", names.join("|"))?;
                }
                DnsCondition::Type(kinds) => {
                    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                    write!(f, " type={}", kinds.join("|"))?;
                }
                DnsCondition::Client(nets) => {
                    let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                    write!(f, " client={}", nets.join("|"))?;
                }
                DnsCondition::Time(range) => match range.until {
                    Some(until) => write!(
                        f,
                        " time {}-{}",
                        humantime::format_duration(range.from),
                        humantime::format_duration(until)
                    )?,
                    None => write!(f, " time >={}", humantime::format_duration(range.from))?,
                },
                DnsCondition::Attempt(range) => {
                    if range.min == range.max {
                        write!(f, " attempt {}", range.min)?;
                    } else if range.max == u32::MAX {
                        write!(f, " attempt >={}", range.min)?;
                    } else {
                        write!(f, " attempt {}-{}", range.min, range.max)?;
                    }
                }
                DnsCondition::Chance(p) => write!(f, " chance {p}")?,
            }
        }
        f.write_str(" ->")?;
        if !self.then.delay.is_zero() {
            write!(f, " wait {}", humantime::format_duration(self.then.delay))?;
            if self.then.answer != DnsAnswer::Records {
                f.write_str(" then")?;
            }
        }
        if self.then.answer != DnsAnswer::Records || self.then.delay.is_zero() {
            write!(f, " {}", self.then.answer.as_str())?;
        }
        Ok(())
    }
}
