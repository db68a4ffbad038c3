//! How strictly a host reads what clients send (`parsing`), over real TCP: bare LFs,
//! MAIL and RCPT parameters it did not advertise, STARTTLS with an argument; and the same
//! input taken by a lenient host.

use mxfarm::EventKind;

use crate::support::{PLAIN, connection_closed, farm, greeted, mail_from};

const LENIENT: &str = r#"
name = "lenient"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
parsing = "lenient"
"#;

/// Parameters of extensions the farm never advertises (DSN, AUTH, BINARYMIME) get 555
/// 5.5.4, at MAIL and at RCPT; those it advertises are taken.
#[tokio::test]
async fn a_strict_host_refuses_parameters_it_did_not_advertise() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    for (params, refused) in [
        ("RET=HDRS ENVID=abc", "RET=HDRS"),
        ("SIZE=100 ENVID=abc", "ENVID=abc"),
        ("BODY=BINARYMIME", "BODY=BINARYMIME"),
        ("AUTH=<>", "AUTH=<>"),
        ("RET=BOGUS", "RET"),
    ] {
        c.send(format!("MAIL FROM:<a@x.test> {params}\r\n")).await;
        c.expect(&format!("555 5.5.4 Unsupported option: {refused}"))
            .await;
    }
    // A quoted local part may hold what looks like a parameter, and a `>`.
    c.send("MAIL FROM:<\"odd> RET=HDRS\"@x.test> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n")
        .await;
    c.expect("250 2.1.0 Ok").await;
    for params in ["NOTIFY=NEVER", "ORCPT=rfc822;b@y.test"] {
        c.send(format!("RCPT TO:<b@y.test> {params}\r\n")).await;
        c.expect(&format!("555 5.5.4 Unsupported option: {params}"))
            .await;
    }
    c.send("RCPT TO:<b@y.test>\r\n").await;
    c.expect("250 2.1.5 Ok").await;
    farm.shutdown().await;
}

/// RFC 3207: STARTTLS takes no argument; Postfix's answer.
#[tokio::test]
async fn a_strict_host_refuses_starttls_with_an_argument() {
    let tls = format!("{PLAIN}tls = \"valid\"\n");
    let farm = farm(&tls).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.send("STARTTLS now\r\n").await;
    c.expect("501 5.5.4 Syntax: STARTTLS").await;
    c.send("STARTTLS \r\n").await;
    c.expect("220 2.0.0 Ready to start TLS").await;
    drop(c);
    farm.shutdown().await;
}

/// A command ending in a bare LF gets 521 and the connection is closed, as Postfix does
/// with smtpd_forbid_bare_newline = reject.
#[tokio::test]
async fn a_bare_lf_in_a_command_ends_the_connection() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("EHLO client.test\r\nNOOP\n").await;
    c.expect_code(250).await;
    c.expect("521 5.5.2 mx1.farm.test Error: bare <LF> received")
        .await;
    c.expect_closed().await;
    let closed = connection_closed(&farm, 1).await;
    assert!(
        matches!(&closed.kind, EventKind::ConnectionClosed { reason, .. } if reason == "bare LF in a command"),
        "{closed:?}"
    );
    farm.shutdown().await;
}

/// A message with a bare LF is refused with 550 5.5.2 after its CRLF.CRLF and not kept;
/// what a smuggler hides behind `<LF>.<LF>` stays in the refused content (no second
/// transaction), and the session goes on.
#[tokio::test]
async fn a_bare_lf_in_content_refuses_the_message_and_smuggles_nothing() {
    let farm = farm(PLAIN).await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.command("RCPT TO:<b@y.test>").await;
    assert_eq!(c.command("DATA").await.code, 354);
    c.send(
        "Subject: one\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<b@y.test>\nDATA\n\
         Subject: smuggled\n\nboo\n.\n\r\n.\r\nNOOP\r\n",
    )
    .await;
    c.expect("550 5.5.2 mx1.farm.test Error: bare <LF> received")
        .await;
    c.expect("250 2.0.0 Ok").await;
    assert!(farm.messages().is_empty());
    // BDAT content alike.
    c.command("MAIL FROM:<a@x.test>").await;
    c.command("RCPT TO:<b@y.test>").await;
    c.send("BDAT 11 LAST\r\nSubject: x\n").await;
    c.expect("550 5.5.2 mx1.farm.test Error: bare <LF> received")
        .await;
    let done = c
        .transaction("a@x.test", &["b@y.test"], "Subject: fine\r\n\r\nhi\r\n")
        .await;
    assert!(done.delivered());
    let mails = farm
        .journal()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Command { line, .. } if line.starts_with("MAIL")))
        .count();
    assert_eq!(mails, 3, "no smuggled MAIL was read as a command");
    farm.shutdown().await;
}

/// `parsing = "lenient"` plays an older server: all of the above is taken, and still only
/// CRLF.CRLF ends DATA, so the smuggled text is content of the one message.
#[tokio::test]
async fn a_lenient_host_takes_all_of_it() {
    let farm = farm(&format!("{LENIENT}tls = \"valid\"\n")).await;
    assert!(farm.summary().contains("STARTTLS valid, lenient parsing"));
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("EHLO client.test\n").await;
    c.expect_code(250).await;
    c.send("MAIL FROM:<a@x.test> RET=HDRS ENVID=abc BODY=BINARYMIME\n")
        .await;
    c.expect("250 2.1.0 Ok").await;
    c.send("RCPT TO:<b@y.test> NOTIFY=NEVER\r\n").await;
    c.expect("250 2.1.5 Ok").await;
    assert_eq!(c.command("DATA").await.code, 354);
    c.send("Subject: one\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\n\r\n.\r\n")
        .await;
    c.expect("250 2.0.0 Ok: queued as 1").await;
    let messages = farm.messages();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0]
            .text()
            .contains("\n.\nMAIL FROM:<evil@x.test>\n")
    );
    c.send("STARTTLS now\r\n").await;
    c.expect("220 2.0.0 Ready to start TLS").await;
    drop(c);
    farm.shutdown().await;
}
