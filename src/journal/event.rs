//! What the journal records: one [`Event`] per thing that happened, with its sequence
//! number and farm time. These types are also the journal file's format (JSON lines).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::{Reply, Stage};

/// One thing that happened in the farm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Farm-wide, strictly increasing, starting at 1, with no gaps: a gap in the events
    /// someone holds means events were dropped (see [`crate::journal::gaps`]).
    pub seq: u64,
    /// Farm time since the farm started (including `advance`); never less than the time
    /// of an event with a lower `seq`. Milliseconds in JSON.
    #[serde(
        rename = "ms",
        serialize_with = "crate::millis::serialize",
        deserialize_with = "crate::millis::deserialize"
    )]
    pub at: Duration,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Every variant about a connection names the host and the farm-wide
/// connection number, so that events of interleaved connections can be told apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventKind {
    /// The farm started: what it plays, so that a journal file explains itself (MX
    /// preferences for transcripts, without the scenario file).
    FarmStarted {
        scenario: String,
        domains: Vec<DomainRecord>,
        /// Each host's name and its hostname (what the farm's DNS gives an address for),
        /// so that a report can tell a host whose address a sender could not look up.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hostnames: Vec<(String, String)>,
    },
    /// A client connected to a host.
    ConnectionOpened {
        host: Arc<str>,
        conn: u64,
        client: SocketAddr,
    },
    /// The client sent a command line (the DATA content itself is not journalled).
    Command {
        host: Arc<str>,
        conn: u64,
        /// The line as sent, without CRLF, with control bytes escaped and cut at 512 bytes.
        line: String,
        #[serde(flatten)]
        command: Command,
    },
    /// The farm sent a reply.
    Reply {
        host: Arc<str>,
        conn: u64,
        /// The stage the reply decided, if it answered a stage that rules can decide.
        #[serde(skip_serializing_if = "Option::is_none")]
        stage: Option<Stage>,
        reply: Reply,
        /// The rule that produced the reply (`host mx1 rule 2`), if one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<Arc<str>>,
        /// For a deferral that clears after a known time (greylisting, a quota for a
        /// while): how long until a retry can pass. Lets a report spot early retries.
        #[serde(
            rename = "retry_after_ms",
            skip_serializing_if = "Option::is_none",
            with = "crate::millis::optional",
            default
        )]
        retry_after: Option<Duration>,
        /// Whether the reply's text told the client that time: only then is a retry
        /// before it the sender's mistake.
        #[serde(skip_serializing_if = "std::ops::Not::not", default)]
        retry_after_told: bool,
    },
    /// The farm accepted a message: recorded before the client sees the 250.
    MessageAccepted {
        host: Arc<str>,
        conn: u64,
        /// The farm-wide message number, also in the `queued as` reply.
        id: u64,
        sender: String,
        recipients: Vec<String>,
        size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// Whether the message arrived over TLS.
        tls: bool,
    },
    /// The connection ended.
    ConnectionClosed {
        host: Arc<str>,
        conn: u64,
        by: ClosedBy,
        reason: String,
    },
    /// A STARTTLS handshake ended, well or badly.
    TlsHandshake {
        host: Arc<str>,
        conn: u64,
        #[serde(flatten)]
        outcome: TlsOutcome,
    },
    /// A session looked something up through the farm's DNS for a rule: the client's
    /// PTR name, FCrDNS, the EHLO name, or the sender's SPF.
    DnsCheck {
        host: Arc<str>,
        conn: u64,
        /// `ptr`, `fcrdns`, `helo-dns` or `spf`.
        check: String,
        /// What was checked: the client address, the EHLO name, the sender.
        subject: String,
        /// `found mail.sender.test`, `missing`, `pass`, `temperror`...
        result: String,
        /// How long the lookups took, on the farm's clock: the session waited that long.
        #[serde(
            rename = "took_ms",
            serialize_with = "crate::millis::serialize",
            deserialize_with = "crate::millis::deserialize"
        )]
        took: Duration,
    },
    /// The farm's scenario was replaced while it ran (`Farm::replace_scenario`, the API's
    /// `PUT /scenario`): what it plays from now on, as `farm-started` says it. Views take
    /// each domain's MX records and each host's hostname from the latest event that names
    /// them.
    ScenarioReplaced {
        scenario: String,
        domains: Vec<DomainRecord>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hostnames: Vec<(String, String)>,
        /// Whether what the stateful rules learnt was kept (else it starts afresh).
        state_kept: bool,
    },
    /// Farm time was moved forward by hand ([`Farm::advance`](crate::Farm::advance), the
    /// API's `POST /clock/advance`, `mxfarm ctl advance`): the event's time is the time
    /// after the jump, so a transcript can tell a jump from a sender that waited.
    ClockAdvanced {
        #[serde(
            rename = "by_ms",
            serialize_with = "crate::millis::serialize",
            deserialize_with = "crate::millis::deserialize"
        )]
        by: Duration,
    },
    /// State was reset by hand ([`Farm::reset`](crate::Farm::reset), `POST /reset`).
    /// With `journal`, the views of the journal start again after this event: the
    /// farm's memory drops what came before, and a journal file, which keeps it, is read
    /// from here on too.
    Reset {
        /// What the stateful rules learnt (greylist, rates, attempt counts).
        policy: bool,
        journal: bool,
        /// The captured messages.
        messages: bool,
    },
    /// The farm's DNS answered a query (or, for `answer = "drop"`, decided not to):
    /// recorded when the answer went out, so a slow answer has the time it arrived.
    DnsQuery {
        /// Who asked: a sender's resolver, or the farm itself (see `by_farm`).
        client: SocketAddr,
        /// The farm's own lookup, for a rule's `ptr`, `fcrdns`, `helo-dns` or `spf` (it
        /// asks without recursion, which a sender's stub resolver never does).
        #[serde(skip_serializing_if = "std::ops::Not::not", default)]
        by_farm: bool,
        transport: DnsTransport,
        /// Lower case, without the final dot.
        name: String,
        /// `MX`, `A`, `TXT`... or the type's number for one without a name.
        #[serde(rename = "type")]
        qtype: String,
        /// What the asker got.
        answer: DnsReply,
        /// The answer's records as zone-file data (`MX 1 mx1.aol.test.`), at most a few.
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        records: Vec<String>,
        /// The `[[dns.rule]]` that decided (`dns rule 1`), if one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<Arc<str>>,
        /// How long the answer was held back by a rule's `delay`.
        #[serde(
            rename = "delay_ms",
            skip_serializing_if = "Option::is_none",
            with = "crate::millis::optional",
            default
        )]
        delay: Option<Duration>,
    },
}

/// How a DNS query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsTransport {
    Udp,
    Tcp,
}

/// What a DNS query got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsReply {
    /// NOERROR with records.
    Records,
    /// NOERROR without records of that type (NODATA).
    Nodata,
    Nxdomain,
    Servfail,
    Refused,
    /// A request the server could not read, or not a query (FORMERR, NOTIMP).
    Formerr,
    /// Over UDP, an empty answer with the TC bit set.
    Truncated,
    /// No answer at all.
    Dropped,
    /// Not answered yet: a rule holds the answer back for its `delay` (journalled when
    /// the query arrives; the answer follows as an event of its own).
    Held,
}

impl DnsReply {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsReply::Records => "records",
            DnsReply::Nodata => "no records (NODATA)",
            DnsReply::Nxdomain => "NXDOMAIN",
            DnsReply::Servfail => "SERVFAIL",
            DnsReply::Refused => "REFUSED",
            DnsReply::Formerr => "FORMERR",
            DnsReply::Truncated => "truncated (TC)",
            DnsReply::Dropped => "no answer",
            DnsReply::Held => "held back",
        }
    }
}

/// How a TLS handshake ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum TlsOutcome {
    Established {
        /// e.g. `TLSv1_3`
        version: String,
        /// e.g. `TLS13_AES_256_GCM_SHA384`
        cipher: String,
        /// The server name the client asked for (SNI), if it sent one.
        #[serde(skip_serializing_if = "Option::is_none")]
        sni: Option<String>,
    },
    Failed {
        error: String,
        aborted_by: ClosedBy,
    },
}

impl EventKind {
    /// The host and connection the event belongs to, if any.
    pub fn connection(&self) -> Option<(&str, u64)> {
        match self {
            EventKind::ConnectionOpened { host, conn, .. }
            | EventKind::Command { host, conn, .. }
            | EventKind::Reply { host, conn, .. }
            | EventKind::MessageAccepted { host, conn, .. }
            | EventKind::ConnectionClosed { host, conn, .. }
            | EventKind::TlsHandshake { host, conn, .. }
            | EventKind::DnsCheck { host, conn, .. } => Some((host, *conn)),
            EventKind::FarmStarted { .. }
            | EventKind::ScenarioReplaced { .. }
            | EventKind::DnsQuery { .. }
            | EventKind::ClockAdvanced { .. }
            | EventKind::Reset { .. } => None,
        }
    }
}

/// A simulated domain and its MX records, as the journal states them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub name: String,
    /// (host name, preference)
    pub mx: Vec<(String, u16)>,
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClosedBy {
    Client,
    Farm,
}

/// A command as the farm understood it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "UPPERCASE")]
pub enum Command {
    Ehlo {
        name: String,
    },
    Helo {
        name: String,
    },
    Mail {
        /// Empty for the null sender `<>`.
        sender: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    Rcpt {
        recipient: String,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    Starttls,
    /// The end of message content: the final dot after DATA (`line` is `.`), or the
    /// last BDAT chunk read in full (`line` is empty). The content itself is not
    /// journalled, but what tells a message from another is: a sender that retries sends
    /// the same Message-ID and the same content.
    #[serde(rename = "END-OF-DATA")]
    EndOfData {
        size: u64,
        /// The `Message-ID` header, without angle brackets, if the message has one.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        message_id: Option<String>,
        /// The XXH3-64 hash of the content as received, 16 hex digits as `xxhsum -H3`
        /// prints it (none when the message was too big to keep).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        digest: Option<String>,
    },
    /// Anything else: unknown, unsupported or malformed.
    Other,
}

/// A [`Command`] whose parts are borrowed from where they are (the session's parsed
/// line): what the journal encodes and writes, so that journalling a command copies
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandRef<'a> {
    Ehlo {
        name: &'a str,
    },
    Helo {
        name: &'a str,
    },
    Mail {
        sender: &'a str,
        size: Option<u64>,
    },
    Rcpt {
        recipient: &'a str,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    Starttls,
    EndOfData {
        size: u64,
        message_id: Option<&'a str>,
        digest: Option<&'a str>,
    },
    Other,
}

impl Command {
    pub(crate) fn borrowed(&self) -> CommandRef<'_> {
        match self {
            Command::Ehlo { name } => CommandRef::Ehlo { name },
            Command::Helo { name } => CommandRef::Helo { name },
            Command::Mail { sender, size } => CommandRef::Mail {
                sender,
                size: *size,
            },
            Command::Rcpt { recipient } => CommandRef::Rcpt { recipient },
            Command::Data => CommandRef::Data,
            Command::Bdat { size, last } => CommandRef::Bdat {
                size: *size,
                last: *last,
            },
            Command::Rset => CommandRef::Rset,
            Command::Noop => CommandRef::Noop,
            Command::Vrfy => CommandRef::Vrfy,
            Command::Help => CommandRef::Help,
            Command::Quit => CommandRef::Quit,
            Command::Starttls => CommandRef::Starttls,
            Command::EndOfData {
                size,
                message_id,
                digest,
            } => CommandRef::EndOfData {
                size: *size,
                message_id: message_id.as_deref(),
                digest: digest.as_deref(),
            },
            Command::Other => CommandRef::Other,
        }
    }
}

impl CommandRef<'_> {
    pub(crate) fn to_owned_command(self) -> Command {
        let own = str::to_string;
        match self {
            CommandRef::Ehlo { name } => Command::Ehlo { name: own(name) },
            CommandRef::Helo { name } => Command::Helo { name: own(name) },
            CommandRef::Mail { sender, size } => Command::Mail {
                sender: own(sender),
                size,
            },
            CommandRef::Rcpt { recipient } => Command::Rcpt {
                recipient: own(recipient),
            },
            CommandRef::Data => Command::Data,
            CommandRef::Bdat { size, last } => Command::Bdat { size, last },
            CommandRef::Rset => Command::Rset,
            CommandRef::Noop => Command::Noop,
            CommandRef::Vrfy => Command::Vrfy,
            CommandRef::Help => Command::Help,
            CommandRef::Quit => Command::Quit,
            CommandRef::Starttls => Command::Starttls,
            CommandRef::EndOfData {
                size,
                message_id,
                digest,
            } => Command::EndOfData {
                size,
                message_id: message_id.map(own),
                digest: digest.map(own),
            },
            CommandRef::Other => Command::Other,
        }
    }
}

/// Makes a client's command line safe to keep and print: no CR/LF, control bytes escaped,
/// at most 512 bytes (a hostile client may send megabytes of garbage).
impl EventKind {
    /// Whether it says what the farm plays (`farm-started`, `scenario-replaced`): the
    /// journal keeps the first and the latest of these however full it gets, and views
    /// read the MX records from them.
    pub fn describes_the_farm(&self) -> bool {
        matches!(
            self,
            EventKind::FarmStarted { .. } | EventKind::ScenarioReplaced { .. }
        )
    }
}

pub fn sanitize_line(line: &[u8]) -> String {
    sanitized(line).into_owned()
}

/// The same, borrowed from `line` when nothing needed changing (nearly always).
pub(crate) fn sanitized(line: &[u8]) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 512;
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = line.len() > MAX;
    let line = &line[..line.len().min(MAX)];
    // What clients send is printable ASCII almost always: copied as it is.
    if !cut
        && printable_ascii(line)
        && let Ok(ascii) = std::str::from_utf8(line)
    {
        return ascii.into();
    }
    let mut out = String::with_capacity(line.len());
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        out.push_str("...");
    }
    out.into()
}

/// Whether every byte is printable ASCII (space to `~`). Sixteen bytes at a time without
/// an early exit inside them, which the compiler vectorizes: every command line of every
/// client passes here, and a byte-by-byte loop was 3 % of the instructions per RCPT.
fn printable_ascii(bytes: &[u8]) -> bool {
    fn printable(chunk: &[u8]) -> bool {
        !chunk
            .iter()
            .fold(false, |bad, &b| bad | !(0x20..0x7f).contains(&b))
    }
    let (chunks, rest) = bytes.as_chunks::<16>();
    chunks.iter().all(|chunk| printable(chunk)) && printable(rest)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Printable ASCII is space to `~`, whatever the length and wherever a byte
        /// outside it is.
        #[test]
        fn printable_ascii_is_space_to_tilde(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let expected = bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
            prop_assert_eq!(printable_ascii(&bytes), expected);
        }
    }

    /// Every byte value, at every place of lines of every length up to three chunks, is
    /// found when it is not printable (random bytes are almost never all printable).
    #[test]
    fn one_unprintable_byte_is_found_anywhere() {
        for len in 1..48 {
            for at in 0..len {
                for byte in 0..=u8::MAX {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let expected = (0x20..0x7f).contains(&byte);
                    assert_eq!(
                        printable_ascii(&bytes),
                        expected,
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn sanitizes_hostile_lines() {
        assert_eq!(sanitize_line(b"EHLO x\r\n"), "EHLO x");
        assert_eq!(sanitize_line(b"A\x00B\xff\r\n"), "A\\u{0}B\\xff");
        let long = vec![b'a'; 2000];
        assert_eq!(sanitize_line(&long).len(), 515);
    }

    #[test]
    fn serializes_as_flat_json() {
        let event = Event {
            seq: 3,
            at: Duration::from_millis(1500),
            kind: EventKind::Command {
                host: "mx1".into(),
                conn: 1,
                line: "MAIL FROM:<>".into(),
                command: Command::Mail {
                    sender: String::new(),
                    size: None,
                },
            },
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"seq":3,"ms":1500,"event":"command","host":"mx1","conn":1,"line":"MAIL FROM:<>","verb":"MAIL","sender":""}"#
        );
    }
}
