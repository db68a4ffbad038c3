//! The tables of the farm's DNS: `[dns]`, its fault rules `[[dns.rule]]`, and their
//! `when` and `then`. The keys of a DNS rule's `when` are read by the loader (each is
//! a condition, kept in the order written); the rest are read through these rows.

use std::sync::LazyLock;
use std::time::Duration;

use super::{Field, Table, TableId};
use crate::scenario::model::{DnsAction, DnsAnswer, DnsSettings, OutsideZones};

pub(crate) const DNS: &str = "dns";
pub(crate) const RECORDS: &str = "records";
pub(crate) const QUERY: &str = "query";
pub(crate) const TYPE: &str = "type";
pub(crate) const CLIENT: &str = "client";
pub(crate) const TIME: &str = "time";
pub(crate) const ATTEMPT: &str = "attempt";
pub(crate) const CHANCE: &str = "chance";

const OUTSIDE: [(&str, OutsideZones); 2] = [
    ("nxdomain", OutsideZones::Nxdomain),
    ("refused", OutsideZones::Refused),
];
const OUTSIDE_EXPLAINED: &str = "`outside-zones` is nxdomain (the name does not exist, as a .test name is for any real resolver) or refused (the farm does not serve that zone)";
const ANSWER_EXPLAINED: &str = "`answer` is records (the zone's own answer), servfail, nxdomain, refused, empty (no records), drop (no answer at all: the resolver times out) or truncated (over UDP, an empty answer with the TC bit, so the resolver asks again over TCP)";

pub(crate) fn dns() -> &'static Table<DnsSettings> {
    static TABLE: LazyLock<Table<DnsSettings>> = LazyLock::new(|| {
        Table::new(
            TableId::Dns,
            "The farm's DNS server (`mxfarm run --dns ADDR`): it serves MX records from the domains, A/AAAA and PTR records of the hosts, PTR records from [reverse-dns], and these records; it never recurses.",
            vec![
                Field::choice(
                    "outside-zones",
                    "\"nxdomain\"",
                    &OUTSIDE,
                    &[("servfail", "refused")],
                    OUTSIDE_EXPLAINED,
                    |d: &mut DnsSettings| &mut d.outside_zones,
                )
                .doc("what a sender gets for a name outside every zone of the scenario: nxdomain or refused (the farm's own checks always find such a name missing)"),
                Field::duration(
                    "ttl",
                    "\"1m\"",
                    Some("a TTL of 0 lets no resolver cache anything, which real zones never do"),
                    |d: &mut DnsSettings| &mut d.ttl,
                )
                .doc("the TTL of every record, and of negative answers"),
                Field::custom(
                    RECORDS,
                    "[\"mail.sender.test A 192.0.2.1\"]",
                    "a list of record lines",
                )
                .doc("more records, one zone-file line each: NAME TYPE DATA, with type A, AAAA, CNAME, MX, PTR or TXT"),
                Field::custom(super::tables::RULE, "[[dns.rule]]", "a list of tables")
                    .doc("DNS faults, tried in order: the first rule that matches a query decides"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn rule() -> &'static Table<()> {
    static TABLE: LazyLock<Table<()>> = LazyLock::new(|| {
        Table::new(
            TableId::DnsRule,
            "{ when, then }: if every condition holds for a query, answer as `then` says.",
            vec![
                Field::custom(
                    super::tables::WHEN,
                    "{ query = \"aol.test\", type = \"MX\" }",
                    "a table of conditions",
                )
                .doc("conditions on the query that must all hold (none: every query)"),
                Field::custom(super::tables::THEN, "{ answer = \"servfail\" }", "a table")
                    .doc("the answer, and how long it takes")
                    .required(
                        "this DNS rule has no `then`: what to answer when it matches",
                        "add an answer, like then = { answer = \"servfail\" } or then = { delay = \"8s\" }",
                    ),
            ],
        )
    });
    &TABLE
}

pub(crate) fn when() -> &'static Table<()> {
    static TABLE: LazyLock<Table<()>> = LazyLock::new(|| {
        Table::new(
            TableId::DnsWhen,
            "Conditions on a query. Each must hold; a list matches any of its values.",
            vec![
                Field::custom(QUERY, "\"aol.test\"", "a glob or a list")
                    .doc("the query name matches (`*` and `?`, any case, no final dot)"),
                Field::custom(TYPE, "\"MX\"", "a type or a list")
                    .doc("the query type is one of these: A, AAAA, CNAME, MX, NS, PTR, SOA, TXT"),
                Field::custom(CLIENT, "\"192.0.2.0/24\"", "an address, a network or a list")
                    .doc("the address that asks is in one of these networks (the farm itself asks for `ptr`, `fcrdns`, `helo-dns` and `spf`)"),
                Field::custom(TIME, "\"<10m\"", "a time range")
                    .doc("farm time is in this half-open range: \"<10m\", \">=1h\", \"10m-1h\""),
                Field::custom(ATTEMPT, "\"<=2\"", "a range")
                    .doc("the number of this query among those from the same address for the same name and type (1 for the first); the farm's own lookups are counted apart"),
                Field::custom(CHANCE, "0.5", "a probability")
                    .doc("a draw from the farm's seeded generator is below this"),
            ],
        )
    });
    &TABLE
}

pub(crate) fn then() -> &'static Table<DnsAction> {
    static TABLE: LazyLock<Table<DnsAction>> = LazyLock::new(|| {
        Table::new(
            TableId::DnsThen,
            "The answer of a DNS rule.",
            vec![
                Field::choice(
                    "answer",
                    "\"servfail\"",
                    DnsAnswer::NAMES,
                    &[
                        ("timeout", "drop"),
                        ("none", "drop"),
                        ("nodata", "empty"),
                        ("tc", "truncated"),
                    ],
                    ANSWER_EXPLAINED,
                    |a: &mut DnsAction| &mut a.answer,
                )
                .doc("records, servfail, nxdomain, refused, empty, drop or truncated"),
                Field::duration("delay", "\"8s\"", None, |a: &mut DnsAction| &mut a.delay)
                    .doc("how long (farm time) before the answer is sent: a slow DNS server"),
            ],
        )
    });
    &TABLE
}

/// The longest `delay` a DNS rule may have: more than any resolver waits.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3600);
