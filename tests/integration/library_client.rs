//! A real SMTP client library delivering through the farm.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::support::farm;

fn transport(addr: std::net::SocketAddr) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .build()
}

fn message(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .message_id(Some(format!("<{subject}@example.test>")))
        .body(String::from("Hello from lettre.\r\n.leading dot\r\n"))
        .unwrap()
}

#[tokio::test]
async fn lettre_delivers_and_sees_the_deferral() {
    let farm = farm(
        r#"
name = "lettre"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@aol.test", attempt = "1", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
"#,
    )
    .await;
    let mailer = transport(farm.addr("mx1"));

    let sent = mailer.send(message("alice@aol.test", "first")).await;
    let response = sent.expect("delivered");
    assert_eq!(response.code().to_string(), "250");

    let deferred = mailer.send(message("full@aol.test", "second")).await;
    let error = deferred.expect_err("deferred");
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("Mailbox full"), "{error}");

    mailer
        .send(message("full@aol.test", "third"))
        .await
        .expect("delivered on the second attempt");

    let messages = farm.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0].message_id.as_deref(),
        Some("first@example.test")
    );
    assert_eq!(messages[0].sender, "sender@example.test");
    assert!(messages[0].text().contains("\r\n.leading dot\r\n"));
    assert_eq!(messages[1].recipients, vec!["full@aol.test"]);

    let full: Vec<_> = farm
        .deliveries()
        .into_iter()
        .filter(|d| d.recipient.as_deref() == Some("full@aol.test"))
        .collect();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].attempts.len(), 2);
    assert!(full[0].delivered());
    farm.shutdown().await;
}
