//! The lookups sessions make for `ptr`, `fcrdns`, `helo-dns` and `spf` conditions: real
//! queries (hickory's DNS client) to the farm's own DNS server, as a provider's MX asks its
//! resolver, so that the scenario's DNS rules (SERVFAIL, slow answers, missing records)
//! apply to them, and each query is in the journal. SPF is evaluated by `viaspf` over
//! these lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use hickory_resolver::net::DnsHandle;
use hickory_resolver::net::client::Client;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::tcp::TcpClientStream;
use hickory_resolver::net::udp::UdpClientStream;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, Name as DnsName, RData, RecordType};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

use crate::clock::Clock;
use crate::policy::learnt::Looked;
use crate::scenario::{DnsCheck, HeloDnsCheck, SpfOutcome};

/// How long the farm's resolver waits for one answer, on the farm's clock (as the rules'
/// delays are): a rule's `delay` shorter than this is a slow answer, a longer one a
/// lookup that fails (temperror), as for a provider whose resolver gives up.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// hickory's own (real-time) timeout per exchange, a bound of last resort above any
/// rule's delay: the farm's clock decides first.
const WIRE_TIMEOUT: Duration = Duration::from_secs(3700);
/// How many PTR names FCrDNS follows at most (RFC 8601 suggests 10 for `iprev`).
const MAX_PTR_NAMES: usize = 10;

/// A DNS client that asks only the farm's DNS server. A plain client, not a stub
/// resolver: a resolver answers names under `localhost` and `127.in-addr.arpa` itself
/// (RFC 6761), and the senders under test are on loopback, so their PTR must come from
/// the farm, as the scenario writes it.
pub(crate) struct Lookups {
    server: SocketAddr,
    clock: Clock,
    /// Asks as a sender's stub resolver does (recursion desired), not as the farm's own
    /// checks: the journal and the DNS rules tell the two apart.
    as_sender: bool,
}

/// What a sender's MX lookup finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MxLookup {
    /// (preference, exchange), lower case without the final dot.
    Exchanges(Vec<(u16, String)>),
    /// `MX 0 .` (RFC 7505).
    NullMx,
    /// The name exists, without MX records: its own address is the implicit MX.
    NoData,
    NxDomain,
    TempError,
}

/// A lookup's outcome with "no records" told apart from "no such name".
enum Coded {
    Found(Vec<RData>),
    NoData,
    NxDomain,
    TempError,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lookups({})", self.server)
    }
}

impl Lookups {
    /// Asks the server at `server`, over UDP, and again over TCP after a truncated answer.
    pub(crate) fn new(server: SocketAddr, clock: Clock) -> Self {
        // A server on 0.0.0.0 (in a container) is asked on loopback.
        let ip = match server.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            server: SocketAddr::new(ip, server.port()),
            clock,
            as_sender: false,
        }
    }

    /// The same server, asked as a sender asks.
    pub(crate) fn asking_as_sender(mut self) -> Self {
        self.as_sender = true;
        self
    }

    /// The MX records of `domain`, as a sending MTA looks them up.
    pub(crate) async fn mx(&self, domain: &str) -> MxLookup {
        match self.coded(domain, RecordType::MX).await {
            Coded::Found(data) => {
                let mut exchanges: Vec<(u16, String)> = data
                    .iter()
                    .filter_map(|d| match d {
                        RData::MX(mx) => Some((mx.preference, plain(&mx.exchange.to_ascii()))),
                        _ => None,
                    })
                    .collect();
                if exchanges.iter().any(|(_, e)| e.is_empty()) {
                    return MxLookup::NullMx;
                }
                exchanges.sort();
                MxLookup::Exchanges(exchanges)
            }
            Coded::NoData => MxLookup::NoData,
            Coded::NxDomain => MxLookup::NxDomain,
            Coded::TempError => MxLookup::TempError,
        }
    }

    /// One query and its answer, over a connection of its own.
    async fn ask(
        &self,
        name: DnsName,
        kind: RecordType,
        tcp: bool,
    ) -> Result<DnsResponse, NetError> {
        let provider = TokioRuntimeProvider::default();
        let client = if tcp {
            let (connect, handle) =
                TcpClientStream::new(self.server, None, Some(WIRE_TIMEOUT), provider);
            let (client, background) =
                Client::<TokioRuntimeProvider>::with_timeout(connect.await?, handle, WIRE_TIMEOUT);
            tokio::spawn(background);
            client
        } else {
            let stream = UdpClientStream::builder(self.server, provider)
                .with_timeout(Some(WIRE_TIMEOUT))
                .build();
            let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(background);
            client
        };
        let mut query = Query::query(name, kind);
        query.set_query_class(DNSClass::IN);
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        // No recursion asked: what tells the server that the farm itself is asking (a
        // sender's stub resolver always asks for recursion), so the journal and the
        // transcript keep the farm's checks apart from the sender's own lookups.
        options.recursion_desired = self.as_sender;
        match client.lookup(query, options).next().await {
            Some(response) => response,
            None => Err(NetError::from("the DNS exchange ended without an answer")),
        }
    }

    async fn records(&self, name: &str, kind: RecordType) -> Looked<Vec<RData>> {
        match self.coded(name, kind).await {
            Coded::Found(found) => Looked::Found(found),
            Coded::NoData | Coded::NxDomain => Looked::Missing,
            Coded::TempError => Looked::TempError,
        }
    }

    async fn coded(&self, name: &str, kind: RecordType) -> Coded {
        let Ok(fqdn) = DnsName::from_ascii(format!("{}.", name.trim_end_matches('.'))) else {
            return Coded::NxDomain;
        };
        let answer = async {
            match self.ask(fqdn.clone(), kind, false).await {
                Ok(response) if response.metadata.truncation => self.ask(fqdn, kind, true).await,
                other => other,
            }
        };
        // The farm's clock bounds the lookup (UDP, then TCP after a truncated answer).
        let deadline = self.clock.now() + LOOKUP_TIMEOUT;
        let response = tokio::select! {
            response = answer => response,
            () = self.clock.sleep_until(deadline) => return Coded::TempError,
        };
        match response {
            Ok(response) => match response.metadata.response_code {
                ResponseCode::NoError => {
                    let found: Vec<RData> = response
                        .answers
                        .iter()
                        .filter(|r| r.record_type() == kind)
                        .map(|r| r.data.clone())
                        .collect();
                    if found.is_empty() {
                        Coded::NoData
                    } else {
                        Coded::Found(found)
                    }
                }
                ResponseCode::NXDomain => Coded::NxDomain,
                _ => Coded::TempError,
            },
            Err(error) => match missing(&error) {
                Some(ResponseCode::NXDomain) => Coded::NxDomain,
                Some(_) => Coded::NoData,
                None => Coded::TempError,
            },
        }
    }

    /// The PTR names of `ip`, lower case without the final dot.
    pub(crate) async fn ptr(&self, ip: IpAddr) -> Looked<Vec<String>> {
        let name = crate::scenario::reverse_name(ip);
        match self.records(&name, RecordType::PTR).await {
            Looked::Found(data) => Looked::Found(
                data.iter()
                    .filter_map(|d| match d {
                        RData::PTR(ptr) => Some(plain(&ptr.0.to_ascii())),
                        _ => None,
                    })
                    .collect(),
            ),
            Looked::Missing => Looked::Missing,
            Looked::TempError => Looked::TempError,
        }
    }

    /// The addresses of `name` of the family of `client` (A for IPv4, AAAA for IPv6): the
    /// other family's records say nothing of this client, and must not hide a failed
    /// lookup of its own.
    pub(crate) async fn addresses(&self, name: &str, client: IpAddr) -> Looked<Vec<IpAddr>> {
        let mut out = Vec::new();
        let mut temp = false;
        let kind = if client.is_ipv4() {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        {
            match self.records(name, kind).await {
                Looked::Found(data) => out.extend(data.iter().filter_map(|d| match d {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Looked::Missing => {}
                Looked::TempError => temp = true,
            }
        }
        match (out.is_empty(), temp) {
            (false, _) => Looked::Found(out),
            (true, true) => Looked::TempError,
            (true, false) => Looked::Missing,
        }
    }

    /// Forward-confirmed reverse DNS of `client`, given its PTR lookup.
    pub(crate) async fn fcrdns(&self, client: IpAddr, ptr: &Looked<Vec<String>>) -> DnsCheck {
        let names = match ptr {
            Looked::Found(names) => names,
            Looked::Missing => return DnsCheck::Fail,
            Looked::TempError => return DnsCheck::TempError,
        };
        let mut temp = false;
        for name in names.iter().take(MAX_PTR_NAMES) {
            match self.addresses(name, client).await {
                Looked::Found(ips) if ips.contains(&client) => return DnsCheck::Pass,
                Looked::TempError => temp = true,
                _ => {}
            }
        }
        if temp {
            DnsCheck::TempError
        } else {
            DnsCheck::Fail
        }
    }

    /// What the EHLO name `helo` resolves to, against `client`.
    pub(crate) async fn helo(&self, client: IpAddr, helo: &str) -> HeloDnsCheck {
        let literal = helo
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(|h| h.strip_prefix("IPv6:").unwrap_or(h));
        if let Some(literal) = literal {
            return match literal.parse::<IpAddr>() {
                Ok(ip) if ip == client => HeloDnsCheck::Match,
                _ => HeloDnsCheck::Mismatch,
            };
        }
        if helo.parse::<IpAddr>().is_ok() || helo.is_empty() {
            return HeloDnsCheck::Missing;
        }
        match self.addresses(helo, client).await {
            Looked::Found(ips) if ips.contains(&client) => HeloDnsCheck::Match,
            Looked::Found(_) => HeloDnsCheck::Mismatch,
            Looked::Missing => HeloDnsCheck::Missing,
            Looked::TempError => HeloDnsCheck::TempError,
        }
    }

    /// The SPF result for `sender` (an address, or empty for `<>`, then the HELO name's)
    /// sent from `client` (RFC 7208 `check_host()`).
    pub(crate) async fn spf(&self, client: IpAddr, sender: &str, helo: Option<&str>) -> SpfOutcome {
        let helo_domain = helo.and_then(|h| viaspf::DomainName::new(h.trim_end_matches('.')).ok());
        let parsed = if sender.is_empty() {
            helo.and_then(|h| viaspf::Sender::from_domain(h.trim_end_matches('.')).ok())
        } else {
            viaspf::Sender::new(sender).ok()
        };
        let Some(sender) = parsed else {
            // No domain to check (RFC 7208 section 4.3: a malformed domain is "none").
            return SpfOutcome::None;
        };
        let config = viaspf::Config::builder().timeout(WIRE_TIMEOUT).build();
        let result =
            viaspf::evaluate_sender(self, &config, client, &sender, helo_domain.as_ref()).await;
        match result.spf_result {
            viaspf::SpfResult::Pass => SpfOutcome::Pass,
            viaspf::SpfResult::Fail(_) => SpfOutcome::Fail,
            viaspf::SpfResult::Softfail => SpfOutcome::Softfail,
            viaspf::SpfResult::Neutral => SpfOutcome::Neutral,
            viaspf::SpfResult::None => SpfOutcome::None,
            viaspf::SpfResult::Temperror => SpfOutcome::TempError,
            viaspf::SpfResult::Permerror => SpfOutcome::PermError,
        }
    }
}

/// NXDOMAIN or NODATA (NOERROR without records): "no such record", not a failure; its
/// code.
fn missing(error: &NetError) -> Option<ResponseCode> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if matches!(
                no.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            Some(no.response_code)
        }
        _ => None,
    }
}

/// A name without its final dot, lower case.
fn plain(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What viaspf makes of a lookup's outcome.
fn for_spf<T>(looked: Looked<Vec<T>>) -> LookupResult<Vec<T>> {
    match looked {
        Looked::Found(found) => Ok(found),
        Looked::Missing => Err(LookupError::NoRecords),
        Looked::TempError => Err(LookupError::Timeout),
    }
}

#[async_trait::async_trait]
impl Lookup for Lookups {
    async fn lookup_a<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        let found = self.records(name.as_str(), RecordType::A).await;
        for_spf(map(found, |d| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        }))
    }

    async fn lookup_aaaa<'lookup, 'a>(
        &'lookup self,
        name: &'a Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        let found = self.records(name.as_str(), RecordType::AAAA).await;
        for_spf(map(found, |d| match d {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        }))
    }

    async fn lookup_mx<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Name>> {
        let found = self.records(name.as_str(), RecordType::MX).await;
        let mut exchanges = match found {
            Looked::Found(data) => data
                .into_iter()
                .filter_map(|d| match d {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Looked::Missing => return Err(LookupError::NoRecords),
            Looked::TempError => return Err(LookupError::Timeout),
        };
        exchanges.sort();
        Ok(exchanges
            .into_iter()
            .filter_map(|(_, name)| Name::new(&plain(&name)).ok())
            .collect())
    }

    async fn lookup_txt<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<String>> {
        let found = self.records(name.as_str(), RecordType::TXT).await;
        for_spf(map(found, |d| match d {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        }))
    }

    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        for_spf(map(self.ptr(ip).await, |n: String| Name::new(&n).ok()))
    }
}

fn map<T, U>(looked: Looked<Vec<T>>, f: impl Fn(T) -> Option<U>) -> Looked<Vec<U>> {
    match looked {
        Looked::Found(found) => Looked::Found(found.into_iter().filter_map(f).collect()),
        Looked::Missing => Looked::Missing,
        Looked::TempError => Looked::TempError,
    }
}
