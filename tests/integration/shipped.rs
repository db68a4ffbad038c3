//! The shipped scenarios, driven by a client as a sender would.

use mxfarm::render::{self, Granularity};
use mxfarm::{Farm, Scenario};

use crate::support::Client;

/// One whole transaction on a new connection; returns the reply that ended it.
async fn deliver(farm: &Farm, host: &str, to: &str) -> String {
    let mut c = Client::connect(farm.addr(host)).await;
    let greeting = c.reply().await;
    if !greeting.starts_with("220") {
        return greeting;
    }
    c.ask("EHLO client.example.test\r\n").await;
    for command in [
        "MAIL FROM:<sender@example.test>\r\n".to_string(),
        format!("RCPT TO:<{to}>\r\n"),
        "DATA\r\n".to_string(),
        format!("Subject: to {to}\r\nMessage-ID: <{to}@example.test>\r\n\r\nhi\r\n.\r\n"),
    ] {
        let reply = c.ask(&command).await;
        if !reply.starts_with('2') && !reply.starts_with('3') {
            if !reply.starts_with("421") {
                c.ask("QUIT\r\n").await;
            }
            return reply;
        }
    }
    c.ask("QUIT\r\n").await;
    "250".to_string()
}

#[tokio::test]
async fn aol_defers_then_lets_deferred_mail_through() {
    let farm = Farm::start_ephemeral(Scenario::embedded("aol").unwrap())
        .await
        .unwrap();
    let steps = [
        ("mx3", "alice@aol.test", "250"),
        ("mx2", "carol@aol.test", "421 4.7.0 [TSS04]"),
        ("mx2", "carol@aol.test", "250"),
        ("mx1", "bob@aol.test", "451 Message temporarily deferred"),
        ("mx1", "bob@aol.test", "451 Message temporarily deferred"),
        ("mx1", "bob@aol.test", "250"),
        ("mx3", "full-bob@aol.test", "452 4.2.2"),
        ("mx3", "full-bob@aol.test", "452 4.2.2"),
        ("mx3", "full-bob@aol.test", "452 4.2.2"),
        ("mx3", "full-bob@aol.test", "250"),
        ("mx1", "gone@aol.test", "451"),
        ("mx1", "gone@aol.test", "451"),
        ("mx1", "gone@aol.test", "550 5.1.1"),
    ];
    for (host, to, expected) in steps {
        let reply = deliver(&farm, host, to).await;
        assert!(reply.starts_with(expected), "{host} {to}: {reply}");
    }
    insta::assert_snapshot!(
        "aol_deliveries",
        render::deliveries(&farm.deliveries(), Granularity::None)
    );
    farm.shutdown().await;
}
