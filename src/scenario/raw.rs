//! The scenario as written: serde structs that mirror the TOML, with the location of every
//! value that validation may have to point at.
//!
//! Leaf values are kept as a permissive [`Leaf`] (any TOML value), so that serde only
//! fails when a table is written where a list of tables belongs, or the like; everything
//! else — wrong types included — is reported by `validate`, all problems at once.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub type Span = Range<usize>;

/// Any TOML value, as written; validation decides what it must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Spanned<Leaf>>),
    Table,
    Datetime,
}

impl Leaf {
    /// What the value is, for messages: "a string", "an integer", ...
    pub fn kind(&self) -> &'static str {
        match self {
            Leaf::Str(_) => "a string",
            Leaf::Int(_) => "an integer",
            Leaf::Float(_) => "a number with a fraction",
            Leaf::Bool(_) => "a boolean",
            Leaf::List(_) => "a list",
            Leaf::Table => "a table",
            Leaf::Datetime => "a date",
        }
    }
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LeafVisitor)
    }
}

struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Leaf, E> {
        Ok(Leaf::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Leaf, E> {
        Ok(Leaf::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Leaf, E> {
        Ok(Leaf::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Leaf, E> {
        Ok(Leaf::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Leaf, E> {
        Ok(Leaf::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Leaf, E> {
        Ok(Leaf::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Leaf>>()? {
            items.push(item);
        }
        Ok(Leaf::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
        // Every entry is read as a `Leaf` (never skipped), so that nothing in a table
        // written where a plain value belongs is reported as an unknown key as well.
        let mut datetime = false;
        while let Some(key) = map.next_key::<String>()? {
            datetime |= key.starts_with("$__toml_private_datetime");
            map.next_value::<Leaf>()?;
        }
        Ok(if datetime {
            Leaf::Datetime
        } else {
            Leaf::Table
        })
    }
}

/// A value that may be missing.
pub type Opt = Option<Spanned<Leaf>>;

/// A table of the format that can also be written, by mistake, as a plain value
/// (`greylist = true`): validation reports the plain value instead of the whole file
/// failing to read.
#[derive(Debug, Clone, PartialEq)]
pub enum TableOr<T> {
    Table(T),
    Other(Leaf),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TableOr<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TableOrVisitor(PhantomData))
    }
}

struct TableOrVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TableOrVisitor<T> {
    type Value = TableOr<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(TableOr::Other(Leaf::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(TableOr::Other(Leaf::Int(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(TableOr::Other(Leaf::Int(
            i64::try_from(v).unwrap_or(i64::MAX),
        )))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(TableOr::Other(Leaf::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(TableOr::Other(Leaf::Str(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(TableOr::Other(Leaf::Str(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        LeafVisitor.visit_seq(seq).map(TableOr::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(TableOr::Table)
    }
}

/// A table whose keys are data, not names of the format (`[reverse-dns]`): every entry
/// in the order written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entries(pub Vec<DataEntry>);

/// One entry of an [`Entries`] table.
#[derive(Debug, Clone, PartialEq)]
pub struct DataEntry {
    pub key: String,
    /// Where the key is written, quotes included (filled in by [`parse`], since serde
    /// gives keys no span).
    pub key_span: Span,
    pub value: Spanned<Leaf>,
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of addresses and names: \"192.0.2.1\" = \"mail.sender.test\"")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Spanned<Leaf>>()?;
                    entries.push(DataEntry {
                        key,
                        key_span: value.span(),
                        value,
                    });
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "a scenario")]
pub struct RawScenario {
    pub name: Opt,
    pub description: Opt,
    pub seed: Opt,
    pub capture: Option<Spanned<RawCapture>>,
    pub journal: Option<Spanned<RawJournal>>,
    #[serde(default)]
    pub domain: Vec<Spanned<RawDomain>>,
    #[serde(default)]
    pub host: Vec<Spanned<RawHost>>,
    #[serde(default)]
    pub ruleset: Vec<Spanned<RawRuleset>>,
    pub reverse_dns: Option<Spanned<Entries>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "a table: [capture]")]
pub struct RawCapture {
    pub max_messages: Opt,
    pub max_bytes: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "a table: [journal]")]
pub struct RawJournal {
    pub max_events: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a table: [[domain]] with name and mx"
)]
pub struct RawDomain {
    pub name: Opt,
    pub mx: Option<Spanned<Vec<Spanned<RawMx>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "an MX record: { host = \"mx1\", preference = 10 }"
)]
pub struct RawMx {
    pub host: Opt,
    pub preference: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a table: [[host]] with name and listen"
)]
pub struct RawHost {
    pub name: Opt,
    pub listen: Opt,
    pub hostname: Opt,
    pub greeting: Opt,
    pub rulesets: Opt,
    /// A mode (`tls = "valid"`) or a table (`tls = { mode = "valid", versions = "1.3" }`).
    pub tls: Option<Spanned<TableOr<RawTls>>>,
    pub extensions: Option<Spanned<RawExtensions>>,
    pub limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a TLS table, like tls = { mode = \"valid\", versions = \"1.3\" }"
)]
pub struct RawTls {
    pub mode: Opt,
    pub versions: Opt,
    pub cert: Opt,
    pub key: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "a table: [host.extensions]")]
pub struct RawExtensions {
    pub pipelining: Opt,
    pub size: Opt,
    #[serde(rename = "8bitmime")]
    pub eight_bit_mime: Opt,
    pub enhancedstatuscodes: Opt,
    pub smtputf8: Opt,
    pub chunking: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", expecting = "a table: [host.limits]")]
pub struct RawLimits {
    pub max_connections: Opt,
    pub max_recipients: Opt,
    pub max_message_size: Opt,
    pub max_line_length: Opt,
    pub max_errors: Opt,
    pub command_timeout: Opt,
    pub data_timeout: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a table: [[ruleset]] with name and rules"
)]
pub struct RawRuleset {
    pub name: Opt,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a rule: a table with stage, when and then"
)]
pub struct RawRule {
    pub stage: Opt,
    pub when: Option<Spanned<RawWhen>>,
    pub then: Option<Spanned<RawThen>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a table of conditions, like { rcpt = \"@aol.test\" }"
)]
pub struct RawWhen {
    pub client: Opt,
    pub helo: Opt,
    pub mail: Opt,
    pub rcpt: Opt,
    pub size_above: Opt,
    pub size_below: Opt,
    pub attempt: Opt,
    pub per: Opt,
    pub chance: Opt,
    pub first_attempt_within: Opt,
    pub time: Opt,
    pub connection: Opt,
    pub message: Opt,
    pub ptr: Opt,
    pub helo_fqdn: Opt,
    pub tls: Opt,
}

#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a table with an action, like { reply = \"451 4.7.1 Try again later\" }"
)]
pub struct RawThen {
    pub accept: Opt,
    pub reply: Opt,
    pub close: Opt,
    pub hang: Opt,
    pub delay: Opt,
    pub reset: Opt,
    pub lose_reply: Opt,
    pub greylist: Option<Spanned<TableOr<RawGreylist>>>,
    pub rate_limit: Option<Spanned<TableOr<RawRateLimit>>>,
    pub concurrency: Option<Spanned<TableOr<RawConcurrency>>>,
    /// A fault's name (`tls-fault = "alert"`), or `tls-fault = { hang = "10m" }`.
    pub tls_fault: Option<Spanned<TableOr<RawTlsFault>>>,
    pub hide_starttls: Opt,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a greylist table, like greylist = { delay = \"5m\" }"
)]
pub struct RawGreylist {
    pub delay: Opt,
    pub retry_window: Opt,
    pub expiry: Opt,
    pub whitelist_after: Opt,
    pub state: Opt,
    pub ipv4_prefix: Opt,
    pub ipv6_prefix: Opt,
    pub normalize_sender: Opt,
    pub reply: Opt,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a rate limit, like rate-limit = { limit = 100, window = \"1h\" }"
)]
pub struct RawRateLimit {
    pub per: Opt,
    pub limit: Opt,
    pub window: Opt,
    pub kind: Opt,
    pub state: Opt,
    pub reply: Opt,
    pub close: Opt,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a concurrency limit, like concurrency = { limit = 10 }"
)]
pub struct RawConcurrency {
    pub per: Opt,
    pub limit: Opt,
    pub reply: Opt,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    expecting = "a TLS fault, like tls-fault = \"alert\" or tls-fault = { hang = \"10m\" }"
)]
pub struct RawTlsFault {
    pub hang: Opt,
}

/// A table of the format, named as a newcomer would look it up in the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Root,
    Capture,
    Journal,
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
}

impl Place {
    pub const ALL: [Place; 17] = [
        Place::Root,
        Place::Capture,
        Place::Journal,
        Place::Domain,
        Place::Mx,
        Place::Host,
        Place::Tls,
        Place::Extensions,
        Place::Limits,
        Place::Ruleset,
        Place::Rule,
        Place::When,
        Place::Then,
        Place::Greylist,
        Place::RateLimit,
        Place::Concurrency,
        Place::TlsFault,
    ];

    /// The keys the format allows in this table, in the order the docs list them.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Place::Root => &[
                "name",
                "description",
                "seed",
                "capture",
                "journal",
                "domain",
                "host",
                "ruleset",
                "reverse-dns",
            ],
            Place::Capture => &["max-messages", "max-bytes"],
            Place::Journal => &["max-events"],
            Place::Domain => &["name", "mx"],
            Place::Mx => &["host", "preference"],
            Place::Host => &[
                "name",
                "listen",
                "hostname",
                "greeting",
                "rulesets",
                "tls",
                "extensions",
                "limits",
                "rule",
            ],
            Place::Tls => &["mode", "versions", "cert", "key"],
            Place::Extensions => &[
                "pipelining",
                "size",
                "8bitmime",
                "enhancedstatuscodes",
                "smtputf8",
                "chunking",
            ],
            Place::Limits => &[
                "max-connections",
                "max-recipients",
                "max-message-size",
                "max-line-length",
                "max-errors",
                "command-timeout",
                "data-timeout",
            ],
            Place::Ruleset => &["name", "rule"],
            Place::Rule => &["stage", "when", "then"],
            Place::When => &[
                "client",
                "helo",
                "mail",
                "rcpt",
                "size-above",
                "size-below",
                "attempt",
                "per",
                "first-attempt-within",
                "chance",
                "time",
                "connection",
                "message",
                "ptr",
                "helo-fqdn",
                "tls",
            ],
            Place::Then => &[
                "accept",
                "reply",
                "close",
                "hang",
                "reset",
                "lose-reply",
                "greylist",
                "rate-limit",
                "concurrency",
                "tls-fault",
                "hide-starttls",
                "delay",
            ],
            Place::Greylist => &[
                "delay",
                "retry-window",
                "expiry",
                "whitelist-after",
                "state",
                "ipv4-prefix",
                "ipv6-prefix",
                "normalize-sender",
                "reply",
            ],
            Place::RateLimit => &["per", "limit", "window", "kind", "state", "reply", "close"],
            Place::Concurrency => &["per", "limit", "reply"],
            Place::TlsFault => &["hang"],
        }
    }

    /// How the docs name this table.
    pub fn name(self) -> &'static str {
        match self {
            Place::Root => "the top level",
            Place::Capture => "[capture]",
            Place::Journal => "[journal]",
            Place::Domain => "[[domain]]",
            Place::Mx => "an mx entry",
            Place::Host => "[[host]]",
            Place::Tls => "`tls`",
            Place::Extensions => "[host.extensions]",
            Place::Limits => "[host.limits]",
            Place::Ruleset => "[[ruleset]]",
            Place::Rule => "a rule",
            Place::When => "`when`",
            Place::Then => "`then`",
            Place::Greylist => "`greylist`",
            Place::RateLimit => "`rate-limit`",
            Place::Concurrency => "`concurrency`",
            Place::TlsFault => "`tls-fault`",
        }
    }

    /// The table at a path of keys (list indexes left out), if the format has one there.
    fn at(keys: &[&str]) -> Option<Place> {
        Some(match keys {
            [] => Place::Root,
            ["capture"] => Place::Capture,
            ["journal"] => Place::Journal,
            ["domain"] => Place::Domain,
            ["domain", "mx"] => Place::Mx,
            ["host"] => Place::Host,
            ["host", "tls"] => Place::Tls,
            ["host", "extensions"] => Place::Extensions,
            ["host", "limits"] => Place::Limits,
            ["ruleset"] => Place::Ruleset,
            ["host" | "ruleset", "rule"] => Place::Rule,
            ["host" | "ruleset", "rule", "when"] => Place::When,
            ["host" | "ruleset", "rule", "then"] => Place::Then,
            ["host" | "ruleset", "rule", "then", "greylist"] => Place::Greylist,
            ["host" | "ruleset", "rule", "then", "rate-limit"] => Place::RateLimit,
            ["host" | "ruleset", "rule", "then", "concurrency"] => Place::Concurrency,
            ["host" | "ruleset", "rule", "then", "tls-fault"] => Place::TlsFault,
            _ => return None,
        })
    }
}

/// A key that the format does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    pub span: Span,
    /// The table it was found in.
    pub place: Option<Place>,
    /// The path of that table, keys and list indexes joined with dots: `host.0.rule.1.then`
    /// (empty at the top level).
    pub table: String,
}

/// What the TOML parser or serde could not read; nothing can be validated past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub message: String,
    pub span: Span,
}

/// The outcome of reading a scenario's TOML.
#[derive(Debug)]
pub struct Parsed {
    /// `None` when the TOML is not valid or has the wrong shape (see `unreadable`).
    pub scenario: Option<RawScenario>,
    /// Every unknown key found, even when the shape was wrong further on.
    pub unknown: Vec<UnknownKey>,
    pub unreadable: Vec<Unreadable>,
}

/// Reads TOML text into the raw structs, collecting every unknown key.
pub fn parse(text: &str) -> Parsed {
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(error) => {
            return Parsed {
                scenario: None,
                unknown: Vec::new(),
                unreadable: vec![unreadable(&error, text)],
            };
        }
    };
    let mut ignored: Vec<Vec<Segment>> = Vec::new();
    let deserializer = toml::de::Deserializer::from(table.clone());
    let result: Result<RawScenario, _> =
        serde_ignored::deserialize(deserializer, |path| ignored.push(segments(&path)));
    let unknown = ignored
        .iter()
        .filter_map(|path| locate(table.get_ref(), path))
        .collect();
    match result {
        Ok(mut scenario) => {
            if let Some(entries) = &mut scenario.reverse_dns {
                key_spans(table.get_ref(), "reverse-dns", &mut entries.get_mut().0);
            }
            Parsed {
                scenario: Some(scenario),
                unknown,
                unreadable: Vec::new(),
            }
        }
        Err(error) => Parsed {
            scenario: None,
            unknown,
            unreadable: vec![unreadable(&error, text)],
        },
    }
}

/// Gives the entries of the top-level table `name` the spans of their keys, and puts
/// them in the order they are written.
fn key_spans(root: &DeTable, name: &str, entries: &mut [DataEntry]) {
    let Some(table) = entry(root, name).and_then(|(_, v)| v.get_ref().as_table()) else {
        return;
    };
    for e in entries.iter_mut() {
        if let Some((key, _)) = entry(table, &e.key) {
            e.key_span = key.span();
        }
    }
    entries.sort_by_key(|e| e.key_span.start);
}

fn unreadable(error: &toml::de::Error, text: &str) -> Unreadable {
    let span = error.span().unwrap_or(0..0);
    // toml phrases some errors over several lines ("invalid string\nexpected `\"`"):
    // keep them on one line, it reads as one sentence.
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let span = if span.start >= text.len() && !text.is_empty() {
        // "unexpected end of file": point at the last character rather than past it.
        text.len() - text.chars().next_back().map_or(0, char::len_utf8)..text.len()
    } else {
        span
    };
    Unreadable { message, span }
}

/// One step of a path into the TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// The path serde_ignored reports, without the steps that `Option` and `Spanned` add.
fn segments(path: &serde_ignored::Path) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Segment::Index(*index)),
        Path::Map { key, .. } if !key.starts_with("$__serde_spanned_private") => {
            out.push(Segment::Key(key.clone()))
        }
        _ => {}
    }
    out
}

/// Finds the key at the end of `path` in the document, with its span and table.
fn locate(root: &DeTable, path: &[Segment]) -> Option<UnknownKey> {
    let (Segment::Key(last), parents) = path.split_last()? else {
        return None;
    };
    let mut table = root;
    let mut value: Option<&DeValue> = None;
    let mut keys: Vec<&str> = Vec::new();
    for segment in parents {
        let current = match segment {
            Segment::Key(key) => {
                let current = match value {
                    None => table,
                    Some(v) => v.as_table()?,
                };
                keys.push(key);
                entry(current, key)?.1
            }
            Segment::Index(index) => value?.as_array()?.get(*index)?,
        };
        value = Some(current.get_ref());
    }
    if let Some(v) = value {
        table = v.as_table()?;
    }
    let (key, _) = entry(table, last)?;
    let table = parents
        .iter()
        .map(|s| match s {
            Segment::Key(k) => k.clone(),
            Segment::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".");
    Some(UnknownKey {
        key: last.clone(),
        span: key.span(),
        place: Place::at(&keys),
        table,
    })
}

type Entry<'a, 'i> = (
    &'a Spanned<toml::de::DeString<'i>>,
    &'a Spanned<DeValue<'i>>,
);

fn entry<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<Entry<'a, 'i>> {
    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(text: &str) -> Vec<(String, Span, Option<Place>, String)> {
        let parsed = parse(text);
        assert!(parsed.unreadable.is_empty(), "{:?}", parsed.unreadable);
        parsed
            .unknown
            .into_iter()
            .map(|u| (u.key, u.span, u.place, u.table))
            .collect()
    }

    #[test]
    fn every_documented_key_is_known() {
        let text = r#"
            name = "n"
            description = "d"
            seed = 1
            [capture]
            max-messages = 1
            max-bytes = 1
            [journal]
            max-events = 1
            [[domain]]
            name = "a.test"
            mx = [{ host = "mx1", preference = 10 }]
            [[host]]
            name = "mx1"
            listen = "127.0.0.1:25"
            hostname = "h"
            greeting = "g"
            rulesets = ["r"]
            tls = { mode = "valid", versions = "1.3", cert = "c.pem", key = "k.pem" }
            [host.extensions]
            pipelining = true
            size = true
            8bitmime = true
            enhancedstatuscodes = true
            smtputf8 = true
            chunking = true
            [host.limits]
            max-connections = 1
            max-recipients = 1
            max-message-size = 1
            max-line-length = 1
            max-errors = 1
            command-timeout = "1s"
            data-timeout = "1s"
            [[host.rule]]
            stage = "rcpt"
            when = { client = "a", helo = "b", mail = "c", rcpt = "d", size-above = 1, size-below = 2, attempt = "1", per = "triplet", first-attempt-within = "1h", chance = 0.5, time = "<1h", connection = "1", message = "2", ptr = "missing", helo-fqdn = true, tls = true }
            then = { accept = true, reply = "x", close = true, hang = "1s", reset = true, lose-reply = true, hide-starttls = true, tls-fault = { hang = "1s" }, delay = "1s" }
            [[host.rule]]
            stage = "rcpt"
            [host.rule.then.greylist]
            delay = "1s"
            retry-window = "1h"
            expiry = "1d"
            whitelist-after = 1
            state = "host"
            ipv4-prefix = 32
            ipv6-prefix = 128
            normalize-sender = false
            reply = "450 x"
            [host.rule.then.rate-limit]
            per = "client"
            limit = 1
            window = "1h"
            kind = "fixed"
            state = "host"
            reply = "451 x"
            close = true
            [host.rule.then.concurrency]
            per = "client"
            limit = 1
            reply = "421 x"
            [reverse-dns]
            "192.0.2.1" = "mail.sender.test"
            [[ruleset]]
            name = "r"
            [[ruleset.rule]]
            stage = "mail"
            then = { accept = true }
        "#;
        assert_eq!(unknown(text), vec![]);
        // and the key lists name exactly the keys the structs read
        let listed: usize = Place::ALL.iter().map(|p| p.keys().len()).sum();
        assert_eq!(
            listed,
            9 + 2 + 1 + 2 + 2 + 9 + 4 + 6 + 7 + 2 + 3 + 16 + 12 + 9 + 7 + 3 + 1
        );
    }

    #[test]
    fn reverse_dns_keeps_every_entry_with_the_span_of_its_key() {
        let text = "[reverse-dns]\n\"192.0.2.1\" = \"a.test\"\n'2001:db8::1' = 7\n192.0.2.2 = \"b.test\"\n";
        let parsed = parse(text);
        assert!(parsed.unknown.is_empty(), "{:?}", parsed.unknown);
        let entries = parsed.scenario.unwrap().reverse_dns.unwrap().into_inner().0;
        let keys: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.key.as_str(), &text[e.key_span.clone()]))
            .collect();
        assert_eq!(
            keys,
            [
                ("192.0.2.1", "\"192.0.2.1\""),
                ("2001:db8::1", "'2001:db8::1'"),
                // unquoted, the dots make nested tables
                ("192", "192"),
            ]
        );
        assert_eq!(entries[0].value.get_ref(), &Leaf::Str("a.test".into()));
        assert_eq!(&text[entries[1].value.span()], "7");
        assert_eq!(entries[2].value.get_ref(), &Leaf::Table);
    }

    #[test]
    fn action_tables_written_as_plain_values_are_kept_for_validation() {
        let text = "[[host]]\n[[host.rule]]\nthen = { greylist = true, rate-limit = \"1/h\", concurrency = [1] }\n";
        let parsed = parse(text);
        assert!(parsed.unreadable.is_empty(), "{:?}", parsed.unreadable);
        let mut host = parsed.scenario.unwrap().host.remove(0).into_inner();
        let then = host.rule.remove(0).into_inner().then.unwrap();
        let then = then.get_ref();
        let greylist = then.greylist.as_ref().unwrap();
        assert_eq!(greylist.get_ref(), &TableOr::Other(Leaf::Bool(true)));
        assert_eq!(&text[greylist.span()], "true");
        assert_eq!(
            then.rate_limit.as_ref().unwrap().get_ref(),
            &TableOr::Other(Leaf::Str("1/h".into()))
        );
        assert!(matches!(
            then.concurrency.as_ref().unwrap().get_ref(),
            TableOr::Other(Leaf::List(_))
        ));
    }

    #[test]
    fn unknown_keys_in_action_tables_are_reported_in_their_table() {
        let text = "[[ruleset]]\n[[ruleset.rule]]\nthen = { greylist = { dealy = \"5m\" }, rate-limit = { limti = 1 }, concurrency = { windw = \"1h\" } }\n";
        let found = unknown(text);
        let by_key = |k: &str| found.iter().find(|f| f.0 == k).cloned().unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(&text[by_key("dealy").1], "dealy");
        assert_eq!(by_key("dealy").2, Some(Place::Greylist));
        assert_eq!(by_key("dealy").3, "ruleset.0.rule.0.then.greylist");
        assert_eq!(by_key("limti").2, Some(Place::RateLimit));
        assert_eq!(by_key("windw").2, Some(Place::Concurrency));
        // and the known keys are read
        let parsed = parse("[[host]]\n[[host.rule]]\nthen = { greylist = { delay = \"1m\" } }\n");
        let mut host = parsed.scenario.unwrap().host.remove(0).into_inner();
        let then = host.rule.remove(0).into_inner().then.unwrap().into_inner();
        let TableOr::Table(g) = then.greylist.unwrap().into_inner() else {
            panic!("not a table")
        };
        assert_eq!(g.delay.unwrap().into_inner(), Leaf::Str("1m".into()));
    }

    #[test]
    fn tls_is_a_mode_or_a_table_and_its_unknown_keys_are_reported_in_it() {
        let text = "[[host]]\ntls = \"valid\"\n[[host]]\ntls = { mode = \"expired\", version = \"1.3\" }\n[[host]]\n[host.tls]\nversions = \"1.2\"\n[[host]]\ntls = true\n";
        let parsed = parse(text);
        assert!(parsed.unreadable.is_empty(), "{:?}", parsed.unreadable);
        let unknown: Vec<_> = parsed
            .unknown
            .iter()
            .map(|u| (u.key.as_str(), u.place, u.table.as_str()))
            .collect();
        assert_eq!(unknown, [("version", Some(Place::Tls), "host.1.tls")]);
        let hosts = parsed.scenario.unwrap().host;
        let tls = |i: usize| hosts[i].get_ref().tls.as_ref().unwrap();
        assert_eq!(tls(0).get_ref(), &TableOr::Other(Leaf::Str("valid".into())));
        assert_eq!(&text[tls(0).span()], "\"valid\"");
        let TableOr::Table(t) = tls(1).get_ref() else {
            panic!("not a table")
        };
        assert_eq!(
            t.mode.as_ref().unwrap().get_ref(),
            &Leaf::Str("expired".into())
        );
        let TableOr::Table(t) = tls(2).get_ref() else {
            panic!("not a table")
        };
        assert_eq!(
            t.versions.as_ref().unwrap().get_ref(),
            &Leaf::Str("1.2".into())
        );
        assert_eq!(tls(3).get_ref(), &TableOr::Other(Leaf::Bool(true)));
    }

    #[test]
    fn a_tls_fault_is_a_name_or_a_hang_table() {
        let text = "[[ruleset]]\n[[ruleset.rule]]\nthen = { tls-fault = \"alert\" }\n[[ruleset.rule]]\nthen = { tls-fault = { hang = \"1m\", hnag = \"2m\" }, hide-starttls = true }\n";
        let parsed = parse(text);
        let unknown: Vec<_> = parsed
            .unknown
            .iter()
            .map(|u| (u.key.as_str(), u.place, u.table.as_str()))
            .collect();
        assert_eq!(
            unknown,
            [(
                "hnag",
                Some(Place::TlsFault),
                "ruleset.0.rule.1.then.tls-fault"
            )]
        );
        let mut set = parsed.scenario.unwrap().ruleset.remove(0).into_inner();
        let second = set.rule.remove(1).into_inner().then.unwrap().into_inner();
        let first = set.rule.remove(0).into_inner().then.unwrap().into_inner();
        assert_eq!(
            first.tls_fault.unwrap().into_inner(),
            TableOr::Other(Leaf::Str("alert".into()))
        );
        let TableOr::Table(fault) = second.tls_fault.unwrap().into_inner() else {
            panic!("not a table")
        };
        assert_eq!(fault.hang.unwrap().into_inner(), Leaf::Str("1m".into()));
        assert_eq!(second.hide_starttls.unwrap().into_inner(), Leaf::Bool(true));
    }

    #[test]
    fn reports_every_unknown_key_with_its_span_and_table() {
        let text = "nmae = \"x\"\n[[host]]\nname = \"mx1\"\nlistn = \"a\"\n[[host.rule]]\nstage = \"rcpt\"\nthen = { relpy = \"x\" }\n[[domain]]\nmx = [{ hots = \"mx1\" }]\n";
        let found = unknown(text);
        let by_key = |k: &str| found.iter().find(|f| f.0 == k).cloned().unwrap();
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(by_key("nmae").1, 0..4);
        assert_eq!(by_key("nmae").2, Some(Place::Root));
        assert_eq!(&text[by_key("listn").1], "listn");
        assert_eq!(by_key("listn").2, Some(Place::Host));
        assert_eq!(&text[by_key("relpy").1], "relpy");
        assert_eq!(by_key("relpy").2, Some(Place::Then));
        assert_eq!(by_key("relpy").3, "host.0.rule.0.then");
        assert_eq!(by_key("nmae").3, "");
        assert_eq!(&text[by_key("hots").1], "hots");
        assert_eq!(by_key("hots").2, Some(Place::Mx));
        assert_eq!(by_key("hots").3, "domain.0.mx.0");
    }

    #[test]
    fn a_table_where_a_value_belongs_is_a_leaf_not_unknown_keys() {
        let parsed = parse("name = { a = 1, b = [1, 2] }\n");
        assert!(parsed.unknown.is_empty());
        let name = parsed.scenario.unwrap().name.unwrap();
        assert_eq!(name.into_inner(), Leaf::Table);
    }

    #[test]
    fn lists_keep_the_span_of_each_item() {
        let text = "[[host]]\nrulesets = [\"a\", \"bb\"]\n";
        let parsed = parse(text);
        let host = parsed.scenario.unwrap().host.remove(0).into_inner();
        let Leaf::List(items) = host.rulesets.unwrap().into_inner() else {
            panic!("not a list")
        };
        assert_eq!(&text[items[1].span()], "\"bb\"");
    }

    #[test]
    fn syntax_and_shape_errors_are_unreadable_with_a_span() {
        let parsed = parse("name = \"x\nseed = 1\n");
        assert!(parsed.scenario.is_none());
        assert_eq!(parsed.unreadable.len(), 1);

        let text = "[host]\nname = \"mx1\"\n";
        let parsed = parse(text);
        assert!(parsed.scenario.is_none());
        assert_eq!(parsed.unreadable.len(), 1, "{:?}", parsed.unreadable);
    }
}
