//! Stateful provider behaviours over real TCP, with time moved by `Farm::advance`.

use std::time::Duration;

use mxfarm::{EventKind, Farm, Outcome};

use mxfarm::testing::SmtpClient;

use crate::support::{connection_closed, farm, greeted};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

/// Offers one recipient on a new connection and returns the RCPT reply (or the MAIL reply,
/// if MAIL was refused: then without a QUIT); delivers the message when it is accepted.
async fn offer(farm: &Farm, host: &str, from: &str, to: &str) -> String {
    let mut c = greeted(farm.addr(host)).await;
    c.ehlo("client.example.test").await;
    let sent = c
        .transaction(from, &[to], "Subject: test\r\n\r\nhello\r\n")
        .await;
    let mail = sent.mail.as_ref().expect("a reply to MAIL");
    if !mail.is_positive() {
        return mail.text();
    }
    let rcpt = sent.rcpt[0].as_ref().expect("a reply to RCPT");
    if rcpt.is_positive() {
        assert!(sent.delivered(), "{}", c.conversation());
    }
    c.quit().await;
    rcpt.text()
}

fn two_greylisting_hosts(state: &str) -> String {
    format!(
        r#"
name = "greylist"
[[domain]]
name = "grey.test"
mx = [{{ host = "mx1", preference = 10 }}, {{ host = "mx2", preference = 10 }}]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
rulesets = ["grey"]
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
rulesets = ["grey"]
[[ruleset]]
name = "grey"
[[ruleset.rule]]
stage = "rcpt"
then = {{ greylist = {{ state = "{state}", reply = "451 4.7.1 Greylisted, try again in {{remaining}} seconds" }} }}
"#
    )
}

#[tokio::test]
async fn shared_greylist_state_lets_a_retry_through_on_any_mx() {
    let farm = farm(&two_greylisting_hosts("shared")).await;
    let first = offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await;
    assert_eq!(first, "451 4.7.1 Greylisted, try again in 300 seconds");
    farm.advance(5 * MINUTE);
    let retry = offer(&farm, "mx2", "a@sender.test", "bob@grey.test").await;
    assert_eq!(retry, "250 2.1.5 Ok", "mx2 shares mx1's state");
    farm.shutdown().await;
}

#[tokio::test]
async fn per_host_greylist_state_depends_on_which_mx_the_sender_picks() {
    let farm = farm(&two_greylisting_hosts("host")).await;
    offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await;
    farm.advance(5 * MINUTE);
    let other_mx = offer(&farm, "mx2", "a@sender.test", "bob@grey.test").await;
    assert_eq!(
        other_mx, "451 4.7.1 Greylisted, try again in 300 seconds",
        "mx2 has never seen the triplet"
    );
    let same_mx = offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await;
    assert_eq!(same_mx, "250 2.1.5 Ok");
    farm.shutdown().await;
}

#[tokio::test]
async fn an_early_retry_is_deferred_and_keeps_its_first_seen_time() {
    let farm = farm(&two_greylisting_hosts("shared")).await;
    offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await;
    farm.advance(2 * MINUTE);
    let early = offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await;
    assert!(
        early.starts_with("451 4.7.1 Greylisted, try again in 1"),
        "{early}"
    );
    assert!(
        early.contains("in 1") && early.contains(" seconds"),
        "{early}"
    );
    farm.advance(3 * MINUTE);
    // 5 minutes after the first attempt, not after the early retry.
    let retry = offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await;
    assert_eq!(retry, "250 2.1.5 Ok");
    farm.shutdown().await;
}

#[tokio::test]
async fn postgrey_defaults_retry_window_expiry_and_sender_normalisation() {
    let farm = farm(
        r#"
name = "postgrey"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { greylist = {} }
"#,
    )
    .await;
    let postgrey = "450 4.2.0 <bob@grey.test>: Recipient address rejected: Greylisted, \
                    see http://postgrey.schweikert.ch/help/grey.test.html";
    assert_eq!(
        offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await,
        postgrey
    );
    // A first retry after the 2 day window starts over.
    farm.advance(2 * DAY + MINUTE);
    assert_eq!(
        offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await,
        postgrey
    );
    farm.advance(5 * MINUTE);
    // +extensions and VERP digits are normalised away: the same triplet.
    let normalised = offer(&farm, "mx1", "a+list123@sender.test", "bob@grey.test").await;
    assert_eq!(normalised, "250 2.1.5 Ok");
    // Not seen for more than 35 days: greylisted again.
    farm.advance(35 * DAY + MINUTE);
    assert_eq!(
        offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await,
        postgrey
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_client_that_passed_five_times_is_whitelisted() {
    let farm = farm(&two_greylisting_hosts("shared")).await;
    for i in 0..5 {
        let rcpt = format!("r{i}@grey.test");
        offer(&farm, "mx1", "a@sender.test", &rcpt).await;
        farm.advance(5 * MINUTE);
        assert_eq!(
            offer(&farm, "mx1", "a@sender.test", &rcpt).await,
            "250 2.1.5 Ok"
        );
        farm.advance(HOUR);
    }
    let new_triplet = offer(&farm, "mx1", "new@sender.test", "new@grey.test").await;
    assert_eq!(new_triplet, "250 2.1.5 Ok", "auto-whitelisted client");
    farm.shutdown().await;
}

/// A greylist holds at most `max-entries` triplets: a flood of other senders' triplets
/// makes it forget the one seen longest ago, and that sender's retry is greylisted again
/// as a new triplet, while the most recent triplets are kept and pass.
#[tokio::test]
async fn a_triplet_forgotten_to_a_flood_is_greylisted_again() {
    let farm = farm(
        r#"
name = "small-greylist"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { greylist = { max-entries = 5, reply = "451 4.7.1 Greylisted, try again in {remaining} seconds" } }
"#,
    )
    .await;
    let first = "451 4.7.1 Greylisted, try again in 300 seconds";
    assert_eq!(
        offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await,
        first
    );
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("flood.example.test").await;
    c.command("MAIL FROM:<flood@sender.test>").await;
    for i in 0..5 {
        let flood = c.command(&format!("RCPT TO:<r{i}@grey.test>")).await;
        assert_eq!(flood.text(), first, "r{i}");
    }
    c.quit().await;
    farm.advance(5 * MINUTE);
    assert_eq!(
        offer(&farm, "mx1", "a@sender.test", "bob@grey.test").await,
        first,
        "forgotten: a new triplet again"
    );
    assert_eq!(
        offer(&farm, "mx1", "flood@sender.test", "r4@grey.test").await,
        "250 2.1.5 Ok",
        "the most recent triplets are kept"
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn greylisting_at_end_of_data_catches_the_null_sender() {
    let farm = farm(
        r#"
name = "bounces"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "end-of-data"
when = { mail = "<>" }
then = { greylist = { reply = "451 4.7.1 Greylisting in action, please come back in {remaining-hms}" } }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    let bounce = c
        .transaction("", &["bob@grey.test"], "Subject: bounce\r\n\r\n")
        .await;
    assert_eq!(
        bounce.rcpt[0].as_ref().map(|r| r.text()).as_deref(),
        Some("250 2.1.5 Ok")
    );
    assert_eq!(
        bounce.end_of_data.map(|r| r.text()).as_deref(),
        Some("451 4.7.1 Greylisting in action, please come back in 00:05:00")
    );
    assert!(farm.messages().is_empty());
    farm.shutdown().await;
}

#[tokio::test]
async fn quota_deferrals_clear_by_attempts_by_time_or_never() {
    let farm = farm(
        r#"
name = "quota"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "counted@q.test", attempt = "<=2", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "timed@q.test", first-attempt-within = "2h", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "forever@q.test" }
then = { reply = "452 4.2.2 Mailbox full" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "permanent@q.test" }
then = { reply = "552 5.2.2 Mailbox full" }
"#,
    )
    .await;
    let full = "452 4.2.2 Mailbox full";
    let ok = "250 2.1.5 Ok";
    let s = "a@sender.test";
    assert_eq!(offer(&farm, "mx1", s, "counted@q.test").await, full);
    assert_eq!(offer(&farm, "mx1", s, "counted@q.test").await, full);
    assert_eq!(offer(&farm, "mx1", s, "counted@q.test").await, ok);

    assert_eq!(offer(&farm, "mx1", s, "timed@q.test").await, full);
    farm.advance(HOUR);
    assert_eq!(offer(&farm, "mx1", s, "timed@q.test").await, full);
    farm.advance(HOUR);
    assert_eq!(offer(&farm, "mx1", s, "timed@q.test").await, ok);

    farm.advance(30 * DAY);
    assert_eq!(offer(&farm, "mx1", s, "forever@q.test").await, full);
    assert_eq!(
        offer(&farm, "mx1", s, "permanent@q.test").await,
        "552 5.2.2 Mailbox full"
    );
    let outcomes: Vec<Outcome> = farm
        .deliveries()
        .iter()
        .find(|d| d.recipient.as_deref() == Some("permanent@q.test"))
        .unwrap()
        .attempts
        .iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, vec![Outcome::Rejected]);
    farm.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_defers_then_recovers_when_the_window_slides() {
    let farm = farm(
        r#"
name = "yahoo-ish"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "mail"
then = { rate-limit = { per = "client", limit = 2, window = "1h", reply = "421 4.7.0 [TSS04] Messages from {client} temporarily deferred due to unexpected volume or user complaints - 4.16.55.1" } }
"#,
    )
    .await;
    let ok = "250 2.1.5 Ok";
    assert_eq!(offer(&farm, "mx1", "a@s.test", "r1@y.test").await, ok);
    farm.advance(10 * MINUTE);
    assert_eq!(offer(&farm, "mx1", "a@s.test", "r2@y.test").await, ok);
    let third = offer(&farm, "mx1", "a@s.test", "r3@y.test").await;
    assert_eq!(
        third,
        "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected \
         volume or user complaints - 4.16.55.1"
    );
    // An hour after the first message, one slot is free again.
    farm.advance(50 * MINUTE);
    assert_eq!(offer(&farm, "mx1", "a@s.test", "r3@y.test").await, ok);
    assert!(
        offer(&farm, "mx1", "a@s.test", "r4@y.test")
            .await
            .starts_with("421")
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_concurrency_limit_refuses_the_extra_connection() {
    let farm = farm(
        r#"
name = "outlook-ish"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.outlook.test"
[[host.rule]]
stage = "connect"
then = { concurrency = { limit = 1 } }
"#,
    )
    .await;
    let mut first = greeted(farm.addr("mx1")).await;
    let mut second = SmtpClient::connect(farm.addr("mx1")).await;
    second
        .expect("421 4.7.0 mx1.outlook.test Error: too many connections from 127.0.0.1")
        .await;
    second.expect_closed().await;
    first.quit().await;
    connection_closed(&farm, 1).await;
    greeted(farm.addr("mx1")).await;
    farm.shutdown().await;
}

#[tokio::test]
async fn messages_per_connection_then_a_silent_close() {
    let farm = farm(
        r#"
name = "yahoo-cap"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "mail"
when = { message = ">2" }
then = { close = true }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    for i in 0..2 {
        let to = format!("r{i}@y.test");
        let sent = c
            .transaction("a@s.test", &[&to], "Subject: x\r\n\r\n")
            .await;
        assert!(sent.delivered(), "{}", c.conversation());
    }
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    // Closed without an error, as Yahoo does.
    c.expect_closed().await;
    assert_eq!(farm.messages().len(), 2);
    farm.shutdown().await;
}

#[tokio::test]
async fn reputation_lists_and_new_ip_warm_up() {
    let farm = farm(
        r#"
name = "reputation"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { client = ["192.0.2.0/24", "198.51.100.7"] }
then = { reply = "554 5.7.1 Service unavailable; client host blocked" }
[[host.rule]]
stage = "connect"
when = { first-attempt-within = "30m", per = "client" }
then = { reply = "421 4.7.0 New sender IP, try again later" }
"#,
    )
    .await;
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    c.expect("421 4.7.0 New sender IP, try again later").await;
    farm.advance(20 * MINUTE);
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    c.expect_code(421).await;
    farm.advance(10 * MINUTE);
    greeted(farm.addr("mx1")).await;
    farm.shutdown().await;
}

#[tokio::test]
async fn reverse_dns_and_helo_checks() {
    let scenario = |ptr: &str| {
        format!(
            r#"
name = "gmail-ptr"
{ptr}
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "ehlo"
when = {{ ptr = "missing" }}
then = {{ reply = "421 4.7.0 The IP address sending this message does not have a PTR record setup\nor the corresponding forward DNS entry does not point to the sending IP." }}
[[host.rule]]
stage = "ehlo"
when = {{ helo-fqdn = false }}
then = {{ reply = "504 5.5.2 <{{helo}}>: Helo command rejected: need fully-qualified hostname" }}
[[host.rule]]
stage = "ehlo"
when = {{ ptr = "mismatch" }}
then = {{ reply = "550 5.7.25 The HELO name does not match the PTR name" }}
"#
        )
    };
    let no_ptr = farm(&scenario("")).await;
    let mut c = greeted(no_ptr.addr("mx1")).await;
    c.send("EHLO mail.sender.test\r\n").await;
    c.expect(
        "421-4.7.0 The IP address sending this message does not have a PTR record setup\n\
         421 4.7.0 or the corresponding forward DNS entry does not point to the sending IP.",
    )
    .await;
    no_ptr.shutdown().await;

    let farm = farm(&scenario(
        "[reverse-dns]\n\"127.0.0.1\" = \"mail.sender.test\"",
    ))
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("EHLO localhost\r\n").await;
    c.expect("504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname")
        .await;
    c.send("EHLO other.sender.test\r\n").await;
    c.expect("550 5.7.25 The HELO name does not match the PTR name")
        .await;
    let ehlo = c.ehlo("mail.sender.test").await;
    assert!(ehlo.text().starts_with("250-"), "{ehlo}");
    farm.shutdown().await;
}

#[tokio::test]
async fn a_host_that_is_down_for_a_while_or_its_first_connections() {
    let farm = farm(
        r#"
name = "down"
[[host]]
name = "primary"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { time = "<10m" }
then = { reset = true }
[[host]]
name = "flaky"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { connection = "<=2" }
then = { close = true }
"#,
    )
    .await;
    use tokio::io::AsyncReadExt;
    let mut down = tokio::net::TcpStream::connect(farm.addr("primary"))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = down.read(&mut buf).await;
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    farm.advance(10 * MINUTE);
    greeted(farm.addr("primary")).await;

    for _ in 0..2 {
        let mut c = SmtpClient::connect(farm.addr("flaky")).await;
        c.expect_closed().await;
    }
    greeted(farm.addr("flaky")).await;
    farm.shutdown().await;
}

#[tokio::test]
async fn a_lost_reply_makes_a_correct_sender_deliver_twice() {
    let farm = farm(
        r#"
name = "lossy"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "end-of-data"
when = { attempt = "1", per = "client" }
then = { lose-reply = true }
"#,
    )
    .await;
    let message = "Subject: once\r\nMessage-ID: <once@sender.test>\r\n\r\nhi\r\n";
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    let lost = c
        .transaction("a@sender.test", &["bob@y.test"], message)
        .await;
    assert_eq!(
        lost.end_of_data, None,
        "no 250: the sender cannot know it arrived"
    );
    c.expect_closed().await;
    // The sender retries, as it must.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    let retry = c
        .transaction("a@sender.test", &["bob@y.test"], message)
        .await;
    assert!(retry.delivered(), "{}", c.conversation());

    let ids: Vec<Option<String>> = farm.messages().into_iter().map(|m| m.message_id).collect();
    assert_eq!(ids, vec![Some("once@sender.test".into()); 2]);
    let delivery = &farm.deliveries()[0];
    assert_eq!(delivery.times_delivered(), 2, "{delivery:?}");
    let closed = farm
        .journal()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::ConnectionClosed { .. }))
        .unwrap();
    match closed.kind {
        EventKind::ConnectionClosed { reason, .. } => {
            assert!(reason.contains("message kept"), "{reason}")
        }
        _ => unreachable!(),
    }
    farm.shutdown().await;
}
