//! The validated scenario: the stricter types that `validate` produces from the TOML as
//! written. Everything here is known to be consistent (hosts exist, addresses are unique,
//! replies are well formed), so the engine never has to re-check a scenario at run time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

/// A whole farm: its domains and hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seeds every random draw (`chance` conditions), so a run is repeatable.
    pub seed: u64,
    pub capture: CaptureLimits,
    pub journal: JournalLimits,
    pub domains: Vec<Domain>,
    pub hosts: Vec<Host>,
    /// PTR names of client addresses, for `ptr` conditions (and later the DNS server).
    pub reverse_dns: std::collections::BTreeMap<std::net::IpAddr, String>,
}

impl Scenario {
    /// The host with this name, if the scenario has one.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// How much of the accepted mail the farm keeps in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureLimits {
    pub max_messages: usize,
    pub max_bytes: u64,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How many journal events the farm keeps before dropping the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLimits {
    pub max_events: usize,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            max_events: 100_000,
        }
    }
}

/// A simulated mail domain and its MX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub mx: Vec<MxRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// The `name` of a host of this scenario.
    pub host: String,
    pub preference: u16,
}

/// One simulated MX host.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub listen: SocketAddr,
    pub hostname: String,
    /// Text after `220 <hostname> ` in the greeting.
    pub greeting: String,
    pub extensions: Extensions,
    pub limits: Limits,
    /// STARTTLS: whether it is offered, and with which certificate.
    pub tls: TlsSettings,
    /// The host's own rules followed by those of its rule sets, in the order they are tried.
    pub rules: Arc<[Rule]>,
}

/// The ESMTP extensions a host advertises in its EHLO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub size: bool,
    pub eight_bit_mime: bool,
    pub enhanced_status_codes: bool,
    pub smtputf8: bool,
    pub chunking: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            pipelining: true,
            size: true,
            eight_bit_mime: true,
            enhanced_status_codes: true,
            smtputf8: true,
            chunking: true,
        }
    }
}

/// A host's STARTTLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub mode: TlsMode,
    pub versions: TlsVersions,
    /// A certificate chain and key (PEM files) to use instead of a generated one; only
    /// with `TlsMode::Valid`.
    pub files: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Which certificate a host presents, or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// STARTTLS is not advertised.
    #[default]
    Off,
    /// Signed by the farm's CA, for the host's hostname and address.
    Valid,
    /// Self-signed, for the host's hostname.
    SelfSigned,
    /// Signed by the farm's CA, but expired.
    Expired,
    /// Signed by the farm's CA, but valid only from a date in the future.
    NotYetValid,
    /// Signed by the farm's CA, for another name.
    WrongHostname,
    /// Signed by a CA nobody trusts (not the farm's).
    UnknownCa,
}

impl TlsMode {
    /// The name used in scenario files and the startup summary.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Valid => "valid",
            TlsMode::SelfSigned => "self-signed",
            TlsMode::Expired => "expired",
            TlsMode::NotYetValid => "not-yet-valid",
            TlsMode::WrongHostname => "wrong-hostname",
            TlsMode::UnknownCa => "unknown-ca",
        }
    }
}

/// The TLS protocol versions a host accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    #[default]
    Any,
    Only12,
    Only13,
}

/// Bounds on what one host accepts, so that no client can exhaust the farm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_recipients: usize,
    pub max_message_size: u64,
    pub max_line_length: usize,
    pub max_errors: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100,
            max_recipients: 100,
            max_message_size: 35 * 1024 * 1024,
            max_line_length: 1000,
            max_errors: 20,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// The point of an SMTP conversation at which a rule is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Connect,
    Ehlo,
    Starttls,
    Mail,
    Rcpt,
    Data,
    EndOfData,
    Rset,
    Quit,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Connect,
        Stage::Ehlo,
        Stage::Starttls,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::EndOfData,
        Stage::Rset,
        Stage::Quit,
    ];

    /// The name used in scenario files and transcripts.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Ehlo => "ehlo",
            Stage::Starttls => "starttls",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::EndOfData => "end-of-data",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
        }
    }

    /// Parses a stage name as written in a scenario (`helo` is a synonym of `ehlo`).
    pub fn parse(name: &str) -> Option<Stage> {
        match name {
            "helo" => Some(Stage::Ehlo),
            _ => Stage::ALL.into_iter().find(|s| s.as_str() == name),
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{ stage, when, then }`: at `stage`, if every condition holds, do `then`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub stage: Stage,
    pub when: Vec<Condition>,
    pub then: Action,
    /// Where the rule came from, e.g. `host mx1 rule 2` or `ruleset common rule 1`, so that
    /// the journal can say which rule produced a reply.
    pub origin: Arc<str>,
}

/// One condition of a rule; a rule's conditions combine with AND.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The client's address is in one of these networks (a single IP is a /32 or /128).
    Client(Vec<IpNet>),
    /// The EHLO/HELO name matches one of these globs.
    Helo(Vec<Glob>),
    /// The sender matches one of these patterns.
    Sender(Vec<AddressPattern>),
    /// The recipient matches one of these patterns.
    Recipient(Vec<AddressPattern>),
    /// The message (or its declared SIZE) is bigger than this many bytes.
    SizeAbove(u64),
    /// The message (or its declared SIZE) is smaller than this many bytes.
    SizeBelow(u64),
    /// The attempt number counted per `per` lies in `range`.
    Attempt {
        per: AttemptKey,
        range: AttemptRange,
    },
    /// A draw from the farm's seeded generator is below this probability.
    Chance(f64),
    /// Less than `within` has passed since the first attempt counted per `per`: a quota
    /// that clears after a time, or the warm-up of a new client IP.
    FirstAttemptWithin { per: AttemptKey, within: Duration },
    /// Farm time lies in this range: a host that is down for a while.
    Time(TimeRange),
    /// The host's own connection number (1 for the first connection it accepted) lies in
    /// the range: a host that is down for its first N connections.
    Connection(AttemptRange),
    /// The number of this transaction within its connection (1 for the first MAIL):
    /// messages per connection.
    Message(AttemptRange),
    /// What the scenario's reverse-DNS table says of the client.
    Ptr(PtrCheck),
    /// Whether the EHLO/HELO name is a fully qualified domain name (has a dot, is not an
    /// address literal).
    HeloFqdn(bool),
    /// Whether the session is encrypted (STARTTLS completed) at this point.
    Tls(bool),
}

/// A half-open range of farm time, `from <= t < until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Duration,
    /// `None`: open-ended.
    pub until: Option<Duration>,
}

impl TimeRange {
    pub fn contains(&self, t: Duration) -> bool {
        self.from <= t && self.until.is_none_or(|until| t < until)
    }
}

/// A reverse-DNS check against the scenario's `[reverse-dns]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtrCheck {
    /// The client's address has no PTR name.
    Missing,
    /// It has one.
    Present,
    /// It has none, or one that differs from the EHLO/HELO name.
    MismatchesHelo,
}

/// A case-insensitive glob (`*` and `?`), kept with its source text for display.
#[derive(Debug, Clone)]
pub struct Glob {
    pub text: String,
    pub matcher: wildmatch::WildMatch,
}

impl Glob {
    pub fn new(text: &str) -> Self {
        let lower = text.to_ascii_lowercase();
        Self {
            matcher: wildmatch::WildMatch::new(&lower),
            text: text.to_string(),
        }
    }

    /// Whether `value` matches, ignoring ASCII case.
    pub fn matches(&self, value: &str) -> bool {
        if value.bytes().any(|b| b.is_ascii_uppercase()) {
            self.matcher.matches(&value.to_ascii_lowercase())
        } else {
            self.matcher.matches(value)
        }
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// How a `mail` or `rcpt` condition names addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum AddressPattern {
    /// `<>`: the null sender of bounces.
    Null,
    /// `@domain`: any address at exactly this domain (stored lowercase, without the `@`).
    Domain(String),
    /// An exact address or a glob.
    Glob(Glob),
}

impl AddressPattern {
    /// Whether the address (empty for the null sender) matches.
    pub fn matches(&self, address: &str) -> bool {
        match self {
            AddressPattern::Null => address.is_empty(),
            AddressPattern::Domain(domain) => address
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
            AddressPattern::Glob(glob) => !address.is_empty() && glob.matches(address),
        }
    }
}

/// What an `attempt` condition counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptKey {
    Client,
    Sender,
    Recipient,
    Triplet,
}

/// An inclusive range of attempt numbers (`max` = `u32::MAX` means open-ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRange {
    pub min: u32,
    pub max: u32,
}

impl AttemptRange {
    pub fn contains(&self, n: u32) -> bool {
        self.min <= n && n <= self.max
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Wait this long before doing `kind` (a tarpit).
    pub delay: Option<Duration>,
    pub kind: ActionKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// The stage's normal positive reply.
    Accept,
    /// Send this reply; close afterwards if `close` (always for 421).
    Reply { reply: Reply, close: bool },
    /// Close the connection without a reply.
    Close,
    /// Send nothing; close after this long unless the client closes first.
    Hang(Duration),
    /// Close at once with a TCP reset, as a host whose service is down.
    Reset,
    /// At `end-of-data`: keep the message, then close without the 250, so the sender
    /// cannot know it arrived and sends it again.
    LoseReply,
    /// Greylisting; a triplet that has waited long enough passes on to the next rules.
    Greylist(Arc<Greylist>),
    /// A rate limit counted at the rule's stage; within the limit, on to the next rules.
    RateLimit(Arc<RateLimit>),
    /// A limit on simultaneous connections per client (at `connect`).
    Concurrency(Arc<Concurrency>),
    /// At `starttls`: how the TLS handshake goes wrong.
    TlsFault(TlsFault),
    /// At `ehlo`: accept, but leave STARTTLS out of this EHLO reply.
    HideStarttls,
}

/// Ways a STARTTLS handshake fails, all after `220 Ready to start TLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFault {
    /// Close the connection right after the 220.
    CloseAfterReady,
    /// Read the ClientHello, answer with a fatal handshake_failure alert, close.
    Alert,
    /// Read the ClientHello, then close without a word.
    CloseMidHandshake,
    /// Answer the ClientHello with bytes that are not TLS.
    Garbage,
    /// Read the ClientHello, then send nothing; close after this long.
    Hang(Duration),
}

/// Whether stateful behaviour is shared by all hosts or kept per host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateScope {
    /// One state for the whole farm, like a greylist database all MX hosts share.
    Shared,
    /// Each host keeps its own: what a sender experiences depends on the MX it picks.
    Host,
}

/// Greylisting with postgrey's semantics; every default is postgrey 1.37's.
#[derive(Debug, Clone, PartialEq)]
pub struct Greylist {
    /// How long a new triplet must wait before a retry passes (300 s).
    pub delay: Duration,
    /// A first retry later than this after first-seen starts over (2 days).
    pub retry_window: Duration,
    /// Entries not seen for this long are forgotten (35 days).
    pub expiry: Duration,
    /// A client IP that passed this many times (at most one per hour counts) skips
    /// greylisting from then on; `None` disables it (5).
    pub whitelist_after: Option<u32>,
    pub scope: StateScope,
    /// The client network of the triplet: /24 and /64 by default; 32 and 128 mean the
    /// exact address.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Strip `+extension`, BATV `prvs=` tags and digit runs (VERP) from the sender.
    pub normalize_sender: bool,
    /// The deferral; its text may hold `{remaining}` (seconds left) and the other reply
    /// placeholders.
    pub reply: Reply,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The client's IP address.
    Client,
    /// The client's /24 (IPv4) or /64 (IPv6) network.
    ClientNet,
    Sender,
    Recipient,
}

/// At most `limit` events (connections at `connect`, messages at `mail`/`data`/`end-of-data`,
/// recipients at `rcpt`) per `window` for each key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub per: RateKey,
    pub limit: u32,
    pub window: Duration,
    /// Sliding window (the last `window`), or fixed windows starting at farm time 0.
    pub sliding: bool,
    pub scope: StateScope,
    pub reply: Reply,
    /// Close after the reply (a 421 always closes).
    pub close: bool,
}

/// At most `limit` simultaneous connections per client key to this host.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    pub per: RateKey,
    pub limit: u32,
    pub reply: Reply,
}

/// An SMTP reply: a code, an optional enhanced status code, and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reply {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, status: Option<&str>, text: impl Into<String>) -> Self {
        Self {
            code,
            status: status.map(str::to_string),
            lines: vec![text.into()],
        }
    }

    /// Parses `"CODE [X.Y.Z] text"`, where `\n` in the text starts another line.
    /// Returns why it is not a reply otherwise, phrased for a scenario author.
    pub fn parse(text: &str) -> Result<Reply, String> {
        let text = text.trim_end_matches(['\r', '\n']);
        let (code, rest) = match text.split_once(' ') {
            Some((code, rest)) => (code, rest),
            None => (text, ""),
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "a reply starts with a three-digit code, not {code:?}"
            ));
        }
        let code: u16 = code.parse().map_err(|_| "bad reply code".to_string())?;
        if !(200..=599).contains(&code) {
            return Err(format!("reply code {code} is outside 200-599"));
        }
        let (status, rest) = match rest.split_once(' ') {
            Some((first, rest)) if is_enhanced_status(first) => (Some(first.to_string()), rest),
            _ if is_enhanced_status(rest) => (Some(rest.to_string()), ""),
            _ => (None, rest),
        };
        if let Some(status) = &status {
            let class = status.as_bytes()[0];
            let expected = code.to_string().as_bytes()[0];
            if class != expected {
                return Err(format!(
                    "enhanced status {status} does not match the class of code {code} (write {}{})",
                    expected as char,
                    &status[1..]
                ));
            }
        }
        let lines: Vec<String> = rest.split('\n').map(|l| l.trim_end().to_string()).collect();
        if lines
            .iter()
            .any(|l| l.bytes().any(|b| b.is_ascii_control() && b != b'\t'))
        {
            return Err("a reply's text cannot hold control characters".to_string());
        }
        Ok(Reply {
            code,
            status,
            lines,
        })
    }

    /// The reply with each `{name}` in its text replaced by `lookup(name)`; names that
    /// `lookup` does not know stay as written. Cheap when there is no placeholder.
    pub fn fill(&self, lookup: impl Fn(&str) -> Option<String>) -> Reply {
        if !self.lines.iter().any(|l| l.contains('{')) {
            return self.clone();
        }
        let lines = self
            .lines
            .iter()
            .map(|line| {
                let mut out = String::with_capacity(line.len());
                let mut rest = line.as_str();
                while let Some(open) = rest.find('{') {
                    out.push_str(&rest[..open]);
                    let after = &rest[open + 1..];
                    match after
                        .find('}')
                        .and_then(|close| lookup(&after[..close]).map(|value| (value, close)))
                    {
                        Some((value, close)) => {
                            out.push_str(&value);
                            rest = &after[close + 1..];
                        }
                        None => {
                            out.push('{');
                            rest = after;
                        }
                    }
                }
                out.push_str(rest);
                out
            })
            .collect();
        Reply {
            code: self.code,
            status: self.status.clone(),
            lines,
        }
    }

    /// A 421 reply tells the client the server is closing the connection (RFC 5321 3.8).
    pub fn closes_connection(&self) -> bool {
        self.code == 421
    }

    /// The reply as it is written on the wire, CRLF-terminated lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(&three_digits(self.code));
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(status) = &self.status {
                out.extend_from_slice(status.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply text on one line (lines joined with a space), for logs and transcripts.
    pub fn one_line(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(status) = &self.status {
            s.push(' ');
            s.push_str(status);
        }
        for line in &self.lines {
            if !line.is_empty() {
                s.push(' ');
                s.push_str(line);
            }
        }
        s
    }
}

/// Reply codes are validated to 200-599, so three ASCII digits always suffice.
fn three_digits(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

/// `X.Y.Z` with X in 2, 4, 5 and Y, Z of at most three digits (RFC 3463).
pub fn is_enhanced_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_with_and_without_status() {
        let r = Reply::parse("452 4.2.2 Mailbox full").unwrap();
        assert_eq!(r.code, 452);
        assert_eq!(r.status.as_deref(), Some("4.2.2"));
        assert_eq!(r.lines, vec!["Mailbox full"]);

        let r = Reply::parse("421 Service not available").unwrap();
        assert_eq!(r.status, None);
        assert_eq!(r.one_line(), "421 Service not available");
    }

    #[test]
    fn writes_multi_line_replies_with_status_on_every_line() {
        let r = Reply::parse("421 4.7.28 Our system has detected\nan unusual rate.").unwrap();
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "421-4.7.28 Our system has detected\r\n421 4.7.28 an unusual rate.\r\n"
        );
    }

    #[test]
    fn rejects_bad_codes_and_mismatched_status() {
        assert!(Reply::parse("199 too low").is_err());
        assert!(Reply::parse("600 too high").is_err());
        assert!(Reply::parse("45 short").is_err());
        assert!(Reply::parse("451 5.7.1 mismatch").is_err());
    }

    #[test]
    fn fills_placeholders_and_leaves_unknown_ones() {
        let r =
            Reply::parse("450 4.2.0 <{recipient}>: Greylisted for {remaining}s {other}").unwrap();
        let filled = r.fill(|name| match name {
            "recipient" => Some("a@b.test".into()),
            "remaining" => Some("300".into()),
            _ => None,
        });
        assert_eq!(
            filled.one_line(),
            "450 4.2.0 <a@b.test>: Greylisted for 300s {other}"
        );
    }

    #[test]
    fn address_patterns_match_as_documented() {
        let domain = AddressPattern::Domain("aol.test".into());
        assert!(domain.matches("Alice@AOL.test"));
        assert!(!domain.matches("alice@sub.aol.test"));
        let glob = AddressPattern::Glob(Glob::new("full-*@aol.test"));
        assert!(glob.matches("FULL-bob@aol.test"));
        assert!(!glob.matches("bob@aol.test"));
        assert!(AddressPattern::Null.matches(""));
        assert!(!AddressPattern::Null.matches("a@b.test"));
        assert!(!glob.matches(""));
    }
}
