//! Clients that would hold the farm: many connections from one address, and clients a
//! shutdown cannot tell it is over (mid-TLS-handshake, not reading replies). In-memory
//! streams under tokio's paused time, so minutes of farm time take no real time.

use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::journal::{ClosedBy, Read, TlsOutcome};
use mxfarm::render::Granularity;
use mxfarm::testing::SmtpClient;
use mxfarm::{Event, EventKind, Farm, Scenario};
use tokio::io::AsyncWriteExt;

async fn start(toml: &str) -> Farm {
    Farm::start_ephemeral(Scenario::from_toml("test.toml", toml).unwrap())
        .await
        .unwrap()
}

const ONE_HOST: &str = r#"
name = "one"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
"#;

fn from(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn closed(events: &[Event], conn: u64) -> Option<(ClosedBy, String)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::ConnectionClosed {
            conn: c,
            by,
            reason,
            ..
        } if *c == conn => Some((*by, reason.clone())),
        _ => None,
    })
}

/// By default one address may hold 50 connections to a host (Postfix's
/// `smtpd_client_connection_count_limit`): the 51st is told so as Postfix tells it and
/// closed, the journal and the transcript say so, and another address still gets in.
#[tokio::test(start_paused = true)]
async fn a_client_over_its_address_limit_gets_421_and_another_address_gets_in() {
    let farm = start(ONE_HOST).await;
    let mut held = Vec::new();
    for port in 0..50 {
        let stream = farm.connect_in_memory("mx1", from("192.0.2.10", 40_000 + port));
        let mut c = SmtpClient::over(stream.unwrap());
        c.greeting().await;
        held.push(c);
    }
    let stream = farm.connect_in_memory("mx1", from("192.0.2.10", 41_000));
    let mut over = SmtpClient::over(stream.unwrap());
    over.expect("421 4.7.0 mx1.farm.test Error: too many connections from 192.0.2.10")
        .await;
    over.expect_closed().await;

    let stream = farm.connect_in_memory("mx1", from("192.0.2.11", 40_000));
    let mut other = SmtpClient::over(stream.unwrap());
    other.greeting().await;
    other.quit().await;

    // A connection that ends gives its address's slot back.
    held[0].quit().await;
    let stream = farm.connect_in_memory("mx1", from("192.0.2.10", 41_001));
    let mut again = SmtpClient::over(stream.unwrap());
    again.greeting().await;

    let events = farm.journal();
    assert_eq!(
        closed(&events, 51),
        Some((
            ClosedBy::Farm,
            "too many connections from this client".to_string()
        ))
    );
    let transcript = farm.transcript().render(Granularity::Seconds);
    assert!(
        transcript.contains("421 4.7.0 mx1.farm.test Error: too many connections from 192.0.2.10"),
        "{transcript}"
    );
    drop(held);
    farm.shutdown().await;
}

/// A shutdown tells a waiting client 421; a client stuck in the TLS handshake and one
/// that does not read its replies cannot be told, and are ended after the grace period,
/// not after their command timeout (an hour here). The journal says how each ended.
#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_stuck_sessions_after_the_grace_period() {
    let farm = start(
        r#"
name = "stuck"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.farm.test"
tls = "valid"
[host.limits]
command-timeout = "1h"
"#,
    )
    .await;
    let client = from("192.0.2.10", 40_000);

    // 1: STARTTLS, then the start of a ClientHello and nothing more.
    let mut tls = SmtpClient::over(farm.connect_in_memory("mx1", client).unwrap());
    tls.greeting().await;
    tls.ehlo("client.test").await;
    tls.send("STARTTLS\r\n").await;
    tls.expect("220 2.0.0 Ready to start TLS").await;
    let mut handshaking = tls.into_inner();
    handshaking
        .write_all(b"\x16\x03\x01\x00\xa5\x01")
        .await
        .unwrap();

    // 2: pipelines ten thousand NOOPs and reads none of the replies. Once the session
    // has answered 4,700 of them (14 bytes each), its replies are more than the 64 KiB
    // the stream holds, so its write waits, and it never waits for a command again.
    let mut deaf = farm.connect_in_memory("mx1", client).unwrap();
    deaf.write_all("NOOP\r\n".repeat(10_000).as_bytes())
        .await
        .unwrap();
    let mut noops = 0;
    farm.wait_for(|e| {
        if let EventKind::Command { conn: 2, line, .. } = &e.kind {
            noops += usize::from(line == "NOOP");
        }
        noops >= 4_700
    })
    .await;

    // 3: waits for its next command, and can be told.
    let mut idle = SmtpClient::over(farm.connect_in_memory("mx1", client).unwrap());
    idle.greeting().await;

    let mut cursor = farm.events_after(0);
    let clock = farm.clock().clone();
    let before = clock.now();
    let grace = Duration::from_secs(3);
    farm.shutdown_within(grace).await;
    let took = clock.now() - before;
    assert!(
        took >= grace && took < Duration::from_secs(60),
        "ended after the grace, not the command timeout: {took:?}"
    );

    idle.expect("421 4.3.2 mx1.farm.test Service shutting down")
        .await;
    idle.expect_closed().await;
    let mut events = Vec::new();
    while let Some(read) = cursor.next().await {
        if let Read::Event(event) = read {
            events.push(event);
        }
    }
    assert_eq!(
        closed(&events, 1),
        Some((
            ClosedBy::Farm,
            "farm shut down: the TLS handshake was still under way when the grace period ended"
                .to_string()
        ))
    );
    let broken = events.iter().any(|e| {
        matches!(&e.kind, EventKind::TlsHandshake {
            conn: 1,
            outcome: TlsOutcome::Failed { error, aborted_by: ClosedBy::Farm },
            ..
        } if error == "the farm shut down during the handshake")
    });
    assert!(broken, "the handshake is journalled as broken by the farm");
    assert_eq!(
        closed(&events, 2),
        Some((
            ClosedBy::Farm,
            "farm shut down: the client was not reading its replies when the grace period ended"
                .to_string()
        ))
    );
    assert_eq!(
        closed(&events, 3),
        Some((ClosedBy::Farm, "farm shutting down".to_string()))
    );
}
