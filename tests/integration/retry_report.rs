//! The retry-behaviour report on scripted senders whose behaviour is known: each sender is
//! a small async function that speaks SMTP to the farm through in-memory streams and
//! follows its own retry policy, under tokio's paused time, so days of retries take no
//! real time. Each test snapshots the transcript and the report, and checks that the
//! findings it is about fire (or do not).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::render::Granularity;
use mxfarm::report::{Check, Report, Severity, report, report_journal};
use mxfarm::testing::{Reply, SmtpClient, Transaction};
use mxfarm::{Farm, Scenario};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

const SENDER: &str = "sender@example.test";

/// Where every scripted sender connects from.
fn client() -> SocketAddr {
    "192.0.2.10:40000".parse().unwrap()
}

/// One message: its recipients (all in one domain) and a fixed Message-ID, so that the
/// report can tell a resent copy from a new message.
struct Mail {
    to: &'static [&'static str],
    message_id: &'static str,
}

impl Mail {
    fn domain(&self) -> &'static str {
        self.to[0].split_once('@').unwrap().1
    }

    fn all(&self) -> Vec<String> {
        self.to.iter().map(|r| r.to_string()).collect()
    }

    fn body(&self) -> String {
        format!(
            "From: <{SENDER}>\r\nTo: {}\r\nSubject: retry test\r\nMessage-ID: <{}>\r\n\r\nHello.\r\n",
            self.to
                .iter()
                .map(|r| format!("<{r}>"))
                .collect::<Vec<_>>()
                .join(", "),
            self.message_id
        )
    }
}

/// What became of a recipient in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Delivered,
    Deferred,
    Rejected,
}

/// How a reply (or its absence) reads to a sender.
enum Class {
    Positive,
    Temporary,
    /// A 421 or a lost connection: the host is gone for this connection.
    Lost,
    Permanent,
}

fn class(reply: Option<&Reply>) -> Class {
    match reply.map(|r| r.code) {
        Some(200..=399) => Class::Positive,
        Some(421) | None => Class::Lost,
        Some(400..=499) => Class::Temporary,
        Some(_) => Class::Permanent,
    }
}

/// One transaction on a new connection to `host` for `recipients`: EHLO, MAIL, a RCPT
/// each, DATA if any was accepted, then QUIT unless the connection was lost. Returns each
/// recipient's status.
async fn transaction(farm: &Farm, host: &str, mail: &Mail, recipients: &[String]) -> Vec<Status> {
    let stream = farm.connect_in_memory(host, client()).expect("a farm host");
    let mut smtp = SmtpClient::over(stream);
    let mut opening = smtp.try_reply().await;
    if opening.as_ref().is_some_and(Reply::is_positive) {
        smtp.send("EHLO client.example.test\r\n").await;
        opening = smtp.try_reply().await;
    }
    let everyone = |status| vec![status; recipients.len()];
    match class(opening.as_ref()) {
        Class::Positive => {}
        Class::Lost => return everyone(Status::Deferred),
        Class::Temporary => {
            smtp.quit().await;
            return everyone(Status::Deferred);
        }
        Class::Permanent => {
            smtp.quit().await;
            return everyone(Status::Rejected);
        }
    }
    let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let sent = smtp.transaction(SENDER, &to, &mail.body()).await;
    if !sent.closed() {
        smtp.quit().await;
    }
    statuses(&sent)
}

/// Each recipient's status after a transaction: what MAIL got speaks for everyone, what
/// its RCPT got for each recipient, and for those accepted, what DATA and the message got.
fn statuses(sent: &Transaction) -> Vec<Status> {
    let status = |reply: Option<&Reply>| match class(reply) {
        Class::Positive => Status::Delivered,
        Class::Temporary | Class::Lost => Status::Deferred,
        Class::Permanent => Status::Rejected,
    };
    let message = match &sent.data {
        Some(data) if data.is_positive() => status(sent.end_of_data.as_ref()),
        data => status(data.as_ref()),
    };
    match status(sent.mail.as_ref()) {
        Status::Delivered => sent
            .rcpt
            .iter()
            .map(|rcpt| match status(rcpt.as_ref()) {
                Status::Delivered => message,
                refused => refused,
            })
            .collect(),
        refused => vec![refused; sent.rcpt.len()],
    }
}

/// The domain's MX hosts, lowest preference first; hosts of equal preference rotated by
/// `turn`, a deterministic stand-in for the random pick RFC 5321 asks for.
fn mx_hosts(farm: &Farm, domain: &str, turn: usize) -> Vec<String> {
    let scenario = farm.scenario();
    let domain = scenario
        .domains
        .iter()
        .find(|d| d.name == domain)
        .expect("the scenario's domain");
    let mut levels: Vec<u16> = domain.mx.iter().map(|m| m.preference).collect();
    levels.sort_unstable();
    levels.dedup();
    let mut hosts = Vec::new();
    for level in levels {
        let mut equal: Vec<String> = domain
            .mx
            .iter()
            .filter(|m| m.preference == level)
            .map(|m| m.host.clone())
            .collect();
        let n = equal.len();
        equal.rotate_left(turn % n);
        hosts.extend(equal);
    }
    hosts
}

/// A Postfix-like queue: each try walks `hosts(turn)` (at most 5), moving on to the next
/// host after any deferral, a 421 or a lost connection; between tries it backs off 5, 10,
/// 20, 40, then 80 minutes; it gives up after 5 days. With `whole_message`, every try
/// sends to all recipients not yet refused, even those already delivered.
async fn queue(
    farm: &Farm,
    mail: &Mail,
    hosts: impl Fn(usize) -> Vec<String>,
    whole_message: bool,
) {
    let all = mail.all();
    let mut delivered: HashSet<String> = HashSet::new();
    let mut rejected: HashSet<String> = HashSet::new();
    let mut backoff = 5 * MINUTE;
    let start = farm.now();
    for turn in 0.. {
        for host in hosts(turn).iter().take(5) {
            let targets: Vec<String> = all
                .iter()
                .filter(|r| !rejected.contains(*r) && (whole_message || !delivered.contains(*r)))
                .cloned()
                .collect();
            let status = transaction(farm, host, mail, &targets).await;
            for (recipient, status) in targets.into_iter().zip(status) {
                match status {
                    Status::Delivered => delivered.insert(recipient),
                    Status::Rejected => rejected.insert(recipient),
                    Status::Deferred => false,
                };
            }
            if all
                .iter()
                .all(|r| delivered.contains(r) || rejected.contains(r))
            {
                return;
            }
        }
        if farm.now() - start + backoff > 5 * DAY {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(80 * MINUTE);
    }
}

/// Well behaved: Postfix-like backoff, MX hosts in preference order (equal ones spread),
/// the next MX after a deferral, a 421 or a lost connection, only the deferred recipients
/// retried, nothing retried after a 5xx.
async fn well_behaved(farm: &Farm, mail: &Mail) {
    queue(
        farm,
        mail,
        |turn| mx_hosts(farm, mail.domain(), turn),
        false,
    )
    .await;
}

/// Like `well_behaved`, but always to one host: given the primary, it never tries the
/// secondary; given the secondary, it never tries the primary.
async fn one_host(farm: &Farm, mail: &Mail, host: &str) {
    queue(farm, mail, |_| vec![host.to_string()], false).await;
}

/// Like `well_behaved`, but after a per-recipient 4xx it resends the whole message to
/// every recipient, those already accepted included.
async fn whole_message(farm: &Farm, mail: &Mail) {
    queue(farm, mail, |turn| mx_hosts(farm, mail.domain(), turn), true).await;
}

/// Impatient: every 30 s it walks the MX hosts in preference order and retries whatever
/// was not delivered, a 5xx included; it gives up after 30 tries.
async fn impatient(farm: &Farm, mail: &Mail) {
    let mut pending = mail.all();
    for _ in 0..30 {
        for host in mx_hosts(farm, mail.domain(), 0) {
            let status = transaction(farm, &host, mail, &pending).await;
            pending = pending
                .into_iter()
                .zip(status)
                .filter(|(_, s)| *s != Status::Delivered)
                .map(|(r, _)| r)
                .collect();
            if pending.is_empty() {
                return;
            }
        }
        tokio::time::sleep(30 * SECOND).await;
    }
}

/// Treats the first 4xx as final: one transaction on the first MX, and whatever was not
/// delivered there is bounced.
async fn bounces_on_4xx(farm: &Farm, mail: &Mail) {
    let host = mx_hosts(farm, mail.domain(), 0).remove(0);
    transaction(farm, &host, mail, &mail.all()).await;
}

async fn start(scenario: Scenario) -> Farm {
    Farm::start_ephemeral(scenario).await.unwrap()
}

async fn inline(name: &str, toml: &str) -> Farm {
    start(Scenario::from_toml(&format!("{name}.toml"), toml).unwrap()).await
}

async fn shipped(name: &str) -> Farm {
    start(Scenario::embedded(name).unwrap()).await
}

/// Snapshots the transcript and the report under `name`, and returns the report.
fn snapshot(farm: &Farm, name: &str, granularity: Granularity) -> Report {
    let report = farm.report();
    insta::assert_snapshot!(
        format!("{name}_transcript"),
        farm.transcript().render(granularity)
    );
    insta::assert_snapshot!(format!("{name}_report"), report.render());
    report
}

/// The severity of `check` for the delivery to `to`; `None` if it did not apply.
fn severity(report: &Report, to: &str, check: Check) -> Option<Severity> {
    report
        .delivery(SENDER, to)
        .unwrap_or_else(|| panic!("no delivery to {to}:\n{}", report.render()))
        .finding(check)
        .map(|f| f.severity)
}

const FAILOVER: &str = r#"
name = "failover"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }, { host = "mx2", preference = 20 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { time = "<1h" }
then = { reply = "421 4.3.2 Service not available, closing transmission channel" }

[[host]]
name = "mx2"
listen = "127.0.0.1:0"
"#;

const IMPATIENT: &str = r#"
name = "impatient"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "gone@farm.test" }
then = { reply = "550 5.1.1 <{recipient}>: Recipient address rejected: User unknown" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@farm.test", first-attempt-within = "1d", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
[[host.rule]]
stage = "rcpt"
then = { greylist = { delay = "10m", reply = "451 4.7.1 Greylisted, please come back in {remaining-hms}" } }
"#;

const PARTIAL: &str = r#"
name = "partial"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "carol@farm.test", attempt = "<3", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full, try again later" }
"#;

const QUOTA_2D: &str = r#"
name = "quota"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }, { host = "mx2", preference = 20 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
rulesets = ["mailboxes"]

[[host]]
name = "mx2"
listen = "127.0.0.1:0"
rulesets = ["mailboxes"]

[[ruleset]]
name = "mailboxes"
[[ruleset.rule]]
stage = "rcpt"
when = { rcpt = "full@farm.test", first-attempt-within = "2d", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
"#;

const ALWAYS_DEFERS: &str = r#"
name = "always-defers"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { reply = "451 4.3.0 Temporary local problem" }
"#;

/// The well-behaved sender on the shipped `aol` scenario, one message to a greylisted
/// (then delivered) recipient, a recipient over quota for 6 hours and a gone one.
#[tokio::test(start_paused = true)]
async fn well_behaved_on_aol() {
    let farm = shipped("aol").await;
    let mail = Mail {
        to: &["alice@aol.test", "full-bob@aol.test", "gone@aol.test"],
        message_id: "well-behaved.1@example.test",
    };
    well_behaved(&farm, &mail).await;
    let report = snapshot(&farm, "well_behaved_on_aol", Granularity::Seconds);
    let bob = "full-bob@aol.test";
    // Retries against a 6-hour quota are wasted, but no sender can know: information.
    assert_eq!(
        severity(&report, bob, Check::EarlyRetry),
        Some(Severity::Info)
    );
    assert_eq!(
        severity(&report, bob, Check::RecipientRetry),
        Some(Severity::Ok)
    );
    assert_eq!(severity(&report, bob, Check::MxSpread), Some(Severity::Ok));
    assert_eq!(severity(&report, bob, Check::Backoff), Some(Severity::Ok));
    assert_eq!(severity(&report, bob, Check::Hammering), Some(Severity::Ok));
    assert_eq!(
        severity(&report, bob, Check::RetryInterval),
        Some(Severity::Info)
    );
    assert_eq!(
        severity(&report, "gone@aol.test", Check::RetryAfter5xx),
        Some(Severity::Ok)
    );
    assert_eq!(
        severity(&report, "alice@aol.test", Check::Duplicate),
        Some(Severity::Ok)
    );
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The well-behaved sender on the shipped `greylist` scenario (5 minutes, shared by a
/// primary and a backup): it waits the delay out, so no early retry.
#[tokio::test(start_paused = true)]
async fn well_behaved_waits_out_greylisting() {
    let farm = shipped("greylist").await;
    let mail = Mail {
        to: &["alice@greylist.test"],
        message_id: "well-behaved.2@example.test",
    };
    well_behaved(&farm, &mail).await;
    let report = snapshot(&farm, "well_behaved_greylist", Granularity::Seconds);
    let alice = "alice@greylist.test";
    assert_eq!(
        severity(&report, alice, Check::EarlyRetry),
        Some(Severity::Ok)
    );
    assert_eq!(
        severity(&report, alice, Check::MxPreference),
        Some(Severity::Ok)
    );
    assert_eq!(
        severity(&report, alice, Check::Hammering),
        Some(Severity::Ok)
    );
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// Every 30 s, against a 10-minute greylisting that says how long to wait, a 550 and a
/// quota for a day: early retries (a problem against the greylisting, which said when,
/// only information against the quota, which did not), hammering, no backoff, retries
/// after the 5xx, and an early give-up.
#[tokio::test(start_paused = true)]
async fn impatient_sender() {
    let farm = inline("impatient", IMPATIENT).await;
    let mail = Mail {
        to: &["alice@farm.test", "gone@farm.test", "full@farm.test"],
        message_id: "impatient.1@example.test",
    };
    impatient(&farm, &mail).await;
    // Nothing more happens for two hours: the journal shows the sender stopped.
    tokio::time::sleep(2 * HOUR).await;
    let report = snapshot(&farm, "impatient", Granularity::Seconds);
    let alice = "alice@farm.test";
    assert_eq!(
        severity(&report, alice, Check::EarlyRetry),
        Some(Severity::Problem)
    );
    assert_eq!(
        severity(&report, alice, Check::Hammering),
        Some(Severity::Problem)
    );
    assert_eq!(
        severity(&report, alice, Check::Backoff),
        Some(Severity::Info)
    );
    assert_eq!(
        severity(&report, "gone@farm.test", Check::RetryAfter5xx),
        Some(Severity::Problem)
    );
    assert_eq!(
        severity(&report, "full@farm.test", Check::EarlyRetry),
        Some(Severity::Info)
    );
    assert_eq!(
        severity(&report, "full@farm.test", Check::GiveUp),
        Some(Severity::Info)
    );
    farm.shutdown().await;
}

/// A 451 from greylisting taken as final: never retried.
#[tokio::test(start_paused = true)]
async fn sender_that_bounces_on_the_first_4xx() {
    let farm = shipped("greylist").await;
    let mail = Mail {
        to: &["alice@greylist.test"],
        message_id: "bouncer.1@example.test",
    };
    bounces_on_4xx(&farm, &mail).await;
    tokio::time::sleep(2 * HOUR).await;
    let report = snapshot(&farm, "bounces_on_4xx", Granularity::Seconds);
    assert_eq!(
        severity(&report, "alice@greylist.test", Check::GiveUp),
        Some(Severity::Problem)
    );
    farm.shutdown().await;
}

/// A well-behaved sender facing a primary that always defers retries for 5 days: the
/// give-up check passes.
#[tokio::test(start_paused = true)]
async fn well_behaved_gives_up_after_five_days() {
    let farm = inline("always-defers", ALWAYS_DEFERS).await;
    let mail = Mail {
        to: &["alice@farm.test"],
        message_id: "well-behaved.3@example.test",
    };
    well_behaved(&farm, &mail).await;
    tokio::time::sleep(DAY).await;
    let report = snapshot(&farm, "well_behaved_gives_up", Granularity::Minutes);
    assert_eq!(
        severity(&report, "alice@farm.test", Check::GiveUp),
        Some(Severity::Ok)
    );
    farm.shutdown().await;
}

/// A primary that answers 421 for an hour, a secondary that accepts: the well-behaved
/// sender moves to the secondary at once.
#[tokio::test(start_paused = true)]
async fn well_behaved_moves_to_the_secondary_after_a_421() {
    let farm = inline("failover", FAILOVER).await;
    let mail = Mail {
        to: &["alice@farm.test"],
        message_id: "well-behaved.4@example.test",
    };
    well_behaved(&farm, &mail).await;
    let report = snapshot(&farm, "well_behaved_failover", Granularity::Seconds);
    let alice = "alice@farm.test";
    assert_eq!(
        severity(&report, alice, Check::MxFailover),
        Some(Severity::Ok)
    );
    assert_eq!(
        severity(&report, alice, Check::MxPreference),
        Some(Severity::Ok)
    );
    farm.shutdown().await;
}

/// The same primary, a sender that never tries the secondary: it waits an hour and more.
#[tokio::test(start_paused = true)]
async fn sender_that_never_tries_the_secondary() {
    let farm = inline("failover", FAILOVER).await;
    let mail = Mail {
        to: &["alice@farm.test"],
        message_id: "primary-only.1@example.test",
    };
    one_host(&farm, &mail, "mx1").await;
    let found = snapshot(&farm, "never_tries_the_secondary", Granularity::Seconds);
    assert_eq!(
        severity(&found, "alice@farm.test", Check::MxFailover),
        Some(Severity::Problem)
    );
    // The transcript alone never shows mx2, so it cannot tell there was another MX; the
    // journal's farm-started event can.
    assert_eq!(report_journal(&farm.journal()), found);
    let blind = report(&farm.transcript());
    assert_eq!(severity(&blind, "alice@farm.test", Check::MxFailover), None);
    farm.shutdown().await;
}

/// A sender that goes to the secondary without trying the primary.
#[tokio::test(start_paused = true)]
async fn sender_that_ignores_mx_preference() {
    let farm = inline("failover", FAILOVER).await;
    let mail = Mail {
        to: &["alice@farm.test"],
        message_id: "secondary-only.1@example.test",
    };
    one_host(&farm, &mail, "mx2").await;
    let report = snapshot(&farm, "ignores_mx_preference", Granularity::Seconds);
    assert_eq!(
        severity(&report, "alice@farm.test", Check::MxPreference),
        Some(Severity::Info)
    );
    farm.shutdown().await;
}

/// On `aol`'s three equal MX hosts, a sender that sticks to mx1 does not spread the load.
#[tokio::test(start_paused = true)]
async fn sender_that_sticks_to_one_of_equal_mx_hosts() {
    let farm = shipped("aol").await;
    let mail = Mail {
        to: &["alice@aol.test"],
        message_id: "sticky.1@example.test",
    };
    one_host(&farm, &mail, "mx1").await;
    let report = snapshot(&farm, "sticks_to_one_equal_mx", Granularity::Seconds);
    assert_eq!(
        severity(&report, "alice@aol.test", Check::MxSpread),
        Some(Severity::Info)
    );
    assert_eq!(
        severity(&report, "alice@aol.test", Check::EarlyRetry),
        Some(Severity::Ok)
    );
    farm.shutdown().await;
}

/// A 452 for one of two recipients, twice: the whole-message sender resends to the one
/// already accepted, which gets the message three times.
#[tokio::test(start_paused = true)]
async fn sender_that_resends_the_whole_message_after_a_452() {
    let farm = inline("partial", PARTIAL).await;
    let mail = Mail {
        to: &["alice@farm.test", "carol@farm.test"],
        message_id: "whole.1@example.test",
    };
    whole_message(&farm, &mail).await;
    let report = snapshot(&farm, "resends_whole_message", Granularity::Seconds);
    assert_eq!(
        severity(&report, "carol@farm.test", Check::RecipientRetry),
        Some(Severity::Problem)
    );
    assert_eq!(
        severity(&report, "alice@farm.test", Check::Duplicate),
        Some(Severity::Problem)
    );
    farm.shutdown().await;
}

/// The same, with the well-behaved sender: only the deferred recipient is retried.
#[tokio::test(start_paused = true)]
async fn well_behaved_retries_only_the_deferred_recipient() {
    let farm = inline("partial", PARTIAL).await;
    let mail = Mail {
        to: &["alice@farm.test", "carol@farm.test"],
        message_id: "well-behaved.5@example.test",
    };
    well_behaved(&farm, &mail).await;
    let report = snapshot(&farm, "well_behaved_partial", Granularity::Seconds);
    assert_eq!(
        severity(&report, "carol@farm.test", Check::RecipientRetry),
        Some(Severity::Ok)
    );
    assert_eq!(
        severity(&report, "alice@farm.test", Check::Duplicate),
        Some(Severity::Ok)
    );
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// Two days of Postfix-like retries against a quota, twice: the same transcript each
/// time. (How little real time it takes is measured by `cargo bench --bench paused_time`,
/// not here: a real-time bound fails on a busy machine.)
#[tokio::test(start_paused = true)]
async fn a_multi_day_schedule_runs_in_paused_time_and_repeats_exactly() {
    /// The transcript to the millisecond and in minutes, and the report.
    async fn run() -> (String, String, String) {
        let farm = inline("quota", QUOTA_2D).await;
        let mail = Mail {
            to: &["full@farm.test"],
            message_id: "two-days.1@example.test",
        };
        well_behaved(&farm, &mail).await;
        let transcript = farm.transcript();
        let exact = transcript.render(Granularity::Exact);
        let minutes = transcript.render(Granularity::Minutes);
        let report = farm.report().render();
        farm.shutdown().await;
        (exact, minutes, report)
    }
    let (first, transcript, report) = run().await;
    let (second, _, report_again) = run().await;
    assert_eq!(first, second);
    assert_eq!(report, report_again);
    assert!(
        transcript.contains("delivered after 81 attempts in 2d01h15m"),
        "{transcript}"
    );
    insta::assert_snapshot!("two_day_quota_transcript", transcript);
    insta::assert_snapshot!("two_day_quota_report", report);
}
