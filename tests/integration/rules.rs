//! Rules, limits and timing over real TCP, with time moved by the farm's clock.

use std::time::Duration;

use mxfarm::journal::ClosedBy;
use mxfarm::{EventKind, Outcome};

use mxfarm::testing::{Reply, SmtpClient};

use crate::support::{PLAIN, command_arrived, connection_closed, farm, greeted, mail_from};

#[tokio::test]
async fn a_421_reply_closes_the_connection() {
    let farm = farm(
        r#"
name = "busy"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "mail"
then = { reply = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred" }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    c.send("MAIL FROM:<a@x.test>\r\n").await;
    c.expect("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred")
        .await;
    c.expect_closed().await;
    let closed = connection_closed(&farm, 1).await;
    assert!(matches!(
        closed.kind,
        EventKind::ConnectionClosed {
            by: ClosedBy::Farm,
            ..
        }
    ));
    farm.shutdown().await;
}

#[tokio::test]
async fn sends_multi_line_replies_and_refusing_greetings() {
    let farm = farm(
        r#"
name = "gmail-like"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { client = "127.0.0.0/8" }
then = { reply = "554 5.7.1 You are not welcome\nGo away" }
"#,
    )
    .await;
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    c.expect("554-5.7.1 You are not welcome\n554 5.7.1 Go away")
        .await;
    // After a refusing greeting only QUIT is served (RFC 5321 3.1).
    c.send("EHLO client.test\r\n").await;
    c.expect("503 5.5.1 Error: no service here, only QUIT")
        .await;
    c.send("QUIT\r\n").await;
    c.expect("221 2.0.0 Bye").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn each_recipient_gets_its_own_verdict() {
    let farm = farm(
        r#"
name = "mixed"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full-*@aol.test" }
then = { reply = "452 4.2.2 Mailbox full" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = ["gone@aol.test", "left@aol.test"] }
then = { reply = "550 5.1.1 No such user" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "@other.test" }
then = { reply = "451 4.3.0 Try later" }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.ehlo("client.test").await;
    let cases = [
        ("full-bob@aol.test", "452 4.2.2 Mailbox full"),
        ("gone@aol.test", "550 5.1.1 No such user"),
        ("LEFT@aol.test", "550 5.1.1 No such user"),
        ("x@other.test", "451 4.3.0 Try later"),
        ("alice@aol.test", "250 2.1.5 Ok"),
    ];
    let to: Vec<&str> = cases.iter().map(|(rcpt, _)| *rcpt).collect();
    let sent = c
        .transaction("me@sender.test", &to, "Subject: x\r\n\r\n")
        .await;
    for ((rcpt, expected), reply) in cases.iter().zip(&sent.rcpt) {
        assert_eq!(
            reply.as_ref().map(Reply::text).as_deref(),
            Some(*expected),
            "{rcpt}"
        );
    }
    let outcomes: Vec<(Option<String>, Outcome)> = farm
        .deliveries()
        .into_iter()
        .map(|d| (d.recipient.clone(), d.attempts[0].outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Some("full-bob@aol.test".into()), Outcome::Deferred),
            (Some("gone@aol.test".into()), Outcome::Rejected),
            (Some("LEFT@aol.test".into()), Outcome::Rejected),
            (Some("x@other.test".into()), Outcome::Deferred),
            (Some("alice@aol.test".into()), Outcome::Delivered),
        ]
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn attempt_numbers_count_across_connections_and_hosts() {
    let farm = farm(
        r#"
name = "clears"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
rulesets = ["quota"]
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
rulesets = ["quota"]
[[ruleset]]
name = "quota"
[[ruleset.rule]]
stage = "rcpt"
when = { rcpt = "full@aol.test", attempt = "<=2", per = "recipient" }
then = { reply = "452 4.2.2 Mailbox full" }
"#,
    )
    .await;
    let mut replies = Vec::new();
    for host in ["mx1", "mx2", "mx1"] {
        let mut c = mail_from(farm.addr(host), "me@sender.test").await;
        replies.push(c.command("RCPT TO:<full@aol.test>").await.text());
        c.quit().await;
    }
    assert_eq!(
        replies,
        vec![
            "452 4.2.2 Mailbox full",
            "452 4.2.2 Mailbox full",
            "250 2.1.5 Ok"
        ]
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_tarpit_delays_the_reply_by_farm_time() {
    let farm = farm(
        r#"
name = "tarpit"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { delay = "30s" }
"#,
    )
    .await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.send("RCPT TO:<b@y.test>\r\n").await;
    command_arrived(&farm, "RCPT").await;
    farm.advance(Duration::from_secs(30));
    c.expect("250 2.1.5 Ok").await;
    let journal = farm.journal();
    let at = |pred: &dyn Fn(&EventKind) -> bool| {
        journal
            .iter()
            .find(|e| pred(&e.kind))
            .map(|e| e.at)
            .unwrap()
    };
    let asked = at(&|k| matches!(k, EventKind::Command { line, .. } if line.starts_with("RCPT")));
    let answered = at(&|k| {
        matches!(
            k,
            EventKind::Reply {
                stage: Some(mxfarm::Stage::Rcpt),
                ..
            }
        )
    });
    assert!(
        answered - asked >= Duration::from_secs(30),
        "{asked:?} {answered:?}"
    );
    farm.shutdown().await;
}

#[tokio::test]
async fn a_slow_greeting_comes_after_its_delay() {
    let farm = farm(
        r#"
name = "slow"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
then = { delay = "2m" }
"#,
    )
    .await;
    let mut c = SmtpClient::connect(farm.addr("mx1")).await;
    farm.wait_for(|e| matches!(e.kind, EventKind::ConnectionOpened { .. }))
        .await;
    farm.advance(Duration::from_secs(120));
    let reply = c.reply().await;
    assert!(reply.text().starts_with("220 "), "{reply}");
    let greeting = farm
        .journal()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Reply { .. }))
        .unwrap();
    assert!(greeting.at >= Duration::from_secs(120));
    farm.shutdown().await;
}

#[tokio::test]
async fn a_hang_ends_by_farm_time_without_a_reply() {
    let farm = farm(
        r#"
name = "hang"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "data"
then = { hang = "10m" }
"#,
    )
    .await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.command("RCPT TO:<b@y.test>").await;
    c.send("DATA\r\n").await;
    command_arrived(&farm, "DATA").await;
    farm.advance(Duration::from_secs(9 * 60));
    // Still hanging: a NOOP sent meanwhile is swallowed.
    c.send("NOOP\r\n").await;
    farm.advance(Duration::from_secs(60));
    c.expect_closed().await;
    let closed = connection_closed(&farm, 1).await;
    assert!(closed.at >= Duration::from_secs(600));
    match closed.kind {
        EventKind::ConnectionClosed { by, reason, .. } => {
            assert_eq!(by, ClosedBy::Farm);
            assert!(reason.contains("hung at data"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let delivery = &farm.deliveries()[0];
    assert_eq!(delivery.attempts[0].outcome, Outcome::Deferred);
    assert_eq!(delivery.attempts[0].reply, None);
    farm.shutdown().await;
}

#[tokio::test]
async fn a_hang_ends_when_the_client_gives_up() {
    let farm = farm(
        r#"
name = "hang"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "ehlo"
then = { hang = "1h" }
"#,
    )
    .await;
    let mut c = greeted(farm.addr("mx1")).await;
    c.send("EHLO client.test\r\n").await;
    command_arrived(&farm, "EHLO").await;
    drop(c);
    let closed = connection_closed(&farm, 1).await;
    assert!(matches!(
        closed.kind,
        EventKind::ConnectionClosed {
            by: ClosedBy::Client,
            ..
        }
    ));
    assert!(closed.at < Duration::from_secs(3600));
    farm.shutdown().await;
}

#[tokio::test]
async fn close_without_reply_and_reply_then_close() {
    let farm = farm(
        r#"
name = "drops"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { rcpt = "drop@y.test" }
then = { close = true }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "bye@y.test" }
then = { reply = "554 5.7.1 Rejected", close = true }
"#,
    )
    .await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.send("RCPT TO:<drop@y.test>\r\n").await;
    c.expect_closed().await;

    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.send("RCPT TO:<bye@y.test>\r\n").await;
    c.expect("554 5.7.1 Rejected").await;
    c.expect_closed().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn an_idle_client_gets_421_after_the_command_timeout() {
    let farm = farm(PLAIN).await;
    let mut c = greeted(farm.addr("mx1")).await;
    farm.advance(Duration::from_secs(5 * 60));
    c.expect("421 4.4.2 mx1.farm.test Error: timeout exceeded")
        .await;
    c.expect_closed().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn a_stalled_data_transfer_gets_421_after_the_data_timeout() {
    let farm = farm(PLAIN).await;
    let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
    c.command("RCPT TO:<b@y.test>").await;
    // DATA and the start of the content in one write: the farm has read both before the
    // 354 goes out, so the DATA timeout runs from before the client sees it.
    c.send("DATA\r\nSubject: half a message\r\n").await;
    c.expect("354 End data with <CR><LF>.<CR><LF>").await;
    farm.advance(Duration::from_secs(10 * 60));
    c.expect("421 4.4.2 mx1.farm.test Error: timeout exceeded")
        .await;
    assert!(farm.messages().is_empty());
    farm.shutdown().await;
}

#[tokio::test]
async fn a_full_host_refuses_the_extra_connection_with_421() {
    let farm = farm(
        r#"
name = "small"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
[host.limits]
max-connections = 1
"#,
    )
    .await;
    let mut first = greeted(farm.addr("mx1")).await;
    let mut second = SmtpClient::connect(farm.addr("mx1")).await;
    second
        .expect("421 4.3.2 mx1.farm.test Too many connections, try again later")
        .await;
    second.expect_closed().await;
    first.send("QUIT\r\n").await;
    first.expect("221 2.0.0 Bye").await;
    first.expect_closed().await;
    connection_closed(&farm, 1).await;
    // The slot is free again.
    let mut third = greeted(farm.addr("mx1")).await;
    third.send("NOOP\r\n").await;
    third.expect("250 2.0.0 Ok").await;
    farm.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_open_sessions_421() {
    let farm = farm(PLAIN).await;
    let addr = farm.addr("mx1");
    let mut c = greeted(addr).await;
    c.ehlo("client.test").await;
    let shutdown = tokio::spawn(farm.shutdown());
    c.expect("421 4.3.2 mx1.farm.test Service shutting down")
        .await;
    c.expect_closed().await;
    shutdown.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_same_seed_gives_the_same_journal() {
    let scenario = r#"
name = "dice"
seed = 42
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
when = { chance = 0.5 }
then = { reply = "451 4.3.0 Bad luck" }
"#;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let farm = farm(scenario).await;
        let mut replies = String::new();
        for _ in 0..3 {
            let mut c = mail_from(farm.addr("mx1"), "a@x.test").await;
            for i in 0..8 {
                let reply = c.command(&format!("RCPT TO:<{i}@y.test>")).await;
                replies.push_str(&format!("{reply}\n"));
            }
            c.quit().await;
        }
        runs.push(replies);
        farm.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains("451"), "{}", runs[0]);
    assert!(runs[0].contains("250"), "{}", runs[0]);
}
