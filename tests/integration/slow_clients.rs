//! Clients that would hold the farm: many connections from one address. In-memory
//! streams under tokio's paused time, so minutes of farm time take no real time.

use std::net::SocketAddr;

use mxfarm::journal::ClosedBy;
use mxfarm::render::Granularity;
use mxfarm::testing::SmtpClient;
use mxfarm::{Event, EventKind, Farm, Scenario};

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
