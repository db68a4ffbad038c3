//! One SMTP conversation, generic over the stream (DESIGN principle 4): the same code runs
//! over TCP, over TLS after STARTTLS, and over `tokio::io::duplex` in tests.
//!
//! The pieces, each an `impl Session` of its own:
//! - this file: the session's state, its run from greeting to close, and the dispatch of
//!   each command line (parsed by `smtp-proto`);
//! - [`input`]: framing lines, waiting for input, writing replies, tarpits and hangs;
//! - [`act`]: carrying out a policy verdict;
//! - [`envelope`]: EHLO/HELO, MAIL, RCPT, RSET, QUIT;
//! - [`content`]: DATA and BDAT, and the final dot;
//! - [`starttls`]: STARTTLS, the handshake and its faults.
//!
//! Replies are written into an output buffer that is flushed only when the session would
//! otherwise wait (for input, a tarpit delay or a hang), which answers pipelined commands
//! in order and in one write.

mod act;
mod content;
mod envelope;
mod input;
mod learn;
mod starttls;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{Error as ParseError, Request};
use tokio::io::AsyncWriteExt;

use super::env::{Env, Shutdown, Signal};
use super::host::{HostRuntime, Slot};
use super::transport::Transport;
use crate::clock::Timer;
use crate::journal::{ClosedBy, CommandRef, EventKind};
use crate::policy::{self, Conversation, Facts, Point};
use crate::scenario::{Parsing, Stage};

/// Why a conversation ended; carried up with `?` from wherever it ended.
#[derive(Debug)]
pub(super) struct Closed {
    by: ClosedBy,
    reason: Cow<'static, str>,
}

impl Closed {
    fn by_client(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            by: ClosedBy::Client,
            reason: reason.into(),
        }
    }

    fn by_farm(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            by: ClosedBy::Farm,
            reason: reason.into(),
        }
    }
}

type Step<T = ()> = Result<T, Closed>;

/// The envelope of the transaction in progress.
#[derive(Debug, Default)]
struct Transaction {
    sender: String,
    declared_size: Option<u64>,
    recipients: Vec<String>,
    /// Whether any RCPT was tried, to tell "need RCPT" from "no valid recipients".
    rcpt_tried: bool,
    /// The first recipients refused (at most [`REFUSED_NAMED`]), with the reply code, for
    /// the transaction's log line: a client may send any number of refused RCPTs, and the
    /// line must stay bounded.
    refused: Vec<(String, u16)>,
    /// Every recipient refused so far, named in `refused` or not.
    refused_count: usize,
    /// RCPTs answered `452 4.5.3` because the transaction already had `max-recipients`.
    overshoot: usize,
    /// BDAT content received so far, once the first chunk was accepted.
    chunks: Option<content::Incoming>,
}

/// Where the conversation stands, as SMTP sees it.
#[derive(Debug)]
struct Protocol {
    helo: Option<String>,
    /// False after a refusing greeting: then only QUIT is served.
    in_service: bool,
    tx: Option<Transaction>,
    errors: usize,
    /// Transactions started (MAIL accepted) on this connection so far.
    transactions: u32,
    /// Whether STARTTLS has completed: the rest of the session is encrypted.
    encrypted: bool,
    /// Whether the last EHLO reply advertised STARTTLS.
    starttls_offered: bool,
    /// What the farm's DNS said of the client, for the rules that test it.
    dns: policy::learnt::DnsFacts,
}

impl Protocol {
    /// What the policy may know of the conversation now.
    fn facts(&self) -> Facts<'_> {
        let tx = self.tx.as_ref();
        Facts {
            helo: self.helo.as_deref(),
            tls: self.encrypted,
            sender: tx.map(|tx| tx.sender.as_str()),
            declared_size: tx.and_then(|tx| tx.declared_size),
            accepted: tx.map_or(&[][..], |tx| tx.recipients.as_slice()),
            transactions: self.transactions,
            dns: &self.dns,
        }
    }
}

/// Received bytes not yet consumed, and the state of line framing.
#[derive(Debug)]
struct Input {
    /// `buf[start..]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
    /// After a line longer than the limit: skip input up to the next newline.
    discarding_line: bool,
}

/// One client connection to one host.
pub(super) struct Session {
    /// TCP, an in-memory pipe, or TLS over either after STARTTLS.
    stream: Box<dyn Transport>,
    host: Arc<HostRuntime>,
    env: Env,
    shutdown: Shutdown,
    /// Resolves once the shutdown has begun: made once, and polled by every wait, so that
    /// a wait does not register (and drop) a waiter on the shutdown each time.
    shutdown_begun: Signal,
    /// Every wait of the session on farm time (a command, a tarpit, a write): made once.
    timer: Timer,
    conn: u64,
    client: SocketAddr,
    /// The policy's state of this connection, handed to every decision.
    policy: Conversation,
    protocol: Protocol,
    input: Input,
    /// Replies not yet written.
    output: Vec<u8>,
    /// Farm time when the current command arrived: delays and hangs count from it.
    command_at: Duration,
    /// Set when the connection was reset: then it is dropped without a shutdown.
    was_reset: bool,
    /// The host connection slot, or the limit the connection met; then the session only
    /// says so and closes.
    slot: Option<Slot>,
}

/// How much the session asks the kernel for at a time.
const READ_CHUNK: usize = 8 * 1024;
/// What a read reserves when nothing is pending: a command line fits, and a connection
/// that sits idle between commands (or never sends one) holds no more than this until
/// it sends more than a line at once.
const FIRST_READ: usize = 1024;

/// How many refused recipients a transaction's log line names; it counts the rest.
const REFUSED_NAMED: usize = 100;
/// Why a session ended that was still busy when the shutdown's grace period was over.
const AT_SHUTDOWN: &str = "farm shut down: the session was still busy when the grace period ended";

impl Session {
    pub(super) fn new(
        stream: Box<dyn Transport>,
        host: Arc<HostRuntime>,
        env: Env,
        shutdown: Shutdown,
        conn: u64,
        client: SocketAddr,
        slot: Slot,
    ) -> Self {
        let policy = host.policy.open(conn, client.ip());
        let shutdown_begun = shutdown.begun_kept();
        let timer = env.clock.timer();
        Self {
            stream,
            host,
            env,
            shutdown,
            shutdown_begun,
            timer,
            conn,
            client,
            policy,
            protocol: Protocol {
                helo: None,
                in_service: true,
                tx: None,
                errors: 0,
                transactions: 0,
                encrypted: false,
                starttls_offered: false,
                dns: Default::default(),
            },
            input: Input {
                buf: Vec::new(),
                start: 0,
                discarding_line: false,
            },
            output: Vec::with_capacity(1024),
            command_at: Duration::ZERO,
            was_reset: false,
            slot: Some(slot),
        }
    }

    /// Runs the conversation to its end and journals how it ended. Never fails: whatever
    /// the client does ends this connection only.
    pub(super) async fn run(mut self) {
        // Set before the event is journalled, so that whoever sees the connection in the
        // journal and advances the clock also moves a greeting delay's deadline.
        self.command_at = self.env.clock.now();
        self.record(EventKind::ConnectionOpened {
            host: self.host.name.clone(),
            conn: self.conn,
            client: self.client,
        });
        let shutdown = self.shutdown.clone();
        // Wherever the conversation stands when the shutdown's grace period is over (its
        // own waits end it sooner, with a better reason), it ends, and is journalled.
        let closed = tokio::select! {
            biased;
            conversed = self.converse() => match conversed {
                Ok(()) => Closed::by_client("conversation ended"),
                Err(closed) => closed,
            },
            () = shutdown.aborted_kept() => Closed::by_farm(AT_SHUTDOWN),
        };
        self.end_transaction(&format!("connection closed: {}", closed.reason));
        // Give back the connection slots and journal the end before the client can see
        // it: a sender that reconnects as soon as it reads the 221 must find its slot
        // free, and a test that saw EOF must find the close in the journal.
        self.slot = None;
        self.policy.release();
        self.record(EventKind::ConnectionClosed {
            host: self.host.name.clone(),
            conn: self.conn,
            by: closed.by,
            reason: closed.reason.into_owned(),
        });
        // Replies still buffered (a 421, a 221) go out before the close; after a reset
        // nothing may go out, not even the FIN of a shutdown, so that the client sees RST.
        // A client that does not read gets the command timeout, or the rest of the
        // shutdown's grace period, and no more.
        if !self.was_reset && !shutdown.is_aborted() {
            let deadline = self.env.clock.now() + self.host.config.limits.command_timeout;
            let clock = self.env.clock.clone();
            let goodbye = async {
                let _ = self.flush().await;
                if self.stream.ends_with_shutdown() {
                    let _ = self.stream.shutdown().await;
                }
            };
            tokio::select! {
                () = goodbye => {}
                () = clock.sleep_until(deadline) => {}
                () = shutdown.aborted() => {}
            }
        }
    }

    async fn converse(&mut self) -> Step {
        let host = self.host.clone();
        let (reply, limit, reason) = match self.slot {
            Some(Slot::Held { .. }) | None => (None, "", ""),
            Some(Slot::HostFull) => (
                Some(host.replies.too_many_connections.clone()),
                "max-connections",
                "too many connections",
            ),
            Some(Slot::ClientFull) => (
                Some(host.replies.too_many_from_client(self.client.ip())),
                "max-connections-per-client",
                "too many connections from this client",
            ),
        };
        if let Some(reply) = reply {
            self.send(&reply);
            let greeting = reply.one_line();
            self.log_connection(&format!("refused at connect: {greeting} ({limit} reached)"));
            return Err(Closed::by_farm(reason));
        }
        match self.decide(policy::Connect).await? {
            act::Done::Accepted { reply, rule } => {
                let reply = reply.as_ref().unwrap_or(&host.replies.greeting);
                self.answer(Stage::Connect, reply, rule);
            }
            act::Done::Refused(_) => self.protocol.in_service = false,
        }
        let mut line = Vec::with_capacity(256);
        loop {
            self.next_line(&mut line).await?;
            self.handle_line(&line).await?;
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> Step {
        let host = self.host.clone();
        let parsed = Request::parse(&mut line.iter());
        self.record_command(line, command_of(&parsed));
        if !self.protocol.in_service && !matches!(parsed, Ok(Request::Quit)) {
            return self.protocol_error(&host.replies.no_service);
        }
        let enhanced = host.config.extensions.enhanced_status_codes;
        let strict = host.config.parsing == Parsing::Strict;
        match parsed {
            Ok(Request::Ehlo { host: name }) => self.ehlo(name.into_owned(), true).await,
            Ok(Request::Helo { host: name }) => self.ehlo(name.into_owned(), false).await,
            Ok(Request::Mail { from }) => {
                let size = (from.size > 0).then_some(from.size as u64);
                self.mail(line, from.address.into_owned(), size).await
            }
            Ok(Request::Rcpt { to }) => self.rcpt(line, to.address.into_owned()).await,
            Ok(Request::Data) => self.data().await,
            Ok(Request::Bdat {
                chunk_size,
                is_last,
            }) => self.bdat(chunk_size as u64, is_last).await,
            Ok(Request::Rset) => self.rset().await,
            Ok(Request::Noop { .. }) => {
                self.send(&host.replies.noop_ok);
                Ok(())
            }
            Ok(Request::Vrfy { .. }) => {
                self.send(&host.replies.vrfy);
                Ok(())
            }
            Ok(Request::Help { .. }) => {
                self.send(&host.replies.help);
                Ok(())
            }
            Ok(Request::Quit) => self.quit().await,
            // RFC 3207 4: STARTTLS takes no parameters; Postfix answers as below.
            Ok(Request::StartTls)
                if strict && !line.trim_ascii().eq_ignore_ascii_case(b"STARTTLS") =>
            {
                self.protocol_error(&host.replies.starttls_syntax)
            }
            Ok(Request::StartTls) => self.starttls().await,
            Ok(
                Request::Auth { .. }
                | Request::Expn { .. }
                | Request::Etrn { .. }
                | Request::Atrn { .. }
                | Request::Burl { .. }
                | Request::Lhlo { .. },
            ) => self.protocol_error(&host.replies.not_implemented),
            Err(ParseError::InvalidSenderAddress) => self.protocol_error(&host.replies.bad_sender),
            Err(ParseError::InvalidRecipientAddress) => {
                self.protocol_error(&host.replies.bad_recipient)
            }
            Err(ParseError::SyntaxError { syntax }) => {
                self.protocol_error(&host.replies.syntax_error(enhanced, syntax))
            }
            Err(ParseError::InvalidParameter { param })
                if strict && !envelope::advertised_parameter(param, &host.config.extensions) =>
            {
                self.protocol_error(&host.replies.unsupported_parameter(enhanced, param))
            }
            Err(ParseError::InvalidParameter { param }) => {
                self.protocol_error(&host.replies.syntax_error(enhanced, param))
            }
            Err(ParseError::UnsupportedParameter { param }) => {
                self.protocol_error(&host.replies.unsupported_parameter(enhanced, &param))
            }
            Err(_) => self.protocol_error(&host.replies.unrecognized),
        }
    }

    /// Ends the connection if `line` ends in a bare LF (no CR before it) and the host
    /// is strict, as Postfix does with smtpd_forbid_bare_newline = reject: since the
    /// 2023 SMTP smuggling reports, a server that reads LF as CRLF lets one message hide
    /// another behind `<LF>.<LF>`, and big providers refuse such input. A lenient host
    /// reads the line as if it ended in CRLF.
    fn refuse_bare_lf(&mut self, line: &[u8]) -> Step {
        let bare = !line.ends_with(b"\r\n");
        if !bare || self.host.config.parsing == Parsing::Lenient {
            return Ok(());
        }
        let host = self.host.clone();
        self.record_command(line, CommandRef::Other);
        self.send(&host.replies.bare_lf_in_command);
        Err(Closed::by_farm("bare LF in a command"))
    }

    /// Asks the host's policy for the verdict on `point` and carries it out.
    async fn decide<P: Point>(&mut self, point: P) -> Step<act::Done<P::Effect>> {
        let sender = point.ask().sender.map(str::to_string);
        self.learn(P::STAGE, sender).await;
        let verdict = self.verdict(point);
        self.carry_out(P::STAGE, verdict).await
    }

    /// The host's policy's verdict on `point`, decided at the time the command arrived.
    fn verdict<P: Point>(&mut self, point: P) -> policy::Verdict<P::Effect> {
        let facts = self.protocol.facts();
        self.host
            .policy
            .decide(point, &facts, &mut self.policy, self.command_at)
    }

    /// Ends the transaction in progress, if any, because the client moved on before its
    /// message was done (`command`: RSET, QUIT, a new EHLO). That abandons it only if it
    /// had a recipient to deliver to: after every recipient was refused, moving on is what
    /// a client should do.
    fn end_by_client(&mut self, command: &str) {
        let Some(tx) = &self.protocol.tx else {
            return;
        };
        let no_room = tx
            .chunks
            .as_ref()
            .is_some_and(|c| c.unfit == Some(content::Unfit::NoRoom));
        let result = if tx.rcpt_tried && tx.recipients.is_empty() {
            format!("ended by {command}: no recipient accepted")
        } else if no_room {
            // A BDAT chunk got 452: the transaction failed, and the client moves on.
            let reply = self.host.replies.insufficient_storage.one_line();
            format!("refused at data: {reply}, then ended by {command}")
        } else {
            format!("abandoned by the client: {command}")
        };
        self.end_transaction(&result);
    }

    /// Ends the transaction in progress, if any, with its log line.
    fn end_transaction(&mut self, result: &str) {
        if let Some(tx) = self.protocol.tx.take() {
            self.log_transaction(&tx, result);
        }
    }

    /// The one log line of a transaction: who sent what to whom, and how it ended.
    fn log_transaction(&self, tx: &Transaction, result: &str) {
        let mut refused: Vec<String> = tx
            .refused
            .iter()
            .map(|(recipient, code)| format!("{recipient} ({code})"))
            .collect();
        let unnamed = tx.refused_count.saturating_sub(tx.refused.len());
        if unnamed > 0 {
            refused.push(format!("and {unnamed} more"));
        }
        tracing::info!(
            host = %self.host.name,
            conn = self.conn,
            client = %self.client.ip(),
            from = %tx.sender,
            to = %tx.recipients.join(", "),
            refused = %refused.join(", "),
            "{result}"
        );
    }

    /// A log line about the connection rather than a transaction (a refused greeting, a
    /// reset, a broken TLS handshake), with the same fields as a transaction's line, so
    /// that one search for a connection finds both.
    fn log_connection(&self, what: &str) {
        tracing::info!(
            host = %self.host.name,
            conn = self.conn,
            client = %self.client.ip(),
            "{what}"
        );
    }
}

/// How the journal names what the client sent.
fn command_of<'a>(parsed: &'a Result<Request<Cow<'_, str>>, ParseError>) -> CommandRef<'a> {
    match parsed {
        Ok(Request::Ehlo { host }) => CommandRef::Ehlo { name: host },
        Ok(Request::Helo { host }) => CommandRef::Helo { name: host },
        Ok(Request::Mail { from }) => CommandRef::Mail {
            sender: &from.address,
            size: (from.size > 0).then_some(from.size as u64),
        },
        Ok(Request::Rcpt { to }) => CommandRef::Rcpt {
            recipient: &to.address,
        },
        Ok(Request::Data) => CommandRef::Data,
        Ok(Request::Bdat {
            chunk_size,
            is_last,
        }) => CommandRef::Bdat {
            size: *chunk_size as u64,
            last: *is_last,
        },
        Ok(Request::Rset) => CommandRef::Rset,
        Ok(Request::Noop { .. }) => CommandRef::Noop,
        Ok(Request::Vrfy { .. }) => CommandRef::Vrfy,
        Ok(Request::Help { .. }) => CommandRef::Help,
        Ok(Request::Quit) => CommandRef::Quit,
        Ok(Request::StartTls) => CommandRef::Starttls,
        _ => CommandRef::Other,
    }
}
