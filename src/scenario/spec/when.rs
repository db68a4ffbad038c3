//! The conditions of a rule's `when`, and what each stage of the conversation knows: a
//! condition on something its stage cannot know yet is a problem, reported once, here.

use std::sync::LazyLock;

use crate::scenario::model::{
    AttemptKey, Condition, DnsCheck, HeloDnsCheck, PtrCheck, SpfOutcome, Stage, TlsMode,
};
use crate::scenario::read::tree::{Node, Span, Table as TomlTable};
use crate::scenario::read::{Cx, Key, values};

/// Something a condition tests that the conversation learns at some stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    /// The EHLO/HELO name: from `ehlo` on.
    Helo,
    /// The sender: from `mail` on.
    Sender,
    /// The recipients: from `rcpt` on.
    Recipient,
    /// A size (SIZE= at `mail`, the message at `end-of-data`): from `mail` on.
    Size,
    /// The number of the transaction in its connection: from `mail` on.
    MessageNumber,
    /// Whether STARTTLS completed: always false at `connect`, and at `starttls`.
    Tls,
}

impl Fact {
    /// Why `stage` cannot know this, or `None` if it can.
    pub(crate) fn unknown_at(self, stage: Stage) -> Option<&'static str> {
        let before = |first: Stage| stage.rank() < first.rank();
        match self {
            Fact::Helo if before(Stage::Ehlo) => Some("the client has not said EHLO yet"),
            Fact::Sender if before(Stage::Mail) => Some("the client has not sent MAIL FROM yet"),
            Fact::Recipient if before(Stage::Rcpt) => Some("the client has not sent RCPT TO yet"),
            Fact::Size if before(Stage::Mail) => Some("there is no message yet"),
            Fact::MessageNumber if before(Stage::Mail) => Some("no message has started yet"),
            Fact::Tls if stage == Stage::Connect => {
                Some("every connection starts in plain text, so it is always false")
            }
            Fact::Tls if stage == Stage::Starttls => Some(
                "STARTTLS is not offered again once TLS is on (RFC 3207), so it is always false",
            ),
            _ => None,
        }
    }
}

/// A condition's need for a fact, with what to write instead when the stage lacks it.
#[derive(Clone, Copy)]
pub(crate) struct Need {
    pub fact: Fact,
    pub hint: fn(Stage) -> &'static str,
}

/// Reports that `what` (a key, or `key = "value"`) cannot be tested at `stage`, if the
/// stage does not know what it needs. The one place this problem is phrased.
pub(crate) fn check_need(cx: &mut Cx, what: &str, need: Need, stage: Stage, span: Span) {
    if let Some(why) = need.fact.unknown_at(stage) {
        cx.issue(
            span,
            format!("`{what}` cannot be tested at `{stage}`: {why}"),
            (need.hint)(stage),
        );
    }
}

/// What a condition's reader is given besides its own value.
pub(crate) struct When<'a, 'w> {
    pub table: &'w TomlTable<'a>,
    /// The rule's stage, if it is valid.
    pub stage: Option<Stage>,
}

type Read = fn(&mut Cx, Key, &Node, &When) -> Option<Condition>;

/// One key of `when`.
pub(crate) struct Row {
    pub key: &'static str,
    pub example: &'static str,
    pub takes: &'static str,
    pub doc: &'static str,
    /// What the stage must know; checked before the value is read.
    pub needs: Option<Need>,
    /// Reads the condition; `None` for a key that only modifies other conditions (`per`)
    /// or whose value has a problem (reported).
    pub read: Read,
}

/// Every condition, in the order the docs list them (and rules hold them).
pub(crate) fn conditions() -> &'static [Row] {
    static ROWS: LazyLock<Vec<Row>> = LazyLock::new(|| {
        vec![
            Row {
                key: "client",
                example: "\"192.0.2.0/24\"",
                takes: "addresses or networks",
                doc: "the client's address is one of these, or in one of these networks",
                needs: None,
                read: |cx, key, v, _| Some(Condition::Client(values::networks(cx, key, v))),
            },
            Row {
                key: "helo",
                example: "\"*.example.test\"",
                takes: "globs",
                doc: "the EHLO/HELO name matches one of these globs",
                needs: Some(Need {
                    fact: Fact::Helo,
                    hint: |_| "use stage = \"ehlo\" or a later stage, or remove `helo`",
                }),
                read: |cx, key, v, _| Some(Condition::Helo(values::globs(cx, key, v))),
            },
            Row {
                key: "mail",
                example: "\"me@example.test\"",
                takes: "address patterns",
                doc: "the sender matches: an address, a glob, `\"@domain\"`, or `\"<>\"` (the null sender)",
                needs: Some(Need {
                    fact: Fact::Sender,
                    hint: |_| "use stage = \"mail\" or a later stage, or remove `mail`",
                }),
                read: |cx, key, v, _| Some(Condition::Sender(values::addresses(cx, key, v, false))),
            },
            Row {
                key: "rcpt",
                example: "\"alice@aol.test\"",
                takes: "address patterns",
                doc: "the recipient matches (at `data` and later: any accepted recipient)",
                needs: Some(Need {
                    fact: Fact::Recipient,
                    hint: |_| "use stage = \"rcpt\" (each recipient) or \"data\"/\"end-of-data\" (any accepted recipient), or remove `rcpt`",
                }),
                read: |cx, key, v, _| {
                    Some(Condition::Recipient(values::addresses(cx, key, v, true)))
                },
            },
            Row {
                key: "size-above",
                example: "\"10MB\"",
                takes: "a size",
                doc: "the message is bigger than this (at `mail`: its declared SIZE=)",
                needs: Some(SIZE_NEED),
                read: |cx, key, v, _| values::size(cx, key, v, None).map(Condition::SizeAbove),
            },
            Row {
                key: "size-below",
                example: "\"1KiB\"",
                takes: "a size",
                doc: "the message is smaller than this",
                needs: Some(SIZE_NEED),
                read: |cx, key, v, _| values::size(cx, key, v, None).map(Condition::SizeBelow),
            },
            Row {
                key: "attempt",
                example: "\"<3\"",
                takes: "a range",
                doc: "this is attempt number N, counted farm-wide per `per` (by default per triplet, which exists only at rcpt): \"3\", \"<3\", \">=3\", \"2-4\"",
                needs: None,
                read: |cx, key, v, when| {
                    let range = values::numbers(cx, key.name, v, "the first attempt is 1");
                    let per = counted_per(cx, key, v, when)?;
                    range.map(|range| Condition::Attempt { per, range })
                },
            },
            Row {
                key: "per",
                example: "\"recipient\"",
                takes: "a name",
                doc: "what `attempt` and `first-attempt-within` count: client, sender, recipient or triplet (default)",
                needs: None,
                read: |cx, key, v, when| {
                    if !when.table.has("attempt") && !when.table.has("first-attempt-within") {
                        cx.issue(
                            v.span(),
                            "`per` says what `attempt` or `first-attempt-within` counts, but this rule has neither",
                            "add an attempt range, like attempt = \"<3\", or a time since the first attempt, like first-attempt-within = \"2h\"; or remove `per`",
                        );
                    }
                    values::choice(cx, key.name, v, &PER, PER_ALIASES, PER_EXPLAINED);
                    None
                },
            },
            Row {
                key: "first-attempt-within",
                example: "\"2h\"",
                takes: "a duration",
                doc: "less than this has passed since the first attempt counted per `per`: a quota that clears after a time, a new IP's warm-up",
                needs: None,
                read: |cx, key, v, when| {
                    let why = "no time is less than 0, so the rule would never match";
                    let within = values::duration(cx, key, v, Some(why));
                    let per = counted_per(cx, key, v, when)?;
                    within.map(|within| Condition::FirstAttemptWithin { per, within })
                },
            },
            Row {
                key: "chance",
                example: "0.25",
                takes: "a number from 0.0 to 1.0",
                doc: "a draw from the farm's seeded generator is below this",
                needs: None,
                read: |cx, _, v, _| chance(cx, v).map(Condition::Chance),
            },
            Row {
                key: "time",
                example: "\"<10m\"",
                takes: "a time range",
                doc: "farm time is in this half-open range: \"<10m\", \">=1h\", \"10m-1h\"",
                needs: None,
                read: |cx, _, v, _| values::time_range(cx, v).map(Condition::Time),
            },
            Row {
                key: "connection",
                example: "\"<=3\"",
                takes: "a range",
                doc: "the host's own connection number (1 for its first) is in the range",
                needs: None,
                read: |cx, key, v, _| {
                    values::numbers(cx, key.name, v, "the host's first connection is 1")
                        .map(Condition::Connection)
                },
            },
            Row {
                key: "message",
                example: "\">5\"",
                takes: "a range",
                doc: "the number of this transaction in its connection (1 for the first MAIL) is in the range",
                needs: Some(Need {
                    fact: Fact::MessageNumber,
                    hint: |_| "use stage = \"mail\" or a later stage; to count the host's connections, use `connection`",
                }),
                read: |cx, key, v, _| {
                    values::numbers(cx, key.name, v, "the first message of a connection is 1")
                        .map(Condition::Message)
                },
            },
            Row {
                key: "ptr",
                example: "\"missing\"",
                takes: "a name",
                doc: "the client's PTR name, looked up through the farm's DNS: missing, present, mismatch (none, or not the EHLO name) or temperror",
                needs: None,
                read: |cx, key, v, when| {
                    let check = values::choice(cx, key.name, v, &PTR, PTR_ALIASES, PTR_EXPLAINED)?;
                    if check == PtrCheck::MismatchesHelo
                        && let Some(stage) = when.stage
                    {
                        let need = Need {
                            fact: Fact::Helo,
                            hint: |_| "use stage = \"ehlo\" or a later stage; ptr = \"missing\" can be tested at `connect`",
                        };
                        check_need(cx, "ptr = \"mismatch\"", need, stage, v.span());
                    }
                    Some(Condition::Ptr(check))
                },
            },
            Row {
                key: "fcrdns",
                example: "\"fail\"",
                takes: "a name",
                doc: "forward-confirmed reverse DNS of the client, through the farm's DNS: pass, fail or temperror",
                needs: None,
                read: |cx, key, v, _| {
                    values::choice(cx, key.name, v, &FCRDNS, FCRDNS_ALIASES, FCRDNS_EXPLAINED)
                        .map(Condition::Fcrdns)
                },
            },
            Row {
                key: "helo-dns",
                example: "\"mismatch\"",
                takes: "a name",
                doc: "what the EHLO name's A/AAAA records say of the client's address: match, mismatch, missing or temperror",
                needs: Some(Need {
                    fact: Fact::Helo,
                    hint: |_| "use stage = \"ehlo\" or a later stage, or remove `helo-dns`",
                }),
                read: |cx, key, v, _| {
                    values::choice(
                        cx,
                        key.name,
                        v,
                        &HELO_DNS,
                        HELO_DNS_ALIASES,
                        HELO_DNS_EXPLAINED,
                    )
                    .map(Condition::HeloDns)
                },
            },
            Row {
                key: "spf",
                example: "\"fail\"",
                takes: "a name or a list",
                doc: "the sender domain's SPF result for the client (RFC 7208), through the farm's DNS: pass, fail, softfail, neutral, none, temperror, permerror",
                needs: Some(Need {
                    fact: Fact::Sender,
                    hint: |_| "use stage = \"mail\" or a later stage: SPF checks the MAIL FROM domain",
                }),
                read: |cx, key, v, _| spf(cx, key, v),
            },
            Row {
                key: "helo-fqdn",
                example: "true",
                takes: "true or false",
                doc: "whether the EHLO name is a fully qualified domain name (has a dot, is not an address literal)",
                needs: Some(Need {
                    fact: Fact::Helo,
                    hint: |_| "use stage = \"ehlo\" or a later stage, or remove `helo-fqdn`",
                }),
                read: |cx, key, v, _| values::boolean(cx, key, v).map(Condition::HeloFqdn),
            },
            Row {
                key: "tls",
                example: "true",
                takes: "true or false",
                doc: "whether STARTTLS has completed on this connection",
                needs: Some(Need {
                    fact: Fact::Tls,
                    hint: |stage| match stage {
                        Stage::Starttls => {
                            "remove `tls`; a `starttls` rule only ever sees plain-text sessions"
                        }
                        _ => {
                            "test it from `ehlo` on; to require TLS before mail, write stage = \"mail\", when = { tls = false }, then = { reply = \"530 5.7.0 Must issue a STARTTLS command first\" }"
                        }
                    },
                }),
                read: |cx, key, v, _| {
                    if let Some(s) = v.as_str()
                        && TlsMode::ALL
                            .iter()
                            .any(|m| s.trim().eq_ignore_ascii_case(m.as_str()))
                    {
                        cx.issue(
                            v.span(),
                            "`tls` in `when` is true or false: whether STARTTLS has completed",
                            format!(
                                "write tls = true or tls = false; the certificate is chosen by the host's own tls = \"{}\"",
                                s.trim()
                            ),
                        );
                        return None;
                    }
                    values::boolean(cx, key, v).map(Condition::Tls)
                },
            },
        ]
    });
    &ROWS
}

const SIZE_NEED: Need = Need {
    fact: Fact::Size,
    hint: |_| "use stage = \"mail\" (the SIZE= the client declares) or \"end-of-data\" (the message itself)",
};

const PER: [(&str, AttemptKey); 4] = [
    ("client", AttemptKey::Client),
    ("sender", AttemptKey::Sender),
    ("recipient", AttemptKey::Recipient),
    ("triplet", AttemptKey::Triplet),
];
const PER_ALIASES: &[(&str, &str)] = &[("ip", "client"), ("rcpt", "recipient"), ("mail", "sender")];
const PER_EXPLAINED: &str = "`per` is one of client, sender, recipient, triplet";

const PTR: [(&str, PtrCheck); 4] = [
    ("missing", PtrCheck::Missing),
    ("present", PtrCheck::Present),
    ("mismatch", PtrCheck::MismatchesHelo),
    ("temperror", PtrCheck::TempError),
];
const PTR_ALIASES: &[(&str, &str)] = &[
    ("none", "missing"),
    ("absent", "missing"),
    ("no", "missing"),
    ("exists", "present"),
    ("yes", "present"),
    ("mismatches-helo", "mismatch"),
    ("helo-mismatch", "mismatch"),
    ("mismatched", "mismatch"),
];
const PTR_EXPLAINED: &str = "`ptr` is one of missing (the client's address has no PTR name), present, mismatch (it has none, or one other than the EHLO name) or temperror (the lookup failed for now)";
const FCRDNS: [(&str, DnsCheck); 3] = [
    ("pass", DnsCheck::Pass),
    ("fail", DnsCheck::Fail),
    ("temperror", DnsCheck::TempError),
];
const FCRDNS_ALIASES: &[(&str, &str)] = &[
    ("true", "pass"),
    ("false", "fail"),
    ("match", "pass"),
    ("mismatch", "fail"),
];
const FCRDNS_EXPLAINED: &str = "`fcrdns` is pass (a PTR name of the client resolves back to its address), fail (no PTR name, or none leads back) or temperror (a lookup failed for now)";
const HELO_DNS: [(&str, HeloDnsCheck); 4] = [
    ("match", HeloDnsCheck::Match),
    ("mismatch", HeloDnsCheck::Mismatch),
    ("missing", HeloDnsCheck::Missing),
    ("temperror", HeloDnsCheck::TempError),
];
const HELO_DNS_ALIASES: &[(&str, &str)] = &[
    ("pass", "match"),
    ("fail", "mismatch"),
    ("none", "missing"),
    ("nxdomain", "missing"),
];
const HELO_DNS_EXPLAINED: &str = "`helo-dns` is match (the EHLO name's A/AAAA records include the client's address), mismatch (they do not), missing (it has none) or temperror (the lookup failed for now)";

/// `spf = "fail"` or `spf = ["fail", "softfail"]`.
fn spf(cx: &mut Cx, key: Key, v: &Node) -> Option<Condition> {
    let before = cx.problems();
    let mut outcomes = Vec::new();
    for (text, span) in values::strings(cx, key, v) {
        let name = text.trim().to_ascii_lowercase();
        match SpfOutcome::NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, outcome)) => outcomes.push(*outcome),
            None => {
                let names: Vec<&str> = SpfOutcome::NAMES.iter().map(|(n, _)| *n).collect();
                let explained = format!("the SPF results (RFC 7208) are {}", names.join(", "));
                let hint = match super::super::read::closest(&name, names.iter().copied()) {
                    Some(close) => super::super::read::did_you_mean(close, &explained),
                    None => explained,
                };
                cx.issue(span, format!("`{text}` is not an SPF result"), hint);
            }
        }
    }
    (cx.problems() == before && !outcomes.is_empty()).then_some(Condition::Spf(outcomes))
}

/// What `attempt` or `first-attempt-within` counts by, and whether the stage can count
/// it; `None` when `per` is not a known name (the `per` row reports that).
fn counted_per(cx: &mut Cx, key: Key, v: &Node, when: &When) -> Option<AttemptKey> {
    let per_node = when.table.get("per");
    let per = match &per_node {
        None => AttemptKey::Triplet,
        Some(p) => {
            let name = p.as_str()?.trim().to_ascii_lowercase();
            let name = PER_ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map_or(name.as_str(), |(_, meant)| meant);
            PER.iter().find(|(n, _)| *n == name)?.1
        }
    };
    // Both counted keys share `per`: the problem is reported once, at the first.
    let first = key.name == "attempt" || !when.table.has("attempt");
    let Some(stage) = when.stage.filter(|_| first) else {
        return Some(per);
    };
    let choices = if stage.rank() < Stage::Mail.rank() {
        "per = \"client\" (connections from the client's IP address)"
    } else {
        "per = \"client\" (connections from the client's IP address) or per = \"sender\" (MAIL commands with this sender)"
    };
    let uncounted = match per {
        AttemptKey::Recipient | AttemptKey::Triplet => stage != Stage::Rcpt,
        AttemptKey::Sender => stage.rank() < Stage::Mail.rank(),
        AttemptKey::Client => false,
    };
    if uncounted {
        let per_name = PER.iter().find(|(_, k)| *k == per).map_or("", |(n, _)| *n);
        let why = match per {
            AttemptKey::Sender => "there is no sender before MAIL FROM",
            _ => "it counts RCPT commands, so it exists only at `rcpt`",
        };
        match per_node {
            Some(p) => cx.issue(
                p.span(),
                format!("`per = \"{per_name}\"` cannot be counted at `{stage}`: {why}"),
                format!("write {choices}, or use stage = \"rcpt\""),
            ),
            None => cx.issue(
                v.span(),
                format!(
                    "`{}` at `{stage}` needs `per`: the default, `triplet`, is counted only at `rcpt`",
                    key.name
                ),
                format!("add {choices}"),
            ),
        }
    }
    Some(per)
}

/// `chance = 0.25`: a probability from 0.0 to 1.0.
pub(crate) fn chance(cx: &mut Cx, v: &Node) -> Option<f64> {
    let p = match (v.as_float(), v.as_int()) {
        (Some(p), _) => p,
        (_, Some(n)) => n as f64,
        _ => {
            cx.issue(
                v.span(),
                format!(
                    "`chance` must be a number from 0.0 to 1.0, not {}",
                    v.kind()
                ),
                "write a probability without quotes, like chance = 0.25",
            );
            return None;
        }
    };
    if (0.0..=1.0).contains(&p) {
        return Some(p);
    }
    let hint = if (1.0..=100.0).contains(&p) {
        format!(
            "a chance is a fraction from 0.0 (never) to 1.0 (always): for {p}% write chance = {}",
            p / 100.0
        )
    } else {
        "write a probability from 0.0 (never) to 1.0 (always), like chance = 0.25".to_string()
    };
    cx.issue(
        v.span(),
        format!("`chance` is {p}, outside 0.0 to 1.0"),
        hint,
    );
    None
}

/// Checks that need several conditions together: a size range that no message fits.
pub(crate) fn check_together(cx: &mut Cx, table: &TomlTable, conditions: &[Condition]) {
    let above = conditions.iter().find_map(|c| match c {
        Condition::SizeAbove(n) => Some(*n),
        _ => None,
    });
    let below = conditions.iter().find_map(|c| match c {
        Condition::SizeBelow(n) => Some(*n),
        _ => None,
    });
    if let (Some(above), Some(below), Some(v)) = (above, below, table.get("size-below"))
        && below.saturating_sub(above) <= 1
    {
        cx.issue(
            v.span(),
            format!("no message is above {above} bytes and below {below} bytes, so this rule never matches"),
            "make `size-below` bigger than `size-above`, or keep only one of them",
        );
    }
}
