//! Table tests of `decide`, without any socket: a host's rules from scenario text, a
//! conversation, and the verdict for each point, written as one line of text.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use super::learnt::{DnsFacts, Looked};
use super::*;
use crate::scenario::Scenario;

/// The policy of host `mx1` (and the farm's state) of a one-host scenario with `rules`.
pub(super) fn policy(rules: &str) -> (HostPolicy, Arc<PolicyState>) {
    policy_of(&format!(
        "name = \"t\"\n[reverse-dns]\n\"192.0.2.1\" = \"mail.client.test\"\n\
         [[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\nhostname = \"mx1.farm.test\"\n\
         tls = \"valid\"\n{rules}"
    ))
}

pub(super) fn policy_of(text: &str) -> (HostPolicy, Arc<PolicyState>) {
    let scenario = Scenario::from_toml("t.toml", text).unwrap();
    let state = PolicyState::for_scenario(&scenario);
    (HostPolicy::new(&scenario.hosts[0], state.clone()), state)
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A verdict in one line: `accept`, `accept by host mx1 rule 1`, `refuse 451 4.7.1 x`,
/// `refuse+close 421 ...`, `close`, `reset`, `hang 10m`, `effect ...`, with the delay and
/// retry hint when there are.
pub(super) fn line<E: Debug>(verdict: Verdict<E>) -> String {
    let mut out = match verdict.act {
        Act::Accept(None) => "accept".to_string(),
        Act::Accept(Some(reply)) => format!("accept {}", reply.one_line()),
        Act::Refuse { reply, close } => format!(
            "refuse{} {}",
            if close { "+close" } else { "" },
            reply.one_line()
        ),
        Act::Close => "close".to_string(),
        Act::Reset => "reset".to_string(),
        Act::Hang(d) => format!("hang {}", crate::scenario::duration::show(d)),
        Act::Effect(e) => format!("effect {e:?}"),
    };
    if let Some(rule) = verdict.rule {
        out.push_str(&format!(" by {rule}"));
    }
    if let Some(d) = verdict.delay {
        out.push_str(&format!(" after {}", crate::scenario::duration::show(d)));
    }
    if let Some(d) = verdict.retry_after {
        out.push_str(&format!(" retry in {}", crate::scenario::duration::show(d)));
    }
    out
}

pub(super) const CLIENT: &str = "192.0.2.1";

/// Facts of a transaction from `sender` with these recipients accepted.
pub(super) fn in_tx<'a>(sender: &'a str, accepted: &'a [String]) -> Facts<'a> {
    Facts {
        helo: Some("mail.client.test"),
        sender: Some(sender),
        accepted,
        transactions: 1,
        ..Facts::default()
    }
}

#[test]
fn each_action_gives_its_verdict_at_its_stage() {
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full-*@y.test" }
then = { reply = "452 4.2.2 Mailbox full for <{recipient}> from {client}", delay = "2s" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "bye@y.test" }
then = { reply = "550 5.1.1 Gone", close = true }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "hang@y.test" }
then = { hang = "10m" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "reset@y.test" }
then = { reset = true }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "drop@y.test" }
then = { close = true }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "fine@y.test" }
then = { reply = "250 2.1.5 Fine by me" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "ok@y.test" }
then = { accept = true }
"#,
    );
    let mut conv = p.open(1, CLIENT.parse().unwrap());
    let facts = in_tx("a@x.test", &[]);
    let cases = [
        (
            "full-bob@y.test",
            "refuse 452 4.2.2 Mailbox full for <full-bob@y.test> from 192.0.2.1 by host mx1 rule 1 after 2s",
        ),
        (
            "bye@y.test",
            "refuse+close 550 5.1.1 Gone by host mx1 rule 2",
        ),
        ("hang@y.test", "hang 10m by host mx1 rule 3"),
        ("reset@y.test", "reset by host mx1 rule 4"),
        ("drop@y.test", "close by host mx1 rule 5"),
        (
            "fine@y.test",
            "accept 250 2.1.5 Fine by me by host mx1 rule 6",
        ),
        ("ok@y.test", "accept by host mx1 rule 7"),
        ("other@y.test", "accept"),
    ];
    for (recipient, expected) in cases {
        let verdict = p.decide(Rcpt { recipient }, &facts, &mut conv, secs(0));
        assert_eq!(line(verdict), expected, "{recipient}");
    }
}

#[test]
fn stage_effects_come_only_from_their_own_stage() {
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "ehlo"
then = { hide-starttls = true }
[[host.rule]]
stage = "starttls"
then = { tls-fault = "alert" }
[[host.rule]]
stage = "end-of-data"
then = { lose-reply = true }
"#,
    );
    let mut conv = p.open(1, CLIENT.parse().unwrap());
    let facts = Facts::default();
    let now = secs(0);
    assert_eq!(
        line(p.decide(Ehlo, &facts, &mut conv, now)),
        "effect HideStarttls by host mx1 rule 1"
    );
    assert_eq!(
        line(p.decide(Starttls, &facts, &mut conv, now)),
        "effect Alert by host mx1 rule 2"
    );
    let accepted = ["b@y.test".to_string()];
    let facts = in_tx("a@x.test", &accepted);
    assert_eq!(
        line(p.decide(EndOfData { size: 10 }, &facts, &mut conv, now)),
        "effect LoseReply by host mx1 rule 3"
    );
    assert_eq!(line(p.decide(Data, &facts, &mut conv, now)), "accept");
}

/// postgrey's timeline through `decide`: deferred with the time left as the retry hint,
/// deferred again on an early retry, passed on to the next rule once the delay is over.
#[test]
fn greylisting_defers_then_hands_on_to_the_next_rule() {
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "rcpt"
then = { greylist = { delay = "5m", reply = "451 4.7.1 Greylisted, come back in {remaining}s ({remaining-hms})" } }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@y.test" }
then = { reply = "452 4.2.2 Mailbox full" }
"#,
    );
    let steps = [
        (
            0,
            "bob@y.test",
            "refuse 451 4.7.1 Greylisted, come back in 300s (00:05:00) by host mx1 rule 1 retry in 5m",
        ),
        (
            120,
            "bob@y.test",
            "refuse 451 4.7.1 Greylisted, come back in 180s (00:03:00) by host mx1 rule 1 retry in 3m",
        ),
        (300, "bob@y.test", "accept"),
        (
            0,
            "full@y.test",
            "refuse 451 4.7.1 Greylisted, come back in 300s (00:05:00) by host mx1 rule 1 retry in 5m",
        ),
        (
            600,
            "full@y.test",
            "refuse 452 4.2.2 Mailbox full by host mx1 rule 2",
        ),
    ];
    for (at, recipient, expected) in steps {
        let mut conv = p.open(1, CLIENT.parse().unwrap());
        let facts = in_tx("a@x.test", &[]);
        let verdict = p.decide(Rcpt { recipient }, &facts, &mut conv, secs(at));
        assert_eq!(line(verdict), expected, "{recipient} at {at}s");
    }
}

/// A retry hint is "told" only when the reply's text says the time: postgrey's reply
/// does not, so no sender can be blamed for retrying before its end.
#[test]
fn a_greylist_reply_tells_the_time_only_when_its_text_says_it() {
    for (reply, told) in [
        ("", false),
        (", reply = \"451 4.7.1 come back in {remaining}s\"", true),
        (", reply = \"451 4.7.1 come back at {remaining-hms}\"", true),
    ] {
        let (p, _) = policy(&format!(
            "[[host.rule]]\nstage = \"rcpt\"\nthen = {{ greylist = {{ delay = \"5m\"{reply} }} }}\n"
        ));
        let mut conv = p.open(1, CLIENT.parse().unwrap());
        let verdict = p.decide(
            Rcpt {
                recipient: "b@y.test",
            },
            &in_tx("a@x.test", &[]),
            &mut conv,
            secs(0),
        );
        assert_eq!(verdict.retry_after, Some(secs(300)));
        assert_eq!(verdict.retry_after_told, told, "{reply}");
    }
}

/// At `data`, greylisting checks every accepted recipient and defers for the longest
/// wait among them.
#[test]
fn greylisting_at_data_waits_for_the_slowest_recipient() {
    let (p, _) =
        policy("[[host.rule]]\nstage = \"data\"\nthen = { greylist = { delay = \"10m\" } }\n");
    let a = ["a@y.test".to_string()];
    let mut conv = p.open(1, CLIENT.parse().unwrap());
    p.decide(Data, &in_tx("s@x.test", &a), &mut conv, secs(0));
    let both = ["a@y.test".to_string(), "b@y.test".to_string()];
    let verdict = p.decide(Data, &in_tx("s@x.test", &both), &mut conv, secs(300));
    assert_eq!(
        verdict.retry_after,
        Some(secs(600)),
        "b@ is new: all of 10m"
    );
    assert!(line(verdict).contains("<a@y.test>: Recipient address rejected: Greylisted"));
}

#[test]
fn a_rate_limit_counts_per_key_and_refuses_what_is_over() {
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "mail"
then = { rate-limit = { per = "sender", limit = 2, window = "1h", reply = "451 4.7.1 Slow down, {sender}" } }
"#,
    );
    let mut conv = p.open(1, CLIENT.parse().unwrap());
    let facts = Facts {
        helo: Some("c.test"),
        ..Facts::default()
    };
    let mail = |sender| Mail { sender, size: None };
    let mut got = Vec::new();
    for (at, sender) in [
        (0, "a@x.test"),
        (1, "a@x.test"),
        (2, "a@x.test"),
        (3, "b@x.test"),
    ] {
        got.push(line(p.decide(mail(sender), &facts, &mut conv, secs(at))));
    }
    got.push(line(p.decide(
        mail("a@x.test"),
        &facts,
        &mut conv,
        secs(3601),
    )));
    assert_eq!(
        got,
        [
            "accept",
            "accept",
            "refuse 451 4.7.1 Slow down, a@x.test by host mx1 rule 1",
            "accept",
            "accept",
        ]
    );
}

/// A concurrency slot is held by the conversation until it is released.
#[test]
fn concurrency_slots_are_held_by_the_conversation() {
    let (p, _) =
        policy("[[host.rule]]\nstage = \"connect\"\nthen = { concurrency = { limit = 1 } }\n");
    let client = CLIENT.parse().unwrap();
    let facts = Facts::default();
    let mut first = p.open(1, client);
    assert_eq!(
        line(p.decide(Connect, &facts, &mut first, secs(0))),
        "accept"
    );
    let mut second = p.open(2, client);
    assert_eq!(
        line(p.decide(Connect, &facts, &mut second, secs(0))),
        "refuse+close 421 4.7.0 mx1.farm.test Error: too many connections from 192.0.2.1 by host mx1 rule 1"
    );
    let RuleStore::Concurrency(store) = &p.stores[0] else {
        panic!("{:?}", p.stores[0])
    };
    assert_eq!(store.open("192.0.2.1"), 1);
    first.release();
    let mut third = p.open(3, client);
    assert_eq!(
        line(p.decide(Connect, &facts, &mut third, secs(0))),
        "accept"
    );
}

/// Attempts are counted farm-wide as the commands are decided: connections at connect,
/// senders at mail, recipients and triplets at rcpt; a quota that clears after a time
/// says when.
#[test]
fn attempts_are_counted_at_their_stage_and_a_quota_says_when_it_clears() {
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "connect"
when = { attempt = "1", per = "client" }
then = { reply = "421 4.7.0 First connection refused" }
[[host.rule]]
stage = "mail"
when = { attempt = "<3", per = "sender" }
then = { reply = "451 4.7.1 Sender attempt {sender}" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@y.test", first-attempt-within = "2h", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
"#,
    );
    let client = CLIENT.parse().unwrap();
    let facts = Facts::default();
    let connect = |conn, at| {
        let mut conv = p.open(conn, client);
        line(p.decide(Connect, &facts, &mut conv, secs(at)))
    };
    assert_eq!(
        connect(1, 0),
        "refuse+close 421 4.7.0 First connection refused by host mx1 rule 1"
    );
    assert_eq!(connect(2, 0), "accept");
    let mut conv = p.open(3, client);
    let facts = Facts {
        helo: Some("c.test"),
        ..Facts::default()
    };
    let sender = |conv: &mut Conversation| {
        let mail = Mail {
            sender: "a@x.test",
            size: None,
        };
        line(p.decide(mail, &facts, conv, secs(0)))
    };
    assert!(sender(&mut conv).starts_with("refuse 451"));
    assert!(sender(&mut conv).starts_with("refuse 451"));
    assert_eq!(sender(&mut conv), "accept");
    let rcpt = |at| {
        let mut conv = p.open(9, client);
        let recipient = "full@y.test";
        line(p.decide(
            Rcpt { recipient },
            &in_tx("a@x.test", &[]),
            &mut conv,
            secs(at),
        ))
    };
    assert_eq!(
        rcpt(0),
        "refuse 452 4.2.2 Mailbox full by host mx1 rule 3 retry in 2h"
    );
    assert_eq!(
        rcpt(1800),
        "refuse 452 4.2.2 Mailbox full by host mx1 rule 3 retry in 1h30m"
    );
    assert_eq!(rcpt(7200), "accept");
}

/// Conditions on what the conversation knows: the client's PTR names (as looked up),
/// the EHLO name, TLS, the message number, the host's connection number.
#[test]
fn conditions_read_the_facts_and_the_conversation() {
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "ehlo"
when = { ptr = "mismatch" }
then = { reply = "550 5.7.1 PTR does not match" }
[[host.rule]]
stage = "mail"
when = { tls = false }
then = { reply = "530 5.7.0 Must issue a STARTTLS command first" }
[[host.rule]]
stage = "mail"
when = { message = ">=2" }
then = { close = true }
[[host.rule]]
stage = "rset"
when = { connection = "2" }
then = { reset = true }
"#,
    );
    let known = CLIENT.parse().unwrap();
    // What the session's PTR lookup found: a name for the known client, none otherwise.
    let found = DnsFacts {
        ptr: Some(Looked::Found(vec!["mail.client.test".to_string()])),
        ..DnsFacts::default()
    };
    let none = DnsFacts {
        ptr: Some(Looked::Missing),
        ..DnsFacts::default()
    };
    let ehlo = |dns: &DnsFacts, helo| {
        let mut conv = p.open(1, known);
        let facts = Facts {
            helo: Some(helo),
            dns,
            ..Facts::default()
        };
        line(p.decide(Ehlo, &facts, &mut conv, secs(0)))
    };
    assert_eq!(ehlo(&found, "MAIL.client.test."), "accept");
    assert!(ehlo(&found, "other.test").starts_with("refuse 550"));
    assert!(ehlo(&none, "mail.client.test").starts_with("refuse 550"));

    let mut conv = p.open(1, known);
    let mail = |tls, transactions, conv: &mut Conversation| {
        let facts = Facts {
            helo: Some("mail.client.test"),
            tls,
            transactions,
            ..Facts::default()
        };
        let point = Mail {
            sender: "a@x.test",
            size: None,
        };
        line(p.decide(point, &facts, conv, secs(0)))
    };
    assert!(mail(false, 0, &mut conv).starts_with("refuse 530"));
    assert_eq!(mail(true, 0, &mut conv), "accept");
    assert_eq!(mail(true, 1, &mut conv), "close by host mx1 rule 3");

    // Each `open` was one more connection to the host: `conv` was its fourth.
    let facts = Facts::default();
    assert_eq!(line(p.decide(Rset, &facts, &mut conv, secs(0))), "accept");
    let (fresh, _) = policy(
        "[[host.rule]]\nstage = \"rset\"\nwhen = { connection = \"2\" }\nthen = { reset = true }\n",
    );
    let rset = |conn| {
        let mut conv = fresh.open(conn, known);
        line(fresh.decide(Rset, &facts, &mut conv, secs(0)))
    };
    assert_eq!(
        [rset(10), rset(11), rset(12)],
        ["accept", "reset by host mx1 rule 1", "accept"]
    );
}

/// `chance` draws from the connection's generator, seeded from the scenario's seed and
/// the connection number: the same draws each run, about as often as asked.
#[test]
fn chance_is_seeded_per_connection_and_roughly_fair() {
    let (p, _) = policy_of(
        "name = \"t\"\nseed = 7\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n\
         [[host.rule]]\nstage = \"quit\"\nwhen = { chance = 0.3 }\nthen = { close = true }\n",
    );
    let run = || {
        (1..=10_000)
            .filter(|&conn| {
                let mut conv = p.open(conn, CLIENT.parse().unwrap());
                let verdict = p.decide(Quit, &Facts::default(), &mut conv, secs(0));
                verdict.act == Act::Close
            })
            .count()
    };
    let hits = run();
    assert_eq!(hits, run());
    assert!((2700..3300).contains(&hits), "{hits}");
}

/// The loader allows each stage's own action exactly at the stage whose point carries
/// it as its effect, so that a loaded rule never meets `decide`'s fallback.
#[test]
fn the_spec_and_the_points_agree_on_where_stage_effects_go() {
    use crate::scenario::spec_stages_of;
    let cases: [(&str, Stage, ActionKind); 3] = [
        ("hide-starttls", Stage::Ehlo, ActionKind::HideStarttls),
        (
            "tls-fault",
            Stage::Starttls,
            ActionKind::TlsFault(crate::scenario::TlsFault::Alert),
        ),
        ("lose-reply", Stage::EndOfData, ActionKind::LoseReply),
    ];
    for (key, stage, kind) in cases {
        assert_eq!(spec_stages_of(key), vec![stage], "{key}");
        let carried = match stage {
            Stage::Ehlo => Ehlo::effect(&kind).is_some(),
            Stage::Starttls => Starttls::effect(&kind).is_some(),
            _ => EndOfData::effect(&kind).is_some(),
        };
        assert!(carried, "{key}");
        assert!(Data::effect(&kind).is_none() && Rcpt::effect(&kind).is_none());
    }
}
