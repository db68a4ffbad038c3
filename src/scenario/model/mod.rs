//! The validated scenario: the stricter types that the loader produces from the TOML as
//! written. Everything here is known to be consistent (hosts exist, addresses are unique,
//! replies are well formed), so the engine never has to re-check a scenario at run time.
//! The defaults of every optional key are these types' `Default`s.
//!
//! - this file: the scenario, its domains and hosts, their limits and TLS settings;
//! - [`rule`]: stages, rules, conditions and actions;
//! - [`reply`]: SMTP replies as scenarios write them.

mod describe;
mod dns;
mod reply;
mod rule;

pub use dns::*;
pub use reply::*;
pub use rule::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A whole farm: its domains and hosts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seeds every random draw (`chance` conditions), so a run is repeatable.
    pub seed: u64,
    pub capture: CaptureLimits,
    pub journal: JournalLimits,
    pub limits: FarmLimits,
    pub domains: Vec<Domain>,
    pub hosts: Vec<Host>,
    /// PTR names of client addresses: records of the farm's DNS, which `ptr` and
    /// `fcrdns` conditions look up.
    pub reverse_dns: std::collections::BTreeMap<std::net::IpAddr, String>,
    /// The farm's DNS: extra records, names outside the zones, fault rules.
    pub dns: DnsSettings,
    /// The TOML it was loaded from, as written: what the control API's `GET /scenario`
    /// gives back (empty for a scenario built in code).
    pub source_text: std::sync::Arc<str>,
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

/// Bounds on what all the sessions of a farm hold together, whichever host they are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FarmLimits {
    /// Message content that sessions hold while it arrives (DATA and BDAT), in bytes,
    /// over all sessions: each host's `max-message-size` bounds one message, and this
    /// bounds the sum, since many clients at once could otherwise each hold one.
    pub max_buffered_data: u64,
}

impl Default for FarmLimits {
    fn default() -> Self {
        Self {
            max_buffered_data: 256 * 1024 * 1024,
        }
    }
}

/// A simulated mail domain and its MX records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Domain {
    pub name: String,
    pub mx: Vec<MxRecord>,
    /// `MX 0 .` (RFC 7505): the domain takes no mail, and senders bounce at once.
    pub null_mx: bool,
    /// TXT records of the domain itself, such as its SPF policy.
    pub txt: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// The `name` of a host of this scenario.
    pub host: String,
    pub preference: u16,
}

impl Default for MxRecord {
    fn default() -> Self {
        Self {
            host: String::new(),
            preference: 10,
        }
    }
}

/// One simulated MX host.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub listen: SocketAddr,
    pub hostname: String,
    /// The address the farm's DNS gives for `hostname` (A or AAAA) when it is not the
    /// listen address: a host that listens on `0.0.0.0` in a container.
    pub address: Option<std::net::IpAddr>,
    /// Text after `220 <hostname> ` in the greeting.
    pub greeting: String,
    pub extensions: Extensions,
    pub limits: Limits,
    /// How strictly it reads what clients send.
    pub parsing: Parsing,
    /// STARTTLS: whether it is offered, and with which certificate.
    pub tls: TlsSettings,
    /// The host's own rules followed by those of its rule sets, in the order they are tried.
    pub rules: Arc<[Rule]>,
}

impl Default for Host {
    /// A host as an empty `[[host]]` describes it, but for its name and address, which a
    /// scenario must give (its hostname is then `<name>.mxfarm.test`).
    fn default() -> Self {
        Self {
            name: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hostname: String::new(),
            address: None,
            greeting: "ESMTP mxfarm".to_string(),
            extensions: Extensions::default(),
            limits: Limits::default(),
            parsing: Parsing::default(),
            tls: TlsSettings::default(),
            rules: Arc::from(Vec::new()),
        }
    }
}

/// How strictly a host reads what clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parsing {
    /// As big providers have since the 2023 SMTP smuggling reports: a bare LF (one
    /// without its CR) ends the connection in a command and refuses the message in
    /// content; MAIL and RCPT take only the parameters of extensions the EHLO reply
    /// advertised; STARTTLS takes no argument.
    #[default]
    Strict,
    /// As older servers: a bare LF ends a command line and stays in content as sent
    /// (only CRLF.CRLF ends DATA, even so); parameters are taken whether advertised or
    /// not; arguments of STARTTLS are ignored.
    Lenient,
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
    pub const ALL: [TlsMode; 7] = [
        TlsMode::Valid,
        TlsMode::Off,
        TlsMode::SelfSigned,
        TlsMode::Expired,
        TlsMode::NotYetValid,
        TlsMode::WrongHostname,
        TlsMode::UnknownCa,
    ];

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
    /// Connections at once from one client address (Postfix's
    /// `smtpd_client_connection_count_limit`), so that one sender, or slow clients from one
    /// address, cannot take every slot of the host.
    pub max_connections_per_client: usize,
    pub max_recipients: usize,
    pub max_message_size: u64,
    pub max_line_length: usize,
    pub max_errors: usize,
    /// How long one command may take as a whole: from just before the reply that precedes
    /// it goes out to the end of its line, however many reads that takes (not per read, so
    /// that a client trickling a byte at a time cannot keep it open).
    pub command_timeout: Duration,
    /// How long one message's content may take as a whole: DATA from just before the 354
    /// goes out to the final dot; each BDAT chunk from its command line to its last byte.
    pub data_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100,
            max_connections_per_client: 50,
            max_recipients: 100,
            max_message_size: 35 * 1024 * 1024,
            max_line_length: 1000,
            max_errors: 20,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
        }
    }
}
