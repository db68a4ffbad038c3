//! The tables of the stateful actions: `greylist`, `rate-limit`, `concurrency`, and
//! `tls-fault` written as a table, with the checks that need several of their keys.

use std::sync::LazyLock;

use super::then::{Then, refusal, reply_text};
use super::{Field, Table, TableId};
use crate::scenario::model::{
    Concurrency, Greylist, RateKey, RateLimit, Reply, Stage, StateScope, TlsFault,
};
use crate::scenario::read::tree::{Node, Table as TomlTable};
use crate::scenario::read::{Cx, Key, values};

// ---------------------------------------------------------------------------- greylisting

const SCOPES: [(&str, StateScope); 2] =
    [("shared", StateScope::Shared), ("host", StateScope::Host)];
const SCOPE_ALIASES: &[(&str, &str)] = &[
    ("global", "shared"),
    ("farm", "shared"),
    ("per-host", "host"),
    ("local", "host"),
];
const SCOPE_EXPLAINED: &str = "`state` is shared (one state for all hosts, as when every MX asks the same database) or host (each host keeps its own)";

pub(crate) fn greylist() -> &'static Table<Greylist> {
    static TABLE: LazyLock<Table<Greylist>> = LazyLock::new(|| {
        let whitelist = |cx: &mut Cx, key: Key, v: &Node| {
            let n = values::integer(cx, key, v, (0, i64::from(u32::MAX)), None)?;
            Some((n > 0).then_some(n as u32))
        };
        let show_whitelist = |n: &Option<u32>| n.unwrap_or(0).to_string();
        let reply = |cx: &mut Cx, _: Key, v: &Node| {
            let reply = reply_text(cx, v, true)?;
            if reply.code / 100 == 4 {
                return Some(reply);
            }
            cx.issue(
                v.span(),
                format!("a greylist reply must be a 4xx, not {}: greylisting only defers, the retry is meant to pass", reply.code),
                "write a 450 or 451, like reply = \"451 4.7.1 Greylisting in action, please come back in {remaining-hms}\"",
            );
            None
        };
        Table::new(
            TableId::Greylist,
            "Greylisting with postgrey's semantics; every default is postgrey 1.37's.",
            vec![
                Field::duration("delay", "\"5m\"", Some("every client would pass at once"), |g: &mut Greylist| &mut g.delay)
                    .doc("how long a new (client network, sender, recipient) must wait before a retry passes"),
                Field::duration("retry-window", "\"2d\"", Some("no retry could ever pass"), |g: &mut Greylist| &mut g.retry_window)
                    .doc("a first retry later than this after the first attempt starts over"),
                Field::duration("expiry", "\"35d\"", Some("every triplet would be forgotten at once"), |g: &mut Greylist| &mut g.expiry)
                    .doc("entries not seen for this long are forgotten"),
                Field::new("whitelist-after", "5 (or 0 to switch it off)", "a whole number", whitelist, show_whitelist, |g: &mut Greylist| &mut g.whitelist_after)
                    .doc("a client IP that passed this many times (at most one an hour counts) skips greylisting; 0: never"),
                Field::choice("state", "\"shared\"", &SCOPES, SCOPE_ALIASES, SCOPE_EXPLAINED, |g: &mut Greylist| &mut g.scope)
                    .doc("shared by all hosts (one database), or host (each MX its own)"),
                Field::integer("ipv4-prefix", "24", (1, 32), Some("every IPv4 client would be one; 32 is the exact address"), |g: &mut Greylist| &mut g.ipv4_prefix)
                    .doc("the client network of a triplet, for IPv4"),
                Field::integer("ipv6-prefix", "64", (1, 128), Some("every IPv6 client would be one; 128 is the exact address"), |g: &mut Greylist| &mut g.ipv6_prefix)
                    .doc("the same for IPv6"),
                Field::flag("normalize-sender", |g: &mut Greylist| &mut g.normalize_sender)
                    .doc("strip +extensions, BATV tags and digit runs from the sender, as postgrey does"),
                Field::count("max-entries", "1000000", "a greylist that keeps no triplet could never let a retry through", |g: &mut Greylist| &mut g.max_entries)
                    .doc("triplets kept at most (and as many whitelisted clients); when full, the one seen longest ago is forgotten and is greylisted again at its next attempt"),
                Field::new("reply", "\"451 4.7.1 Try again later\"", "a 4xx reply", reply, |r: &Reply| format!("{:?}", r.one_line()), |g: &mut Greylist| &mut g.reply)
                    .doc("the deferral; {remaining} and {remaining-hms} say how long is left"),
            ],
        )
    });
    &TABLE
}

pub(super) fn read_greylist(cx: &mut Cx, table: &TomlTable, path: &str) -> Option<Greylist> {
    let (g, ok) = greylist().read(cx, table, path);
    // The times are checked together when each was read well (or left to its default),
    // whatever else in the table has a problem.
    let read_well = |key: &str| {
        table.get(key).is_none_or(|v| {
            v.as_str()
                .is_some_and(|s| crate::scenario::duration::parse(s).is_ok_and(|d| !d.is_zero()))
        })
    };
    let at = |key: &str| table.get(key).map(|v| v.span());
    let mut fits = ok;
    if read_well("delay") && read_well("retry-window") && g.delay >= g.retry_window {
        fits = false;
        let span = at("retry-window").or(at("delay")).unwrap_or(table.span());
        cx.issue(
            span,
            format!(
                "`delay` ({}) is not shorter than `retry-window` ({}): no retry could pass",
                show(g.delay),
                show(g.retry_window)
            ),
            "a retry passes once `delay` has gone by, if it comes within `retry-window` of the first attempt; make retry-window longer than delay (postgrey: delay = \"5m\", retry-window = \"2d\")",
        );
    }
    if read_well("delay") && read_well("expiry") && g.delay > g.expiry {
        fits = false;
        let span = at("expiry").or(at("delay")).unwrap_or(table.span());
        cx.issue(
            span,
            format!(
                "`delay` ({}) is longer than `expiry` ({}): a triplet would be forgotten before it could pass",
                show(g.delay),
                show(g.expiry)
            ),
            "make expiry at least as long as delay (postgrey: delay = \"5m\", expiry = \"35d\")",
        );
    }
    fits.then_some(g)
}

fn show(d: std::time::Duration) -> String {
    crate::scenario::duration::show(d)
}

// ---------------------------------------------------------------------------- limits

const RATE_KEYS: [(&str, RateKey); 4] = [
    ("client", RateKey::Client),
    ("client-net", RateKey::ClientNet),
    ("sender", RateKey::Sender),
    ("recipient", RateKey::Recipient),
];
const RATE_KEY_ALIASES: &[(&str, &str)] = &[
    ("ip", "client"),
    ("net", "client-net"),
    ("subnet", "client-net"),
    ("network", "client-net"),
    ("client-network", "client-net"),
    ("rcpt", "recipient"),
    ("mail", "sender"),
];
const WINDOW_KINDS: [(&str, bool); 2] = [("sliding", true), ("fixed", false)];
const WINDOW_KIND_ALIASES: &[(&str, &str)] = &[
    ("rolling", "sliding"),
    ("moving", "sliding"),
    ("tumbling", "fixed"),
];

pub(crate) fn rate_limit() -> &'static Table<RateLimit> {
    static TABLE: LazyLock<Table<RateLimit>> = LazyLock::new(|| {
        let reply = |cx: &mut Cx, _: Key, v: &Node| {
            refusal(cx, "a rate limit", v, &RateLimit::default().reply)
        };
        Table::new(
            TableId::RateLimit,
            "At most `limit` events per `window` for each key; within the limit, the rules after it decide.",
            vec![
                Field::custom("per", "\"client\"", "a name")
                    .doc("what is counted by: client (default), client-net (/24 or /64), sender, recipient"),
                Field::count("limit", "10", "nothing would ever pass; to refuse every time, write a reply instead", |r: &mut RateLimit| &mut r.limit)
                    .doc("how many are allowed per window")
                    .required(
                        "this `rate-limit` has no `limit`",
                        "add how many are allowed, like rate-limit = { limit = 100, window = \"1h\" }",
                    ),
                Field::duration("window", "\"1h\"", Some("a rate is counted over a length of time"), |r: &mut RateLimit| &mut r.window)
                    .doc("the length of time counted over")
                    .required(
                        "this `rate-limit` has no `window`",
                        "add the time the limit counts over, like rate-limit = { limit = 100, window = \"1h\" }",
                    ),
                Field::choice("kind", "\"sliding\"", &WINDOW_KINDS, WINDOW_KIND_ALIASES, "`kind` is sliding (the last `window` before each event) or fixed (windows one after another from the start of the run)", |r: &mut RateLimit| &mut r.sliding)
                    .doc("sliding (the last window before each event) or fixed (windows from the start of the run)"),
                Field::choice("state", "\"shared\"", &SCOPES, SCOPE_ALIASES, SCOPE_EXPLAINED, |r: &mut RateLimit| &mut r.scope)
                    .doc("counted for all hosts together (shared) or for each host apart (host)"),
                Field::new("reply", "\"451 4.7.1 Try again later\"", "a 4xx or 5xx reply", reply, |r: &Reply| format!("{:?}", r.one_line()), |r: &mut RateLimit| &mut r.reply)
                    .doc("the refusal of what is over the limit"),
                Field::flag("close", |r: &mut RateLimit| &mut r.close)
                    .doc("close after the refusal (a 421 always closes)"),
                Field::count("max-entries", "1000000", "a limit that remembers nothing could not count", |r: &mut RateLimit| &mut r.max_entries)
                    .doc("what the limit remembers at most: event times in a sliding window, keys in fixed ones; when full, the key used longest ago is forgotten and counts from zero again"),
            ],
        )
    });
    &TABLE
}

pub(super) fn read_rate_limit(cx: &mut Cx, table: &TomlTable, then: &Then) -> Option<RateLimit> {
    let (mut limit, ok) = rate_limit().read(cx, table, &format!("{}.rate-limit", then.path));
    let per = match table.get("per") {
        None => Some(RateKey::Client),
        Some(v) => rate_key(cx, &v, then.stage, false),
    };
    limit.per = per?;
    // A sliding window remembers the time of each event in it, up to `limit` for a key:
    // a key must fit, or the limit could not be kept.
    if ok && limit.sliding && usize::try_from(limit.limit).is_ok_and(|n| n > limit.max_entries) {
        let span = table
            .get("max-entries")
            .or(table.get("limit"))
            .map_or(table.span(), |v| v.span());
        cx.issue(
            span,
            format!(
                "`limit` ({}) is more than `max-entries` ({}): a sliding window remembers the time of each event in it, so one key would not fit",
                limit.limit, limit.max_entries
            ),
            "raise max-entries to at least the limit, or count in fixed windows with kind = \"fixed\" (one entry per key)",
        );
        return None;
    }
    ok.then_some(limit)
}

pub(crate) fn concurrency() -> &'static Table<Concurrency> {
    static TABLE: LazyLock<Table<Concurrency>> = LazyLock::new(|| {
        let reply = |cx: &mut Cx, _: Key, v: &Node| {
            refusal(cx, "a concurrency limit", v, &Concurrency::default().reply)
        };
        Table::new(
            TableId::Concurrency,
            "At most `limit` connections at once per client, counted per host.",
            vec![
                Field::custom("per", "\"client\"", "a name")
                    .doc("client (each address, default) or client-net (each /24 or /64)"),
                Field::count(
                    "limit",
                    "10",
                    "nothing would ever pass; to refuse every time, write a reply instead",
                    |c: &mut Concurrency| &mut c.limit,
                )
                .doc("connections allowed at once")
                .required(
                    "this `concurrency` has no `limit`",
                    "add how many are allowed, like concurrency = { limit = 10 }",
                ),
                Field::new(
                    "reply",
                    "\"421 4.7.0 Too many connections\"",
                    "a 4xx or 5xx reply",
                    reply,
                    |r: &Reply| format!("{:?}", r.one_line()),
                    |c: &mut Concurrency| &mut c.reply,
                )
                .doc("the refusal; the connection is closed after it"),
            ],
        )
    });
    &TABLE
}

pub(super) fn read_concurrency(cx: &mut Cx, table: &TomlTable, then: &Then) -> Option<Concurrency> {
    let (mut limit, ok) = concurrency().read(cx, table, &format!("{}.concurrency", then.path));
    let per = match table.get("per") {
        None => Some(RateKey::Client),
        Some(v) => rate_key(cx, &v, then.stage, true),
    };
    limit.per = per?;
    ok.then_some(limit)
}

/// `per` of a rate or concurrency limit; `connections`: a concurrency limit, which
/// counts only by client.
fn rate_key(cx: &mut Cx, v: &Node, stage: Option<Stage>, connections: bool) -> Option<RateKey> {
    let explained = if connections {
        "`per` is client (each IP address) or client-net (each /24 or /64 network)"
    } else {
        "`per` is one of client (each IP address), client-net (each /24 or /64 network), sender, recipient"
    };
    let key = values::choice(cx, "per", v, &RATE_KEYS, RATE_KEY_ALIASES, explained)?;
    let Some(name) = v.as_str() else {
        return Some(key);
    };
    let name = name.trim();
    if connections && matches!(key, RateKey::Sender | RateKey::Recipient) {
        cx.issue(
            v.span(),
            format!("`per = \"{name}\"` cannot be used in `concurrency`: it counts connections, which have no {name}"),
            "write per = \"client\" (each IP address) or per = \"client-net\" (each /24 or /64 network)",
        );
        return None;
    }
    let Some(stage) = stage else {
        return Some(key);
    };
    if key == RateKey::Sender && stage.rank() < Stage::Mail.rank() {
        cx.issue(
            v.span(),
            format!("`per = \"{name}\"` cannot be counted at `{stage}`: there is no sender before MAIL FROM"),
            "write per = \"client\" or per = \"client-net\", or use stage = \"mail\" (messages) or \"rcpt\" (recipients)",
        );
        return None;
    }
    if key == RateKey::Recipient && stage != Stage::Rcpt {
        cx.issue(
            v.span(),
            format!("`per = \"{name}\"` cannot be counted at `{stage}`: it counts RCPT commands, so it exists only at `rcpt`"),
            "use stage = \"rcpt\", or count per = \"client\", \"client-net\" or \"sender\"",
        );
        return None;
    }
    Some(key)
}

// ---------------------------------------------------------------------------- TLS faults

const TLS_FAULTS: [(&str, TlsFault); 4] = [
    ("close-after-ready", TlsFault::CloseAfterReady),
    ("alert", TlsFault::Alert),
    ("close-mid-handshake", TlsFault::CloseMidHandshake),
    ("garbage", TlsFault::Garbage),
];
const TLS_FAULT_ALIASES: &[(&str, &str)] = &[
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
];
const TLS_FAULTS_EXPLAINED: &str = "a TLS fault is close-after-ready (close right after the 220), alert (answer the ClientHello with a handshake_failure alert), close-mid-handshake (close after the ClientHello), garbage (answer with bytes that are not TLS), or { hang = \"10m\" } (send nothing after the ClientHello, close after that long)";
const HANG_HINT: &str = "write tls-fault = { hang = \"10m\" }: it reads the ClientHello, sends nothing, and closes after that long";

/// What `tls-fault = { hang = "..." }` holds while it is read.
#[derive(Debug, Default)]
pub(crate) struct TlsFaultTable {
    hang: std::time::Duration,
}

pub(crate) fn tls_fault() -> &'static Table<TlsFaultTable> {
    static TABLE: LazyLock<Table<TlsFaultTable>> = LazyLock::new(|| {
        Table::new(
            TableId::TlsFault,
            "A TLS fault written as a table: a hang after the ClientHello.",
            vec![
                Field::duration("hang", "\"10m\"", Some("to close after the ClientHello, write tls-fault = \"close-mid-handshake\""), |t: &mut TlsFaultTable| &mut t.hang)
                    .doc("send nothing after the ClientHello; close after this long")
                    .required(
                        "this `tls-fault` table has no `hang`",
                        "write tls-fault = { hang = \"10m\" }: it reads the ClientHello, sends nothing, and closes after that long; the other faults are written as a name, like tls-fault = \"alert\"",
                    ),
            ],
        )
    });
    &TABLE
}

/// `tls-fault`: a fault's name, or `{ hang = "10m" }`.
pub(super) fn read_tls_fault(cx: &mut Cx, key: Key, v: &Node, path: &str) -> Option<TlsFault> {
    if let Some(table) = v.as_table() {
        let (fault, ok) = tls_fault().read(cx, &table, path);
        return ok.then_some(TlsFault::Hang(fault.hang));
    }
    if let Some(s) = v.as_str()
        && matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "hang" | "stall" | "timeout" | "silence"
        )
    {
        cx.issue(
            v.span(),
            format!("`tls-fault = \"{}\"` needs to say for how long", s.trim()),
            HANG_HINT,
        );
        return None;
    }
    values::choice(
        cx,
        key.name,
        v,
        &TLS_FAULTS,
        TLS_FAULT_ALIASES,
        TLS_FAULTS_EXPLAINED,
    )
}
