//! Events of every kind, with every kind of text in them, for the property tests of the
//! journal's encodings (in memory and as a file's lines).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::event::{ClosedBy, Command, DnsReply, DnsTransport, EventKind};
use crate::scenario::{Reply, Stage};

pub(crate) fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
            |(ip, port, flow, scope)| {
                SocketAddr::V6(SocketAddrV6::new(ip.into(), port, flow, scope))
            }
        ),
    ]
}

pub(crate) fn host() -> impl Strategy<Value = Arc<str>> {
    prop_oneof![Just("mx1"), Just("mx2"), Just("ünï"), Just("q\"h")].prop_map(Arc::from)
}

pub(crate) fn command() -> impl Strategy<Value = (String, Command)> {
    // Quotes, backslashes and control bytes too: what the file's lines must escape.
    let text = r#"[ -~]{0,12}|\PC{0,8}|[a"\\\x00-\x1f\x7fé]{0,6}"#;
    prop_oneof![
        (text, text).prop_map(|(pre, name)| (format!("EHLO {pre}{name}"), Command::Ehlo { name })),
        (text, any::<bool>()).prop_map(|(name, spelt)| (
            if spelt {
                format!("HELO {name}")
            } else {
                String::from("HELO x")
            },
            Command::Helo { name }
        )),
        (text, proptest::option::of(any::<u64>()), any::<bool>()).prop_map(
            |(sender, size, with_size)| (
                match size.filter(|_| with_size) {
                    Some(size) => format!("MAIL FROM:<{sender}> SIZE={size}"),
                    None => format!("MAIL FROM:<{sender}>"),
                },
                Command::Mail { sender, size }
            )
        ),
        (text, any::<bool>()).prop_map(|(recipient, inside)| (
            if inside {
                format!("RCPT TO:<{recipient}>")
            } else {
                "RCPT".into()
            },
            Command::Rcpt { recipient }
        )),
        (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(size, last, spelt)| (
            match (spelt, last) {
                (true, true) => format!("BDAT {size} LAST"),
                (true, false) => format!("BDAT {size}"),
                (false, _) => "BDAT".into(),
            },
            Command::Bdat { size, last }
        )),
        (
            any::<u64>(),
            proptest::option::of(text),
            proptest::option::of(text),
            prop_oneof![Just("."), Just("")],
        )
            .prop_map(|(size, message_id, digest, line)| (
                line.into(),
                Command::EndOfData {
                    size,
                    message_id,
                    digest
                }
            )),
        (
            prop_oneof![
                Just((Command::Data, "DATA")),
                Just((Command::Rset, "RSET")),
                Just((Command::Noop, "NOOP")),
                Just((Command::Vrfy, "VRFY x")),
                Just((Command::Help, "HELP")),
                Just((Command::Quit, "QUIT")),
                Just((Command::Starttls, "STARTTLS")),
                Just((Command::Other, "XYZZY")),
            ],
            any::<bool>()
        )
            .prop_map(|((c, line), spelt)| (if spelt { line } else { "X" }.into(), c)),
    ]
}

pub(crate) fn duration() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n))
}

pub(crate) fn kind() -> impl Strategy<Value = EventKind> {
    let text = r#"\PC{0,20}|[a"\\\x00-\x1f\x7fé]{0,8}"#;
    prop_oneof![
        (host(), any::<u64>(), addr()).prop_map(|(host, conn, client)| {
            EventKind::ConnectionOpened { host, conn, client }
        }),
        (host(), any::<u64>(), command()).prop_map(|(host, conn, (line, command))| {
            EventKind::Command {
                host,
                conn,
                line,
                command,
            }
        }),
        (
            host(),
            any::<u64>(),
            proptest::option::of(proptest::sample::select(Stage::ALL.to_vec())),
            (
                any::<u16>(),
                proptest::option::of(text),
                proptest::collection::vec(text, 0..4)
            ),
            proptest::option::of(prop_oneof![Just("host mx1 rule 2"), Just("dns rule 1")]),
            proptest::option::of(duration()),
            any::<bool>(),
        )
            .prop_map(
                |(host, conn, stage, (code, status, lines), rule, retry_after, told)| {
                    EventKind::Reply {
                        host,
                        conn,
                        stage,
                        reply: Reply {
                            code,
                            status,
                            lines,
                        },
                        rule: rule.map(Arc::from),
                        retry_after,
                        retry_after_told: told,
                    }
                }
            ),
        (
            host(),
            any::<u64>(),
            any::<u64>(),
            text,
            proptest::collection::vec(text, 0..5),
            any::<u64>(),
            (
                proptest::option::of(text),
                proptest::option::of(text),
                any::<bool>()
            ),
        )
            .prop_map(
                |(host, conn, id, sender, recipients, size, (message_id, subject, tls))| {
                    EventKind::MessageAccepted {
                        host,
                        conn,
                        id,
                        sender,
                        recipients,
                        size,
                        message_id,
                        subject,
                        tls,
                    }
                }
            ),
        (host(), any::<u64>(), any::<bool>(), text).prop_map(|(host, conn, farm, reason)| {
            EventKind::ConnectionClosed {
                host,
                conn,
                by: if farm {
                    ClosedBy::Farm
                } else {
                    ClosedBy::Client
                },
                reason,
            }
        }),
        (addr(), text, proptest::option::of(duration())).prop_map(|(client, name, delay)| {
            EventKind::DnsQuery {
                client,
                by_farm: false,
                transport: DnsTransport::Udp,
                name,
                qtype: "MX".into(),
                answer: DnsReply::Nxdomain,
                records: vec!["MX 1 mx1.aol.test.".into()],
                rule: None,
                delay,
            }
        }),
        duration().prop_map(|by| EventKind::ClockAdvanced { by }),
    ]
}
