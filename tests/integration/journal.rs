//! The journal of a short conversation, snapshotted as stable text.

use mxfarm::render::{self, Granularity};

use crate::support::{Client, connection_closed, farm};

const SCENARIO: &str = r#"
name = "short"
[[domain]]
name = "aol.test"
mx = [{ host = "mx1", preference = 10 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.aol.test"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full-*@aol.test" }
then = { reply = "452 4.2.2 Mailbox full" }
"#;

#[tokio::test]
async fn journal_of_a_short_conversation() {
    let farm = farm(SCENARIO).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    c.ask("MAIL FROM:<sender@example.test>\r\n").await;
    c.ask("RCPT TO:<full-bob@aol.test>\r\n").await;
    c.ask("RCPT TO:<alice@aol.test>\r\n").await;
    c.ask("DATA\r\n").await;
    c.ask("Subject: hi\r\nMessage-ID: <1@example.test>\r\n\r\nhello\r\n.\r\n")
        .await;
    c.ask("QUIT\r\n").await;
    assert!(c.closed().await);
    connection_closed(&farm, 1).await;

    let journal = farm.journal();
    insta::assert_snapshot!(
        "short_conversation_journal",
        render::journal(&journal, Granularity::None)
    );
    insta::assert_snapshot!(
        "short_conversation_deliveries",
        render::deliveries(&farm.deliveries(), Granularity::None)
    );
    // The same events as JSON lines, with times and client ports taken out.
    let json: Vec<String> = journal
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap();
            v.as_object_mut().unwrap().remove("ms");
            if let Some(client) = v.get_mut("client") {
                *client = serde_json::Value::from("127.0.0.1:PORT");
            }
            v.to_string()
        })
        .collect();
    insta::assert_snapshot!("short_conversation_json", json.join("\n"));
    farm.shutdown().await;
}

#[tokio::test]
async fn every_answered_250_is_journalled_before_the_client_sees_it() {
    let farm = farm(SCENARIO).await;
    let mut c = Client::greeted(farm.addr("mx1")).await;
    c.ask("EHLO client.test\r\n").await;
    for i in 0..20 {
        c.ask("MAIL FROM:<sender@example.test>\r\n").await;
        c.ask(&format!("RCPT TO:<r{i}@aol.test>\r\n")).await;
        c.ask("DATA\r\n").await;
        let reply = c.ask("Subject: x\r\n\r\n.\r\n").await;
        let id: u64 = reply
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Checked right after the reply arrived, with no waiting.
        let accepted = farm.journal().into_iter().any(
            |e| matches!(e.kind, mxfarm::EventKind::MessageAccepted { id: got, .. } if got == id),
        );
        assert!(accepted, "message {id} answered 250 but not journalled");
    }
    farm.shutdown().await;
}
