//! The stories the journal tells of scripted senders whose every move is known, in the
//! cases where telling them is hard: several messages with the same envelope, contacts
//! that end before any RCPT, a reply lost in a tarpit, retries seconds and hours apart,
//! and connections that carry several transactions. Each case has a variant where its
//! check fires and one where it must not; each test snapshots the transcript and the
//! report, and asserts the severities it is about.
//!
//! Every sender talks to the farm over in-memory streams under tokio's paused time, so
//! hours of retries take no real time; it sets the Message-ID of each message itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mxfarm::render::Granularity;
use mxfarm::report::{Check, DeliveryReport, DuplicateCause, FindingKind, Report, Severity};
use mxfarm::scenario::Stage;
use mxfarm::testing::{Reply, SmtpClient};
use mxfarm::transcript::TranscriptAttempt;
use mxfarm::{Farm, Identity, Scenario};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

const SENDER: &str = "sender@example.test";
const ALICE: &str = "alice@farm.test";
const BOB: &str = "bob@farm.test";
const CAROL: &str = "carol@farm.test";
const DAVE: &str = "dave@farm.test";
const GONE: &str = "gone@farm.test";

/// Where every scripted sender connects from.
fn client() -> SocketAddr {
    "192.0.2.10:40000".parse().expect("an address")
}

async fn inline(name: &str, toml: &str) -> Farm {
    let scenario = Scenario::from_toml(&format!("{name}.toml"), toml).expect("a valid scenario");
    Farm::start_ephemeral(scenario)
        .await
        .expect("the farm starts")
}

/// A message to `to` whose Message-ID is `<id>`.
fn body(to: &[&str], id: &str) -> String {
    let to: Vec<String> = to.iter().map(|r| format!("<{r}>")).collect();
    format!(
        "From: <{SENDER}>\r\nTo: {}\r\nSubject: story test\r\nMessage-ID: <{id}>\r\n\r\nHello.\r\n",
        to.join(", ")
    )
}

/// A scripted sender from [`client`]: it sets every message's Message-ID itself and
/// notes, for each connection it opens, what it offered there, so that a test can check
/// each story against what really happened.
struct Sender<'f> {
    farm: &'f Farm,
    /// Whether MAIL declares the message's size (`SIZE=`), as Postfix and Exim do.
    declares_size: bool,
    /// Per connection (the farm numbers them from 1, in the order they open; only this
    /// sender connects): per transaction, or for a contact that ended before MAIL, the
    /// message and the recipients it was for.
    log: Mutex<Vec<Vec<Offer>>>,
}

/// A message (its Message-ID) and the recipients it was offered to.
type Offer = (String, Vec<String>);

impl<'f> Sender<'f> {
    fn new(farm: &'f Farm) -> Sender<'f> {
        Sender {
            farm,
            declares_size: false,
            log: Mutex::new(Vec::new()),
        }
    }

    fn declaring_size(farm: &'f Farm) -> Sender<'f> {
        Sender {
            declares_size: true,
            ..Sender::new(farm)
        }
    }

    fn note(&self, conn: usize, id: &str, to: &[&str]) {
        let mut log = self.log.lock().expect("the log");
        log[conn - 1].push((id.to_string(), to.iter().map(|r| r.to_string()).collect()));
    }

    /// A new connection to `host` for message `id` to `to`, past a 220 greeting and a
    /// 250 to EHLO; with STARTTLS when the host offers it (trusting the farm's CA, and
    /// saying EHLO again after it). `Err` with the connection's number when the host
    /// refused or failed the contact before MAIL: a greeting other than 220, a lost
    /// connection, a failed handshake.
    async fn open(&self, host: &str, id: &str, to: &[&str]) -> Result<Session, usize> {
        let stream = self
            .farm
            .connect_in_memory(host, client())
            .expect("a farm host");
        let conn = {
            let mut log = self.log.lock().expect("the log");
            log.push(Vec::new());
            log.len()
        };
        match self.greet(host, SmtpClient::over(stream)).await {
            Some(smtp) => Ok(Session { smtp, conn }),
            None => {
                self.note(conn, id, to);
                Err(conn)
            }
        }
    }

    async fn greet(&self, host: &str, mut smtp: SmtpClient) -> Option<SmtpClient> {
        let greeting = smtp.try_reply().await?;
        if greeting.code != 220 {
            if greeting.code != 421 {
                smtp.quit().await;
            }
            return None;
        }
        smtp.send("EHLO client.example.test\r\n").await;
        let ehlo = smtp.try_reply().await?;
        if ehlo.code != 250 {
            smtp.quit().await;
            return None;
        }
        if !ehlo
            .lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("STARTTLS"))
        {
            return Some(smtp);
        }
        smtp.send("STARTTLS\r\n").await;
        let ready = smtp.try_reply().await?;
        if ready.code != 220 {
            return Some(smtp);
        }
        let name = ServerName::try_from(format!("{host}.mxfarm.test")).expect("a server name");
        let tls = connector(self.farm)
            .connect(name, smtp.into_inner())
            .await
            .ok()?;
        let mut smtp = SmtpClient::over(tls);
        smtp.send("EHLO client.example.test\r\n").await;
        smtp.try_reply().await.filter(|r| r.code == 250)?;
        Some(smtp)
    }

    /// One transaction of message `id` to `to` on an open connection: MAIL (with
    /// `SIZE=` if the sender declares it), a RCPT per recipient, DATA and the message if
    /// any was accepted; it stops at a refusal of MAIL or DATA, a 421 or a lost
    /// connection. RSET after it when every recipient was refused, so that the connection
    /// can carry another.
    async fn send(&self, session: &mut Session, to: &[&str], id: &str) -> Sent {
        self.note(session.conn, id, to);
        let smtp = &mut session.smtp;
        let message = body(to, id);
        let size = if self.declares_size {
            format!(" SIZE={}", message.len())
        } else {
            String::new()
        };
        let mut sent = Sent {
            mail: smtp
                .try_command(&format!("MAIL FROM:<{SENDER}>{size}"))
                .await,
            rcpt: vec![None; to.len()],
            data: None,
            end_of_data: None,
            lost: false,
        };
        match &sent.mail {
            Some(mail) if mail.is_positive() => {}
            Some(_) => return sent,
            None => return sent.lost(),
        }
        for (i, recipient) in to.iter().enumerate() {
            let reply = smtp.try_command(&format!("RCPT TO:<{recipient}>")).await;
            let closing = reply.as_ref().is_none_or(|r| r.code == 421);
            sent.lost = reply.is_none();
            sent.rcpt[i] = reply;
            if closing {
                return sent;
            }
        }
        if !sent.rcpt.iter().flatten().any(Reply::is_positive) {
            smtp.command("RSET").await;
            return sent;
        }
        sent.data = smtp.try_command("DATA").await;
        match &sent.data {
            Some(data) if data.code == 354 => {}
            Some(_) => return sent,
            None => return sent.lost(),
        }
        // No line of these messages starts with a dot.
        smtp.send(format!("{message}.\r\n")).await;
        sent.end_of_data = smtp.try_reply().await;
        sent.lost = sent.end_of_data.is_none();
        sent
    }

    /// One transaction of message `id` to `to` on a new connection to `host`, then QUIT;
    /// `None` when the contact ended before MAIL.
    async fn deliver(&self, host: &str, to: &[&str], id: &str) -> Option<Sent> {
        let mut session = self.open(host, id, to).await.ok()?;
        let sent = self.send(&mut session, to, id).await;
        if !sent.closed() {
            session.smtp.quit().await;
        }
        Some(sent)
    }

    /// Checks that the transcript tells each message's story as it happened: the
    /// delivery of each message whose content the farm saw (it knows it by its
    /// Message-ID) to each recipient has an attempt on each connection that offered it
    /// that message, in order, and no other; except that an attempt the transcript marks
    /// as perhaps for another message (`[or message N]`) may be in that other story.
    fn check_stories(&self) {
        let transcript = self.farm.transcript();
        let log = self.log.lock().expect("the log");
        let known = |id: &str| {
            transcript.messages.iter().any(
                |m| matches!(&m.identity, Identity::MessageId { message_id } if message_id == id),
            )
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (id, to) in log.iter().flatten() {
            for r in to {
                if known(id) && !pairs.contains(&(id.clone(), r.clone())) {
                    pairs.push((id.clone(), r.clone()));
                }
            }
        }
        let text = transcript.render(Granularity::Seconds);
        for (id, r) in pairs {
            let expected: Vec<u64> = log
                .iter()
                .enumerate()
                .flat_map(|(c, offers)| {
                    offers
                        .iter()
                        .filter(|(i, to)| *i == id && to.contains(&r))
                        .map(move |_| c as u64 + 1)
                })
                .collect();
            let story = transcript.delivery_of(&id, &r);
            let told: Vec<u64> = story
                .map(|d| d.attempts.iter().map(|a| a.conn).collect())
                .unwrap_or_default();
            let why = format!(
                "the story of <{id}> to <{r}> should be on connections {expected:?}:\n{text}"
            );
            let marked = |a: &TranscriptAttempt| !a.also_possible.is_empty();
            if !story.is_some_and(|d| d.attempts.iter().any(marked)) {
                assert_eq!(told, expected, "{why}");
                continue;
            }
            for a in story.into_iter().flat_map(|d| &d.attempts) {
                assert!(marked(a) || expected.contains(&a.conn), "{why}");
            }
            let marked_elsewhere = |conn: u64| {
                transcript
                    .deliveries_to(SENDER, &r)
                    .iter()
                    .any(|d| d.attempts.iter().any(|a| a.conn == conn && marked(a)))
            };
            for conn in &expected {
                assert!(told.contains(conn) || marked_elsewhere(*conn), "{why}");
            }
        }
    }
}

/// What became of one transaction, as `mxfarm::testing::Transaction` tells it.
#[derive(Debug)]
struct Sent {
    mail: Option<Reply>,
    rcpt: Vec<Option<Reply>>,
    data: Option<Reply>,
    end_of_data: Option<Reply>,
    /// A command went unanswered because the connection ended.
    lost: bool,
}

impl Sent {
    fn lost(mut self) -> Sent {
        self.lost = true;
        self
    }

    /// Whether the final dot got a 250.
    fn delivered(&self) -> bool {
        self.end_of_data.as_ref().is_some_and(|r| r.code == 250)
    }

    /// Whether the connection ended in the transaction: a lost reply or a 421.
    fn closed(&self) -> bool {
        let replies = [&self.mail, &self.data, &self.end_of_data];
        self.lost
            || replies
                .into_iter()
                .chain(&self.rcpt)
                .flatten()
                .any(|r| r.code == 421)
    }
}

/// A connection past EHLO, and its number.
struct Session {
    smtp: SmtpClient,
    conn: usize,
}

/// A rustls client that trusts only the farm's CA.
fn connector(farm: &Farm) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca =
        rustls::pki_types::CertificateDer::from_pem_slice(farm.ca_certificate_pem().as_bytes())
            .expect("the farm's CA in PEM");
    roots.add(ca).expect("a CA certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Whether the transaction handed the message over to recipient `i`.
fn accepted(sent: &Sent, i: usize) -> bool {
    sent.delivered() && sent.rcpt[i].as_ref().is_some_and(Reply::is_positive)
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

/// The one delivery of SENDER's messages to `to`.
fn only<'r>(report: &'r Report, to: &str) -> &'r DeliveryReport {
    let all = report.deliveries_to(SENDER, to);
    assert_eq!(all.len(), 1, "one delivery to {to}:\n{}", report.render());
    all[0]
}

/// The severity of `check` in a delivery; `None` if it did not apply.
fn severity(delivery: &DeliveryReport, check: Check) -> Option<Severity> {
    delivery.finding(check).map(|f| f.severity)
}

/// How many tries the delivery's interval statistics count; `None` without them.
fn tries(delivery: &DeliveryReport) -> Option<usize> {
    delivery.intervals.as_ref().map(|i| i.tries)
}

// ---- 1. Several messages with the same envelope

const GONE_RULE: &str = r#"
name = "gone"
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
"#;

/// Two messages (two Message-IDs) to alice and gone, ten minutes apart: each is refused
/// for gone once. Two messages, two deliveries to gone, no retry after a 5xx.
#[tokio::test(start_paused = true)]
async fn two_messages_refused_for_the_same_recipient_are_not_a_retry() {
    let farm = inline("gone", GONE_RULE).await;
    let sender = Sender::new(&farm);
    for id in ["merged.a@example.test", "merged.b@example.test"] {
        let sent = sender.deliver("mx1", &[ALICE, GONE], id).await;
        let sent = sent.expect("a session");
        assert!(accepted(&sent, 0) && !accepted(&sent, 1), "{sent:?}");
        tokio::time::sleep(10 * MINUTE).await;
    }
    let report = snapshot(&farm, "two_messages_refused", Granularity::Seconds);
    sender.check_stories();
    let gone = report.deliveries_to(SENDER, GONE);
    assert_eq!(gone.len(), 2, "{}", report.render());
    for d in gone {
        assert_eq!(d.attempts, 1);
        assert_eq!(severity(d, Check::RetryAfter5xx), Some(Severity::Ok));
    }
    for d in report.deliveries_to(SENDER, ALICE) {
        assert_eq!(severity(d, Check::Duplicate), Some(Severity::Ok));
    }
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same message (one Message-ID) sent again after its 550 for gone: alice's copy
/// was accepted both times, so the content ties the second attempt to the first.
#[tokio::test(start_paused = true)]
async fn one_message_resent_after_its_550_is_a_retry_after_a_5xx() {
    let farm = inline("gone", GONE_RULE).await;
    let sender = Sender::new(&farm);
    for _ in 0..2 {
        let sent = sender
            .deliver("mx1", &[ALICE, GONE], "resent.1@example.test")
            .await;
        assert!(sent.is_some_and(|s| accepted(&s, 0)));
        tokio::time::sleep(10 * MINUTE).await;
    }
    let report = snapshot(&farm, "one_message_resent_after_550", Granularity::Seconds);
    sender.check_stories();
    let gone = only(&report, GONE);
    assert_eq!(gone.attempts, 2);
    assert_eq!(
        severity(gone, Check::RetryAfter5xx),
        Some(Severity::Problem)
    );
    assert_eq!(
        severity(only(&report, ALICE), Check::Duplicate),
        Some(Severity::Problem)
    );
    farm.shutdown().await;
}

/// MAIL with a declared size, then RCPT to gone only: refused before the content, so
/// only the envelope and the size tell the message apart.
async fn refused_before_content(farm: &Farm, size: Option<u64>) {
    let sender = Sender::new(farm);
    let mut session = sender.open("mx1", "", &[GONE]).await.expect("a session");
    let smtp = &mut session.smtp;
    let size = size.map_or(String::new(), |s| format!(" SIZE={s}"));
    smtp.send(format!("MAIL FROM:<{SENDER}>{size}\r\n")).await;
    smtp.expect_code(250).await;
    smtp.send(format!("RCPT TO:<{GONE}>\r\n")).await;
    smtp.expect_code(550).await;
    smtp.quit().await;
}

/// Two messages to gone alone, refused at RCPT before their content: told apart by the
/// sizes their MAIL commands declare, they are two deliveries without a retry.
#[tokio::test(start_paused = true)]
async fn two_messages_refused_before_their_content_are_told_apart_by_size() {
    let farm = inline("gone", GONE_RULE).await;
    refused_before_content(&farm, Some(1200)).await;
    tokio::time::sleep(10 * MINUTE).await;
    refused_before_content(&farm, Some(3400)).await;
    let report = snapshot(&farm, "refused_before_content_sizes", Granularity::Seconds);
    let gone = report.deliveries_to(SENDER, GONE);
    assert_eq!(gone.len(), 2, "{}", report.render());
    for d in gone {
        assert_eq!(severity(d, Check::RetryAfter5xx), Some(Severity::Ok));
    }
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same without SIZE=: nothing tells the two apart, so the story is one message by
/// envelope (and says they may be several), and a retry after the 5xx is only noted.
#[tokio::test(start_paused = true)]
async fn two_envelopes_alike_refused_before_their_content_are_only_noted() {
    let farm = inline("gone", GONE_RULE).await;
    refused_before_content(&farm, None).await;
    tokio::time::sleep(10 * MINUTE).await;
    refused_before_content(&farm, None).await;
    let report = snapshot(&farm, "refused_before_content_alike", Granularity::Seconds);
    let gone = only(&report, GONE);
    assert_eq!(gone.attempts, 2);
    assert_eq!(severity(gone, Check::RetryAfter5xx), Some(Severity::Info));
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

const GREYLIST: &str = r#"
name = "greylist"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { greylist = { delay = "5m", reply = "451 4.7.1 Greylisted, please come back in {remaining} seconds" } }
"#;

/// Message `id` to alice: a try on a new connection, and after each deferral a wait of
/// `waits` in turn; returns whether it was delivered.
async fn retrying(sender: &Sender<'_>, id: &str, waits: Vec<Duration>) -> bool {
    for wait in std::iter::once(Duration::ZERO).chain(waits) {
        tokio::time::sleep(wait).await;
        let sent = sender.deliver("mx1", &[ALICE], id).await;
        if sent.is_some_and(|s| s.delivered()) {
            return true;
        }
    }
    false
}

/// Two messages to alice at once, each greylisted once (the second deferral keeps the
/// triplet's first-seen time) and each retried after 6 minutes: nothing was early. The
/// attempts at the start cannot be told apart (the same envelope, no content yet): each
/// message gets one of them, and the stories say it may have been the other's.
#[tokio::test(start_paused = true)]
async fn two_messages_greylisted_in_parallel_wait_it_out() {
    let farm = inline("greylist", GREYLIST).await;
    let sender = Sender::new(&farm);
    let (a, b) = tokio::join!(
        retrying(&sender, "parallel.a@example.test", vec![6 * MINUTE]),
        retrying(&sender, "parallel.b@example.test", vec![6 * MINUTE]),
    );
    assert!(a && b);
    let report = snapshot(&farm, "greylisted_in_parallel", Granularity::Seconds);
    sender.check_stories();
    let alice = report.deliveries_to(SENDER, ALICE);
    assert_eq!(alice.len(), 2, "{}", report.render());
    for d in alice {
        assert_eq!(d.attempts, 2, "{}", report.render());
        assert_eq!(severity(d, Check::EarlyRetry), Some(Severity::Ok));
        assert_eq!(severity(d, Check::Duplicate), Some(Severity::Ok));
    }
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same two messages, but the first is retried after one minute, which the reply
/// said was too early: that retry is deferred again and wasted. Which of the two it was
/// for, nothing in the journal tells, so the finding is noted, not a problem.
#[tokio::test(start_paused = true)]
async fn one_of_two_parallel_messages_retried_too_early() {
    let farm = inline("greylist", GREYLIST).await;
    let sender = Sender::new(&farm);
    let (a, b) = tokio::join!(
        retrying(&sender, "early.a@example.test", vec![MINUTE, 5 * MINUTE]),
        retrying(&sender, "early.b@example.test", vec![6 * MINUTE]),
    );
    assert!(a && b);
    let report = snapshot(&farm, "one_parallel_retried_early", Granularity::Seconds);
    sender.check_stories();
    let (early, patient) = three_and_two(&report);
    let finding = early
        .finding(Check::EarlyRetry)
        .expect("an early-retry finding");
    assert_eq!(finding.severity, Severity::Info);
    assert!(finding.text.contains("not certain"), "{}", finding.text);
    assert_eq!(severity(patient, Check::EarlyRetry), Some(Severity::Ok));
    farm.shutdown().await;
}

/// Of two deliveries to alice, the one with three attempts and the one with two.
fn three_and_two(report: &Report) -> (&DeliveryReport, &DeliveryReport) {
    let alice = report.deliveries_to(SENDER, ALICE);
    let with = |n: usize| {
        let found: Vec<&DeliveryReport> =
            alice.iter().copied().filter(|d| d.attempts == n).collect();
        assert_eq!(found.len(), 1, "{}", report.render());
        found[0]
    };
    (with(3), with(2))
}

/// With `SIZE=` on MAIL (the Message-IDs are of different lengths, so the messages
/// are), each attempt is tied to its own message for certain: two true stories, no
/// early retry.
#[tokio::test(start_paused = true)]
async fn two_sized_messages_greylisted_in_parallel_wait_it_out() {
    let farm = inline("greylist", GREYLIST).await;
    let sender = Sender::declaring_size(&farm);
    let (a, b) = tokio::join!(
        retrying(&sender, "sized.a@example.test", vec![6 * MINUTE]),
        retrying(&sender, "sized.bb@example.test", vec![6 * MINUTE]),
    );
    assert!(a && b);
    let report = snapshot(&farm, "sized_greylisted_in_parallel", Granularity::Seconds);
    sender.check_stories();
    let transcript = farm.transcript();
    for d in &transcript.deliveries {
        assert!(d.attempts.iter().all(|a| a.also_possible.is_empty()));
    }
    for d in report.deliveries_to(SENDER, ALICE) {
        assert_eq!(d.attempts, 2, "{}", report.render());
        assert_eq!(severity(d, Check::EarlyRetry), Some(Severity::Ok));
    }
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same with the first retried after a minute: now certainly that message's
/// wasted retry, against a reply that said how long to wait.
#[tokio::test(start_paused = true)]
async fn one_of_two_sized_parallel_messages_retried_too_early() {
    let farm = inline("greylist", GREYLIST).await;
    let sender = Sender::declaring_size(&farm);
    let (a, b) = tokio::join!(
        retrying(&sender, "sized.a@example.test", vec![MINUTE, 5 * MINUTE]),
        retrying(&sender, "sized.bb@example.test", vec![6 * MINUTE]),
    );
    assert!(a && b);
    let report = snapshot(&farm, "sized_parallel_retried_early", Granularity::Seconds);
    sender.check_stories();
    let (early, patient) = three_and_two(&report);
    assert_eq!(severity(early, Check::EarlyRetry), Some(Severity::Problem));
    assert_eq!(severity(patient, Check::EarlyRetry), Some(Severity::Ok));
    farm.shutdown().await;
}

// ---- 2. Contacts that end before any RCPT

/// How the primary fails during the first hour.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A 421 greeting.
    Greeting,
    /// A reset at connect.
    Reset,
    /// STARTTLS answered 220, then a handshake_failure alert.
    Tls,
    /// A 421 to MAIL.
    Mail,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Greeting, Fault::Reset, Fault::Tls, Fault::Mail];

    fn name(self) -> &'static str {
        match self {
            Fault::Greeting => "greeting_421",
            Fault::Reset => "reset_at_connect",
            Fault::Tls => "tls_alert",
            Fault::Mail => "mail_421",
        }
    }

    /// Where the attempt on the failing primary ends.
    fn stage(self) -> Stage {
        match self {
            Fault::Greeting | Fault::Reset => Stage::Connect,
            Fault::Tls => Stage::Starttls,
            Fault::Mail => Stage::Mail,
        }
    }

    /// mx1 (10) fails this way for the first hour; mx2 (20) accepts everything.
    fn scenario(self) -> String {
        let (tls, stage, then) = match self {
            Fault::Greeting => (
                "",
                "connect",
                r#"{ reply = "421 4.3.2 Service not available, try again later" }"#,
            ),
            Fault::Reset => ("", "connect", "{ reset = true }"),
            Fault::Tls => ("tls = \"valid\"", "starttls", r#"{ tls-fault = "alert" }"#),
            Fault::Mail => (
                "",
                "mail",
                r#"{ reply = "421 4.7.0 Try again later, closing connection" }"#,
            ),
        };
        format!(
            r#"
name = "pre-rcpt"
[[domain]]
name = "farm.test"
mx = [{{ host = "mx1", preference = 10 }}, {{ host = "mx2", preference = 20 }}]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
{tls}
[[host.rule]]
stage = "{stage}"
when = {{ time = "<1h" }}
then = {then}

[[host]]
name = "mx2"
listen = "127.0.0.1:0"
"#
        )
    }
}

/// The primary fails before any RCPT; the sender moves on to the secondary at once, which
/// takes the message. The failure is the first attempt of the delivery, and mx-failover
/// passes.
#[tokio::test(start_paused = true)]
async fn a_contact_failed_before_rcpt_moves_the_sender_to_the_secondary() {
    for fault in Fault::ALL {
        let farm = inline("pre-rcpt", &fault.scenario()).await;
        let sender = Sender::new(&farm);
        let id = format!("{}.moves@example.test", fault.name());
        let first = sender.deliver("mx1", &[ALICE], &id).await;
        assert!(!first.is_some_and(|s| s.delivered()), "{fault:?}");
        let second = sender.deliver("mx2", &[ALICE], &id).await;
        assert!(second.is_some_and(|s| s.delivered()), "{fault:?}");
        let report = snapshot(
            &farm,
            &format!("{}_moves_on", fault.name()),
            Granularity::Seconds,
        );
        sender.check_stories();
        let alice = only(&report, ALICE);
        assert_eq!(alice.attempts, 2, "{fault:?}");
        let transcript = farm.transcript();
        let story = transcript.delivery(SENDER, ALICE).expect("a story");
        assert_eq!(story.attempts[0].stage, fault.stage(), "{fault:?}");
        assert!(report.clients.is_empty(), "{fault:?}: {}", report.render());
        assert_eq!(
            severity(alice, Check::MxFailover),
            Some(Severity::Ok),
            "{fault:?}"
        );
        assert_eq!(
            severity(alice, Check::MxPreference),
            Some(Severity::Ok),
            "{fault:?}"
        );
        assert!(report.problems().is_empty(), "{}", report.render());
        farm.shutdown().await;
    }
}

/// The same failures, but the sender only ever retries the primary, every 15 minutes,
/// until it takes the message after the hour: five attempts, and mx-failover fires.
#[tokio::test(start_paused = true)]
async fn a_contact_failed_before_rcpt_retried_on_the_same_host_only() {
    for fault in Fault::ALL {
        let farm = inline("pre-rcpt", &fault.scenario()).await;
        let sender = Sender::new(&farm);
        let id = format!("{}.stays@example.test", fault.name());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = sender.deliver("mx1", &[ALICE], &id).await;
            if sent.is_some_and(|s| s.delivered()) {
                break;
            }
            tokio::time::sleep(15 * MINUTE).await;
        }
        assert_eq!(attempts, 5, "{fault:?}");
        let report = snapshot(
            &farm,
            &format!("{}_stays", fault.name()),
            Granularity::Seconds,
        );
        sender.check_stories();
        let alice = only(&report, ALICE);
        assert_eq!(alice.attempts, 5, "{fault:?}");
        assert_eq!(tries(alice), Some(5), "{fault:?}");
        assert!(report.clients.is_empty(), "{fault:?}: {}", report.render());
        assert_eq!(
            severity(alice, Check::MxFailover),
            Some(Severity::Problem),
            "{fault:?}"
        );
        farm.shutdown().await;
    }
}

const RESET_PRIMARY: &str = r#"
name = "reset-primary"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }, { host = "mx2", preference = 20 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { connection = "1" }
then = { reset = true }

[[host]]
name = "mx2"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "alice@farm.test", attempt = "1", per = "recipient" }
then = { reply = "451 4.3.0 Temporary local problem" }
"#;

/// The farm resets the sender's first connection to the primary; it moves to the
/// secondary, which defers alice. For a while it skips the primary, as MTAs cache a host
/// found down: bob's message a minute later and alice's retry go straight to the
/// secondary. Neither mx-preference nor mx-failover blames it.
#[tokio::test(start_paused = true)]
async fn a_sender_that_skips_a_host_the_farm_just_reset() {
    let farm = inline("reset-primary", RESET_PRIMARY).await;
    let sender = Sender::new(&farm);
    let a = "skips.a@example.test";
    assert!(sender.deliver("mx1", &[ALICE], a).await.is_none());
    let first = sender.deliver("mx2", &[ALICE], a).await;
    assert!(first.is_some_and(|s| !s.delivered()));
    tokio::time::sleep(MINUTE).await;
    let bob = sender.deliver("mx2", &[BOB], "skips.b@example.test").await;
    assert!(bob.is_some_and(|s| s.delivered()));
    tokio::time::sleep(4 * MINUTE).await;
    let retry = sender.deliver("mx2", &[ALICE], a).await;
    assert!(retry.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "skips_a_reset_host", Granularity::Seconds);
    sender.check_stories();
    let alice = only(&report, ALICE);
    assert_eq!(alice.attempts, 3);
    assert_eq!(tries(alice), Some(2));
    assert_eq!(severity(alice, Check::MxFailover), Some(Severity::Ok));
    assert_eq!(severity(alice, Check::MxPreference), Some(Severity::Ok));
    let bob = only(&report, BOB);
    assert_eq!(severity(bob, Check::MxFailover), None);
    assert_eq!(severity(bob, Check::MxPreference), Some(Severity::Ok));
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same, but once the primary has taken bob's message, the sender still skips it
/// for carol's: that is out of preference order.
#[tokio::test(start_paused = true)]
async fn a_sender_that_skips_a_host_that_worked_last() {
    let farm = inline("reset-primary", RESET_PRIMARY).await;
    let sender = Sender::new(&farm);
    let a = "skips.a@example.test";
    assert!(sender.deliver("mx1", &[ALICE], a).await.is_none());
    assert!(sender.deliver("mx2", &[ALICE], a).await.is_some());
    tokio::time::sleep(MINUTE).await;
    let bob = sender.deliver("mx1", &[BOB], "skips.b@example.test").await;
    assert!(bob.is_some_and(|s| s.delivered()));
    tokio::time::sleep(MINUTE).await;
    let carol = sender
        .deliver("mx2", &[CAROL], "skips.c@example.test")
        .await;
    assert!(carol.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "skips_a_working_host", Granularity::Seconds);
    sender.check_stories();
    assert_eq!(
        severity(only(&report, CAROL), Check::MxPreference),
        Some(Severity::Info)
    );
    assert_eq!(
        severity(only(&report, BOB), Check::MxPreference),
        Some(Severity::Ok)
    );
    farm.shutdown().await;
}

// ---- 3. A reply lost in a tarpit

const LOST_IN_TARPIT: &str = r#"
name = "lost-in-tarpit"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "end-of-data"
when = { connection = "1" }
then = { delay = "15m", lose-reply = true }
"#;

const TARPIT: &str = r#"
name = "tarpit"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "end-of-data"
when = { connection = "1" }
then = { delay = "5m" }
"#;

impl Sender<'_> {
    /// Message `id` to `to` on a new connection to `host`, waiting at most `patience` for
    /// the transaction; a sender out of patience closes the connection (the stream is
    /// dropped). `None` when it gave up or the contact ended before MAIL.
    async fn deliver_within(
        &self,
        patience: Duration,
        host: &str,
        to: &[&str],
        id: &str,
    ) -> Option<Sent> {
        let mut session = self.open(host, id, to).await.ok()?;
        let sent = tokio::select! {
            sent = self.send(&mut session, to, id) => sent,
            () = tokio::time::sleep(patience) => return None,
        };
        if !sent.closed() {
            session.smtp.quit().await;
        }
        Some(sent)
    }
}

/// The farm sits on the final dot for 15 minutes, then would drop the connection; the
/// sender gives up after 10 (RFC 5321's timeout for the dot) and sends the message
/// again 5 minutes later. The farm kept the first copy, but the sender never heard: the
/// second copy is right.
#[tokio::test(start_paused = true)]
async fn a_sender_that_gives_up_in_a_tarpit_and_resends_is_right() {
    let farm = inline("lost-in-tarpit", LOST_IN_TARPIT).await;
    let sender = Sender::new(&farm);
    let id = "tarpit.lost@example.test";
    assert!(
        sender
            .deliver_within(10 * MINUTE, "mx1", &[ALICE], id)
            .await
            .is_none()
    );
    tokio::time::sleep(5 * MINUTE).await;
    let again = sender
        .deliver_within(10 * MINUTE, "mx1", &[ALICE], id)
        .await;
    assert!(again.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "gives_up_in_tarpit", Granularity::Seconds);
    sender.check_stories();
    assert_eq!(farm.messages().len(), 2);
    let alice = only(&report, ALICE);
    assert_eq!(alice.attempts, 2);
    let duplicate = alice
        .finding(Check::Duplicate)
        .expect("a duplicate finding");
    assert_eq!(duplicate.severity, Severity::Info);
    assert!(matches!(
        duplicate.kind,
        FindingKind::Duplicate {
            times: 2,
            cause: DuplicateCause::LostReply,
            ..
        }
    ));
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same tarpit, but after the resent copy got its 250 the sender sends the message
/// a third time: that copy is a duplicate it should not have sent.
#[tokio::test(start_paused = true)]
async fn a_copy_resent_after_its_250_following_a_lost_reply() {
    let farm = inline("lost-in-tarpit", LOST_IN_TARPIT).await;
    let sender = Sender::new(&farm);
    let id = "tarpit.twice@example.test";
    assert!(
        sender
            .deliver_within(10 * MINUTE, "mx1", &[ALICE], id)
            .await
            .is_none()
    );
    for _ in 0..2 {
        tokio::time::sleep(5 * MINUTE).await;
        let sent = sender
            .deliver_within(10 * MINUTE, "mx1", &[ALICE], id)
            .await;
        assert!(sent.is_some_and(|s| s.delivered()));
    }
    let report = snapshot(&farm, "resent_after_250_after_lost", Granularity::Seconds);
    sender.check_stories();
    let alice = only(&report, ALICE);
    assert_eq!(alice.attempts, 3);
    let duplicate = alice
        .finding(Check::Duplicate)
        .expect("a duplicate finding");
    assert_eq!(duplicate.severity, Severity::Problem);
    assert_eq!(duplicate.attempts, vec![2, 3]);
    assert!(matches!(
        duplicate.kind,
        FindingKind::Duplicate {
            times: 3,
            cause: DuplicateCause::Resent,
            ..
        }
    ));
    farm.shutdown().await;
}

/// A 5-minute tarpit the sender waits out: it gets its 250, and resends anyway.
#[tokio::test(start_paused = true)]
async fn a_copy_resent_after_its_250_at_the_end_of_a_tarpit() {
    let farm = inline("tarpit", TARPIT).await;
    let sender = Sender::new(&farm);
    let id = "tarpit.waited@example.test";
    for _ in 0..2 {
        let sent = sender
            .deliver_within(10 * MINUTE, "mx1", &[ALICE], id)
            .await;
        assert!(sent.is_some_and(|s| s.delivered()));
        tokio::time::sleep(5 * MINUTE).await;
    }
    let report = snapshot(&farm, "resent_after_tarpit_250", Granularity::Seconds);
    sender.check_stories();
    let alice = only(&report, ALICE);
    assert_eq!(alice.attempts, 2);
    assert_eq!(
        severity(alice, Check::Duplicate),
        Some(Severity::Problem),
        "{}",
        report.render()
    );
    farm.shutdown().await;
}

// ---- 4. Fast and slow backoffs

/// Both MX hosts defer alice's first 24 RCPTs (12 tries over both hosts), then take the
/// message; they always defer never@.
const BACKOFF: &str = r#"
name = "backoff"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }, { host = "mx2", preference = 20 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
rulesets = ["deferring"]

[[host]]
name = "mx2"
listen = "127.0.0.1:0"
rulesets = ["deferring"]

[[ruleset]]
name = "deferring"
[[ruleset.rule]]
stage = "rcpt"
when = { rcpt = "alice@farm.test", attempt = "<25", per = "recipient" }
then = { reply = "451 4.3.0 Temporary local problem" }
[[ruleset.rule]]
stage = "end-of-data"
when = { rcpt = "never@farm.test" }
then = { reply = "451 4.3.0 Temporary local problem" }
[[ruleset.rule]]
stage = "rcpt"
when = { rcpt = "unseen@farm.test" }
then = { reply = "451 4.3.0 Temporary local problem" }
"#;

impl Sender<'_> {
    /// Tries of message `id` to `to`: each walks mx1 then mx2 until one takes it; after
    /// each failed try it waits the next of `gaps`. Returns how many tries it made.
    async fn walking(&self, to: &str, id: &str, gaps: &[Duration]) -> usize {
        let mut made = 0;
        for gap in std::iter::once(&Duration::ZERO).chain(gaps) {
            tokio::time::sleep(*gap).await;
            made += 1;
            for host in ["mx1", "mx2"] {
                let sent = self.deliver(host, &[to], id).await;
                if sent.is_some_and(|s| s.delivered()) {
                    return made;
                }
            }
        }
        made
    }
}

/// Gaps that double every second retry: 1, 1, 2, 2, 4, 4, ... 32, 32 times `unit`.
fn doubling(unit: Duration) -> Vec<Duration> {
    (0..12).map(|k| unit * (1 << (k / 2))).collect()
}

/// CI-style: retries after 10 s, 10 s, 20 s, 20 s ... 320 s: 13 tries within 21 minutes,
/// more than the hammering limit, but the intervals grow: a short backoff.
#[tokio::test(start_paused = true)]
async fn a_fast_backoff_in_seconds() {
    let farm = inline("backoff", BACKOFF).await;
    let sender = Sender::new(&farm);
    let made = sender
        .walking(ALICE, "fast.1@example.test", &doubling(10 * SECOND))
        .await;
    assert_eq!(made, 13);
    let report = snapshot(&farm, "fast_backoff", Granularity::Seconds);
    sender.check_stories();
    let alice = only(&report, ALICE);
    assert_eq!(alice.attempts, 25);
    assert_eq!(tries(alice), Some(13));
    let stats = alice.intervals.as_ref().expect("interval stats");
    assert_eq!((stats.min, stats.max), (10 * SECOND, 320 * SECOND));
    assert_eq!(stats.max_per_hour, 13);
    assert_eq!(severity(alice, Check::Backoff), Some(Severity::Ok));
    assert_eq!(severity(alice, Check::Hammering), Some(Severity::Info));
    assert_eq!(severity(alice, Check::RetryInterval), Some(Severity::Info));
    assert_eq!(severity(alice, Check::MxPreference), Some(Severity::Ok));
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// The same pattern in hours: 1 h, 1 h, 2 h ... 32 h.
#[tokio::test(start_paused = true)]
async fn the_same_backoff_in_hours() {
    let farm = inline("backoff", BACKOFF).await;
    let sender = Sender::new(&farm);
    let made = sender
        .walking(ALICE, "slow.1@example.test", &doubling(HOUR))
        .await;
    assert_eq!(made, 13);
    let report = snapshot(&farm, "slow_backoff", Granularity::Minutes);
    sender.check_stories();
    let alice = only(&report, ALICE);
    assert_eq!(alice.attempts, 25);
    assert_eq!(tries(alice), Some(13));
    let stats = alice.intervals.as_ref().expect("interval stats");
    assert_eq!((stats.min, stats.max), (HOUR, 32 * HOUR));
    assert_eq!(stats.max_per_hour, 1);
    assert_eq!(severity(alice, Check::Backoff), Some(Severity::Ok));
    assert_eq!(severity(alice, Check::Hammering), Some(Severity::Ok));
    assert_eq!(severity(alice, Check::RetryInterval), Some(Severity::Ok));
    assert_eq!(severity(alice, Check::MxPreference), Some(Severity::Ok));
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// Every 30 s without growing, 30 tries, then silence: hammering. The content is sent
/// each time (and deferred at its end), so every attempt is certainly the one message.
#[tokio::test(start_paused = true)]
async fn a_sender_retrying_every_30_seconds_hammers() {
    let farm = inline("backoff", BACKOFF).await;
    let sender = Sender::declaring_size(&farm);
    let made = sender
        .walking(
            "never@farm.test",
            "hammer.1@example.test",
            &[30 * SECOND; 29],
        )
        .await;
    assert_eq!(made, 30);
    tokio::time::sleep(2 * HOUR).await;
    let report = snapshot(&farm, "hammers_every_30s", Granularity::Seconds);
    sender.check_stories();
    let never = only(&report, "never@farm.test");
    assert_eq!(never.attempts, 60);
    assert_eq!(tries(never), Some(30));
    assert_eq!(severity(never, Check::Hammering), Some(Severity::Problem));
    assert_eq!(severity(never, Check::Backoff), Some(Severity::Info));
    assert_eq!(severity(never, Check::GiveUp), Some(Severity::Info));
    farm.shutdown().await;
}

/// The same refused at RCPT, so that no content is ever sent: thirty content-less
/// attempts with one envelope may be thirty messages tried once each (even with equal
/// `SIZE=`), so the hammering is information, not a problem.
#[tokio::test(start_paused = true)]
async fn the_same_without_content_may_be_many_messages() {
    let farm = inline("backoff", BACKOFF).await;
    let sender = Sender::declaring_size(&farm);
    sender
        .walking(
            "unseen@farm.test",
            "hammer.1@example.test",
            &[30 * SECOND; 29],
        )
        .await;
    tokio::time::sleep(2 * HOUR).await;
    let report = farm.report();
    let unseen = only(&report, "unseen@farm.test");
    let hammering = unseen.finding(Check::Hammering).expect("hammering applies");
    assert_eq!(hammering.severity, Severity::Info, "{}", report.render());
    assert!(
        hammering.text.contains("may be several messages"),
        "{}",
        hammering.text
    );
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

// ---- 5. Connections that carry several transactions

const FULL_CAROL: &str = r#"
name = "full-carol"
[[domain]]
name = "farm.test"
mx = [{ host = "mx1", preference = 10 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "carol@farm.test", first-attempt-within = "10m", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full, try again later" }
"#;

/// Postfix's connection cache: message A to alice and carol (452 for carol), then
/// message B to bob and dave on the same connection. Returns the session.
async fn two_messages_on_one_connection(sender: &Sender<'_>) -> Session {
    let mut session = sender
        .open("mx1", "cache.a@example.test", &[ALICE, CAROL])
        .await
        .expect("a session");
    let a = sender
        .send(&mut session, &[ALICE, CAROL], "cache.a@example.test")
        .await;
    assert!(accepted(&a, 0) && !accepted(&a, 1), "{a:?}");
    let b = sender
        .send(&mut session, &[BOB, DAVE], "cache.b@example.test")
        .await;
    assert!(accepted(&b, 0) && accepted(&b, 1), "{b:?}");
    session
}

/// Then, 15 minutes later, A again to carol alone: the evidence for recipient-retry is
/// alice, of A's own transaction, and never B's recipients.
#[tokio::test(start_paused = true)]
async fn two_messages_on_one_connection_and_only_the_deferred_recipient_retried() {
    let farm = inline("full-carol", FULL_CAROL).await;
    let sender = Sender::new(&farm);
    let mut session = two_messages_on_one_connection(&sender).await;
    session.smtp.quit().await;
    tokio::time::sleep(15 * MINUTE).await;
    let retry = sender
        .deliver("mx1", &[CAROL], "cache.a@example.test")
        .await;
    assert!(retry.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "cache_only_deferred_retried", Granularity::Seconds);
    sender.check_stories();
    let carol = only(&report, CAROL);
    let retry = carol
        .finding(Check::RecipientRetry)
        .expect("a recipient-retry finding");
    assert_eq!(retry.severity, Severity::Ok);
    assert!(retry.text.contains("<alice@farm.test>"), "{}", retry.text);
    for other in [BOB, DAVE] {
        assert!(!retry.text.contains(other), "{}", retry.text);
    }
    assert_eq!(severity(carol, Check::EarlyRetry), Some(Severity::Ok));
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// Then A again to alice and carol: alice gets A twice. The evidence names alice only.
#[tokio::test(start_paused = true)]
async fn two_messages_on_one_connection_and_the_whole_message_resent() {
    let farm = inline("full-carol", FULL_CAROL).await;
    let sender = Sender::new(&farm);
    let mut session = two_messages_on_one_connection(&sender).await;
    session.smtp.quit().await;
    tokio::time::sleep(15 * MINUTE).await;
    let retry = sender
        .deliver("mx1", &[ALICE, CAROL], "cache.a@example.test")
        .await;
    assert!(retry.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "cache_whole_message_resent", Granularity::Seconds);
    sender.check_stories();
    let carol = only(&report, CAROL);
    let retry = carol
        .finding(Check::RecipientRetry)
        .expect("a recipient-retry finding");
    assert_eq!(retry.severity, Severity::Problem);
    assert_eq!(
        retry.kind,
        FindingKind::RecipientRetry {
            whole_message: true,
            resent_to: vec![ALICE.to_string()],
        }
    );
    for other in [BOB, DAVE] {
        assert!(!retry.text.contains(other), "{}", retry.text);
    }
    let alice = report.deliveries_to(SENDER, ALICE);
    assert_eq!(alice.len(), 1, "{}", report.render());
    assert_eq!(
        severity(alice[0], Check::Duplicate),
        Some(Severity::Problem)
    );
    assert_eq!(
        severity(only(&report, BOB), Check::Duplicate),
        Some(Severity::Ok)
    );
    farm.shutdown().await;
}

/// Exim: after a 452 to RCPT it sends the deferred recipient in a second transaction on
/// the same connection, which is part of the same try (deferred again by the quota);
/// its retry on a new connection 15 minutes later, after the quota's end, delivers.
#[tokio::test(start_paused = true)]
async fn a_deferred_recipient_sent_again_on_the_same_connection_is_the_same_try() {
    let farm = inline("full-carol", FULL_CAROL).await;
    let sender = Sender::new(&farm);
    let id = "exim.1@example.test";
    let mut session = sender
        .open("mx1", id, &[ALICE, CAROL])
        .await
        .expect("a session");
    let first = sender.send(&mut session, &[ALICE, CAROL], id).await;
    assert!(accepted(&first, 0) && !accepted(&first, 1));
    let again = sender.send(&mut session, &[CAROL], id).await;
    assert!(!accepted(&again, 0));
    session.smtp.quit().await;
    tokio::time::sleep(15 * MINUTE).await;
    let retry = sender.deliver("mx1", &[CAROL], id).await;
    assert!(retry.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "exim_same_connection", Granularity::Seconds);
    sender.check_stories();
    let carol = only(&report, CAROL);
    assert_eq!(carol.attempts, 3);
    assert_eq!(tries(carol), Some(2), "{}", report.render());
    assert_eq!(severity(carol, Check::EarlyRetry), Some(Severity::Ok));
    assert_eq!(severity(carol, Check::RecipientRetry), Some(Severity::Ok));
    assert_eq!(
        severity(only(&report, ALICE), Check::Duplicate),
        Some(Severity::Ok)
    );
    assert!(report.problems().is_empty(), "{}", report.render());
    farm.shutdown().await;
}

/// Exim's second transaction on a new connection instead, at once: a retry in a try of
/// its own, before the quota's known end (which its reply did not tell), wasted.
#[tokio::test(start_paused = true)]
async fn a_deferred_recipient_sent_again_at_once_on_a_new_connection_is_an_early_retry() {
    let farm = inline("full-carol", FULL_CAROL).await;
    let sender = Sender::new(&farm);
    let id = "exim.2@example.test";
    let first = sender.deliver("mx1", &[ALICE, CAROL], id).await;
    assert!(first.is_some_and(|s| accepted(&s, 0) && !accepted(&s, 1)));
    let again = sender.deliver("mx1", &[CAROL], id).await;
    assert!(again.is_some_and(|s| !s.delivered()));
    tokio::time::sleep(15 * MINUTE).await;
    let retry = sender.deliver("mx1", &[CAROL], id).await;
    assert!(retry.is_some_and(|s| s.delivered()));
    let report = snapshot(&farm, "exim_new_connection", Granularity::Seconds);
    sender.check_stories();
    let carol = only(&report, CAROL);
    assert_eq!(carol.attempts, 3);
    assert_eq!(tries(carol), Some(3), "{}", report.render());
    assert_eq!(severity(carol, Check::EarlyRetry), Some(Severity::Info));
    farm.shutdown().await;
}
