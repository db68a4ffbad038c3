//! How long `mxfarm simulate` takes: 1,000 messages against the aol scenario under the
//! Postfix model with its defaults (a five-day queue lifetime), as the command runs it
//! (the farm's DNS on loopback, paused time), in two shapes:
//!
//! - **spread**: one message every 432 s, so arrivals span the five days; each to a
//!   recipient of its own, in turn an ordinary one (greylisted on mx1, deferred an hour
//!   on mx2), one whose mailbox is full for six hours, one that does not exist (550), and
//!   another ordinary one;
//! - **burst**: the same 1,000 messages all at once.
//!
//! The target (issue 14): under 2 s of wall time for each on this 2-core machine.
//! `cargo bench --bench simulate` (add `-- --quick` for one run of each). Prints a
//! `RESULT` line per shape.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mxfarm::sender::{Sender, SimMessage};
use mxfarm::{Farm, FarmOptions, scenario};

const MESSAGES: usize = 1000;
const TARGET: Duration = Duration::from_secs(2);

fn messages(spread: bool) -> Vec<SimMessage> {
    (0..MESSAGES)
        .map(|i| {
            let to = match i % 4 {
                0 => format!("alice{i}@aol.test"),
                1 => format!("full-{i}@aol.test"),
                2 => "gone@aol.test".to_string(),
                _ => format!("bob{i}@aol.test"),
            };
            let at = if spread {
                Duration::from_secs(432 * i as u64)
            } else {
                Duration::ZERO
            };
            SimMessage {
                at,
                ..SimMessage::new("me@sender.test", &[&to])
            }
        })
        .collect()
}

/// One simulation; returns (sessions, delivered, bounced).
async fn run(messages: &[SimMessage]) -> (usize, usize, usize) {
    let mut scenario = scenario::load_named("aol").expect("the aol scenario");
    scenario.journal.max_events = 2_000_000;
    let dns = SocketAddr::from(([127, 0, 0, 1], 0));
    let farm = Farm::start_with(scenario, FarmOptions::ephemeral().dns(dns))
        .await
        .expect("the farm");
    let simulation = farm.simulate(&Sender::postfix(), messages).await;
    farm.shutdown().await;
    let sessions = simulation
        .summary
        .sessions_per_host
        .iter()
        .map(|(_, n)| n)
        .sum();
    (
        sessions,
        simulation.summary.delivered,
        simulation.summary.bounced,
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
    let runs = if quick { 1 } else { 5 };
    for (shape, spread) in [("spread", true), ("burst", false)] {
        let messages = messages(spread);
        let mut times = Vec::new();
        let mut counts = (0, 0, 0);
        for _ in 0..runs {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("a runtime");
            let started = Instant::now();
            counts = runtime.block_on(run(&messages));
            times.push(started.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        let (sessions, delivered, bounced) = counts;
        assert_eq!(delivered + bounced, MESSAGES, "every message settles");
        println!(
            "simulate {shape}: {MESSAGES} messages, {sessions} sessions, {delivered} delivered, {bounced} bounced; median of {runs} run(s) {median:.2?} (target {TARGET:?}: {})",
            if median < TARGET { "met" } else { "MISSED" }
        );
        println!(
            "RESULT shape={shape} wall_ms={:.0} sessions={sessions} sessions_per_sec={:.0}",
            median.as_secs_f64() * 1000.0,
            sessions as f64 / median.as_secs_f64()
        );
    }
}
