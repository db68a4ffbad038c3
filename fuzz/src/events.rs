//! Journals built from fuzz bytes, for the views: a mutated JSON file mostly fails to
//! parse, while these reach the views' logic with every kind of event, on few hosts,
//! connections and addresses (so that events meet each other), with sequence numbers that
//! skip and repeat and times that go backwards, as a journal pieced together by hand may.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mxfarm::journal::{ClosedBy, Command, DnsReply, DnsTransport, DomainRecord, TlsOutcome};
use mxfarm::scenario::{Reply, Stage};
use mxfarm::{Event, EventKind};

/// At most this many events per input.
pub const MAX_EVENTS: usize = 2000;

const HOSTS: [&str; 3] = ["mx1", "mx2", "mx3"];
const ADDRESSES: [&str; 5] = ["", "a@x.test", "b@y.test", "B@Y.TEST", "c+1@y.test"];
const NAMES: [&str; 4] = ["c.test", "", "[192.0.2.1]", "ünï.test"];
const CLIENTS: [&str; 4] = [
    "192.0.2.1:1000",
    "192.0.2.2:1001",
    "198.51.100.1:25",
    "[2001:db8::1]:2000",
];
const CODES: [u16; 12] = [220, 221, 250, 251, 354, 421, 450, 451, 452, 500, 550, 554];

/// The fuzz bytes, read a choice at a time; zeros once they run out.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn pick<T: Copy>(&mut self, of: &[T]) -> T {
        of[self.below(of.len())]
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// Small numbers mostly; now and then any u64, the largest included.
    fn number(&mut self) -> u64 {
        match self.byte() {
            0xFF => u64::MAX,
            0xFE => u64::from_le_bytes(std::array::from_fn(|_| self.byte())),
            b => u64::from(b % 8),
        }
    }

    fn text(&mut self) -> String {
        self.pick(&ADDRESSES).to_string()
    }

    fn message_id(&mut self) -> Option<String> {
        match self.below(4) {
            0 => None,
            n => Some(format!("{n}@x.test")),
        }
    }
}

/// Reads `data` as a journal.
pub fn journal(data: &[u8]) -> Vec<Event> {
    let mut b = Bytes { data, at: 0 };
    let mut events = Vec::new();
    let (mut seq, mut ms) = (0u64, 0u64);
    while !b.done() && events.len() < MAX_EVENTS {
        seq = match b.below(16) {
            0 => seq,
            1 => seq.saturating_add(b.number()),
            2 => b.number(),
            _ => seq.saturating_add(1),
        };
        ms = match b.below(8) {
            0 => ms.saturating_sub(u64::from(b.byte()) * 60_000),
            1 => ms.saturating_add(u64::from(b.byte()) * 3_600_000),
            2 => b.number(),
            _ => ms.saturating_add(u64::from(b.byte()) * 1000),
        };
        let kind = kind(&mut b);
        events.push(Event {
            seq,
            // A file's `ms` can be any u64; as a Duration it is any number of millis.
            at: Duration::from_millis(ms),
            kind,
        });
    }
    events
}

fn kind(b: &mut Bytes) -> EventKind {
    let host: Arc<str> = b.pick(&HOSTS).into();
    let conn = b.number();
    match b.below(8) {
        0 => EventKind::FarmStarted {
            scenario: "fuzz".into(),
            domains: (0..b.below(3))
                .map(|d| DomainRecord {
                    name: format!("{d}.test"),
                    mx: (0..b.below(4))
                        .map(|_| (b.pick(&HOSTS).to_string(), u16::from(b.byte())))
                        .collect(),
                })
                .collect(),
            hostnames: HOSTS
                .iter()
                .map(|h| (h.to_string(), format!("{h}.fuzz.test")))
                .collect(),
        },
        1 => EventKind::ConnectionOpened {
            host,
            conn,
            client: b.pick(&CLIENTS).parse::<SocketAddr>().expect("an address"),
        },
        2 | 3 => {
            let command = command(b);
            EventKind::Command {
                host,
                conn,
                line: format!("{command:?}"),
                command,
            }
        }
        4 | 5 => EventKind::Reply {
            host,
            conn,
            stage: match b.below(Stage::ALL.len() + 1) {
                0 => None,
                n => Some(Stage::ALL[n - 1]),
            },
            reply: Reply {
                code: match b.byte() {
                    0 => u16::from(b.byte()) * 7,
                    _ => b.pick(&CODES),
                },
                status: b.flag().then(|| "4.2.0".to_string()),
                lines: (0..b.below(3)).map(|i| format!("line {i}")).collect(),
            },
            rule: b.flag().then(|| "host mx1 rule 1".into()),
            retry_after: b
                .flag()
                .then(|| Duration::from_millis(b.number().saturating_mul(60_000))),
            retry_after_told: b.flag(),
        },
        6 => EventKind::MessageAccepted {
            host,
            conn,
            id: b.number(),
            sender: b.text(),
            recipients: (0..b.below(4)).map(|_| b.text()).collect(),
            size: b.number(),
            message_id: b.message_id(),
            subject: b.flag().then(|| "hi".to_string()),
            tls: b.flag(),
        },
        _ => match b.below(5) {
            3 => EventKind::DnsQuery {
                client: b.pick(&CLIENTS).parse::<SocketAddr>().expect("an address"),
                by_farm: b.flag(),
                transport: if b.flag() {
                    DnsTransport::Udp
                } else {
                    DnsTransport::Tcp
                },
                name: format!("{}.test", b.below(3)),
                qtype: if b.flag() { "MX" } else { "A" }.into(),
                answer: [
                    DnsReply::Records,
                    DnsReply::Nodata,
                    DnsReply::Nxdomain,
                    DnsReply::Servfail,
                    DnsReply::Refused,
                    DnsReply::Formerr,
                    DnsReply::Truncated,
                    DnsReply::Dropped,
                    DnsReply::Held,
                ][b.below(9)],
                records: (0..b.below(3)).map(|_| b.text()).collect(),
                rule: b.flag().then(|| "dns rule 1".into()),
                delay: b.flag().then(|| Duration::from_millis(b.number())),
            },
            4 => EventKind::DnsCheck {
                host,
                conn,
                check: if b.flag() { "spf" } else { "ptr" }.into(),
                subject: b.text(),
                result: b.text(),
                took: Duration::from_millis(b.number()),
            },
            0 => EventKind::TlsHandshake {
                host,
                conn,
                outcome: if b.flag() {
                    TlsOutcome::Established {
                        version: "TLSv1_3".into(),
                        cipher: "TLS13_AES_128_GCM_SHA256".into(),
                        sni: b.flag().then(|| "mx1.test".into()),
                    }
                } else {
                    TlsOutcome::Failed {
                        error: "bad".into(),
                        aborted_by: closed_by(b),
                    }
                },
            },
            _ => EventKind::ConnectionClosed {
                host,
                conn,
                by: closed_by(b),
                reason: if b.flag() { "QUIT" } else { "timeout" }.into(),
            },
        },
    }
}

fn closed_by(b: &mut Bytes) -> ClosedBy {
    if b.flag() {
        ClosedBy::Client
    } else {
        ClosedBy::Farm
    }
}

fn command(b: &mut Bytes) -> Command {
    match b.below(14) {
        0 => Command::Ehlo {
            name: b.pick(&NAMES).into(),
        },
        1 => Command::Helo {
            name: b.pick(&NAMES).into(),
        },
        2 | 3 => Command::Mail {
            sender: b.text(),
            size: b.flag().then(|| b.number()),
        },
        4 | 5 => Command::Rcpt {
            recipient: b.text(),
        },
        6 => Command::Data,
        7 => Command::Bdat {
            size: b.number(),
            last: b.flag(),
        },
        8 | 9 => Command::EndOfData {
            size: b.number(),
            message_id: b.message_id(),
            digest: b.flag().then(|| format!("{:016x}", b.byte())),
        },
        10 => Command::Rset,
        11 => Command::Quit,
        12 => Command::Starttls,
        _ => match b.below(4) {
            0 => Command::Noop,
            1 => Command::Vrfy,
            2 => Command::Help,
            _ => Command::Other,
        },
    }
}
