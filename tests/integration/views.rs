//! The views over a journal (deliveries, transcript, report, the journal rendering) on
//! journals that are not whole or not well ordered: they say what is missing and never
//! panic, whatever the journal holds.

use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::journal::{Command, DomainRecord};
use mxfarm::render::{self, Granularity};
use mxfarm::report::report_journal;
use mxfarm::scenario::{Reply, Stage};
use mxfarm::testing::SmtpClient;
use mxfarm::transcript::Transcript;
use mxfarm::{Event, EventKind, Farm, Scenario};

fn client() -> SocketAddr {
    "192.0.2.10:40000".parse().unwrap()
}

/// One message to `to` on a new in-memory connection.
async fn send(farm: &Farm, to: &str, n: usize) {
    let mut c = SmtpClient::over(farm.connect_in_memory("mx1", client()).unwrap());
    c.greeting().await;
    c.ehlo("c.test").await;
    let message = format!("Message-ID: <{n}@x.test>\r\n\r\nhi\r\n");
    let done = c.transaction("a@x.test", &[to], &message).await;
    assert!(done.delivered(), "{}", c.conversation());
    c.quit().await;
}

/// A farm whose journal is too small for what happened tells a wrong story unless it
/// says that the story is incomplete: here the first two of three messages are gone.
#[tokio::test(start_paused = true)]
async fn views_over_a_journal_with_dropped_events_say_they_are_incomplete() {
    let scenario = Scenario::from_toml(
        "small.toml",
        r#"
name = "small"
[journal]
max-events = 30
[[domain]]
name = "y.test"
mx = [{ host = "mx1", preference = 10 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
"#,
    )
    .unwrap();
    let farm = Farm::start_ephemeral(scenario).await.unwrap();
    for n in 0..3 {
        send(&farm, "bob@y.test", n).await;
        farm.advance(Duration::from_secs(60));
    }
    let journal = farm.journal();
    assert!(journal.len() <= 30, "bounded: {}", journal.len());
    assert!(
        matches!(journal[0].kind, EventKind::FarmStarted { .. }),
        "the MX records are kept"
    );
    let transcript = farm.transcript();
    let text = transcript.render(Granularity::Seconds);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("INCOMPLETE: ") && first.contains("raise [journal] max-events"),
        "{text}"
    );
    // The MX preference survives the drop.
    assert!(text.contains("mx1 (10)"), "{text}");
    let report = farm.report().render();
    assert!(report.starts_with("INCOMPLETE: "), "{report}");
    assert!(
        render::journal(&journal, Granularity::Seconds).contains("events missing here"),
        "the journal rendering marks the gap"
    );
    let deliveries = farm.deliveries();
    assert!(deliveries.incomplete.is_some());
    assert!(
        farm.transcript()
            .render(Granularity::Seconds)
            .starts_with("INCOMPLETE: ")
    );
    // An expectation cannot be answered truly on part of the attempts: it fails, saying so.
    let expectation = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        farm.expect_delivery("a@x.test", "bob@y.test")
            .delivered_after_attempts(1);
    }));
    let message = expectation.unwrap_err();
    let message = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        message.starts_with("cannot check the delivery <a@x.test> -> <bob@y.test>: INCOMPLETE"),
        "{message}"
    );

    // A whole journal says nothing of the kind.
    let whole = Farm::start_ephemeral(Scenario::embedded("aol").unwrap())
        .await
        .unwrap();
    assert!(whole.transcript().incomplete.is_none());
    assert!(!whole.report().render().contains("INCOMPLETE"));
}

/// A tiny deterministic generator, so that the journals below are the same each run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// One conversation of a sender on connection `conn`, ending somewhere at random: the
/// events a farm would journal for it, in order, without sequence numbers or times.
fn conversation(rng: &mut Lcg, conn: u64) -> Vec<EventKind> {
    let host: std::sync::Arc<str> = ["mx1", "mx2", "mx3"][rng.next(3) as usize].into();
    let recipients = ["a@y.test", "b@y.test", "c@z.test"];
    let reply = |rng: &mut Lcg, stage: Stage, good: u16| {
        let code = match rng.next(4) {
            0 => [421, 451, 452, 550][rng.next(4) as usize],
            _ => good,
        };
        EventKind::Reply {
            host: host.clone(),
            conn,
            stage: Some(stage),
            reply: Reply::new(code, None, "text"),
            rule: None,
            retry_after: (code / 100 == 4 && rng.next(2) == 0)
                .then(|| Duration::from_secs(rng.next(7200))),
            retry_after_told: rng.next(2) == 0,
        }
    };
    let command = |line: String, command: Command| EventKind::Command {
        host: host.clone(),
        conn,
        line,
        command,
    };
    let mut events = vec![EventKind::ConnectionOpened {
        host: host.clone(),
        conn,
        client: client(),
    }];
    'talk: {
        events.push(command(
            "MAIL FROM:<s@x.test>".into(),
            Command::Mail {
                sender: "s@x.test".into(),
                size: None,
            },
        ));
        events.push(reply(rng, Stage::Mail, 250));
        if rng.next(8) == 0 {
            break 'talk;
        }
        let mut accepted = Vec::new();
        for _ in 0..=rng.next(3) {
            let recipient = recipients[rng.next(3) as usize].to_string();
            events.push(command(
                format!("RCPT TO:<{recipient}>"),
                Command::Rcpt {
                    recipient: recipient.clone(),
                },
            ));
            let answer = reply(rng, Stage::Rcpt, 250);
            if matches!(&answer, EventKind::Reply { reply, .. } if reply.code == 250) {
                accepted.push(recipient);
            }
            events.push(answer);
        }
        events.push(command("DATA".into(), Command::Data));
        events.push(reply(rng, Stage::Data, 354));
        let message_id = (rng.next(2) == 0).then(|| format!("{}@x.test", rng.next(3)));
        let digest = (rng.next(4) > 0).then(|| format!("{:016x}", rng.next(4)));
        let end = Command::EndOfData {
            size: 10,
            message_id,
            digest,
        };
        events.push(command(".".into(), end));
        if rng.next(2) == 0 {
            events.push(EventKind::MessageAccepted {
                host: host.clone(),
                conn,
                id: conn,
                sender: "s@x.test".into(),
                recipients: accepted,
                size: 10,
                message_id: (rng.next(2) == 0).then(|| format!("{}@x.test", rng.next(3))),
                subject: None,
                tls: false,
            });
            if rng.next(3) > 0 {
                events.push(reply(rng, Stage::EndOfData, 250));
            }
        } else {
            events.push(reply(rng, Stage::EndOfData, 451));
        }
    }
    events.push(EventKind::ConnectionClosed {
        host,
        conn,
        by: mxfarm::journal::ClosedBy::Farm,
        reason: "reset".into(),
    });
    events
}

/// A journal of interleaved random conversations, with sequence numbers that skip and
/// repeat and times that jump forwards and backwards, as in a journal pieced together by
/// hand or written by an older farm.
fn random_journal(rng: &mut Lcg) -> Vec<Event> {
    let mut pending: Vec<std::collections::VecDeque<EventKind>> = (1..=rng.next(12) + 1)
        .map(|conn| conversation(rng, conn).into())
        .collect();
    let mut kinds = vec![EventKind::FarmStarted {
        scenario: "t".into(),
        domains: vec![DomainRecord {
            name: "y.test".into(),
            mx: vec![("mx1".into(), 10), ("mx2".into(), 10), ("mx3".into(), 20)],
        }],
        hostnames: Vec::new(),
    }];
    while !pending.is_empty() {
        // Now and then a DNS query, of a sender or of the farm's own checks.
        if rng.next(6) == 0 {
            let answers = [
                mxfarm::journal::DnsReply::Records,
                mxfarm::journal::DnsReply::Servfail,
                mxfarm::journal::DnsReply::Held,
                mxfarm::journal::DnsReply::Dropped,
            ];
            kinds.push(EventKind::DnsQuery {
                client: client(),
                by_farm: rng.next(2) == 0,
                transport: mxfarm::journal::DnsTransport::Udp,
                name: "y.test".into(),
                qtype: "MX".into(),
                answer: answers[rng.next(4) as usize],
                records: vec!["MX 10 mx1.y.test.".into()],
                rule: None,
                delay: None,
            });
        }
        if rng.next(12) == 0 {
            kinds.push(EventKind::DnsCheck {
                host: "mx1".into(),
                conn: rng.next(12) + 1,
                check: "spf".into(),
                subject: "<a@y.test>".into(),
                result: "temperror".into(),
                took: Duration::from_secs(rng.next(20)),
            });
        }
        let i = rng.next(pending.len() as u64) as usize;
        match pending[i].pop_front() {
            Some(kind) => kinds.push(kind),
            None => {
                pending.remove(i);
            }
        }
    }
    let (mut seq, mut secs) = (0u64, 0u64);
    let mut events = Vec::new();
    for kind in kinds {
        seq += rng.next(3);
        secs = match rng.next(4) {
            0 => secs.saturating_sub(rng.next(4 * 3600)),
            _ => secs + rng.next(3 * 3600),
        };
        // Now and then an event is missing altogether.
        if rng.next(20) > 0 {
            events.push(Event {
                seq,
                at: Duration::from_secs(secs),
                kind,
            });
        }
    }
    events
}

/// Every view over thousands of random journals, with times that go backwards, missing
/// and repeated sequence numbers: none may panic (`mxfarm report` once exited 101 on a
/// journal a busy farm wrote itself).
#[test]
fn no_view_panics_on_any_journal() {
    let mut rng = Lcg(7);
    for _ in 0..1000 {
        let mut events = random_journal(&mut rng);
        if rng.next(10) == 0 {
            // A file may hold any number, the largest too.
            if let Some(last) = events.last_mut() {
                last.seq = u64::MAX;
            }
        }
        let transcript = Transcript::from_events(&events);
        for granularity in [
            Granularity::Exact,
            Granularity::Seconds,
            Granularity::Minutes,
            Granularity::None,
        ] {
            transcript.render(granularity);
            render::journal(&events, granularity);
        }
        transcript.to_json();
        let report = report_journal(&events);
        report.render();
        report.to_json();
    }
}

/// Greylisted on mx1, then straight on to mx2 within the same try: not a retry, so not an
/// early one. The expectation and the report's `early-retry` check agree (the expectation
/// once had an implementation of its own that failed here).
#[tokio::test(start_paused = true)]
async fn moving_on_to_the_next_mx_is_not_an_early_retry_for_expectations_either() {
    let scenario = Scenario::from_toml(
        "grey.toml",
        r#"
name = "grey"
[[domain]]
name = "y.test"
mx = [{ host = "mx1", preference = 10 }, { host = "mx2", preference = 20 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { greylist = { state = "host" } }
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
"#,
    )
    .unwrap();
    let farm = Farm::start_ephemeral(scenario).await.unwrap();
    for host in ["mx1", "mx2"] {
        let mut c = SmtpClient::over(farm.connect_in_memory(host, client()).unwrap());
        c.greeting().await;
        c.ehlo("c.test").await;
        c.transaction("a@x.test", &["bob@y.test"], "Subject: hi\r\n\r\nhi\r\n")
            .await;
        c.quit().await;
        farm.advance(Duration::from_secs(5));
    }
    let report = farm.report();
    let finding = report
        .delivery("a@x.test", "bob@y.test")
        .and_then(|d| d.finding(mxfarm::report::Check::EarlyRetry));
    assert!(
        finding.is_none_or(|f| f.severity == mxfarm::report::Severity::Ok),
        "{}",
        report.render()
    );
    farm.expect_delivery("a@x.test", "bob@y.test")
        .delivered_after_attempts(2)
        .had_no_early_retries();
}
