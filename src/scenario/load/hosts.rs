//! `[[host]]`: each host's own keys through the spec, then what needs the whole file:
//! names and listen addresses used once, the rule sets it lists, and its TLS.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::rules::{self, Rulesets};
use super::tls;
use crate::scenario::model::{Host, Stage, TlsMode};
use crate::scenario::read::tree::{Node, Span, Table};
use crate::scenario::read::{Cx, Key, closest, did_you_mean, values};
use crate::scenario::spec::{self, tables};

pub(super) fn hosts(cx: &mut Cx, list: &[Table], rulesets: &Rulesets) -> Vec<Host> {
    let mut names: HashMap<String, Span> = HashMap::new();
    // By port, since only the same port can clash: a file of thousands of hosts on
    // port 0 (a free port each) is not compared host by host.
    let mut listens: HashMap<u16, Vec<(SocketAddr, Span, String)>> = HashMap::new();
    let mut hosts = Vec::new();
    for (i, table) in list.iter().enumerate() {
        let path = format!("host.{i}");
        let (mut host, _) = tables::host().read(cx, table, &path);
        let named = table.get(tables::NAME).filter(|_| !host.name.is_empty());
        if let Some(v) = &named {
            if let Some(first) = names.get(&host.name) {
                let line = cx.line(first);
                cx.issue(
                    v.span(),
                    format!("there are two hosts named `{}`", host.name),
                    format!("the first is on line {line}; give each [[host]] its own name"),
                );
            } else {
                names.insert(host.name.clone(), v.span());
            }
        }
        let label = match named {
            Some(_) => format!("host {}", host.name),
            None => format!("host #{}", i + 1),
        };
        if let Some(v) = table.get(tables::LISTEN)
            && v.as_str()
                .is_some_and(|s| s.trim().parse::<SocketAddr>().is_ok())
        {
            let (addr, span) = (host.listen, v.span());
            let same_port = listens.entry(addr.port()).or_default();
            let taken = same_port.iter().find(|(a, _, _)| clash(*a, addr)).cloned();
            if let Some((other, first, other_label)) = taken {
                let line = cx.line(&first);
                let message = if other == addr {
                    format!("two hosts listen on {addr}")
                } else {
                    format!("{addr} and {other} take the same port")
                };
                cx.issue(
                    span.clone(),
                    message,
                    format!(
                        "{other_label} listens on {other} (line {line}); give each host its own port, or port 0 for a free one"
                    ),
                );
            }
            if addr.port() != 0 {
                same_port.push((addr, span, label.clone()));
            }
        }
        if !table.has(tables::HOSTNAME) {
            host.hostname = format!("{}.mxfarm.test", host.name.to_ascii_lowercase());
        }
        let written = table.get(tables::TLS);
        let tls_ok = match &written {
            Some(v) => {
                let before = cx.problems();
                host.tls = tls::settings(cx, v, &format!("{path}.tls"));
                cx.problems() == before
            }
            None => true,
        };
        let own_rules = match table.get(tables::RULE) {
            Some(v) => spec::tables_at(cx, tables::RULE, &v),
            None => Vec::new(),
        };
        // Only the host's own rules: a rule set may serve hosts with and without TLS.
        if host.tls.mode == TlsMode::Off && tls_ok {
            rules_need_tls(cx, &own_rules, written.map(|v| v.span()), &table.span());
        }
        let mut rules = rules::rules(cx, &own_rules, &label, &path);
        if let Some(v) = table.get(tables::RULESETS) {
            rules.extend(listed_rules(cx, &v, rulesets));
        }
        host.rules = Arc::from(rules);
        hosts.push(host);
    }
    hosts
}

/// The rules of each rule set a host lists, in the order listed.
fn listed_rules(cx: &mut Cx, v: &Node, rulesets: &Rulesets) -> Vec<crate::scenario::model::Rule> {
    let key = Key {
        name: tables::RULESETS,
        example: "[\"common\"]",
    };
    let mut rules = Vec::new();
    let mut listed = HashSet::new();
    for (set, span) in values::strings(cx, key, v) {
        if !listed.insert(set) {
            cx.issue(
                span,
                format!("rule set `{set}` is listed twice"),
                "list each rule set once",
            );
        } else if let Some((set_rules, _)) = rulesets.get(set) {
            rules.extend(set_rules.iter().cloned());
        } else {
            let mut known: Vec<&str> = rulesets.keys().map(String::as_str).collect();
            known.sort_unstable();
            let sets = if known.is_empty() {
                "the scenario has no [[ruleset]]".to_string()
            } else {
                format!("the rule sets are: {}", known.join(", "))
            };
            let hint = match closest(set, known.iter().copied()) {
                Some(close) => did_you_mean(close, &sets),
                None => format!("define it with [[ruleset]] name = \"{set}\"; {sets}"),
            };
            cx.issue(span, format!("there is no rule set named `{set}`"), hint);
        }
    }
    rules
}

/// Each of a host's own rules that uses STARTTLS, on a host whose `tls` is off (not
/// written, or written at `written`): one problem per rule, at its first TLS key. A key
/// at a stage where it cannot be used is a problem of its own, not repeated here.
fn rules_need_tls(cx: &mut Cx, rules: &[Table], written: Option<Span>, host: &Span) {
    for rule in rules {
        let Some(stage_value) = rule.get(tables::STAGE) else {
            continue;
        };
        let Some(stage) = stage_value
            .as_str()
            .and_then(|s| Stage::parse(&s.trim().to_ascii_lowercase()))
        else {
            continue;
        };
        let condition = rule
            .get(tables::WHEN)
            .and_then(|w| w.as_table())
            .and_then(|w| w.get("tls"));
        let hide = rule
            .get(tables::THEN)
            .and_then(|t| t.as_table())
            .and_then(|t| t.get("hide-starttls"));
        let (span, what) = match (stage, condition, hide) {
            // `tls-fault` is used at `starttls` only: the stage says it all
            (Stage::Starttls, _, _) => (stage_value.span(), "a rule at `starttls`"),
            (Stage::Connect, _, _) => continue,
            (_, Some(v), _) => (v.span(), "a `tls` condition"),
            (Stage::Ehlo, None, Some(v)) => (v.span(), "`hide-starttls`"),
            _ => continue,
        };
        let hint = match &written {
            Some(at) => format!(
                "the host's `tls` on line {} is off: set it to \"valid\" (or another mode), or remove this rule",
                cx.line(at)
            ),
            None => format!(
                "add tls = \"valid\" (or another mode) to this [[host]] on line {}, or remove this rule",
                cx.line(host)
            ),
        };
        cx.issue(
            span,
            format!("{what}, but this host does not offer STARTTLS (tls is off)"),
            hint,
        );
    }
}

/// Whether two listen addresses cannot both be bound. Port 0 means a free port, which is
/// never taken twice; an unspecified address (0.0.0.0, ::) takes the port on every
/// address of its family, and `::` on IPv4 as well.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |x: IpAddr, y: IpAddr| {
        x == y || (x.is_unspecified() && (x.is_ipv6() || x.is_ipv4() == y.is_ipv4()))
    };
    covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_that_clash() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases = [
            ("127.0.0.1:2525", "127.0.0.1:2525", true),
            ("127.0.0.1:2525", "127.0.0.1:2526", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
            ("127.0.0.1:2525", "127.0.0.2:2525", false),
            ("0.0.0.0:2525", "127.0.0.1:2525", true),
            ("127.0.0.1:2525", "0.0.0.0:2525", true),
            ("[::]:2525", "127.0.0.1:2525", true),
            ("0.0.0.0:2525", "[::1]:2525", false),
            ("[::1]:25", "[::1]:25", true),
        ];
        for (x, y, expected) in cases {
            assert_eq!(clash(a(x), a(y)), expected, "{x} {y}");
        }
    }
}
