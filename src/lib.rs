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
//! ## Layout
//!
//! - [`scenario`]: TOML as written → validated [`Scenario`], with every problem reported
//!   at once (file, line, column, hint).
//! - [`farm`]: [`Farm`] binds a listener per host and owns the shared state.
//! - [`smtp`]: the accept loop and the session, generic over the stream.
//! - [`policy`]: the pure decision of which rule answers, and the attempt counters.
//! - [`journal`]: the typed event log, the one source of truth; [`deliveries`] derives
//!   per-(sender, recipient) attempts from it; [`capture`] keeps accepted messages.
//! - [`clock`]: the only place that reads time; [`Farm::advance`] moves it.

pub mod assertions;
pub mod capture;
pub mod clock;
pub mod deliveries;
pub mod farm;
pub mod journal;
pub mod policy;
pub mod render;
pub mod scenario;
pub mod smtp;
pub mod tls;
pub mod transcript;

pub use capture::Message;
pub use deliveries::{Attempt, Delivery, Outcome};
pub use farm::{Farm, FarmError, FarmOptions};
pub use journal::{Event, EventKind};
pub use scenario::{Scenario, ScenarioError, Stage};
