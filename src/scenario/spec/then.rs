//! The actions of a rule's `then`: what each does, the stages it may be used at, and how
//! its value is read (the tables of the stateful ones are in [`stateful`]). A rule has
//! exactly one action (`delay` alone means: accept after the wait).

use std::sync::LazyLock;

use super::{placeholders, stateful};
use crate::scenario::model::{ActionKind, Reply, Stage};
use crate::scenario::read::tree::{Node, Table as TomlTable};
use crate::scenario::read::{Cx, Key, values};

/// The keys other rows and the loader refer to.
pub(crate) const REPLY: &str = "reply";
pub(crate) const CLOSE: &str = "close";
pub(crate) const DELAY: &str = "delay";

/// What an action's reader is given besides its own value.
pub(crate) struct Then<'a, 'w> {
    pub table: &'w TomlTable<'a>,
    pub stage: Option<Stage>,
    /// The path of the `then` table (`host.0.rule.1.then`).
    pub path: &'w str,
}

type Read = fn(&mut Cx, Key, &Node, &Then) -> Option<ActionKind>;

/// What a key of `then` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// An action: a rule has exactly one.
    Action,
    /// Changes how another action is carried out, and is an action of its own when that
    /// one is absent: `close` after a `reply`, or alone.
    ActionOrModifierOf(&'static str),
    /// Changes how any action is carried out: `delay`.
    Modifier,
}

/// One key of `then`.
pub(crate) struct Row {
    pub key: &'static str,
    /// How the action is written, in the list of all actions: `reply = "..."`.
    pub form: &'static str,
    pub takes: &'static str,
    pub doc: &'static str,
    pub role: Role,
    /// Whether what it lets through passes on to the next rules (greylisting and
    /// limits), so that a rule after it at the same stage is not hidden by it.
    pub passes_on: bool,
    /// The stages it may be used at; empty: all.
    pub stages: &'static [Stage],
    /// Why not elsewhere, and what to write instead.
    pub stage_why: &'static str,
    pub stage_hint: &'static str,
    pub read: Read,
}

/// Every key of `then`, in the order the docs list them.
pub(crate) fn actions() -> &'static [Row] {
    static ROWS: LazyLock<Vec<Row>> = LazyLock::new(|| {
        vec![
            Row {
                key: "accept",
                form: "accept = true",
                takes: "true",
                doc: "the stage's usual positive reply",
                role: Role::Action,
                passes_on: false,
                stages: &[],
                stage_why: "",
                stage_hint: "",
                read: |cx, key, v, _| {
                    let instead =
                        "to refuse, write a reply like reply = \"550 5.7.1 Not accepted\"";
                    values::flag(cx, key, v, instead)?;
                    Some(ActionKind::Accept)
                },
            },
            Row {
                key: REPLY,
                form: "reply = \"...\"",
                takes: "a reply",
                doc: "send this reply: a code, an optional enhanced status and a text (\\n starts another line; a 421 closes)",
                role: Role::Action,
                passes_on: false,
                stages: &[],
                stage_why: "",
                stage_hint: "",
                read: |cx, key, v, then| {
                    let close = then
                        .table
                        .get(CLOSE)
                        .is_some_and(|c| c.as_bool() == Some(true));
                    let reply = reply_at_stage(cx, key, v, then.stage, close)?;
                    let close = close || reply.closes_connection();
                    Some(ActionKind::Reply { reply, close })
                },
            },
            Row {
                key: CLOSE,
                form: "close = true",
                takes: "true or false",
                doc: "close without a reply; with `reply`: close after it",
                role: Role::ActionOrModifierOf(REPLY),
                passes_on: false,
                stages: &[],
                stage_why: "",
                stage_hint: "",
                read: |cx, key, v, _| values::boolean(cx, key, v).map(|_| ActionKind::Close),
            },
            Row {
                key: "hang",
                form: "hang = \"...\"",
                takes: "a duration",
                doc: "send nothing; close after this long unless the client gives up first",
                role: Role::Action,
                passes_on: false,
                stages: &[],
                stage_why: "",
                stage_hint: "",
                read: |cx, key, v, _| {
                    let why = "to close without a reply, write close = true";
                    values::duration(cx, key, v, Some(why)).map(ActionKind::Hang)
                },
            },
            Row {
                key: "reset",
                form: "reset = true",
                takes: "true",
                doc: "close at once with a TCP reset, as a host whose service is down",
                role: Role::Action,
                passes_on: false,
                stages: &[],
                stage_why: "",
                stage_hint: "",
                read: |cx, key, v, _| {
                    let instead = "to close the connection without a reply, write close = true";
                    values::flag(cx, key, v, instead)?;
                    Some(ActionKind::Reset)
                },
            },
            Row {
                key: "lose-reply",
                form: "lose-reply = true",
                takes: "true",
                doc: "keep the message, then close without the 250: the sender sends it again",
                role: Role::Action,
                passes_on: false,
                stages: &[Stage::EndOfData],
                stage_why: "it loses the reply to a message",
                stage_hint: "use stage = \"end-of-data\": it keeps the message and closes before the 250, so the sender sends it again; to close without a reply at another stage, write close = true",
                read: |cx, key, v, _| {
                    let instead = "to accept the message as usual, write accept = true";
                    values::flag(cx, key, v, instead)?;
                    Some(ActionKind::LoseReply)
                },
            },
            Row {
                key: "greylist",
                form: "greylist = { ... }",
                takes: "a table",
                doc: "greylisting with postgrey's semantics; a triplet that waited long enough passes on to the next rules",
                role: Role::Action,
                passes_on: true,
                stages: &[Stage::Rcpt, Stage::Data, Stage::EndOfData],
                stage_why: "greylisting keys on the client, the sender and each recipient, all known only from `rcpt` on",
                stage_hint: "use stage = \"rcpt\" (as postgrey does), or \"data\" or \"end-of-data\" (to defer the whole message, as for the null sender)",
                read: |cx, key, v, then| {
                    let example = "greylist = {} for postgrey's defaults (a 5-minute delay), or change some of them, like greylist = { delay = \"30m\" }";
                    let table = action_table(cx, key, v, example)?;
                    stateful::read_greylist(cx, &table, &format!("{}.{}", then.path, key.name))
                        .map(|g| ActionKind::Greylist(g.into()))
                },
            },
            Row {
                key: "rate-limit",
                form: "rate-limit = { ... }",
                takes: "a table",
                doc: "at most `limit` per `window` for each client (or sender, recipient...); within it, on to the next rules",
                role: Role::Action,
                passes_on: true,
                stages: &[
                    Stage::Connect,
                    Stage::Mail,
                    Stage::Rcpt,
                    Stage::Data,
                    Stage::EndOfData,
                ],
                stage_why: "a rate limit counts connections (at `connect`), messages (at `mail`, `data` or `end-of-data`) or recipients (at `rcpt`)",
                stage_hint: "use stage = \"connect\" to limit connections, \"mail\" to limit messages, or \"rcpt\" to limit recipients",
                read: |cx, key, v, then| {
                    let example = "rate-limit = { limit = 100, window = \"1h\" } (at most 100 an hour from each client)";
                    let table = action_table(cx, key, v, example)?;
                    stateful::read_rate_limit(cx, &table, then)
                        .map(|r| ActionKind::RateLimit(r.into()))
                },
            },
            Row {
                key: "concurrency",
                form: "concurrency = { ... }",
                takes: "a table",
                doc: "at most `limit` connections at once from each client; one more is refused and closed",
                role: Role::Action,
                passes_on: true,
                stages: &[Stage::Connect],
                stage_why: "it counts connections as they open",
                stage_hint: "use stage = \"connect\"",
                read: |cx, key, v, then| {
                    let example = "concurrency = { limit = 10 } (at most 10 connections at once from each client)";
                    let table = action_table(cx, key, v, example)?;
                    stateful::read_concurrency(cx, &table, then)
                        .map(|c| ActionKind::Concurrency(c.into()))
                },
            },
            Row {
                key: "tls-fault",
                form: "tls-fault = \"...\"",
                takes: "a name, or { hang = \"...\" }",
                doc: "answer 220 to STARTTLS, then break the handshake: close-after-ready, alert, close-mid-handshake, garbage, or { hang = \"10m\" }",
                role: Role::Action,
                passes_on: false,
                stages: &[Stage::Starttls],
                stage_why: "it breaks the TLS handshake that follows STARTTLS",
                stage_hint: "use stage = \"starttls\"",
                read: |cx, key, v, then| {
                    stateful::read_tls_fault(cx, key, v, &format!("{}.{}", then.path, key.name))
                        .map(ActionKind::TlsFault)
                },
            },
            Row {
                key: "hide-starttls",
                form: "hide-starttls = true",
                takes: "true",
                doc: "accept the EHLO, but leave STARTTLS out of this EHLO reply",
                role: Role::Action,
                passes_on: false,
                stages: &[Stage::Ehlo],
                stage_why: "it leaves STARTTLS out of the EHLO reply",
                stage_hint: "use stage = \"ehlo\", with a `when` such as chance = 0.5 or connection = \"<=3\" to advertise STARTTLS on some connections only",
                read: |cx, key, v, _| {
                    let instead = "to advertise STARTTLS as usual, write accept = true";
                    values::flag(cx, key, v, instead)?;
                    Some(ActionKind::HideStarttls)
                },
            },
            Row {
                key: DELAY,
                form: "delay = \"...\"",
                takes: "a duration",
                doc: "wait this long (farm time, from when the command arrived) first: a tarpit; alone it means accept after the wait",
                // Read by `delay()` below, for whichever action it goes with.
                role: Role::Modifier,
                passes_on: false,
                stages: &[],
                stage_why: "",
                stage_hint: "",
                read: |_, _, _, _| None,
            },
        ]
    });
    &ROWS
}

/// The `delay` of a `then` table: `None` if not written, `Some(None)` if written wrong
/// (reported).
pub(crate) fn delay(cx: &mut Cx, table: &TomlTable) -> Option<Option<std::time::Duration>> {
    let key = Key {
        name: DELAY,
        example: "\"5m\"",
    };
    table
        .get(DELAY)
        .map(|v| values::duration(cx, key, &v, None))
}

/// The stateful actions, which pass on what they let through.
pub(crate) fn passing_on() -> impl Iterator<Item = &'static str> {
    actions()
        .iter()
        .filter(|row| row.passes_on)
        .map(|row| row.key)
}

/// "write exactly one action: accept = true, reply = \"...\", ... or hide-starttls = true".
pub(crate) fn one_action_hint() -> String {
    let forms: Vec<&str> = actions()
        .iter()
        .filter(|row| row.role != Role::Modifier)
        .map(|row| row.form)
        .collect();
    match forms.split_last() {
        Some((last, rest)) => format!("write exactly one action: {} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The hint for two actions that do not go together, when a more precise one than the
/// list of actions helps.
pub(crate) fn conflict_hint(present: &[&str]) -> String {
    let has = |name: &str| present.contains(&name);
    let table = passing_on().find(|name| has(name));
    match table {
        _ if has("tls-fault") && has("reply") => {
            "`tls-fault` breaks the handshake after the usual 220: remove reply; to refuse STARTTLS instead, keep only reply = \"454 4.7.0 TLS not available due to temporary reason\"".to_string()
        }
        _ if has("tls-fault") && has("close") => {
            "to close right after the 220, write tls-fault = \"close-after-ready\" alone".to_string()
        }
        _ if has("hide-starttls") && has("accept") => {
            "hide-starttls = true accepts the EHLO already: remove accept".to_string()
        }
        Some(table) if has("reply") => format!(
            "`{table}` has its own reply: write it inside, like {table} = {{ reply = \"...\" }}"
        ),
        Some("rate-limit") if has("close") => {
            "write close = true inside the limit: rate-limit = { ..., close = true }".to_string()
        }
        Some("greylist") if has("close") => {
            "greylisting lets the client go on after its deferral; to close after it, give it a 421 reply: greylist = { reply = \"421 4.7.0 ...\" }".to_string()
        }
        Some("concurrency") if has("close") => {
            "a concurrency refusal always closes the connection: remove close".to_string()
        }
        _ => format!(
            "{}; close = true may go with reply, to close after it",
            one_action_hint()
        ),
    }
}

/// The table of a stateful action, or the problem with what was written instead.
fn action_table<'a>(cx: &mut Cx, key: Key, v: &Node<'a>, example: &str) -> Option<TomlTable<'a>> {
    if let Some(table) = v.as_table() {
        return Some(table);
    }
    cx.issue(
        v.span(),
        format!("`{}` must be a table, not {}", key.name, v.kind()),
        format!("write {example}"),
    );
    None
}

// ---------------------------------------------------------------------------- replies

/// A reply as written: the code, status and text, and its placeholders; `greylist`:
/// the reply of a greylist, which alone may hold `{remaining}`.
pub(crate) fn reply_text(cx: &mut Cx, v: &Node, greylist: bool) -> Option<Reply> {
    let key = Key {
        name: "reply",
        example: "\"451 4.7.1 Try again later\"",
    };
    let text = values::string(cx, key, v)?;
    let reply = match Reply::parse(text) {
        Ok(reply) => reply,
        Err(why) => {
            cx.issue(
                v.span(),
                format!("invalid reply: {why}"),
                "write a code, an optional enhanced status code and a text, like reply = \"451 4.7.1 Try again later\"",
            );
            return None;
        }
    };
    placeholders::check(cx, v, text, greylist).then_some(reply)
}

/// The reply of a rule at `stage`: a refusal, or the stage's own positive code.
fn reply_at_stage(
    cx: &mut Cx,
    _key: Key,
    v: &Node,
    stage: Option<Stage>,
    close: bool,
) -> Option<Reply> {
    let reply = reply_text(cx, v, false)?;
    let code = reply.code;
    let Some(stage) = stage.filter(|_| code < 400) else {
        return Some(reply);
    };
    let own = stage.positive_codes();
    if own.is_empty() {
        cx.issue(
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
        cx.issue(
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
        cx.issue(
            v.span(),
            format!("`close = true` after a {code} reply: the client is told the command succeeded, then loses the connection"),
            hint,
        );
        return None;
    }
    Some(reply)
}

/// The reply of a rate or concurrency limit: a 4xx or 5xx.
pub(super) fn refusal(cx: &mut Cx, what: &str, v: &Node, default: &Reply) -> Option<Reply> {
    let reply = reply_text(cx, v, false)?;
    if reply.code >= 400 {
        return Some(reply);
    }
    cx.issue(
        v.span(),
        format!("the reply of {what} must be a 4xx or 5xx, not {}: it refuses what is over the limit", reply.code),
        format!(
            "write a 4xx to defer, like reply = \"{}\", or a 5xx to refuse for good; within the limit, the rules after this one decide",
            default.one_line()
        ),
    );
    None
}
