//! The README's example ("Using it from Rust tests"), verbatim below this comment, so that
//! what the README promises is run; `the_readme_example_is_this_file` keeps the two the same.

use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mxfarm::render::Granularity;
use mxfarm::{EventKind, Farm, Scenario};

const SCENARIO: &str = r#"
name = "full-mailbox"

[[host]]
name = "mx1"
listen = "127.0.0.1:2525"   # start_ephemeral binds a free port instead

[[host.rule]]                # the first RCPT for full@aol.test is deferred
stage = "rcpt"
when = { rcpt = "full@aol.test", attempt = "1", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }

[[host.rule]]                # every DATA waits 2 minutes of farm time before 354
stage = "data"
then = { delay = "2m" }
"#;

#[tokio::test]
async fn the_sender_retries_a_full_mailbox() {
    let scenario = Scenario::from_toml("full-mailbox.toml", SCENARIO).unwrap();
    let farm = Farm::start_ephemeral(scenario).await.unwrap();
    let addr = farm.addr("mx1");

    // Stand-in for your sender: lettre, pointed at the farm.
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .build();
    let message = || {
        Message::builder()
            .from("me@example.test".parse().unwrap())
            .to("full@aol.test".parse().unwrap())
            .subject("hello")
            .body(String::from("Hello.\r\n"))
            .unwrap()
    };

    // First attempt: deferred at RCPT.
    let error = mailer.send(message()).await.unwrap_err();
    assert!(error.is_transient());

    // Second attempt: accepted, but DATA is tarpitted. Send in the background, wait until
    // the farm has seen DATA, then move farm time past the delay instead of sleeping.
    let second = tokio::spawn({
        let mailer = mailer.clone();
        let message = message();
        async move { mailer.send(message).await }
    });
    farm.wait_for(|e| matches!(&e.kind, EventKind::Command { line, .. } if line == "DATA"))
        .await;
    farm.advance(Duration::from_secs(120));
    second.await.unwrap().unwrap();

    // Expectations that read as sentences; a failure prints the delivery's transcript.
    farm.expect_delivery("me@example.test", "full@aol.test")
        .delivered_after_attempts(2)
        .was_delivered_once();

    let messages = farm.messages();
    assert_eq!(messages[0].subject.as_deref(), Some("hello"));

    // The retry story as stable text for snapshots: when each attempt started (the retry
    // came at once; the 2-minute tarpit was inside it), hosts, connection numbers, stages
    // and replies; no ports, no wall-clock time.
    insta::assert_snapshot!(farm.transcript().render(Granularity::Seconds), @r"
    delivery <me@example.test> -> <full@aol.test> (message 1)
      #1  +0s       mx1  conn 1   RCPT         452 4.2.2 Mailbox full
      #2  +0s       mx1  conn 2   END-OF-DATA  250 2.0.0 Ok: queued as 1
      delivered after 2 attempts in 2m00s
    ");
    farm.shutdown().await;
}

#[test]
fn the_readme_example_is_this_file() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let this = std::fs::read_to_string(file!()).unwrap();
    let section = readme
        .find("## Using it from Rust tests")
        .expect("the README has its Rust section");
    let start = readme[section..].find("```rust\n").unwrap() + section + "```rust\n".len();
    let end = readme[start..].find("```\n").unwrap() + start;
    let example = &readme[start..end];
    let body = this
        .split_once("\n\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert!(
        body.starts_with(example),
        "README.md's Rust example and tests/integration/readme.rs differ: copy one to the other"
    );
}
