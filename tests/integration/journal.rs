//! The journal of a short conversation, snapshotted as stable text.

use mxfarm::render::{self, Granularity};

use crate::support::{connection_closed, farm, greeted};

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
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.transaction(
        "sender@example.test",
        &["full-bob@aol.test", "alice@aol.test"],
        "Subject: hi\r\nMessage-ID: <1@example.test>\r\n\r\nhello\r\n",
    )
    .await;
    c.quit().await;
    c.expect_closed().await;
    connection_closed(&farm, 1).await;

    let journal = farm.journal();
    insta::assert_snapshot!(
        "short_conversation_journal",
        render::journal(&journal, Granularity::None)
    );
    insta::assert_snapshot!(
        "short_conversation_deliveries",
        farm.transcript().render(Granularity::None)
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
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    for i in 0..20 {
        let to = format!("r{i}@aol.test");
        let sent = c
            .transaction("sender@example.test", &[&to], "Subject: x\r\n\r\n")
            .await;
        let reply = sent.end_of_data.expect("a reply to the final dot").text();
        let id: u64 = reply.rsplit(' ').next().unwrap().parse().unwrap();
        // Checked right after the reply arrived, with no waiting.
        let accepted = farm.journal().into_iter().any(
            |e| matches!(e.kind, mxfarm::EventKind::MessageAccepted { id: got, .. } if got == id),
        );
        assert!(accepted, "message {id} answered 250 but not journalled");
    }
    farm.shutdown().await;
}

/// A reader of the journal reads what the farm recorded, then ends when the farm is gone,
/// whether it was shut down or dropped.
#[tokio::test]
async fn a_journal_reader_ends_with_the_farm() {
    for shut_down in [true, false] {
        let farm = crate::support::farm(crate::support::PLAIN).await;
        let mut from_start = farm.events_after(0);
        if shut_down {
            farm.shutdown().await;
        } else {
            drop(farm);
        }
        let mut read = 0;
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(next) = from_start.next().await {
                assert!(matches!(next, mxfarm::journal::Read::Event(_)));
                read += 1;
            }
        })
        .await;
        assert!(ended.is_ok(), "the reader waited for a farm that is gone");
        assert_eq!(read, 1, "the farm-started event");
    }
}

/// What the journal's events take, as `Farm::journal_memory` says, after real sessions
/// that filled it more than once over: every event held but the header counted, and a
/// few dozen bytes each (reserved room included), not the hundreds an event took with
/// its own strings. (A journal that is far from full has a tenth of its bound reserved
/// ahead, which says nothing per event.)
#[tokio::test]
async fn the_journal_says_what_its_events_take() {
    let farm = farm(&format!("{SCENARIO}[journal]\nmax-events = 200\n")).await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    for i in 0..50 {
        let to = format!("r{i}@aol.test");
        c.transaction("sender@example.test", &[&to], "Subject: x\r\n\r\nhi\r\n")
            .await;
    }
    c.quit().await;
    c.expect_closed().await;
    connection_closed(&farm, 1).await;
    let memory = farm.journal_memory();
    assert_eq!(
        memory.events,
        farm.journal().len() - 1,
        "all but farm-started"
    );
    assert!(
        (150..=200).contains(&memory.events),
        "{} events",
        memory.events
    );
    let per_event = memory.bytes / memory.events;
    assert!(
        (10..=80).contains(&per_event),
        "{per_event} bytes per event ({memory:?})"
    );
    farm.shutdown().await;
}
