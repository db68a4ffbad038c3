//! The postfix model's connection cache and concurrency window, in virtual time against
//! tests/e2e/model-check.toml and a one-host scenario, read from the farm's own journal:
//! which deliveries reuse an open connection (an RSET before their MAIL, no new
//! connection), which host that sends them to, and when the cache lets go.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::journal::{ClosedBy, EventKind};
use mxfarm::sender::{Sender, SimMessage, Simulation};
use mxfarm::{Farm, FarmOptions, scenario};

fn at(from: &str, to: &str, millis: u64) -> SimMessage {
    SimMessage {
        at: Duration::from_millis(millis),
        ..SimMessage::new(from, &[to])
    }
}

/// The connection-cache story of model-check.toml, as scripts/e2e-mta.sh plays it to the
/// real Postfix: model-hold@'s delivery keeps the queue busy for 4 s; model-first@ comes
/// half a second later, then model-turn@ (421 on mx1, taken by mx2), then model-reuse@.
async fn cache_story(sender: Sender) -> (Simulation, Vec<mxfarm::journal::Event>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/model-check.toml");
    let scenario = scenario::load_named(path).unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], 0));
    let farm = Farm::start_with(scenario, FarmOptions::ephemeral().dns(dns))
        .await
        .unwrap();
    let messages = [
        at("model-hold@sender.test", "ann@model.test", 0),
        at("model-first@sender.test", "ben@model.test", 500),
        at("model-turn@sender.test", "cat@model.test", 1000),
        at("model-reuse@sender.test", "dan@model.test", 1500),
    ];
    let simulation = farm.simulate(&sender, &messages).await;
    let journal = farm.journal();
    farm.shutdown().await;
    (simulation, journal)
}

fn hosts(simulation: &Simulation, n: usize) -> Vec<Vec<(String, bool)>> {
    simulation.messages[n]
        .tries
        .iter()
        .map(|t| {
            t.sessions
                .iter()
                .map(|s| (s.host.clone(), s.reused))
                .collect()
        })
        .collect()
}

/// The commands of each connection, by the farm's connection number.
fn commands(journal: &[mxfarm::journal::Event]) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in journal {
        if let EventKind::Command { conn, line, .. } = &e.kind {
            out.entry(*conn).or_default().push(line.clone());
        }
    }
    out
}

/// CONNECTION_CACHE_README and smtp_connect.c: a delivery that finds the destination's
/// open connection goes straight to its host, skipping the preferred host that refused
/// the delivery before; qmgr_entry_select turns on-demand caching on only for deliveries
/// back to back with the one before.
#[tokio::test(start_paused = true)]
async fn postfix_sends_a_back_to_back_delivery_over_the_connection_the_last_one_left_open() {
    let (simulation, journal) = cache_story(Sender::postfix()).await;
    let h = |s: &str, reused| (s.to_string(), reused);
    assert_eq!(hosts(&simulation, 0), [vec![h("mx1", false)]]);
    // Not back to back: the queue's last delivery (none yet) did not just end.
    assert_eq!(hosts(&simulation, 1), [vec![h("mx1", false)]]);
    assert_eq!(
        hosts(&simulation, 2),
        [vec![h("mx1", false), h("mx2", false)]]
    );
    // Straight to mx2, over model-turn@'s connection: mx1 is not asked.
    assert_eq!(hosts(&simulation, 3), [vec![h("mx2", true)]]);

    let by_conn = commands(&journal);
    let turn_and_reuse: Vec<&Vec<String>> = by_conn
        .values()
        .filter(|c| c.iter().any(|l| l.contains("model-reuse@")))
        .collect();
    assert_eq!(turn_and_reuse.len(), 1, "{by_conn:#?}");
    let lines = turn_and_reuse[0];
    let turn = lines
        .iter()
        .position(|l| l.contains("MAIL FROM:<model-turn@"))
        .unwrap();
    let reuse = lines
        .iter()
        .position(|l| l.contains("MAIL FROM:<model-reuse@"))
        .unwrap();
    assert!(turn < reuse);
    assert_eq!(lines[reuse - 1], "RSET", "{lines:?}");
    assert!(
        !lines.iter().any(|l| l == "QUIT"),
        "a cached connection is not quit: {lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("EHLO")) || lines[0].starts_with("EHLO"));

    // The cache lets the connection go 2 s (smtp_connection_cache_time_limit) after
    // model-reuse@'s delivery at 1.5 s, the client closing it without QUIT.
    let conn = *by_conn
        .iter()
        .find(|(_, c)| c.iter().any(|l| l.contains("model-reuse@")))
        .unwrap()
        .0;
    let closed = journal
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ConnectionClosed { conn: c, by, .. } if *c == conn => Some((e.at, *by)),
            _ => None,
        })
        .expect("the cached connection was closed");
    assert_eq!(closed.1, ClosedBy::Client);
    assert_eq!(
        closed.0,
        Duration::from_millis(3500),
        "closed at {:?}",
        closed.0
    );
}

/// postconf(5), smtp_connection_cache_on_demand = no: every delivery a new connection,
/// so model-reuse@ starts at mx1 as any other.
#[tokio::test(start_paused = true)]
async fn without_the_cache_every_delivery_starts_at_the_preferred_host() {
    let sender = Sender::postfix()
        .set("smtp_connection_cache_on_demand", "no")
        .unwrap();
    let (simulation, journal) = cache_story(sender).await;
    assert_eq!(hosts(&simulation, 3), [vec![("mx1".to_string(), false)]]);
    assert!(
        commands(&journal)
            .values()
            .all(|c| !c.iter().any(|l| l == "RSET")),
        "an RSET without the cache"
    );
}

/// A burst of 12 messages to a one-host domain: qmgr's window lets 5 go at once, then
/// one more after each delivery that did not fail; the deliveries picked as others end
/// are back to back, keep their connections, and later ones reuse them. Every
/// connection is closed in the end, and the farm took all 12.
#[tokio::test(start_paused = true)]
async fn a_burst_reuses_connections_and_leaves_none_open() {
    let one_host = r#"
name = "one-host"
[[domain]]
name = "example.test"
mx = [{ host = "mx1", preference = 10 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
"#;
    let farm = Farm::start_ephemeral(scenario::load_str("one-host.toml", one_host).unwrap())
        .await
        .unwrap();
    let messages: Vec<SimMessage> = (0..40)
        .map(|_| SimMessage::new("me@sender.test", &["alice@example.test"]))
        .collect();
    let simulation = farm.simulate(&Sender::postfix(), &messages).await;
    let journal = farm.journal();
    farm.shutdown().await;
    let reused = simulation
        .messages
        .iter()
        .flat_map(|m| &m.tries)
        .flat_map(|t| &t.sessions)
        .filter(|s| s.reused)
        .count();
    let opened = journal
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ConnectionOpened { .. }))
        .count();
    let closed = journal
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ConnectionClosed { .. }))
        .count();
    assert!(reused > 0, "no delivery reused a connection");
    eprintln!("{opened} connections, {reused} reused");
    assert_eq!(opened + reused, 40, "{opened} connections, {reused} reused");
    assert_eq!(closed, opened, "a connection left open");
    assert!(
        simulation
            .messages
            .iter()
            .all(|m| m.delivered_after() == Some(Duration::ZERO))
    );
    // The five first deliveries had no delivery before them to be back to back with.
    let first_five = simulation.messages[..5]
        .iter()
        .all(|m| !m.tries[0].sessions[0].reused);
    assert!(first_five);
}
