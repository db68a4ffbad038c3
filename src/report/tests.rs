use super::render::numbers;
use super::tries::tries;
use super::*;
use crate::deliveries::{Attempt, Outcome};
use crate::scenario::{Reply, Stage};
use crate::transcript::{DeliveryTranscript, TranscriptAttempt};

/// An attempt at `secs`, on `host` with its preference and connection, ending at
/// `stage` with `code` (`None`: the connection was lost).
fn at(secs: u64, host: &str, conn: u64, stage: Stage, code: Option<u16>) -> TranscriptAttempt {
    let reply = code.map(|c| {
        let status = match c {
            250 => "2.0.0",
            421 => "4.3.2",
            451 => "4.7.1",
            452 => "4.2.2",
            _ => "5.1.1",
        };
        Reply::new(c, Some(status), "text")
    });
    let outcome = match code {
        Some(200..=399) => Outcome::Delivered,
        Some(400..=499) | None => Outcome::Deferred,
        Some(_) => Outcome::Rejected,
    };
    let preference = match host {
        "mx1" => Some(10),
        "mx2" => Some(20),
        _ => None,
    };
    TranscriptAttempt {
        offset: Duration::from_secs(secs),
        host: host.to_string(),
        preference,
        conn,
        stage,
        reply: reply.clone(),
        closed: code.is_none().then(|| "closed by farm: reset".to_string()),
        outcome,
        attempt: Attempt {
            at: Duration::from_secs(secs),
            host: host.to_string(),
            conn,
            stage,
            reply,
            outcome,
            closed: None,
            client: "192.0.2.1".parse().unwrap(),
            message_id: (outcome == Outcome::Delivered).then(|| "m@x.test".to_string()),
            retry_after: None,
        },
    }
}

fn asks(mut a: TranscriptAttempt, secs: u64) -> TranscriptAttempt {
    a.attempt.retry_after = Some(Duration::from_secs(secs));
    a
}

fn delivery(recipient: &str, attempts: Vec<TranscriptAttempt>) -> DeliveryTranscript {
    let n = attempts.len();
    let delivered = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Delivered)
        .count();
    let outcome = match (delivered, attempts.last().map(|a| a.outcome)) {
        (0, Some(Outcome::Rejected)) => DeliveryOutcome::Bounced { attempts: n },
        (0, _) => DeliveryOutcome::StillDeferred { attempts: n },
        (1, _) => DeliveryOutcome::Delivered {
            attempts: n,
            after: attempts[n - 1].offset,
        },
        (times, _) => DeliveryOutcome::DeliveredTwice { times },
    };
    DeliveryTranscript {
        sender: "s@x.test".into(),
        recipient: Some(recipient.into()),
        attempts,
        outcome,
    }
}

fn one(d: DeliveryTranscript, until: u64) -> DeliveryReport {
    let context = Context {
        domains: vec![DomainRecord {
            name: "y.test".into(),
            mx: vec![("mx1".into(), 10), ("mx2".into(), 20)],
        }],
        observed_until: Some(Duration::from_secs(until)),
    };
    let transcript = Transcript {
        incomplete: None,
        deliveries: vec![d],
    };
    report_with(&transcript, &context).deliveries.remove(0)
}

fn severity(r: &DeliveryReport, check: Check) -> Option<Severity> {
    r.finding(check).map(|f| f.severity)
}

#[test]
fn durations_and_attempt_lists() {
    assert_eq!(duration(Duration::from_secs(30)), "30s");
    assert_eq!(duration(Duration::from_secs(302)), "5m02s");
    assert_eq!(duration(Duration::from_secs(4800)), "1h20m00s");
    assert_eq!(duration(Duration::from_secs(4 * 86_400 + 7200)), "4d02h00m");
    assert_eq!(numbers(&[1, 2, 3, 5, 7, 8]), "#1-#3, #5, #7-#8");
}

#[test]
fn moving_to_the_next_mx_within_a_minute_is_one_try() {
    let a = vec![
        at(0, "mx1", 1, Stage::Rcpt, Some(451)),
        at(1, "mx2", 2, Stage::Rcpt, Some(451)),
        at(300, "mx1", 3, Stage::Rcpt, Some(451)),
        at(330, "mx1", 4, Stage::Rcpt, Some(451)),
    ];
    assert_eq!(tries(&a), vec![vec![0, 1], vec![2], vec![3]]);
}

#[test]
fn an_early_retry_against_greylisting_is_a_problem_and_waiting_is_ok() {
    let early = one(
        delivery(
            "b@y.test",
            vec![
                asks(at(0, "mx1", 1, Stage::Rcpt, Some(451)), 300),
                asks(at(30, "mx1", 2, Stage::Rcpt, Some(451)), 270),
                at(300, "mx1", 3, Stage::EndOfData, Some(250)),
            ],
        ),
        300,
    );
    let finding = early.finding(Check::EarlyRetry).unwrap();
    assert_eq!(finding.severity, Severity::Problem);
    assert_eq!(finding.attempts, vec![1, 2]);
    let patient = one(
        delivery(
            "b@y.test",
            vec![
                asks(at(0, "mx1", 1, Stage::Rcpt, Some(451)), 300),
                at(300, "mx1", 2, Stage::EndOfData, Some(250)),
            ],
        ),
        300,
    );
    assert_eq!(severity(&patient, Check::EarlyRetry), Some(Severity::Ok));
}

#[test]
fn a_quota_retried_early_is_only_information() {
    let r = one(
        delivery(
            "b@y.test",
            vec![
                asks(at(0, "mx1", 1, Stage::Rcpt, Some(452)), 6 * 3600),
                asks(at(600, "mx1", 2, Stage::Rcpt, Some(452)), 6 * 3600 - 600),
            ],
        ),
        700,
    );
    assert_eq!(severity(&r, Check::EarlyRetry), Some(Severity::Info));
}

#[test]
fn the_same_host_after_a_421_or_a_lost_connection_is_a_problem() {
    let r = one(
        delivery(
            "b@y.test",
            vec![
                at(0, "mx1", 1, Stage::Rcpt, Some(421)),
                at(300, "mx1", 2, Stage::Rcpt, None),
                at(900, "mx1", 3, Stage::EndOfData, Some(250)),
            ],
        ),
        900,
    );
    let finding = r.finding(Check::MxFailover).unwrap();
    assert_eq!(finding.severity, Severity::Problem);
    assert_eq!(
        finding.kind,
        FindingKind::MxFailover {
            failures: 2,
            same_host: 2
        }
    );
    let moved = one(
        delivery(
            "b@y.test",
            vec![
                at(0, "mx1", 1, Stage::Rcpt, Some(421)),
                at(1, "mx2", 2, Stage::EndOfData, Some(250)),
            ],
        ),
        1,
    );
    assert_eq!(severity(&moved, Check::MxFailover), Some(Severity::Ok));
    assert_eq!(severity(&moved, Check::MxPreference), Some(Severity::Ok));
}

#[test]
fn a_retry_after_a_5xx_and_a_silent_end_after_one_try() {
    let r = one(
        delivery(
            "b@y.test",
            vec![
                at(0, "mx1", 1, Stage::Rcpt, Some(550)),
                at(30, "mx1", 2, Stage::Rcpt, Some(550)),
            ],
        ),
        60,
    );
    let finding = r.finding(Check::RetryAfter5xx).unwrap();
    assert_eq!(finding.severity, Severity::Problem);
    assert_eq!(finding.attempts, vec![1, 2]);

    let gave_up = one(
        delivery("b@y.test", vec![at(0, "mx1", 1, Stage::Rcpt, Some(451))]),
        7200,
    );
    assert_eq!(severity(&gave_up, Check::GiveUp), Some(Severity::Problem));
    let too_soon_to_tell = one(
        delivery("b@y.test", vec![at(0, "mx1", 1, Stage::Rcpt, Some(451))]),
        600,
    );
    assert_eq!(severity(&too_soon_to_tell, Check::GiveUp), None);
}

#[test]
fn a_duplicate_after_a_lost_reply_is_information() {
    let mut lost = at(0, "mx1", 1, Stage::EndOfData, None);
    lost.outcome = Outcome::Delivered;
    lost.attempt.message_id = Some("m@x.test".into());
    let r = one(
        delivery(
            "b@y.test",
            vec![lost, at(300, "mx1", 2, Stage::EndOfData, Some(250))],
        ),
        300,
    );
    let finding = r.finding(Check::Duplicate).unwrap();
    assert_eq!(finding.severity, Severity::Info);
    assert!(matches!(
        finding.kind,
        FindingKind::Duplicate {
            times: 2,
            cause: DuplicateCause::LostReply,
            ..
        }
    ));
}

#[test]
fn the_report_serializes_and_renders() {
    let r = Report {
        incomplete: None,
        deliveries: vec![one(
            delivery(
                "b@y.test",
                vec![
                    asks(at(0, "mx1", 1, Stage::Rcpt, Some(451)), 300),
                    at(300, "mx1", 2, Stage::EndOfData, Some(250)),
                ],
            ),
            300,
        )],
        overall: Vec::new(),
    };
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let finding = &json["deliveries"][0]["findings"][0];
    assert_eq!(finding["kind"]["check"], "early-retry");
    assert_eq!(finding["kind"]["asked_ms"], 300_000);
    assert_eq!(finding["severity"], "ok");
    assert!(
        r.render()
            .contains("ok      early-retry     every retry waited out")
    );
}
