//! Rules: at a stage, if every condition holds, do the action.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::Reply;

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

    /// The stage's place in the conversation: connect first, quit last.
    pub fn rank(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// The codes of the stage's own positive replies, which a rule may send with its own
    /// text (none at `ehlo`, whose positive reply lists the host's extensions).
    pub fn positive_codes(self) -> &'static [u16] {
        match self {
            Stage::Connect | Stage::Starttls => &[220],
            Stage::Ehlo => &[],
            Stage::Data => &[354],
            Stage::Quit => &[221],
            Stage::Rcpt => &[250, 251],
            Stage::Mail | Stage::EndOfData | Stage::Rset => &[250],
        }
    }

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
    /// What the farm's DNS says of the client's PTR name (looked up for real, through the
    /// farm's DNS server, so DNS rules apply to the lookup).
    Ptr(PtrCheck),
    /// Forward-confirmed reverse DNS of the client: a PTR name whose A/AAAA records lead
    /// back to the client's address.
    Fcrdns(DnsCheck),
    /// What the EHLO/HELO name resolves to, against the client's address.
    HeloDns(HeloDnsCheck),
    /// The SPF result (RFC 7208) of the sender's domain for the client's address, one of
    /// these; evaluated through the farm's DNS.
    Spf(Vec<SpfOutcome>),
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
    /// The lookup failed for now (SERVFAIL, or no answer): neither missing nor present.
    TempError,
}

/// A check that passes, fails, or cannot be made for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsCheck {
    Pass,
    Fail,
    TempError,
}

/// What the EHLO/HELO name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeloDnsCheck {
    /// Its A/AAAA records include the client's address (or it is the client's address
    /// literal).
    Match,
    /// It resolves, but not to the client's address.
    Mismatch,
    /// It has no A/AAAA record (NXDOMAIN or none of those types).
    Missing,
    /// The lookup failed for now.
    TempError,
}

/// An SPF result, RFC 7208 section 2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfOutcome {
    Pass,
    Fail,
    Softfail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl SpfOutcome {
    pub const NAMES: &'static [(&'static str, SpfOutcome)] = &[
        ("pass", SpfOutcome::Pass),
        ("fail", SpfOutcome::Fail),
        ("softfail", SpfOutcome::Softfail),
        ("neutral", SpfOutcome::Neutral),
        ("none", SpfOutcome::None),
        ("temperror", SpfOutcome::TempError),
        ("permerror", SpfOutcome::PermError),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("none", |(n, _)| *n)
    }
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
    /// Triplets kept at most, and as many whitelisted clients; when full, the one seen
    /// longest ago is forgotten, and is greylisted again at its next attempt (1,000,000).
    pub max_entries: usize,
    /// The deferral; its text may hold `{remaining}` (seconds left) and the other reply
    /// placeholders.
    pub reply: Reply,
}

impl Default for Greylist {
    /// postgrey 1.37's defaults, and the reply Postfix sends for it.
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(300),
            retry_window: Duration::from_secs(2 * 86_400),
            expiry: Duration::from_secs(35 * 86_400),
            whitelist_after: Some(5),
            scope: StateScope::Shared,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            normalize_sender: true,
            max_entries: 1_000_000,
            reply: Reply::new(
                450,
                Some("4.2.0"),
                "<{recipient}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html",
            ),
        }
    }
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
    /// What the limit remembers at most: event times in a sliding window (at most
    /// `limit` per key), keys in fixed windows. When full, the key used longest ago is
    /// forgotten, and counts from zero again (1,000,000).
    pub max_entries: usize,
}

impl Default for RateLimit {
    /// Per client, in sliding windows, shared by all hosts, deferring with a 451. The
    /// `limit` and `window` have no default: a scenario must give them.
    fn default() -> Self {
        Self {
            per: RateKey::Client,
            limit: 0,
            window: Duration::ZERO,
            sliding: true,
            scope: StateScope::Shared,
            reply: Reply::new(451, Some("4.7.1"), "Rate limit exceeded, try again later"),
            close: false,
            max_entries: 1_000_000,
        }
    }
}

/// At most `limit` simultaneous connections per client key to this host.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    pub per: RateKey,
    pub limit: u32,
    pub reply: Reply,
}

impl Default for Concurrency {
    /// Per client, closing with a 421 as Postfix's anvil does. The `limit` has no
    /// default: a scenario must give it.
    fn default() -> Self {
        Self {
            per: RateKey::Client,
            limit: 0,
            reply: Reply::new(
                421,
                Some("4.7.0"),
                "{hostname} Error: too many connections from {client}",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
