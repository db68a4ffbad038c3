//! The checks on journals written by hand ([`Script`]): each story case, firing and not.

use super::render::numbers;
use super::*;
use crate::deliveries::tests::Script;
use crate::journal::ClosedBy;
use crate::scenario::Stage;

const AOL: (&str, &[(&str, u16)]) = ("aol.test", &[("mx1", 10), ("mx2", 20)]);
const ONE: (&str, &[(&str, u16)]) = ("one.test", &[("solo", 10)]);
const C: &str = "192.0.2.1";
const S: &str = "a@x.test";

fn report_of(s: &Script, until: f64) -> Report {
    report_journal_until(&s.events, Duration::from_secs_f64(until))
}

fn finding(r: &Report, delivery: usize, check: Check) -> Option<&Finding> {
    r.deliveries[delivery].finding(check)
}

fn severity(r: &Report, delivery: usize, check: Check) -> Option<Severity> {
    finding(r, delivery, check).map(|f| f.severity)
}

/// A greylisted RCPT on a new connection, then QUIT.
fn greylisted(s: &mut Script, host: &str, to: &str, size: u64, clears: f64, told: bool) {
    let conn = s.open(host, C);
    s.mail(conn, S, Some(size), "250 ok");
    s.rcpt(conn, to, "451 4.7.1 greylisted", Some((clears, told)));
    s.quit(conn);
}

#[test]
fn durations_and_attempt_lists() {
    assert_eq!(duration(Duration::from_secs(30)), "30s");
    assert_eq!(duration(Duration::from_secs(302)), "5m02s");
    assert_eq!(duration(Duration::from_secs(4800)), "1h20m00s");
    assert_eq!(
        duration(Duration::from_secs(4 * 86_400 + 7200)),
        "4d02h00m00s"
    );
    assert_eq!(numbers(&[1, 2, 3, 5, 7, 8]), "#1-#3, #5, #7-#8");
}

#[test]
fn tries_follow_a_quick_sender_and_a_slow_one() {
    for (retry, expected) in [(10.0, 2), (3000.0, 2)] {
        let mut s = Script::new(&[AOL]);
        s.refused("mx1", C, "421 4.7.0 busy");
        s.at(0.05);
        greylisted(&mut s, "mx2", "bob@aol.test", 103, 5.0, false);
        s.at(retry);
        s.refused("mx1", C, "421 4.7.0 busy");
        s.at(retry + 0.05);
        s.send("mx2", C, S, &[("bob@aol.test", "250 ok")], "1@x", "250 ok");
        let r = report_of(&s, retry + 1.0);
        let d = &r.deliveries[0];
        assert_eq!(d.attempts, 4, "{}", r.render());
        assert_eq!(
            d.intervals.as_ref().map(|i| i.tries),
            Some(expected),
            "{}",
            r.render()
        );
        assert!(r.problems().is_empty(), "{}", r.render());
    }
}

#[test]
fn a_second_transaction_on_the_same_connection_is_the_same_try() {
    let mut s = Script::new(&[ONE]);
    let conn = s.open("solo", C);
    s.transaction(
        conn,
        S,
        &[
            ("a@one.test", "250 ok"),
            ("b@one.test", "452 4.5.3 too many"),
        ],
        "1@x",
        "250 ok",
    );
    s.at(0.01);
    s.transaction(conn, S, &[("b@one.test", "250 ok")], "1@x", "250 ok");
    s.quit(conn);
    let r = report_of(&s, 1.0);
    let b = r
        .deliveries
        .iter()
        .find(|d| d.recipient.as_deref() == Some("b@one.test"))
        .unwrap();
    assert_eq!(b.attempts, 2);
    assert!(b.intervals.is_none(), "one try: {}", r.render());
    assert!(r.problems().is_empty(), "{}", r.render());
}

#[test]
fn an_early_retry_is_a_problem_only_when_the_reply_said_how_long() {
    for (told, expected) in [(true, Severity::Problem), (false, Severity::Info)] {
        let mut s = Script::new(&[ONE]);
        greylisted(&mut s, "solo", "b@one.test", 103, 9.98, told);
        s.at(9.47);
        greylisted(&mut s, "solo", "b@one.test", 103, 0.51, told);
        s.at(20.0);
        s.send("solo", C, S, &[("b@one.test", "250 ok")], "1@x", "250 ok");
        let r = report_of(&s, 21.0);
        let f = finding(&r, 0, Check::EarlyRetry).unwrap();
        assert_eq!(f.severity, expected, "{}", r.render());
        assert!(
            f.text.contains("9.470s"),
            "sub-second precision: {}",
            f.text
        );
        assert_eq!(f.attempts, vec![1, 2]);
    }
    let mut s = Script::new(&[ONE]);
    greylisted(&mut s, "solo", "b@one.test", 103, 300.0, true);
    s.at(300.0);
    s.send("solo", C, S, &[("b@one.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&s, 301.0);
    assert_eq!(severity(&r, 0, Check::EarlyRetry), Some(Severity::Ok));
}

#[test]
fn failover_after_a_421_greeting_is_ok_and_staying_is_a_problem() {
    let mut moved = Script::new(&[AOL]);
    moved.refused("mx1", C, "421 4.7.0 busy");
    moved.send("mx2", C, S, &[("bob@aol.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&moved, 1.0);
    assert_eq!(
        severity(&r, 0, Check::MxFailover),
        Some(Severity::Ok),
        "{}",
        r.render()
    );

    let mut stayed = Script::new(&[AOL]);
    stayed.refused("mx1", C, "421 4.7.0 busy");
    stayed.at(60.0);
    stayed.send("mx1", C, S, &[("bob@aol.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&stayed, 61.0);
    let f = finding(&r, 0, Check::MxFailover).unwrap();
    assert_eq!(f.severity, Severity::Problem, "{}", r.render());
    assert!(f.text.contains("mx2 (20)"), "{}", f.text);
}

#[test]
fn skipping_a_host_that_just_refused_is_not_blamed() {
    let mut s = Script::new(&[("three.test", &[("mx1", 10), ("mx2", 20), ("mx3", 30)])]);
    // mx2 resets this client; later tries go mx1 -> mx3, passing over mx2.
    s.send("mx1", C, S, &[("x@three.test", "250 ok")], "0@x", "250 ok");
    let reset = s.connect("mx2", C);
    s.close(reset, ClosedBy::Farm, "reset at connect");
    s.at(100.0);
    greylisted(&mut s, "mx1", "bob@three.test", 103, 5.0, false);
    s.at(100.1);
    greylisted(&mut s, "mx3", "bob@three.test", 103, 5.0, false);
    s.at(400.0);
    s.send(
        "mx1",
        C,
        S,
        &[("bob@three.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let r = report_of(&s, 401.0);
    assert!(r.problems().is_empty(), "{}", r.render());
    let bob = r.delivery(S, "bob@three.test").unwrap();
    assert_eq!(
        bob.finding(Check::MxPreference).map(|f| f.severity),
        Some(Severity::Ok),
        "{}",
        r.render()
    );
}

#[test]
fn a_retried_5xx_is_a_problem_unless_no_content_ever_told_messages_apart() {
    // One message, two recipients: gone@ refused, bob accepted; the resend carries gone@.
    let mut s = Script::new(&[ONE]);
    let rcpts = [
        ("gone@one.test", "550 5.1.1 no"),
        ("bob@one.test", "250 ok"),
    ];
    s.send("solo", C, S, &rcpts, "1@x", "250 ok");
    s.at(600.0);
    s.send("solo", C, S, &rcpts, "1@x", "250 ok");
    let r = report_of(&s, 601.0);
    let gone = r.delivery(S, "gone@one.test").unwrap();
    assert_eq!(
        gone.finding(Check::RetryAfter5xx).map(|f| f.severity),
        Some(Severity::Problem),
        "{}",
        r.render()
    );

    // Two content-less attempts to gone@: perhaps two messages.
    let mut s = Script::new(&[ONE]);
    s.send(
        "solo",
        C,
        S,
        &[("gone@one.test", "550 5.1.1 no")],
        "1@x",
        "",
    );
    s.at(600.0);
    s.send(
        "solo",
        C,
        S,
        &[("gone@one.test", "550 5.1.1 no")],
        "1@x",
        "",
    );
    let r = report_of(&s, 601.0);
    assert_eq!(
        severity(&r, 0, Check::RetryAfter5xx),
        Some(Severity::Info),
        "{}",
        r.render()
    );
    assert!(r.problems().is_empty(), "{}", r.render());
}

#[test]
fn different_messages_to_one_recipient_are_judged_apart() {
    let mut s = Script::new(&[ONE]);
    for (t, id) in [(0.0, "1@x"), (0.0, "22@x")] {
        s.at(t);
        greylisted(
            &mut s,
            "solo",
            "alice@one.test",
            100 + id.len() as u64,
            300.0,
            true,
        );
    }
    s.at(300.0);
    s.send(
        "solo",
        C,
        S,
        &[("alice@one.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    s.send(
        "solo",
        C,
        S,
        &[("alice@one.test", "250 ok")],
        "22@x",
        "250 ok",
    );
    let r = report_of(&s, 301.0);
    assert_eq!(r.deliveries.len(), 2);
    assert!(r.problems().is_empty(), "{}", r.render());
    for d in &r.deliveries {
        assert_eq!(
            d.finding(Check::Duplicate).map(|f| f.severity),
            Some(Severity::Ok)
        );
    }
}

#[test]
fn a_resend_is_right_after_a_lost_reply_and_wrong_after_a_250() {
    let lost = |s: &mut Script| {
        let conn = s.open("solo", C);
        s.mail(conn, S, None, "250 ok");
        s.rcpt(conn, "b@one.test", "250 ok", None);
        s.content(conn, Some("1@x"));
        s.kept(conn, 1, None);
        s.close(
            conn,
            ClosedBy::Client,
            "left while the farm delayed its answer",
        );
    };
    let mut s = Script::new(&[ONE]);
    lost(&mut s);
    s.at(300.0);
    s.send("solo", C, S, &[("b@one.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&s, 301.0);
    let f = finding(&r, 0, Check::Duplicate).unwrap();
    assert_eq!(f.severity, Severity::Info, "{}", r.render());
    assert!(matches!(
        f.kind,
        FindingKind::Duplicate {
            times: 2,
            cause: DuplicateCause::LostReply,
            ..
        }
    ));

    // Lost, then a 250 the sender got, then another copy.
    s.at(600.0);
    s.send("solo", C, S, &[("b@one.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&s, 601.0);
    let f = finding(&r, 0, Check::Duplicate).unwrap();
    assert_eq!(f.severity, Severity::Problem, "{}", r.render());
    assert_eq!(f.attempts, vec![2, 3]);
    assert!(matches!(
        f.kind,
        FindingKind::Duplicate {
            times: 3,
            cause: DuplicateCause::Resent,
            ..
        }
    ));
}

#[test]
fn hammering_with_a_growing_backoff_is_information() {
    for (growing, expected) in [(true, Severity::Info), (false, Severity::Problem)] {
        let mut s = Script::new(&[ONE]);
        let mut t = 0.0;
        let mut gap = 10.0;
        for _ in 0..20 {
            s.at(t);
            // The content is sent each time (and refused at its end), so every attempt
            // is certainly the same message.
            s.send(
                "solo",
                C,
                S,
                &[("b@one.test", "250 ok")],
                "1@x",
                "451 4.3.0 later",
            );
            t += gap;
            if growing {
                gap *= 1.2;
            }
        }
        let r = report_of(&s, t);
        assert_eq!(
            severity(&r, 0, Check::Hammering),
            Some(expected),
            "{}",
            r.render()
        );
    }
}

#[test]
fn a_whole_message_resent_names_only_that_messages_recipients() {
    let mut s = Script::new(&[ONE]);
    // Another message on the same connection must not show up in the evidence.
    let conn = s.open("solo", C);
    s.transaction(conn, S, &[("other@one.test", "250 ok")], "0@x", "250 ok");
    s.transaction(
        conn,
        S,
        &[("a@one.test", "250 ok"), ("b@one.test", "452 4.2.2 full")],
        "1@x",
        "250 ok",
    );
    s.quit(conn);
    s.at(600.0);
    s.send(
        "solo",
        C,
        S,
        &[("a@one.test", "250 ok"), ("b@one.test", "250 ok")],
        "1@x",
        "250 ok",
    );
    let r = report_of(&s, 601.0);
    let b = r.delivery(S, "b@one.test").unwrap();
    let f = b.finding(Check::RecipientRetry).unwrap();
    assert_eq!(f.severity, Severity::Problem, "{}", r.render());
    assert_eq!(
        f.kind,
        FindingKind::RecipientRetry {
            whole_message: true,
            resent_to: vec!["a@one.test".into()]
        }
    );
    let a = r.delivery(S, "a@one.test").unwrap();
    assert!(matches!(
        a.finding(Check::Duplicate).map(|f| &f.kind),
        Some(FindingKind::Duplicate {
            cause: DuplicateCause::WholeMessageResent,
            ..
        })
    ));
}

#[test]
fn many_content_less_attempts_under_one_envelope_blame_no_one() {
    // Thirty greylisted attempts, 30 s apart, that never sent content: perhaps thirty
    // messages tried once each, so the hammering is information, saying why.
    let mut s = Script::new(&[ONE]);
    for i in 0..30 {
        s.at(f64::from(i) * 30.0);
        greylisted(&mut s, "solo", "b@one.test", 103, 1e6, false);
    }
    let r = report_of(&s, 900.0);
    let f = finding(&r, 0, Check::Hammering).unwrap();
    assert_eq!(f.severity, Severity::Info, "{}", r.render());
    assert!(f.text.contains("may be several messages"), "{}", f.text);
}

#[test]
fn a_retry_in_clear_after_a_failed_handshake_is_the_same_try_and_no_failover_is_due() {
    let mut s = Script::new(&[AOL]);
    let conn = s.open("mx1", C);
    s.command(conn, crate::journal::Command::Starttls);
    s.reply(conn, Stage::Starttls, "220 go ahead", None);
    s.tls_failed(conn);
    s.close(conn, ClosedBy::Client, "TLS failed");
    s.send("mx1", C, S, &[("bob@aol.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&s, 1.0);
    assert!(r.problems().is_empty(), "{}", r.render());
    assert!(
        r.deliveries[0].intervals.is_none(),
        "one try: {}",
        r.render()
    );
}

#[test]
fn a_kept_open_connection_retried_every_20_seconds_is_many_tries() {
    let mut s = Script::new(&[ONE]);
    let conn = s.open("solo", C);
    for i in 0..40 {
        s.at(f64::from(i) * 20.0);
        s.transaction(
            conn,
            S,
            &[("b@one.test", "250 ok")],
            "1@x",
            "451 4.3.0 later",
        );
    }
    s.quit(conn);
    let r = report_of(&s, 800.0);
    let d = &r.deliveries[0];
    assert_eq!(
        d.intervals.as_ref().map(|i| i.tries),
        Some(40),
        "{}",
        r.render()
    );
    assert_eq!(
        d.finding(Check::Hammering).map(|f| f.severity),
        Some(Severity::Problem),
        "{}",
        r.render()
    );
}

#[test]
fn moving_to_another_mx_only_in_a_later_try_is_information() {
    let mut s = Script::new(&[AOL]);
    s.refused("mx1", C, "421 4.7.0 busy");
    s.at(600.0);
    s.send("mx2", C, S, &[("bob@aol.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&s, 601.0);
    let f = finding(&r, 0, Check::MxFailover).unwrap();
    assert_eq!(f.severity, Severity::Info, "{}", r.render());
    assert!(f.text.contains("only 10m00s later"), "{}", f.text);
}

#[test]
fn a_client_with_nothing_in_flight_is_judged_on_its_own_contacts() {
    let mut s = Script::new(&[AOL]);
    s.refused("mx1", C, "421 4.7.0 busy");
    s.at(30.0);
    s.refused("mx1", C, "421 4.7.0 busy");
    let r = report_of(&s, 31.0);
    assert!(r.deliveries.is_empty());
    assert_eq!(r.clients.len(), 1);
    assert_eq!(
        r.clients[0].finding(Check::MxFailover).map(|f| f.severity),
        Some(Severity::Problem),
        "{}",
        r.render()
    );
    assert_eq!(r.problems().len(), 1);
}

#[test]
fn the_report_serializes_and_renders() {
    let mut s = Script::new(&[ONE]);
    greylisted(&mut s, "solo", "b@one.test", 103, 300.0, true);
    s.at(300.0);
    s.send("solo", C, S, &[("b@one.test", "250 ok")], "1@x", "250 ok");
    let r = report_of(&s, 301.0);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let finding = &json["deliveries"][0]["findings"][0];
    assert_eq!(finding["kind"]["check"], "early-retry");
    assert_eq!(finding["kind"]["asked_ms"], 300_000);
    assert_eq!(finding["severity"], "ok");
    assert_eq!(json["deliveries"][0]["message"], 1);
    assert!(
        r.render()
            .contains("ok      early-retry     every retry waited out"),
        "{}",
        r.render()
    );
    let _ = Stage::Rcpt;
}
