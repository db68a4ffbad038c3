//! DNS records as a scenario writes them: one zone-file line each, `NAME TYPE DATA`, so
//! that what `mxfarm dns` prints can be pasted back. Names are absolute with or without
//! the final dot; a PTR may be written at the address it names (`192.0.2.1 PTR ...`).

use std::net::IpAddr;

use super::values::valid_domain;
use crate::scenario::model::{DnsRecord, RecordData, RecordKind};

/// The types a record line may have (SOA and NS are the farm's own, one per zone).
pub(crate) const WRITABLE: &str = "A, AAAA, CNAME, MX, PTR or TXT";

/// Reads one record line; the error is what is wrong and what to write instead.
pub(crate) fn parse(line: &str) -> Result<DnsRecord, (String, String)> {
    let line = line.trim();
    let mut parts = line.splitn(3, char::is_whitespace);
    let (Some(name), Some(kind), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err((
            format!("`{line}` is not a record: a record is a name, a type and its data"),
            "write one record per string, like \"mail.sender.test A 192.0.2.1\" or \"sender.test TXT \\\"v=spf1 -all\\\"\"".to_string(),
        ));
    };
    let (kind_text, data) = (kind.trim(), data.trim());
    let Some(kind) = RecordKind::parse(kind_text) else {
        let hint = if kind_text.eq_ignore_ascii_case("IN") || kind_text.parse::<u32>().is_ok() {
            format!(
                "write the name, then the type, then the data, without a TTL or class: \"{name} {data}\" (every record has [dns] ttl)"
            )
        } else {
            format!("the types a record may have are {WRITABLE}")
        };
        return Err((format!("`{kind_text}` is not a record type"), hint));
    };
    let name = owner(name, kind)?;
    let data = match kind {
        RecordKind::A => RecordData::A(data.parse().map_err(|_| {
            (
                format!("`{data}` is not an IPv4 address, which an A record holds"),
                format!("write \"{name} A 192.0.2.1\" (AAAA for an IPv6 address)"),
            )
        })?),
        RecordKind::Aaaa => RecordData::Aaaa(data.parse().map_err(|_| {
            (
                format!("`{data}` is not an IPv6 address, which an AAAA record holds"),
                format!("write \"{name} AAAA 2001:db8::1\" (A for an IPv4 address)"),
            )
        })?),
        RecordKind::Cname => RecordData::Cname(target(data, "CNAME", &name)?),
        RecordKind::Ptr => RecordData::Ptr(target(data, "PTR", &name)?),
        RecordKind::Mx => mx(data, &name)?,
        RecordKind::Txt => RecordData::Txt(txt(data)?),
        RecordKind::Soa | RecordKind::Ns => {
            return Err((
                format!("the farm writes the {kind} records of its zones itself"),
                format!("write records of type {WRITABLE}"),
            ));
        }
    };
    Ok(DnsRecord { name, data })
}

/// The owner name, lower case without the final dot; an address, for a PTR, becomes its
/// reverse name.
fn owner(text: &str, kind: RecordKind) -> Result<String, (String, String)> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        if kind == RecordKind::Ptr {
            return Ok(reverse_name(ip));
        }
        return Err((
            format!(
                "`{text}` is an address, not a name: only a PTR record is written at an address"
            ),
            format!("write the name first, like \"mail.sender.test {kind} ...\""),
        ));
    }
    name(text).ok_or_else(|| {
        (
            format!("`{text}` is not a domain name"),
            "write labels of letters, digits and dashes separated by dots, like mail.sender.test"
                .to_string(),
        )
    })
}

fn name(text: &str) -> Option<String> {
    let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
    valid_domain(&lower).then_some(lower)
}

fn target(data: &str, kind: &str, owner: &str) -> Result<String, (String, String)> {
    name(data).ok_or_else(|| {
        (
            format!("`{data}` is not a domain name, which a {kind} record points to"),
            format!("write \"{owner} {kind} mail.sender.test\""),
        )
    })
}

fn mx(data: &str, owner: &str) -> Result<RecordData, (String, String)> {
    let hint =
        || format!("write \"{owner} MX 10 mx1.{owner}\" (or \"{owner} MX 0 .\", the null MX)");
    let mut words = data.split_whitespace();
    let (Some(preference), Some(exchange), None) = (words.next(), words.next(), words.next())
    else {
        return Err((
            format!("`{data}` is not MX data: an MX record is a preference and a host name"),
            hint(),
        ));
    };
    let preference = preference.parse::<u16>().map_err(|_| {
        (
            format!("`{preference}` is not an MX preference (a whole number from 0 to 65535)"),
            hint(),
        )
    })?;
    let exchange = if exchange == "." {
        String::new()
    } else {
        name(exchange).ok_or_else(|| (format!("`{exchange}` is not a host name"), hint()))?
    };
    Ok(RecordData::Mx {
        preference,
        exchange,
    })
}

/// TXT data: quoted strings (with `\"` and `\\`), joined as DNS readers join them (so
/// the strings of 255 bytes that `mxfarm dns` prints read back), or the rest of the line
/// as it is.
fn txt(data: &str) -> Result<String, (String, String)> {
    let text = if data.starts_with('"') {
        let mut out = String::new();
        let mut chars = data.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                None => break,
                Some('"') => {}
                Some(_) => return Err(not_quoted(data)),
            }
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(escaped) => out.push(escaped),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => out.push(c),
                }
            }
            if !closed {
                return Err(not_quoted(data));
            }
        }
        out
    } else {
        data.to_string()
    };
    if text.chars().any(char::is_control) || text.is_empty() {
        return Err((
            "a TXT record holds one line of text".to_string(),
            "write it on one line, like \"sender.test TXT \\\"v=spf1 ip4:192.0.2.0/24 -all\\\"\""
                .to_string(),
        ));
    }
    Ok(text)
}

fn not_quoted(data: &str) -> (String, String) {
    (
        format!("`{data}` is not a list of quoted strings"),
        "write the text in quotes, escaping quotes inside with \\\"; strings next to each other are joined"
            .to_string(),
    )
}

/// The name a PTR record of `ip` has: `1.2.0.192.in-addr.arpa`, or the nibbles of an
/// IPv6 address under `ip6.arpa`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut out = String::new();
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out.push_str("ip6.arpa");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_every_type() {
        let ok = |line: &str| parse(line).map(|r| format!("{} {}", r.name, r.data));
        assert_eq!(
            ok("Mail.Sender.test. A 192.0.2.1").unwrap(),
            "mail.sender.test 192.0.2.1"
        );
        assert_eq!(ok("x.test AAAA 2001:db8::1").unwrap(), "x.test 2001:db8::1");
        assert_eq!(ok("x.test MX 0 .").unwrap(), "x.test 0 .");
        assert_eq!(
            ok("x.test mx 10 MX1.x.test").unwrap(),
            "x.test 10 mx1.x.test."
        );
        assert_eq!(ok("www.x.test CNAME x.test").unwrap(), "www.x.test x.test.");
        assert_eq!(
            ok("192.0.2.1 PTR mail.x.test").unwrap(),
            "1.2.0.192.in-addr.arpa mail.x.test."
        );
        assert_eq!(
            ok(r#"x.test TXT "v=spf1 \"q\" -all""#).unwrap(),
            r#"x.test "v=spf1 \"q\" -all""#
        );
        assert_eq!(
            ok("x.test TXT v=spf1 -all").unwrap(),
            r#"x.test "v=spf1 -all""#
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn misuses_say_what_to_write() {
        let err = |line: &str| parse(line).unwrap_err();
        assert!(err("x.test A").0.contains("not a record"));
        assert!(err("x.test 300 IN A 192.0.2.1").1.contains("without a TTL"));
        assert!(err("x.test SRV 1 2 3 y.test").1.contains("A, AAAA"));
        assert!(err("x.test A 2001:db8::1").1.contains("AAAA"));
        assert!(err("x.test MX mx1.x.test").0.contains("not MX data"));
        assert!(err("x.test SOA a b").0.contains("itself"));
        assert!(err("192.0.2.1 A 192.0.2.1").0.contains("only a PTR"));
        assert!(err(r#"x.test TXT "open"#).0.contains("quoted"));
        assert!(err(r#"x.test TXT "a" b"#).0.contains("quoted"));
        assert!(
            err("bad_name!.test A 192.0.2.1")
                .0
                .contains("not a domain name")
        );
    }
}
