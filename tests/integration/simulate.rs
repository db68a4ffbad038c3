//! The sender models against the shipped scenarios, in virtual time over in-memory
//! sessions, with the farm's DNS answering their MX lookups: each model's story
//! (the sender's side, the farm's transcript and report) snapshotted, and the same on
//! every run.

use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::render::Granularity;
use mxfarm::sender::{Fate, ModelKind, Sender, SimMessage, SimOptions, Simulation};
use mxfarm::{Farm, FarmOptions, scenario};

/// The recipients whose stories each shipped scenario tells, one message each. Those
/// whose deferral lasts hours (aol's full mailbox) have tests of their own below: at
/// Exchange 2010's one-minute retries their stories run to thousands of lines.
fn recipients(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "aol" => &["alice@aol.test", "bob@aol.test", "gone@aol.test"],
        "dns-trouble" => &["alice@trouble.test"],
        // Six messages from one address: the sixth in the hour meets the rate limit.
        "gmail" => &[
            "alice@gmail.test",
            "bob@gmail.test",
            "carol@gmail.test",
            "dave@gmail.test",
            "erin@gmail.test",
            "frank@gmail.test",
        ],
        "greylist" => &["bob@greylist.test"],
        "lossy" => &[
            "alice@lossy.test",
            "drop-a@lossy.test",
            "lost-a@lossy.test",
            "late-a@lossy.test",
        ],
        "outlook" => &["alice@outlook.test"],
        "yahoo" => &["alice@yahoo.test", "full-bob@yahoo.test"],
        other => panic!("no recipients chosen for the shipped scenario {other:?}: add them here"),
    }
}

async fn farm(name: &str) -> Farm {
    let scenario = scenario::load_named(name).unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], 0));
    Farm::start_with(scenario, FarmOptions::ephemeral().dns(dns))
        .await
        .unwrap()
}

fn messages(scenario: &str) -> Vec<SimMessage> {
    recipients(scenario)
        .iter()
        .map(|to| SimMessage::new("me@sender.test", &[to]))
        .collect()
}

/// The whole story of one run, as the snapshot holds it.
async fn story(sender: &Sender, scenario: &str) -> (String, Simulation) {
    let farm = farm(scenario).await;
    // gmail refuses every client without a PTR record, and only loopback has one there.
    let client = match scenario {
        "gmail" => std::net::Ipv4Addr::LOCALHOST.into(),
        _ => SimOptions::default().client,
    };
    let options = SimOptions {
        client,
        ..SimOptions::default()
    };
    let simulation = farm
        .simulate_with(sender, &messages(scenario), &options)
        .await;
    let text = format!(
        "{}\n== the farm's transcript ==\n{}\n== the farm's report ==\n{}",
        simulation.render(Granularity::Seconds),
        farm.transcript().render(Granularity::Seconds),
        farm.report().render()
    );
    farm.shutdown().await;
    (text, simulation)
}

async fn snapshot_every_scenario(kind: ModelKind) {
    for embedded in scenario::embedded() {
        let sender = Sender::new(kind);
        let (first, simulation) = story(&sender, embedded.name).await;
        let (again, _) = story(&sender, embedded.name).await;
        assert_eq!(
            first,
            again,
            "{} against {}: a second run differs",
            kind.name(),
            embedded.name
        );
        let still_queued = simulation
            .messages
            .iter()
            .flat_map(|m| &m.recipients)
            .any(|r| r.fate == Fate::Queued);
        assert!(
            !still_queued,
            "{} against {}: a message never settled",
            kind.name(),
            embedded.name
        );
        insta::assert_snapshot!(format!("simulate_{}_{}", kind.name(), embedded.name), first);
    }
}

#[tokio::test(start_paused = true)]
async fn postfix_against_every_shipped_scenario() {
    snapshot_every_scenario(ModelKind::Postfix).await;
}

#[tokio::test(start_paused = true)]
async fn exim_against_every_shipped_scenario() {
    snapshot_every_scenario(ModelKind::Exim).await;
}

#[tokio::test(start_paused = true)]
async fn exchange_2010_against_every_shipped_scenario() {
    snapshot_every_scenario(ModelKind::Exchange2010).await;
}

#[tokio::test(start_paused = true)]
async fn exchange_2016_against_every_shipped_scenario() {
    snapshot_every_scenario(ModelKind::Exchange2016).await;
}

#[tokio::test(start_paused = true)]
async fn sendmail_against_every_shipped_scenario() {
    snapshot_every_scenario(ModelKind::Sendmail).await;
}

#[tokio::test(start_paused = true)]
async fn custom_against_every_shipped_scenario() {
    snapshot_every_scenario(ModelKind::Custom).await;
}

/// The story behind the seed case: an Exchange that warns after 30 minutes instead of 4
/// hours sends its user "400 4.4.7 Message delayed" for a greylisted message that the
/// default would have delivered silently.
#[tokio::test(start_paused = true)]
async fn a_shorter_delay_notification_timeout_warns_of_what_the_default_hides() {
    let message = [SimMessage::new("me@sender.test", &["full-bob@aol.test"])];
    let quiet = Sender::new(ModelKind::Exchange2010)
        .set("DelayNotificationTimeout", "00:30:00")
        .unwrap();
    let farm = farm("aol").await;
    let warned = farm.simulate(&quiet, &message).await;
    let notice = &warned.messages[0].notices[0];
    assert!(
        notice.text.contains("400 4.4.7 Message delayed"),
        "{notice:?}"
    );
    assert!(notice.at >= Duration::from_secs(30 * 60) && notice.at < Duration::from_secs(32 * 60));
    // full-bob's mailbox is full for 6 hours: delivered then, by either setting.
    let Fate::Delivered { at, .. } = warned.messages[0].recipients[0].fate else {
        panic!("not delivered: {:?}", warned.messages[0]);
    };
    assert!(at >= Duration::from_secs(6 * 3600) && at < Duration::from_secs(6 * 3600 + 120));
    farm.shutdown().await;
}

/// Postfix's `maximal_queue_lifetime`: a message still deferred past it is returned to
/// its sender with a bounce notice, and the farm sees no try after that.
#[tokio::test(start_paused = true)]
async fn postfix_returns_a_message_deferred_past_its_queue_lifetime() {
    let sender = Sender::postfix()
        .set("maximal_queue_lifetime", "1h")
        .unwrap();
    let farm = farm("aol").await;
    let simulation = farm
        .simulate(
            &sender,
            &[SimMessage::new("me@sender.test", &["full-bob@aol.test"])],
        )
        .await;
    let m = &simulation.messages[0];
    let Fate::Bounced { at, why } = &m.recipients[0].fate else {
        panic!("not bounced: {m:?}");
    };
    assert!(why.contains("expired after 1h"), "{why}");
    // The try at 80 minutes is the first past the hour: 5, 10, 20, 40, 80 minutes.
    assert_eq!(at.as_secs() / 60, 80);
    assert_eq!(
        m.notices.last().map(|n| n.kind),
        Some(mxfarm::sender::NoticeKind::Bounce)
    );
    let last_contact = farm
        .journal()
        .iter()
        .filter(|e| e.kind.connection().is_some())
        .map(|e| e.at)
        .max()
        .unwrap();
    assert!(last_contact <= *at, "the farm was reached after the bounce");
    farm.shutdown().await;
}

/// A different seed shuffles the equal-preference hosts differently; the same seed,
/// the same way.
#[tokio::test(start_paused = true)]
async fn the_seed_decides_the_order_of_equal_preference_hosts() {
    let many: Vec<SimMessage> = (0..12)
        .map(|_| SimMessage::new("me@sender.test", &["alice@aol.test"]))
        .collect();
    let hosts = |s: &Simulation| -> Vec<String> {
        s.messages
            .iter()
            .map(|m| m.tries[0].sessions[0].host.clone())
            .collect()
    };
    let mut seen = Vec::new();
    for seed in [1, 1, 2] {
        let farm = farm("aol").await;
        let options = SimOptions {
            seed,
            ..Default::default()
        };
        seen.push(hosts(
            &farm
                .simulate_with(&Sender::postfix(), &many, &options)
                .await,
        ));
        farm.shutdown().await;
    }
    assert_eq!(seen[0], seen[1]);
    assert_ne!(seen[0], seen[2]);
    let distinct: std::collections::BTreeSet<&String> = seen[0].iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "all three equal hosts come first sometimes: {:?}",
        seen[0]
    );
}

/// A model told to wait nothing still moves on: the engine waits at least a second
/// between two looks at a message, so the run ends.
#[tokio::test(start_paused = true)]
async fn a_retry_interval_of_zero_still_lets_time_pass() {
    let sender = Sender::new(ModelKind::Exchange2016)
        .set("MessageRetryInterval", "0")
        .unwrap();
    let farm = farm("greylist").await;
    let simulation = farm
        .simulate(
            &sender,
            &[SimMessage::new("me@sender.test", &["bob@greylist.test"])],
        )
        .await;
    let m = &simulation.messages[0];
    assert_eq!(m.delivered_after(), Some(Duration::from_secs(300)));
    // A look every second until the greylisting's 5 minutes are over.
    assert_eq!(m.attempts(), 301);
    farm.shutdown().await;
}

/// The hosts of each try of each message of tests/e2e/model-check.toml, which the
/// end-to-end suite also checks against the real Postfix and Exim.
async fn model_check_tries(sender: Sender) -> Vec<Vec<Vec<String>>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/model-check.toml");
    let scenario = scenario::load_named(path).unwrap();
    let dns = SocketAddr::from(([127, 0, 0, 1], 0));
    let farm = Farm::start_with(scenario, FarmOptions::ephemeral().dns(dns))
        .await
        .unwrap();
    let messages = [
        SimMessage::new("model-slow@sender.test", &["slow-bob@model.test"]),
        SimMessage::new(
            "model-mixed@sender.test",
            &["dave@model.test", "slow-eve@model.test"],
        ),
    ];
    let simulation = farm.simulate(&sender, &messages).await;
    farm.shutdown().await;
    simulation
        .messages
        .iter()
        .map(|m| {
            m.tries
                .iter()
                .map(|t| t.sessions.iter().map(|s| s.host.clone()).collect())
                .collect()
        })
        .collect()
}

/// postconf(5), smtp_mx_session_limit: two sessions past the handshake per delivery, so
/// a 452 at RCPT on every host is tried on mx1 and mx2, not mx3; the fifth RCPT passes.
#[tokio::test(start_paused = true)]
async fn postfix_stops_a_try_after_two_sessions_that_passed_the_handshake() {
    let tries = model_check_tries(Sender::postfix()).await;
    let both = vec![vec!["mx1".to_string(), "mx2".to_string()]; 2];
    let mut expected = both.clone();
    expected.push(vec!["mx1".to_string()]);
    assert_eq!(tries[0], expected);
    assert_eq!(tries[1], expected);
}

/// Exim tries the next host for addresses still deferred only while no host has taken
/// the message: slow-bob@ alone goes to all three hosts; slow-eve@, whose message mx1
/// took for dave@, waits for the next queue run, then goes to all three (as the real
/// Exim 4.96 does).
#[tokio::test(start_paused = true)]
async fn exim_leaves_the_rest_to_the_next_queue_run_once_a_host_took_the_message() {
    let tries = model_check_tries(Sender::new(ModelKind::Exim)).await;
    let hosts = |list: &[&[&str]]| -> Vec<Vec<String>> {
        list.iter()
            .map(|t| t.iter().map(|h| h.to_string()).collect())
            .collect()
    };
    assert_eq!(tries[0], hosts(&[&["mx1", "mx2", "mx3"], &["mx1", "mx2"]]));
    assert_eq!(
        tries[1],
        hosts(&[&["mx1"], &["mx1", "mx2", "mx3"], &["mx1"]])
    );
}
