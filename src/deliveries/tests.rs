//! A journal written by hand, event by event, as a farm would record a sender's
//! contacts; and the stories read from such journals.

pub(crate) use super::script::Script;
use super::*;
use crate::journal::{ClosedBy, Command};
use crate::scenario::Stage;

const AOL: (&str, &[(&str, u16)]) = ("aol.test", &[("mx1", 10), ("mx2", 20)]);
const C: &str = "192.0.2.1";

fn attempts_of(d: &Deliveries, recipient: &str) -> Vec<Vec<(u64, Outcome)>> {
    d.list
        .iter()
        .filter(|x| x.recipient.as_deref() == Some(recipient))
        .map(|x| x.attempts.iter().map(|a| (a.conn, a.outcome)).collect())
        .collect()
}

#[test]
fn two_messages_to_one_recipient_are_two_deliveries() {
    let mut s = Script::new(&[AOL]);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("gone@aol.test", "550 5.1.1 no")],
        "1@x",
        "",
    );
    s.at(60.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "2@x",
        "250 ok",
    );
    s.at(61.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "3@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 3);
    assert_eq!(
        attempts_of(&d, "bob@aol.test"),
        vec![vec![(2, Outcome::Delivered)], vec![(3, Outcome::Delivered)]]
    );
}

#[test]
fn a_greylisted_attempt_belongs_to_the_message_later_sent_with_the_same_size() {
    let mut s = Script::new(&[AOL]);
    // Two messages of different sizes, both greylisted, then both delivered.
    for id in ["short@x", "much-longer@x"] {
        let conn = s.open("mx1", C);
        s.mail(conn, "a@x.test", Some(100 + id.len() as u64), "250 ok");
        s.rcpt(
            conn,
            "bob@aol.test",
            "451 4.7.1 later",
            Some((300.0, false)),
        );
        s.quit(conn);
    }
    s.at(400.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "much-longer@x",
        "250 ok",
    );
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "short@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 2);
    assert_eq!(
        attempts_of(&d, "bob@aol.test"),
        vec![
            vec![(1, Outcome::Deferred), (4, Outcome::Delivered)],
            vec![(2, Outcome::Deferred), (3, Outcome::Delivered)],
        ]
    );
    assert!(
        d.list
            .iter()
            .flat_map(|x| &x.attempts)
            .all(|a| a.also_possible.is_empty())
    );
}

#[test]
fn a_refused_greeting_is_an_attempt_of_the_message_in_flight() {
    let mut s = Script::new(&[AOL]);
    s.refused("mx1", C, "421 4.7.0 not now");
    s.send(
        "mx2",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(
        attempts_of(&d, "bob@aol.test"),
        vec![vec![(1, Outcome::Unreached), (2, Outcome::Delivered)]]
    );
    assert!(d.unattributed.is_empty());
}

#[test]
fn a_refusal_with_no_message_in_flight_is_the_clients_own() {
    let mut s = Script::new(&[AOL]);
    s.send(
        "mx2",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    s.at(10.0);
    s.refused("mx1", C, "421 4.7.0 not now");
    // A client that connects and quits without offering anything.
    let probe = s.open("mx1", "192.0.2.9");
    s.quit(probe);
    let d = deliveries(&s.events);
    assert_eq!(d.unattributed.len(), 2);
    assert_eq!(d.unattributed[0].attempts[0].outcome, Outcome::Unreached);
    assert_eq!(d.unattributed[1].attempts[0].outcome, Outcome::Abandoned);
}

#[test]
fn a_mail_refusal_goes_to_each_recipient_still_to_deliver() {
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.mail(conn, "a@x.test", Some(106), "421 4.7.0 slow down");
    s.close(conn, ClosedBy::Farm, "421 at mail");
    s.at(300.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok"), ("carol@aol.test", "250 ok")],
        "1234@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 1);
    for r in ["bob@aol.test", "carol@aol.test"] {
        assert_eq!(
            attempts_of(&d, r),
            vec![vec![(1, Outcome::Deferred), (2, Outcome::Delivered)]]
        );
    }
}

#[test]
fn two_messages_alike_in_everything_are_said_to_be_alternatives() {
    let mut s = Script::new(&[AOL]);
    for _ in 0..2 {
        let conn = s.open("mx1", C);
        s.mail(conn, "a@x.test", Some(103), "250 ok");
        s.rcpt(conn, "bob@aol.test", "451 later", Some((300.0, false)));
        s.quit(conn);
    }
    s.at(400.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "2@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 2);
    let guessed: Vec<&Attempt> = d
        .list
        .iter()
        .flat_map(|x| &x.attempts)
        .filter(|a| !a.also_possible.is_empty())
        .collect();
    assert_eq!(guessed.len(), 2);
}

/// Two connections open at once, their events interleaved, each offering bob a message.
fn at_once(s: &mut Script, rcpt_reply: &str, retry: Option<(f64, bool)>) -> (u64, u64) {
    let (one, two) = (s.open("mx1", C), s.open("mx1", C));
    for conn in [one, two] {
        s.mail(conn, "a@x.test", None, "250 ok");
    }
    for conn in [two, one] {
        s.rcpt(conn, "bob@aol.test", rcpt_reply, retry);
    }
    for conn in [one, two] {
        s.quit(conn);
    }
    (one, two)
}

#[test]
fn a_sender_offers_a_message_on_one_connection_at_a_time() {
    // Two messages greylisted in parallel, at the same farm time, then both delivered:
    // each message has one of the two deferrals (which one, nothing tells).
    let mut s = Script::new(&[AOL]);
    let (one, two) = at_once(&mut s, "451 greylisted", Some((300.0, true)));
    s.at(400.0);
    for id in ["1@x", "2@x"] {
        s.send(
            "mx1",
            C,
            "a@x.test",
            &[("bob@aol.test", "250 ok")],
            id,
            "250 ok",
        );
    }
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 2);
    let firsts: Vec<u64> = d.list.iter().map(|x| x.attempts[0].conn).collect();
    assert_eq!(firsts, vec![one, two]);
    for x in &d.list {
        assert_eq!(x.attempts.len(), 2);
        // The second was tied by the first's guess: a guess as well.
        assert_eq!(x.attempts[0].also_possible.len(), 1);
    }

    // Refused for good at once, and never sent: two messages by envelope, not one
    // retried after its 5xx.
    let mut s = Script::new(&[AOL]);
    at_once(&mut s, "550 5.1.1 no such user", None);
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 2);
    assert!(d.list.iter().all(|x| x.attempts.len() == 1));
}

#[test]
fn attempts_that_never_sent_content_are_one_message_by_envelope() {
    let mut s = Script::new(&[AOL]);
    for t in [0.0, 60.0] {
        s.at(t);
        let conn = s.open("mx1", C);
        s.mail(conn, "a@x.test", Some(104), "250 ok");
        s.rcpt(conn, "gone@aol.test", "550 5.1.1 no such user", None);
        s.quit(conn);
    }
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 1);
    assert_eq!(d.messages[0].identity, Identity::Envelope);
    assert_eq!(d.list[0].attempts.len(), 2);
}

#[test]
fn a_lost_reply_is_delivered_and_the_closing_says_who_left() {
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.mail(conn, "a@x.test", None, "250 ok");
    s.rcpt(conn, "bob@aol.test", "250 ok", None);
    s.content(conn, Some("1@x"));
    s.kept(conn, 1, None);
    s.close(conn, ClosedBy::Client, "left during the delay");
    let d = deliveries(&s.events);
    let a = &d.list[0].attempts[0];
    assert_eq!(a.outcome, Outcome::Delivered);
    assert_eq!(a.stage, Stage::EndOfData);
    assert!(a.reply.is_none());
    assert_eq!(a.kept, Some(1));
    assert!(
        a.closed
            .as_deref()
            .is_some_and(|c| c.starts_with("closed by client"))
    );
}

/// A message kept, then given back with 451 because its journal line could not be
/// written, was not delivered: the sender retries, and the retry is no duplicate.
#[test]
fn a_message_given_back_with_451_is_deferred_not_delivered() {
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.mail(conn, "a@x.test", None, "250 ok");
    s.rcpt(conn, "bob@aol.test", "250 ok", None);
    s.content(conn, Some("1@x"));
    s.kept(conn, 1, Some("451 4.3.0 Error: queue file write error"));
    s.quit(conn);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    let attempts = &d.list[0].attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].kept, None);
    assert_ne!(attempts[0].outcome, Outcome::Delivered);
    assert_eq!(attempts[1].outcome, Outcome::Delivered);
}

#[test]
fn a_failed_handshake_is_an_unreached_attempt() {
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.command(conn, Command::Starttls);
    s.reply(conn, Stage::Starttls, "220 go ahead", None);
    let host = s.host(conn);
    s.push(EventKind::TlsHandshake {
        host,
        conn,
        outcome: crate::journal::TlsOutcome::Failed {
            error: "bad certificate".into(),
            aborted_by: ClosedBy::Client,
        },
    });
    s.close(conn, ClosedBy::Client, "TLS failed");
    s.at(1.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    let a = &d.list[0].attempts;
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].outcome, Outcome::Unreached);
    assert_eq!(a[0].stage, Stage::Starttls);
    assert!(
        a[0].closed
            .as_deref()
            .is_some_and(|c| c.contains("bad certificate"))
    );
}

#[test]
fn a_mail_refusal_then_a_bounce_on_the_next_mx_is_one_message() {
    // mx1 answers MAIL with 421; the sender moves to mx2, which refuses gone@ for good.
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.mail(conn, "a@x.test", Some(103), "421 4.7.0 busy");
    s.close(conn, ClosedBy::Farm, "421 at mail");
    s.send(
        "mx2",
        C,
        "a@x.test",
        &[("gone@aol.test", "550 5.1.1 no")],
        "1@x",
        "",
    );
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 1, "{:?}", d.messages);
    assert_eq!(
        attempts_of(&d, "gone@aol.test"),
        vec![vec![(1, Outcome::Deferred), (2, Outcome::Rejected)]]
    );
}

#[test]
fn a_first_attempt_may_name_more_recipients_than_its_retries() {
    // gone@ refused and bob greylisted in one transaction (no content); bob alone is
    // retried later and delivered: one message.
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.mail(conn, "a@x.test", Some(103), "250 ok");
    s.rcpt(conn, "gone@aol.test", "550 5.1.1 no", None);
    s.rcpt(
        conn,
        "bob@aol.test",
        "451 4.7.1 later",
        Some((300.0, false)),
    );
    s.quit(conn);
    s.at(400.0);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(d.messages.len(), 1, "{:?}", d.messages);
    assert_eq!(
        attempts_of(&d, "bob@aol.test"),
        vec![vec![(1, Outcome::Deferred), (2, Outcome::Delivered)]]
    );
    assert_eq!(
        attempts_of(&d, "gone@aol.test"),
        vec![vec![(1, Outcome::Rejected)]]
    );
}

#[test]
fn a_recipient_named_twice_in_one_transaction_is_one_attempt() {
    let mut s = Script::new(&[AOL]);
    s.send(
        "mx1",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok"), ("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let d = deliveries(&s.events);
    assert_eq!(
        attempts_of(&d, "bob@aol.test"),
        vec![vec![(1, Outcome::Delivered)]]
    );
}

#[test]
fn a_refused_contact_names_only_messages_in_flight() {
    // A refused greeting, the failover that delivers message 1, then three messages
    // begun long after: they were not in flight.
    let mut s = Script::new(&[AOL]);
    s.refused("mx1", C, "421 4.7.0 not now");
    s.send(
        "mx2",
        C,
        "a@x.test",
        &[("bob@aol.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    for (t, id) in [(600.0, "2@x"), (1200.0, "3@x"), (1800.0, "4@x")] {
        s.at(t);
        s.send(
            "mx2",
            C,
            "a@x.test",
            &[("bob@aol.test", "250 ok")],
            id,
            "250 ok",
        );
    }
    let d = deliveries(&s.events);
    let first = &d.list[0].attempts[0];
    assert_eq!((first.conn, first.outcome), (1, Outcome::Unreached));
    assert!(first.also_possible.is_empty(), "{:?}", first.also_possible);
}

/// A scenario replaced while the farm ran: each domain's MX records are the latest that
/// name it; domains only the first scenario had stay known.
#[test]
fn domain_records_follow_replaced_scenarios() {
    use crate::journal::{DomainRecord, Event, EventKind};
    let record = |name: &str, mx: &[(&str, u16)]| DomainRecord {
        name: name.into(),
        mx: mx.iter().map(|(h, p)| ((*h).into(), *p)).collect(),
    };
    let event = |seq, kind| Event {
        seq,
        at: std::time::Duration::ZERO,
        kind,
    };
    let events = [
        event(
            1,
            EventKind::FarmStarted {
                scenario: "one".into(),
                domains: vec![
                    record("a.test", &[("mx1", 10)]),
                    record("b.test", &[("mx1", 5)]),
                ],
                hostnames: Vec::new(),
            },
        ),
        event(
            2,
            EventKind::ScenarioReplaced {
                scenario: "two".into(),
                domains: vec![
                    record("a.test", &[("mx2", 20)]),
                    record("c.test", &[("mx2", 1)]),
                ],
                hostnames: Vec::new(),
                state_kept: true,
            },
        ),
    ];
    assert_eq!(
        domain_records(&events),
        [
            record("a.test", &[("mx2", 20)]),
            record("b.test", &[("mx1", 5)]),
            record("c.test", &[("mx2", 1)])
        ]
    );
}
