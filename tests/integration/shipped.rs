//! The shipped scenarios, driven over real TCP as a sender would, with farm time moved by
//! `Farm::advance` instead of waiting. Each test snapshots the deliveries it caused.

use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::render::Granularity;
use mxfarm::testing::{GUARD, Reply, SmtpClient};
use mxfarm::{Farm, Scenario};
use tokio::net::TcpSocket;

use crate::support::{connection_closed, dot_arrived, greeted};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

/// What `deliver` returns when the message was accepted.
const DELIVERED: &str = "250 delivered";

async fn start(name: &str) -> Farm {
    Farm::start_ephemeral(Scenario::embedded(name).unwrap())
        .await
        .unwrap()
}

/// The message `deliver` sends to `to`, without its final dot: its Message-ID tells
/// retries of it apart from other messages.
fn message(to: &str) -> String {
    let local = to.split('@').next().unwrap();
    format!("Subject: to {to}\r\nMessage-ID: <{local}@example.test>\r\n\r\nhi\r\n")
}

/// One whole transaction from sender@example.test to one recipient on a new connection;
/// returns the refusal that ended it, or `DELIVERED`.
async fn deliver(farm: &Farm, host: &str, to: &str) -> String {
    deliver_as(farm, host, "sender@example.test", to).await
}

/// `deliver` from another sender: the farm's deliveries are per (sender, recipient).
async fn deliver_as(farm: &Farm, host: &str, from: &str, to: &str) -> String {
    let mut c = SmtpClient::connect(farm.addr(host)).await;
    let greeting = c.reply().await;
    if greeting.code != 220 {
        return greeting.text();
    }
    let ehlo = c.command("EHLO client.example.test").await;
    if ehlo.code != 250 {
        return ehlo.text();
    }
    let reply = transaction_as(&mut c, from, &[to]).await;
    if !reply.starts_with("421") {
        c.quit().await;
    }
    reply
}

/// `transaction_as` from sender@example.test, on an open connection.
async fn transaction(c: &mut SmtpClient, to: &[&str]) -> String {
    transaction_as(c, "sender@example.test", to).await
}

/// `SmtpClient::transaction` from another sender, as this file reads it: the refusal of
/// MAIL, DATA or the message, else the first refusal of a RCPT, else `DELIVERED`. When
/// every recipient was refused it sends RSET, so that the connection can carry another
/// message.
async fn transaction_as(c: &mut SmtpClient, from: &str, to: &[&str]) -> String {
    let sent = c.transaction(from, to, &message(to[0])).await;
    if sent.mail.as_ref().is_some_and(Reply::is_positive) && sent.data.is_none() && !sent.closed() {
        c.command("RSET").await;
    }
    let mut ending = [&sent.data, &sent.end_of_data].into_iter().flatten();
    match ending.find(|r| !r.is_positive()).or(sent.refusal()) {
        Some(refusal) => refusal.text(),
        None if sent.delivered() => DELIVERED.to_string(),
        None => panic!(
            "the connection closed in a transaction:\n{}",
            c.conversation()
        ),
    }
}

/// A client that connects from a loopback address of its choice (all of 127.0.0.0/8 is
/// loopback), for rules about the client's address. `SmtpClient::connect` always comes
/// from 127.0.0.1.
async fn connect_from(local: &str, addr: SocketAddr) -> SmtpClient {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(addr).await.expect("connect to the farm");
    SmtpClient::over(stream).with_guard(Some(GUARD))
}

#[tokio::test]
async fn aol_greylists_on_mx1_defers_new_ips_on_mx2_and_full_mailboxes_for_six_hours() {
    let farm = start("aol").await;
    let greylisted = "451 Message temporarily deferred - 4.16.50";
    let tss04 = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to \
                 unexpected volume or user complaints - 4.16.55.1; see \
                 https://postmaster.yahooinc.com/error-codes";
    let full = "452 4.2.2 This message could not be delivered because the recipient's \
                mailbox is full. Please try again later";
    // The first minutes: mx3 takes the mail, mx2 does not know this IP yet, mx1 greylists.
    assert_eq!(deliver(&farm, "mx3", "alice@aol.test").await, DELIVERED);
    assert_eq!(deliver(&farm, "mx2", "carol@aol.test").await, tss04);
    assert_eq!(deliver(&farm, "mx1", "bob@aol.test").await, greylisted);
    assert_eq!(deliver(&farm, "mx3", "full-bob@aol.test").await, full);
    assert_eq!(
        deliver(&farm, "mx3", "gone@aol.test").await,
        "550 5.1.1 <gone@aol.test>: This user doesn't have an aol.test account"
    );
    // Greylisting keeps the first attempt's time: too early at 4 minutes, through at 5.
    farm.advance(4 * MINUTE);
    assert_eq!(deliver(&farm, "mx1", "bob@aol.test").await, greylisted);
    farm.advance(MINUTE);
    assert_eq!(deliver(&farm, "mx1", "bob@aol.test").await, DELIVERED);
    // An hour after the IP first connected, mx2 takes mail from it; the mailbox is still full.
    farm.advance(55 * MINUTE);
    assert_eq!(deliver(&farm, "mx2", "carol@aol.test").await, DELIVERED);
    assert_eq!(deliver(&farm, "mx2", "full-bob@aol.test").await, full);
    // Six hours after the first try the mailbox has room: past Exchange's 4-hour delay notice.
    farm.advance(5 * HOUR);
    assert_eq!(deliver(&farm, "mx1", "full-bob@aol.test").await, greylisted);
    assert_eq!(deliver(&farm, "mx3", "full-bob@aol.test").await, DELIVERED);
    insta::assert_snapshot!(
        "aol_deliveries",
        farm.transcript().render(Granularity::Minutes)
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn yahoo_closes_after_three_messages_and_defers_an_ip_over_five_an_hour() {
    let farm = start("yahoo").await;
    let tss04 = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to \
                 unexpected volume or user complaints - 4.16.55.1; see \
                 https://postmaster.yahooinc.com/error-codes";
    // Three messages on one connection; the 4th MAIL finds it closed, without a word.
    let mut c = greeted(farm.addr("mta5")).await;
    c.ehlo("client.example.test").await;
    for to in ["alice@yahoo.test", "bob@yahoo.test", "carol@yahoo.test"] {
        assert_eq!(transaction(&mut c, &[to]).await, DELIVERED);
    }
    c.send("MAIL FROM:<sender@example.test>\r\n").await;
    c.expect_closed().await;
    // On another host of the pool: a full mailbox is permanent; the 6th message within the
    // hour from this IP gets the TSS04 421 at MAIL, here and on the third host.
    let mut c = greeted(farm.addr("mta6")).await;
    c.ehlo("client.example.test").await;
    assert_eq!(
        transaction(&mut c, &["full-bob@yahoo.test"]).await,
        "552 5.2.2 This message could not be delivered because the recipient's mailbox is \
         full. Please try again later or contact the recipient directly. See \
         https://senders.yahooinc.com/smtp-error-codes#mailbox-full for more information"
    );
    assert_eq!(transaction(&mut c, &["dave@yahoo.test"]).await, DELIVERED);
    assert_eq!(transaction(&mut c, &["erin@yahoo.test"]).await, tss04);
    c.expect_closed().await;
    assert_eq!(deliver(&farm, "mta7", "erin@yahoo.test").await, tss04);
    // An hour later the window has slid past the first five.
    farm.advance(HOUR);
    assert_eq!(deliver(&farm, "mta7", "erin@yahoo.test").await, DELIVERED);
    insta::assert_snapshot!(
        "yahoo_deliveries",
        farm.transcript().render(Granularity::Minutes)
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn gmail_refuses_no_ptr_over_quota_too_fast_and_an_unusual_rate_pool_wide() {
    let farm = start("gmail").await;
    // 127.0.0.2 has no PTR name in the scenario: EHLO gets Gmail's multi-line 421.
    let mut c = connect_from("127.0.0.2", farm.addr("gmail-smtp-in")).await;
    let greeting = c.reply().await;
    assert!(
        greeting
            .text()
            .starts_with("220 gmail-smtp-in.l.google.test "),
        "{greeting}"
    );
    c.send("EHLO mail.sender.test\r\n").await;
    c.expect(
        "421-4.7.0 The IP address sending this message does not have a PTR record, or the\n\
         421-4.7.0 corresponding forward DNS entry does not point to the sending IP. To protect\n\
         421-4.7.0 our users from spam, email sent from your IP address has been temporarily\n\
         421 4.7.0 rate limited. d2si1234567qka.5 - gsmtp",
    )
    .await;
    c.expect_closed().await;
    // From 127.0.0.1, which has one: three messages an hour per recipient.
    for from in ["a@example.test", "b@example.test", "c@example.test"] {
        assert_eq!(
            deliver_as(&farm, "gmail-smtp-in", from, "bob@gmail.test").await,
            DELIVERED
        );
    }
    assert_eq!(
        deliver_as(&farm, "gmail-smtp-in", "d@example.test", "bob@gmail.test").await,
        "450-4.2.1 The user you are trying to contact is receiving email too quickly. Please\n\
         450-4.2.1 resend your message at a later time. If the user is able to receive email at\n\
         450 4.2.1 that time, your message will be delivered. d2si1234567qka.5 - gsmtp"
    );
    let full = "452-4.2.2 The recipient's inbox is out of storage space. Please direct the\n\
                452 4.2.2 recipient to Manage files in your Google Drive storage. \
                d2si1234567qka.5 - gsmtp";
    assert_eq!(deliver(&farm, "alt1", "full-ann@gmail.test").await, full);
    // Five messages an hour per IP over the whole pool; the 6th is refused after the dot.
    assert_eq!(deliver(&farm, "alt1", "carol@gmail.test").await, DELIVERED);
    assert_eq!(deliver(&farm, "alt1", "dave@gmail.test").await, DELIVERED);
    let rate = "421-4.7.28 Gmail has detected an unusual rate of email originating from your IP\n\
                421-4.7.28 address 127.0.0.1. To protect our users from spam, email sent from your IP\n\
                421 4.7.28 address has been temporarily rate limited. d2si1234567qka.5 - gsmtp";
    assert_eq!(deliver(&farm, "alt2", "erin@gmail.test").await, rate);
    assert_eq!(deliver(&farm, "alt4", "erin@gmail.test").await, rate);
    assert_eq!(
        farm.messages().len(),
        5,
        "a message refused after the dot is not kept"
    );
    // An hour later both windows have slid; a day later the inbox has room.
    farm.advance(HOUR);
    assert_eq!(deliver(&farm, "alt2", "erin@gmail.test").await, DELIVERED);
    assert_eq!(
        deliver_as(&farm, "gmail-smtp-in", "d@example.test", "bob@gmail.test").await,
        DELIVERED
    );
    assert_eq!(deliver(&farm, "alt1", "full-ann@gmail.test").await, full);
    farm.advance(23 * HOUR);
    assert_eq!(
        deliver(&farm, "alt1", "full-ann@gmail.test").await,
        DELIVERED
    );
    insta::assert_snapshot!(
        "gmail_deliveries",
        farm.transcript().render(Granularity::Minutes)
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn outlook_limits_connections_recipients_per_message_and_recipients_per_hour() {
    let farm = start("outlook").await;
    // Three connections at once per IP and host; the 4th is refused at the greeting.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(greeted(farm.addr("mx1")).await);
    }
    let mut fourth = SmtpClient::connect(farm.addr("mx1")).await;
    fourth
        .expect(
            "421 4.3.2 The maximum number of concurrent connections has exceeded a limit, \
             closing transmission channel",
        )
        .await;
    fourth.expect_closed().await;
    let mut other_host = greeted(farm.addr("mx2")).await;
    other_host.quit().await;
    for mut c in open {
        c.quit().await;
    }
    for conn in [1, 2, 3, 5] {
        connection_closed(&farm, conn).await;
    }
    // Five recipients per message: the 6th gets 452 4.5.3 and waits for another message.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    let first: Vec<String> = (1..=6).map(|i| format!("a{i}@outlook.test")).collect();
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_eq!(
        transaction(&mut c, &first).await,
        "452 4.5.3 Error: too many recipients"
    );
    c.quit().await;
    let mut c = greeted(farm.addr("mx2")).await;
    c.ehlo("client.example.test").await;
    let second: Vec<String> = (6..=10).map(|i| format!("a{i}@outlook.test")).collect();
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    assert_eq!(transaction(&mut c, &second).await, DELIVERED);
    c.quit().await;
    // Ten recipients an hour per IP over both hosts; the 11th is throttled at RCPT.
    assert_eq!(
        deliver(&farm, "mx1", "a11@outlook.test").await,
        "451 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to IP \
         reputation. For e-mail delivery information, see https://postmaster.live.com (S843)"
    );
    farm.advance(HOUR);
    assert_eq!(deliver(&farm, "mx2", "a11@outlook.test").await, DELIVERED);
    insta::assert_snapshot!(
        "outlook_deliveries",
        farm.transcript().render(Granularity::Minutes)
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn greylist_plays_postgrey_on_a_primary_and_a_backup_sharing_one_state() {
    let farm = start("greylist").await;
    let postgrey = |to: &str| {
        format!(
            "450 4.2.0 <{to}>: Recipient address rejected: Greylisted, see \
             http://postgrey.schweikert.ch/help/greylist.test.html"
        )
    };
    assert_eq!(
        deliver(&farm, "mx1", "bob@greylist.test").await,
        postgrey("bob@greylist.test")
    );
    // The backup shares the state: 4 minutes in, an early retry is deferred there too.
    farm.advance(4 * MINUTE);
    assert_eq!(
        deliver(&farm, "mx2", "bob@greylist.test").await,
        postgrey("bob@greylist.test")
    );
    // 5 minutes after the first attempt, a retry from another address of the same /24 passes.
    farm.advance(MINUTE);
    let mut c = connect_from("127.0.0.2", farm.addr("mx2")).await;
    c.reply().await;
    c.command("EHLO client.example.test").await;
    let bob = "bob@greylist.test";
    let sent = c
        .transaction("sender@example.test", &[bob], &message(bob))
        .await;
    assert_eq!(
        sent.rcpt[0].as_ref().map(Reply::text).as_deref(),
        Some("250 2.1.5 Ok")
    );
    assert!(sent.delivered(), "{}", c.conversation());
    c.quit().await;
    // A first retry more than 2 days later starts over.
    assert_eq!(
        deliver(&farm, "mx1", "carol@greylist.test").await,
        postgrey("carol@greylist.test")
    );
    farm.advance(2 * DAY + MINUTE);
    assert_eq!(
        deliver(&farm, "mx1", "carol@greylist.test").await,
        postgrey("carol@greylist.test")
    );
    farm.advance(5 * MINUTE);
    assert_eq!(
        deliver(&farm, "mx1", "carol@greylist.test").await,
        DELIVERED
    );
    insta::assert_snapshot!(
        "greylist_deliveries",
        farm.transcript().render(Granularity::Minutes)
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn lossy_drops_loses_delays_and_hangs_and_a_correct_sender_retries() {
    let farm = start("lossy").await;
    // Connections 1, 3, 5 and 7 draw a fault (seed 91); 2, 4, 6 and 8 do not.

    // drop-*: the connection closes at RCPT; the retry delivers once.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    let drop_bob = "drop-bob@lossy.test";
    let dropped = c
        .transaction("sender@example.test", &[drop_bob], &message(drop_bob))
        .await;
    assert_eq!(dropped.rcpt[0], None, "dropped at RCPT");
    c.expect_closed().await;
    assert_eq!(
        deliver(&farm, "mx1", "drop-bob@lossy.test").await,
        DELIVERED
    );

    // lost-*: the message is kept, the 250 never comes; the retry is a duplicate.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    let lost_bob = "lost-bob@lossy.test";
    let lost = c
        .transaction("sender@example.test", &[lost_bob], &message(lost_bob))
        .await;
    assert_eq!(lost.end_of_data, None, "no 250 after the dot");
    c.expect_closed().await;
    assert_eq!(
        deliver(&farm, "mx1", "lost-bob@lossy.test").await,
        DELIVERED
    );

    // late-*: silence after the dot; the sender gives up after 10 minutes, the farm keeps
    // the message at 15; the retry is a duplicate.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    c.command("MAIL FROM:<sender@example.test>").await;
    c.command("RCPT TO:<late-carol@lossy.test>").await;
    c.command("DATA").await;
    c.send(message("late-carol@lossy.test") + ".\r\n").await;
    dot_arrived(&farm, 5).await;
    farm.advance(10 * MINUTE);
    drop(c);
    farm.advance(5 * MINUTE);
    connection_closed(&farm, 5).await;
    assert_eq!(
        deliver(&farm, "mx1", "late-carol@lossy.test").await,
        DELIVERED
    );

    // hang-*: silence after the dot; the sender gives up, the message is not kept; the
    // retry delivers once.
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.example.test").await;
    c.command("MAIL FROM:<sender@example.test>").await;
    c.command("RCPT TO:<hang-dave@lossy.test>").await;
    c.command("DATA").await;
    c.send(message("hang-dave@lossy.test") + ".\r\n").await;
    dot_arrived(&farm, 7).await;
    farm.advance(10 * MINUTE);
    drop(c);
    connection_closed(&farm, 7).await;
    assert_eq!(
        deliver(&farm, "mx1", "hang-dave@lossy.test").await,
        DELIVERED
    );

    let mut ids: Vec<String> = farm
        .messages()
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "drop-bob@example.test",
            "hang-dave@example.test",
            "late-carol@example.test",
            "late-carol@example.test",
            "lost-bob@example.test",
            "lost-bob@example.test",
        ]
    );
    insta::assert_snapshot!(
        "lossy_deliveries",
        farm.transcript().render(Granularity::Minutes)
    );
    farm.shutdown().await;
}
