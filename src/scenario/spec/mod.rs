//! The scenario format's vocabulary, written once: every table, key, condition, action
//! and placeholder, with what it takes, its default (from the model's `Default`), an
//! example and a line of doc. The loader reads a file only through these rows, so a key
//! that is read is a key that is known, documented and suggested when misspelt;
//! `docs/scenario-format.md`'s reference section is generated from them (and a test
//! keeps it so).
//!
//! - [`field`]: a key of a table and how its value is read into the model.
//! - [`tables`]: the tables: the top level, `[[domain]]`, `[[host]]`, its limits and
//!   extensions, rule sets and rules.
//! - [`when`]: the conditions, and what each stage knows.
//! - [`then`]: the actions and the stages each may be used at; [`stateful`]: the tables
//!   of greylisting, rate and concurrency limits, and TLS faults.
//! - [`placeholders`]: the placeholders of reply texts.
//! - [`docs`]: the reference section of the format doc.

pub(crate) mod dns;
pub(crate) mod docs;
pub(crate) mod field;
pub(crate) mod placeholders;
pub(crate) mod stateful;
pub(crate) mod tables;
pub(crate) mod then;
pub(crate) mod when;

use super::read::tree::{Node, Span};
use super::read::{Cx, closest, did_you_mean};

pub(crate) use field::{Field, Table};

/// A table of the format, named as a newcomer would look it up in the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableId {
    Root,
    Capture,
    Journal,
    FarmLimits,
    Domain,
    Mx,
    Host,
    Tls,
    Extensions,
    Limits,
    Ruleset,
    Rule,
    When,
    Then,
    Greylist,
    RateLimit,
    Concurrency,
    TlsFault,
    Dns,
    DnsRule,
    DnsWhen,
    DnsThen,
}

impl TableId {
    /// Every table, in the order the reference lists them. A table missing here is
    /// missing from the reference and from the hints that say where a key belongs.
    pub(crate) const ALL: [TableId; 22] = [
        TableId::Root,
        TableId::Capture,
        TableId::Journal,
        TableId::FarmLimits,
        TableId::Domain,
        TableId::Mx,
        TableId::Host,
        TableId::Tls,
        TableId::Extensions,
        TableId::Limits,
        TableId::Ruleset,
        TableId::Rule,
        TableId::When,
        TableId::Then,
        TableId::Greylist,
        TableId::RateLimit,
        TableId::Concurrency,
        TableId::TlsFault,
        TableId::Dns,
        TableId::DnsRule,
        TableId::DnsWhen,
        TableId::DnsThen,
    ];

    /// How the docs name this table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TableId::Root => "the top level",
            TableId::Capture => "[capture]",
            TableId::Journal => "[journal]",
            TableId::FarmLimits => "[limits]",
            TableId::Domain => "[[domain]]",
            TableId::Mx => "an mx entry",
            TableId::Host => "[[host]]",
            TableId::Tls => "`tls`",
            TableId::Extensions => "[host.extensions]",
            TableId::Limits => "[host.limits]",
            TableId::Ruleset => "[[ruleset]]",
            TableId::Rule => "a rule",
            TableId::When => "`when`",
            TableId::Then => "`then`",
            TableId::Greylist => "`greylist`",
            TableId::RateLimit => "`rate-limit`",
            TableId::Concurrency => "`concurrency`",
            TableId::TlsFault => "`tls-fault`",
            TableId::Dns => "[dns]",
            TableId::DnsRule => "[[dns.rule]]",
            TableId::DnsWhen => "the `when` of a DNS rule",
            TableId::DnsThen => "the `then` of a DNS rule",
        }
    }

    /// What a key holding this table takes, for a value of another shape.
    pub(crate) fn expecting(self) -> &'static str {
        match self {
            TableId::Root => "a scenario",
            TableId::Capture => "a table: [capture]",
            TableId::Journal => "a table: [journal]",
            TableId::FarmLimits => "a table: [limits]",
            TableId::Domain => "a table: [[domain]] with name and mx",
            TableId::Mx => "an MX record: { host = \"mx1\", preference = 10 }",
            TableId::Host => "a table: [[host]] with name and listen",
            TableId::Tls => "a TLS table, like tls = { mode = \"valid\", versions = \"1.3\" }",
            TableId::Extensions => "a table: [host.extensions]",
            TableId::Limits => "a table: [host.limits]",
            TableId::Ruleset => "a table: [[ruleset]] with name and rules",
            TableId::Rule => "a rule: a table with stage, when and then",
            TableId::When => "a table of conditions, like { rcpt = \"@aol.test\" }",
            TableId::Then => {
                "a table with an action, like { reply = \"451 4.7.1 Try again later\" }"
            }
            TableId::Greylist => "a greylist table, like greylist = { delay = \"5m\" }",
            TableId::RateLimit => {
                "a rate limit, like rate-limit = { limit = 100, window = \"1h\" }"
            }
            TableId::Concurrency => "a concurrency limit, like concurrency = { limit = 10 }",
            TableId::TlsFault => {
                "a TLS fault, like tls-fault = \"alert\" or tls-fault = { hang = \"10m\" }"
            }
            TableId::Dns => "a table: [dns]",
            TableId::DnsRule => "a DNS rule: a table with when and then",
            TableId::DnsWhen => {
                "a table of conditions on the query, like { query = \"aol.test\", type = \"MX\" }"
            }
            TableId::DnsThen => "a table with an answer, like { answer = \"servfail\" }",
        }
    }

    /// The keys of this table, in the order the docs list them.
    pub(crate) fn keys(self) -> Vec<&'static str> {
        match self {
            TableId::Root => tables::root().names(),
            TableId::Capture => tables::capture().names(),
            TableId::Journal => tables::journal().names(),
            TableId::FarmLimits => tables::farm_limits().names(),
            TableId::Domain => tables::domain().names(),
            TableId::Mx => tables::mx().names(),
            TableId::Host => tables::host().names(),
            TableId::Tls => tables::tls().names(),
            TableId::Extensions => tables::extensions().names(),
            TableId::Limits => tables::limits().names(),
            TableId::Ruleset => tables::ruleset().names(),
            TableId::Rule => tables::rule().names(),
            TableId::When => when::conditions().iter().map(|c| c.key).collect(),
            TableId::Then => then::actions().iter().map(|a| a.key).collect(),
            TableId::Greylist => stateful::greylist().names(),
            TableId::RateLimit => stateful::rate_limit().names(),
            TableId::Concurrency => stateful::concurrency().names(),
            TableId::TlsFault => stateful::tls_fault().names(),
            TableId::Dns => dns::dns().names(),
            TableId::DnsRule => dns::rule().names(),
            TableId::DnsWhen => dns::when().names(),
            TableId::DnsThen => dns::then().names(),
        }
    }

    /// The tables of the DNS rules, whose keys share names with those of SMTP rules
    /// (`when`, `then`, `delay`, `time`...): a misplaced key's home is looked for in the
    /// same kind of rule.
    fn is_dns_table(self) -> bool {
        matches!(
            self,
            TableId::Dns | TableId::DnsRule | TableId::DnsWhen | TableId::DnsThen
        )
    }

    /// The tables of a stateful action, whose keys share names with `when` and `then`.
    fn is_action_table(self) -> bool {
        matches!(
            self,
            TableId::Greylist | TableId::RateLimit | TableId::Concurrency | TableId::TlsFault
        )
    }
}

/// Reports a key that table `id` (at `path`) does not have, with the most helpful hint:
/// the key it most likely misspells, or the table it belongs to, or this table's keys.
pub(crate) fn unknown_key(cx: &mut Cx, id: TableId, path: &str, key: &str, span: Span) {
    cx.note_unknown(path, key);
    let keys = id.keys();
    let message = match id {
        TableId::Root => format!("unknown key `{key}` at the top level"),
        _ => format!("unknown key `{key}` in {}", id.name()),
    };
    let valid = format!("the keys of {} are: {}", id.name(), keys.join(", "));
    // A key of exactly one other table was most likely written under the wrong header.
    // The tables of `greylist`, `rate-limit` and `concurrency` share names with `when` and
    // `then` (`per`, `reply`, `delay`...): those are the likelier home.
    let mut homes: Vec<TableId> = TableId::ALL
        .into_iter()
        .filter(|t| *t != id && t.is_dns_table() == id.is_dns_table() && t.keys().contains(&key))
        .collect();
    if homes.iter().any(|t| !t.is_action_table()) {
        homes.retain(|t| !t.is_action_table());
    }
    let hint = if id == TableId::Extensions && matches!(key, "starttls" | "tls") {
        format!(
            "STARTTLS is switched on by the host's own `tls` key: write tls = \"valid\" in the [[host]], above [host.extensions]; {valid}"
        )
    } else if let Some(close) = closest(key, keys.iter().copied()) {
        did_you_mean(close, &valid)
    } else if let [home, ..] = homes[..]
        && (homes.len() == 1 || homes.iter().all(|t| t.is_action_table()))
    {
        let names: Vec<&str> = homes.iter().map(|t| t.name()).collect();
        if id.is_action_table() && home.is_action_table() {
            // `window` in `concurrency`: not a misplaced key, a key this table lacks.
            format!(
                "`{key}` is a key of {}, not of {}; {valid}",
                names.join(" or "),
                id.name()
            )
        } else {
            format!(
                "`{key}` is a key of {}, not of {}{}",
                names.join(" or "),
                id.name(),
                how_to_move(home, key)
            )
        }
    } else {
        valid
    };
    cx.issue(span, message, hint);
}

/// How to write `key` where it belongs, in table `home`.
fn how_to_move(home: TableId, key: &str) -> String {
    match home {
        TableId::Greylist | TableId::RateLimit | TableId::Concurrency | TableId::TlsFault => {
            format!(
                " (write then = {{ {} = {{ {key} = ... }} }} in the rule)",
                home.name().trim_matches('`')
            )
        }
        TableId::Tls => format!(" (write tls = {{ {key} = ... }} in the [[host]])"),
        TableId::When => " (write when = { ... } in the rule)".to_string(),
        TableId::Then => " (write then = { ... } in the rule)".to_string(),
        TableId::Rule => " (start a rule with [[host.rule]])".to_string(),
        TableId::Root => {
            " (a key belongs to the last [header] above it, so move it above the first [header])"
                .to_string()
        }
        _ => format!(
            " (a key belongs to the last [header] above it, so move it under {})",
            home.name()
        ),
    }
}

/// The table a key holds, or the problem with what it holds instead.
pub(crate) fn table_at<'a>(
    cx: &mut Cx,
    id: TableId,
    v: &Node<'a>,
) -> Option<super::read::tree::Table<'a>> {
    if let Some(table) = v.as_table() {
        return Some(table);
    }
    cx.issue(
        v.span(),
        format!("expected {}, found {}", id.expecting(), v.kind()),
        "see docs/scenario-format.md for what this key takes, with an example",
    );
    None
}

/// The tables of a list of tables (`[[host]]`), or the problem with what was written:
/// a single `[host]` table is read as the one entry of the list, after saying so.
pub(crate) fn tables_at<'a>(
    cx: &mut Cx,
    key: &str,
    v: &Node<'a>,
) -> Vec<super::read::tree::Table<'a>> {
    if let Some(items) = v.as_list() {
        let mut tables = Vec::new();
        for item in items {
            match item.as_table() {
                Some(table) => tables.push(table),
                None => cx.issue(
                    item.span(),
                    format!("expected a table, found {}", item.kind()),
                    "write each entry as a [[...]] section, or as a list like [{ ... }, { ... }]",
                ),
            }
        }
        return tables;
    }
    let written = cx.text.get(v.span()).unwrap_or("").trim();
    if let Some(table) = v.as_table()
        && written.starts_with('[')
        && !written.starts_with("[[")
    {
        let name = written.trim_matches(|c| c == '[' || c == ']');
        cx.issue(
            v.span(),
            format!("`[{name}]` is a single table, but `{name}` is a list of tables"),
            format!("write [[{name}]] with double brackets: there can be several"),
        );
        return vec![table];
    }
    cx.issue(
        v.span(),
        format!("expected a list of tables, found {}", v.kind()),
        format!(
            "write each entry as a [[{key}]] section, or as a list like {key} = [{{ ... }}, {{ ... }}]"
        ),
    );
    Vec::new()
}
