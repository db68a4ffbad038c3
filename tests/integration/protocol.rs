//! The SMTP command set over real TCP, byte for byte.

use crate::support::{Client, PLAIN, farm};

#[tokio::test]
async fn greets_and_advertises_every_extension() {
    let farm = farm(PLAIN).await;
    let mut c = Client::connect(farm.addr("mx1")).await;
    assert_eq!(c.reply().await, "220 mx1.farm.test ESMTP mxfarm\r\n");
    assert_eq!(
        c.ask("EHLO client.test\r\n").await,
        "250-mx1.farm.test\r\n250-PIPELINING\r\n250-SIZE 36700160\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    );
    assert_eq!(c.ask("HELO client.test\r\n").await, "250 mx1.farm.test\r\n");
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
    let mut c = Client::greeted(farm.addr("mx1")).await;
    assert_eq!(c.ask("EHLO client.test\r\n").await, "250 old.farm.test\r\n");
    assert_eq!(
        c.ask("MAIL FROM:<a@x.test> SMTPUTF8\r\n").await,
        "555 Unsupported option: SMTPUTF8\r\n"
    );
    assert_eq!(
        c.ask("MAIL FROM:<a@x.test> BODY=8BITMIME\r\n").await,
        "555 Unsupported option: BODY=8BITMIME\r\n"
    );
    assert_eq!(c.ask("MAIL FROM:<a@x.test>\r\n").await, "250 Ok\r\n");
    assert_eq!(c.ask("RCPT TO:<b@y.test>\r\n").await, "250 Ok\r\n");
    assert_eq!(
        c.ask("BDAT 5 LAST\r\n").await,
        "502 Error: command not implemented\r\n"
    );
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
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    c.send(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<full@y.test>\r\n\
         RCPT TO:<c@y.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply().await, "250 2.1.5 Ok\r\n");
    assert_eq!(c.reply().await, "452 4.2.2 Mailbox full\r\n");
    assert_eq!(c.reply().await, "250 2.1.5 Ok\r\n");
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(
        c.ask("Subject: hi\r\n\r\nbody\r\n.\r\n").await,
        "250 2.0.0 Ok: queued as 1\r\n"
    );
    let messages = farm.messages();
    assert_eq!(messages[0].recipients, vec!["b@y.test", "c@y.test"]);
    farm.shutdown().await;
}

#[tokio::test]
async fn accepts_the_null_sender_and_size_within_the_limit() {
    let farm = farm(PLAIN).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    assert_eq!(
        c.ask("MAIL FROM:<> SIZE=1000\r\n").await,
        "250 2.1.0 Ok\r\n"
    );
    assert_eq!(
        c.ask("RCPT TO:<postmaster@y.test>\r\n").await,
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(c.ask("DATA\r\n").await.get(..3), Some("354"));
    c.ask("Subject: bounce\r\n\r\nundeliverable\r\n.\r\n").await;
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
    let mut c = Client::greeted(farm.addr("mx1")).await;
    assert!(
        c.ask("EHLO client.test\r\n")
            .await
            .contains("250-SIZE 1024\r\n")
    );
    assert_eq!(
        c.ask("MAIL FROM:<a@x.test> SIZE=1025\r\n").await,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.ask("MAIL FROM:<a@x.test> SIZE=1024\r\n").await,
        "250 2.1.0 Ok\r\n"
    );
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
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    c.ask("MAIL FROM:<a@x.test>\r\n").await;
    c.ask("RCPT TO:<b@y.test>\r\n").await;
    c.ask("DATA\r\n").await;
    let body = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(4000));
    assert_eq!(
        c.ask(&body).await,
        "552 5.3.4 Error: message file too big\r\n"
    );
    // The session goes on: the next transaction works.
    assert_eq!(c.ask("MAIL FROM:<a@x.test>\r\n").await, "250 2.1.0 Ok\r\n");
    assert!(farm.messages().is_empty());
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_commands_out_of_sequence_with_503() {
    let farm = farm(PLAIN).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    assert_eq!(
        c.ask("MAIL FROM:<a@x.test>\r\n").await,
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    c.ask("EHLO client.test\r\n").await;
    assert_eq!(
        c.ask("RCPT TO:<b@y.test>\r\n").await,
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    assert_eq!(
        c.ask("DATA\r\n").await,
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    c.ask("MAIL FROM:<a@x.test>\r\n").await;
    assert_eq!(
        c.ask("MAIL FROM:<a@x.test>\r\n").await,
        "503 5.5.1 Error: nested MAIL command\r\n"
    );
    assert_eq!(
        c.ask("DATA\r\n").await,
        "503 5.5.1 Error: need RCPT command\r\n"
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_the_small_commands() {
    let farm = farm(PLAIN).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0 Ok\r\n");
    assert_eq!(
        c.ask("VRFY alice\r\n").await,
        "252 2.0.0 Cannot VRFY user, but will accept message\r\n"
    );
    assert_eq!(c.ask("HELP\r\n").await, "214 2.0.0 See RFC 5321\r\n");
    assert_eq!(
        c.ask("XYZZY\r\n").await,
        "500 5.5.1 Error: command not recognized\r\n"
    );
    assert_eq!(
        c.ask("ETRN example.test\r\n").await,
        "502 5.5.1 Error: command not implemented\r\n"
    );
    assert_eq!(
        c.ask("MAIL FROM:<not an address\r\n").await.get(..3),
        Some("501")
    );
    assert_eq!(c.ask("RSET\r\n").await, "250 2.0.0 Ok\r\n");
    assert_eq!(c.ask("QUIT\r\n").await, "221 2.0.0 Bye\r\n");
    assert!(c.closed().await);
    farm.shutdown().await;
}

#[tokio::test]
async fn answers_a_too_long_line_and_carries_on() {
    let farm = farm(PLAIN).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    let long = format!("EHLO {}\r\n", "a".repeat(1200));
    assert_eq!(c.ask(&long).await, "500 5.5.2 Error: line too long\r\n");
    // A line with no end at all, far over the limit, in several writes.
    c.send(&"b".repeat(3000)).await;
    assert_eq!(c.reply().await, "500 5.5.2 Error: line too long\r\n");
    c.send(&"b".repeat(3000)).await;
    c.send("\r\n").await;
    assert_eq!(c.ask("NOOP\r\n").await, "250 2.0.0 Ok\r\n");
    farm.shutdown().await;
}

#[tokio::test]
async fn unstuffs_dots_and_takes_an_empty_message() {
    let farm = farm(PLAIN).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    c.ask("MAIL FROM:<a@x.test>\r\n").await;
    c.ask("RCPT TO:<b@y.test>\r\n").await;
    c.ask("DATA\r\n").await;
    assert_eq!(
        c.ask("..starts with a dot\r\nmiddle\r\n..\r\n.\r\n").await,
        "250 2.0.0 Ok: queued as 1\r\n"
    );
    c.ask("MAIL FROM:<a@x.test>\r\n").await;
    c.ask("RCPT TO:<b@y.test>\r\n").await;
    c.ask("DATA\r\n").await;
    assert_eq!(c.ask(".\r\n").await, "250 2.0.0 Ok: queued as 2\r\n");
    let messages = farm.messages();
    assert_eq!(messages[0].text(), ".starts with a dot\r\nmiddle\r\n.\r\n");
    assert_eq!(messages[1].text(), "");
    farm.shutdown().await;
}

#[tokio::test]
async fn takes_a_message_in_bdat_chunks() {
    let farm = farm(PLAIN).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    c.ask("MAIL FROM:<a@x.test>\r\n").await;
    c.ask("RCPT TO:<b@y.test>\r\n").await;
    assert_eq!(
        c.ask("BDAT 15\r\nSubject: hi\r\n\r\n").await,
        "250 2.0.0 15 octets received\r\n"
    );
    assert_eq!(
        c.ask("BDAT 6 LAST\r\n.body\n").await,
        "250 2.0.0 Ok: queued as 1\r\n"
    );
    assert_eq!(
        c.ask("DATA\r\n").await,
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    let message = &farm.messages()[0];
    assert_eq!(message.text(), "Subject: hi\r\n\r\n.body\n");
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
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    c.ask("MAIL FROM:<a@x.test>\r\n").await;
    assert_eq!(c.ask("RCPT TO:<1@y.test>\r\n").await, "250 2.1.5 Ok\r\n");
    assert_eq!(c.ask("RCPT TO:<2@y.test>\r\n").await, "250 2.1.5 Ok\r\n");
    assert_eq!(
        c.ask("RCPT TO:<3@y.test>\r\n").await,
        "452 4.5.3 Error: too many recipients\r\n"
    );
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
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("BAD\r\n").await;
    c.ask("BAD\r\n").await;
    c.send("BAD\r\n").await;
    assert_eq!(
        c.reply().await,
        "500 5.5.1 Error: command not recognized\r\n"
    );
    assert_eq!(
        c.reply().await,
        "421 4.7.0 mx1.farm.test Error: too many errors\r\n"
    );
    assert!(c.closed().await);
    farm.shutdown().await;
}

#[tokio::test]
async fn survives_hostile_bytes_and_keeps_serving_others() {
    let farm = farm(PLAIN).await;
    let mut hostile = Client::greeted(farm.addr("mx1")).await;
    hostile
        .send_bytes(b"\x00\xff\xfe\r\nMAIL FROM:<\xff@\x00>\r\n\x16\x03\x01\x02\x00\x01\r\n")
        .await;
    let mut good = Client::greeted(farm.addr("mx1")).await;
    assert_eq!(good.ask("NOOP\r\n").await, "250 2.0.0 Ok\r\n");
    // The hostile client got protocol errors, not a crash.
    let first = hostile.reply().await;
    assert!(first.starts_with('5'), "{first:?}");
    drop(hostile);
    assert_eq!(good.ask("QUIT\r\n").await, "221 2.0.0 Bye\r\n");
    farm.shutdown().await;
}
