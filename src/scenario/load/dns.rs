//! `[dns]`: its settings through the spec, its record lines, and its fault rules.

use std::sync::Arc;

use crate::scenario::model::{DnsAnswer, DnsCondition, DnsRule, DnsSettings, RecordKind};
use crate::scenario::read::tree::{Node, Table};
use crate::scenario::read::{Cx, Key, closest, did_you_mean, records, values};
use crate::scenario::spec::{self, dns, tables, when};

pub(super) fn dns_settings(cx: &mut Cx, v: &Node) -> DnsSettings {
    let Some(table) = spec::table_at(cx, spec::TableId::Dns, v) else {
        return DnsSettings::default();
    };
    let (mut settings, _) = dns::dns().read(cx, &table, dns::DNS);
    if let Some(v) = table.get(dns::RECORDS) {
        settings.records = record_lines(cx, &v);
    }
    if let Some(v) = table.get(tables::RULE) {
        let rules = spec::tables_at(cx, "dns.rule", &v);
        for (i, rule) in rules.iter().enumerate() {
            if let Some(rule) = dns_rule(cx, rule, i) {
                settings.rules.push(rule);
            }
        }
    }
    settings
}

fn record_lines(cx: &mut Cx, v: &Node) -> Vec<crate::scenario::model::DnsRecord> {
    let key = Key {
        name: dns::RECORDS,
        example: "[\"mail.sender.test A 192.0.2.1\"]",
    };
    let mut out = Vec::new();
    for (line, span) in values::strings(cx, key, v) {
        match records::parse(line) {
            Ok(record) => out.push(record),
            Err((message, hint)) => cx.issue(span, message, hint),
        }
    }
    out
}

fn dns_rule(cx: &mut Cx, table: &Table, i: usize) -> Option<DnsRule> {
    let path = format!("dns.rule.{i}");
    let before = cx.problems();
    dns::rule().read(cx, table, &path);
    let mut conditions = Vec::new();
    if let Some(v) = table.get(tables::WHEN)
        && let Some(when) = spec::table_at(cx, spec::TableId::DnsWhen, &v)
    {
        let when_path = format!("{path}.when");
        dns::when().read_into(cx, &when, &when_path, &mut ());
        for entry in when.entries() {
            if let Some(condition) = condition(cx, entry.key, &entry.value) {
                conditions.push(condition);
            }
        }
    }
    let mut action = Default::default();
    if let Some(v) = table.get(tables::THEN)
        && let Some(then) = spec::table_at(cx, spec::TableId::DnsThen, &v)
    {
        let then_path = format!("{path}.then");
        let (read, _) = dns::then().read(cx, &then, &then_path);
        action = read;
        if then.entries().is_empty() {
            cx.issue(
                then.span(),
                "this DNS rule's `then` is empty",
                "say how it answers, like then = { answer = \"servfail\" } or then = { delay = \"8s\" }",
            );
        }
        if let Some(delay) = then.get("delay") {
            if action.answer == DnsAnswer::Drop {
                cx.issue(
                    delay.span(),
                    "a dropped query is never answered, so a `delay` does nothing",
                    "remove `delay` (the resolver waits its own timeout), or answer after the delay: answer = \"servfail\" or leave `answer` out",
                );
            } else if action.delay > dns::MAX_DELAY {
                cx.issue(
                    delay.span(),
                    "a DNS answer delayed by more than an hour is one no resolver waits for",
                    "to play a server that never answers, write answer = \"drop\"; else write a delay up to \"1h\"",
                );
            }
        }
    }
    (cx.problems() == before).then(|| DnsRule {
        name: Arc::from(format!("dns rule {}", i + 1)),
        when: conditions,
        then: action,
    })
}

fn condition(cx: &mut Cx, key: &str, v: &Node) -> Option<DnsCondition> {
    let row = dns::when().fields.iter().find(|f| f.key == key)?;
    let key = Key {
        name: row.key,
        example: row.example,
    };
    match row.key {
        dns::QUERY => {
            let globs: Vec<_> = values::globs(cx, key, v)
                .into_iter()
                .map(|g| crate::scenario::model::Glob::new(g.text.trim_end_matches('.')))
                .collect();
            (!globs.is_empty()).then_some(DnsCondition::Name(globs))
        }
        dns::TYPE => {
            let mut kinds = Vec::new();
            for (text, span) in values::strings(cx, key, v) {
                match RecordKind::parse(text.trim()) {
                    Some(kind) => kinds.push(kind),
                    None => {
                        let names = RecordKind::ALL.map(RecordKind::as_str).join(", ");
                        let upper = text.trim().to_ascii_uppercase();
                        let hint = match closest(&upper, RecordKind::ALL.map(RecordKind::as_str)) {
                            Some(close) => did_you_mean(close, &format!("the types are {names}")),
                            None => format!("the types are {names}"),
                        };
                        cx.issue(span, format!("`{text}` is not a query type"), hint);
                    }
                }
            }
            (!kinds.is_empty()).then_some(DnsCondition::Type(kinds))
        }
        dns::CLIENT => {
            let nets = values::networks(cx, key, v);
            (!nets.is_empty()).then_some(DnsCondition::Client(nets))
        }
        dns::TIME => values::time_range(cx, v).map(DnsCondition::Time),
        dns::ATTEMPT => {
            values::numbers(cx, "attempt", v, "the first query is 1").map(DnsCondition::Attempt)
        }
        dns::CHANCE => when::chance(cx, v).map(DnsCondition::Chance),
        _ => None,
    }
}
