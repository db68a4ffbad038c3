//! Table tests of `decide`, without any socket: a host's rules from scenario text, a
//! conversation, and the verdict for each point, written as one line of text.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::scenario::Scenario;

/// The policy of host `mx1` (and the farm's state) of a one-host scenario with `rules`.
fn policy(rules: &str) -> (HostPolicy, Arc<PolicyState>) {
    policy_of(&format!(
        "name = \"t\"\n[reverse-dns]\n\"192.0.2.1\" = \"mail.client.test\"\n\
         [[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\nhostname = \"mx1.farm.test\"\n\
         tls = \"valid\"\n{rules}"
    ))
}

fn policy_of(text: &str) -> (HostPolicy, Arc<PolicyState>) {
    let scenario = Scenario::from_toml("t.toml", text).unwrap();
    let state = PolicyState::for_scenario(&scenario);
    (HostPolicy::new(&scenario.hosts[0], state.clone()), state)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A verdict in one line: `accept`, `accept by host mx1 rule 1`, `refuse 451 4.7.1 x`,
/// `refuse+close 421 ...`, `close`, `reset`, `hang 10m`, `effect ...`, with the delay and
/// retry hint when there are.
fn line<E: Debug>(verdict: Verdict<E>) -> String {
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

const CLIENT: &str = "192.0.2.1";

/// Facts of a transaction from `sender` with these recipients accepted.
fn in_tx<'a>(sender: &'a str, accepted: &'a [String]) -> Facts<'a> {
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

/// Conditions on what the conversation knows: the PTR name from the scenario's table,
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
    let unknown = "198.51.100.7".parse().unwrap();
    let ehlo = |client, helo| {
        let mut conv = p.open(1, client);
        let facts = Facts {
            helo: Some(helo),
            ..Facts::default()
        };
        line(p.decide(Ehlo, &facts, &mut conv, secs(0)))
    };
    assert_eq!(ehlo(known, "MAIL.client.test."), "accept");
    assert!(ehlo(known, "other.test").starts_with("refuse 550"));
    assert!(ehlo(unknown, "mail.client.test").starts_with("refuse 550"));

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

// ------------------------------------------------------------------ bounded policy state

/// The greylist store of rule `i` of `p`.
fn greylist_store(p: &HostPolicy, i: usize) -> &GreylistStore {
    match &p.stores[i] {
        RuleStore::Greylist(store) => store,
        other => panic!("rule {i} keeps {other:?}"),
    }
}

fn rate_store(p: &HostPolicy, i: usize) -> &RateStore {
    match &p.stores[i] {
        RuleStore::Rate(store) => store,
        other => panic!("rule {i} keeps {other:?}"),
    }
}

/// Offers `recipient` from `a@x.test` by `client` on a fresh connection.
fn offer(p: &HostPolicy, client: &str, recipient: &str, now: Duration) -> String {
    let mut conv = p.open(1, client.parse().unwrap());
    let facts = in_tx("a@x.test", &[]);
    line(p.decide(Rcpt { recipient }, &facts, &mut conv, now))
}

/// A flood of distinct triplets keeps the store at `max-entries`: the triplets seen
/// longest ago are forgotten first, and a sender whose triplet was forgotten is
/// greylisted again, as a new triplet, when it retries.
#[test]
fn a_flood_of_triplets_keeps_the_greylist_within_max_entries_forgetting_the_oldest() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { greylist = { max-entries = 100, reply = \"451 4.7.1 wait {remaining}s\" } }\n",
    );
    let deferred = "refuse 451 4.7.1 wait 300s by host mx1 rule 1 retry in 5m";
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(0)), deferred);
    for i in 0..1_000 {
        offer(&p, CLIENT, &format!("flood{i}@y.test"), secs(1));
        assert!(greylist_store(&p, 0).len() <= 100, "after {i} more");
    }
    assert_eq!(greylist_store(&p, 0).len(), 100);
    // After the delay, the first triplet has been forgotten: it starts over.
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(400)), deferred);
    // The most recent ones are still known, and pass.
    assert_eq!(offer(&p, CLIENT, "flood999@y.test", secs(400)), "accept");
    assert_eq!(greylist_store(&p, 0).len(), 100);
}

/// The whitelist of clients that passed is bounded the same way.
#[test]
fn a_flood_of_passing_clients_keeps_the_whitelist_within_max_entries() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { greylist = { max-entries = 50, ipv4-prefix = 32 } }\n",
    );
    for i in 0..200u32 {
        let client = format!("198.51.{}.{}", i / 256, i % 256);
        offer(&p, &client, "r@y.test", secs(0));
        assert_eq!(offer(&p, &client, "r@y.test", secs(300)), "accept");
    }
    assert_eq!(greylist_store(&p, 0).clients(), 50);
    assert_eq!(greylist_store(&p, 0).len(), 50);
}

/// Time passing (on the farm's clock) forgets expired triplets in time order, a few per
/// decision, without a sweep of the whole store: the count drops by a bounded step per
/// RCPT until only live triplets are left.
#[test]
fn expired_triplets_leave_a_few_per_decision_as_farm_time_passes() {
    use crate::clock::Clock;
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\nthen = { greylist = { delay = \"5m\", expiry = \"1d\" } }\n",
    );
    let clock = Clock::new();
    let hours = |n: u64| secs(n * 3600);
    // 200 triplets that pass; 12 hours later, 100 that never come back.
    for i in 0..200 {
        let rcpt = format!("passed{i}@y.test");
        offer(&p, CLIENT, &rcpt, clock.now());
        offer(&p, CLIENT, &rcpt, clock.now() + secs(300));
    }
    clock.advance(hours(12)).unwrap();
    for i in 0..100 {
        offer(&p, CLIENT, &format!("once{i}@y.test"), clock.now());
    }
    let store = greylist_store(&p, 0);
    assert_eq!(store.len(), 300);
    // Within the expiry nothing leaves.
    clock.advance(hours(1)).unwrap();
    offer(&p, CLIENT, "fresh0@y.test", clock.now());
    assert_eq!(store.len(), 301);
    // 12 hours later the 200 passed ones have not been seen for a day, while the 100
    // others were seen 13 hours ago: only the oldest leave, EXPIRE_PER_CALL at a time,
    // each decision adding its own triplet.
    clock.advance(hours(12)).unwrap();
    let step = bounded::EXPIRE_PER_CALL;
    offer(&p, CLIENT, "fresh1@y.test", clock.now());
    assert_eq!(store.len(), 301 - step + 1, "one bounded step, not a sweep");
    let calls = 200usize.div_ceil(step) + 5;
    for i in 2..calls {
        offer(&p, CLIENT, &format!("fresh{i}@y.test"), clock.now());
    }
    assert_eq!(
        store.len(),
        100 + calls,
        "the 200 expired ones are gone, no more"
    );
    // Two days on, everything seen so far is expired.
    clock.advance(hours(48)).unwrap();
    let late = (100 + calls).div_ceil(step) + 1;
    for i in 0..late {
        offer(&p, CLIENT, &format!("late{i}@y.test"), clock.now());
    }
    assert_eq!(store.len(), late, "only the latest triplets are left");
}

/// A flood of distinct rate-limit keys keeps the store at `max-entries`; a key
/// forgotten so counts from zero again, a recent key keeps its count.
#[test]
fn a_flood_of_rate_keys_keeps_the_limit_within_max_entries_forgetting_the_oldest() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { rate-limit = { per = \"recipient\", limit = 1, window = \"1h\", max-entries = 100, reply = \"451 4.7.1 slow\" } }\n",
    );
    let refused = "refuse 451 4.7.1 slow by host mx1 rule 1";
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(0)), "accept");
    assert_eq!(offer(&p, CLIENT, "first@y.test", secs(1)), refused);
    for i in 0..1_000 {
        offer(&p, CLIENT, &format!("flood{i}@y.test"), secs(2));
        let (held, keys) = rate_store(&p, 0).held();
        assert!(held <= 100 && keys <= 100, "after {i} more: {held} {keys}");
    }
    assert_eq!(offer(&p, CLIENT, "flood999@y.test", secs(3)), refused);
    assert_eq!(
        offer(&p, CLIENT, "first@y.test", secs(3)),
        "accept",
        "forgotten, so counted from zero"
    );
}

/// In a sliding window each remembered event time is an entry: a few busy keys use the
/// room that many quiet ones would.
#[test]
fn sliding_windows_count_each_remembered_time_against_max_entries() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { rate-limit = { per = \"recipient\", limit = 10, window = \"1h\", max-entries = 25 } }\n",
    );
    for i in 0..3 {
        for n in 0..10 {
            offer(&p, CLIENT, &format!("busy{i}@y.test"), secs(n));
        }
    }
    // 30 times do not fit in 25: the first key was forgotten, all of it.
    assert_eq!(rate_store(&p, 0).held(), (20, 2));
}

/// Idle rate keys leave in time order, a few per decision, once their window is over.
#[test]
fn idle_rate_keys_leave_a_few_per_decision_once_their_window_is_over() {
    let (p, _) = policy(
        "[[host.rule]]\nstage = \"rcpt\"\n\
         then = { rate-limit = { per = \"recipient\", limit = 5, window = \"10m\", kind = \"fixed\" } }\n",
    );
    for i in 0..50 {
        offer(&p, CLIENT, &format!("r{i}@y.test"), secs(0));
    }
    assert_eq!(rate_store(&p, 0).held(), (50, 50));
    offer(&p, CLIENT, "late0@y.test", secs(600));
    let step = bounded::EXPIRE_PER_CALL;
    assert_eq!(rate_store(&p, 0).held().1, 50 - step + 1);
    let late = 50usize.div_ceil(step) + 1;
    for i in 1..late {
        offer(&p, CLIENT, &format!("late{i}@y.test"), secs(600));
    }
    assert_eq!(
        rate_store(&p, 0).held(),
        (late, late),
        "only the late keys are left"
    );
}

/// Hosts that share a rule's state share its store; per-host state is a store per host;
/// a host without stateful rules has none, so its sessions never wait on one.
#[test]
fn stores_are_per_rule_and_shared_only_by_the_hosts_that_share_the_state() {
    let text = "name = \"t\"\n\
        [[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"g\"]\n\
        [[host]]\nname = \"mx2\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"g\"]\n\
        [[host]]\nname = \"mx3\"\nlisten = \"127.0.0.1:0\"\n\
        [[ruleset]]\nname = \"g\"\n\
        [[ruleset.rule]]\nstage = \"rcpt\"\nthen = { greylist = { state = \"shared\" } }\n\
        [[ruleset.rule]]\nstage = \"rcpt\"\nthen = { rate-limit = { limit = 5, window = \"1h\", state = \"host\" } }\n";
    let scenario = Scenario::from_toml("t.toml", text).unwrap();
    let state = PolicyState::for_scenario(&scenario);
    let hosts: Vec<HostPolicy> = scenario
        .hosts
        .iter()
        .map(|h| HostPolicy::new(h, state.clone()))
        .collect();
    let (RuleStore::Greylist(g1), RuleStore::Greylist(g2)) =
        (&hosts[0].stores[0], &hosts[1].stores[0])
    else {
        panic!("{:?}", hosts[0].stores)
    };
    assert!(Arc::ptr_eq(g1, g2), "shared state: one store");
    let (RuleStore::Rate(r1), RuleStore::Rate(r2)) = (&hosts[0].stores[1], &hosts[1].stores[1])
    else {
        panic!("{:?}", hosts[0].stores)
    };
    assert!(!Arc::ptr_eq(r1, r2), "per-host state: a store each");
    assert!(hosts[2].stores.is_empty(), "mx3 has no rule, and no store");
}
