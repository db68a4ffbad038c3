//! The farm's DNS server, asked by a real resolver (hickory-resolver) over UDP and TCP:
//! every record type, null MX, negative answers, each fault, truncation and the journal.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{TokioResolver, net::NetError};
use mxfarm::journal::{DnsReply, DnsTransport, EventKind};
use mxfarm::{Farm, FarmOptions, scenario};

const SCENARIO: &str = r#"
name = "dns"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.aol.test"
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
hostname = "mx2.aol.test"
address = "192.0.2.2"
[[host]]
name = "mx6"
listen = "127.0.0.1:0"
hostname = "mx6.aol.test"
address = "2001:db8::6"

[[domain]]
name = "aol.test"
mx = [{ host = "mx1", preference = 5 }, { host = "mx2", preference = 10 }, { host = "mx6", preference = 10 }]
txt = ["v=spf1 ip4:192.0.2.0/24 -all"]

[[domain]]
name = "nomail.test"
null-mx = true

[reverse-dns]
"192.0.2.77" = "mail.sender.test"

[dns]
records = [
  "mail.sender.test A 192.0.2.77",
  "www.sender.test CNAME mail.sender.test",
  "long.sender.test TXT LONGTEXT",
]

[[dns.rule]]
when = { query = "servfail.aol.test" }
then = { answer = "servfail" }
[[dns.rule]]
when = { query = "gone.aol.test" }
then = { answer = "nxdomain" }
[[dns.rule]]
when = { query = "mx2.aol.test", type = "A" }
then = { answer = "empty" }
[[dns.rule]]
when = { query = "refused.aol.test" }
then = { answer = "refused" }
[[dns.rule]]
when = { query = "silent.aol.test" }
then = { answer = "drop" }
[[dns.rule]]
when = { query = "big.sender.test" }
then = { answer = "truncated" }
[[dns.rule]]
when = { query = "slow.sender.test" }
then = { delay = "8s" }
[[dns.rule]]
when = { query = "flaky.aol.test", type = "MX", attempt = "<=2" }
then = { answer = "servfail" }
"#;

/// The scenario with its long TXT record (over 255 bytes: several strings on the wire).
fn scenario_text() -> String {
    SCENARIO.replace(
        "LONGTEXT",
        &format!("v=spf1 {} -all", "ip4:192.0.2.1 ".repeat(30).trim()),
    )
}

async fn farm() -> Farm {
    farm_of(&scenario_text()).await
}

async fn farm_of(text: &str) -> Farm {
    let scenario = scenario::load_str("dns.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let options = FarmOptions::ephemeral().dns(SocketAddr::from(([127, 0, 0, 1], 0)));
    Farm::start_with(scenario, options)
        .await
        .expect("farm starts")
}

/// A resolver that asks only the farm, over the given protocols, without a cache (each
/// query reaches the server) and with one try.
fn resolver(addr: SocketAddr, protocols: &[ProtocolConfig]) -> TokioResolver {
    let connections = protocols
        .iter()
        .map(|p| {
            let mut c = ConnectionConfig::new(p.clone());
            c.port = addr.port();
            c
        })
        .collect();
    let ns = NameServerConfig::new(addr.ip(), true, connections);
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let options = builder.options_mut();
    options.cache_size = 0;
    options.attempts = 0;
    options.timeout = Duration::from_secs(2);
    builder.build().expect("resolver")
}

pub fn udp(addr: SocketAddr) -> TokioResolver {
    resolver(addr, &[ProtocolConfig::Udp])
}

fn tcp(addr: SocketAddr) -> TokioResolver {
    resolver(addr, &[ProtocolConfig::Tcp])
}

pub async fn records(
    r: &TokioResolver,
    name: &str,
    kind: RecordType,
) -> Result<Vec<String>, NetError> {
    let lookup = r.lookup(format!("{name}."), kind).await?;
    let mut out: Vec<String> = lookup
        .answers()
        .iter()
        .map(|rec| match &rec.data {
            RData::TXT(txt) => txt
                .txt_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
                .join(""),
            other => other.to_string(),
        })
        .collect();
    out.sort();
    Ok(out)
}

fn code(error: &NetError) -> Option<ResponseCode> {
    use hickory_resolver::net::DnsError;
    match error {
        NetError::Dns(DnsError::ResponseCode(code)) => Some(*code),
        NetError::Dns(DnsError::NoRecordsFound(no)) => Some(no.response_code),
        _ => None,
    }
}

#[tokio::test]
async fn every_record_type_over_udp_and_tcp() {
    let farm = farm().await;
    let addr = farm.dns_addr().expect("dns runs");
    let mx1 = farm.addr("mx1").ip().to_string();
    for r in [udp(addr), tcp(addr)] {
        assert_eq!(
            records(&r, "aol.test", RecordType::MX).await.unwrap(),
            ["10 mx2.aol.test.", "10 mx6.aol.test.", "5 mx1.aol.test."]
        );
        assert_eq!(
            records(&r, "mx1.aol.test", RecordType::A).await.unwrap(),
            std::slice::from_ref(&mx1)
        );
        assert_eq!(
            records(&r, "mx6.aol.test", RecordType::AAAA).await.unwrap(),
            ["2001:db8::6"]
        );
        assert_eq!(
            records(&r, "aol.test", RecordType::TXT).await.unwrap(),
            ["v=spf1 ip4:192.0.2.0/24 -all"]
        );
        let ptr = r
            .reverse_lookup("192.0.2.77".parse::<IpAddr>().unwrap())
            .await
            .unwrap();
        let names: Vec<String> = ptr.answers().iter().map(|a| a.data.to_string()).collect();
        assert_eq!(names, ["mail.sender.test."]);
        // mx2's own address has a PTR to its hostname (no other host shares it).
        assert_eq!(
            records(&r, "2.2.0.192.in-addr.arpa", RecordType::PTR)
                .await
                .unwrap(),
            ["mx2.aol.test."]
        );
        assert_eq!(
            records(&r, "www.sender.test", RecordType::A).await.unwrap(),
            ["192.0.2.77", "mail.sender.test."]
        );
        assert_eq!(
            records(&r, "nomail.test", RecordType::MX).await.unwrap(),
            ["0 ."]
        );
        let soa = records(&r, "aol.test", RecordType::SOA).await.unwrap();
        assert_eq!(soa.len(), 1);
        assert!(
            soa[0].starts_with("ns.mxfarm.test. hostmaster.mxfarm.test. 1"),
            "{soa:?}"
        );
        let long = records(&r, "long.sender.test", RecordType::TXT)
            .await
            .unwrap();
        assert!(
            long[0].len() > 255 && long[0].ends_with(" -all"),
            "{long:?}"
        );
    }
    farm.shutdown().await;
}

#[tokio::test]
async fn negative_answers_inside_and_outside_the_zones() {
    let farm = farm().await;
    let r = udp(farm.dns_addr().unwrap());
    let nx = records(&r, "nobody.aol.test", RecordType::A)
        .await
        .unwrap_err();
    assert_eq!(code(&nx), Some(ResponseCode::NXDomain), "{nx}");
    assert!(nx.is_nx_domain());
    // The name exists, with no record of this type: NODATA, not NXDOMAIN.
    let nodata = records(&r, "mx1.aol.test", RecordType::MX)
        .await
        .unwrap_err();
    assert_eq!(code(&nodata), Some(ResponseCode::NoError), "{nodata}");
    // Outside every zone: NXDOMAIN by default, never a recursive answer.
    let outside = records(&r, "example.com", RecordType::A).await.unwrap_err();
    assert_eq!(code(&outside), Some(ResponseCode::NXDomain), "{outside}");
    farm.shutdown().await;

    let refusing = farm_of(&format!(
        "{}\n",
        scenario_text().replace("[dns]\n", "[dns]\noutside-zones = \"refused\"\n")
    ))
    .await;
    let r = udp(refusing.dns_addr().unwrap());
    let refused = records(&r, "example.com", RecordType::A).await.unwrap_err();
    assert_eq!(code(&refused), Some(ResponseCode::Refused), "{refused}");
    // Names in the zones are still answered.
    assert_eq!(
        records(&r, "aol.test", RecordType::TXT)
            .await
            .unwrap()
            .len(),
        1
    );
    refusing.shutdown().await;
}

#[tokio::test]
async fn each_fault_as_a_resolver_sees_it() {
    let farm = farm().await;
    let r = udp(farm.dns_addr().unwrap());
    let servfail = records(&r, "servfail.aol.test", RecordType::MX)
        .await
        .unwrap_err();
    assert_eq!(code(&servfail), Some(ResponseCode::ServFail), "{servfail}");
    let nx = records(&r, "gone.aol.test", RecordType::A)
        .await
        .unwrap_err();
    assert!(nx.is_nx_domain(), "{nx}");
    // "mx2 has no A record": NODATA although the zone has one.
    let empty = records(&r, "mx2.aol.test", RecordType::A)
        .await
        .unwrap_err();
    assert_eq!(code(&empty), Some(ResponseCode::NoError), "{empty}");
    let refused = records(&r, "refused.aol.test", RecordType::A)
        .await
        .unwrap_err();
    assert_eq!(code(&refused), Some(ResponseCode::Refused), "{refused}");
    // The first two MX lookups of flaky.aol.test fail, the third gets the zone's answer.
    for _ in 0..2 {
        let e = records(&r, "flaky.aol.test", RecordType::MX)
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(ResponseCode::ServFail), "{e}");
    }
    let third = records(&r, "flaky.aol.test", RecordType::MX)
        .await
        .unwrap_err();
    assert_eq!(code(&third), Some(ResponseCode::NXDomain), "{third}");

    let journal = farm.journal();
    let answers: Vec<(String, DnsReply, Option<String>)> = journal
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DnsQuery {
                name, answer, rule, ..
            } => Some((name.clone(), *answer, rule.as_deref().map(str::to_string))),
            _ => None,
        })
        .collect();
    let expected = [
        ("servfail.aol.test", DnsReply::Servfail, Some("dns rule 1")),
        ("gone.aol.test", DnsReply::Nxdomain, Some("dns rule 2")),
        ("mx2.aol.test", DnsReply::Nodata, Some("dns rule 3")),
        ("refused.aol.test", DnsReply::Refused, Some("dns rule 4")),
        ("flaky.aol.test", DnsReply::Servfail, Some("dns rule 8")),
        ("flaky.aol.test", DnsReply::Servfail, Some("dns rule 8")),
        ("flaky.aol.test", DnsReply::Nxdomain, None),
    ];
    let expected: Vec<(String, DnsReply, Option<String>)> = expected
        .iter()
        .map(|(n, a, r)| (n.to_string(), *a, r.map(str::to_string)))
        .collect();
    assert_eq!(answers, expected);
    // A resolver asks with recursion desired: these are the sender's, not the farm's.
    assert!(
        !journal
            .iter()
            .any(|e| matches!(&e.kind, EventKind::DnsQuery { by_farm: true, .. }))
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_truncated_udp_answer_makes_the_resolver_ask_again_over_tcp() {
    let farm = farm_of(&format!(
        "{}\n",
        scenario_text().replace(
            "records = [\n",
            "records = [\n  \"big.sender.test A 192.0.2.9\",\n"
        )
    ))
    .await;
    let addr = farm.dns_addr().unwrap();
    let r = resolver(addr, &[ProtocolConfig::Udp, ProtocolConfig::Tcp]);
    assert_eq!(
        records(&r, "big.sender.test", RecordType::A).await.unwrap(),
        ["192.0.2.9"]
    );
    let transports: Vec<(DnsTransport, DnsReply)> = farm
        .journal()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DnsQuery {
                transport,
                answer,
                name,
                ..
            } if name == "big.sender.test" => Some((*transport, *answer)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transports,
        [
            (DnsTransport::Udp, DnsReply::Truncated),
            (DnsTransport::Tcp, DnsReply::Records)
        ]
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_dropped_query_times_the_resolver_out() {
    let farm = farm().await;
    let addr = farm.dns_addr().unwrap();
    // The resolver's own timeout, kept short: the farm never answers this one.
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![{
            let mut c = ConnectionConfig::new(ProtocolConfig::Udp);
            c.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![c])
        }]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().timeout = Duration::from_millis(200);
    builder.options_mut().attempts = 0;
    let r = builder.build().unwrap();
    let e = records(&r, "silent.aol.test", RecordType::A)
        .await
        .unwrap_err();
    assert_eq!(code(&e), None, "a timeout, not an answer: {e}");
    let dropped = farm
        .wait_for(|e| {
            matches!(
                &e.kind,
                EventKind::DnsQuery {
                    answer: DnsReply::Dropped,
                    ..
                }
            )
        })
        .await;
    assert!(
        matches!(&dropped.kind, EventKind::DnsQuery { name, rule: Some(rule), .. } if name == "silent.aol.test" && &**rule == "dns rule 5")
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_slow_answer_waits_on_the_farm_clock() {
    let farm = farm_of(&format!(
        "{}\n",
        scenario_text().replace(
            "records = [\n",
            "records = [\n  \"slow.sender.test A 192.0.2.8\",\n"
        )
    ))
    .await;
    let r = tcp(farm.dns_addr().unwrap());
    let lookup = tokio::spawn(async move { records(&r, "slow.sender.test", RecordType::A).await });
    // The query is journalled as held when it arrives; its answer waits for the farm's
    // clock to move 8 s.
    let held = farm
        .wait_for(|e| {
            matches!(
                &e.kind,
                EventKind::DnsQuery {
                    answer: DnsReply::Held,
                    ..
                }
            )
        })
        .await;
    farm.advance(Duration::from_secs(7));
    tokio::task::yield_now().await;
    let answered = |farm: &Farm| {
        farm.journal().into_iter().find(|e| {
            matches!(&e.kind, EventKind::DnsQuery { name, answer: DnsReply::Records, .. } if name == "slow.sender.test")
        })
    };
    assert!(answered(&farm).is_none(), "answered before its 8 s");
    farm.advance(Duration::from_secs(1));
    assert_eq!(lookup.await.unwrap().unwrap(), ["192.0.2.8"]);
    let answer = answered(&farm).expect("journalled");
    let seen = match &answer.kind {
        EventKind::DnsQuery { delay, .. } => Some((answer.at, *delay)),
        _ => None,
    };
    assert!(answer.seq > held.seq);
    let (at, delay) = seen.expect("journalled");
    assert_eq!(delay, Some(Duration::from_secs(8)));
    assert!(
        at >= held.at + Duration::from_secs(8),
        "answered at farm time {at:?}"
    );
    farm.shutdown().await;
}

/// The transcript tells what the sender asked the farm's DNS: an MX lookup that failed
/// explains why the message waited before its first attempt.
#[tokio::test]
async fn the_transcript_shows_the_senders_lookups() {
    let farm = farm_of(
        r#"
name = "dns-story"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.aol.test"
[[domain]]
name = "aol.test"
mx = [{ host = "mx1", preference = 10 }]
[[dns.rule]]
when = { query = "aol.test", type = "MX", time = "<10m" }
then = { answer = "servfail" }
"#,
    )
    .await;
    let r = udp(farm.dns_addr().unwrap());
    let failed = records(&r, "aol.test", RecordType::MX).await.unwrap_err();
    assert_eq!(code(&failed), Some(ResponseCode::ServFail));
    farm.advance(Duration::from_secs(600));
    assert_eq!(
        records(&r, "aol.test", RecordType::MX).await.unwrap(),
        ["10 mx1.aol.test."]
    );
    assert_eq!(
        records(&r, "mx1.aol.test", RecordType::A).await.unwrap(),
        ["127.0.0.1"]
    );
    let mut c = crate::support::greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.transaction(
        "me@sender.test",
        &["alice@aol.test"],
        "Subject: hi\r\n\r\nhello\r\n",
    )
    .await;
    c.quit().await;
    let text = farm
        .transcript()
        .render(mxfarm::render::Granularity::Seconds);
    insta::assert_snapshot!(text);
    farm.shutdown().await;
}

/// The shipped scenarios carry their MX layouts into the farm's DNS: aol's three hosts at
/// equal preference, gmail's five at 5 to 40, outlook's one name for its two hosts.
#[tokio::test]
async fn shipped_scenarios_answer_their_mx_layouts() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "aol",
            "aol.test",
            &[
                "1 mx-aol1.mail.gm0.yahoodns.test.",
                "1 mx-aol2.mail.gm0.yahoodns.test.",
                "1 mx-aol3.mail.gm0.yahoodns.test.",
            ],
        ),
        (
            "gmail",
            "gmail.test",
            &[
                "10 alt1.gmail-smtp-in.l.google.test.",
                "20 alt2.gmail-smtp-in.l.google.test.",
                "30 alt3.gmail-smtp-in.l.google.test.",
                "40 alt4.gmail-smtp-in.l.google.test.",
                "5 gmail-smtp-in.l.google.test.",
            ],
        ),
        (
            "outlook",
            "outlook.test",
            &["10 outlook-test.olc.protection.outlook.test."],
        ),
    ];
    for (name, domain, expected) in cases {
        let scenario = scenario::load_embedded(name).expect("shipped");
        let options = FarmOptions::ephemeral().dns(SocketAddr::from(([127, 0, 0, 1], 0)));
        let farm = Farm::start_with(scenario, options).await.expect("starts");
        let r = udp(farm.dns_addr().unwrap());
        assert_eq!(
            &records(&r, domain, RecordType::MX).await.unwrap(),
            expected,
            "{name}"
        );
        for exchange in *expected {
            let host = exchange
                .split_whitespace()
                .nth(1)
                .unwrap()
                .trim_end_matches('.');
            assert_eq!(
                records(&r, host, RecordType::A).await.unwrap(),
                ["127.0.0.1"],
                "{name} {host}"
            );
        }
        farm.shutdown().await;
    }
}

/// A DNS query by hand: id 0x1234, the opcode, one question for `aol.test` of `class`.
fn raw_query(opcode: u8, qtype: u16, class: u16) -> Vec<u8> {
    let mut q = vec![
        0x12,
        0x34,
        (opcode << 3) | 0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    for label in ["aol", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&class.to_be_bytes());
    q
}

/// Hostile or odd clients get an error answer or nothing, never a crash, and the server
/// goes on answering everyone else.
#[tokio::test]
async fn hostile_dns_clients_get_errors_and_the_server_goes_on() {
    use tokio::io::AsyncWriteExt;
    let farm = farm().await;
    let addr = farm.dns_addr().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage, a truncated header, a class other than IN, an UPDATE.
    socket.send_to(&[0xff; 40], addr).await.unwrap();
    socket.send_to(&[0x12], addr).await.unwrap();
    socket.send_to(&raw_query(0, 1, 3), addr).await.unwrap();
    assert_eq!(rcode_of_answer(&socket).await, 5, "REFUSED for class CH");
    socket.send_to(&raw_query(5, 6, 1), addr).await.unwrap();
    assert_eq!(rcode_of_answer(&socket).await, 4, "NOTIMP for an UPDATE");
    // A TCP client that sends a length prefix and garbage, then goes away.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x00, 0x10]).await.unwrap();
    tcp.write_all(&[0xee; 16]).await.unwrap();
    tcp.flush().await.unwrap();
    drop(tcp);
    // Everyone else is still answered.
    for r in [udp(addr), tcp_resolver(addr)] {
        assert_eq!(
            records(&r, "aol.test", RecordType::TXT)
                .await
                .unwrap()
                .len(),
            1
        );
    }
    let formerr = farm
        .journal()
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::DnsQuery {
                    answer: DnsReply::Formerr,
                    ..
                }
            )
        })
        .count();
    assert!(formerr >= 1, "{formerr} FORMERR/NOTIMP answers journalled");
    farm.shutdown().await;
}

/// The response code of the next answer with id 0x1234 (answers to the garbage, which
/// the server may send, are skipped).
async fn rcode_of_answer(socket: &tokio::net::UdpSocket) -> u8 {
    let mut buf = [0u8; 512];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        if n >= 12 && buf[0] == 0x12 && buf[1] == 0x34 {
            return buf[3] & 0x0f;
        }
    }
}

fn tcp_resolver(addr: SocketAddr) -> TokioResolver {
    tcp(addr)
}

/// `mxfarm dns` writes a TXT record over 255 bytes as the wire holds it: strings of at
/// most 255 bytes, which joined give the text (a zone file cannot hold a longer string,
/// and dig shows the same strings).
#[test]
fn the_zone_file_splits_a_long_txt_record_into_strings_of_255_bytes() {
    let scenario =
        scenario::load_str("dns.toml", &scenario_text()).unwrap_or_else(|e| panic!("{e}"));
    let text = mxfarm::dns::zone_file(&scenario);
    let line = text
        .lines()
        .find(|l| l.starts_with("long.sender.test.\t"))
        .unwrap_or_else(|| panic!("no long.sender.test line in\n{text}"));
    let data = line
        .split('\t')
        .nth(4)
        .expect("a zone-file line has five fields");
    let strings: Vec<&str> = data
        .strip_prefix('"')
        .and_then(|d| d.strip_suffix('"'))
        .expect("quoted")
        .split("\" \"")
        .collect();
    assert!(strings.len() > 1, "one string over 255 bytes: {line}");
    assert!(strings.iter().all(|s| s.len() <= 255), "{line}");
    let long = format!("v=spf1 {} -all", "ip4:192.0.2.1 ".repeat(30).trim());
    assert_eq!(strings.concat(), long);
}

/// One query as a plain UDP client sends it, built byte by byte (RFC 1035 4.1), so that
/// the test chooses what a resolver library would not: its EDNS buffer size, its class,
/// its type. Returns the answer datagram whole, however long it is.
async fn raw_udp_query(
    addr: SocketAddr,
    name: &str,
    qtype: u16,
    qclass: u16,
    edns_payload: Option<u16>,
) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    if edns_payload.is_some() {
        q[11] = 1; // ARCOUNT: the OPT record
    }
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("a short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    if let Some(payload) = edns_payload {
        // OPT: root name, type 41, class = the UDP payload size, TTL 0, no data.
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket.send_to(&q, addr).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    buf.truncate(n);
    buf
}

/// The answer's RCODE (the low 4 bits of its fourth byte) and its TC flag.
fn rcode_and_tc(answer: &[u8]) -> (u8, bool) {
    (answer[3] & 0x0f, answer[2] & 0x02 != 0)
}

/// A name with 60 A records: about 1 KB, more than 512 bytes.
fn many_records_scenario() -> String {
    let many: String = (1..=60)
        .map(|i| format!("  \"many.sender.test A 192.0.2.{i}\",\n"))
        .collect();
    scenario_text().replace("records = [\n", &format!("records = [\n{many}"))
}

/// RFC 6891 6.2.5: a UDP answer never exceeds the buffer size the query advertised (512
/// at least); what does not fit is cut and flagged TC, so the client asks over TCP.
#[tokio::test]
async fn a_udp_answer_fits_the_buffer_size_the_query_advertised() {
    let farm = farm_of(&many_records_scenario()).await;
    let addr = farm.dns_addr().unwrap();
    for advertised in [512u16, 800] {
        let answer = raw_udp_query(addr, "many.sender.test", 1, 1, Some(advertised)).await;
        assert!(
            answer.len() <= usize::from(advertised),
            "{} bytes for a client that takes {advertised}",
            answer.len()
        );
        assert_eq!(rcode_and_tc(&answer), (0, true), "cut and flagged TC");
    }
    // Without EDNS: 512 bytes (RFC 1035 4.2.1); with a large buffer, all of it at once.
    let answer = raw_udp_query(addr, "many.sender.test", 1, 1, None).await;
    assert!(answer.len() <= 512 && rcode_and_tc(&answer).1);
    let answer = raw_udp_query(addr, "many.sender.test", 1, 1, Some(4096)).await;
    assert!(answer.len() > 512 && !rcode_and_tc(&answer).1);
    farm.shutdown().await;
}

/// A query of another class (CHAOS `version.bind`, as scanners and `dig` send) is well
/// formed: REFUSED, as for a name the farm is not the authority for. FORMERR to an EDNS
/// query would tell resolvers that the farm cannot do EDNS.
#[tokio::test]
async fn a_query_of_another_class_is_refused_not_a_format_error() {
    let farm = farm().await;
    let addr = farm.dns_addr().unwrap();
    let answer = raw_udp_query(addr, "version.bind", 16, 3, Some(1232)).await;
    assert_eq!(rcode_and_tc(&answer), (5, false), "REFUSED (5)");
    farm.shutdown().await;
}

/// A zone transfer (AXFR, IXFR) is refused: the farm answers queries, it hands out no
/// zones (`mxfarm dns` prints them). A NODATA answer with the SOA would read as the start
/// of a transfer that then breaks off.
#[tokio::test]
async fn a_zone_transfer_is_refused() {
    let farm = farm().await;
    let addr = farm.dns_addr().unwrap();
    for xfr in [252u16, 251] {
        let answer = raw_udp_query(addr, "aol.test", xfr, 1, Some(1232)).await;
        assert_eq!(rcode_and_tc(&answer), (5, false), "type {xfr}: REFUSED (5)");
    }
    farm.shutdown().await;
}

/// `dns(127.0.0.1:0)` binds UDP and TCP on one free port even when the port UDP got
/// first is held by a TCP socket: here 4,000 TCP listeners hold about a seventh of the
/// ephemeral range, and each of 40 farms must still start (before, about one in seven
/// failed with "Address already in use", and so did parallel tests now and then).
#[tokio::test]
async fn port_zero_finds_a_port_free_for_both_udp_and_tcp() {
    let mut held = Vec::new();
    for _ in 0..4000 {
        match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => held.push(listener),
            Err(_) => break, // out of descriptors: hold what we have
        }
    }
    assert!(held.len() >= 1000, "only {} listeners", held.len());
    let minimal = "name = \"port\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n";
    for _ in 0..40 {
        let farm = farm_of(minimal).await;
        let addr = farm.dns_addr().expect("dns runs");
        assert_ne!(addr.port(), 0);
        farm.shutdown().await;
    }
    drop(held);
}

/// A sender that went back to mx1 because the farm's DNS gave mx2 no address is right:
/// the report blames it only when mx2 had an address to use.
#[tokio::test]
async fn the_report_does_not_blame_a_sender_for_a_host_dns_hid() {
    let story = |hidden: bool| {
        let rule = if hidden {
            "[[dns.rule]]\nwhen = { query = \"mx2.aol.test\", type = [\"A\", \"AAAA\"] }\nthen = { answer = \"empty\" }\n"
        } else {
            ""
        };
        format!(
            r#"
name = "hidden-mx"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.aol.test"
[[host.rule]]
stage = "connect"
when = {{ time = "<10m" }}
then = {{ reply = "421 4.3.2 Service not available" }}
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
hostname = "mx2.aol.test"
[[domain]]
name = "aol.test"
mx = [{{ host = "mx1", preference = 10 }}, {{ host = "mx2", preference = 20 }}]
{rule}"#
        )
    };
    for hidden in [true, false] {
        let farm = farm_of(&story(hidden)).await;
        let r = udp(farm.dns_addr().unwrap());
        // The sender looks up both hosts, as an MTA does, and gets mx2's address or not.
        records(&r, "aol.test", RecordType::MX).await.unwrap();
        records(&r, "mx1.aol.test", RecordType::A).await.unwrap();
        assert_eq!(
            records(&r, "mx2.aol.test", RecordType::A).await.is_ok(),
            !hidden
        );
        let mut c = mxfarm::testing::SmtpClient::connect(farm.addr("mx1")).await;
        c.expect_code(421).await;
        c.expect_closed().await;
        // Then mx1 again, later (not mx2), where it is accepted.
        farm.advance(Duration::from_secs(600));
        records(&r, "mx2.aol.test", RecordType::A).await.ok();
        let mut c = crate::support::greeted(farm.addr("mx1")).await;
        c.ehlo("client.test").await;
        c.transaction(
            "me@sender.test",
            &["alice@aol.test"],
            "Subject: hi\r\n\r\nhello\r\n",
        )
        .await;
        c.quit().await;
        let report = farm.report();
        let problems: Vec<String> = report.problems().iter().map(|f| f.text.clone()).collect();
        if hidden {
            assert!(
                problems.is_empty(),
                "blamed for avoiding a host without an address: {problems:?}"
            );
        } else {
            assert!(
                problems.iter().any(|p| p.contains("mx2")),
                "going back to mx1 when mx2 had an address is a failover problem: {problems:?}"
            );
        }
        farm.shutdown().await;
    }
}

/// A farm whose DNS address is taken starts nothing, and leaves the journal file of the
/// run before as it was.
#[tokio::test]
async fn a_dns_address_in_use_stops_the_start_and_keeps_the_old_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    std::fs::write(
        &path,
        "{\"event\":\"farm-started\",\"scenario\":\"before\",\"domains\":[],\"seq\":1,\"ms\":0}\n",
    )
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let scenario = scenario::load_str("dns.toml", &scenario_text()).unwrap();
    let options = FarmOptions::ephemeral()
        .dns(addr)
        .journal_file(mxfarm::journal::JournalFileOptions::new(&path));
    let error = Farm::start_with(scenario, options)
        .await
        .expect_err("the address is taken");
    assert!(
        error
            .to_string()
            .contains("the DNS server cannot listen on"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the old journal was replaced"
    );
}

/// One address holds at most 16 DNS connections over TCP: one more is closed at once,
/// and once it lets go, TCP queries are answered again.
#[tokio::test]
async fn dns_tcp_connections_are_bounded_per_address() {
    use tokio::io::AsyncReadExt;
    let farm = farm().await;
    let addr = farm.dns_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let r = tcp(addr);
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(held);
    drop(extra);
    let mut answered = false;
    for _ in 0..50 {
        if records(&r, "aol.test", RecordType::TXT).await.is_ok() {
            answered = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        answered,
        "TCP answered again once the connections were let go"
    );
    farm.shutdown().await;
}
