//! One reader per kind of value a scenario holds. Each reports what is wrong with the
//! value as written (at its place, with a hint that says what to write) and returns
//! `None`, or returns the value.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::tree::{Node, Span};
use super::{Cx, Key, closest, did_you_mean, ranges};
use crate::scenario::duration;
use crate::scenario::model::{AddressPattern, AttemptRange, Glob, TimeRange};

/// A value that must be a string.
pub(crate) fn string<'a>(cx: &mut Cx, key: Key, v: &Node<'a>) -> Option<&'a str> {
    match v.as_str() {
        Some(s) => Some(s),
        None => {
            cx.issue(
                v.span(),
                format!("`{}` must be a string, not {}", key.name, v.kind()),
                format!("write it in quotes, like {} = {}", key.name, key.example),
            );
            None
        }
    }
}

/// One line of free text (`name`, `description`, `greeting`).
pub(crate) fn text(cx: &mut Cx, key: Key, v: &Node, may_be_empty: bool) -> Option<String> {
    let text = string(cx, key, v)?;
    let (name, example) = (key.name, key.example);
    if text.trim().is_empty() && !may_be_empty {
        cx.issue(
            v.span(),
            format!("`{name}` is empty"),
            format!("write something, like {name} = {example}"),
        );
        return None;
    }
    if text.chars().any(char::is_control) {
        cx.issue(
            v.span(),
            format!("`{name}` must be one line of text without control characters"),
            format!("write it on one line, like {name} = {example}"),
        );
        return None;
    }
    Some(text.to_string())
}

/// A name that other parts of the file refer to: host and rule set names.
pub(crate) fn identifier(cx: &mut Cx, key: Key, v: &Node) -> Option<String> {
    let text = string(cx, key, v)?;
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        cx.issue(
            v.span(),
            format!("`{text}` is not a valid name"),
            format!(
                "use letters, digits, `-`, `_` and `.`, like {} = {}",
                key.name, key.example
            ),
        );
        return None;
    }
    Some(text.to_string())
}

/// A domain name, stored lowercase without a trailing dot.
pub(crate) fn domain(cx: &mut Cx, key: Key, v: &Node) -> Option<String> {
    let text = string(cx, key, v)?;
    let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if !valid_domain(&lower) {
        cx.issue(
            v.span(),
            format!("`{text}` is not a domain name"),
            format!(
                "write labels of letters, digits and dashes separated by dots, like {} = {}",
                key.name, key.example
            ),
        );
        return None;
    }
    Some(lower)
}

/// A host's own name for itself (in its greeting and EHLO reply): a domain name or an
/// address literal, stored lowercase.
pub(crate) fn hostname(cx: &mut Cx, key: Key, v: &Node) -> Option<String> {
    let text = string(cx, key, v)?;
    let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let literal = lower.starts_with('[') && lower.ends_with(']') && lower.len() > 2;
    let valid = !lower.is_empty()
        && (literal
            || lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    if !valid {
        cx.issue(
            v.span(),
            format!("`{text}` is not a host name"),
            format!(
                "write a domain name of letters, digits, dots and dashes, like {} = {}",
                key.name, key.example
            ),
        );
        return None;
    }
    Some(lower)
}

/// An address and port to listen on.
pub(crate) fn listen(cx: &mut Cx, key: Key, v: &Node) -> Option<SocketAddr> {
    let text = string(cx, key, v)?.trim();
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            let hint = if let Ok(ip) = text.parse::<IpAddr>() {
                let with_port = SocketAddr::new(ip, 2525);
                format!("add a port: listen = \"{with_port}\" (port 0 picks a free port)")
            } else if text.starts_with("localhost") {
                "names are not looked up; write an IP address, like listen = \"127.0.0.1:2525\""
                    .to_string()
            } else {
                "write an IP address and a port, like \"127.0.0.1:2525\" or \"[::1]:2525\" (port 0 picks a free port)"
                    .to_string()
            };
            cx.issue(
                v.span(),
                format!("`{text}` is not an IP address and port"),
                hint,
            );
            None
        }
    }
}

/// A string or a list of strings, each with its place. An empty list is a problem: as a
/// condition it would match nothing.
pub(crate) fn strings<'a>(cx: &mut Cx, key: Key, v: &Node<'a>) -> Vec<(&'a str, Span)> {
    let (name, example) = (key.name, key.example);
    if let Some(s) = v.as_str() {
        return vec![(s, v.span())];
    }
    let Some(items) = v.as_list() else {
        cx.issue(
            v.span(),
            format!(
                "`{name}` must be a string or a list of strings, not {}",
                v.kind()
            ),
            format!("write {name} = {example}"),
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.issue(
            v.span(),
            format!("`{name}` is an empty list"),
            format!("list at least one, like {name} = {example}, or remove `{name}`"),
        );
    }
    items
        .iter()
        .filter_map(|item| match item.as_str() {
            Some(s) => Some((s, item.span())),
            None => {
                cx.issue(
                    item.span(),
                    format!("the items of `{name}` must be strings, not {}", item.kind()),
                    format!("write each in quotes, like {name} = {example}"),
                );
                None
            }
        })
        .collect()
}

/// `true` or `false`.
pub(crate) fn boolean(cx: &mut Cx, key: Key, v: &Node) -> Option<bool> {
    let name = key.name;
    if let Some(b) = v.as_bool() {
        return Some(b);
    }
    match v.as_str() {
        Some(s) if matches!(s, "true" | "false") => cx.issue(
            v.span(),
            format!("`{name}` must be true or false, not a string"),
            format!("write it without quotes: {name} = {s}"),
        ),
        _ => cx.issue(
            v.span(),
            format!("`{name}` must be true or false, not {}", v.kind()),
            format!("write {name} = true or {name} = false"),
        ),
    }
    None
}

/// An action written as `key = true`: `false` does nothing, and `instead` says what may
/// have been meant.
pub(crate) fn flag(cx: &mut Cx, key: Key, v: &Node, instead: &str) -> Option<bool> {
    let b = boolean(cx, key, v)?;
    if !b {
        cx.issue(
            v.span(),
            format!("`{} = false` does nothing", key.name),
            format!("remove it; {instead}"),
        );
    }
    Some(b)
}

/// A whole number in `min..=max`; `zero` says why 0 makes no sense when `min` is 1.
pub(crate) fn integer(
    cx: &mut Cx,
    key: Key,
    v: &Node,
    (min, max): (i64, i64),
    zero: Option<&str>,
) -> Option<i64> {
    let (name, example) = (key.name, key.example);
    let Some(n) = v.as_int() else {
        match v.as_str() {
            Some(s) if s.trim().parse::<i64>().is_ok() => cx.issue(
                v.span(),
                format!("`{name}` must be a number, not a string"),
                format!("write it without quotes: {name} = {}", s.trim()),
            ),
            _ => cx.issue(
                v.span(),
                format!("`{name}` must be a whole number, not {}", v.kind()),
                format!("write {name} = {example}"),
            ),
        }
        return None;
    };
    if (min..=max).contains(&n) {
        return Some(n);
    }
    if n == 0 && min == 1 {
        let why = zero.map_or(String::new(), |w| format!(": {w}"));
        cx.issue(
            v.span(),
            format!("`{name}` cannot be 0{why}"),
            format!("write a positive number, like {name} = {example}"),
        );
    } else if n < 0 && min == 0 {
        cx.issue(
            v.span(),
            format!("`{name}` cannot be negative"),
            format!("write {name} = {example}"),
        );
    } else {
        let message = if n < min {
            format!("`{name}` must be at least {min}, not {n}")
        } else {
            format!("`{name}` can be at most {max}, not {n}")
        };
        cx.issue(v.span(), message, format!("write {name} = {example}"));
    }
    None
}

/// A duration (see [`duration`]); `zero` says why 0 is not allowed (`None`: it is).
pub(crate) fn duration(cx: &mut Cx, key: Key, v: &Node, zero: Option<&str>) -> Option<Duration> {
    let name = key.name;
    let hint = format!(
        "write a whole number and a unit (ms, s, m, h or d), like {name} = \"30s\", \"5m\", \"1h30m\" or \"2d\""
    );
    let result = match (v.as_str(), v.as_int()) {
        (Some(s), _) => duration::parse(s),
        (_, Some(n)) => Err(format!(
            "`{name}` needs a unit: write {name} = \"{n}s\" for {n} seconds"
        )),
        _ => Err(format!(
            "`{name}` must be a duration in quotes, not {}",
            v.kind()
        )),
    };
    match result {
        Ok(d) if d.is_zero() && zero.is_some() => {
            let why = zero.unwrap_or_default();
            cx.issue(
                v.span(),
                format!("`{name}` cannot be 0"),
                format!("{why}; or {hint}"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(message) => {
            cx.issue(v.span(), message, hint);
            None
        }
    }
}

/// A size in bytes; `zero` says why 0 is not allowed (`None`: it is).
pub(crate) fn size(cx: &mut Cx, key: Key, v: &Node, zero: Option<&str>) -> Option<u64> {
    let name = key.name;
    let hint = format!(
        "write a number of bytes or a number and a unit, like {name} = \"35MiB\", \"10MB\", \"512KiB\" or 1000"
    );
    let result = match (v.as_int(), v.as_str()) {
        (Some(n), _) => u64::try_from(n).map_err(|_| format!("`{name}` cannot be negative")),
        (_, Some(s)) => ranges::size(s),
        _ => Err(format!("`{name}` must be a size, not {}", v.kind())),
    };
    match result {
        Ok(0) if zero.is_some() => {
            let why = zero.unwrap_or_default();
            cx.issue(v.span(), format!("`{name}` cannot be 0: {why}"), hint);
            None
        }
        Ok(n) => Some(n),
        Err(message) => {
            cx.issue(v.span(), message, hint);
            None
        }
    }
}

/// One of a few names; `aliases` maps other words a newcomer may write to the name
/// meant; `explained` lists the names.
pub(crate) fn choice<T: Copy>(
    cx: &mut Cx,
    key: &str,
    v: &Node,
    names: &[(&str, T)],
    aliases: &[(&str, &str)],
    explained: &str,
) -> Option<T> {
    let Some(text) = v.as_str() else {
        cx.issue(
            v.span(),
            format!("`{key}` must be a string, not {}", v.kind()),
            format!(
                "write it in quotes, like {key} = \"{}\"; {explained}",
                names[0].0
            ),
        );
        return None;
    };
    let lower = text.trim().to_ascii_lowercase();
    if let Some((_, value)) = names.iter().find(|(name, _)| *name == lower) {
        return Some(*value);
    }
    let suggestion = aliases
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map(|(_, name)| *name)
        .or_else(|| closest(&lower, names.iter().map(|(name, _)| *name)));
    let hint = match suggestion {
        Some(name) => did_you_mean(name, explained),
        None => explained.to_string(),
    };
    cx.issue(v.span(), format!("unknown `{key}`: `{text}`"), hint);
    None
}

/// An attempt, connection or message range: `"3"`, `"<3"`, `">=3"`, `"2-4"` or 3.
/// `first` says where counting starts, like "the first attempt is 1".
pub(crate) fn numbers(cx: &mut Cx, key: &str, v: &Node, first: &str) -> Option<AttemptRange> {
    let article = if key.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    let hint = format!("write \"3\", \"<3\", \"<=3\", \">3\", \">=3\" or \"2-4\" ({first})");
    if let Some(s) = v.as_str() {
        return match ranges::numbers(s, key) {
            Ok(range) => Some(range),
            Err(why) => {
                cx.issue(
                    v.span(),
                    format!("`{s}` is not {article} {key} range: {why}"),
                    hint,
                );
                None
            }
        };
    }
    match v.as_int() {
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(AttemptRange {
            min: n as u32,
            max: n as u32,
        }),
        Some(n) => {
            cx.issue(
                v.span(),
                format!("{key} {n} never happens: {first}"),
                format!("write a range in quotes, like {key} = \"<3\" (the first two {key}s)"),
            );
            None
        }
        None => {
            cx.issue(
                v.span(),
                format!("`{key}` must be a range in quotes, not {}", v.kind()),
                hint,
            );
            None
        }
    }
}

const TIME_HINT: &str = "write \"<10m\" (the first 10 minutes of the run), \">=1h\" (from one hour on) or \"10m-1h\" (from 10 minutes up to, not including, 1 hour)";

/// A half-open range of farm time: `"<10m"`, `">=1h"` or `"10m-1h"`.
pub(crate) fn time_range(cx: &mut Cx, v: &Node) -> Option<TimeRange> {
    let range = match v.as_str() {
        Some(s) => ranges::time(s).map_err(|(why, hint)| {
            (
                format!("`{}` is not a time range: {why}", s.trim()),
                hint.unwrap_or_else(|| TIME_HINT.to_string()),
            )
        }),
        None => Err((
            format!("`time` must be a range in quotes, not {}", v.kind()),
            TIME_HINT.to_string(),
        )),
    };
    match range {
        Ok(range) => Some(range),
        Err((message, hint)) => {
            cx.issue(v.span(), message, hint);
            None
        }
    }
}

/// Client addresses and networks: `"192.0.2.7"`, `"2001:db8::7"`, `"192.0.2.0/24"`.
pub(crate) fn networks(cx: &mut Cx, key: Key, v: &Node) -> Vec<IpNet> {
    strings(cx, key, v)
        .into_iter()
        .filter_map(|(text, span)| {
            let text = text.trim();
            let parsed = if text.contains('/') {
                text.parse::<IpNet>().ok().map(|n| n.trunc())
            } else {
                text.parse::<IpAddr>().ok().map(IpNet::from)
            };
            if parsed.is_none() {
                cx.issue(
                    span,
                    format!("`{text}` is not an IP address or network"),
                    "write an address like \"192.0.2.7\" or \"2001:db8::7\", or a network like \"192.0.2.0/24\"",
                );
            }
            parsed
        })
        .collect()
}

/// Globs (`*` and `?`), matched without regard to case.
pub(crate) fn globs(cx: &mut Cx, key: Key, v: &Node) -> Vec<Glob> {
    strings(cx, key, v)
        .into_iter()
        .map(|(s, _)| Glob::new(s.trim()))
        .collect()
}

/// Address patterns of senders (`recipient` false) or recipients: an address, a glob,
/// `@domain`, or (for senders) the null sender `<>`.
pub(crate) fn addresses(cx: &mut Cx, key: Key, v: &Node, recipient: bool) -> Vec<AddressPattern> {
    let mut patterns = Vec::new();
    for (text, span) in strings(cx, key, v) {
        let text = text.trim();
        let hint = "write an address (\"alice@aol.test\"), a glob (\"full-*@aol.test\"), a domain (\"@aol.test\") or the null sender (\"<>\")";
        if text == "<>" {
            if recipient {
                cx.issue(
                    span,
                    "`<>` is the null sender; it cannot be a recipient",
                    hint,
                );
            } else {
                patterns.push(AddressPattern::Null);
            }
        } else if text.starts_with('<') && text.ends_with('>') {
            cx.issue(
                span,
                format!("write the address without angle brackets: `{text}`"),
                format!("write \"{}\"", &text[1..text.len() - 1]),
            );
        } else if let Some(domain) = text.strip_prefix('@') {
            if domain.is_empty() || domain.contains(['@', ' ']) {
                cx.issue(span, format!("`{text}` is not an address pattern"), hint);
            } else {
                patterns.push(AddressPattern::Domain(domain.to_ascii_lowercase()));
            }
        } else if text.is_empty()
            || text.contains(char::is_whitespace)
            || !(text.contains('@') || text.contains('*'))
        {
            cx.issue(span, format!("`{text}` is not an address pattern"), hint);
        } else {
            patterns.push(AddressPattern::Glob(Glob::new(text)));
        }
    }
    patterns
}

/// Labels of letters, digits, `-` and `_`, none empty or longer than 63, at most 253 in all.
pub(crate) fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// One IP address (no port, no network).
pub(crate) fn address(cx: &mut Cx, key: Key, v: &Node) -> Option<Option<IpAddr>> {
    let text = string(cx, key, v)?;
    match text.trim().parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => Some(Some(ip)),
        _ => {
            cx.issue(
                v.span(),
                format!("`{text}` is not an address the farm's DNS can give"),
                format!(
                    "write one IP address, without a port, like {} = {}",
                    key.name, key.example
                ),
            );
            None
        }
    }
}

/// TXT records: a string or a list, each one line of text.
pub(crate) fn txt_records(cx: &mut Cx, key: Key, v: &Node) -> Option<Vec<String>> {
    let before = cx.problems();
    let mut texts = Vec::new();
    for (text, span) in strings(cx, key, v) {
        if text.is_empty() || text.chars().any(char::is_control) {
            cx.issue(
                span,
                "a TXT record holds one line of text",
                format!("write it on one line, like {} = {}", key.name, key.example),
            );
        } else {
            texts.push(text.to_string());
        }
    }
    (cx.problems() == before).then_some(texts)
}
