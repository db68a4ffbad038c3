//! # mxfarm — a fake receiving-MX farm for testing mail senders
//!
//! mxfarm plays the MX servers of a mail provider — several hosts, each with its own
//! policy: deferrals, refusals, tarpits, hangs, dropped connections — as a TOML scenario
//! describes them, and journals every connection, command and reply, so that a sender's
//! retry behaviour can be seen and asserted.
//!
//! ## Quick start
//!
//! Start a farm on ephemeral ports, let a client talk to it, then look at what happened:
//!
//! ```
//! use mxfarm::{Farm, Scenario};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let scenario = Scenario::from_toml("quickstart.toml", r#"
//!     name = "quickstart"
//!     [[host]]
//!     name = "mx1"
//!     listen = "127.0.0.1:2525"
//!     [[host.rule]]
//!     stage = "rcpt"
//!     when = { rcpt = "full-*@example.test" }
//!     then = { reply = "452 4.2.2 Mailbox full" }
//! "#)?;
//! let farm = Farm::start_ephemeral(scenario).await?;
//!
//! // Any SMTP client will do; here, raw bytes over TCP.
//! let mut client = tokio::net::TcpStream::connect(farm.addr("mx1")).await?;
//! client.write_all(b"EHLO client.test\r\nMAIL FROM:<me@sender.test>\r\n\
//!     RCPT TO:<full-bob@example.test>\r\nQUIT\r\n").await?;
//! let mut replies = String::new();
//! client.read_to_string(&mut replies).await?;
//! assert!(replies.contains("452 4.2.2 Mailbox full"));
//!
//! let deliveries = farm.deliveries();
//! assert_eq!(deliveries[0].recipient.as_deref(), Some("full-bob@example.test"));
//! assert_eq!(deliveries[0].attempts[0].reply.as_ref().map(|r| r.code), Some(452));
//! farm.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Pinning retry behaviour
//!
//! A sender's retry schedule is the transcript: one block per delivery (one message to
//! one recipient), with offsets from the first attempt, the host and its MX preference,
//! and the reply. Snapshot it with `insta`, and state what matters with
//! [`Farm::expect_delivery`]. Under tokio's paused time, with the sender reaching the
//! farm through [`Farm::connect_in_memory`], a retry schedule of days runs in
//! milliseconds and gives the same transcript each run:
//!
//! ```
//! use std::time::Duration;
//! use mxfarm::{Farm, Scenario, render::Granularity};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let farm = Farm::start_ephemeral(Scenario::from_toml("grey.toml", r#"
//!     name = "grey"
//!     [[domain]]
//!     name = "grey.test"
//!     mx = [{ host = "mx1", preference = 10 }]
//!     [[host]]
//!     name = "mx1"
//!     listen = "127.0.0.1:0"
//!     [[host.rule]]
//!     stage = "rcpt"
//!     then = { greylist = {} }
//! "#)?).await?;
//!
//! // A sender that retries every 10 minutes, in memory: no socket, so paused time is safe.
//! for _ in 0..2 {
//!     let mut stream = farm.connect_in_memory("mx1", "192.0.2.1:4000".parse()?).unwrap();
//!     stream.write_all(b"EHLO me.test\r\nMAIL FROM:<me@sender.test>\r\n\
//!         RCPT TO:<bob@grey.test>\r\nDATA\r\nSubject: hi\r\n\r\n.\r\nQUIT\r\n").await?;
//!     let mut replies = String::new();
//!     stream.read_to_string(&mut replies).await?;
//!     tokio::time::sleep(Duration::from_secs(600)).await;
//! }
//!
//! farm.expect_delivery("me@sender.test", "bob@grey.test")
//!     .delivered_after_attempts(2)
//!     .had_no_early_retries();
//! // In a test: insta::assert_snapshot!(farm.transcript().render(Granularity::Minutes));
//! assert_eq!(farm.transcript().render(Granularity::Minutes), "\
//! delivery <me@sender.test> -> <bob@grey.test> (message 1)
//!   #1  +0m       mx1 (10)  conn 1   RCPT         450 4.2.0 <bob@grey.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/grey.test.html
//!   #2  +10m      mx1 (10)  conn 2   END-OF-DATA  250 2.0.0 Ok: queued as 1
//!   delivered after 2 attempts in 10m
//! ");
//! # Ok(())
//! # }
//! ```
//!
//! Which clocks and streams go together:
//!
//! | stream | real time | paused time (`start_paused = true`) |
//! |---|---|---|
//! | TCP (`farm.addr(..)`, real senders) | safe; move farm time with [`Farm::advance`] | **unsafe**: tokio jumps the clock whenever every task waits, also while a socket waits for bytes, so timeouts fire at random |
//! | in memory ([`Farm::connect_in_memory`]) | safe | safe, and days of retries take no real time |
//!
//! Against a real-time sender such as Postfix, render transcripts with
//! [`Granularity::Minutes`](render::Granularity) so that scheduling jitter does not show.
//!
//! ## What the crate offers
//!
//! - [`scenario`]: load a scenario ([`Scenario::from_toml`], [`Scenario::from_path`],
//!   [`Scenario::embedded`]); every problem is reported at once, with file, line, column
//!   and a hint ([`ScenarioError`]). [`scenario::reference`] lists every key.
//! - [`farm`]: [`Farm`] starts the hosts, takes connections over TCP or
//!   [in memory](Farm::connect_in_memory), moves [farm time](Farm::advance), and shuts
//!   down cleanly.
//! - [`journal`]: the typed [`Event`]s of everything that happened, read with
//!   [`Farm::journal`] or followed with a [`Cursor`](journal::Cursor)
//!   ([`Farm::events_after`]); [`journal::file`] reads and writes journal files.
//! - The journal's views: [`deliveries`] (every attempt per message and recipient),
//!   [`transcript`] (retry stories to snapshot), [`report`] (findings on retry behaviour),
//!   [`assertions`] ([`Farm::expect_delivery`]), and [`render`] (stable text forms).
//! - [`capture`]: the messages the farm accepted ([`Farm::messages`]).
//! - [`testing`]: [`SmtpClient`](testing::SmtpClient), a scripted SMTP client for tests
//!   that sends exact bytes and reads exact replies, over TCP or in memory.
//! - [`clock`] (farm time) and [`tls`] (the farm's CA, for senders that verify).
//! - Control of a running farm: [`Farm::advance`] (journalled), [`Farm::reset`],
//!   [`Farm::greylist`], [`Farm::replace_scenario`]; and [`api`], the same over HTTP
//!   ([`api::ApiServer::start`]), with Server-Sent Events of the journal and a web
//!   timeline, as `mxfarm run --api` serves it.
//!
//! How the crate is built inside, and who may import whom, is in `ARCHITECTURE.md`.

pub mod api;
pub mod assertions;
pub mod capture;
pub mod clock;
pub mod deliveries;
pub mod dns;
pub mod farm;
pub mod journal;
mod millis;
mod policy;
pub mod render;
pub mod report;
pub mod scenario;
pub mod sender;
mod smtp;
pub mod testing;
pub mod tls;
pub mod transcript;

pub use capture::Message;
pub use deliveries::{Attempt, Deliveries, Delivery, Identity, MessageInfo, Outcome};
pub use farm::{Farm, FarmError, FarmOptions, JournalMemory};
pub use journal::{Event, EventKind};
/// The RCPT decision alone, for `benches/policy_state.rs`; not part of the API.
#[doc(hidden)]
pub use policy::bench::RcptDecider;
pub use scenario::{Scenario, ScenarioError, Stage};
