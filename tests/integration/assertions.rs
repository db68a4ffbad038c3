//! Library expectations on retry behaviour, passing and failing with the transcript.

use std::time::Duration;

use mxfarm::Farm;

use crate::support::{farm, greeted};

const SCENARIO: &str = r#"
name = "grey"
[[domain]]
name = "grey.test"
mx = [{ host = "primary", preference = 10 }, { host = "backup", preference = 20 }]
[[host]]
name = "primary"
listen = "127.0.0.1:0"
rulesets = ["grey"]
[[host]]
name = "backup"
listen = "127.0.0.1:0"
rulesets = ["grey"]
[[ruleset]]
name = "grey"
[[ruleset.rule]]
stage = "rcpt"
when = { rcpt = "gone@grey.test" }
then = { reply = "550 5.1.1 No such user" }
[[ruleset.rule]]
stage = "rcpt"
then = { greylist = {} }
"#;

async fn attempt(farm: &Farm, host: &str, to: &str) {
    let mut c = greeted(farm.addr(host)).await;
    c.ehlo("client.test").await;
    c.transaction("me@sender.test", &[to], "Subject: x\r\n\r\n")
        .await;
    c.quit().await;
}

#[tokio::test]
async fn a_patient_sender_meets_every_expectation() {
    let farm = farm(SCENARIO).await;
    attempt(&farm, "primary", "bob@grey.test").await;
    farm.advance(Duration::from_secs(600));
    attempt(&farm, "backup", "bob@grey.test").await;
    attempt(&farm, "primary", "gone@grey.test").await;
    farm.expect_delivery("me@sender.test", "bob@grey.test")
        .was_delivered_once()
        .delivered_after_attempts(2)
        .had_no_early_retries()
        .tried_a_secondary_mx();
    farm.expect_delivery("me@sender.test", "gone@grey.test")
        .was_never_delivered()
        .bounced_without_retrying()
        .only_tried(&["primary"]);
    farm.shutdown().await;
}

#[tokio::test]
#[should_panic(
    expected = "to wait out each deferral before retrying, but:\ndelivery <me@sender.test> -> <bob@grey.test>"
)]
async fn an_impatient_sender_fails_with_its_transcript() {
    let farm = farm(SCENARIO).await;
    attempt(&farm, "primary", "bob@grey.test").await;
    farm.advance(Duration::from_secs(30));
    attempt(&farm, "primary", "bob@grey.test").await;
    farm.expect_delivery("me@sender.test", "bob@grey.test")
        .had_no_early_retries();
}

#[tokio::test]
#[should_panic(expected = "not to be retried after a permanent 5xx")]
async fn retrying_after_a_5xx_fails() {
    let farm = farm(SCENARIO).await;
    attempt(&farm, "primary", "gone@grey.test").await;
    attempt(&farm, "backup", "gone@grey.test").await;
    farm.expect_delivery("me@sender.test", "gone@grey.test")
        .bounced_without_retrying();
}
