//! The tables of a scenario file, from the top level down to a rule: their keys, what
//! each takes, and its doc line. Keys marked `custom` are read by the loader's own code
//! (lists of tables, references to resolve), through the names below.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use super::{Field, Table, TableId};
use crate::scenario::model::{
    CaptureLimits, Domain, Extensions, FarmLimits, Host, JournalLimits, Limits, MxRecord, Parsing,
    Scenario,
};
use crate::scenario::read::{Cx, Key, tree::Node, values};

/// The stages, as hints list them.
pub(crate) const STAGE_NAMES: &str =
    "connect, ehlo (or helo), starttls, mail, rcpt, data, end-of-data, rset, quit";

// Keys the loader reads itself, named once here.
pub(crate) const CAPTURE: &str = "capture";
pub(crate) const JOURNAL: &str = "journal";
pub(crate) const LIMITS: &str = "limits";
pub(crate) const DOMAIN: &str = "domain";
pub(crate) const HOST: &str = "host";
pub(crate) const RULESET: &str = "ruleset";
pub(crate) const REVERSE_DNS: &str = "reverse-dns";
pub(crate) const MX: &str = "mx";
pub(crate) const NULL_MX: &str = "null-mx";
pub(crate) const TXT: &str = "txt";
pub(crate) const RULESETS: &str = "rulesets";
pub(crate) const TLS: &str = "tls";
pub(crate) const RULE: &str = "rule";
pub(crate) const STAGE: &str = "stage";
pub(crate) const WHEN: &str = "when";
pub(crate) const THEN: &str = "then";
pub(crate) const HOSTNAME: &str = "hostname";
pub(crate) const NAME: &str = "name";
pub(crate) const LISTEN: &str = "listen";
pub(crate) const MODE: &str = "mode";
pub(crate) const VERSIONS: &str = "versions";
pub(crate) const CERT: &str = "cert";
pub(crate) const KEY: &str = "key";

pub(crate) fn root() -> &'static Table<Scenario> {
    static TABLE: LazyLock<Table<Scenario>> = LazyLock::new(|| {
        Table::new(
            TableId::Root,
            "The scenario: its name, the simulated domains and the MX hosts.",
            vec![
                Field::text(NAME, "\"aol\"", false, |s: &mut Scenario| &mut s.name)
                    .doc("a short name, shown in the summary and the journal")
                    .required(
                        "the scenario has no `name`",
                        "add a short name at the top of the file, like name = \"aol\"",
                    ),
                Field::text(
                    "description",
                    "\"What this farm plays\"",
                    true,
                    |s: &mut Scenario| &mut s.description,
                )
                .doc("one line saying what the farm plays"),
                Field::integer("seed", "7", (0, i64::MAX), None, |s: &mut Scenario| {
                    &mut s.seed
                })
                .doc("seeds every `chance` draw, so a run is repeatable"),
                Field::table(CAPTURE, capture, |s: &mut Scenario| &mut s.capture)
                    .doc("what the farm keeps of accepted mail"),
                Field::table(JOURNAL, journal, |s: &mut Scenario| &mut s.journal)
                    .doc("how many events the farm keeps"),
                Field::table(LIMITS, farm_limits, |s: &mut Scenario| &mut s.limits)
                    .doc("bounds on what all the hosts hold together"),
                Field::custom(DOMAIN, "[[domain]]", "a list of tables")
                    .doc("the simulated domains and their MX records"),
                Field::custom(HOST, "[[host]]", "a list of tables")
                    .doc("the MX hosts, each with its own address and rules"),
                Field::custom(RULESET, "[[ruleset]]", "a list of tables")
                    .doc("rules that hosts share by listing the rule set's name"),
                Field::custom(
                    REVERSE_DNS,
                    "{ \"192.0.2.1\" = \"mail.sender.test\" }",
                    "a table of addresses and names",
                )
                .doc("PTR names of client addresses, served by the farm's DNS and looked up by `ptr` and `fcrdns` conditions"),
                Field::custom(super::dns::DNS, "{ ... }", "a table")
                    .doc("the farm's DNS server: more records, names outside the zones, DNS faults"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn capture() -> &'static Table<CaptureLimits> {
    static TABLE: LazyLock<Table<CaptureLimits>> = LazyLock::new(|| {
        Table::new(
            TableId::Capture,
            "How much of the accepted mail the farm keeps in memory; the oldest goes first.",
            vec![
                Field::integer(
                    "max-messages",
                    "1000",
                    (0, i64::MAX),
                    None,
                    |c: &mut CaptureLimits| &mut c.max_messages,
                )
                .doc("messages kept at most"),
                Field::size("max-bytes", "\"64MiB\"", None, |c: &mut CaptureLimits| {
                    &mut c.max_bytes
                })
                .doc("bytes kept at most, over all messages"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn journal() -> &'static Table<JournalLimits> {
    static TABLE: LazyLock<Table<JournalLimits>> = LazyLock::new(|| {
        Table::new(
            TableId::Journal,
            "How many events the farm keeps in memory; when full, it drops the oldest tenth.",
            vec![
                Field::count(
                    "max-events",
                    "100000",
                    "the journal is what the API, logs and transcripts show",
                    |j: &mut JournalLimits| &mut j.max_events,
                )
                .doc("events kept at most (at least 16 are)"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn farm_limits() -> &'static Table<FarmLimits> {
    static TABLE: LazyLock<Table<FarmLimits>> = LazyLock::new(|| {
        Table::new(
            TableId::FarmLimits,
            "Bounds on what all the sessions of the farm hold together, whichever host they are on.",
            vec![
                Field::size(
                    "max-buffered-data",
                    "\"256MiB\"",
                    Some("no message could be received"),
                    |l: &mut FarmLimits| &mut l.max_buffered_data,
                )
                .doc("message content held by all sessions while it arrives; a DATA or BDAT that would go past it gets 452 4.3.1"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn domain() -> &'static Table<Domain> {
    static TABLE: LazyLock<Table<Domain>> = LazyLock::new(|| {
        Table::new(
            TableId::Domain,
            "A simulated mail domain and the hosts that receive its mail.",
            vec![
                Field::new(NAME, "\"aol.test\"", "a domain name", values::domain, String::clone, |d: &mut Domain| &mut d.name)
                    .doc("the domain, like aol.test")
                    .required(
                        "this [[domain]] has no `name`",
                        "add the simulated domain's name, like name = \"aol.test\"",
                    ),
                Field::custom(MX, "[{ host = \"mx1\", preference = 10 }]", "a list of MX records")
                    .doc("its MX records: hosts of this file with their preference (lower first); required unless `null-mx`"),
                Field::flag(NULL_MX, |d: &mut Domain| &mut d.null_mx)
                    .doc("the domain takes no mail: its one MX record is `0 .` (RFC 7505), instead of `mx`"),
                Field::new(TXT, "[\"v=spf1 ip4:192.0.2.0/24 -all\"]", "a string or a list", values::txt_records, |t: &Vec<String>| format!("{t:?}"), |d: &mut Domain| &mut d.txt)
                    .doc("TXT records of the domain itself, such as its SPF policy"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn mx() -> &'static Table<MxRecord> {
    static TABLE: LazyLock<Table<MxRecord>> = LazyLock::new(|| {
        let host = |cx: &mut Cx, key: Key, v: &Node| values::string(cx, key, v).map(str::to_string);
        Table::new(
            TableId::Mx,
            "One MX record of a domain.",
            vec![
                Field::new(
                    HOST,
                    "\"mx1\"",
                    "a host's name",
                    host,
                    String::clone,
                    |m: &mut MxRecord| &mut m.host,
                )
                .doc("the `name` of a [[host]] of this file")
                .required(
                    "this mx entry has no `host`",
                    "name one of the scenario's hosts, like { host = \"mx1\", preference = 10 }",
                ),
                Field::integer("preference", "10", (0, 65535), None, |m: &mut MxRecord| {
                    &mut m.preference
                })
                .doc("senders try lower preferences first, and spread over equal ones"),
            ],
        )
    });
    &TABLE
}

const PARSINGS: [(&str, Parsing); 2] = [("strict", Parsing::Strict), ("lenient", Parsing::Lenient)];
const PARSING_ALIASES: &[(&str, &str)] = &[("strictly", "strict"), ("loose", "lenient")];
const PARSING_EXPLAINED: &str = "`parsing` is strict (bare LF, parameters not advertised and STARTTLS arguments are refused, as big providers do) or lenient (all three are taken, as older servers do)";

pub(crate) fn host() -> &'static Table<Host> {
    static TABLE: LazyLock<Table<Host>> = LazyLock::new(|| {
        let show_addr = |a: &SocketAddr| format!("\"{a}\"");
        Table::new(
            TableId::Host,
            "One simulated MX host.",
            vec![
                Field::new(NAME, "\"mx1\"", "a name", values::identifier, String::clone, |h: &mut Host| &mut h.name)
                    .doc("what MX records, rule origins and the journal call it")
                    .required(
                        "this [[host]] has no `name`",
                        "add a name that MX records and the journal use, like name = \"mx1\"",
                    ),
                Field::new(LISTEN, "\"127.0.0.1:2525\"", "an address and port", values::listen, show_addr, |h: &mut Host| &mut h.listen)
                    .doc("where it listens; port 0 picks a free port")
                    .required(
                        "this [[host]] has no `listen` address",
                        "add the address and port it listens on, like listen = \"127.0.0.1:2525\" (port 0 picks a free port)",
                    ),
                Field::new(HOSTNAME, "\"mx1.aol.test\"", "a host name", values::hostname, String::clone, |h: &mut Host| &mut h.hostname)
                    .doc("the name in its greeting and EHLO reply, and its name in the farm's DNS (default: `<name>.mxfarm.test`)"),
                Field::new("address", "\"172.20.0.5\"", "an IP address", values::address, |a: &Option<IpAddr>| a.map_or(String::new(), |a| format!("\"{a}\"")), |h: &mut Host| &mut h.address)
                    .doc("the address the farm's DNS gives for its hostname (default: the listen address, unless that is 0.0.0.0 or ::)"),
                Field::text("greeting", "\"ESMTP ready\"", true, |h: &mut Host| &mut h.greeting)
                    .doc("the text after `220 <hostname> ` in the greeting"),
                Field::custom(RULESETS, "[\"common\"]", "a name or a list of names")
                    .doc("rule sets whose rules follow the host's own, in the order listed"),
                Field::custom(TLS, "\"valid\"", "a mode, or a table")
                    .doc("STARTTLS and the certificate presented (default: off, not offered)"),
                Field::table("extensions", extensions, |h: &mut Host| &mut h.extensions)
                    .doc("the EHLO extensions it advertises"),
                Field::table(LIMITS, limits, |h: &mut Host| &mut h.limits)
                    .doc("bounds on what it accepts"),
                Field::choice("parsing", "\"lenient\"", &PARSINGS, PARSING_ALIASES, PARSING_EXPLAINED, |h: &mut Host| &mut h.parsing)
                    .doc("strict: a bare LF is refused (521 5.5.2 and close in a command, 550 5.5.2 for a message), as are MAIL and RCPT parameters not advertised (555 5.5.4) and STARTTLS with an argument (501 5.5.4); lenient: all three are taken"),
                Field::custom(RULE, "[[host.rule]]", "a list of tables")
                    .doc("its own rules, tried in order before its rule sets'"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn tls() -> &'static Table<crate::scenario::model::TlsSettings> {
    static TABLE: LazyLock<Table<crate::scenario::model::TlsSettings>> = LazyLock::new(|| {
        Table::new(
            TableId::Tls,
            "A host's STARTTLS, written as a mode (tls = \"valid\") or as this table.",
            vec![
                Field::custom(MODE, "\"valid\"", "a name")
                    .doc("the certificate: valid, self-signed, expired, not-yet-valid, wrong-hostname, unknown-ca, or off (default in the table: valid)"),
                Field::custom(VERSIONS, "\"1.3\"", "a name")
                    .doc("the TLS versions accepted: 1.2, 1.3 or any (default: any)"),
                Field::custom(CERT, "\"certs/chain.pem\"", "a path")
                    .doc("a PEM certificate chain to present instead of the farm's (with mode valid)"),
                Field::custom(KEY, "\"certs/key.pem\"", "a path")
                    .doc("its PEM private key"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn extensions() -> &'static Table<Extensions> {
    static TABLE: LazyLock<Table<Extensions>> = LazyLock::new(|| {
        Table::new(
            TableId::Extensions,
            "The ESMTP extensions a host advertises; all are on by default.",
            vec![
                Field::flag("pipelining", |e: &mut Extensions| &mut e.pipelining)
                    .doc("PIPELINING (RFC 2920)"),
                Field::flag("size", |e: &mut Extensions| &mut e.size)
                    .doc("SIZE with the host's max-message-size (RFC 1870)"),
                Field::flag("8bitmime", |e: &mut Extensions| &mut e.eight_bit_mime)
                    .doc("8BITMIME (RFC 6152)"),
                Field::flag("enhancedstatuscodes", |e: &mut Extensions| {
                    &mut e.enhanced_status_codes
                })
                .doc("ENHANCEDSTATUSCODES (RFC 2034): off, the host's own replies have none"),
                Field::flag("smtputf8", |e: &mut Extensions| &mut e.smtputf8)
                    .doc("SMTPUTF8 (RFC 6531)"),
                Field::flag("chunking", |e: &mut Extensions| &mut e.chunking)
                    .doc("CHUNKING, for BDAT (RFC 3030)"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn limits() -> &'static Table<Limits> {
    static TABLE: LazyLock<Table<Limits>> = LazyLock::new(|| {
        Table::new(
            TableId::Limits,
            "Bounds on what one host accepts, so that no client can exhaust the farm.",
            vec![
                Field::count(
                    "max-connections",
                    "100",
                    "no client could ever connect",
                    |l: &mut Limits| &mut l.max_connections,
                )
                .doc("connections at once; one more gets 421 4.3.2"),
                Field::count(
                    "max-connections-per-client",
                    "50",
                    "no client could ever connect",
                    |l: &mut Limits| &mut l.max_connections_per_client,
                )
                .doc(
                    "connections at once from one client address; one more gets 421 4.7.0 \
                     (Postfix's smtpd_client_connection_count_limit)",
                ),
                Field::count(
                    "max-recipients",
                    "100",
                    "no message could have a recipient",
                    |l: &mut Limits| &mut l.max_recipients,
                )
                .doc("RCPTs per transaction, accepted or refused; one more gets 452 4.5.3, and past as many again each is also a protocol error"),
                Field::size(
                    "max-message-size",
                    "\"35MiB\"",
                    Some("no message could be sent"),
                    |l: &mut Limits| &mut l.max_message_size,
                )
                .doc("advertised with SIZE; a bigger message gets 552 5.3.4"),
                Field::count(
                    "max-line-length",
                    "1000",
                    "no command would fit",
                    |l: &mut Limits| &mut l.max_line_length,
                )
                .doc("bytes per command line; a longer one gets 500 5.5.2"),
                Field::count(
                    "max-errors",
                    "20",
                    "write 1 to close after the first error",
                    |l: &mut Limits| &mut l.max_errors,
                )
                .doc("protocol errors before 421 4.7.0 and a close"),
                Field::duration(
                    "command-timeout",
                    "\"5m\"",
                    Some("every client would time out at once"),
                    |l: &mut Limits| &mut l.command_timeout,
                )
                .doc(
                    "how long a whole command may take, from the reply before it to the end of \
                     its line (not per read); then 421 4.4.2",
                ),
                Field::duration(
                    "data-timeout",
                    "\"10m\"",
                    Some("every client would time out at once"),
                    |l: &mut Limits| &mut l.data_timeout,
                )
                .doc(
                    "how long a whole message's content may take: DATA from the 354 to the \
                     final dot, a BDAT chunk from its command to its last byte; then 421 4.4.2",
                ),
            ],
        )
    });
    &TABLE
}

/// What the loader keeps of a rule set while the hosts that list it are read.
#[derive(Debug, Default)]
pub(crate) struct RulesetDraft {
    pub name: String,
}

pub(crate) fn ruleset() -> &'static Table<RulesetDraft> {
    static TABLE: LazyLock<Table<RulesetDraft>> = LazyLock::new(|| {
        Table::new(
            TableId::Ruleset,
            "Rules that several hosts share.",
            vec![
                Field::new(
                    NAME,
                    "\"common\"",
                    "a name",
                    values::identifier,
                    String::clone,
                    |r: &mut RulesetDraft| &mut r.name,
                )
                .doc("what hosts list in their `rulesets`")
                .required(
                    "this [[ruleset]] has no `name`",
                    "add a name that hosts can list in their `rulesets`, like name = \"common\"",
                ),
                Field::custom(RULE, "[[ruleset.rule]]", "a list of tables")
                    .doc("its rules, in order"),
            ],
        )
    });
    &TABLE
}

/// The keys of a rule are all read by the loader: the stage first, since what the
/// conditions and the action may be depends on it.
pub(crate) fn rule() -> &'static Table<()> {
    static TABLE: LazyLock<Table<()>> = LazyLock::new(|| {
        Table::new(
            TableId::Rule,
            "{ stage, when, then }: at `stage`, if every condition holds, do `then`. Rules are tried in order; the first that matches decides.",
            vec![
                Field::custom(STAGE, "\"rcpt\"", "a stage")
                    .doc("the point of the conversation it decides")
                    .required(
                        "this rule has no `stage`",
                        "add the point of the conversation it decides, like stage = \"rcpt\"; the stages are connect, ehlo (or helo), starttls, mail, rcpt, data, end-of-data, rset, quit",
                    ),
                Field::custom(WHEN, "{ rcpt = \"full-*@aol.test\" }", "a table of conditions")
                    .doc("conditions that must all hold (none: always)"),
                Field::custom(THEN, "{ reply = \"452 4.2.2 Mailbox full\" }", "a table with one action")
                    .doc("what to do when it matches")
                    .required(
                        "this rule has no `then`: what to do when it matches",
                        "add an action, like then = { reply = \"451 4.7.1 Try again later\" } or then = { accept = true }",
                    ),
            ],
        )
    });
    &TABLE
}
