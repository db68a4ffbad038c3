//! The SMTP command set over real TCP, byte for byte.

use mxfarm::testing::SmtpClient;

use crate::support::{PLAIN, farm, greeted, mail_from};

#[tokio::test]
async fn greets_and_advertises_every_extension() {
    let farm = farm(PLAIN).await;
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    c.expect("220 mx1.farm.test ESMTP mxfarm").await;
    c.send("EHLO client.test\r\n").await;
    c.expect(
        "250-mx1.farm.test\n250-PIPELINING\n250-SIZE 36700160\n250-8BITMIME\n\
         250-ENHANCEDSTATUSCODES\n250-SMTPUTF8\n250 CHUNKING",
    )
    .await;
    c.send("HELO client.test\r\n").await;
    c.expect("250 mx1.farm.test").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn switched_off_extensions_are_not_advertised_nor_accepted() {
    let farm = farm(
        r#"
name = "old"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "old.farm.test"
[host.extensions]
pipelining = false
size = false
8bitmime = false
enhancedstatuscodes = false
smtputf8 = false
chunking = false
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("EHLO client.test\r\n").await;
    c.expect("250 old.farm.test").await;
    c.send("MAIL FROM:<a@x.test> SMTPUTF8\r\n").await;
    c.expect("555 Unsupported option: SMTPUTF8").await;
    c.send("MAIL FROM:<a@x.test> BODY=8BITMIME\r\n").await;
    c.expect("555 Unsupported option: BODY=8BITMIME").await;
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("250 Ok").await;
    c.send("RCPT TO:<b@y.test>\r\n").await;
    c.expect("250 Ok").await;
    c.send("BDAT 5 LAST\r\n").await;
    c.expect("502 Error: command not implemented").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_pipelined_commands_in_order_from_one_write() {
    let farm = farm(
        r#"
name = "pipe"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@y.test" }
then = { reply = "452 4.2.2 Mailbox full" }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.send(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<full@y.test>\r\n\
         RCPT TO:<c@y.test>\r\nDATA\r\n",
    )
    .await;
    c.expect("250 2.1.0 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("452 4.2.2 Mailbox full").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("354 End data with <CR><LF>.<CR><LF>").await;
    c.send("Subject: hi\r\n\r\nbody\r\n.\r\n").await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    let messages = farm.messages();
    assert_eq!(messages[0].recipients, vec!["b@y.test", "c@y.test"]);
    farm.shutdown().await;
}

#[tokio::test]
async fn accepts_the_null_sender_and_size_within_the_limit() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.send("MAIL FROM:<> SIZE=1000\r\n").await;
    c.expect("250 2.1.0 Ok").await;
    c.send("RCPT TO:<postmaster@y.test>\r\n").await;
    c.expect("250 2.1.5 Ok").await;
    c.send("DATA\r\n").await;
    c.expect_code(354).await;
    c.send("Subject: bounce\r\n\r\nundeliverable\r\n.\r\n")
        .await;
    c.reply().await;
    let message = &farm.messages()[0];
    assert_eq!(message.sender, "");
    assert_eq!(message.subject.as_deref(), Some("bounce"));
    farm.shutdown().await;
}

#[tokio::test]
async fn refuses_a_declared_size_over_the_limit_at_mail() {
    let farm = farm(
        r#"
name = "small"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[host.limits]
max-message-size = "1KiB"
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    let ehlo = c.ehlo("client.test").await;
    assert!(ehlo.text().contains("250-SIZE 1024\n"), "{ehlo}");
    c.send("MAIL FROM:<a@x.test> SIZE=1025\r\n").await;
    c.expect("552 5.3.4 Message size exceeds fixed maximum message size")
        .await;
    c.send("MAIL FROM:<a@x.test> SIZE=1024\r\n").await;
    c.expect("250 2.1.0 Ok").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn refuses_content_over_the_limit_after_the_final_dot() {
    let farm = farm(
        r#"
name = "small"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[host.limits]
max-message-size = "1KiB"
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    let body = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(4000));
    let big = c.transaction("a@x.test", &["b@y.test"], &body).await;
    assert_eq!(
        big.end_of_data.map(|r| r.text()).as_deref(),
        Some("552 5.3.4 Error: message file too big")
    );
    // The session goes on: the next transaction works.
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("250 2.1.0 Ok").await;
    assert!(farm.messages().is_empty());
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_commands_out_of_sequence_with_503() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("503 5.5.1 Error: send HELO/EHLO first").await;
    c.ehlo("client.test").await;
    c.send("RCPT TO:<b@y.test>\r\n").await;
    c.expect("503 5.5.1 Error: need MAIL command").await;
    c.send("DATA\r\n").await;
    c.expect("503 5.5.1 Error: need MAIL command").await;
    c.command("MAIL FROM:<a@x.test>").await;
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("503 5.5.1 Error: nested MAIL command").await;
    c.send("DATA\r\n").await;
    c.expect("503 5.5.1 Error: need RCPT command").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_the_small_commands() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("NOOP\r\n").await;
    c.expect("250 2.0.0 Ok").await;
    c.send("VRFY alice\r\n").await;
    c.expect("252 2.0.0 Cannot VRFY user, but will accept message")
        .await;
    c.send("HELP\r\n").await;
    c.expect("214 2.0.0 See RFC 5321").await;
    c.send("XYZZY\r\n").await;
    c.expect("500 5.5.1 Error: command not recognized").await;
    c.send("ETRN example.test\r\n").await;
    c.expect("502 5.5.1 Error: command not implemented").await;
    c.send("MAIL FROM:<not an address\r\n").await;
    c.expect_code(501).await;
    c.send("RSET\r\n").await;
    c.expect("250 2.0.0 Ok").await;
    c.send("QUIT\r\n").await;
    c.expect("221 2.0.0 Bye").await;
    c.expect_closed().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_a_too_long_line_and_carries_on() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send(format!("EHLO {}\r\n", "a".repeat(1200))).await;
    c.expect("500 5.5.2 Error: line too long").await;
    // A line with no end at all, far over the limit, in several writes.
    c.send("b".repeat(3000)).await;
    c.expect("500 5.5.2 Error: line too long").await;
    c.send("b".repeat(3000)).await;
    c.send("\r\n").await;
    c.send("NOOP\r\n").await;
    c.expect("250 2.0.0 Ok").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn unstuffs_dots_and_takes_an_empty_message() {
    let farm = farm(PLAIN).await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.command("RCPT TO:<b@y.test>").await;
    c.command("DATA").await;
    c.send("..starts with a dot\r\nmiddle\r\n..\r\n.\r\n").await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.command("MAIL FROM:<a@x.test>").await;
    c.command("RCPT TO:<b@y.test>").await;
    c.command("DATA").await;
    c.send(".\r\n").await;
    c.expect("250 2.0.0 Ok: queued as 2").await;
    let messages = farm.messages();
    assert_eq!(messages[0].text(), ".starts with a dot\r\nmiddle\r\n.\r\n");
    assert_eq!(messages[1].text(), "");
    farm.shutdown().await;
}

#[tokio::test]
async fn takes_a_message_in_bdat_chunks() {
    let farm = farm(PLAIN).await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.command("RCPT TO:<b@y.test>").await;
    c.send("BDAT 15\r\nSubject: hi\r\n\r\n").await;
    c.expect("250 2.0.0 15 octets received").await;
    c.send("BDAT 7 LAST\r\n.body\r\n").await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    c.send("DATA\r\n").await;
    c.expect("503 5.5.1 Error: need MAIL command").await;
    let message = &farm.messages()[0];
    assert_eq!(message.text(), "Subject: hi\r\n\r\n.body\r\n");
    assert_eq!(message.subject.as_deref(), Some("hi"));
    farm.shutdown().await;
}

#[tokio::test]
async fn defers_recipients_past_the_limit() {
    let farm = farm(
        r#"
name = "few"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[host.limits]
max-recipients = 2
"#,
    )
    .await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.send("RCPT TO:<1@y.test>\r\n").await;
    c.expect("250 2.1.5 Ok").await;
    c.send("RCPT TO:<2@y.test>\r\n").await;
    c.expect("250 2.1.5 Ok").await;
    c.send("RCPT TO:<3@y.test>\r\n").await;
    c.expect("452 4.5.3 Error: too many recipients").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn closes_after_too_many_errors() {
    let farm = farm(
        r#"
name = "strict"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
[host.limits]
max-errors = 3
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.command("BAD").await;
    c.command("BAD").await;
    c.send("BAD\r\n").await;
    c.expect("500 5.5.1 Error: command not recognized").await;
    c.expect("421 4.7.0 mx1.farm.test Error: too many errors")
        .await;
    c.expect_closed().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn survives_hostile_bytes_and_keeps_serving_others() {
    let farm = farm(PLAIN).await;
    let mut hostile = greeted(farm.addr("mx1")).await;
    hostile
        .send(b"\x00\xff\xfe\r\nMAIL FROM:<\xff@\x00>\r\n\x16\x03\x01\x02\x00\x01\r\n")
        .await;
    let mut good = greeted(farm.addr("mx1")).await;
    good.send("NOOP\r\n").await;
    good.expect("250 2.0.0 Ok").await;
    // The hostile client got protocol errors, not a crash.
    let first = hostile.reply().await;
    assert_eq!(first.code / 100, 5, "{first}");
    drop(hostile);
    good.send("QUIT\r\n").await;
    good.expect("221 2.0.0 Bye").await;
    farm.shutdown().await;
}
