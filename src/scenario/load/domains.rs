//! `[[domain]]` with its MX records, which name the file's hosts, and `[reverse-dns]`,
//! whose keys are data (client addresses), not names of the format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::scenario::model::{Domain, MxRecord};
use crate::scenario::read::tree::{Node, Span, Table};
use crate::scenario::read::{Cx, closest, did_you_mean, values};
use crate::scenario::spec::{self, tables};

pub(super) fn domains(cx: &mut Cx, list: &[Table], host_names: &[String]) -> Vec<Domain> {
    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut domains = Vec::new();
    for (i, table) in list.iter().enumerate() {
        let path = format!("domain.{i}");
        let (mut domain, _) = tables::domain().read(cx, table, &path);
        if let Some(v) = table.get(tables::NAME).filter(|_| !domain.name.is_empty()) {
            if let Some(first) = seen.get(&domain.name) {
                let line = cx.line(first);
                cx.issue(
                    v.span(),
                    format!("domain `{}` is listed twice", domain.name),
                    format!(
                        "it is already a [[domain]] on line {line}; merge the two, their mx lists included"
                    ),
                );
            } else {
                seen.insert(domain.name.clone(), v.span());
            }
        }
        match table.get(tables::MX) {
            Some(v) if domain.null_mx => cx.issue(
                v.span(),
                format!("`{}` has both `mx` and `null-mx = true`", domain.name),
                "a null MX (RFC 7505) says the domain takes no mail: remove `mx`, or `null-mx`",
            ),
            Some(v) => domain.mx = mx_records(cx, &v, &path, host_names),
            None if !domain.null_mx => cx.missing(
                &path,
                tables::MX,
                table.span(),
                "this [[domain]] has no `mx`",
                "list the hosts that receive its mail, like mx = [{ host = \"mx1\", preference = 10 }], or write null-mx = true for a domain that takes no mail",
            ),
            None => {}
        }
        domains.push(domain);
    }
    domains
}

fn mx_records(cx: &mut Cx, v: &Node, path: &str, host_names: &[String]) -> Vec<MxRecord> {
    let example = "mx = [{ host = \"mx1\", preference = 10 }]";
    let entries = spec::tables_at(cx, tables::MX, v);
    if v.as_list().is_some_and(|l| l.is_empty()) {
        cx.issue(
            v.span(),
            "`mx` is empty",
            format!("list at least one host, like {example}"),
        );
    }
    let mut records = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (k, entry) in entries.iter().enumerate() {
        let (record, _) = tables::mx().read(cx, entry, &format!("{path}.mx.{k}"));
        let Some(host_value) = entry.get(tables::HOST).filter(|v| v.as_str().is_some()) else {
            continue;
        };
        let host = record.host.as_str();
        let span = host_value.span();
        if !host_names.iter().any(|n| n == host) {
            let hosts = if host_names.is_empty() {
                "the scenario has no hosts yet".to_string()
            } else {
                format!("the hosts are: {}", host_names.join(", "))
            };
            let hint = match closest(host, host_names.iter().map(String::as_str)) {
                Some(close) => did_you_mean(close, &hosts),
                None => format!("an MX names a [[host]] by its `name`; {hosts}"),
            };
            cx.issue(
                span,
                format!("MX names host `{host}`, which does not exist"),
                hint,
            );
        } else if !seen.insert(host.to_string()) {
            cx.issue(
                span,
                format!("host `{host}` is in this domain's `mx` twice"),
                "list each host once; give it one preference",
            );
        }
        records.push(record);
    }
    records
}

/// `[reverse-dns]`: client address = PTR name.
pub(super) fn reverse_dns(cx: &mut Cx, v: &Node) -> BTreeMap<IpAddr, String> {
    let mut names = BTreeMap::new();
    let Some(table) = v.as_table() else {
        cx.issue(
            v.span(),
            format!(
                "expected a table of addresses and names: \"192.0.2.1\" = \"mail.sender.test\", found {}",
                v.kind()
            ),
            "see docs/scenario-format.md for what this key takes, with an example",
        );
        return names;
    };
    let mut seen: HashMap<IpAddr, Span> = HashMap::new();
    for entry in table.entries() {
        let key = entry.key.trim();
        let value = &entry.value;
        let mut span = entry.key_span.clone();
        let is_table = value.as_table().is_some();
        let ip = match key.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let mut swapped = false;
                let (message, hint) = if is_table && key.bytes().all(|b| b.is_ascii_digit()) {
                    // `192.0.2.1 = "..."`: the key is `192`; show all that was written.
                    let written = cx
                        .text
                        .get(entry.key_span.start..)
                        .and_then(|rest| rest.split([' ', '\t', '=', '\n']).next())
                        .unwrap_or(key);
                    span = span.start..span.start + written.len();
                    (
                        format!(
                            "`{written}` without quotes is read as nested keys, not as an address"
                        ),
                        format!(
                            "put the address in quotes, like \"{written}\" = \"mail.sender.test\""
                        ),
                    )
                } else if key.parse::<IpNet>().is_ok() {
                    (
                        format!("`{key}` is a network: a PTR name belongs to one address"),
                        "list each address on its own, like \"192.0.2.1\" = \"mail.sender.test\""
                            .to_string(),
                    )
                } else if let Some(v) = value.as_str()
                    && v.trim().parse::<IpAddr>().is_ok()
                {
                    swapped = true;
                    (
                        format!("`{key}` is not an IP address"),
                        format!(
                            "the address is the key and the name the value: write \"{}\" = \"{key}\"",
                            v.trim()
                        ),
                    )
                } else {
                    (
                        format!("`{key}` is not an IP address"),
                        "the keys of [reverse-dns] are client addresses, like \"192.0.2.1\" = \"mail.sender.test\" or \"2001:db8::1\" = \"mail.sender.test\"".to_string(),
                    )
                };
                cx.issue(span, message, hint);
                // Nested tables, or a name and an address the wrong way round: the value
                // has nothing more to tell.
                if is_table || swapped {
                    continue;
                }
                None
            }
        };
        let name = ptr_name(cx, key, value);
        let Some(ip) = ip else { continue };
        if let Some(first) = seen.get(&ip) {
            let line = cx.line(first);
            cx.issue(
                entry.key_span.clone(),
                format!("address {ip} is in [reverse-dns] twice"),
                format!("it already has a name on line {line}; an address has one PTR name here, so remove one of them"),
            );
            continue;
        }
        seen.insert(ip, entry.key_span.clone());
        if let Some(name) = name {
            names.insert(ip, name);
        }
    }
    names
}

/// A PTR name: a host name, stored lowercase without a trailing dot.
fn ptr_name(cx: &mut Cx, key: &str, v: &Node) -> Option<String> {
    let Some(text) = v.as_str() else {
        cx.issue(
            v.span(),
            format!("the PTR name of `{key}` must be a string, not {}", v.kind()),
            "write it in quotes, like \"192.0.2.1\" = \"mail.sender.test\"",
        );
        return None;
    };
    let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if lower.parse::<IpAddr>().is_ok() {
        cx.issue(
            v.span(),
            format!("`{text}` is an address, not a host name"),
            "a PTR record names a host, like \"192.0.2.1\" = \"mail.sender.test\"",
        );
        return None;
    }
    if !values::valid_domain(&lower) {
        cx.issue(
            v.span(),
            format!("`{text}` is not a host name"),
            "write labels of letters, digits and dashes separated by dots, like \"192.0.2.1\" = \"mail.sender.test\"",
        );
        return None;
    }
    Some(lower)
}
