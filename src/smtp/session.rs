//! One SMTP conversation, generic over the stream (DESIGN principle 4), so the same code
//! runs over TCP, later over TLS, and over `tokio::io::duplex` in tests.
//!
//! Input is framed into lines here and each line is parsed by `smtp-proto`; DATA and BDAT
//! content goes through `smtp-proto`'s receivers. Replies are written by our own writer into
//! an output buffer that is flushed only when the session would otherwise wait (for input,
//! a tarpit delay or a hang), which answers pipelined commands in order and in one write.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use memchr::memchr;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{Error as ParseError, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::host::{ActiveGuard, HostRuntime};
use super::{Transport, Unplugged};
use crate::capture::{Message, parse_headers};
use crate::farm::FarmState;
use crate::journal::{ClosedBy, Command, EventKind, TlsOutcome, sanitize_line};
use crate::policy::concurrency::ConcurrencySlot;
use crate::policy::greylist::{self, GreyVerdict};
use crate::policy::{self, AttemptNumbers, Envelope, Seen};
use crate::scenario::{ActionKind, Condition, RateKey, Reply, Rule, Stage, StateScope, TlsFault};

/// How much the session asks the kernel for at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Why a conversation ended; carried up with `?` from wherever it ended.
#[derive(Debug)]
pub struct Closed {
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
    /// Recipients refused so far, with the reply code, for the transaction's log line.
    refused: Vec<(String, u16)>,
    sender_seen: Seen,
    /// BDAT content received so far, once the first chunk was accepted.
    chunks: Option<Vec<u8>>,
    chunks_too_big: bool,
}

/// What a rule's verdict left for the caller to do.
enum Verdict {
    /// Send the stage's positive reply, or this one from the rule.
    Accept {
        custom: Option<Reply>,
        rule: Option<String>,
    },
    /// This refusal was sent; the connection stays open.
    Refused(Reply),
    /// At `end-of-data`: keep the message but close instead of answering.
    LoseReply { rule: String },
    /// At `starttls`: answer 220, then break the handshake this way.
    TlsFault { fault: TlsFault, rule: String },
}

/// What the rules decided for a stage, before it is carried out.
enum Choice<'h> {
    /// No rule decided: the stage's positive reply.
    Accept,
    /// This rule's action (accept, close, hang, reset, lose the reply).
    Act(&'h Rule),
    /// This rule's reply, its placeholders filled in; close after it if `close`.
    Reply {
        rule: &'h Rule,
        reply: Reply,
        close: bool,
    },
}

/// What the current command adds to the decision, beyond what the session knows.
#[derive(Debug, Default, Clone, Copy)]
struct Ask<'a> {
    /// The sender of a MAIL not yet accepted (later stages read it from the transaction).
    sender: Option<&'a str>,
    sender_seen: Seen,
    /// The recipient of the RCPT being decided.
    recipient: Option<&'a str>,
    recipient_seen: Seen,
    triplet_seen: Seen,
    /// The SIZE= of a MAIL, or the size of the received message.
    size: Option<u64>,
}

/// One client connection to one host.
pub struct Session {
    /// TCP, an in-memory pipe, or TLS over either after STARTTLS.
    stream: Box<dyn Transport>,
    host: Arc<HostRuntime>,
    farm: Arc<FarmState>,
    conn: u64,
    client: SocketAddr,
    rng: ChaCha8Rng,
    /// Received bytes; `input[start..]` are not consumed yet.
    input: Vec<u8>,
    start: usize,
    /// Replies not yet written.
    output: Vec<u8>,
    /// After a line longer than the limit: skip input up to the next newline.
    discarding_line: bool,
    helo: Option<String>,
    /// False after a refusing greeting: then only QUIT is served.
    in_service: bool,
    tx: Option<Transaction>,
    errors: usize,
    client_seen: Seen,
    /// The host's own number for this connection (1 for its first).
    host_connection: u64,
    /// Transactions started (MAIL accepted) on this connection so far.
    transactions: u32,
    /// The client's PTR name from the scenario's reverse-DNS table.
    ptr: Option<String>,
    /// Whether STARTTLS has completed: the rest of the session is encrypted.
    encrypted: bool,
    /// How long until the deferral being sent clears, when the rule knows; journalled
    /// with the reply.
    retry_hint: Option<Duration>,
    /// Whether the last EHLO reply advertised STARTTLS.
    starttls_offered: bool,
    /// Set by a `hide-starttls` rule for the EHLO being answered.
    hide_starttls: bool,
    /// Set when the connection was reset: then it is dropped without a shutdown.
    was_reset: bool,
    /// Connection slots taken by concurrency limits, given back when the session ends.
    concurrency_slots: Vec<ConcurrencySlot>,
    /// Farm time when the current command arrived: delays and hangs count from it.
    command_at: Duration,
    /// Refuses the connection at once: the host has too many.
    over_capacity: bool,
    _active: Option<ActiveGuard>,
}

impl Session {
    /// A session for connection number `conn`; `active` is `None` when the host is at its
    /// connection limit, and then the session only says so and closes.
    pub fn new(
        stream: impl Transport,
        host: Arc<HostRuntime>,
        farm: Arc<FarmState>,
        conn: u64,
        client: SocketAddr,
        active: Option<ActiveGuard>,
    ) -> Self {
        // Each connection draws from its own generator, derived from the farm's seed and
        // the connection number, so sessions neither contend for one generator nor change
        // each other's draws.
        let rng = ChaCha8Rng::seed_from_u64(farm.seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let host_connection = host.next_connection();
        // A host listening on [::] sees IPv4 clients as ::ffff:a.b.c.d; conditions, PTR
        // tables and the journal all want the plain IPv4 address.
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        let ptr = farm.reverse_dns.get(&client.ip()).cloned();
        Self {
            stream: Box::new(stream),
            host,
            farm,
            conn,
            client,
            rng,
            input: Vec::with_capacity(READ_CHUNK),
            start: 0,
            output: Vec::with_capacity(1024),
            discarding_line: false,
            helo: None,
            in_service: true,
            tx: None,
            errors: 0,
            client_seen: Seen::default(),
            host_connection,
            transactions: 0,
            ptr,
            encrypted: false,
            retry_hint: None,
            starttls_offered: false,
            hide_starttls: false,
            was_reset: false,
            concurrency_slots: Vec::new(),
            command_at: Duration::ZERO,
            over_capacity: active.is_none(),
            _active: active,
        }
    }

    /// Runs the conversation to its end and journals how it ended. Never fails: whatever
    /// the client does ends this connection only.
    pub async fn run(mut self) {
        // Set before the event is journalled, so that whoever sees the connection in the
        // journal and advances the clock also moves a greeting delay's deadline.
        self.command_at = self.farm.clock.now();
        self.record(EventKind::ConnectionOpened {
            host: self.host.name.clone(),
            conn: self.conn,
            client: self.client,
        });
        let closed = match self.converse().await {
            Ok(()) => Closed::by_client("conversation ended"),
            Err(closed) => closed,
        };
        self.end_transaction(&format!("connection closed: {}", closed.reason));
        // Give back the connection slots and journal the end before the client can see
        // it: a sender that reconnects as soon as it reads the 221 must find its slot
        // free, and a test that saw EOF must find the close in the journal.
        self._active = None;
        self.concurrency_slots.clear();
        self.record(EventKind::ConnectionClosed {
            host: self.host.name.clone(),
            conn: self.conn,
            by: closed.by,
            reason: closed.reason.into_owned(),
        });
        // Replies still buffered (a 421, a 221) go out before the close; after a reset
        // nothing may go out, not even the FIN of a shutdown, so that the client sees RST.
        if !self.was_reset {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        }
    }

    async fn converse(&mut self) -> Step {
        let host = self.host.clone();
        if self.over_capacity {
            self.send(None, &host.replies.too_many_connections, None);
            return Err(Closed::by_farm("too many connections"));
        }
        self.client_seen = self
            .farm
            .attempts
            .connection(self.client.ip(), self.command_at);
        match self.decide(Stage::Connect, Ask::default()).await? {
            Verdict::Accept { custom, rule } => {
                let reply = custom.as_ref().unwrap_or(&host.replies.greeting);
                self.send(Some(Stage::Connect), reply, rule);
            }
            Verdict::Refused(_) => self.in_service = false,
            Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                return Err(misplaced(Stage::Connect, &rule));
            }
        }
        let mut line = Vec::with_capacity(256);
        loop {
            self.next_line(&mut line).await?;
            self.handle_line(&line).await?;
        }
    }

    /// Reads the next complete command line into `line`, answering over-long lines.
    async fn next_line(&mut self, line: &mut Vec<u8>) -> Step {
        let max = self.host.config.limits.max_line_length;
        loop {
            let pending = &self.input[self.start..];
            if let Some(end) = memchr(b'\n', pending) {
                let too_long = self.discarding_line || end.saturating_sub(1) > max;
                line.clear();
                line.extend_from_slice(&pending[..=end]);
                self.start += end + 1;
                if self.discarding_line {
                    self.discarding_line = false;
                    continue;
                }
                if too_long {
                    let host = self.host.clone();
                    self.record_command(line, Command::Other);
                    self.protocol_error(&host.replies.line_too_long)?;
                    continue;
                }
                return Ok(());
            }
            if !self.discarding_line && pending.len() > max + 2 {
                // No newline within the limit: answer now, then drop the rest of the line
                // as it arrives, so a hostile client cannot grow the buffer.
                let host = self.host.clone();
                let head = pending[..pending.len().min(512)].to_vec();
                self.record_command(&head, Command::Other);
                self.protocol_error(&host.replies.line_too_long)?;
                self.discarding_line = true;
            }
            if self.discarding_line {
                self.start = self.input.len();
            }
            let timeout = self.host.config.limits.command_timeout;
            self.fill(timeout).await?;
        }
    }

    /// Flushes pending replies, then waits for more input, the timeout, or shutdown.
    async fn fill(&mut self, timeout: Duration) -> Step {
        // The deadline is fixed before the replies go out, so a client (or a test) that
        // reacts to a reply by advancing the clock always moves this deadline too.
        let deadline = self.farm.clock.now() + timeout;
        self.flush().await?;
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        self.input.reserve(READ_CHUNK);
        enum Woke {
            Read(std::io::Result<usize>),
            Timeout,
            Shutdown,
        }
        let woke = tokio::select! {
            biased;
            _ = self.farm.shutdown.cancelled() => Woke::Shutdown,
            read = self.stream.read_buf(&mut self.input) => Woke::Read(read),
            _ = self.farm.clock.sleep_until(deadline) => Woke::Timeout,
        };
        let host = self.host.clone();
        match woke {
            Woke::Read(Ok(0)) => Err(Closed::by_client("client closed the connection")),
            Woke::Read(Ok(_)) => Ok(()),
            Woke::Read(Err(e)) => Err(Closed::by_client(format!("read failed: {e}"))),
            Woke::Timeout => {
                self.send(None, &host.replies.timeout, None);
                Err(Closed::by_farm("timeout waiting for the client"))
            }
            Woke::Shutdown => {
                self.send(None, &host.replies.shutting_down, None);
                Err(Closed::by_farm("farm shutting down"))
            }
        }
    }

    /// Writes buffered replies; a client that stops reading is cut off after the
    /// command timeout rather than holding the session forever.
    async fn flush(&mut self) -> Step {
        if self.output.is_empty() {
            return Ok(());
        }
        let timeout = self.host.config.limits.command_timeout;
        let result = tokio::select! {
            written = self.stream.write_all(&self.output) => Some(written),
            _ = self.farm.clock.sleep(timeout) => None,
        };
        self.output.clear();
        match result {
            Some(Ok(())) => match self.stream.flush().await {
                Ok(()) => Ok(()),
                Err(e) => Err(Closed::by_client(format!("write failed: {e}"))),
            },
            Some(Err(e)) => Err(Closed::by_client(format!("write failed: {e}"))),
            None => Err(Closed::by_farm("client stopped reading replies")),
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> Step {
        let host = self.host.clone();
        let parsed = Request::parse(&mut line.iter());
        self.record_command(line, command_of(&parsed));
        if !self.in_service && !matches!(parsed, Ok(Request::Quit)) {
            return self.protocol_error(&host.replies.no_service);
        }
        let enhanced = host.config.extensions.enhanced_status_codes;
        match parsed {
            Ok(Request::Ehlo { host: name }) => self.ehlo(name.into_owned(), true).await,
            Ok(Request::Helo { host: name }) => self.ehlo(name.into_owned(), false).await,
            Ok(Request::Mail { from }) => {
                let size = (from.size > 0).then_some(from.size as u64);
                self.mail(from.address.into_owned(), size, from.flags).await
            }
            Ok(Request::Rcpt { to }) => self.rcpt(to.address.into_owned()).await,
            Ok(Request::Data) => self.data().await,
            Ok(Request::Bdat {
                chunk_size,
                is_last,
            }) => self.bdat(chunk_size as u64, is_last).await,
            Ok(Request::Rset) => self.rset().await,
            Ok(Request::Noop { .. }) => {
                self.send(None, &host.replies.noop_ok, None);
                Ok(())
            }
            Ok(Request::Vrfy { .. }) => {
                self.send(None, &host.replies.vrfy, None);
                Ok(())
            }
            Ok(Request::Help { .. }) => {
                self.send(None, &host.replies.help, None);
                Ok(())
            }
            Ok(Request::Quit) => self.quit().await,
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
            Err(ParseError::InvalidParameter { param }) => {
                self.protocol_error(&host.replies.syntax_error(enhanced, param))
            }
            Err(ParseError::UnsupportedParameter { param }) => {
                self.protocol_error(&host.replies.unsupported_parameter(enhanced, &param))
            }
            Err(_) => self.protocol_error(&host.replies.unrecognized),
        }
    }

    async fn ehlo(&mut self, name: String, extended: bool) -> Step {
        let host = self.host.clone();
        // A new EHLO/HELO ends any transaction in progress (RFC 5321 4.1.4).
        self.end_transaction("abandoned by the client: new EHLO/HELO");
        let previous = self.helo.replace(name);
        match self.decide(Stage::Ehlo, Ask::default()).await? {
            Verdict::Accept { rule, .. } => {
                let offer = host.tls.is_some() && !self.encrypted && !self.hide_starttls;
                self.starttls_offered = extended && offer;
                let reply = match (extended, offer) {
                    (true, true) => &host.replies.ehlo_with_starttls,
                    (true, false) => &host.replies.ehlo,
                    (false, _) => &host.replies.helo,
                };
                self.send(Some(Stage::Ehlo), reply, rule);
            }
            Verdict::Refused(_) => self.helo = previous,
            Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                return Err(misplaced(Stage::Ehlo, &rule));
            }
        }
        self.hide_starttls = false;
        Ok(())
    }

    /// STARTTLS (RFC 3207): `220`, then the handshake, then a session that starts over,
    /// or one of the faults a rule asks for.
    async fn starttls(&mut self) -> Step {
        let host = self.host.clone();
        let Some(acceptor) = host.tls.clone() else {
            return self.protocol_error(&host.replies.not_implemented);
        };
        if self.encrypted {
            return self.protocol_error(&host.replies.tls_already_active);
        }
        if self.helo.is_none() {
            return self.protocol_error(&host.replies.need_helo);
        }
        if self.tx.is_some() {
            return self.protocol_error(&host.replies.transaction_in_progress);
        }
        if !self.starttls_offered {
            self.send(Some(Stage::Starttls), &host.replies.tls_not_available, None);
            return Ok(());
        }
        if self.start < self.input.len() {
            // Plaintext sent after STARTTLS would be read as if it came over TLS: the
            // command-injection attack of CVE-2011-0411. Refuse rather than upgrade.
            self.input.truncate(self.start);
            return self.protocol_error(&host.replies.pipelined_after_starttls);
        }
        let fault = match self.decide(Stage::Starttls, Ask::default()).await? {
            Verdict::Accept { custom, rule } => {
                let reply = custom.unwrap_or_else(|| host.replies.ready_to_start_tls.clone());
                self.send(Some(Stage::Starttls), &reply, rule);
                None
            }
            Verdict::TlsFault { fault, rule } => {
                self.send(
                    Some(Stage::Starttls),
                    &host.replies.ready_to_start_tls,
                    Some(rule.clone()),
                );
                Some((fault, rule))
            }
            Verdict::Refused(_) => return Ok(()),
            Verdict::LoseReply { rule } => return Err(misplaced(Stage::Starttls, &rule)),
        };
        self.flush().await?;
        if let Some((fault, rule)) = fault {
            return self.tls_fault(fault, &rule).await;
        }
        self.handshake(acceptor).await
    }

    async fn handshake(&mut self, acceptor: tokio_rustls::TlsAcceptor) -> Step {
        let plain = std::mem::replace(&mut self.stream, Box::new(Unplugged));
        let timeout = self.host.config.limits.command_timeout;
        let deadline = self.farm.clock.now() + timeout;
        let accepted = tokio::select! {
            accepted = acceptor.accept(plain) => Some(accepted),
            _ = self.farm.clock.sleep_until(deadline) => None,
        };
        let tls = match accepted {
            Some(Ok(tls)) => tls,
            Some(Err(error)) => {
                let (by, error) = handshake_failure(&error);
                self.record(EventKind::TlsHandshake {
                    host: self.host.name.clone(),
                    conn: self.conn,
                    outcome: TlsOutcome::Failed {
                        error: error.clone(),
                        aborted_by: by,
                    },
                });
                return Err(Closed {
                    by,
                    reason: format!("TLS handshake failed: {error}").into(),
                });
            }
            None => {
                self.record(EventKind::TlsHandshake {
                    host: self.host.name.clone(),
                    conn: self.conn,
                    outcome: TlsOutcome::Failed {
                        error: "timed out".to_string(),
                        aborted_by: ClosedBy::Farm,
                    },
                });
                return Err(Closed::by_farm("TLS handshake timed out"));
            }
        };
        let (_, connection) = tls.get_ref();
        let version = connection
            .protocol_version()
            .map_or_else(|| "unknown".to_string(), |v| format!("{v:?}"));
        let cipher = connection
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_string(), |c| format!("{:?}", c.suite()));
        let sni = connection.server_name().map(str::to_string);
        self.record(EventKind::TlsHandshake {
            host: self.host.name.clone(),
            conn: self.conn,
            outcome: TlsOutcome::Established {
                version,
                cipher,
                sni,
            },
        });
        self.stream = Box::new(tls);
        // RFC 3207 4.2: the session starts over; the client must send EHLO again.
        self.encrypted = true;
        self.helo = None;
        self.starttls_offered = false;
        self.end_transaction("abandoned by the client: STARTTLS");
        Ok(())
    }

    /// A handshake that goes wrong on purpose, after `220 Ready to start TLS`.
    async fn tls_fault(&mut self, fault: TlsFault, rule: &str) -> Step {
        let failed = |what: &str| Closed::by_farm(format!("{what} after STARTTLS by {rule}"));
        if fault == TlsFault::CloseAfterReady {
            return Err(failed("closed"));
        }
        // Every other fault waits for the ClientHello first.
        let timeout = self.host.config.limits.command_timeout;
        self.input.clear();
        self.start = 0;
        match self.fill(timeout).await {
            Ok(()) => {}
            Err(closed) => return Err(closed),
        }
        let closed = match fault {
            TlsFault::Alert => {
                // A TLS 1.2 record: alert, fatal (2), handshake_failure (40).
                let _ = self
                    .stream
                    .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
                    .await;
                failed("sent a handshake_failure alert")
            }
            TlsFault::CloseMidHandshake => failed("closed mid-handshake"),
            TlsFault::Garbage => {
                let _ = self
                    .stream
                    .write_all(b"garbage where a TLS ServerHello belongs\r\n")
                    .await;
                failed("sent garbage instead of a handshake")
            }
            TlsFault::Hang(limit) => {
                self.hang(limit).await?;
                failed("hung in the handshake")
            }
            TlsFault::CloseAfterReady => failed("closed"),
        };
        self.input.clear();
        self.start = 0;
        self.record(EventKind::TlsHandshake {
            host: self.host.name.clone(),
            conn: self.conn,
            outcome: TlsOutcome::Failed {
                error: closed.reason.to_string(),
                aborted_by: ClosedBy::Farm,
            },
        });
        Err(closed)
    }

    async fn mail(&mut self, sender: String, size: Option<u64>, flags: u64) -> Step {
        let host = self.host.clone();
        let config = &host.config;
        let enhanced = config.extensions.enhanced_status_codes;
        if self.helo.is_none() {
            return self.protocol_error(&host.replies.need_helo);
        }
        if self.tx.is_some() {
            return self.protocol_error(&host.replies.nested_mail);
        }
        if flags & MAIL_SMTPUTF8 != 0 && !config.extensions.smtputf8 {
            return self.protocol_error(&host.replies.unsupported_parameter(enhanced, "SMTPUTF8"));
        }
        if flags & MAIL_BODY_8BITMIME != 0 && !config.extensions.eight_bit_mime {
            return self.protocol_error(
                &host
                    .replies
                    .unsupported_parameter(enhanced, "BODY=8BITMIME"),
            );
        }
        if size.is_some_and(|s| s > config.limits.max_message_size) {
            self.send(Some(Stage::Mail), &host.replies.size_exceeds_limit, None);
            return Ok(());
        }
        let sender_seen = self.farm.attempts.sender(&sender, self.command_at);
        let ask = Ask {
            sender: Some(&sender),
            sender_seen,
            size,
            ..Ask::default()
        };
        let verdict = match self.decide(Stage::Mail, ask).await {
            Ok(verdict) => verdict,
            Err(closed) => {
                // Refused with a close before any transaction began: still one log line.
                let refused = Transaction {
                    sender,
                    ..Transaction::default()
                };
                self.log_transaction(&refused, &format!("refused at mail: {}", closed.reason));
                return Err(closed);
            }
        };
        match verdict {
            Verdict::Accept { custom, rule } => {
                self.transactions += 1;
                self.tx = Some(Transaction {
                    sender,
                    declared_size: size,
                    sender_seen,
                    ..Transaction::default()
                });
                self.send(
                    Some(Stage::Mail),
                    custom.as_ref().unwrap_or(&host.replies.mail_ok),
                    rule,
                );
            }
            Verdict::Refused(reply) => {
                let refused = Transaction {
                    sender,
                    ..Transaction::default()
                };
                self.log_transaction(&refused, &format!("refused at mail: {}", reply.one_line()));
            }
            Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                return Err(misplaced(Stage::Mail, &rule));
            }
        }
        Ok(())
    }

    async fn rcpt(&mut self, recipient: String) -> Step {
        let host = self.host.clone();
        let Some(tx) = self.tx.as_mut() else {
            return self.protocol_error(&host.replies.need_mail);
        };
        tx.rcpt_tried = true;
        if tx.recipients.len() >= host.config.limits.max_recipients {
            self.send(Some(Stage::Rcpt), &host.replies.too_many_recipients, None);
            return Ok(());
        }
        let sender = tx.sender.clone();
        let (recipient_seen, triplet_seen) =
            self.farm
                .attempts
                .recipient(self.client.ip(), &sender, &recipient, self.command_at);
        let ask = Ask {
            recipient: Some(&recipient),
            recipient_seen,
            triplet_seen,
            ..Ask::default()
        };
        match self.decide(Stage::Rcpt, ask).await? {
            Verdict::Accept { custom, rule } => {
                self.send(
                    Some(Stage::Rcpt),
                    custom.as_ref().unwrap_or(&host.replies.rcpt_ok),
                    rule,
                );
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients.push(recipient);
                }
            }
            Verdict::Refused(reply) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.refused.push((recipient, reply.code));
                }
            }
            Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                return Err(misplaced(Stage::Rcpt, &rule));
            }
        }
        Ok(())
    }

    /// Checks that a transaction can take message content now; answers and returns false
    /// when it cannot.
    fn ready_for_content(&mut self) -> Step<bool> {
        let host = self.host.clone();
        match &self.tx {
            None => self.protocol_error(&host.replies.need_mail).map(|()| false),
            Some(tx) if tx.recipients.is_empty() => {
                let reply = if tx.rcpt_tried {
                    &host.replies.no_valid_recipients
                } else {
                    &host.replies.need_rcpt
                };
                self.protocol_error(reply).map(|()| false)
            }
            Some(_) => Ok(true),
        }
    }

    async fn data(&mut self) -> Step {
        let host = self.host.clone();
        if self.tx.as_ref().is_some_and(|tx| tx.chunks.is_some()) {
            return self.protocol_error(&host.replies.data_after_bdat);
        }
        if !self.ready_for_content()? {
            return Ok(());
        }
        match self.decide(Stage::Data, Ask::default()).await? {
            Verdict::Accept { custom, rule } => {
                let reply = custom.as_ref().unwrap_or(&host.replies.data_go_ahead);
                self.send(Some(Stage::Data), reply, rule);
            }
            Verdict::Refused(reply) => {
                self.end_transaction(&format!("refused at data: {}", reply.one_line()));
                return Ok(());
            }
            Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                return Err(misplaced(Stage::Data, &rule));
            }
        }
        let (body, too_big) = self.receive_data().await?;
        if too_big {
            self.refuse_too_big();
            return Ok(());
        }
        self.end_of_data(body).await
    }

    fn refuse_too_big(&mut self) {
        let host = self.host.clone();
        self.send(Some(Stage::EndOfData), &host.replies.message_too_big, None);
        self.end_transaction(&format!(
            "refused at end-of-data: {}",
            host.replies.message_too_big.one_line()
        ));
    }

    /// Receives DATA content up to the final dot; returns it dot-unstuffed, or `true` if it
    /// grew past the size limit (then the rest was read and dropped).
    async fn receive_data(&mut self) -> Step<(Vec<u8>, bool)> {
        let max_size = self.host.config.limits.max_message_size;
        let timeout = self.host.config.limits.data_timeout;
        let mut receiver = DataReceiver::new();
        let mut body = Vec::new();
        // The receiver recognises the final dot and dot-stuffing only after a CRLF; the
        // content starts right after the CRLF of the DATA line, so prime it with one.
        receiver.ingest(&mut b"\r\n".iter(), &mut body);
        body.clear();
        let mut discard: Option<DummyDataReceiver> = None;
        loop {
            let pending = &self.input[self.start..];
            if !pending.is_empty() {
                let mut bytes = pending.iter();
                let done = match discard.as_mut() {
                    Some(dummy) => dummy.ingest(&mut bytes),
                    None => receiver.ingest(&mut bytes, &mut body),
                };
                self.start += pending.len() - bytes.as_slice().len();
                if discard.is_none() && body.len() as u64 > max_size {
                    discard = Some(DummyDataReceiver::new_data(&receiver));
                    body = Vec::new();
                }
                if done {
                    // The dot is a command of its own in the journal: tests wait for it,
                    // and end-of-data delays count from it.
                    let size = if discard.is_some() {
                        0
                    } else {
                        body.len() as u64
                    };
                    self.record_command(b".", Command::EndOfData { size });
                    return Ok((body, discard.is_some()));
                }
            }
            self.fill(timeout).await?;
        }
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Step {
        let host = self.host.clone();
        if !host.config.extensions.chunking {
            return self.protocol_error(&host.replies.not_implemented);
        }
        // RFC 3030: the chunk follows the command whatever the answer, so it is always read.
        let starting = self.tx.as_ref().is_some_and(|tx| tx.chunks.is_none());
        if !self.ready_for_content()? {
            return self.skip_chunk(size).await;
        }
        if starting {
            match self.decide(Stage::Data, Ask::default()).await? {
                Verdict::Accept { .. } => {
                    if let Some(tx) = self.tx.as_mut() {
                        tx.chunks = Some(Vec::new());
                    }
                }
                Verdict::Refused(reply) => {
                    self.end_transaction(&format!("refused at data: {}", reply.one_line()));
                    return self.skip_chunk(size).await;
                }
                Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                    return Err(misplaced(Stage::Data, &rule));
                }
            }
        }
        self.read_chunk(size).await?;
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        if !last {
            self.send(
                Some(Stage::Data),
                &host
                    .replies
                    .chunk_received(host.config.extensions.enhanced_status_codes, size),
                None,
            );
            return Ok(());
        }
        let too_big = tx.chunks_too_big;
        let body = tx.chunks.take().unwrap_or_default();
        if too_big {
            self.refuse_too_big();
            return Ok(());
        }
        self.end_of_data(body).await
    }

    /// Appends a BDAT chunk of `size` bytes to the transaction, or drops it once the
    /// message is over the size limit.
    async fn read_chunk(&mut self, size: u64) -> Step {
        let max_size = self.host.config.limits.max_message_size;
        let timeout = self.host.config.limits.data_timeout;
        let mut left = size;
        loop {
            let pending = &self.input[self.start..];
            let take = pending
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(tx) = self.tx.as_mut() {
                let chunks = tx.chunks.get_or_insert_with(Vec::new);
                if !tx.chunks_too_big {
                    chunks.extend_from_slice(&pending[..take]);
                    if chunks.len() as u64 > max_size {
                        tx.chunks_too_big = true;
                        *chunks = Vec::new();
                    }
                }
            }
            self.start += take;
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
            self.fill(timeout).await?;
        }
    }

    async fn skip_chunk(&mut self, size: u64) -> Step {
        let timeout = self.host.config.limits.data_timeout;
        let mut left = size;
        loop {
            let pending = self.input.len() - self.start;
            let take = pending.min(usize::try_from(left).unwrap_or(usize::MAX));
            self.start += take;
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
            self.fill(timeout).await?;
        }
    }

    /// The final dot (or last chunk): decide, and keep the message if accepted.
    async fn end_of_data(&mut self, body: Vec<u8>) -> Step {
        let host = self.host.clone();
        let size = body.len() as u64;
        let ask = Ask {
            size: Some(size),
            ..Ask::default()
        };
        let verdict = self.decide(Stage::EndOfData, ask).await?;
        let (custom, rule, lose_reply) = match verdict {
            Verdict::Accept { custom, rule } => (custom, rule, None),
            Verdict::LoseReply { rule } => (None, None, Some(rule)),
            Verdict::TlsFault { rule, .. } => return Err(misplaced(Stage::EndOfData, &rule)),
            Verdict::Refused(reply) => {
                self.end_transaction(&format!("refused at end-of-data: {}", reply.one_line()));
                return Ok(());
            }
        };
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let (message_id, subject) = parse_headers(&body);
        let enhanced = host.config.extensions.enhanced_status_codes;
        let at = self.farm.clock.now();
        // Journalled (and kept) before the reply is written: every 250 the client
        // sees is in the journal.
        let id = self.farm.accept_message(|id| {
            let event = EventKind::MessageAccepted {
                host: host.name.clone(),
                conn: self.conn,
                id,
                sender: tx.sender.clone(),
                recipients: tx.recipients.clone(),
                size,
                message_id: message_id.clone(),
                subject: subject.clone(),
                tls: self.encrypted,
            };
            let message = Message {
                id,
                host: host.name.clone(),
                conn: self.conn,
                at,
                client: self.client,
                helo: self.helo.clone().unwrap_or_default(),
                sender: tx.sender.clone(),
                recipients: tx.recipients.clone(),
                size,
                message_id,
                subject,
                tls: self.encrypted,
                data: Arc::from(body),
            };
            (event, message)
        });
        self.log_transaction(&tx, &format!("accepted as message {id}"));
        if let Some(rule) = lose_reply {
            return Err(lost_reply(Stage::EndOfData, &rule));
        }
        let reply = custom.unwrap_or_else(|| host.replies.queued(enhanced, id));
        self.send(Some(Stage::EndOfData), &reply, rule);
        Ok(())
    }

    async fn rset(&mut self) -> Step {
        let host = self.host.clone();
        if let Verdict::Accept { custom, rule } = self.decide(Stage::Rset, Ask::default()).await? {
            self.end_transaction("abandoned by the client: RSET");
            let reply = custom.as_ref().unwrap_or(&host.replies.rset_ok);
            self.send(Some(Stage::Rset), reply, rule);
        }
        Ok(())
    }

    async fn quit(&mut self) -> Step {
        let host = self.host.clone();
        match self.decide(Stage::Quit, Ask::default()).await? {
            Verdict::Accept { custom, rule } => {
                self.end_transaction("abandoned by the client: QUIT");
                let reply = custom.as_ref().unwrap_or(&host.replies.bye);
                self.send(Some(Stage::Quit), reply, rule);
                Err(Closed::by_client("QUIT"))
            }
            Verdict::Refused(_) => Ok(()),
            Verdict::LoseReply { rule } | Verdict::TlsFault { rule, .. } => {
                Err(misplaced(Stage::Quit, &rule))
            }
        }
    }

    /// Decides `stage` by the host's rules and carries out the verdict.
    async fn decide(&mut self, stage: Stage, ask: Ask<'_>) -> Step<Verdict> {
        let host = self.host.clone();
        let choice = self.choose(&host, stage, ask);
        self.carry_out(stage, choice).await
    }

    /// Finds the rule that decides `stage`. Stateful rules are consulted on the way:
    /// greylisting that lets the triplet pass, or a limit not reached, hands the decision
    /// on to the rules after it.
    fn choose<'h>(&mut self, host: &'h HostRuntime, stage: Stage, ask: Ask<'_>) -> Choice<'h> {
        let farm = self.farm.clone();
        let tx = self.tx.as_ref();
        let sender = ask.sender.or(tx.map(|tx| tx.sender.as_str()));
        let accepted = tx.map_or(&[][..], |tx| tx.recipients.as_slice());
        let now = farm.clock.now();
        let envelope = Envelope {
            client: self.client.ip(),
            helo: self.helo.as_deref(),
            sender,
            recipient: ask.recipient,
            accepted,
            size: ask.size.or(tx.and_then(|tx| tx.declared_size)),
            now,
            host_connection: self.host_connection,
            message: if stage == Stage::Mail {
                self.transactions + 1
            } else {
                self.transactions
            },
            ptr: self.ptr.as_deref(),
            tls: self.encrypted,
        };
        let attempts = AttemptNumbers {
            client: self.client_seen,
            sender: if ask.sender.is_some() {
                ask.sender_seen
            } else {
                tx.map_or(Seen::default(), |tx| tx.sender_seen)
            },
            recipient: ask.recipient_seen,
            triplet: ask.triplet_seen,
        };
        let vars = ReplyVars {
            envelope: &envelope,
            hostname: &host.config.hostname,
            remaining: None,
        };
        let mut from = 0;
        loop {
            let Some((index, rule)) = policy::decide_from(
                &host.config.rules,
                from,
                stage,
                &envelope,
                &attempts,
                &mut self.rng,
            ) else {
                return Choice::Accept;
            };
            from = index + 1;
            let rule_id = rule.origin.as_str();
            match &rule.then.kind {
                ActionKind::Reply { reply, close } => {
                    // A deferral that lasts while a first attempt is recent clears when
                    // that time is up: say when, for reports on early retries.
                    self.retry_hint = rule.when.iter().find_map(|condition| match condition {
                        Condition::FirstAttemptWithin { per, within } => {
                            let first = attempts.get(*per).first;
                            Some(within.saturating_sub(now.saturating_sub(first)))
                        }
                        _ => None,
                    });
                    return Choice::Reply {
                        rule,
                        reply: vars.fill(reply),
                        close: *close || reply.closes_connection(),
                    };
                }
                ActionKind::Greylist(greylist) => {
                    let state = greylist::state_key(rule_id, greylist.scope, &host.name);
                    let recipients: Vec<&str> = match envelope.recipient {
                        Some(recipient) => vec![recipient],
                        None => accepted.iter().map(String::as_str).collect(),
                    };
                    let longest = recipients
                        .into_iter()
                        .filter_map(|recipient| {
                            match farm.greylist.check(
                                greylist,
                                &state,
                                envelope.client,
                                sender.unwrap_or(""),
                                recipient,
                                now,
                            ) {
                                GreyVerdict::Pass => None,
                                GreyVerdict::Defer { remaining } => Some(remaining),
                            }
                        })
                        .max();
                    if let Some(remaining) = longest {
                        self.retry_hint = Some(remaining);
                        let vars = ReplyVars {
                            remaining: Some(remaining),
                            ..vars
                        };
                        let reply = vars.fill(&greylist.reply);
                        let close = reply.closes_connection();
                        return Choice::Reply { rule, reply, close };
                    }
                }
                ActionKind::RateLimit(limit) => {
                    let Some(value) = rate_key(limit.per, &envelope) else {
                        continue;
                    };
                    let key = scoped_key(rule_id, limit.scope, &host.name, &value);
                    if !farm.rates.admit(limit, &key, now) {
                        let reply = vars.fill(&limit.reply);
                        let close = limit.close || reply.closes_connection();
                        return Choice::Reply { rule, reply, close };
                    }
                }
                ActionKind::Concurrency(limit) => {
                    let Some(value) = rate_key(limit.per, &envelope) else {
                        continue;
                    };
                    // Connections are counted per host: each MX host has its own limit.
                    let key = scoped_key(rule_id, StateScope::Host, &host.name, &value);
                    match farm.concurrency.enter(key, limit.limit) {
                        Some(slot) => self.concurrency_slots.push(slot),
                        None => {
                            return Choice::Reply {
                                rule,
                                reply: vars.fill(&limit.reply),
                                close: true,
                            };
                        }
                    }
                }
                _ => return Choice::Act(rule),
            }
        }
    }

    /// Carries out a rule's choice: the delay, then a refusal, a close, a reset or a hang.
    /// An accepting verdict is left to the caller, who knows the stage's positive reply.
    async fn carry_out(&mut self, stage: Stage, choice: Choice<'_>) -> Step<Verdict> {
        let rule = match &choice {
            Choice::Accept => {
                return Ok(Verdict::Accept {
                    custom: None,
                    rule: None,
                });
            }
            Choice::Act(rule) | Choice::Reply { rule, .. } => *rule,
        };
        if let Some(delay) = rule.then.delay {
            self.pause(delay).await?;
        }
        let origin = Some(rule.origin.clone());
        let kind = match choice {
            Choice::Reply { reply, close, .. } => {
                if reply.code < 400 && !close {
                    return Ok(Verdict::Accept {
                        custom: Some(reply),
                        rule: origin,
                    });
                }
                self.send(Some(stage), &reply, origin);
                if close {
                    return Err(Closed::by_farm(format!(
                        "{} reply at {stage} by {}",
                        reply.code, rule.origin
                    )));
                }
                return Ok(Verdict::Refused(reply));
            }
            Choice::Act(rule) => &rule.then.kind,
            Choice::Accept => {
                return Ok(Verdict::Accept {
                    custom: None,
                    rule: None,
                });
            }
        };
        match kind {
            ActionKind::Close => Err(Closed::by_farm(format!(
                "closed without reply at {stage} by {}",
                rule.origin
            ))),
            ActionKind::Reset => {
                self.flush().await?;
                self.stream.reset();
                self.was_reset = true;
                Err(Closed::by_farm(format!(
                    "reset the connection at {stage} by {}",
                    rule.origin
                )))
            }
            ActionKind::Hang(limit) => {
                self.hang(*limit).await?;
                Err(Closed::by_farm(format!(
                    "hung at {stage} by {} for {}",
                    rule.origin,
                    humantime::format_duration(*limit)
                )))
            }
            ActionKind::LoseReply => Ok(Verdict::LoseReply {
                rule: rule.origin.clone(),
            }),
            ActionKind::TlsFault(fault) => Ok(Verdict::TlsFault {
                fault: *fault,
                rule: rule.origin.clone(),
            }),
            ActionKind::HideStarttls => {
                self.hide_starttls = true;
                Ok(Verdict::Accept {
                    custom: None,
                    rule: origin,
                })
            }
            // Accept, and stateful rules that let the command pass.
            _ => Ok(Verdict::Accept {
                custom: None,
                rule: origin,
            }),
        }
    }

    /// A tarpit: replies so far go out, then nothing until `delay` of farm time has passed
    /// since the command arrived.
    async fn pause(&mut self, delay: Duration) -> Step {
        let deadline = self.command_at + delay;
        self.flush().await?;
        tokio::select! {
            _ = self.farm.shutdown.cancelled() => {
                let host = self.host.clone();
                self.send(None, &host.replies.shutting_down, None);
                Err(Closed::by_farm("farm shutting down"))
            }
            _ = self.farm.clock.sleep_until(deadline) => Ok(()),
        }
    }

    /// Says nothing until the client gives up, `limit` passes, or the farm shuts down;
    /// whatever the client sends meanwhile is read and dropped.
    async fn hang(&mut self, limit: Duration) -> Step {
        let deadline = self.command_at + limit;
        self.flush().await?;
        loop {
            self.input.clear();
            self.start = 0;
            self.input.reserve(READ_CHUNK);
            tokio::select! {
                _ = self.farm.shutdown.cancelled() => return Ok(()),
                _ = self.farm.clock.sleep_until(deadline) => return Ok(()),
                read = self.stream.read_buf(&mut self.input) => match read {
                    Ok(0) | Err(_) => return Err(Closed::by_client("client gave up while the farm hung")),
                    Ok(_) => {}
                },
            }
        }
    }

    /// Sends a protocol error and ends the connection after too many of them.
    fn protocol_error(&mut self, reply: &Reply) -> Step {
        self.send(None, reply, None);
        self.errors += 1;
        if self.errors >= self.host.config.limits.max_errors {
            let host = self.host.clone();
            self.send(None, &host.replies.too_many_errors, None);
            return Err(Closed::by_farm("too many errors"));
        }
        Ok(())
    }

    /// Buffers a reply for the client and journals it.
    fn send(&mut self, stage: Option<Stage>, reply: &Reply, rule: Option<String>) {
        tracing::debug!(
            host = %self.host.name,
            conn = self.conn,
            rule = rule.as_deref().unwrap_or(""),
            "{}",
            reply.one_line()
        );
        reply.write_to(&mut self.output);
        let retry_after = self.retry_hint.take();
        self.record(EventKind::Reply {
            host: self.host.name.clone(),
            conn: self.conn,
            stage,
            reply: reply.clone(),
            rule,
            retry_after,
        });
    }

    fn record_command(&mut self, line: &[u8], command: Command) {
        self.command_at = self.farm.clock.now();
        self.record(EventKind::Command {
            host: self.host.name.clone(),
            conn: self.conn,
            line: sanitize_line(line),
            command,
        });
    }

    fn record(&self, kind: EventKind) {
        self.farm.journal.record(kind);
    }

    /// Ends the transaction in progress, if any, with its log line.
    fn end_transaction(&mut self, result: &str) {
        if let Some(tx) = self.tx.take() {
            self.log_transaction(&tx, result);
        }
    }

    /// The one log line of a transaction: who sent what to whom, and how it ended.
    fn log_transaction(&self, tx: &Transaction, result: &str) {
        let refused: Vec<String> = tx
            .refused
            .iter()
            .map(|(recipient, code)| format!("{recipient} ({code})"))
            .collect();
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
}

/// How the journal names what the client sent.
fn command_of(parsed: &Result<Request<Cow<'_, str>>, ParseError>) -> Command {
    match parsed {
        Ok(Request::Ehlo { host }) => Command::Ehlo {
            name: host.to_string(),
        },
        Ok(Request::Helo { host }) => Command::Helo {
            name: host.to_string(),
        },
        Ok(Request::Mail { from }) => Command::Mail {
            sender: from.address.to_string(),
            size: (from.size > 0).then_some(from.size as u64),
        },
        Ok(Request::Rcpt { to }) => Command::Rcpt {
            recipient: to.address.to_string(),
        },
        Ok(Request::Data) => Command::Data,
        Ok(Request::Bdat {
            chunk_size,
            is_last,
        }) => Command::Bdat {
            size: *chunk_size as u64,
            last: *is_last,
        },
        Ok(Request::Rset) => Command::Rset,
        Ok(Request::Noop { .. }) => Command::Noop,
        Ok(Request::Vrfy { .. }) => Command::Vrfy,
        Ok(Request::Help { .. }) => Command::Help,
        Ok(Request::Quit) => Command::Quit,
        Ok(Request::StartTls) => Command::Starttls,
        _ => Command::Other,
    }
}

/// Who ended a failed handshake, and why, in words for the journal.
fn handshake_failure(error: &std::io::Error) -> (ClosedBy, String) {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        // The client sent an alert: typically it did not trust the certificate.
        Some(rustls::Error::AlertReceived(alert)) => (
            ClosedBy::Client,
            format!("the client sent the alert {alert:?}"),
        ),
        Some(other) => (ClosedBy::Farm, format!("{other}")),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => (
            ClosedBy::Client,
            "the client closed the connection during the handshake".to_string(),
        ),
        None => (ClosedBy::Client, error.to_string()),
    }
}

/// An action the loader allows only at another stage (lose-reply, tls-fault): the farm
/// closes rather than guess.
fn misplaced(stage: Stage, rule: &str) -> Closed {
    Closed::by_farm(format!(
        "closed at {stage}: the action of {rule} belongs to another stage"
    ))
}

/// The journal's reason for a connection closed instead of answering.
fn lost_reply(stage: Stage, rule: &str) -> Closed {
    Closed::by_farm(format!(
        "closed without the reply at {stage} by {rule} (message kept)"
    ))
}

/// The value a rate or concurrency limit counts by, if this stage knows it.
fn rate_key(per: RateKey, envelope: &Envelope<'_>) -> Option<String> {
    match per {
        RateKey::Client => Some(envelope.client.to_string()),
        RateKey::ClientNet => Some(greylist::client_network(envelope.client, 24, 64).to_string()),
        RateKey::Sender => envelope.sender.map(str::to_ascii_lowercase),
        RateKey::Recipient => envelope.recipient.map(str::to_ascii_lowercase),
    }
}

/// A state key for one rule, shared by all hosts or kept per host.
fn scoped_key(rule_id: &str, scope: StateScope, host: &str, value: &str) -> String {
    match scope {
        StateScope::Shared => format!("{rule_id}/{value}"),
        StateScope::Host => format!("{rule_id}@{host}/{value}"),
    }
}

/// What a reply's placeholders stand for: `{client}`, `{helo}`, `{sender}`,
/// `{recipient}`, `{domain}` (the recipient's), `{hostname}`, `{remaining}` (seconds
/// left of a greylisting delay) and `{remaining-hms}` (the same as HH:MM:SS).
#[derive(Clone, Copy)]
struct ReplyVars<'a> {
    envelope: &'a Envelope<'a>,
    hostname: &'a str,
    remaining: Option<Duration>,
}

impl ReplyVars<'_> {
    fn fill(&self, reply: &Reply) -> Reply {
        reply.fill(|name| {
            let e = self.envelope;
            let recipient = e.recipient.or(e.accepted.first().map(String::as_str));
            Some(match name {
                "client" => e.client.to_string(),
                "helo" => e.helo.unwrap_or("").to_string(),
                "sender" => e.sender.unwrap_or("").to_string(),
                "recipient" => recipient.unwrap_or("").to_string(),
                "domain" => recipient
                    .and_then(|r| r.rsplit_once('@'))
                    .map_or(String::new(), |(_, d)| d.to_string()),
                "hostname" => self.hostname.to_string(),
                "remaining" => self.remaining.map_or(0, |r| r.as_secs()).to_string(),
                "remaining-hms" => {
                    let secs = self.remaining.map_or(0, |r| r.as_secs());
                    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
                }
                _ => return None,
            })
        })
    }
}
