//! The farm's DNS server on the wire: hickory-server's UDP and TCP listeners with a
//! handler of our own, which asks the zone for the answer and the DNS policy whether a
//! rule changes it, waits a rule's delay on the farm's clock, journals the query and
//! sends the answer. hickory's types stay in this file and in `lookup.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use super::zone::{Answer, SERVER_NAME, Served, Zone};
use crate::clock::Clock;
use crate::journal::{DnsReply, DnsTransport, EventKind, Journal};
use crate::policy::dns::{DnsPolicy, Query};
use crate::scenario::{DnsAnswer, OutsideZones, RecordData, RecordKind, txt_strings};

/// How many queries may wait out a rule's delay at once; a query beyond them is answered
/// SERVFAIL at once, so a flood of slow queries cannot hold unbounded memory.
pub(crate) const MAX_DELAYED: usize = 4096;
/// How many of them one address may hold.
pub(crate) const MAX_DELAYED_PER_CLIENT: usize = 256;
/// How many records of an answer the journal names.
const JOURNALLED_RECORDS: usize = 8;

/// What the handler answers from: the zone and the DNS rules, replaced together when the
/// farm's scenario is.
#[derive(Debug)]
pub(crate) struct Current {
    pub zone: Arc<Zone>,
    pub policy: Arc<DnsPolicy>,
}

/// What the handler needs: everything is shared with the farm.
pub(crate) struct Handler {
    pub current: Arc<parking_lot::RwLock<Arc<Current>>>,
    pub clock: Clock,
    pub journal: Arc<Journal>,
    pub delayed: Arc<Semaphore>,
    /// Where the server answers: the farm's own lookups come from its address (or from
    /// loopback).
    pub server: SocketAddr,
    /// Delayed queries per asking address, at most MAX_DELAYED entries.
    pub held: Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// Who asked what, as every `dns-query` event of the query says it.
struct Asked {
    client: SocketAddr,
    by_farm: bool,
    transport: DnsTransport,
    /// Lower case, without the final dot.
    name: String,
    qtype: String,
}

impl Asked {
    /// The event of what the asker got.
    fn event(
        &self,
        answer: DnsReply,
        records: Vec<String>,
        rule: Option<Arc<str>>,
        delay: Option<Duration>,
    ) -> EventKind {
        EventKind::DnsQuery {
            client: self.client,
            by_farm: self.by_farm,
            transport: self.transport,
            name: self.name.clone(),
            qtype: self.qtype.clone(),
            answer,
            records,
            rule,
            delay,
        }
    }
}

/// One delayed query of an address, given back when dropped.
pub(crate) struct Held {
    ip: std::net::IpAddr,
    counts: Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Handler {
    /// A place for one more delayed query of `ip`, if it has fewer than its bound.
    fn held_for(&self, ip: std::net::IpAddr) -> Option<Held> {
        let mut counts = self.held.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= MAX_DELAYED_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Held {
            ip,
            counts: self.held.clone(),
        })
    }
}

/// A running server: its listeners' tasks end on `shutdown`.
pub(crate) struct Running {
    /// UDP, with hickory's listener.
    server: Server<Shared>,
    /// TCP, with our bounded one (`tcp.rs`).
    tcp: tokio::task::JoinHandle<()>,
    stop_tcp: tokio_util::sync::CancellationToken,
}

/// The handler shared by the UDP listener and the TCP connections.
pub(crate) struct Shared(pub Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, response).await
    }
}

/// The server's sockets, bound before anything else of the farm starts (so that a farm
/// that cannot bind them starts nothing, and replaces no journal file).
pub(crate) struct Bound {
    udp: UdpSocket,
    tcp: TcpListener,
    pub(crate) addr: SocketAddr,
}

impl Bound {
    /// Binds UDP and TCP on `addr` (the same port for both: with port 0, one free for
    /// both).
    pub(crate) async fn new(addr: SocketAddr) -> std::io::Result<Self> {
        let (udp, tcp, addr) = bind_pair(addr).await?;
        Ok(Self { udp, tcp, addr })
    }
}

impl Running {
    /// Starts answering on the bound sockets.
    pub(crate) fn start(bound: Bound, handler: Handler) -> Self {
        let handler = Arc::new(handler);
        let mut server = Server::new(Shared(handler.clone()));
        server.register_socket(bound.udp);
        let stop_tcp = tokio_util::sync::CancellationToken::new();
        let tcp = tokio::spawn(super::tcp::serve(bound.tcp, handler, stop_tcp.clone()));
        Self {
            server,
            tcp,
            stop_tcp,
        }
    }

    /// Stops the listeners and waits for them.
    pub(crate) async fn shutdown(mut self) {
        self.stop_tcp.cancel();
        let _ = self.tcp.await;
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// How many ports `bind_pair` tries for port 0 before it gives up.
const PORT_TRIES: usize = 64;

/// A UDP socket and a TCP listener on one port. With port 0 the port UDP got may be held
/// by some TCP socket (a listener, or a connection's own end, which takes its port from
/// the same range): then another port is tried, a bounded number of times. A port that
/// was asked for is bound or refused as it is.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener, SocketAddr)> {
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tries + 1 < PORT_TRIES =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        // A journal file that falls behind holds the query back, as it holds an SMTP
        // command: a flood of queries cannot grow the file's backlog without bound.
        self.journal.keep_up_with_file().await;
        // One zone and one set of rules for the whole query, even if the scenario is
        // replaced while it waits.
        let current = self.current.read().clone();
        let arrived = self.clock.now();
        let src = request.src();
        let transport = if request.protocol().is_stream() {
            DnsTransport::Tcp
        } else {
            DnsTransport::Udp
        };
        let metadata = &request.metadata;
        let by_farm = asked_by_farm(metadata, src, self.server);
        let query = match request.request_info() {
            Ok(info)
                if metadata.op_code == OpCode::Query
                    && info.query.query_class() == DNSClass::IN
                    && !matches!(info.query.query_type(), RecordType::AXFR | RecordType::IXFR) =>
            {
                info.query
            }
            refused_or_broken => {
                // A well-formed query the farm has no authority for: another class (CHAOS
                // `version.bind`) or a zone transfer gets REFUSED, as a name outside the
                // zones may. FORMERR is for what cannot be read: to an EDNS query it would
                // tell the resolver that the farm cannot do EDNS.
                let (code, answer, name, qtype) = match refused_or_broken {
                    Ok(info) if metadata.op_code == OpCode::Query => (
                        ResponseCode::Refused,
                        DnsReply::Refused,
                        info.query
                            .name()
                            .to_string()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                        info.query.query_type().to_string(),
                    ),
                    _ if metadata.op_code == OpCode::Query => (
                        ResponseCode::FormErr,
                        DnsReply::Formerr,
                        String::new(),
                        String::new(),
                    ),
                    _ => (
                        ResponseCode::NotImp,
                        DnsReply::Formerr,
                        String::new(),
                        String::new(),
                    ),
                };
                let asked = Asked {
                    client: src,
                    by_farm,
                    transport,
                    name,
                    qtype,
                };
                self.journal
                    .record(asked.event(answer, Vec::new(), None, None));
                let builder = MessageResponseBuilder::from_message_request(request);
                return send(&mut response, builder.error_msg(metadata, code)).await;
            }
        };
        let name = query
            .name()
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let qtype = query.query_type();
        let kind = kind_of(qtype);
        let asked = Asked {
            client: src,
            by_farm,
            transport,
            name: name.clone(),
            qtype: qtype.to_string(),
        };
        let verdict = current.policy.decide(
            Query {
                name: &name,
                kind,
                type_code: u16::from(qtype),
                client: src.ip(),
                by_farm,
            },
            arrived,
        );
        let action = verdict.action;
        let mut delay = None;
        if !action.delay.is_zero() && action.answer != DnsAnswer::Drop {
            // A permit for each query that waits: past the bound, no wait (and SERVFAIL).
            // And at most MAX_DELAYED_PER_CLIENT per asking address, so that one flooding
            // client cannot take the others' (or the farm's own checks') slow answers.
            let held = self.held_for(src.ip());
            match self.delayed.clone().try_acquire_owned().ok().zip(held) {
                Some((permit, held)) => {
                    self.journal.record(asked.event(
                        DnsReply::Held,
                        Vec::new(),
                        verdict.rule.clone(),
                        Some(action.delay),
                    ));
                    self.clock.sleep_until(arrived + action.delay).await;
                    drop((permit, held));
                    delay = Some(action.delay);
                }
                None => {
                    return self
                        .answer(
                            request,
                            &mut response,
                            &asked,
                            &current.zone,
                            Err(ResponseCode::ServFail),
                            verdict.rule,
                            None,
                        )
                        .await;
                }
            }
        }
        let zone_answer = match (kind, qtype == RecordType::ANY) {
            (_, true) => current.zone.lookup(&name, None),
            (Some(kind), false) => current.zone.lookup(&name, Some(kind)),
            // A type the farm never serves: only whether the name exists decides.
            (None, false) => match current.zone.lookup(&name, None) {
                Answer::Records { zone, .. } => Answer::NoData { zone },
                other => other,
            },
        };
        let udp = transport == DnsTransport::Udp;
        let outcome = match action.answer {
            DnsAnswer::Records => Ok(zone_answer),
            DnsAnswer::Truncated if udp => Err(ResponseCode::NoError),
            DnsAnswer::Truncated => Ok(zone_answer),
            DnsAnswer::Servfail => Err(ResponseCode::ServFail),
            DnsAnswer::Refused => Err(ResponseCode::Refused),
            DnsAnswer::Nxdomain => Ok(Answer::NxDomain {
                zone: current.zone.zone_of(&name).unwrap_or(&name).to_string(),
            }),
            DnsAnswer::Empty => Ok(Answer::NoData {
                zone: current.zone.zone_of(&name).unwrap_or(&name).to_string(),
            }),
            DnsAnswer::Drop => {
                self.journal
                    .record(asked.event(DnsReply::Dropped, Vec::new(), verdict.rule, None));
                return dropped(metadata);
            }
        };
        if action.answer == DnsAnswer::Truncated && udp {
            self.journal
                .record(asked.event(DnsReply::Truncated, Vec::new(), verdict.rule, delay));
            let mut meta = Metadata::response_from_request(metadata);
            meta.authoritative = true;
            meta.truncation = true;
            let builder = MessageResponseBuilder::from_message_request(request);
            return send(&mut response, builder.build_no_records(meta)).await;
        }
        self.answer(
            request,
            &mut response,
            &asked,
            &current.zone,
            outcome,
            verdict.rule,
            delay,
        )
        .await
    }
}

impl Handler {
    /// Sends the zone's answer (or an error code), and journals it.
    #[allow(clippy::too_many_arguments)]
    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        response: &mut R,
        asked: &Asked,
        served: &Zone,
        outcome: Result<Answer, ResponseCode>,
        rule: Option<Arc<str>>,
        delay: Option<Duration>,
    ) -> ResponseInfo {
        let metadata = &request.metadata;
        let by_farm = asked.by_farm;
        let journal = |answer: DnsReply, records: Vec<String>| {
            self.journal
                .record(asked.event(answer, records, rule.clone(), delay));
        };
        // hickory cuts a UDP answer (and sets TC) at the response's payload size, so that
        // is the client's, never more than it advertised (RFC 6891 6.2.5; 512 at least),
        // nor more than 1232, the size that crosses networks unfragmented.
        let mut edns = Edns::new();
        let advertised = request.edns.as_ref().map_or(512, Edns::max_payload);
        edns.set_max_payload(advertised.clamp(512, 1232));
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if request.edns.is_some() {
            builder.edns(&edns);
        }
        let answer = match outcome {
            Err(code) => {
                journal(reply_of(code), Vec::new());
                return send(response, builder.error_msg(metadata, code)).await;
            }
            Ok(answer) => answer,
        };
        let ttl = u32::try_from(served.ttl.as_secs()).unwrap_or(u32::MAX);
        let mut meta = Metadata::response_from_request(metadata);
        meta.authoritative = true;
        match answer {
            Answer::Outside(outside) => {
                // `outside-zones` is what senders get; the farm's own checks get NXDOMAIN,
                // as a provider's resolver finds for a name that does not exist (a
                // REFUSED would make every SPF or PTR check outside the zones a
                // temperror).
                let code = match outside {
                    _ if by_farm => ResponseCode::NXDomain,
                    OutsideZones::Nxdomain => ResponseCode::NXDomain,
                    OutsideZones::Refused => ResponseCode::Refused,
                };
                journal(reply_of(code), Vec::new());
                meta.authoritative = code == ResponseCode::NXDomain;
                meta.response_code = code;
                send(response, builder.build_no_records(meta)).await
            }
            Answer::Records { zone, records } => {
                let shown = records
                    .iter()
                    .take(JOURNALLED_RECORDS)
                    .map(|(_, s)| format!("{} {}", s.kind(), data_text(served, s, &zone)))
                    .collect();
                journal(DnsReply::Records, shown);
                let answers: Vec<Record> = records
                    .iter()
                    .filter_map(|(owner, s)| wire_record(owner, s, &zone, ttl))
                    .collect();
                let none: Vec<Record> = Vec::new();
                send(
                    response,
                    builder.build(meta, answers.iter(), none.iter(), none.iter(), none.iter()),
                )
                .await
            }
            negative => {
                let (zone, code, reply) = match negative {
                    Answer::NxDomain { zone } => (zone, ResponseCode::NXDomain, DnsReply::Nxdomain),
                    Answer::NoData { zone } => (zone, ResponseCode::NoError, DnsReply::Nodata),
                    _ => (String::new(), ResponseCode::ServFail, DnsReply::Servfail),
                };
                journal(reply, Vec::new());
                meta.response_code = code;
                // The SOA in the authority section tells resolvers how long to cache "no".
                let soa: Vec<Record> = wire_record(&zone, &Served::Soa, &zone, ttl)
                    .into_iter()
                    .collect();
                let none: Vec<Record> = Vec::new();
                send(
                    response,
                    builder.build(meta, none.iter(), soa.iter(), none.iter(), none.iter()),
                )
                .await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let fallback = ResponseInfo::from(Header {
        metadata: *message.metadata(),
        counts: HeaderCounts::default(),
    });
    match response.send_response(message).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "could not send a DNS answer");
            fallback
        }
    }
}

/// Whether the farm's own lookups sent this query (see `lookup.rs`): from loopback or
/// the server's own address, and without recursion desired.
fn asked_by_farm(metadata: &Metadata, src: SocketAddr, server: SocketAddr) -> bool {
    !metadata.recursion_desired && (src.ip().is_loopback() || src.ip() == server.ip())
}

/// What the server says it did with a query it did not answer.
fn dropped(request: &Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata: Metadata::response_from_request(request),
        counts: HeaderCounts::default(),
    })
}

fn reply_of(code: ResponseCode) -> DnsReply {
    match code {
        ResponseCode::NXDomain => DnsReply::Nxdomain,
        ResponseCode::ServFail => DnsReply::Servfail,
        ResponseCode::Refused => DnsReply::Refused,
        ResponseCode::NoError => DnsReply::Nodata,
        _ => DnsReply::Formerr,
    }
}

/// The scenario's name for a query type, if it has one.
fn kind_of(qtype: RecordType) -> Option<RecordKind> {
    Some(match qtype {
        RecordType::A => RecordKind::A,
        RecordType::AAAA => RecordKind::Aaaa,
        RecordType::CNAME => RecordKind::Cname,
        RecordType::MX => RecordKind::Mx,
        RecordType::NS => RecordKind::Ns,
        RecordType::PTR => RecordKind::Ptr,
        RecordType::SOA => RecordKind::Soa,
        RecordType::TXT => RecordKind::Txt,
        _ => return None,
    })
}

fn data_text(zone: &Zone, served: &Served, apex: &str) -> String {
    match served {
        Served::Record(data) => data.to_string(),
        Served::Soa => zone.soa_text(apex),
        Served::Ns => format!("{SERVER_NAME}."),
    }
}

/// A name as hickory holds it: absolute.
fn wire_name(name: &str) -> Option<Name> {
    if name.is_empty() {
        return Some(Name::root());
    }
    Name::from_ascii(format!("{name}.")).ok()
}

fn wire_record(owner: &str, served: &Served, zone: &str, ttl: u32) -> Option<Record> {
    let rdata = match served {
        Served::Record(RecordData::A(ip)) => RData::A(A(*ip)),
        Served::Record(RecordData::Aaaa(ip)) => RData::AAAA(AAAA(*ip)),
        Served::Record(RecordData::Cname(target)) => RData::CNAME(CNAME(wire_name(target)?)),
        Served::Record(RecordData::Ptr(target)) => RData::PTR(PTR(wire_name(target)?)),
        Served::Record(RecordData::Mx {
            preference,
            exchange,
        }) => RData::MX(MX::new(*preference, wire_name(exchange)?)),
        Served::Record(RecordData::Txt(text)) => RData::TXT(TXT::new(
            txt_strings(text).into_iter().map(str::to_string).collect(),
        )),
        Served::Ns => RData::NS(NS(wire_name(SERVER_NAME)?)),
        Served::Soa => {
            let _ = zone;
            RData::SOA(SOA::new(
                wire_name(SERVER_NAME)?,
                wire_name("hostmaster.mxfarm.test")?,
                1,
                3600,
                600,
                86400,
                ttl,
            ))
        }
    };
    Some(Record::from_rdata(wire_name(owner)?, ttl, rdata))
}
