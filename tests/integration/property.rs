//! A property of the stories: for randomly generated sender behaviours (messages sent,
//! retried, abandoned, dropped mid-way, connections reused, refused greetings, resets,
//! greylisting, lost replies, from several clients), every contact the sender made
//! appears in exactly one story (one message's deliveries, or its client's own section),
//! and every message the farm kept is a delivered attempt there; the report reads them all.
//!
//! The senders speak SMTP to a real farm over in-memory connections under paused time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::journal::{Command, EventKind};
use mxfarm::testing::SmtpClient;
use mxfarm::{Event, Farm, Outcome, Scenario};
use proptest::prelude::*;

const SCENARIO: &str = r#"
name = "property"
[[domain]]
name = "p.test"
mx = [{ host = "mx1", preference = 10 }, { host = "mx2", preference = 20 }]

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { client = "192.0.2.3" }
then = { reply = "421 4.7.0 not from you" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "grey@p.test" }
then = { greylist = { delay = "2m" } }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "gone@p.test" }
then = { reply = "550 5.1.1 no such user" }
[[host.rule]]
stage = "rcpt"
when = { rcpt = "full@p.test" }
then = { reply = "452 4.2.2 mailbox full" }

[[host]]
name = "mx2"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "connect"
when = { client = "192.0.2.2" }
then = { reset = true }
[[host.rule]]
stage = "mail"
when = { mail = "slow@sender.test" }
then = { reply = "421 4.7.0 slow down" }
[[host.rule]]
stage = "end-of-data"
when = { mail = "lossy@sender.test" }
then = { lose-reply = true }
"#;

const CLIENTS: [&str; 3] = ["192.0.2.1", "192.0.2.2", "192.0.2.3"];
const SENDERS: [&str; 3] = ["a@sender.test", "slow@sender.test", "lossy@sender.test"];
const RECIPIENTS: [&str; 4] = ["bob@p.test", "grey@p.test", "gone@p.test", "full@p.test"];

/// How a transaction ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Through the final dot (if a recipient is accepted).
    Whole,
    /// RSET after the recipients.
    Reset,
    /// The client drops the connection after the recipients.
    DropAfterRcpt,
}

#[derive(Debug, Clone)]
struct Tx {
    /// Which of four messages: its sender and Message-ID follow from it.
    message: usize,
    /// Which recipients, as a bit set over `RECIPIENTS` (never empty).
    recipients: u8,
    end: End,
}

#[derive(Debug, Clone)]
enum Shape {
    /// Connects and drops at once, before the greeting is read.
    Drop,
    /// EHLO, then QUIT.
    Quit,
    /// One or more transactions on one connection, then QUIT.
    Transactions(Vec<Tx>),
}

#[derive(Debug, Clone)]
struct Contact {
    wait_secs: u64,
    client: usize,
    host: usize,
    shape: Shape,
}

fn tx() -> impl Strategy<Value = Tx> {
    (
        0..4usize,
        1..16u8,
        prop_oneof![Just(End::Whole), Just(End::Reset), Just(End::DropAfterRcpt)],
    )
        .prop_map(|(message, recipients, end)| Tx {
            message,
            recipients,
            end,
        })
}

fn contact() -> impl Strategy<Value = Contact> {
    let shape = prop_oneof![
        1 => Just(Shape::Drop),
        1 => Just(Shape::Quit),
        6 => prop::collection::vec(tx(), 1..3).prop_map(Shape::Transactions),
    ];
    (0..400u64, 0..3usize, 0..2usize, shape).prop_map(|(wait_secs, client, host, shape)| Contact {
        wait_secs,
        client,
        host,
        shape,
    })
}

fn body(message: usize) -> String {
    // Message 3 has no Message-ID: its digest names it.
    let id = if message == 3 {
        String::new()
    } else {
        format!("Message-ID: <m{message}@sender.test>\r\n")
    };
    format!("Subject: m{message}\r\n{id}\r\nBody {message}.\r\n")
}

async fn play(farm: &Farm, contacts: &[Contact]) {
    for c in contacts {
        tokio::time::sleep(Duration::from_secs(c.wait_secs)).await;
        let host = ["mx1", "mx2"][c.host];
        let client: SocketAddr = format!("{}:40000", CLIENTS[c.client]).parse().unwrap();
        let stream = farm.connect_in_memory(host, client).unwrap();
        let mut smtp = SmtpClient::over(stream);
        if matches!(c.shape, Shape::Drop) {
            drop(smtp);
            continue;
        }
        match smtp.try_reply().await {
            Some(greeting) if greeting.code == 220 => {}
            _ => continue,
        }
        if smtp
            .try_command("EHLO client.test")
            .await
            .is_none_or(|r| r.code != 250)
        {
            continue;
        }
        let Shape::Transactions(txs) = &c.shape else {
            smtp.quit().await;
            continue;
        };
        let mut open = true;
        for t in txs {
            let sender = SENDERS[t.message % SENDERS.len()];
            let to: Vec<&str> = (0..RECIPIENTS.len())
                .filter(|i| t.recipients & (1 << i) != 0)
                .map(|i| RECIPIENTS[i])
                .collect();
            if !matches!(t.end, End::Whole) {
                // Recipients only, then RSET or a dropped connection.
                let Some(mail) = smtp.try_command(&format!("MAIL FROM:<{sender}>")).await else {
                    open = false;
                    break;
                };
                if mail.code == 421 {
                    open = false;
                    break;
                }
                let mut lost = false;
                if mail.is_positive() {
                    for r in &to {
                        match smtp.try_command(&format!("RCPT TO:<{r}>")).await {
                            Some(reply) if reply.code != 421 => {}
                            _ => {
                                lost = true;
                                break;
                            }
                        }
                    }
                }
                if lost || matches!(t.end, End::DropAfterRcpt) {
                    open = false;
                    break;
                }
                if smtp.try_command("RSET").await.is_none() {
                    open = false;
                    break;
                }
                continue;
            }
            let sent = smtp.transaction(sender, &to, &body(t.message)).await;
            if sent.closed() {
                open = false;
                break;
            }
            if sent.end_of_data.is_none() && smtp.try_command("RSET").await.is_none() {
                // Every recipient refused: the MAIL still stands, so RSET.
                open = false;
                break;
            }
        }
        if open {
            smtp.quit().await;
        }
    }
}

/// Each contact of the journal: (conn, transaction number from 1), or (conn, 0) for a
/// connection without MAIL.
fn journal_contacts(events: &[Event]) -> BTreeSet<(u64, u32)> {
    let mut mails: BTreeMap<u64, u32> = BTreeMap::new();
    let mut open_tx: BTreeMap<u64, bool> = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::ConnectionOpened { conn, .. } => {
                mails.entry(*conn).or_insert(0);
            }
            // A MAIL inside a transaction is refused and starts nothing.
            EventKind::Command {
                conn,
                command: Command::Mail { .. },
                ..
            } if !open_tx.get(conn).copied().unwrap_or(false) => {
                *mails.entry(*conn).or_insert(0) += 1;
                open_tx.insert(*conn, true);
            }
            EventKind::Reply {
                conn, stage, reply, ..
            } => {
                use mxfarm::Stage;
                let ends = match stage {
                    Some(Stage::Mail) => reply.code >= 400,
                    Some(Stage::Data) => reply.code >= 400,
                    Some(Stage::EndOfData) => true,
                    Some(Stage::Rset | Stage::Quit) => true,
                    _ => false,
                };
                if ends {
                    open_tx.insert(*conn, false);
                }
            }
            EventKind::Command {
                conn,
                command: Command::Ehlo { .. } | Command::Helo { .. },
                ..
            } => {
                open_tx.insert(*conn, false);
            }
            _ => {}
        }
    }
    mails
        .into_iter()
        .flat_map(|(conn, n)| {
            if n == 0 {
                vec![(conn, 0)]
            } else {
                (1..=n).map(|t| (conn, t)).collect()
            }
        })
        .collect()
}

fn check(farm: &Farm) -> Result<(), TestCaseError> {
    let events = farm.journal();
    let transcript = farm.transcript();
    let text = transcript.render(mxfarm::render::Granularity::Seconds);
    let mut stories: BTreeMap<(u64, u32), BTreeSet<String>> = BTreeMap::new();
    for d in &transcript.deliveries {
        for a in &d.attempts {
            stories
                .entry((a.conn, a.attempt.transaction))
                .or_default()
                .insert(format!("message {}", d.message));
        }
    }
    for c in &transcript.unattributed {
        for a in &c.attempts {
            stories
                .entry((a.conn, a.attempt.transaction))
                .or_default()
                .insert(format!("client {}", c.client));
        }
    }
    let expected = journal_contacts(&events);
    let told: BTreeSet<(u64, u32)> = stories.keys().copied().collect();
    prop_assert_eq!(&told, &expected, "contacts in the stories\n{}", text);
    for (contact, in_stories) in &stories {
        prop_assert_eq!(
            in_stories.len(),
            1,
            "{:?} is in {:?}\n{}",
            contact,
            in_stories,
            text
        );
    }
    // Every message the farm kept is a delivered attempt of some story.
    let kept: BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::MessageAccepted { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let delivered: BTreeSet<u64> = transcript
        .deliveries
        .iter()
        .flat_map(|d| &d.attempts)
        .filter(|a| a.outcome == Outcome::Delivered)
        .filter_map(|a| a.attempt.kept)
        .collect();
    prop_assert_eq!(kept, delivered, "{}", text);
    // The report reads any story without failing.
    let report = farm.report();
    prop_assert!(report.render().starts_with("retry report: "));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_contact_is_in_exactly_one_story(contacts in prop::collection::vec(contact(), 1..12)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let scenario = Scenario::from_toml("property.toml", SCENARIO).unwrap();
            let farm = Farm::start_ephemeral(scenario).await.unwrap();
            play(&farm, &contacts).await;
            // Let the farm see the last closes.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let result = check(&farm);
            farm.shutdown().await;
            result
        })?;
    }
}
