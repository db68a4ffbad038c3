//! From the TOML as written ([`raw`](super::raw)) to the validated [`Scenario`]: every
//! problem is collected, each with the span of the offending text and a hint saying what
//! to write instead, so that an author fixes a broken file in one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::Issue;
use super::model::{
    Action, ActionKind, AddressPattern, AttemptKey, AttemptRange, CaptureLimits, Concurrency,
    Condition, Domain, Extensions, Glob, Greylist, Host, JournalLimits, Limits, MxRecord, PtrCheck,
    RateKey, RateLimit, Reply, Rule, Scenario, Stage, StateScope, TimeRange, TlsFault, TlsFiles,
    TlsMode, TlsSettings, TlsVersions,
};
use super::raw::{
    Entries, Leaf, Place, RawCapture, RawConcurrency, RawDomain, RawExtensions, RawGreylist,
    RawHost, RawJournal, RawLimits, RawRateLimit, RawRule, RawRuleset, RawScenario, RawThen,
    RawTls, RawTlsFault, RawWhen, Span, TableOr, UnknownKey, Unreadable,
};

const STAGE_NAMES: &str =
    "connect, ehlo (or helo), starttls, mail, rcpt, data, end-of-data, rset, quit";

/// The placeholders a reply text may hold, filled in by the engine when it is sent.
const PLACEHOLDERS: [&str; 8] = [
    "client",
    "helo",
    "sender",
    "recipient",
    "domain",
    "hostname",
    "remaining",
    "remaining-hms",
];

const PLACEHOLDER_LIST: &str = "the placeholders are {client}, {helo}, {sender}, {recipient}, {domain} (the recipient's), {hostname}, and in a greylist reply {remaining} (seconds left to wait) and {remaining-hms} (the same as HH:MM:SS)";

/// postgrey's reply, as Postfix sends it (see the greylisting section of the format doc).
pub const GREYLIST_REPLY: &str = "450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html";
pub const RATE_LIMIT_REPLY: &str = "451 4.7.1 Rate limit exceeded, try again later";
pub const CONCURRENCY_REPLY: &str =
    "421 4.7.0 {hostname} Error: too many connections from {client}";

/// A host's `tls` modes, as written; the first is the one examples show.
const TLS_MODES: [(&str, TlsMode); 7] = [
    ("valid", TlsMode::Valid),
    ("off", TlsMode::Off),
    ("self-signed", TlsMode::SelfSigned),
    ("expired", TlsMode::Expired),
    ("not-yet-valid", TlsMode::NotYetValid),
    ("wrong-hostname", TlsMode::WrongHostname),
    ("unknown-ca", TlsMode::UnknownCa),
];

/// Other words for the TLS modes, and the mode meant.
const TLS_MODE_ALIASES: [(&str, &str); 20] = [
    ("on", "valid"),
    ("yes", "valid"),
    ("true", "valid"),
    ("enabled", "valid"),
    ("trusted", "valid"),
    ("none", "off"),
    ("no", "off"),
    ("false", "off"),
    ("disabled", "off"),
    ("selfsigned", "self-signed"),
    ("self", "self-signed"),
    ("untrusted", "unknown-ca"),
    ("untrusted-ca", "unknown-ca"),
    ("unknown-issuer", "unknown-ca"),
    ("future", "not-yet-valid"),
    ("not-valid-yet", "not-yet-valid"),
    ("wrong-name", "wrong-hostname"),
    ("hostname-mismatch", "wrong-hostname"),
    ("name-mismatch", "wrong-hostname"),
    ("mismatch", "wrong-hostname"),
];

const TLS_MODES_EXPLAINED: &str = "the modes are valid (a certificate signed by the farm's CA), off (no STARTTLS), self-signed, expired, not-yet-valid, wrong-hostname (a certificate for another name) and unknown-ca (signed by a CA nobody trusts)";

const TLS_VERSIONS_EXPLAINED: &str =
    "`versions` is 1.2 (TLS 1.2 only), 1.3 (TLS 1.3 only) or any (both, the default)";

const TLS_FAULTS_EXPLAINED: &str = "a TLS fault is close-after-ready (close right after the 220), alert (answer the ClientHello with a handshake_failure alert), close-mid-handshake (close after the ClientHello), garbage (answer with bytes that are not TLS), or { hang = \"10m\" } (send nothing after the ClientHello, close after that long)";

const TIME_HINT: &str = "write \"<10m\" (the first 10 minutes of the run), \">=1h\" (from one hour on) or \"10m-1h\" (from 10 minutes up to, not including, 1 hour)";

/// Validates a parsed scenario; `text` is the source, for line numbers in hints, and
/// `unknown` the unknown keys already reported (a misspelt key is not reported missing too).
/// Relative paths in it (a host's `cert` and `key`) are relative to `dir`, the scenario
/// file's directory (`None`: the current directory).
pub(crate) fn validate_in(
    raw: &RawScenario,
    text: &str,
    unknown: &[UnknownKey],
    dir: Option<&Path>,
) -> Result<Scenario, Vec<Issue>> {
    let mut v = Validator {
        text,
        unknown,
        dir,
        issues: Vec::new(),
    };
    let scenario = v.scenario(raw);
    if v.issues.is_empty() {
        Ok(scenario)
    } else {
        Err(v.issues)
    }
}

/// The problem for a key that the format does not have.
pub(crate) fn unknown_key(unknown: &UnknownKey) -> Issue {
    let key = unknown.key.as_str();
    let Some(place) = unknown.place else {
        return Issue {
            span: unknown.span.clone(),
            message: format!("unknown key `{key}`"),
            hint: "remove it; docs/scenario-format.md lists every key".to_string(),
        };
    };
    let keys = place.keys();
    let message = match place {
        Place::Root => format!("unknown key `{key}` at the top level"),
        _ => format!("unknown key `{key}` in {}", place.name()),
    };
    let valid = format!("the keys of {} are: {}", place.name(), keys.join(", "));
    // A key of exactly one other table was most likely written under the wrong header.
    // The tables of `greylist`, `rate-limit` and `concurrency` share names with `when` and
    // `then` (`per`, `reply`, `delay`...): those are the likelier home.
    let nested = |p: &Place| {
        matches!(
            p,
            Place::Greylist | Place::RateLimit | Place::Concurrency | Place::TlsFault
        )
    };
    let mut homes: Vec<Place> = Place::ALL
        .into_iter()
        .filter(|p| *p != place && p.keys().contains(&key))
        .collect();
    if homes.iter().any(|p| !nested(p)) {
        homes.retain(|p| !nested(p));
    }
    let hint = if place == Place::Extensions && matches!(key, "starttls" | "tls") {
        format!(
            "STARTTLS is switched on by the host's own `tls` key: write tls = \"valid\" in the [[host]], above [host.extensions]; {valid}"
        )
    } else if let Some(close) = closest(key, keys.iter().copied()) {
        did_you_mean(close, &valid)
    } else if let [home, ..] = homes[..]
        && (homes.len() == 1 || homes.iter().all(nested))
    {
        let how = match home {
            Place::Greylist | Place::RateLimit | Place::Concurrency | Place::TlsFault => format!(
                " (write then = {{ {} = {{ {key} = ... }} }} in the rule)",
                home.name().trim_matches('`')
            ),
            Place::Tls => format!(" (write tls = {{ {key} = ... }} in the [[host]])"),
            Place::When => " (write when = { ... } in the rule)".to_string(),
            Place::Then => " (write then = { ... } in the rule)".to_string(),
            Place::Rule => " (start a rule with [[host.rule]])".to_string(),
            Place::Root => {
                " (a key belongs to the last [header] above it, so move it above the first [header])"
                    .to_string()
            }
            _ => format!(
                " (a key belongs to the last [header] above it, so move it under {})",
                home.name()
            ),
        };
        let names: Vec<&str> = homes.iter().map(|p| p.name()).collect();
        if nested(&place) && nested(&home) {
            // `window` in `concurrency`: not a misplaced key, a key this table lacks.
            format!(
                "`{key}` is a key of {}, not of {}; {valid}",
                names.join(" or "),
                place.name()
            )
        } else {
            format!(
                "`{key}` is a key of {}, not of {}{how}",
                names.join(" or "),
                place.name()
            )
        }
    } else {
        valid
    };
    Issue {
        span: unknown.span.clone(),
        message,
        hint,
    }
}

/// The problem for TOML that could not be read at all: a syntax error, or a value of a
/// shape that no key of the format takes (a table where a list of tables belongs...).
pub(crate) fn unreadable(error: &Unreadable, text: &str) -> Issue {
    let message = &error.message;
    let at = text.get(error.span.clone()).unwrap_or("").trim();
    let (message, hint) = if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest
            .split_once(", expected ")
            .unwrap_or((rest, "something else"));
        let found = match found {
            "map" => "a table".to_string(),
            "sequence" => "a list".to_string(),
            other => other.to_string(),
        };
        if expected == "a sequence" && at.starts_with('[') && !at.starts_with("[[") {
            let name = at.trim_matches(|c| c == '[' || c == ']');
            (
                format!("`[{name}]` is a single table, but `{name}` is a list of tables"),
                format!("write [[{name}]] with double brackets: there can be several"),
            )
        } else if expected == "a sequence" {
            (
                format!("expected a list of tables, found {found}"),
                "write each entry as a [[...]] section, or as a list like [{ ... }, { ... }]"
                    .to_string(),
            )
        } else {
            (
                format!("expected {expected}, found {found}"),
                "see docs/scenario-format.md for what this key takes, with an example".to_string(),
            )
        }
    } else {
        let hint = if message.contains("duplicate key") {
            "a key can appear only once in a table; remove one of them"
        } else if message.contains("must be quoted") {
            "put the value in quotes, like key = \"value\""
        } else if message.contains("basic string") || message.contains("literal string") {
            "end the string with a quote on the same line (use \"\"\" for text over several lines)"
        } else if message.contains("unclosed array") {
            "end the list with `]`"
        } else if message.contains("inline table") {
            "end the table with `}` (an inline table { ... } must fit on one line)"
        } else {
            "this is not valid TOML; see docs/scenario-format.md for examples of every key"
        };
        (format!("invalid TOML: {message}"), hint.to_string())
    };
    Issue {
        span: error.span.clone(),
        message,
        hint,
    }
}

struct Validator<'t> {
    text: &'t str,
    unknown: &'t [UnknownKey],
    /// The directory of the scenario file, for relative paths (`None`: the current one).
    dir: Option<&'t Path>,
    issues: Vec<Issue>,
}

/// A validated value and where it was written.
type At<T> = (T, Span);

impl Validator<'_> {
    fn issue(&mut self, span: Span, message: impl Into<String>, hint: impl Into<String>) {
        self.issues.push(Issue {
            span,
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Reports that `table` (a path like `host.0`) lacks `key`, unless an unknown key
    /// there is a likely misspelling of it, which was reported already.
    fn missing(&mut self, table: &str, key: &str, span: Span, message: &str, hint: String) {
        let misspelt = self
            .unknown
            .iter()
            .any(|u| u.table == table && closest(&u.key, [key]).is_some());
        if !misspelt {
            self.issue(span, message, hint);
        }
    }

    /// Whether `table` (a path like `host.0.rule.1.then`) has an unknown key.
    fn has_unknown(&self, table: &str) -> bool {
        self.unknown.iter().any(|u| u.table == table)
    }

    fn line(&self, span: &Span) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    // ---------------------------------------------------------------- the whole file

    fn scenario(&mut self, raw: &RawScenario) -> Scenario {
        let top = 0..0;
        let name = match &raw.name {
            Some(v) => self.text_value("name", v, "\"aol\"", false),
            None => {
                self.missing(
                    "",
                    "name",
                    top.clone(),
                    "the scenario has no `name`",
                    "add a short name at the top of the file, like name = \"aol\"".into(),
                );
                None
            }
        };
        let description = raw
            .description
            .as_ref()
            .and_then(|v| self.text_value("description", v, "\"What this farm plays\"", true))
            .unwrap_or_default();
        let seed = raw
            .seed
            .as_ref()
            .and_then(|v| self.integer("seed", v, 0, i64::MAX, "7", None))
            .map_or(0, |n| n as u64);
        let capture = raw
            .capture
            .as_ref()
            .map(|c| self.capture(c.get_ref()))
            .unwrap_or_default();
        let journal = raw
            .journal
            .as_ref()
            .map(|j| self.journal(j.get_ref()))
            .unwrap_or_default();

        let rulesets = self.rulesets(&raw.ruleset);
        let hosts = self.hosts(&raw.host, &rulesets);
        if raw.host.is_empty() {
            self.issue(
                top,
                "the scenario has no hosts",
                "add at least one MX host: [[host]] with name = \"mx1\" and listen = \"127.0.0.1:2525\"",
            );
        }
        let host_names: Vec<&str> = raw
            .host
            .iter()
            .filter_map(|h| match h.get_ref().name.as_ref()?.get_ref() {
                Leaf::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        let domains = self.domains(&raw.domain, &host_names);
        let reverse_dns = raw
            .reverse_dns
            .as_ref()
            .map(|r| self.reverse_dns(r.get_ref()))
            .unwrap_or_default();

        Scenario {
            name: name.unwrap_or_default(),
            description,
            seed,
            capture,
            journal,
            domains,
            hosts,
            reverse_dns,
        }
    }

    /// `[reverse-dns]`: client address = PTR name.
    fn reverse_dns(&mut self, entries: &Entries) -> BTreeMap<IpAddr, String> {
        let mut names = BTreeMap::new();
        let mut seen: HashMap<IpAddr, Span> = HashMap::new();
        for entry in &entries.0 {
            let key = entry.key.trim();
            let value = entry.value.get_ref();
            let mut span = entry.key_span.clone();
            let mut swapped = false;
            let ip = match key.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    let (message, hint) = if *value == Leaf::Table
                        && key.bytes().all(|b| b.is_ascii_digit())
                    {
                        // `192.0.2.1 = "..."`: the key is `192`; show all that was written.
                        let written = self
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
                            "list each address on its own, like \"192.0.2.1\" = \"mail.sender.test\"".to_string(),
                        )
                    } else if let Leaf::Str(v) = value
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
                    self.issue(span, message, hint);
                    // Nested tables, or a name and an address the wrong way round: the
                    // value has nothing more to tell.
                    if *value == Leaf::Table || swapped {
                        continue;
                    }
                    None
                }
            };
            let name = self.ptr_name(key, &entry.value);
            let Some(ip) = ip else { continue };
            if let Some(first) = seen.get(&ip) {
                let line = self.line(first);
                self.issue(
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
    fn ptr_name(&mut self, key: &str, v: &Spanned<Leaf>) -> Option<String> {
        let text = match v.get_ref() {
            Leaf::Str(s) => s,
            other => {
                self.issue(
                    v.span(),
                    format!(
                        "the PTR name of `{key}` must be a string, not {}",
                        other.kind()
                    ),
                    "write it in quotes, like \"192.0.2.1\" = \"mail.sender.test\"",
                );
                return None;
            }
        };
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if lower.parse::<IpAddr>().is_ok() {
            self.issue(
                v.span(),
                format!("`{text}` is an address, not a host name"),
                "a PTR record names a host, like \"192.0.2.1\" = \"mail.sender.test\"",
            );
            return None;
        }
        if !valid_domain(&lower) {
            self.issue(
                v.span(),
                format!("`{text}` is not a host name"),
                "write labels of letters, digits and dashes separated by dots, like \"192.0.2.1\" = \"mail.sender.test\"",
            );
            return None;
        }
        Some(lower)
    }

    fn capture(&mut self, raw: &RawCapture) -> CaptureLimits {
        let default = CaptureLimits::default();
        CaptureLimits {
            max_messages: raw
                .max_messages
                .as_ref()
                .and_then(|v| self.integer("max-messages", v, 0, i64::MAX, "1000", None))
                .map_or(default.max_messages, |n| n as usize),
            max_bytes: raw
                .max_bytes
                .as_ref()
                .and_then(|v| self.size("max-bytes", v, None))
                .unwrap_or(default.max_bytes),
        }
    }

    fn journal(&mut self, raw: &RawJournal) -> JournalLimits {
        let default = JournalLimits::default();
        JournalLimits {
            max_events: raw
                .max_events
                .as_ref()
                .and_then(|v| {
                    self.integer(
                        "max-events",
                        v,
                        1,
                        i64::MAX,
                        "100000",
                        Some("the journal is what the API, logs and transcripts show"),
                    )
                })
                .map_or(default.max_events, |n| n as usize),
        }
    }

    // ---------------------------------------------------------------- domains

    fn domains(&mut self, raw: &[Spanned<RawDomain>], host_names: &[&str]) -> Vec<Domain> {
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut domains = Vec::new();
        for (i, domain) in raw.iter().enumerate() {
            let header = domain.span();
            let d = domain.get_ref();
            let table = format!("domain.{i}");
            let name = match &d.name {
                Some(v) => self.domain_name("name", v),
                None => {
                    self.missing(
                        &table,
                        "name",
                        header.clone(),
                        "this [[domain]] has no `name`",
                        "add the simulated domain's name, like name = \"aol.test\"".into(),
                    );
                    None
                }
            };
            if let Some((name, span)) = &name {
                if let Some(first) = seen.get(name) {
                    let line = self.line(first);
                    self.issue(
                        span.clone(),
                        format!("domain `{name}` is listed twice"),
                        format!(
                            "it is already a [[domain]] on line {line}; merge the two, their mx lists included"
                        ),
                    );
                } else {
                    seen.insert(name.clone(), span.clone());
                }
            }
            let mx = self.mx_records(d, header, &table, host_names);
            domains.push(Domain {
                name: name.map(|n| n.0).unwrap_or_default(),
                mx,
            });
        }
        domains
    }

    fn mx_records(
        &mut self,
        d: &RawDomain,
        header: Span,
        table: &str,
        host_names: &[&str],
    ) -> Vec<MxRecord> {
        let example = "mx = [{ host = \"mx1\", preference = 10 }]";
        let Some(list) = &d.mx else {
            self.missing(
                table,
                "mx",
                header,
                "this [[domain]] has no `mx`",
                format!("list the hosts that receive its mail, like {example}"),
            );
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.issue(
                list.span(),
                "`mx` is empty",
                format!("list at least one host, like {example}"),
            );
        }
        let mut records = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (k, entry) in list.get_ref().iter().enumerate() {
            let e = entry.get_ref();
            let host = match &e.host {
                Some(v) => self.string("host", v, "\"mx1\""),
                None => {
                    self.missing(
                        &format!("{table}.mx.{k}"),
                        "host",
                        entry.span(),
                        "this mx entry has no `host`",
                        "name one of the scenario's hosts, like { host = \"mx1\", preference = 10 }"
                            .into(),
                    );
                    None
                }
            };
            let preference = e
                .preference
                .as_ref()
                .and_then(|v| self.integer("preference", v, 0, 65535, "10", None))
                .map_or(10, |n| n as u16);
            let Some(host) = host else { continue };
            let span = e.host.as_ref().map(|v| v.span()).unwrap_or_default();
            if !host_names.contains(&host) {
                let hosts = if host_names.is_empty() {
                    "the scenario has no hosts yet".to_string()
                } else {
                    format!("the hosts are: {}", host_names.join(", "))
                };
                let hint = match closest(host, host_names.iter().copied()) {
                    Some(close) => did_you_mean(close, &hosts),
                    None => format!("an MX names a [[host]] by its `name`; {hosts}"),
                };
                self.issue(
                    span,
                    format!("MX names host `{host}`, which does not exist"),
                    hint,
                );
            } else if !seen.insert(host.to_string()) {
                self.issue(
                    span,
                    format!("host `{host}` is in this domain's `mx` twice"),
                    "list each host once; give it one preference",
                );
            }
            records.push(MxRecord {
                host: host.to_string(),
                preference,
            });
        }
        records
    }

    // ---------------------------------------------------------------- rule sets

    fn rulesets(&mut self, raw: &[Spanned<RawRuleset>]) -> HashMap<String, At<Vec<Rule>>> {
        let mut sets: HashMap<String, At<Vec<Rule>>> = HashMap::new();
        for (i, set) in raw.iter().enumerate() {
            let s = set.get_ref();
            let table = format!("ruleset.{i}");
            let name = match &s.name {
                Some(v) => self.identifier("name", v, "\"common\""),
                None => {
                    self.missing(
                        &table,
                        "name",
                        set.span(),
                        "this [[ruleset]] has no `name`",
                        "add a name that hosts can list in their `rulesets`, like name = \"common\""
                            .into(),
                    );
                    None
                }
            };
            let label = match &name {
                Some((n, _)) => format!("ruleset {n}"),
                None => format!("ruleset #{}", i + 1),
            };
            let rules = self.rules(&s.rule, &label, &table);
            let Some((name, span)) = name else { continue };
            if let Some((_, first)) = sets.get(&name) {
                let line = self.line(first);
                self.issue(
                    span,
                    format!("there are two rule sets named `{name}`"),
                    format!("the first is on line {line}; rename one of them or merge their rules"),
                );
            } else {
                sets.insert(name, (rules, span));
            }
        }
        sets
    }

    // ---------------------------------------------------------------- hosts

    fn hosts(
        &mut self,
        raw: &[Spanned<RawHost>],
        rulesets: &HashMap<String, At<Vec<Rule>>>,
    ) -> Vec<Host> {
        let mut names: HashMap<String, Span> = HashMap::new();
        let mut listens: Vec<(SocketAddr, Span, String)> = Vec::new();
        let mut hosts = Vec::new();
        for (i, host) in raw.iter().enumerate() {
            let header = host.span();
            let h = host.get_ref();
            let table = format!("host.{i}");
            let name = match &h.name {
                Some(v) => self.identifier("name", v, "\"mx1\""),
                None => {
                    self.missing(
                        &table,
                        "name",
                        header.clone(),
                        "this [[host]] has no `name`",
                        "add a name that MX records and the journal use, like name = \"mx1\""
                            .into(),
                    );
                    None
                }
            };
            if let Some((name, span)) = &name {
                if let Some(first) = names.get(name) {
                    let line = self.line(first);
                    self.issue(
                        span.clone(),
                        format!("there are two hosts named `{name}`"),
                        format!("the first is on line {line}; give each [[host]] its own name"),
                    );
                } else {
                    names.insert(name.clone(), span.clone());
                }
            }

            let listen = match &h.listen {
                Some(v) => self.listen(v),
                None => {
                    self.missing(
                        &table,
                        "listen",
                        header.clone(),
                        "this [[host]] has no `listen` address",
                        "add the address and port it listens on, like listen = \"127.0.0.1:2525\" (port 0 picks a free port)".into(),
                    );
                    None
                }
            };
            let label = match &name {
                Some((n, _)) => format!("host {n}"),
                None => format!("host #{}", i + 1),
            };
            if let Some((addr, span)) = &listen {
                let taken = listens.iter().find(|(a, _, _)| clash(*a, *addr)).cloned();
                if let Some((other, first, other_label)) = taken {
                    let line = self.line(&first);
                    let message = if other == *addr {
                        format!("two hosts listen on {addr}")
                    } else {
                        format!("{addr} and {other} take the same port")
                    };
                    self.issue(
                        span.clone(),
                        message,
                        format!(
                            "{other_label} listens on {other} (line {line}); give each host its own port, or port 0 for a free one"
                        ),
                    );
                }
                listens.push((*addr, span.clone(), label.clone()));
            }

            let hostname = match &h.hostname {
                Some(v) => self.hostname(v).unwrap_or_default(),
                None => format!(
                    "{}.mxfarm.test",
                    name.as_ref()
                        .map_or("", |n| n.0.as_str())
                        .to_ascii_lowercase()
                ),
            };
            let greeting = h
                .greeting
                .as_ref()
                .and_then(|v| self.text_value("greeting", v, "\"ESMTP ready\"", true))
                .unwrap_or_else(|| "ESMTP mxfarm".to_string());
            let extensions = h
                .extensions
                .as_ref()
                .map(|e| self.extensions(e.get_ref()))
                .unwrap_or_default();
            let limits = h
                .limits
                .as_ref()
                .map(|l| self.limits(l.get_ref()))
                .unwrap_or_default();
            let (tls, tls_ok) = match &h.tls {
                Some(v) => self.tls(v),
                None => (TlsSettings::default(), true),
            };
            // Only the host's own rules: a rule set may serve hosts with and without TLS.
            if tls.mode == TlsMode::Off && tls_ok {
                let written = h.tls.as_ref().map(|v| v.span());
                self.rules_need_tls(&h.rule, written, &header);
            }

            let mut rules = self.rules(&h.rule, &label, &table);
            if let Some(v) = &h.rulesets {
                let mut listed = HashSet::new();
                for (set, span) in self.strings("rulesets", v, "[\"common\"]") {
                    if !listed.insert(set) {
                        self.issue(
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
                        self.issue(span, format!("there is no rule set named `{set}`"), hint);
                    }
                }
            }

            hosts.push(Host {
                name: name.map(|n| n.0).unwrap_or_default(),
                listen: listen.map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |l| l.0),
                hostname,
                greeting,
                extensions,
                limits,
                tls,
                rules: Arc::from(rules),
            });
        }
        hosts
    }

    fn listen(&mut self, v: &Spanned<Leaf>) -> Option<At<SocketAddr>> {
        let text = self.string("listen", v, "\"127.0.0.1:2525\"")?;
        let text = text.trim();
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some((addr, v.span())),
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
                self.issue(
                    v.span(),
                    format!("`{text}` is not an IP address and port"),
                    hint,
                );
                None
            }
        }
    }

    fn hostname(&mut self, v: &Spanned<Leaf>) -> Option<String> {
        let text = self.string("hostname", v, "\"mx1.aol.test\"")?;
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let literal = lower.starts_with('[') && lower.ends_with(']') && lower.len() > 2;
        let valid = !lower.is_empty()
            && (literal
                || lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
        if !valid {
            self.issue(
                v.span(),
                format!("`{text}` is not a host name"),
                "write a domain name of letters, digits, dots and dashes, like hostname = \"mx1.aol.test\"",
            );
            return None;
        }
        Some(lower)
    }

    /// A host's `tls`: a mode, or a table of mode, versions, cert and key. The flag is
    /// false when what was written has a problem.
    fn tls(&mut self, v: &Spanned<TableOr<RawTls>>) -> (TlsSettings, bool) {
        let before = self.issues.len();
        let settings = match v.get_ref() {
            TableOr::Table(t) => self.tls_table(t),
            TableOr::Other(Leaf::Bool(b)) => {
                let hint = if *b {
                    format!("write tls = \"valid\" to offer STARTTLS; {TLS_MODES_EXPLAINED}")
                } else {
                    "STARTTLS is off unless `tls` is set: remove it, or write tls = \"off\""
                        .to_string()
                };
                self.issue(
                    v.span(),
                    "`tls` must be a mode in quotes or a table, not a boolean",
                    hint,
                );
                TlsSettings::default()
            }
            TableOr::Other(other) => {
                let leaf = Spanned::new(v.span(), other.clone());
                TlsSettings {
                    mode: self.tls_mode("tls", &leaf).unwrap_or_default(),
                    ..TlsSettings::default()
                }
            }
        };
        (settings, self.issues.len() == before)
    }

    /// `tls = { mode, versions, cert, key }`: the mode is `valid` unless written.
    fn tls_table(&mut self, t: &RawTls) -> TlsSettings {
        let mode = match &t.mode {
            None => Some(TlsMode::Valid),
            Some(m) => self.tls_mode("mode", m),
        };
        let versions = t.versions.as_ref().and_then(|v| self.tls_versions(v));
        if let (Some(TlsMode::Off), Some(v), Some(_)) = (mode, &t.versions, versions) {
            self.issue(
                v.span(),
                "`versions` does nothing with mode = \"off\": the host does not offer STARTTLS",
                "remove versions, or choose a mode, like mode = \"valid\"",
            );
        }
        let mut files = None;
        match mode {
            Some(mode) if mode != TlsMode::Valid => {
                if let Some((key, v)) = [("cert", &t.cert), ("key", &t.key)]
                    .into_iter()
                    .find_map(|(key, v)| v.as_ref().map(|v| (key, v)))
                {
                    let name = mode.as_str();
                    let written = if t.cert.is_some() && t.key.is_some() {
                        "cert and key"
                    } else {
                        key
                    };
                    let hint = if mode == TlsMode::Off {
                        format!(
                            "remove {written}: with mode = \"off\" the host offers no STARTTLS, so it presents no certificate"
                        )
                    } else {
                        format!(
                            "remove {written} to present the farm's {name} certificate, or write mode = \"valid\" to present your own"
                        )
                    };
                    self.issue(
                        v.span(),
                        format!(
                            "`{key}` goes only with mode = \"valid\", not with mode = \"{name}\""
                        ),
                        hint,
                    );
                }
            }
            // Valid, or a mode that is wrong (reported already): check the files.
            _ => {
                let cert = t.cert.as_ref().and_then(|v| self.tls_file("cert", v));
                let key = t.key.as_ref().and_then(|v| self.tls_file("key", v));
                let example = "tls = { cert = \"certs/chain.pem\", key = \"certs/key.pem\" }";
                match (&t.cert, &t.key) {
                    (Some(v), None) => self.issue(
                        v.span(),
                        "`cert` without `key`: a certificate is presented with its private key",
                        format!("add the key's file, like {example}; or remove cert to present a certificate the farm makes"),
                    ),
                    (None, Some(v)) => self.issue(
                        v.span(),
                        "`key` without `cert`: a private key is presented with its certificate",
                        format!("add the certificate chain's file, like {example}; or remove key to present a certificate the farm makes"),
                    ),
                    _ => {}
                }
                if let (Some(cert), Some(key)) = (cert, key) {
                    files = Some(TlsFiles { cert, key });
                }
            }
        }
        TlsSettings {
            mode: mode.unwrap_or(TlsMode::Valid),
            versions: versions.unwrap_or_default(),
            files,
        }
    }

    /// A TLS mode, written as `tls = "..."` or `mode = "..."`.
    fn tls_mode(&mut self, key: &str, v: &Spanned<Leaf>) -> Option<TlsMode> {
        if let Leaf::Str(s) = v.get_ref()
            && key == "tls"
            && let Some(version) = tls_version_name(s)
        {
            self.issue(
                v.span(),
                format!("`{}` is a TLS version, not a mode", s.trim()),
                format!(
                    "write tls = {{ versions = \"{version}\" }} (the mode is then valid), or tls = {{ mode = \"expired\", versions = \"{version}\" }}"
                ),
            );
            return None;
        }
        self.choice(key, v, &TLS_MODES, &TLS_MODE_ALIASES, TLS_MODES_EXPLAINED)
    }

    /// `versions = "1.2" | "1.3" | "any"`.
    fn tls_versions(&mut self, v: &Spanned<Leaf>) -> Option<TlsVersions> {
        let number = match v.get_ref() {
            Leaf::Float(f) => Some(f.to_string()),
            Leaf::Int(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(number) = number {
            let hint = if matches!(number.as_str(), "1.2" | "1.3") {
                format!("write it in quotes: versions = \"{number}\"")
            } else {
                format!("write it in quotes; {TLS_VERSIONS_EXPLAINED}")
            };
            self.issue(v.span(), "`versions` must be a string, not a number", hint);
            return None;
        }
        if let Leaf::Str(s) = v.get_ref() {
            let lower = s.trim().to_ascii_lowercase();
            let bare = lower.trim_start_matches("tlsv").trim_start_matches("tls");
            if matches!(bare, "1" | "1.0" | "1.1" | "10" | "11") {
                self.issue(
                    v.span(),
                    format!("TLS {} is not offered: the farm speaks TLS 1.2 and 1.3 only", s.trim()),
                    format!("to test a sender against an old server, write versions = \"1.2\"; {TLS_VERSIONS_EXPLAINED}"),
                );
                return None;
            }
        }
        self.choice(
            "versions",
            v,
            &[
                ("any", TlsVersions::Any),
                ("1.2", TlsVersions::Only12),
                ("1.3", TlsVersions::Only13),
            ],
            &[
                ("all", "any"),
                ("both", "any"),
                ("1.2+", "any"),
                ("tls1.2", "1.2"),
                ("tlsv1.2", "1.2"),
                ("tls12", "1.2"),
                ("1.2-only", "1.2"),
                ("tls1.3", "1.3"),
                ("tlsv1.3", "1.3"),
                ("tls13", "1.3"),
                ("1.3-only", "1.3"),
            ],
            TLS_VERSIONS_EXPLAINED,
        )
    }

    /// The `cert` or `key` file of a host: a PEM file that exists, relative to the
    /// scenario's directory unless absolute.
    fn tls_file(&mut self, key: &str, v: &Spanned<Leaf>) -> Option<PathBuf> {
        let (what, example) = match key {
            "cert" => ("certificate chain", "\"certs/chain.pem\""),
            _ => ("private key", "\"certs/key.pem\""),
        };
        let written = self.string(key, v, example)?.trim();
        if written.is_empty() {
            self.issue(
                v.span(),
                format!("`{key}` is empty"),
                format!("write the path of the {what} (PEM), like {key} = {example}"),
            );
            return None;
        }
        if written.starts_with('~') {
            self.issue(
                v.span(),
                format!("`~` is not expanded in `{key}`"),
                "write the whole path, or a path relative to the scenario file's directory",
            );
            return None;
        }
        let path = match self.dir {
            Some(dir) => dir.join(written),
            None => PathBuf::from(written),
        };
        // Where it was looked for, when that is not what was written.
        let looked = if path.as_os_str() == written {
            String::new()
        } else {
            format!(" (looked for {})", path.display())
        };
        let relative = "a relative path is relative to the directory of the scenario file (of the current directory for a scenario given as text)";
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let (message, hint) = match e.kind() {
                    std::io::ErrorKind::NotFound => (
                        format!("the {what} file `{written}` does not exist{looked}"),
                        format!("check the path; {relative}"),
                    ),
                    std::io::ErrorKind::IsADirectory => (
                        format!("`{written}` is a directory, not a {what} file{looked}"),
                        format!("give the path of a PEM file, like {key} = {example}"),
                    ),
                    _ => (
                        format!("cannot read the {what} file `{written}`{looked}: {e}"),
                        "make the file readable by this user".to_string(),
                    ),
                };
                self.issue(v.span(), message, hint);
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let has_cert = text.contains("-----BEGIN CERTIFICATE-----");
        let has_key = text.contains("-----BEGIN ") && text.contains("PRIVATE KEY-----");
        let problem = match key {
            "cert" if has_cert => None,
            "cert" if has_key => Some((
                format!("`{written}` holds a private key, not a certificate"),
                "cert and key may be swapped: cert is the certificate chain (-----BEGIN CERTIFICATE-----), key its private key".to_string(),
            )),
            "cert" => Some((
                format!("`{written}` holds no PEM certificate"),
                "give a PEM file that starts with -----BEGIN CERTIFICATE----- (the host's certificate first, then its issuers); convert a DER file with openssl x509 -inform der -in cert.der -out cert.pem".to_string(),
            )),
            _ if has_key => None,
            _ if has_cert => Some((
                format!("`{written}` holds a certificate, not a private key"),
                "cert and key may be swapped: key is the private key (-----BEGIN PRIVATE KEY-----), cert the certificate chain".to_string(),
            )),
            _ => Some((
                format!("`{written}` holds no PEM private key"),
                "give a PEM file that starts with -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)".to_string(),
            )),
        };
        if let Some((message, hint)) = problem {
            self.issue(v.span(), message, hint);
            return None;
        }
        Some(path)
    }

    /// Each of a host's own rules that uses STARTTLS, on a host whose `tls` is off (not
    /// written, or written at `written`): one problem per rule, at its first TLS key. A
    /// key at a stage where it cannot be used is a problem of its own, not repeated here.
    fn rules_need_tls(&mut self, rules: &[Spanned<RawRule>], written: Option<Span>, host: &Span) {
        for rule in rules {
            let r = rule.get_ref();
            let stage = r.stage.as_ref().and_then(|v| match v.get_ref() {
                Leaf::Str(s) => Stage::parse(&s.trim().to_ascii_lowercase()).map(|st| (st, v)),
                _ => None,
            });
            let Some((stage, stage_value)) = stage else {
                continue;
            };
            let condition = r.when.as_ref().and_then(|w| w.get_ref().tls.as_ref());
            let hide = r
                .then
                .as_ref()
                .and_then(|t| t.get_ref().hide_starttls.as_ref());
            let found = match (stage, condition, hide) {
                // `tls-fault` is used at `starttls` only: the stage says it all
                (Stage::Starttls, _, _) => (stage_value.span(), "a rule at `starttls`"),
                (Stage::Connect, _, _) => continue,
                (_, Some(v), _) => (v.span(), "a `tls` condition"),
                (Stage::Ehlo, None, Some(v)) => (v.span(), "`hide-starttls`"),
                _ => continue,
            };
            let (span, what) = found;
            let hint = match &written {
                Some(at) => format!(
                    "the host's `tls` on line {} is off: set it to \"valid\" (or another mode), or remove this rule",
                    self.line(at)
                ),
                None => format!(
                    "add tls = \"valid\" (or another mode) to this [[host]] on line {}, or remove this rule",
                    self.line(host)
                ),
            };
            self.issue(
                span,
                format!("{what}, but this host does not offer STARTTLS (tls is off)"),
                hint,
            );
        }
    }

    fn extensions(&mut self, raw: &RawExtensions) -> Extensions {
        let d = Extensions::default();
        let mut flag = |key: &str, v: &Option<Spanned<Leaf>>, default: bool| {
            v.as_ref()
                .and_then(|v| self.boolean(key, v))
                .unwrap_or(default)
        };
        Extensions {
            pipelining: flag("pipelining", &raw.pipelining, d.pipelining),
            size: flag("size", &raw.size, d.size),
            eight_bit_mime: flag("8bitmime", &raw.eight_bit_mime, d.eight_bit_mime),
            enhanced_status_codes: flag(
                "enhancedstatuscodes",
                &raw.enhancedstatuscodes,
                d.enhanced_status_codes,
            ),
            smtputf8: flag("smtputf8", &raw.smtputf8, d.smtputf8),
            chunking: flag("chunking", &raw.chunking, d.chunking),
        }
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let d = Limits::default();
        let count = |v: &mut Self, key: &str, raw: &Option<Spanned<Leaf>>, default: usize, why| {
            raw.as_ref()
                .and_then(|r| v.integer(key, r, 1, i64::MAX, &default.to_string(), Some(why)))
                .map_or(default, |n| n as usize)
        };
        let timeout = |v: &mut Self, key: &str, raw: &Option<Spanned<Leaf>>, default| {
            raw.as_ref()
                .and_then(|r| v.duration(key, r, Some("every client would time out at once")))
                .unwrap_or(default)
        };
        Limits {
            max_connections: count(
                self,
                "max-connections",
                &raw.max_connections,
                d.max_connections,
                "no client could ever connect",
            ),
            max_recipients: count(
                self,
                "max-recipients",
                &raw.max_recipients,
                d.max_recipients,
                "no message could have a recipient",
            ),
            max_message_size: raw
                .max_message_size
                .as_ref()
                .and_then(|r| self.size("max-message-size", r, Some("no message could be sent")))
                .unwrap_or(d.max_message_size),
            max_line_length: count(
                self,
                "max-line-length",
                &raw.max_line_length,
                d.max_line_length,
                "no command would fit",
            ),
            max_errors: count(
                self,
                "max-errors",
                &raw.max_errors,
                d.max_errors,
                "write 1 to close after the first error",
            ),
            command_timeout: timeout(
                self,
                "command-timeout",
                &raw.command_timeout,
                d.command_timeout,
            ),
            data_timeout: timeout(self, "data-timeout", &raw.data_timeout, d.data_timeout),
        }
    }

    // ---------------------------------------------------------------- rules

    /// Validates a list of rules; `label` is `host mx1` or `ruleset common`, `table` the
    /// path of the host or rule set (`host.0`).
    fn rules(&mut self, raw: &[Spanned<RawRule>], label: &str, table: &str) -> Vec<Rule> {
        let mut rules = Vec::new();
        // The first rule of each stage that has no conditions: it shadows later ones.
        let mut catch_all: HashMap<Stage, usize> = HashMap::new();
        for (i, rule) in raw.iter().enumerate() {
            let number = i + 1;
            let r = rule.get_ref();
            let table = format!("{table}.rule.{i}");
            let stage = self.stage(r, rule.span(), &table);
            if let Some(stage) = stage {
                if let Some(first) = catch_all.get(&stage) {
                    self.issue(
                        rule.span(),
                        format!(
                            "{label} rule {number} can never match: rule {first} above it matches every `{stage}` first"
                        ),
                        format!(
                            "rules are tried in order and the first match wins; move this rule above rule {first}, or give rule {first} a `when`"
                        ),
                    );
                }
                let unconditional = r.when.as_ref().is_none_or(|w| is_empty_when(w.get_ref()));
                // Greylisting and limits let what they do not refuse pass on to later rules.
                let passes_on = r.then.as_ref().is_some_and(|t| {
                    let t = t.get_ref();
                    t.greylist.is_some() || t.rate_limit.is_some() || t.concurrency.is_some()
                });
                if unconditional && !passes_on {
                    catch_all.entry(stage).or_insert(number);
                }
            }
            let when = match &r.when {
                Some(w) => self.conditions(w.get_ref(), stage),
                None => Vec::new(),
            };
            let then = match &r.then {
                Some(t) => {
                    let table = format!("{table}.then");
                    let misspelt = self.has_unknown(&table);
                    self.action(t.get_ref(), t.span(), stage, &table, misspelt)
                }
                None => {
                    self.missing(
                        &table,
                        "then",
                        rule.span(),
                        "this rule has no `then`: what to do when it matches",
                        "add an action, like then = { reply = \"451 4.7.1 Try again later\" } or then = { accept = true }".into(),
                    );
                    None
                }
            };
            if let (Some(stage), Some(then)) = (stage, then) {
                rules.push(Rule {
                    stage,
                    when,
                    then,
                    origin: format!("{label} rule {number}").into(),
                });
            }
        }
        rules
    }

    fn stage(&mut self, r: &RawRule, header: Span, table: &str) -> Option<Stage> {
        let Some(v) = &r.stage else {
            self.missing(
                table,
                "stage",
                header,
                "this rule has no `stage`",
                format!("add the point of the conversation it decides, like stage = \"rcpt\"; the stages are {STAGE_NAMES}"),
            );
            return None;
        };
        let name = self.string("stage", v, "\"rcpt\"")?;
        let lower = name.trim().to_ascii_lowercase();
        if let Some(stage) = Stage::parse(&lower) {
            return Some(stage);
        }
        let alias = match lower.as_str() {
            "eod" | "dot" | "eom" | "end-of-message" | "end" | "message" | "end_of_data"
            | "enddata" => Some("end-of-data"),
            "greeting" | "banner" | "connection" => Some("connect"),
            "mail-from" | "from" | "sender" => Some("mail"),
            "rcpt-to" | "to" | "recipient" => Some("rcpt"),
            "tls" | "start-tls" | "start_tls" | "stls" => Some("starttls"),
            _ => None,
        };
        let names = Stage::ALL.map(Stage::as_str);
        let suggestion = alias.or_else(|| closest(&lower, names.iter().copied()));
        let hint = match suggestion {
            Some(s) => did_you_mean(s, &format!("the stages are {STAGE_NAMES}")),
            None => format!("the stages are {STAGE_NAMES}"),
        };
        self.issue(v.span(), format!("unknown stage `{name}`"), hint);
        None
    }

    fn conditions(&mut self, w: &RawWhen, stage: Option<Stage>) -> Vec<Condition> {
        let mut conditions = Vec::new();
        let before = |s: Stage| stage.is_some_and(|st| rank(st) < rank(s));

        if let Some(v) = &w.client {
            let nets = self
                .strings("client", v, "\"192.0.2.0/24\"")
                .into_iter()
                .filter_map(|(s, span)| self.network(s, span))
                .collect();
            conditions.push(Condition::Client(nets));
        }
        if let Some(v) = &w.helo {
            if before(Stage::Ehlo) {
                self.issue(
                    v.span(),
                    "`helo` cannot be tested at `connect`: the client has not said EHLO yet",
                    "use stage = \"ehlo\" or a later stage, or remove `helo`",
                );
            }
            let globs = self
                .strings("helo", v, "\"*.example.test\"")
                .into_iter()
                .map(|(s, _)| Glob::new(s.trim()))
                .collect();
            conditions.push(Condition::Helo(globs));
        }
        if let Some(v) = &w.mail {
            if before(Stage::Mail) {
                self.issue(
                    v.span(),
                    format!(
                        "`mail` cannot be tested at `{}`: the client has not sent MAIL FROM yet",
                        stage.map_or("", Stage::as_str)
                    ),
                    "use stage = \"mail\" or a later stage, or remove `mail`",
                );
            }
            let patterns = self.addresses("mail", v, false);
            conditions.push(Condition::Sender(patterns));
        }
        if let Some(v) = &w.rcpt {
            if before(Stage::Rcpt) {
                self.issue(
                    v.span(),
                    format!(
                        "`rcpt` cannot be tested at `{}`: the client has not sent RCPT TO yet",
                        stage.map_or("", Stage::as_str)
                    ),
                    "use stage = \"rcpt\" (each recipient) or \"data\"/\"end-of-data\" (any accepted recipient), or remove `rcpt`",
                );
            }
            let patterns = self.addresses("rcpt", v, true);
            conditions.push(Condition::Recipient(patterns));
        }
        let mut sizes = [None, None];
        for (i, (key, raw)) in [("size-above", &w.size_above), ("size-below", &w.size_below)]
            .into_iter()
            .enumerate()
        {
            let Some(v) = raw else { continue };
            if before(Stage::Mail) {
                self.issue(
                    v.span(),
                    format!(
                        "`{key}` cannot be tested at `{}`: there is no message yet",
                        stage.map_or("", Stage::as_str)
                    ),
                    "use stage = \"mail\" (the SIZE= the client declares) or \"end-of-data\" (the message itself)",
                );
            }
            if let Some(size) = self.size(key, v, None) {
                sizes[i] = Some((size, v.span()));
            }
        }
        if let [Some((above, _)), Some((below, span))] = &sizes
            && below.saturating_sub(*above) <= 1
        {
            self.issue(
                span.clone(),
                format!("no message is above {above} bytes and below {below} bytes, so this rule never matches"),
                "make `size-below` bigger than `size-above`, or keep only one of them",
            );
        }
        if let Some((size, _)) = sizes[0] {
            conditions.push(Condition::SizeAbove(size));
        }
        if let Some((size, _)) = sizes[1] {
            conditions.push(Condition::SizeBelow(size));
        }
        conditions.extend(self.counted(w, stage));
        if let Some(v) = &w.chance {
            let p = match v.get_ref() {
                Leaf::Float(p) => Some(*p),
                Leaf::Int(n) => Some(*n as f64),
                other => {
                    self.issue(
                        v.span(),
                        format!(
                            "`chance` must be a number from 0.0 to 1.0, not {}",
                            other.kind()
                        ),
                        "write a probability without quotes, like chance = 0.25",
                    );
                    None
                }
            };
            if let Some(p) = p {
                if (0.0..=1.0).contains(&p) {
                    conditions.push(Condition::Chance(p));
                } else {
                    let hint = if (1.0..=100.0).contains(&p) {
                        format!(
                            "a chance is a fraction from 0.0 (never) to 1.0 (always): for {p}% write chance = {}",
                            p / 100.0
                        )
                    } else {
                        "write a probability from 0.0 (never) to 1.0 (always), like chance = 0.25"
                            .to_string()
                    };
                    self.issue(
                        v.span(),
                        format!("`chance` is {p}, outside 0.0 to 1.0"),
                        hint,
                    );
                }
            }
        }
        if let Some(v) = &w.time {
            let range = match v.get_ref() {
                Leaf::Str(s) => parse_time_range(s).map_err(|(why, hint)| {
                    (
                        format!("`{}` is not a time range: {why}", s.trim()),
                        hint.unwrap_or_else(|| TIME_HINT.to_string()),
                    )
                }),
                other => Err((
                    format!("`time` must be a range in quotes, not {}", other.kind()),
                    TIME_HINT.to_string(),
                )),
            };
            match range {
                Ok(range) => conditions.push(Condition::Time(range)),
                Err((message, hint)) => self.issue(v.span(), message, hint),
            }
        }
        if let Some(v) = &w.connection
            && let Some(range) =
                self.number_range("connection", v, "the host's first connection is 1")
        {
            conditions.push(Condition::Connection(range));
        }
        if let Some(v) = &w.message {
            if before(Stage::Mail) {
                self.issue(
                    v.span(),
                    format!(
                        "`message` cannot be tested at `{}`: no message has started yet",
                        stage.map_or("", Stage::as_str)
                    ),
                    "use stage = \"mail\" or a later stage; to count the host's connections, use `connection`",
                );
            }
            if let Some(range) =
                self.number_range("message", v, "the first message of a connection is 1")
            {
                conditions.push(Condition::Message(range));
            }
        }
        if let Some(v) = &w.ptr {
            let checks = [
                ("missing", PtrCheck::Missing),
                ("present", PtrCheck::Present),
                ("mismatch", PtrCheck::MismatchesHelo),
            ];
            let aliases = [
                ("none", "missing"),
                ("absent", "missing"),
                ("no", "missing"),
                ("exists", "present"),
                ("yes", "present"),
                ("mismatches-helo", "mismatch"),
                ("helo-mismatch", "mismatch"),
                ("mismatched", "mismatch"),
            ];
            let explained = "`ptr` is one of missing (the client's address has no PTR name), present, or mismatch (it has none, or one other than the EHLO name)";
            if let Some(check) = self.choice("ptr", v, &checks, &aliases, explained) {
                if check == PtrCheck::MismatchesHelo && before(Stage::Ehlo) {
                    self.issue(
                        v.span(),
                        "`ptr = \"mismatch\"` cannot be tested at `connect`: the client has not said EHLO yet",
                        "use stage = \"ehlo\" or a later stage; ptr = \"missing\" can be tested at `connect`",
                    );
                }
                conditions.push(Condition::Ptr(check));
            }
        }
        if let Some(v) = &w.helo_fqdn {
            if before(Stage::Ehlo) {
                self.issue(
                    v.span(),
                    "`helo-fqdn` cannot be tested at `connect`: the client has not said EHLO yet",
                    "use stage = \"ehlo\" or a later stage, or remove `helo-fqdn`",
                );
            }
            if let Some(b) = self.boolean("helo-fqdn", v) {
                conditions.push(Condition::HeloFqdn(b));
            }
        }
        if let Some(v) = &w.tls
            && let Some(b) = self.tls_condition(v, stage)
        {
            conditions.push(Condition::Tls(b));
        }
        conditions
    }

    /// `tls = true | false`: whether STARTTLS has completed, from `ehlo` on.
    fn tls_condition(&mut self, v: &Spanned<Leaf>, stage: Option<Stage>) -> Option<bool> {
        match stage {
            Some(Stage::Connect) => self.issue(
                v.span(),
                "`tls` cannot be tested at `connect`: every connection starts in plain text, so it is always false",
                "test it from `ehlo` on; to require TLS before mail, write stage = \"mail\", when = { tls = false }, then = { reply = \"530 5.7.0 Must issue a STARTTLS command first\" }",
            ),
            Some(Stage::Starttls) => self.issue(
                v.span(),
                "`tls` cannot be tested at `starttls`: STARTTLS is not offered again once TLS is on (RFC 3207), so it is always false",
                "remove `tls`; a `starttls` rule only ever sees plain-text sessions",
            ),
            _ => {}
        }
        if let Leaf::Str(s) = v.get_ref()
            && TLS_MODES
                .iter()
                .any(|(name, _)| s.trim().eq_ignore_ascii_case(name))
        {
            self.issue(
                v.span(),
                "`tls` in `when` is true or false: whether STARTTLS has completed",
                format!(
                    "write tls = true or tls = false; the certificate is chosen by the host's own tls = \"{}\"",
                    s.trim()
                ),
            );
            return None;
        }
        self.boolean("tls", v)
    }

    /// One of a few names (`per`, `state`, `kind`, `ptr`); `aliases` maps other words a
    /// newcomer may write to the name meant; `explained` lists the names.
    fn choice<T: Copy>(
        &mut self,
        key: &str,
        v: &Spanned<Leaf>,
        names: &[(&str, T)],
        aliases: &[(&str, &str)],
        explained: &str,
    ) -> Option<T> {
        let text = match v.get_ref() {
            Leaf::Str(s) => s,
            other => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be a string, not {}", other.kind()),
                    format!(
                        "write it in quotes, like {key} = \"{}\"; {explained}",
                        names[0].0
                    ),
                );
                return None;
            }
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
        self.issue(v.span(), format!("unknown `{key}`: `{text}`"), hint);
        None
    }

    /// An attempt, connection or message range: `"3"`, `"<3"`, `">=3"`, `"2-4"` or 3.
    /// `first` says where counting starts, like "the first attempt is 1".
    fn number_range(&mut self, key: &str, v: &Spanned<Leaf>, first: &str) -> Option<AttemptRange> {
        let article = if key.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        let hint = format!("write \"3\", \"<3\", \"<=3\", \">3\", \">=3\" or \"2-4\" ({first})");
        match v.get_ref() {
            Leaf::Str(s) => match parse_range(s, key) {
                Ok(range) => Some(range),
                Err(why) => {
                    self.issue(
                        v.span(),
                        format!("`{s}` is not {article} {key} range: {why}"),
                        hint,
                    );
                    None
                }
            },
            Leaf::Int(n) if (1..=i64::from(u32::MAX)).contains(n) => Some(AttemptRange {
                min: *n as u32,
                max: *n as u32,
            }),
            Leaf::Int(n) => {
                self.issue(
                    v.span(),
                    format!("{key} {n} never happens: {first}"),
                    format!("write a range in quotes, like {key} = \"<3\" (the first two {key}s)"),
                );
                None
            }
            other => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be a range in quotes, not {}", other.kind()),
                    hint,
                );
                None
            }
        }
    }

    /// `attempt` and `first-attempt-within`, with the `per` they share.
    fn counted(&mut self, w: &RawWhen, stage: Option<Stage>) -> Vec<Condition> {
        let mut conditions = Vec::new();
        let mut unknown_per = false;
        let per = match &w.per {
            None => None,
            Some(v) => {
                if w.attempt.is_none() && w.first_attempt_within.is_none() {
                    self.issue(
                        v.span(),
                        "`per` says what `attempt` or `first-attempt-within` counts, but this rule has neither",
                        "add an attempt range, like attempt = \"<3\", or a time since the first attempt, like first-attempt-within = \"2h\"; or remove `per`",
                    );
                }
                let keys = [
                    ("client", AttemptKey::Client),
                    ("sender", AttemptKey::Sender),
                    ("recipient", AttemptKey::Recipient),
                    ("triplet", AttemptKey::Triplet),
                ];
                let aliases = [("ip", "client"), ("rcpt", "recipient"), ("mail", "sender")];
                let explained = "`per` is one of client, sender, recipient, triplet";
                let key = self.choice("per", v, &keys, &aliases, explained);
                unknown_per = key.is_none();
                key.map(|key| (key, v.span()))
            }
        };
        let range = w
            .attempt
            .as_ref()
            .and_then(|v| self.number_range("attempt", v, "the first attempt is 1"));
        let within = w.first_attempt_within.as_ref().and_then(|v| {
            self.duration(
                "first-attempt-within",
                v,
                Some("no time is less than 0, so the rule would never match"),
            )
        });
        let counted = [
            ("attempt", &w.attempt),
            ("first-attempt-within", &w.first_attempt_within),
        ]
        .into_iter()
        .find_map(|(name, v)| v.as_ref().map(|v| (name, v)));
        // Without a counted key, or with an unknown `per` (reported already), there is no
        // more to say.
        let Some((name, v)) = counted.filter(|_| !unknown_per) else {
            return conditions;
        };
        let (key, per_span) = match per {
            Some((key, span)) => (key, Some(span)),
            None => (AttemptKey::Triplet, None),
        };
        if let Some(stage) = stage {
            let choices = if rank(stage) < rank(Stage::Mail) {
                "per = \"client\" (connections from the client's IP address)"
            } else {
                "per = \"client\" (connections from the client's IP address) or per = \"sender\" (MAIL commands with this sender)"
            };
            let counted = match key {
                AttemptKey::Recipient | AttemptKey::Triplet if stage != Stage::Rcpt => true,
                AttemptKey::Sender if rank(stage) < rank(Stage::Mail) => true,
                _ => false,
            };
            if counted {
                let key_name = match key {
                    AttemptKey::Client => "client",
                    AttemptKey::Sender => "sender",
                    AttemptKey::Recipient => "recipient",
                    AttemptKey::Triplet => "triplet",
                };
                let why = match key {
                    AttemptKey::Sender => "there is no sender before MAIL FROM",
                    _ => "it counts RCPT commands, so it exists only at `rcpt`",
                };
                match per_span {
                    Some(span) => self.issue(
                        span,
                        format!("`per = \"{key_name}\"` cannot be counted at `{stage}`: {why}"),
                        format!("write {choices}, or use stage = \"rcpt\""),
                    ),
                    None => self.issue(
                        v.span(),
                        format!(
                            "`{name}` at `{stage}` needs `per`: the default, `triplet`, is counted only at `rcpt`"
                        ),
                        format!("add {choices}"),
                    ),
                }
            }
        }
        if let Some(range) = range {
            conditions.push(Condition::Attempt { per: key, range });
        }
        if let Some(within) = within {
            conditions.push(Condition::FirstAttemptWithin { per: key, within });
        }
        conditions
    }

    fn network(&mut self, text: &str, span: Span) -> Option<IpNet> {
        let text = text.trim();
        let parsed = if text.contains('/') {
            text.parse::<IpNet>().ok().map(|n| n.trunc())
        } else {
            text.parse::<IpAddr>().ok().map(IpNet::from)
        };
        if parsed.is_none() {
            self.issue(
                span,
                format!("`{text}` is not an IP address or network"),
                "write an address like \"192.0.2.7\" or \"2001:db8::7\", or a network like \"192.0.2.0/24\"",
            );
        }
        parsed
    }

    fn addresses(&mut self, key: &str, v: &Spanned<Leaf>, recipient: bool) -> Vec<AddressPattern> {
        let example = if recipient {
            "\"alice@aol.test\""
        } else {
            "\"me@example.test\""
        };
        let mut patterns = Vec::new();
        for (text, span) in self.strings(key, v, example) {
            let text = text.trim();
            let hint = "write an address (\"alice@aol.test\"), a glob (\"full-*@aol.test\"), a domain (\"@aol.test\") or the null sender (\"<>\")";
            if text == "<>" {
                if recipient {
                    self.issue(
                        span,
                        "`<>` is the null sender; it cannot be a recipient",
                        hint,
                    );
                } else {
                    patterns.push(AddressPattern::Null);
                }
            } else if text.starts_with('<') && text.ends_with('>') {
                self.issue(
                    span,
                    format!("write the address without angle brackets: `{text}`"),
                    format!("write \"{}\"", &text[1..text.len() - 1]),
                );
            } else if let Some(domain) = text.strip_prefix('@') {
                if domain.is_empty() || domain.contains(['@', ' ']) {
                    self.issue(span, format!("`{text}` is not an address pattern"), hint);
                } else {
                    patterns.push(AddressPattern::Domain(domain.to_ascii_lowercase()));
                }
            } else if text.is_empty()
                || text.contains(char::is_whitespace)
                || !(text.contains('@') || text.contains('*'))
            {
                self.issue(span, format!("`{text}` is not an address pattern"), hint);
            } else {
                patterns.push(AddressPattern::Glob(Glob::new(text)));
            }
        }
        patterns
    }

    /// `table` is the path of the `then` table (`host.0.rule.1.then`); `misspelt`: it has
    /// an unknown key, reported already, so an action that seems to be missing is most
    /// likely that key.
    fn action(
        &mut self,
        t: &RawThen,
        span: Span,
        stage: Option<Stage>,
        table: &str,
        misspelt: bool,
    ) -> Option<Action> {
        let delay = t
            .delay
            .as_ref()
            .and_then(|v| self.duration("delay", v, None));
        let accept = t.accept.as_ref().and_then(|v| {
            self.flag(
                "accept",
                v,
                "to refuse, write a reply like reply = \"550 5.7.1 Not accepted\"",
            )
        });
        let close = t.close.as_ref().and_then(|v| self.boolean("close", v));
        let reply = t
            .reply
            .as_ref()
            .and_then(|v| self.reply(v, stage, close == Some(true)));
        let hang = t.hang.as_ref().and_then(|v| {
            self.duration(
                "hang",
                v,
                Some("to close without a reply, write close = true"),
            )
        });
        let reset = t.reset.as_ref().and_then(|v| {
            self.flag(
                "reset",
                v,
                "to close the connection without a reply, write close = true",
            )
        });
        let lose_reply = t.lose_reply.as_ref().and_then(|v| {
            if let Some(stage) = stage
                && stage != Stage::EndOfData
            {
                self.issue(
                    v.span(),
                    format!("`lose-reply` cannot be used at `{stage}`: it loses the reply to a message"),
                    "use stage = \"end-of-data\": it keeps the message and closes before the 250, so the sender sends it again; to close without a reply at another stage, write close = true",
                );
            }
            self.flag(
                "lose-reply",
                v,
                "to accept the message as usual, write accept = true",
            )
        });
        let greylist = t.greylist.as_ref().and_then(|v| self.greylist(v, stage));
        let rate_limit = t
            .rate_limit
            .as_ref()
            .and_then(|v| self.rate_limit(v, stage, &format!("{table}.rate-limit")));
        let concurrency = t
            .concurrency
            .as_ref()
            .and_then(|v| self.concurrency(v, stage, &format!("{table}.concurrency")));
        let tls_fault = t
            .tls_fault
            .as_ref()
            .and_then(|v| self.tls_fault(v, stage, &format!("{table}.tls-fault")));
        let hide_starttls = t.hide_starttls.as_ref().and_then(|v| {
            if let Some(stage) = stage
                && stage != Stage::Ehlo
            {
                self.issue(
                    v.span(),
                    format!("`hide-starttls` cannot be used at `{stage}`: it leaves STARTTLS out of the EHLO reply"),
                    "use stage = \"ehlo\", with a `when` such as chance = 0.5 or connection = \"<=3\" to advertise STARTTLS on some connections only",
                );
            }
            self.flag(
                "hide-starttls",
                v,
                "to advertise STARTTLS as usual, write accept = true",
            )
        });

        let close_alone = t.reply.is_none()
            && t.close
                .as_ref()
                .is_some_and(|c| *c.get_ref() != Leaf::Bool(false));
        let present: Vec<&str> = [
            ("accept", t.accept.is_some()),
            ("reply", t.reply.is_some()),
            ("close", close_alone),
            ("hang", t.hang.is_some()),
            ("reset", t.reset.is_some()),
            ("lose-reply", t.lose_reply.is_some()),
            ("greylist", t.greylist.is_some()),
            ("rate-limit", t.rate_limit.is_some()),
            ("concurrency", t.concurrency.is_some()),
            ("tls-fault", t.tls_fault.is_some()),
            ("hide-starttls", t.hide_starttls.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let choices = "write exactly one action: accept = true, reply = \"...\", close = true, hang = \"...\", reset = true, lose-reply = true, greylist = { ... }, rate-limit = { ... }, concurrency = { ... }, tls-fault = \"...\" or hide-starttls = true";
        match present.len() {
            0 if t.delay.is_some() => {
                return delay.map(|d| Action {
                    delay: Some(d),
                    kind: ActionKind::Accept,
                });
            }
            0 => {
                if !misspelt {
                    self.issue(
                        span,
                        "`then` has no action",
                        format!("{choices} (or delay = \"...\" alone: accept after a wait)"),
                    );
                }
                return None;
            }
            1 => {}
            _ => {
                let has = |name: &str| present.contains(&name);
                let table = ["greylist", "rate-limit", "concurrency"]
                    .into_iter()
                    .find(|name| has(name));
                let hint = match table {
                    _ if has("tls-fault") && has("reply") => {
                        "`tls-fault` breaks the handshake after the usual 220: remove reply; to refuse STARTTLS instead, keep only reply = \"454 4.7.0 TLS not available due to temporary reason\""
                            .to_string()
                    }
                    _ if has("tls-fault") && has("close") => {
                        "to close right after the 220, write tls-fault = \"close-after-ready\" alone"
                            .to_string()
                    }
                    _ if has("hide-starttls") && has("accept") => {
                        "hide-starttls = true accepts the EHLO already: remove accept".to_string()
                    }
                    Some(table) if has("reply") => format!(
                        "`{table}` has its own reply: write it inside, like {table} = {{ reply = \"...\" }}"
                    ),
                    Some("rate-limit") if has("close") => {
                        "write close = true inside the limit: rate-limit = { ..., close = true }"
                            .to_string()
                    }
                    Some("greylist") if has("close") => {
                        "greylisting lets the client go on after its deferral; to close after it, give it a 421 reply: greylist = { reply = \"421 4.7.0 ...\" }"
                            .to_string()
                    }
                    Some("concurrency") if has("close") => {
                        "a concurrency refusal always closes the connection: remove close"
                            .to_string()
                    }
                    _ => format!("{choices}; close = true may go with reply, to close after it"),
                };
                self.issue(
                    span,
                    format!(
                        "`then` has {} actions: {}",
                        present.len(),
                        present.join(", ")
                    ),
                    hint,
                );
                return None;
            }
        }
        let kind = match present[0] {
            "accept" => {
                accept?;
                ActionKind::Accept
            }
            "reply" => {
                let reply = reply?;
                let close = close.unwrap_or(false) || reply.closes_connection();
                ActionKind::Reply { reply, close }
            }
            "close" => {
                close?;
                ActionKind::Close
            }
            "hang" => ActionKind::Hang(hang?),
            "reset" => {
                reset?;
                ActionKind::Reset
            }
            "lose-reply" => {
                lose_reply?;
                ActionKind::LoseReply
            }
            "greylist" => ActionKind::Greylist(Arc::new(greylist?)),
            "rate-limit" => ActionKind::RateLimit(Arc::new(rate_limit?)),
            "concurrency" => ActionKind::Concurrency(Arc::new(concurrency?)),
            "tls-fault" => ActionKind::TlsFault(tls_fault?),
            _ => {
                hide_starttls?;
                ActionKind::HideStarttls
            }
        };
        if t.delay.is_some() && delay.is_none() {
            return None;
        }
        Some(Action { delay, kind })
    }

    /// An action written as `key = true`: `false` does nothing, and `instead` says what
    /// may have been meant.
    fn flag(&mut self, key: &str, v: &Spanned<Leaf>, instead: &str) -> Option<bool> {
        let b = self.boolean(key, v)?;
        if !b {
            self.issue(
                v.span(),
                format!("`{key} = false` does nothing"),
                format!("remove it; {instead}"),
            );
        }
        Some(b)
    }

    /// The table of a `greylist`, `rate-limit` or `concurrency` action, or the problem
    /// with what was written instead.
    fn action_table<'a, T>(
        &mut self,
        key: &str,
        v: &'a Spanned<TableOr<T>>,
        example: &str,
    ) -> Option<&'a T> {
        match v.get_ref() {
            TableOr::Table(t) => Some(t),
            TableOr::Other(other) => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be a table, not {}", other.kind()),
                    format!("write {example}"),
                );
                None
            }
        }
    }

    fn greylist(
        &mut self,
        v: &Spanned<TableOr<RawGreylist>>,
        stage: Option<Stage>,
    ) -> Option<Greylist> {
        if let Some(stage) = stage
            && !matches!(stage, Stage::Rcpt | Stage::Data | Stage::EndOfData)
        {
            self.issue(
                v.span(),
                format!("`greylist` cannot be used at `{stage}`: greylisting keys on the client, the sender and each recipient, all known only from `rcpt` on"),
                "use stage = \"rcpt\" (as postgrey does), or \"data\" or \"end-of-data\" (to defer the whole message, as for the null sender)",
            );
        }
        let g = self.action_table(
            "greylist",
            v,
            "greylist = {} for postgrey's defaults (a 5-minute delay), or change some of them, like greylist = { delay = \"30m\" }",
        )?;
        // The value and, if it was written, where.
        let duration = |this: &mut Self, key, raw: &Option<Spanned<Leaf>>, default, why| {
            let value = raw.as_ref().map(|r| this.duration(key, r, Some(why)));
            match value {
                None => Some((default, None)),
                Some(Some(d)) => Some((d, raw.as_ref().map(|r| r.span()))),
                Some(None) => None,
            }
        };
        let delay = duration(
            self,
            "delay",
            &g.delay,
            Duration::from_secs(300),
            "every client would pass at once",
        );
        let retry_window = duration(
            self,
            "retry-window",
            &g.retry_window,
            Duration::from_secs(2 * 24 * 3600),
            "no retry could ever pass",
        );
        let expiry = duration(
            self,
            "expiry",
            &g.expiry,
            Duration::from_secs(35 * 24 * 3600),
            "every triplet would be forgotten at once",
        );
        if let (Some((delay, delay_at)), Some((window, window_at))) = (&delay, &retry_window)
            && delay >= window
        {
            let span = window_at.clone().or(delay_at.clone()).unwrap_or(v.span());
            self.issue(
                span,
                format!(
                    "`delay` ({}) is not shorter than `retry-window` ({}): no retry could pass",
                    show(*delay),
                    show(*window)
                ),
                "a retry passes once `delay` has gone by, if it comes within `retry-window` of the first attempt; make retry-window longer than delay (postgrey: delay = \"5m\", retry-window = \"2d\")",
            );
        }
        if let (Some((delay, delay_at)), Some((expiry, expiry_at))) = (&delay, &expiry)
            && delay > expiry
        {
            let span = expiry_at.clone().or(delay_at.clone()).unwrap_or(v.span());
            self.issue(
                span,
                format!(
                    "`delay` ({}) is longer than `expiry` ({}): a triplet would be forgotten before it could pass",
                    show(*delay),
                    show(*expiry)
                ),
                "make expiry at least as long as delay (postgrey: delay = \"5m\", expiry = \"35d\")",
            );
        }
        let whitelist_after = match &g.whitelist_after {
            None => Some(Some(5)),
            Some(r) => self
                .integer(
                    "whitelist-after",
                    r,
                    0,
                    i64::from(u32::MAX),
                    "5 (or 0 to switch it off)",
                    None,
                )
                .map(|n| (n > 0).then_some(n as u32)),
        };
        let scope = match &g.state {
            None => Some(StateScope::Shared),
            Some(r) => self.scope(r),
        };
        let ipv4_prefix = match &g.ipv4_prefix {
            None => Some(24),
            Some(r) => self
                .integer(
                    "ipv4-prefix",
                    r,
                    1,
                    32,
                    "24",
                    Some("every IPv4 client would be one; 32 is the exact address"),
                )
                .map(|n| n as u8),
        };
        let ipv6_prefix = match &g.ipv6_prefix {
            None => Some(64),
            Some(r) => self
                .integer(
                    "ipv6-prefix",
                    r,
                    1,
                    128,
                    "64",
                    Some("every IPv6 client would be one; 128 is the exact address"),
                )
                .map(|n| n as u8),
        };
        let normalize_sender = match &g.normalize_sender {
            None => Some(true),
            Some(r) => self.boolean("normalize-sender", r),
        };
        let reply = match &g.reply {
            None => Some(Reply::parse(GREYLIST_REPLY).expect("the default greylist reply")),
            Some(r) => self.reply_text(r, true).and_then(|reply| {
                if reply.code / 100 == 4 {
                    return Some(reply);
                }
                self.issue(
                    r.span(),
                    format!("a greylist reply must be a 4xx, not {}: greylisting only defers, the retry is meant to pass", reply.code),
                    "write a 450 or 451, like reply = \"451 4.7.1 Greylisting in action, please come back in {remaining-hms}\"",
                );
                None
            }),
        };
        Some(Greylist {
            delay: delay?.0,
            retry_window: retry_window?.0,
            expiry: expiry?.0,
            whitelist_after: whitelist_after?,
            scope: scope?,
            ipv4_prefix: ipv4_prefix?,
            ipv6_prefix: ipv6_prefix?,
            normalize_sender: normalize_sender?,
            reply: reply?,
        })
    }

    fn rate_limit(
        &mut self,
        v: &Spanned<TableOr<RawRateLimit>>,
        stage: Option<Stage>,
        table: &str,
    ) -> Option<RateLimit> {
        if let Some(stage) = stage
            && matches!(
                stage,
                Stage::Ehlo | Stage::Starttls | Stage::Rset | Stage::Quit
            )
        {
            self.issue(
                v.span(),
                format!("`rate-limit` cannot be used at `{stage}`: a rate limit counts connections (at `connect`), messages (at `mail`, `data` or `end-of-data`) or recipients (at `rcpt`)"),
                "use stage = \"connect\" to limit connections, \"mail\" to limit messages, or \"rcpt\" to limit recipients",
            );
        }
        let r = self.action_table(
            "rate-limit",
            v,
            "rate-limit = { limit = 100, window = \"1h\" } (at most 100 an hour from each client)",
        )?;
        let per = match &r.per {
            None => Some(RateKey::Client),
            Some(p) => self.rate_key(p, stage, false),
        };
        let limit = self.limit(
            "rate-limit",
            &r.limit,
            v.span(),
            table,
            "limit = 100, window = \"1h\"",
        );
        let window = match &r.window {
            Some(w) => self.duration("window", w, Some("a rate is counted over a length of time")),
            None => {
                self.missing(
                    table,
                    "window",
                    v.span(),
                    "this `rate-limit` has no `window`",
                    "add the time the limit counts over, like rate-limit = { limit = 100, window = \"1h\" }".into(),
                );
                None
            }
        };
        let sliding = match &r.kind {
            None => Some(true),
            Some(k) => self.choice(
                "kind",
                k,
                &[("sliding", true), ("fixed", false)],
                &[("rolling", "sliding"), ("moving", "sliding"), ("tumbling", "fixed")],
                "`kind` is sliding (the last `window` before each event) or fixed (windows one after another from the start of the run)",
            ),
        };
        let scope = match &r.state {
            None => Some(StateScope::Shared),
            Some(s) => self.scope(s),
        };
        let reply = match &r.reply {
            None => Some(Reply::parse(RATE_LIMIT_REPLY).expect("the default rate-limit reply")),
            Some(reply) => self.refusal("a rate limit", reply, RATE_LIMIT_REPLY),
        };
        let close = match &r.close {
            None => Some(false),
            Some(c) => self.boolean("close", c),
        };
        Some(RateLimit {
            per: per?,
            limit: limit?,
            window: window?,
            sliding: sliding?,
            scope: scope?,
            reply: reply?,
            close: close?,
        })
    }

    fn concurrency(
        &mut self,
        v: &Spanned<TableOr<RawConcurrency>>,
        stage: Option<Stage>,
        table: &str,
    ) -> Option<Concurrency> {
        if let Some(stage) = stage
            && stage != Stage::Connect
        {
            self.issue(
                v.span(),
                format!(
                    "`concurrency` cannot be used at `{stage}`: it counts connections as they open"
                ),
                "use stage = \"connect\"",
            );
        }
        let c = self.action_table(
            "concurrency",
            v,
            "concurrency = { limit = 10 } (at most 10 connections at once from each client)",
        )?;
        let per = match &c.per {
            None => Some(RateKey::Client),
            Some(p) => self.rate_key(p, stage, true),
        };
        let limit = self.limit("concurrency", &c.limit, v.span(), table, "limit = 10");
        let reply = match &c.reply {
            None => Some(Reply::parse(CONCURRENCY_REPLY).expect("the default concurrency reply")),
            Some(reply) => self.refusal("a concurrency limit", reply, CONCURRENCY_REPLY),
        };
        Some(Concurrency {
            per: per?,
            limit: limit?,
            reply: reply?,
        })
    }

    /// `tls-fault`: a fault's name, or `{ hang = "10m" }`; only at `starttls`.
    fn tls_fault(
        &mut self,
        v: &Spanned<TableOr<RawTlsFault>>,
        stage: Option<Stage>,
        table: &str,
    ) -> Option<TlsFault> {
        if let Some(stage) = stage
            && stage != Stage::Starttls
        {
            self.issue(
                v.span(),
                format!("`tls-fault` cannot be used at `{stage}`: it breaks the TLS handshake that follows STARTTLS"),
                "use stage = \"starttls\"",
            );
        }
        let hang_hint = "write tls-fault = { hang = \"10m\" }: it reads the ClientHello, sends nothing, and closes after that long";
        match v.get_ref() {
            TableOr::Table(t) => match &t.hang {
                Some(h) => self
                    .duration(
                        "hang",
                        h,
                        Some("to close after the ClientHello, write tls-fault = \"close-mid-handshake\""),
                    )
                    .map(TlsFault::Hang),
                None => {
                    self.missing(
                        table,
                        "hang",
                        v.span(),
                        "this `tls-fault` table has no `hang`",
                        format!("{hang_hint}; the other faults are written as a name, like tls-fault = \"alert\""),
                    );
                    None
                }
            },
            TableOr::Other(Leaf::Str(s))
                if matches!(
                    s.trim().to_ascii_lowercase().as_str(),
                    "hang" | "stall" | "timeout" | "silence"
                ) =>
            {
                self.issue(
                    v.span(),
                    format!("`tls-fault = \"{}\"` needs to say for how long", s.trim()),
                    hang_hint,
                );
                None
            }
            TableOr::Other(other) => {
                let leaf = Spanned::new(v.span(), other.clone());
                self.choice(
                    "tls-fault",
                    &leaf,
                    &[
                        ("close-after-ready", TlsFault::CloseAfterReady),
                        ("alert", TlsFault::Alert),
                        ("close-mid-handshake", TlsFault::CloseMidHandshake),
                        ("garbage", TlsFault::Garbage),
                    ],
                    &[
                        ("close", "close-after-ready"),
                        ("close-after-220", "close-after-ready"),
                        ("close-after-ready-reply", "close-after-ready"),
                        ("handshake-failure", "alert"),
                        ("fatal-alert", "alert"),
                        ("drop", "close-mid-handshake"),
                        ("close-during-handshake", "close-mid-handshake"),
                        ("close-in-handshake", "close-mid-handshake"),
                        ("junk", "garbage"),
                        ("noise", "garbage"),
                        ("not-tls", "garbage"),
                        ("plaintext", "garbage"),
                    ],
                    TLS_FAULTS_EXPLAINED,
                )
            }
        }
    }

    /// The required `limit` of a rate or concurrency limit.
    fn limit(
        &mut self,
        key: &str,
        raw: &Option<Spanned<Leaf>>,
        span: Span,
        table: &str,
        example: &str,
    ) -> Option<u32> {
        match raw {
            Some(l) => self
                .integer(
                    "limit",
                    l,
                    1,
                    i64::from(u32::MAX),
                    "10",
                    Some("nothing would ever pass; to refuse every time, write a reply instead"),
                )
                .map(|n| n as u32),
            None => {
                self.missing(
                    table,
                    "limit",
                    span,
                    &format!("this `{key}` has no `limit`"),
                    format!("add how many are allowed, like {key} = {{ {example} }}"),
                );
                None
            }
        }
    }

    /// `per` of a rate or concurrency limit; `connections`: a concurrency limit, which
    /// counts only by client.
    fn rate_key(
        &mut self,
        v: &Spanned<Leaf>,
        stage: Option<Stage>,
        connections: bool,
    ) -> Option<RateKey> {
        let keys = [
            ("client", RateKey::Client),
            ("client-net", RateKey::ClientNet),
            ("sender", RateKey::Sender),
            ("recipient", RateKey::Recipient),
        ];
        let aliases = [
            ("ip", "client"),
            ("net", "client-net"),
            ("subnet", "client-net"),
            ("network", "client-net"),
            ("client-network", "client-net"),
            ("rcpt", "recipient"),
            ("mail", "sender"),
        ];
        let explained = if connections {
            "`per` is client (each IP address) or client-net (each /24 or /64 network)"
        } else {
            "`per` is one of client (each IP address), client-net (each /24 or /64 network), sender, recipient"
        };
        let key = self.choice("per", v, &keys, &aliases, explained)?;
        let name = v.get_ref();
        let Leaf::Str(name) = name else {
            return Some(key);
        };
        let name = name.trim();
        if connections && matches!(key, RateKey::Sender | RateKey::Recipient) {
            self.issue(
                v.span(),
                format!("`per = \"{name}\"` cannot be used in `concurrency`: it counts connections, which have no {name}"),
                "write per = \"client\" (each IP address) or per = \"client-net\" (each /24 or /64 network)",
            );
            return None;
        }
        let Some(stage) = stage else {
            return Some(key);
        };
        if key == RateKey::Sender && rank(stage) < rank(Stage::Mail) {
            self.issue(
                v.span(),
                format!("`per = \"{name}\"` cannot be counted at `{stage}`: there is no sender before MAIL FROM"),
                "write per = \"client\" or per = \"client-net\", or use stage = \"mail\" (messages) or \"rcpt\" (recipients)",
            );
            return None;
        }
        if key == RateKey::Recipient && stage != Stage::Rcpt {
            self.issue(
                v.span(),
                format!("`per = \"{name}\"` cannot be counted at `{stage}`: it counts RCPT commands, so it exists only at `rcpt`"),
                "use stage = \"rcpt\", or count per = \"client\", \"client-net\" or \"sender\"",
            );
            return None;
        }
        Some(key)
    }

    /// `state`: whether all hosts share the state, or each keeps its own.
    fn scope(&mut self, v: &Spanned<Leaf>) -> Option<StateScope> {
        self.choice(
            "state",
            v,
            &[("shared", StateScope::Shared), ("host", StateScope::Host)],
            &[
                ("global", "shared"),
                ("farm", "shared"),
                ("per-host", "host"),
                ("local", "host"),
            ],
            "`state` is shared (one state for all hosts, as when every MX asks the same database) or host (each host keeps its own)",
        )
    }

    /// The reply of a rate or concurrency limit: a 4xx or 5xx.
    fn refusal(&mut self, what: &str, v: &Spanned<Leaf>, default: &str) -> Option<Reply> {
        let reply = self.reply_text(v, false)?;
        if reply.code >= 400 {
            return Some(reply);
        }
        self.issue(
            v.span(),
            format!("the reply of {what} must be a 4xx or 5xx, not {}: it refuses what is over the limit", reply.code),
            format!("write a 4xx to defer, like reply = \"{default}\", or a 5xx to refuse for good; within the limit, the rules after this one decide"),
        );
        None
    }

    /// A reply as written: the code, status and text, and its placeholders; `greylist`:
    /// the reply of a greylist, which alone may hold `{remaining}`.
    fn reply_text(&mut self, v: &Spanned<Leaf>, greylist: bool) -> Option<Reply> {
        let text = self.string("reply", v, "\"451 4.7.1 Try again later\"")?;
        let reply = match Reply::parse(text) {
            Ok(reply) => reply,
            Err(why) => {
                self.issue(
                    v.span(),
                    format!("invalid reply: {why}"),
                    "write a code, an optional enhanced status code and a text, like reply = \"451 4.7.1 Try again later\"",
                );
                return None;
            }
        };
        if self.placeholders(v, text, greylist) {
            Some(reply)
        } else {
            None
        }
    }

    /// Checks every `{` of a reply text starts a known placeholder; false if not.
    fn placeholders(&mut self, v: &Spanned<Leaf>, text: &str, greylist: bool) -> bool {
        let mut ok = true;
        let mut from = 0;
        let mut nth = 0;
        while let Some(open) = text[from..].find('{').map(|i| from + i) {
            let after = &text[open + 1..];
            let name = after.find('}').map(|close| &after[..close]);
            let written = match name {
                Some(name) => format!("{{{name}}}"),
                None => "{".to_string(),
            };
            let span = self.inner_span(v, nth, &written);
            nth += 1;
            from = open + 1;
            match name {
                Some(name) if PLACEHOLDERS.contains(&name) => {
                    if !greylist && name.starts_with("remaining") {
                        ok = false;
                        self.issue(
                            span,
                            format!("`{{{name}}}` is known only in a greylist reply: here it would always be 0"),
                            "remove it; it is how long a greylisted client has left to wait, for greylist = { reply = \"...\" }",
                        );
                    }
                }
                Some(name)
                    if !name.is_empty() && name.len() <= 30 && !name.contains(['{', ' ']) =>
                {
                    ok = false;
                    let aliases = [
                        ("ip", "client"),
                        ("addr", "client"),
                        ("address", "client"),
                        ("ehlo", "helo"),
                        ("from", "sender"),
                        ("mail", "sender"),
                        ("to", "recipient"),
                        ("rcpt", "recipient"),
                        ("host", "hostname"),
                        ("seconds", "remaining"),
                    ];
                    let suggestion = aliases
                        .iter()
                        .find(|(alias, _)| name.eq_ignore_ascii_case(alias))
                        .map(|(_, p)| *p)
                        .or_else(|| closest(name, PLACEHOLDERS));
                    let hint = match suggestion {
                        Some(close) => did_you_mean(&format!("{{{close}}}"), PLACEHOLDER_LIST),
                        None => PLACEHOLDER_LIST.to_string(),
                    };
                    self.issue(
                        span,
                        format!("unknown placeholder `{{{name}}}` in the reply"),
                        hint,
                    );
                }
                _ => {
                    ok = false;
                    self.issue(
                        span,
                        "a `{` in the reply that starts no placeholder",
                        format!(
                            "a reply cannot hold a `{{` of its own: remove it; {PLACEHOLDER_LIST}"
                        ),
                    );
                }
            }
        }
        ok
    }

    /// Where the `nth` `{` of a string value is written in the file, `written` long; the
    /// whole value if it cannot be found (escapes in the string).
    fn inner_span(&self, v: &Spanned<Leaf>, nth: usize, written: &str) -> Span {
        let span = v.span();
        let Some(source) = self.text.get(span.clone()) else {
            return span;
        };
        match source.match_indices('{').nth(nth) {
            Some((i, _)) if source[i..].starts_with(written) => {
                span.start + i..span.start + i + written.len()
            }
            Some((i, _)) => span.start + i..span.start + i + 1,
            None => span,
        }
    }

    fn reply(&mut self, v: &Spanned<Leaf>, stage: Option<Stage>, close: bool) -> Option<Reply> {
        let reply = self.reply_text(v, false)?;
        let code = reply.code;
        if code < 400
            && let Some(stage) = stage
        {
            let own: &[u16] = match stage {
                Stage::Connect => &[220],
                Stage::Ehlo => &[],
                Stage::Starttls => &[220],
                Stage::Data => &[354],
                Stage::Quit => &[221],
                Stage::Rcpt => &[250, 251],
                Stage::Mail | Stage::EndOfData | Stage::Rset => &[250],
            };
            if own.is_empty() {
                self.issue(
                    v.span(),
                    format!("a {code} reply at `ehlo` is not allowed: the positive EHLO reply lists the host's extensions"),
                    "to accept, write accept = true (the reply lists the extensions set under [host.extensions]); to refuse, use a 4xx or 5xx code",
                );
                return None;
            }
            if !own.contains(&code) {
                let own_text = own
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ");
                self.issue(
                    v.span(),
                    format!("reply code {code} at `{stage}`: the positive reply there is {own_text}"),
                    format!("write {own_text} to accept with your own text, accept = true for the usual reply, or a 4xx or 5xx code to refuse"),
                );
                return None;
            }
            if close && code < 300 {
                let hint = if stage == Stage::Starttls {
                    "to close right after the 220, write tls-fault = \"close-after-ready\"; to refuse STARTTLS and close, use a 421 reply"
                } else {
                    "to refuse and close, use a 4xx or 5xx reply (a 421 closes by itself); to drop the connection without a reply, remove `reply`"
                };
                self.issue(
                    v.span(),
                    format!("`close = true` after a {code} reply: the client is told the command succeeded, then loses the connection"),
                    hint,
                );
                return None;
            }
        }
        Some(reply)
    }

    // ---------------------------------------------------------------- leaf values

    fn string<'a>(&mut self, key: &str, v: &'a Spanned<Leaf>, example: &str) -> Option<&'a str> {
        match v.get_ref() {
            Leaf::Str(s) => Some(s),
            other => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be a string, not {}", other.kind()),
                    format!("write it in quotes, like {key} = {example}"),
                );
                None
            }
        }
    }

    /// A string of free text: `name`, `description`, `greeting`.
    fn text_value(
        &mut self,
        key: &str,
        v: &Spanned<Leaf>,
        example: &str,
        may_be_empty: bool,
    ) -> Option<String> {
        let text = self.string(key, v, example)?;
        if text.trim().is_empty() && !may_be_empty {
            self.issue(
                v.span(),
                format!("`{key}` is empty"),
                format!("write something, like {key} = {example}"),
            );
            return None;
        }
        if text.chars().any(char::is_control) {
            self.issue(
                v.span(),
                format!("`{key}` must be one line of text without control characters"),
                format!("write it on one line, like {key} = {example}"),
            );
            return None;
        }
        Some(text.to_string())
    }

    /// A name that other parts of the file refer to: host and rule set names.
    fn identifier(&mut self, key: &str, v: &Spanned<Leaf>, example: &str) -> Option<At<String>> {
        let text = self.string(key, v, example)?;
        let valid = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            self.issue(
                v.span(),
                format!("`{text}` is not a valid name"),
                format!("use letters, digits, `-`, `_` and `.`, like {key} = {example}"),
            );
            return None;
        }
        Some((text.to_string(), v.span()))
    }

    fn domain_name(&mut self, key: &str, v: &Spanned<Leaf>) -> Option<At<String>> {
        let text = self.string(key, v, "\"aol.test\"")?;
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if !valid_domain(&lower) {
            self.issue(
                v.span(),
                format!("`{text}` is not a domain name"),
                "write labels of letters, digits and dashes separated by dots, like name = \"aol.test\"",
            );
            return None;
        }
        Some((lower, v.span()))
    }

    /// A string or a list of strings, each with its span. An empty list is a problem: as a
    /// condition it would match nothing.
    fn strings<'a>(&mut self, key: &str, v: &'a Spanned<Leaf>, example: &str) -> Vec<At<&'a str>> {
        match v.get_ref() {
            Leaf::Str(s) => vec![(s.as_str(), v.span())],
            Leaf::List(items) if items.is_empty() => {
                self.issue(
                    v.span(),
                    format!("`{key}` is an empty list"),
                    format!("list at least one, like {key} = {example}, or remove `{key}`"),
                );
                Vec::new()
            }
            Leaf::List(items) => items
                .iter()
                .filter_map(|item| match item.get_ref() {
                    Leaf::Str(s) => Some((s.as_str(), item.span())),
                    other => {
                        self.issue(
                            item.span(),
                            format!("the items of `{key}` must be strings, not {}", other.kind()),
                            format!("write each in quotes, like {key} = {example}"),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.issue(
                    v.span(),
                    format!(
                        "`{key}` must be a string or a list of strings, not {}",
                        other.kind()
                    ),
                    format!("write {key} = {example}"),
                );
                Vec::new()
            }
        }
    }

    fn boolean(&mut self, key: &str, v: &Spanned<Leaf>) -> Option<bool> {
        match v.get_ref() {
            Leaf::Bool(b) => Some(*b),
            Leaf::Str(s) if matches!(s.as_str(), "true" | "false") => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be true or false, not a string"),
                    format!("write it without quotes: {key} = {s}"),
                );
                None
            }
            other => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be true or false, not {}", other.kind()),
                    format!("write {key} = true or {key} = false"),
                );
                None
            }
        }
    }

    /// A whole number in `min..=max`; `zero` says why 0 makes no sense when `min` is 1.
    fn integer(
        &mut self,
        key: &str,
        v: &Spanned<Leaf>,
        min: i64,
        max: i64,
        example: &str,
        zero: Option<&str>,
    ) -> Option<i64> {
        match v.get_ref() {
            Leaf::Int(n) if (min..=max).contains(n) => Some(*n),
            Leaf::Int(0) if min == 1 => {
                let why = zero.map_or(String::new(), |w| format!(": {w}"));
                self.issue(
                    v.span(),
                    format!("`{key}` cannot be 0{why}"),
                    format!("write a positive number, like {key} = {example}"),
                );
                None
            }
            Leaf::Int(n) if *n < 0 && min == 0 => {
                self.issue(
                    v.span(),
                    format!("`{key}` cannot be negative"),
                    format!("write {key} = {example}"),
                );
                None
            }
            Leaf::Int(n) => {
                let message = if *n < min {
                    format!("`{key}` must be at least {min}, not {n}")
                } else {
                    format!("`{key}` can be at most {max}, not {n}")
                };
                self.issue(v.span(), message, format!("write {key} = {example}"));
                None
            }
            Leaf::Str(s) if s.trim().parse::<i64>().is_ok() => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be a number, not a string"),
                    format!("write it without quotes: {key} = {}", s.trim()),
                );
                None
            }
            other => {
                self.issue(
                    v.span(),
                    format!("`{key}` must be a whole number, not {}", other.kind()),
                    format!("write {key} = {example}"),
                );
                None
            }
        }
    }

    /// A duration; `zero` says why 0 is not allowed (`None`: it is).
    fn duration(&mut self, key: &str, v: &Spanned<Leaf>, zero: Option<&str>) -> Option<Duration> {
        let hint = format!(
            "write a whole number and a unit (ms, s, m, h or d), like {key} = \"30s\", \"5m\", \"1h30m\" or \"2d\""
        );
        let result = match v.get_ref() {
            Leaf::Str(s) => parse_duration(s),
            Leaf::Int(n) => Err(format!(
                "`{key}` needs a unit: write {key} = \"{n}s\" for {n} seconds"
            )),
            other => Err(format!(
                "`{key}` must be a duration in quotes, not {}",
                other.kind()
            )),
        };
        match result {
            Ok(d) if d.is_zero() && zero.is_some() => {
                let why = zero.unwrap_or_default();
                self.issue(
                    v.span(),
                    format!("`{key}` cannot be 0"),
                    format!("{why}; or {hint}"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                self.issue(v.span(), message, hint);
                None
            }
        }
    }

    /// A size in bytes; `zero` says why 0 is not allowed (`None`: it is).
    fn size(&mut self, key: &str, v: &Spanned<Leaf>, zero: Option<&str>) -> Option<u64> {
        let hint = format!(
            "write a number of bytes or a number and a unit, like {key} = \"35MiB\", \"10MB\", \"512KiB\" or 1000"
        );
        let result = match v.get_ref() {
            Leaf::Int(n) => u64::try_from(*n).map_err(|_| format!("`{key}` cannot be negative")),
            Leaf::Str(s) => parse_size(s),
            other => Err(format!("`{key}` must be a size, not {}", other.kind())),
        };
        match result {
            Ok(0) if zero.is_some() => {
                let why = zero.unwrap_or_default();
                self.issue(v.span(), format!("`{key}` cannot be 0: {why}"), hint);
                None
            }
            Ok(n) => Some(n),
            Err(message) => {
                self.issue(v.span(), message, hint);
                None
            }
        }
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

/// Labels of letters, digits, `-` and `_`, none empty or longer than 63, at most 253 in all.
fn valid_domain(name: &str) -> bool {
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

/// The version a `tls` value names when it is a TLS version, not a mode (`"1.3"`).
fn tls_version_name(text: &str) -> Option<&'static str> {
    let lower = text.trim().to_ascii_lowercase();
    match lower.trim_start_matches("tlsv").trim_start_matches("tls") {
        "1.2" | "12" => Some("1.2"),
        "1.3" | "13" => Some("1.3"),
        _ => None,
    }
}

/// A stage's place in the conversation: connect first, quit last.
fn rank(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

fn is_empty_when(w: &RawWhen) -> bool {
    let RawWhen {
        client,
        helo,
        mail,
        rcpt,
        size_above,
        size_below,
        attempt,
        per,
        chance,
        first_attempt_within,
        time,
        connection,
        message,
        ptr,
        helo_fqdn,
        tls,
    } = w;
    [
        client,
        helo,
        mail,
        rcpt,
        size_above,
        size_below,
        attempt,
        per,
        chance,
        first_attempt_within,
        time,
        connection,
        message,
        ptr,
        helo_fqdn,
        tls,
    ]
    .iter()
    .all(|c| c.is_none())
}

/// Parses a duration as the format documents it (see [`super::duration`]).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    super::duration::parse(text)
}

/// A duration as a scenario would write it.
pub(crate) fn show(d: Duration) -> String {
    super::duration::show(d)
}

/// Parses `"35MiB"`, `"10MB"`, `"512KiB"` or `"1000"` into bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let starts_with_digit = trimmed.starts_with(|c: char| c.is_ascii_digit());
    match trimmed.parse::<bytesize::ByteSize>() {
        Ok(size) if starts_with_digit => Ok(size.as_u64()),
        _ => Err(format!("`{trimmed}` is not a size")),
    }
}

/// Parses `"3"`, `"<3"`, `"<=3"`, `">3"`, `">=3"` or `"2-4"`: a range of numbers counted
/// from 1 (attempts, connections, messages); `noun` names what is counted in the errors.
pub(crate) fn parse_range(text: &str, noun: &str) -> Result<AttemptRange, String> {
    let none = format!("no {noun} is in this range (the first {noun} is 1)");
    let text = text.trim();
    let number = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a number is missing".to_string());
        }
        s.parse::<u32>()
            .map_err(|_| format!("`{s}` is not a whole number"))
    };
    let (min, max) = if let Some(n) = text.strip_prefix("<=") {
        (1, number(n)?)
    } else if let Some(n) = text.strip_prefix(">=") {
        (number(n)?, u32::MAX)
    } else if let Some(n) = text.strip_prefix('<') {
        (1, number(n)?.saturating_sub(1))
    } else if let Some(n) = text.strip_prefix('>') {
        let after = number(n)?.checked_add(1);
        (after.ok_or_else(|| none.clone())?, u32::MAX)
    } else if let Some((a, b)) = text.split_once('-') {
        let (a, b) = (number(a)?, number(b)?);
        if a > b {
            return Err(format!("{a} is bigger than {b}; write \"{b}-{a}\""));
        }
        (a, b)
    } else {
        let n = number(text)?;
        (n, n)
    };
    if max < 1 || min > max {
        return Err(none);
    }
    Ok(AttemptRange {
        min: min.max(1),
        max,
    })
}

/// Parses a half-open range of farm time: `"<10m"`, `">=1h"` or `"10m-1h"`. The error is
/// why not, and a hint when there is a better one than the general one.
pub(crate) fn parse_time_range(text: &str) -> Result<TimeRange, (String, Option<String>)> {
    let text = text.trim();
    let at = |s: &str| parse_duration(s).map_err(|why| (why, None));
    if let Some(rest) = text.strip_prefix("<=") {
        let rest = rest.trim();
        return Err((
            "time ranges take `<` and `>=`, not `<=`".to_string(),
            Some(format!(
                "time ranges are half-open, so that \"<{rest}\" and \">={rest}\" split the run with no overlap: write time = \"<{rest}\" for the time before {rest}"
            )),
        ));
    }
    if let Some(rest) = text.strip_prefix(">=") {
        return Ok(TimeRange {
            from: at(rest)?,
            until: None,
        });
    }
    if let Some(rest) = text.strip_prefix('>') {
        let rest = rest.trim();
        return Err((
            "time ranges take `<` and `>=`, not `>`".to_string(),
            Some(format!(
                "time ranges are half-open, so that \"<{rest}\" and \">={rest}\" split the run with no overlap: write time = \">={rest}\" for the time from {rest} on"
            )),
        ));
    }
    if let Some(rest) = text.strip_prefix('<') {
        let until = at(rest)?;
        if until.is_zero() {
            return Err((
                "no time is before 0".to_string(),
                Some("write a later end, like time = \"<10m\"".to_string()),
            ));
        }
        return Ok(TimeRange {
            from: Duration::ZERO,
            until: Some(until),
        });
    }
    if let Some((a, b)) = text.split_once('-') {
        let (from, until) = (at(a)?, at(b)?);
        let (a, b) = (a.trim(), b.trim());
        if from > until {
            return Err((
                format!("{a} is after {b}"),
                Some(format!("write the earlier time first: time = \"{b}-{a}\"")),
            ));
        }
        if from == until {
            return Err((
                format!("no time is from {a} and before {b}"),
                Some(format!(
                    "a range includes its start but not its end, so make the end later, like time = \"{a}-{}\"",
                    show(from + Duration::from_secs(60))
                )),
            ));
        }
        return Ok(TimeRange {
            from,
            until: Some(until),
        });
    }
    match parse_duration(text) {
        Ok(_) => Err((
            "`time` is a range, not a single time".to_string(),
            Some(format!(
                "write time = \"<{text}\" (before {text}) or time = \">={text}\" (from {text} on)"
            )),
        )),
        Err(why) => Err((why, None)),
    }
}

/// "did you mean `x`? The ...": a suggestion, then what else there is.
pub(crate) fn did_you_mean(suggestion: &str, rest: &str) -> String {
    let mut chars = rest.chars();
    let rest = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("did you mean `{suggestion}`? {rest}")
}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let word = norm(word);
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &norm(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting a swap of two neighbouring characters as one edit (optimal
/// string alignment), since `relpy` for `reply` is the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{ScenarioError, load_str};

    const HOST: &str = "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:2525\"\n";

    /// A one-host scenario with one rule written as `stage = ..., when = ..., then = ...`.
    fn with_rule(rule: &str) -> String {
        format!("{HOST}[[host.rule]]\n{rule}\n")
    }

    fn load(text: &str) -> Result<Scenario, ScenarioError> {
        load_str("t.toml", text)
    }

    /// The (message, hint) of every problem; panics if the text loads.
    fn problems(text: &str) -> Vec<(String, String)> {
        match load(text) {
            Ok(_) => panic!("this loaded, but should not have:\n{text}"),
            Err(e) => e
                .problems()
                .iter()
                .map(|p| (p.message.clone(), p.hint.clone()))
                .collect(),
        }
    }

    #[track_caller]
    fn assert_loads(text: &str) -> Scenario {
        match load(text) {
            Ok(s) => s,
            Err(e) => panic!("should load:\n{text}\n{e}"),
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("35MiB", Some(35 * 1024 * 1024)),
            ("10MB", Some(10_000_000)),
            ("512KiB", Some(512 * 1024)),
            ("512 KiB", Some(512 * 1024)),
            ("1000", Some(1000)),
            ("64mib", Some(64 * 1024 * 1024)),
            ("1.5KB", Some(1500)),
            ("0", Some(0)),
            ("64 megs", None),
            ("-5MB", None),
            ("MB", None),
            ("", None),
            ("lots", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text).ok(), *expected, "{text:?}");
        }
        // and as written in a file: an integer is a number of bytes
        let s = assert_loads(&format!(
            "{HOST}[host.limits]\nmax-message-size = 2048\n[capture]\nmax-bytes = \"1MiB\"\n"
        ));
        assert_eq!(s.hosts[0].limits.max_message_size, 2048);
        assert_eq!(s.capture.max_bytes, 1 << 20);
    }

    #[test]
    fn attempt_ranges() {
        let r = |min, max| Ok(AttemptRange { min, max });
        let cases: &[(&str, Result<AttemptRange, &str>)] = &[
            ("3", r(3, 3)),
            ("<3", r(1, 2)),
            ("<=3", r(1, 3)),
            (">3", r(4, u32::MAX)),
            (">=3", r(3, u32::MAX)),
            ("2-4", r(2, 4)),
            (" 2 - 4 ", r(2, 4)),
            ("< 3", r(1, 2)),
            (">=1", r(1, u32::MAX)),
            ("1", r(1, 1)),
            ("0", Err("no attempt")),
            ("<1", Err("no attempt")),
            ("0-2", r(1, 2)),
            ("4-2", Err("write \"2-4\"")),
            ("", Err("missing")),
            ("<", Err("missing")),
            ("three", Err("not a whole number")),
            ("=3", Err("not a whole number")),
            ("2-", Err("missing")),
            ("-2", Err("missing")),
            ("1.5", Err("not a whole number")),
            (">4294967295", Err("no attempt")),
        ];
        for (text, expected) in cases {
            let got = parse_range(text, "attempt");
            match (expected, &got) {
                (Ok(range), Ok(g)) => assert_eq!(g, range, "{text:?}"),
                (Err(fragment), Err(message)) => {
                    assert!(message.contains(fragment), "{text:?}: {message}")
                }
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn suggestions_catch_typos_but_not_unrelated_words() {
        let keys = Place::Then.keys().iter().copied();
        assert_eq!(closest("relpy", keys.clone()), Some("reply"));
        assert_eq!(closest("Accept", keys.clone()), Some("accept"));
        assert_eq!(closest("tarpit", keys.clone()), None);
        assert_eq!(
            closest("max_errors", Place::Limits.keys().iter().copied()),
            Some("max-errors")
        );
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn defaults_and_lowercasing() {
        let s = assert_loads(
            "name = \"t\"\n[[domain]]\nname = \"AOL.Test.\"\nmx = [{ host = \"MX1\" }]\n\
             [[host]]\nname = \"MX1\"\nlisten = \"127.0.0.1:0\"\n\
             [[host]]\nname = \"mx2\"\nlisten = \"127.0.0.1:0\"\nhostname = \"Mx2.AOL.test\"\n",
        );
        assert_eq!(s.description, "");
        assert_eq!(s.seed, 0);
        assert_eq!(s.capture, CaptureLimits::default());
        assert_eq!(s.journal, JournalLimits::default());
        assert_eq!(s.domains[0].name, "aol.test");
        assert_eq!(s.domains[0].mx[0].preference, 10);
        let mx1 = s.host("MX1").unwrap();
        assert_eq!(mx1.hostname, "mx1.mxfarm.test");
        assert_eq!(mx1.greeting, "ESMTP mxfarm");
        assert_eq!(mx1.extensions, Extensions::default());
        assert_eq!(mx1.limits, Limits::default());
        assert!(mx1.rules.is_empty());
        assert_eq!(s.host("mx2").unwrap().hostname, "mx2.aol.test");
    }

    #[test]
    fn every_value_is_read() {
        let s = assert_loads(
            r#"
            name = "full"
            description = "All of it"
            seed = 42
            [capture]
            max-messages = 0
            max-bytes = "1MB"
            [journal]
            max-events = 10
            [[host]]
            name = "mx1"
            listen = "[::1]:2525"
            greeting = "ESMTP hi"
            [host.extensions]
            pipelining = false
            8bitmime = false
            [host.limits]
            max-connections = 2
            max-recipients = 3
            max-line-length = 512
            max-errors = 1
            command-timeout = "1m"
            data-timeout = "2m"
            [[host.rule]]
            stage = "rcpt"
            when = { client = ["192.0.2.9/24", "2001:db8::1"], helo = "*.test", mail = ["<>", "@Example.test"], rcpt = "Full-*@aol.test", size-above = "1KiB", size-below = 4096, attempt = 3, per = "recipient", chance = 1 }
            then = { reply = "452 4.2.2 Mailbox full\nTry later", delay = "2s" }
            "#,
        );
        assert_eq!((s.seed, s.description.as_str()), (42, "All of it"));
        assert_eq!(s.capture.max_messages, 0);
        assert_eq!(s.capture.max_bytes, 1_000_000);
        assert_eq!(s.journal.max_events, 10);
        let h = &s.hosts[0];
        assert_eq!(h.listen, "[::1]:2525".parse().unwrap());
        assert_eq!(h.greeting, "ESMTP hi");
        assert!(!h.extensions.pipelining && !h.extensions.eight_bit_mime);
        assert!(h.extensions.size && h.extensions.chunking);
        let l = h.limits;
        assert_eq!((l.max_connections, l.max_recipients), (2, 3));
        assert_eq!((l.max_line_length, l.max_errors), (512, 1));
        assert_eq!(l.command_timeout, Duration::from_secs(60));
        assert_eq!(l.data_timeout, Duration::from_secs(120));
        let rule = &h.rules[0];
        assert_eq!(&*rule.origin, "host mx1 rule 1");
        assert_eq!(
            rule.when,
            vec![
                Condition::Client(vec![
                    "192.0.2.0/24".parse().unwrap(),
                    "2001:db8::1/128".parse().unwrap()
                ]),
                Condition::Helo(vec![Glob::new("*.test")]),
                Condition::Sender(vec![
                    AddressPattern::Null,
                    AddressPattern::Domain("example.test".into())
                ]),
                Condition::Recipient(vec![AddressPattern::Glob(Glob::new("Full-*@aol.test"))]),
                Condition::SizeAbove(1024),
                Condition::SizeBelow(4096),
                Condition::Attempt {
                    per: AttemptKey::Recipient,
                    range: AttemptRange { min: 3, max: 3 }
                },
                Condition::Chance(1.0),
            ]
        );
        assert_eq!(
            rule.then,
            Action {
                delay: Some(Duration::from_secs(2)),
                kind: ActionKind::Reply {
                    reply: Reply::parse("452 4.2.2 Mailbox full\nTry later").unwrap(),
                    close: false
                }
            }
        );
    }

    #[test]
    fn actions() {
        let then = |stage: &str, then: &str| {
            let s = assert_loads(&with_rule(&format!("stage = \"{stage}\"\nthen = {then}")));
            s.hosts[0].rules[0].then.clone()
        };
        let kind = |stage: &str, t: &str| then(stage, t).kind;
        assert_eq!(kind("rcpt", "{ accept = true }"), ActionKind::Accept);
        assert_eq!(kind("end-of-data", "{ close = true }"), ActionKind::Close);
        assert_eq!(
            kind("data", "{ hang = \"10m\" }"),
            ActionKind::Hang(Duration::from_secs(600))
        );
        assert_eq!(
            then("connect", "{ delay = \"30s\" }"),
            Action {
                delay: Some(Duration::from_secs(30)),
                kind: ActionKind::Accept
            }
        );
        // a 421 always closes; close = true closes after any refusal
        let closes = |stage: &str, t: &str| match kind(stage, t) {
            ActionKind::Reply { close, .. } => close,
            other => panic!("{other:?}"),
        };
        assert!(closes("mail", "{ reply = \"421 4.7.0 Bye\" }"));
        assert!(closes("rcpt", "{ reply = \"550 5.1.1 No\", close = true }"));
        assert!(!closes(
            "rcpt",
            "{ reply = \"550 5.1.1 No\", close = false }"
        ));
        assert!(!closes("rcpt", "{ reply = \"550 5.1.1 No\" }"));
        // each stage's own positive code is allowed
        for (stage, reply) in [
            ("connect", "220 mx ready"),
            ("mail", "250 2.1.0 Fine"),
            ("rcpt", "250 2.1.5 Ok"),
            ("rcpt", "251 2.1.5 Forwarding"),
            ("data", "354 Go ahead"),
            ("end-of-data", "250 2.0.0 Queued"),
            ("rset", "250 Ok"),
            ("quit", "221 2.0.0 Bye"),
        ] {
            kind(stage, &format!("{{ reply = \"{reply}\" }}"));
        }
    }

    #[test]
    fn rule_order_is_own_rules_then_each_ruleset_in_listed_order() {
        let s = assert_loads(
            r#"
            name = "t"
            [[host]]
            name = "mx1"
            listen = "127.0.0.1:2525"
            rulesets = ["b", "a"]
            [[host.rule]]
            stage = "rcpt"
            when = { rcpt = "own1@x.test" }
            then = { reply = "451 own 1" }
            [[host.rule]]
            stage = "mail"
            then = { reply = "451 own 2" }
            [[host]]
            name = "mx2"
            listen = "127.0.0.1:2526"
            rulesets = "a"
            [[ruleset]]
            name = "a"
            [[ruleset.rule]]
            stage = "rcpt"
            then = { reply = "451 a 1" }
            [[ruleset]]
            name = "b"
            [[ruleset.rule]]
            stage = "rcpt"
            when = { rcpt = "b1@x.test" }
            then = { reply = "451 b 1" }
            [[ruleset.rule]]
            stage = "rcpt"
            when = { rcpt = "b2@x.test" }
            then = { reply = "451 b 2" }
            "#,
        );
        let origins = |host: &str| -> Vec<String> {
            s.host(host)
                .unwrap()
                .rules
                .iter()
                .map(|r| r.origin.to_string())
                .collect()
        };
        assert_eq!(
            origins("mx1"),
            [
                "host mx1 rule 1",
                "host mx1 rule 2",
                "ruleset b rule 1",
                "ruleset b rule 2",
                "ruleset a rule 1"
            ]
        );
        assert_eq!(origins("mx2"), ["ruleset a rule 1"]);
        let texts: Vec<String> = s.hosts[0]
            .rules
            .iter()
            .map(|r| match &r.then.kind {
                ActionKind::Reply { reply, .. } => reply.one_line(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            ["451 own 1", "451 own 2", "451 b 1", "451 b 2", "451 a 1"]
        );
    }

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

    /// A one-host scenario with one rule at `stage`.
    fn rule(stage: &str, when: &str, then: &str) -> String {
        with_rule(&format!(
            "stage = \"{stage}\"\nwhen = {when}\nthen = {then}"
        ))
    }

    /// The conditions and action of the one rule of `rule(stage, when, then)`.
    #[track_caller]
    fn loaded(stage: &str, when: &str, then: &str) -> (Vec<Condition>, Action) {
        let s = assert_loads(&rule(stage, when, then));
        let r = &s.hosts[0].rules[0];
        (r.when.clone(), r.then.clone())
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn reverse_dns_names_addresses_lowercase_without_the_trailing_dot() {
        let s = assert_loads(&format!(
            "{HOST}[reverse-dns]\n\"192.0.2.1\" = \"Mail.Sender.TEST.\"\n' 2001:DB8::1 ' = \"mail6.sender.test\"\n"
        ));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            s.reverse_dns.into_iter().collect::<Vec<_>>(),
            [
                (ip("192.0.2.1"), "mail.sender.test".to_string()),
                (ip("2001:db8::1"), "mail6.sender.test".to_string()),
            ]
        );
        // no table: no names, and `ptr` still works (every client lacks a PTR)
        let s = assert_loads(&rule(
            "connect",
            "{ ptr = \"missing\" }",
            "{ reset = true }",
        ));
        assert!(s.reverse_dns.is_empty());
        assert_loads(&format!("{HOST}[reverse-dns]\n"));
    }

    #[test]
    fn new_conditions_are_read() {
        let (when, _) = loaded(
            "rcpt",
            "{ attempt = \"<3\", first-attempt-within = \"2h\", per = \"recipient\", time = \"10m-1h\", connection = \"<=3\", message = \">5\", ptr = \"Mismatch\", helo-fqdn = false }",
            "{ reply = \"452 4.2.2 Mailbox full\" }",
        );
        assert_eq!(
            when,
            vec![
                Condition::Attempt {
                    per: AttemptKey::Recipient,
                    range: AttemptRange { min: 1, max: 2 }
                },
                Condition::FirstAttemptWithin {
                    per: AttemptKey::Recipient,
                    within: secs(7200)
                },
                Condition::Time(TimeRange {
                    from: secs(600),
                    until: Some(secs(3600))
                }),
                Condition::Connection(AttemptRange { min: 1, max: 3 }),
                Condition::Message(AttemptRange {
                    min: 6,
                    max: u32::MAX
                }),
                Condition::Ptr(PtrCheck::MismatchesHelo),
                Condition::HeloFqdn(false),
            ]
        );
        // `first-attempt-within` alone counts per triplet by default, and `per` applies
        // to it as to `attempt`
        let (when, _) = loaded(
            "rcpt",
            "{ first-attempt-within = \"1d\" }",
            "{ reply = \"452 4.2.2 Full\" }",
        );
        assert_eq!(
            when,
            [Condition::FirstAttemptWithin {
                per: AttemptKey::Triplet,
                within: secs(86_400)
            }]
        );
        let (when, _) = loaded(
            "connect",
            "{ first-attempt-within = \"3d\", per = \"client\", connection = 2, ptr = \"present\" }",
            "{ reply = \"421 4.7.0 Warming up\" }",
        );
        assert_eq!(
            when,
            [
                Condition::FirstAttemptWithin {
                    per: AttemptKey::Client,
                    within: secs(3 * 86_400)
                },
                Condition::Connection(AttemptRange { min: 2, max: 2 }),
                Condition::Ptr(PtrCheck::Present),
            ]
        );
        let (when, _) = loaded(
            "ehlo",
            "{ ptr = \"missing\", helo-fqdn = true }",
            "{ reply = \"550 5.7.1 No\" }",
        );
        assert_eq!(
            when,
            [Condition::Ptr(PtrCheck::Missing), Condition::HeloFqdn(true)]
        );
    }

    #[test]
    fn durations_are_shown_as_written() {
        for (d, shown) in [
            (Duration::ZERO, "0s"),
            (secs(300), "5m"),
            (secs(5400), "1h30m"),
            (secs(2 * 86_400), "2d"),
            (secs(35 * 86_400 + 61), "35d1m1s"),
            (Duration::from_millis(1250), "1s250ms"),
        ] {
            assert_eq!(show(d), shown);
            assert_eq!(parse_duration(shown).unwrap(), d);
        }
    }

    #[test]
    fn time_ranges_are_half_open() {
        let r = |from, until: Option<u64>| {
            Ok(TimeRange {
                from: secs(from),
                until: until.map(secs),
            })
        };
        let cases: &[(&str, Result<TimeRange, &str>)] = &[
            ("<10m", r(0, Some(600))),
            ("< 10m", r(0, Some(600))),
            (">=1h", r(3600, None)),
            (">=0s", r(0, None)),
            ("10m-1h", r(600, Some(3600))),
            (" 0s - 30s ", r(0, Some(30))),
            ("1h30m-2h", r(5400, Some(7200))),
            ("<=10m", Err("not `<=`")),
            (">1h", Err("not `>`")),
            ("1h-10m", Err("1h is after 10m")),
            ("1h-1h", Err("no time is from 1h and before 1h")),
            ("<0s", Err("no time is before 0")),
            ("10m", Err("a range, not a single time")),
            ("<10", Err("needs a unit")),
            ("<soon", Err("is not a duration")),
            ("", Err("empty")),
            ("-5m", Err("empty")),
        ];
        for (text, expected) in cases {
            let got = parse_time_range(text);
            match (expected, &got) {
                (Ok(range), Ok(g)) => assert_eq!(g, range, "{text:?}"),
                (Err(fragment), Err((message, _))) => {
                    assert!(message.contains(fragment), "{text:?}: {message}")
                }
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
        // and the hints say what to write instead
        let hint = |text: &str| parse_time_range(text).unwrap_err().1.unwrap();
        assert!(
            hint("<=10m").contains("time = \"<10m\""),
            "{}",
            hint("<=10m")
        );
        assert!(hint(">1h").contains("time = \">=1h\""), "{}", hint(">1h"));
        assert!(hint("1h-10m").contains("\"10m-1h\""), "{}", hint("1h-10m"));
        assert!(hint("10m").contains("\">=10m\""), "{}", hint("10m"));
    }

    #[test]
    fn reset_and_lose_reply() {
        assert_eq!(
            loaded("connect", "{ time = \"<10m\" }", "{ reset = true }").1,
            Action {
                delay: None,
                kind: ActionKind::Reset
            }
        );
        assert_eq!(
            loaded("rcpt", "{}", "{ reset = true, delay = \"1s\" }").1,
            Action {
                delay: Some(secs(1)),
                kind: ActionKind::Reset
            }
        );
        assert_eq!(
            loaded("end-of-data", "{ chance = 0.1 }", "{ lose-reply = true }").1,
            Action {
                delay: None,
                kind: ActionKind::LoseReply
            }
        );
    }

    #[test]
    fn greylist_defaults_are_postgrey_s() {
        let (_, then) = loaded("rcpt", "{}", "{ greylist = {} }");
        assert_eq!(
            then,
            Action {
                delay: None,
                kind: ActionKind::Greylist(Arc::new(Greylist {
                    delay: secs(300),
                    retry_window: secs(2 * 86_400),
                    expiry: secs(35 * 86_400),
                    whitelist_after: Some(5),
                    scope: StateScope::Shared,
                    ipv4_prefix: 24,
                    ipv6_prefix: 64,
                    normalize_sender: true,
                    reply: Reply::parse(
                        "450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html"
                    )
                    .unwrap(),
                }))
            }
        );
    }

    #[test]
    fn every_greylist_value_is_read() {
        let (_, then) = loaded(
            "end-of-data",
            "{ mail = \"<>\" }",
            "{ greylist = { delay = \"30m\", retry-window = \"1d\", expiry = \"5d\", whitelist-after = 0, state = \"host\", ipv4-prefix = 32, ipv6-prefix = 128, normalize-sender = false, reply = \"451 4.7.1 Greylisting in action, please come back in {remaining-hms} ({remaining}s)\" }, delay = \"2s\" }",
        );
        assert_eq!(then.delay, Some(secs(2)));
        let ActionKind::Greylist(g) = then.kind else {
            panic!("{:?}", then.kind)
        };
        assert_eq!(
            *g,
            Greylist {
                delay: secs(1800),
                retry_window: secs(86_400),
                expiry: secs(5 * 86_400),
                whitelist_after: None,
                scope: StateScope::Host,
                ipv4_prefix: 32,
                ipv6_prefix: 128,
                normalize_sender: false,
                reply: Reply::new(
                    451,
                    Some("4.7.1"),
                    "Greylisting in action, please come back in {remaining-hms} ({remaining}s)"
                ),
            }
        );
        let (_, then) = loaded(
            "data",
            "{}",
            "{ greylist = { whitelist-after = 3, state = \"shared\" } }",
        );
        let ActionKind::Greylist(g) = then.kind else {
            panic!()
        };
        assert_eq!((g.whitelist_after, g.scope), (Some(3), StateScope::Shared));
    }

    #[test]
    fn rate_limit_defaults_and_values() {
        let (_, then) = loaded(
            "connect",
            "{}",
            "{ rate-limit = { limit = 100, window = \"1h\" } }",
        );
        assert_eq!(
            then.kind,
            ActionKind::RateLimit(Arc::new(RateLimit {
                per: RateKey::Client,
                limit: 100,
                window: secs(3600),
                sliding: true,
                scope: StateScope::Shared,
                reply: Reply::new(451, Some("4.7.1"), "Rate limit exceeded, try again later"),
                close: false,
            }))
        );
        let (_, then) = loaded(
            "rcpt",
            "{ rcpt = \"@yahoo.test\" }",
            "{ rate-limit = { per = \"recipient\", limit = 1, window = \"10m\", kind = \"fixed\", state = \"host\", reply = \"450 User is receiving mail too quickly\", close = true } }",
        );
        assert_eq!(
            then.kind,
            ActionKind::RateLimit(Arc::new(RateLimit {
                per: RateKey::Recipient,
                limit: 1,
                window: secs(600),
                sliding: false,
                scope: StateScope::Host,
                reply: Reply::new(450, None, "User is receiving mail too quickly"),
                close: true,
            }))
        );
        for (stage, per, key) in [
            ("mail", "sender", RateKey::Sender),
            ("end-of-data", "client-net", RateKey::ClientNet),
            ("data", "sender", RateKey::Sender),
            ("connect", "client-net", RateKey::ClientNet),
        ] {
            let (_, then) = loaded(
                stage,
                "{}",
                &format!(
                    "{{ rate-limit = {{ per = \"{per}\", limit = 5, window = \"1m\", reply = \"554 5.7.1 Too many\" }} }}"
                ),
            );
            let ActionKind::RateLimit(limit) = then.kind else {
                panic!()
            };
            assert_eq!(limit.per, key);
            assert_eq!(limit.reply.code, 554);
        }
    }

    #[test]
    fn concurrency_defaults_and_values() {
        let (_, then) = loaded("connect", "{}", "{ concurrency = { limit = 10 } }");
        assert_eq!(
            then.kind,
            ActionKind::Concurrency(Arc::new(Concurrency {
                per: RateKey::Client,
                limit: 10,
                reply: Reply::new(
                    421,
                    Some("4.7.0"),
                    "{hostname} Error: too many connections from {client}"
                ),
            }))
        );
        let (_, then) = loaded(
            "connect",
            "{ client = \"198.51.100.0/24\" }",
            "{ concurrency = { per = \"client-net\", limit = 2, reply = \"451 4.7.652 The mail server [{client}] has exceeded the maximum number of connections.\" }, delay = \"1s\" }",
        );
        assert_eq!(then.delay, Some(secs(1)));
        let ActionKind::Concurrency(c) = then.kind else {
            panic!()
        };
        assert_eq!((c.per, c.limit, c.reply.code), (RateKey::ClientNet, 2, 451));
    }

    #[test]
    fn reply_placeholders() {
        // every known placeholder, in a plain reply and in each limit's
        let all = "{client} {helo} {sender} {recipient} {domain} {hostname}";
        let (_, then) = loaded("rcpt", "{}", &format!("{{ reply = \"550 5.7.1 {all}\" }}"));
        let ActionKind::Reply { reply, .. } = then.kind else {
            panic!()
        };
        assert_eq!(reply.lines, [all]);
        loaded(
            "rcpt",
            "{}",
            &format!("{{ rate-limit = {{ limit = 1, window = \"1h\", reply = \"450 {all}\" }} }}"),
        );
        loaded(
            "connect",
            "{}",
            &format!("{{ concurrency = {{ limit = 1, reply = \"421 {all}\" }} }}"),
        );
        // a problem points at the placeholder itself, when it can be found in the file
        let text = rule(
            "rcpt",
            "{}",
            "{ reply = \"550 5.1.1 <{recipent}> unknown {\" }",
        );
        let err = load(&text).unwrap_err();
        let spans: Vec<&str> = err
            .problems()
            .iter()
            .map(|p| &text[p.span.clone().unwrap()])
            .collect();
        assert_eq!(spans, ["{recipent}", "{"], "{err}");
        let text = rule("rcpt", "{}", "{ reply = \"550 a\\nb {x}\" }");
        let err = load(&text).unwrap_err();
        assert_eq!(&text[err.problems()[0].span.clone().unwrap()], "{x}");
        // a `{` written as an escape cannot be found: the whole value
        let text = rule("rcpt", "{}", "{ reply = \"550 \\u007Bx}\" }");
        let err = load(&text).unwrap_err();
        assert_eq!(
            err.problems()[0].message,
            "unknown placeholder `{x}` in the reply"
        );
        assert_eq!(
            &text[err.problems()[0].span.clone().unwrap()],
            "\"550 \\u007Bx}\""
        );
    }

    #[test]
    fn stateful_rules_without_when_do_not_hide_later_rules() {
        let s = assert_loads(&with_rule(
            "stage = \"rcpt\"\nthen = { greylist = {} }\n\
             [[host.rule]]\nstage = \"rcpt\"\nthen = { rate-limit = { limit = 10, window = \"1h\" } }\n\
             [[host.rule]]\nstage = \"connect\"\nthen = { concurrency = { limit = 5 } }\n\
             [[host.rule]]\nstage = \"connect\"\nthen = { rate-limit = { limit = 5, window = \"1m\" } }\n\
             [[host.rule]]\nstage = \"rcpt\"\nthen = { reply = \"550 5.1.1 No\" }",
        ));
        assert_eq!(s.hosts[0].rules.len(), 5);
        // but any other action still does
        let found = problems(&with_rule(
            "stage = \"connect\"\nthen = { reset = true }\n\
             [[host.rule]]\nstage = \"connect\"\nthen = { concurrency = { limit = 5 } }",
        ));
        assert!(found[0].0.contains("can never match"), "{found:?}");
    }

    /// A one-host scenario whose host offers STARTTLS (`tls = "valid"`).
    const TLS_HOST: &str =
        "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:2525\"\ntls = \"valid\"\n";

    /// `TLS_HOST` with one rule at `stage`.
    fn tls_rule(stage: &str, when: &str, then: &str) -> String {
        format!("{TLS_HOST}[[host.rule]]\nstage = \"{stage}\"\nwhen = {when}\nthen = {then}\n")
    }

    /// The host's TLS settings when it is written `tls = <value>`.
    #[track_caller]
    fn tls_of(value: &str) -> TlsSettings {
        assert_loads(&format!("{HOST}tls = {value}\n")).hosts[0]
            .tls
            .clone()
    }

    /// Validates `text` as a scenario file in `dir`.
    fn load_in(dir: &Path, text: &str) -> Result<Scenario, Vec<Issue>> {
        let parsed = crate::scenario::raw::parse(text);
        assert!(parsed.unknown.is_empty() && parsed.unreadable.is_empty());
        validate_in(
            parsed.scenario.as_ref().unwrap(),
            text,
            &parsed.unknown,
            Some(dir),
        )
    }

    const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tls_is_off_unless_written_and_each_mode_reads_as_a_string() {
        assert_eq!(assert_loads(HOST).hosts[0].tls, TlsSettings::default());
        assert_eq!(TlsSettings::default().mode, TlsMode::Off);
        for (name, mode) in TLS_MODES {
            assert_eq!(
                tls_of(&format!("\"{name}\"")),
                TlsSettings {
                    mode,
                    versions: TlsVersions::Any,
                    files: None
                },
                "{name}"
            );
            assert_eq!(mode.as_str(), name);
        }
        assert_eq!(tls_of("\" Self-Signed \"").mode, TlsMode::SelfSigned);
    }

    #[test]
    fn tls_as_a_table_defaults_to_valid_and_any_version() {
        let valid = |versions| TlsSettings {
            mode: TlsMode::Valid,
            versions,
            files: None,
        };
        assert_eq!(tls_of("{}"), valid(TlsVersions::Any));
        assert_eq!(tls_of("{ versions = \"1.2\" }"), valid(TlsVersions::Only12));
        assert_eq!(
            tls_of("{ mode = \"valid\", versions = \"1.3\" }"),
            valid(TlsVersions::Only13)
        );
        assert_eq!(tls_of("{ versions = \"ANY\" }"), valid(TlsVersions::Any));
        assert_eq!(
            tls_of("{ mode = \"expired\", versions = \"1.3\" }"),
            TlsSettings {
                mode: TlsMode::Expired,
                versions: TlsVersions::Only13,
                files: None
            }
        );
        assert_eq!(tls_of("{ mode = \"off\" }"), TlsSettings::default());
        // and as a [host.tls] table
        let s = assert_loads(&format!(
            "{HOST}[host.tls]\nmode = \"wrong-hostname\"\nversions = \"1.2\"\n"
        ));
        assert_eq!(
            (s.hosts[0].tls.mode, s.hosts[0].tls.versions),
            (TlsMode::WrongHostname, TlsVersions::Only12)
        );
    }

    #[test]
    fn tls_cert_and_key_files_are_found_relative_to_the_scenario() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        let cert = dir.path().join("certs/chain.pem");
        let key = dir.path().join("certs/key.pem");
        std::fs::write(&cert, PEM_CERT).unwrap();
        // a key file may hold the certificate too
        std::fs::write(&key, format!("{PEM_CERT}{PEM_KEY}")).unwrap();

        // absolute paths, from anywhere
        let s = assert_loads(&format!(
            "{HOST}tls = {{ cert = {:?}, key = {:?} }}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
        let files = |s: &Scenario| s.hosts[0].tls.files.clone().unwrap();
        assert_eq!(
            files(&s),
            TlsFiles {
                cert: cert.clone(),
                key: key.clone()
            }
        );
        assert_eq!(s.hosts[0].tls.mode, TlsMode::Valid);

        // relative paths, from the scenario file's directory
        let text = format!(
            "{HOST}tls = {{ mode = \"valid\", versions = \"1.3\", cert = \"certs/chain.pem\", key = \"certs/key.pem\" }}\n"
        );
        let s = load_in(dir.path(), &text).unwrap();
        assert_eq!(files(&s), TlsFiles { cert, key });
        assert_eq!(s.hosts[0].tls.versions, TlsVersions::Only13);

        // from the current directory when the scenario is given as text
        let here = tempfile::tempdir_in(".").unwrap();
        std::fs::write(here.path().join("c.pem"), PEM_CERT).unwrap();
        std::fs::write(here.path().join("k.pem"), PEM_KEY).unwrap();
        let name = here.path().file_name().unwrap().to_str().unwrap();
        let s = assert_loads(&format!(
            "{HOST}tls = {{ cert = \"{name}/c.pem\", key = \"{name}/k.pem\" }}\n"
        ));
        assert_eq!(files(&s).cert, PathBuf::from(format!("{name}/c.pem")));

        // a missing file is named as written, and where it was looked for
        let err = load_in(
            dir.path(),
            &format!("{HOST}tls = {{ cert = \"certs/nope.pem\", key = \"certs/key.pem\" }}\n"),
        )
        .unwrap_err();
        assert_eq!(err.len(), 1, "{err:#?}");
        let looked = dir.path().join("certs/nope.pem");
        assert_eq!(
            err[0].message,
            format!(
                "the certificate chain file `certs/nope.pem` does not exist (looked for {})",
                looked.display()
            )
        );
        assert!(
            err[0]
                .hint
                .contains("relative to the directory of the scenario file")
        );
        let found = problems(&format!(
            "{HOST}tls = {{ cert = \"no/such/chain.pem\", key = \"no/such/key.pem\" }}\n"
        ));
        assert_eq!(
            found.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
            [
                "the certificate chain file `no/such/chain.pem` does not exist",
                "the private key file `no/such/key.pem` does not exist"
            ]
        );

        // files that are not what they should be
        let text = |cert: &str, key: &str| {
            format!("{HOST}tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n")
        };
        std::fs::write(dir.path().join("junk.der"), [0x30u8, 0x82, 0x01]).unwrap();
        let cases = [
            (
                text("certs/key.pem", "certs/chain.pem"),
                "`certs/chain.pem` holds a certificate, not a private key",
                "may be swapped",
            ),
            (
                text("junk.der", "certs/key.pem"),
                "`junk.der` holds no PEM certificate",
                "openssl x509 -inform der",
            ),
            (
                text("certs/chain.pem", "junk.der"),
                "`junk.der` holds no PEM private key",
                "BEGIN PRIVATE KEY",
            ),
            (
                text("certs", "certs/key.pem"),
                "`certs` is a directory, not a certificate chain file",
                "PEM file",
            ),
        ];
        std::fs::write(dir.path().join("certs/only-key.pem"), PEM_KEY).unwrap();
        let swapped =
            load_in(dir.path(), &text("certs/only-key.pem", "certs/key.pem")).unwrap_err();
        assert_eq!(
            swapped[0].message,
            "`certs/only-key.pem` holds a private key, not a certificate"
        );
        for (text, message, hint) in cases {
            let err = load_in(dir.path(), &text).unwrap_err();
            assert!(
                err.iter()
                    .any(|i| i.message.contains(message) && i.hint.contains(hint)),
                "{message}: {err:#?}"
            );
        }
    }

    #[test]
    fn starttls_rules_conditions_and_actions_are_read() {
        let action = |stage: &str, when: &str, then: &str| {
            let s = assert_loads(&tls_rule(stage, when, then));
            let rule = &s.hosts[0].rules[0];
            assert_eq!(rule.stage, Stage::parse(stage).unwrap());
            (rule.when.clone(), rule.then.clone())
        };
        let kind = |then: &str| action("starttls", "{}", then).1.kind;
        assert_eq!(kind("{ accept = true }"), ActionKind::Accept);
        assert_eq!(
            kind("{ reply = \"454 4.7.0 TLS not available due to temporary reason\" }"),
            ActionKind::Reply {
                reply: Reply::new(
                    454,
                    Some("4.7.0"),
                    "TLS not available due to temporary reason"
                ),
                close: false
            }
        );
        assert_eq!(
            kind("{ reply = \"220 2.0.0 Go ahead\" }"),
            ActionKind::Reply {
                reply: Reply::new(220, Some("2.0.0"), "Go ahead"),
                close: false
            }
        );
        for (name, fault) in [
            ("close-after-ready", TlsFault::CloseAfterReady),
            ("alert", TlsFault::Alert),
            ("close-mid-handshake", TlsFault::CloseMidHandshake),
            ("Garbage", TlsFault::Garbage),
        ] {
            assert_eq!(
                kind(&format!("{{ tls-fault = \"{name}\" }}")),
                ActionKind::TlsFault(fault)
            );
        }
        assert_eq!(
            action(
                "starttls",
                "{ chance = 0.5 }",
                "{ tls-fault = { hang = \"10m\" }, delay = \"2s\" }"
            )
            .1,
            Action {
                delay: Some(secs(2)),
                kind: ActionKind::TlsFault(TlsFault::Hang(secs(600)))
            }
        );
        assert_eq!(
            action(
                "ehlo",
                "{ connection = \"<=3\" }",
                "{ hide-starttls = true }"
            )
            .1,
            Action {
                delay: None,
                kind: ActionKind::HideStarttls
            }
        );
        assert_eq!(
            action("ehlo", "{}", "{ hide-starttls = true, delay = \"1s\" }").1,
            Action {
                delay: Some(secs(1)),
                kind: ActionKind::HideStarttls
            }
        );
        // `tls` from `ehlo` on
        for stage in [
            "ehlo",
            "mail",
            "rcpt",
            "data",
            "end-of-data",
            "rset",
            "quit",
        ] {
            let (when, _) = action(
                stage,
                "{ tls = false }",
                "{ reply = \"530 5.7.0 Must issue a STARTTLS command first\" }",
            );
            assert_eq!(when, [Condition::Tls(false)], "{stage}");
        }
        let (when, _) = action(
            "mail",
            "{ tls = true, client = \"192.0.2.1\" }",
            "{ accept = true }",
        );
        assert_eq!(when[1], Condition::Tls(true));
        // the conditions that need no MAIL FROM work at `starttls`
        let (when, _) = action(
            "starttls",
            "{ helo = \"*.test\", attempt = \"<3\", per = \"client\" }",
            "{ reply = \"454 4.7.0 TLS not available due to temporary reason\" }",
        );
        assert_eq!(when.len(), 2);
    }

    #[test]
    fn a_ruleset_may_hold_starttls_rules_for_hosts_without_tls() {
        let s = assert_loads(
            "name = \"t\"\n\
             [[host]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"tls\"]\n\
             [[host]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\ntls = \"valid\"\nrulesets = [\"tls\"]\n\
             [[ruleset]]\nname = \"tls\"\n\
             [[ruleset.rule]]\nstage = \"starttls\"\nwhen = { chance = 0.5 }\nthen = { tls-fault = \"alert\" }\n\
             [[ruleset.rule]]\nstage = \"ehlo\"\nwhen = { chance = 0.5 }\nthen = { hide-starttls = true }\n\
             [[ruleset.rule]]\nstage = \"mail\"\nwhen = { tls = false }\nthen = { reply = \"530 5.7.0 Must issue a STARTTLS command first\" }\n",
        );
        assert_eq!(s.host("plain").unwrap().rules.len(), 3);
        assert_eq!(s.host("plain").unwrap().tls.mode, TlsMode::Off);
        assert_eq!(s.host("secure").unwrap().tls.mode, TlsMode::Valid);
    }

    #[test]
    fn a_host_without_tls_gets_one_problem_per_rule_that_needs_it() {
        let text = format!(
            "{HOST}[[host.rule]]\nstage = \"starttls\"\nwhen = {{ tls = false }}\nthen = {{ tls-fault = \"alert\" }}\n\
             [[host.rule]]\nstage = \"mail\"\nwhen = {{ tls = false }}\nthen = {{ reply = \"530 5.7.0 Must issue a STARTTLS command first\" }}\n\
             [[host.rule]]\nstage = \"ehlo\"\nthen = {{ hide-starttls = true }}\n\
             [[host.rule]]\nstage = \"rcpt\"\nthen = {{ tls-fault = \"alert\" }}\n"
        );
        let err = load(&text).unwrap_err();
        let found: Vec<(&str, &str)> = err
            .problems()
            .iter()
            .map(|p| (&text[p.span.clone().unwrap()], p.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "\"starttls\"",
                    "a rule at `starttls`, but this host does not offer STARTTLS (tls is off)"
                ),
                (
                    "false",
                    "`tls` cannot be tested at `starttls`: STARTTLS is not offered again once TLS is on (RFC 3207), so it is always false"
                ),
                (
                    "false",
                    "a `tls` condition, but this host does not offer STARTTLS (tls is off)"
                ),
                (
                    "true",
                    "`hide-starttls`, but this host does not offer STARTTLS (tls is off)"
                ),
                (
                    "\"alert\"",
                    "`tls-fault` cannot be used at `rcpt`: it breaks the TLS handshake that follows STARTTLS"
                ),
            ],
            "{err}"
        );
        assert!(
            err.problems()[0]
                .hint
                .contains("add tls = \"valid\" (or another mode) to this [[host]] on line 2")
        );
        // a broken `tls` is reported alone
        let found = problems(&format!(
            "{HOST}tls = \"of\"\n[[host.rule]]\nstage = \"starttls\"\nthen = {{ accept = true }}\n"
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("did you mean `off`?"), "{found:#?}");
    }

    #[test]
    fn a_misspelt_required_key_is_reported_once() {
        let found = problems("nmae = \"t\"\n[[host]]\nnam = \"mx1\"\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().all(|(m, _)| m.starts_with("unknown key")));
        // but an unrelated unknown key does not hide a missing one
        let found =
            problems("name = \"t\"\n[[host]]\ncolour = \"red\"\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!(found.len(), 2, "{found:#?}");
    }

    #[test]
    fn all_problems_are_reported_together_in_file_order() {
        let err = load(&with_rule(
            "stage = \"rcpto\"\nwhen = { client = \"x\", chance = 2 }\nthen = { reply = \"45\" }",
        ))
        .unwrap_err();
        let lines: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
        assert_eq!(err.problems().len(), 4, "{err}");
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    }

    /// Loading never panics, whatever is cut out of a real scenario: every problem is a
    /// `ScenarioError`, rendered without panicking.
    #[test]
    fn truncated_or_mangled_scenarios_are_errors_not_panics() {
        let source = crate::scenario::embedded()[0].source;
        let boundaries: Vec<usize> = source
            .char_indices()
            .map(|(i, _)| i)
            .filter(|i| i % 7 == 0)
            .collect();
        for &cut in &boundaries {
            if let Err(e) = load(&source[..cut]) {
                let _ = e.to_string();
            }
            let mut mangled = String::from(&source[..cut]);
            let rest: String = source[cut..].chars().skip(3).collect();
            mangled.push_str(&rest.replacen('"', "", 1));
            if let Err(e) = load(&mangled) {
                let _ = e.to_string();
            }
        }
    }
}
