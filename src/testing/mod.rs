//! A scripted SMTP client for tests: it sends exact bytes and reads exact replies, over TCP
//! or over any in-memory stream, such as the one [`Farm::connect_in_memory`] returns.
//!
//! It is for tests, so it does not return errors: when the farm answers something else
//! than a method expects, closes the connection too early or breaks the protocol, the method
//! panics with a message that shows what was expected and the conversation so far, the
//! last 40 lines marked `C:` (sent) and `S:` (received). Only [`SmtpClient::try_reply`],
//! [`SmtpClient::transaction`] and [`SmtpClient::quit`] take a closed connection in their
//! stride.
//!
//! ```
//! use mxfarm::testing::SmtpClient;
//! use mxfarm::{Farm, Outcome, Scenario};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let farm = Farm::start_ephemeral(Scenario::from_toml("full.toml", r#"
//!     name = "full"
//!     [[host]]
//!     name = "mx1"
//!     listen = "127.0.0.1:0"
//!     hostname = "mx1.example.test"
//!     [[host.rule]]
//!     stage = "rcpt"
//!     when = { rcpt = "full-*@example.test" }
//!     then = { reply = "452 4.2.2 Mailbox full" }
//! "#)?).await?;
//!
//! let mut client = SmtpClient::connect(farm.addr("mx1")).await;
//! client.greeting().await;
//! let ehlo = client.ehlo("client.test").await;
//! assert!(ehlo.lines.contains(&"PIPELINING".to_string()), "{ehlo}");
//!
//! // MAIL, a RCPT per recipient, DATA and the message, dot-stuffed and with its final dot.
//! let sent = client
//!     .transaction("me@sender.test", &["full-bob@example.test", "alice@example.test"],
//!         "Subject: hello\r\n\r\nHello.\r\n")
//!     .await;
//! assert!(sent.delivered(), "delivered to alice");
//! assert_eq!(sent.refusal().map(|r| r.text()).as_deref(), Some("452 4.2.2 Mailbox full"));
//!
//! // Exact bytes, exact replies: one write, then every reply in turn.
//! client.send("MAIL FROM:<me@sender.test>\r\nRCPT TO:<full-carol@example.test>\r\n").await;
//! client.expect("250 2.1.0 Ok").await;
//! client.expect("452 4.2.2 Mailbox full").await;
//! client.quit().await;
//!
//! let deliveries = farm.deliveries();
//! let bob = deliveries
//!     .iter()
//!     .find(|d| d.recipient.as_deref() == Some("full-bob@example.test"))
//!     .expect("a delivery to full-bob");
//! assert_eq!(bob.attempts[0].outcome, Outcome::Deferred);
//! assert_eq!(farm.messages()[0].recipients, vec!["alice@example.test"]);
//! farm.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Guards and clocks
//!
//! [`SmtpClient::connect`] bounds every read and write by a timer of [`GUARD`] (20 s),
//! so that a bug cannot hang a test forever; a passing test never gets near it, and no test
//! should rely on it. The timer is tokio's, and under tokio's paused time
//! (`#[tokio::test(start_paused = true)]`) tokio moves the clock on as soon as every task
//! waits, so such a timer would fire at once. [`SmtpClient::over`] therefore has no guard
//! by default: over an in-memory stream, paused time is safe (see the clocks table in the
//! [crate documentation](crate)), and the farm's own timeouts end a stuck conversation in
//! no real time. [`SmtpClient::with_guard`] changes either default.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use mxfarm::testing::SmtpClient;
//! use mxfarm::{Farm, Scenario};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let farm = Farm::start_ephemeral(Scenario::from_toml("slow.toml", r#"
//!     name = "slow"
//!     [[host]]
//!     name = "mx1"
//!     listen = "127.0.0.1:0"
//!     hostname = "mx1.example.test"
//!     [[host.rule]]
//!     stage = "data"
//!     then = { delay = "10m" }
//! "#)?).await?;
//!
//! let started = Instant::now();
//! let stream = farm.connect_in_memory("mx1", "192.0.2.1:4000".parse()?).expect("host mx1");
//! let mut client = SmtpClient::over(stream);
//! client.greeting().await;
//! client.ehlo("client.test").await;
//! // Ten minutes of tarpit before the 354, in no real time.
//! assert!(client.transaction("me@sender.test", &["bob@example.test"], "Subject: hi\r\n\r\n")
//!     .await
//!     .delivered());
//! // Idle past the farm's 5-minute command timeout.
//! client.expect("421 4.4.2 mx1.example.test Error: timeout exceeded").await;
//! client.expect_closed().await;
//! assert!(started.elapsed() < Duration::from_secs(5));
//! farm.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`Farm::connect_in_memory`]: crate::Farm::connect_in_memory

use std::fmt::{self, Write as _};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod replies;
mod text;

pub use replies::{Reply, Transaction};
use text::{dot_stuffed, is_closed, parse_line, printable, sent_lines};

/// The guard [`SmtpClient::connect`] puts on every read and write.
pub const GUARD: Duration = Duration::from_secs(20);

/// How many lines of the conversation a panic message shows.
const SHOWN_LINES: usize = 40;

/// Any stream the client can talk over: TCP, an in-memory duplex, TLS over either.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> Stream for S {}

/// So that what wraps the stream, such as a TLS stream after STARTTLS, can be `Debug`.
impl fmt::Debug for dyn Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stream")
    }
}

/// A scripted SMTP client; see the [module documentation](self).
pub struct SmtpClient {
    io: BufReader<Box<dyn Stream>>,
    guard: Option<Duration>,
    log: Vec<String>,
}

/// One line read from the farm.
enum Line {
    /// A whole line, without its CRLF.
    Whole(Vec<u8>),
    /// The connection ended (EOF or reset) before a whole line.
    Closed,
}

impl SmtpClient {
    /// Connects over TCP, with a [`GUARD`] on every read and write. Panics if the
    /// connection cannot be made.
    pub async fn connect(addr: SocketAddr) -> SmtpClient {
        let stream = match tokio::time::timeout(GUARD, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => panic!("cannot connect to the farm at {addr}: {e}"),
            Err(_) => panic!("cannot connect to the farm at {addr} within {GUARD:?}"),
        };
        SmtpClient::over(stream).with_guard(Some(GUARD))
    }

    /// Talks over `stream`, such as the one [`Farm::connect_in_memory`] returns, with no
    /// guard: see [Guards and clocks](self#guards-and-clocks).
    ///
    /// [`Farm::connect_in_memory`]: crate::Farm::connect_in_memory
    pub fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S) -> SmtpClient {
        SmtpClient {
            io: BufReader::new(Box::new(stream)),
            guard: None,
            log: Vec::new(),
        }
    }

    /// Sets the guard on every read and write: a method that waits longer panics. `None`
    /// waits for ever.
    pub fn with_guard(mut self, guard: Option<Duration>) -> Self {
        self.guard = guard;
        self
    }

    /// Sends `bytes` exactly as given, in one write. Panics if the write fails.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        if let Err(e) = self.try_send(bytes.as_ref()).await {
            self.fail(format_args!("cannot send to the farm: {e}"));
        }
    }

    /// The next whole reply, all its lines. Panics if the connection closes first.
    pub async fn reply(&mut self) -> Reply {
        match self.try_reply().await {
            Some(reply) => reply,
            None => self.fail("expected a reply, but the connection closed"),
        }
    }

    /// The next whole reply; `None` if the connection closed (EOF or reset) before it was
    /// whole.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        let mut written = Vec::new();
        let mut code = None;
        loop {
            let bytes = match self.read_line().await {
                Line::Whole(bytes) => bytes,
                Line::Closed => return None,
            };
            let (this, last) = match parse_line(&bytes) {
                Ok(parsed) => parsed,
                Err(problem) => self.fail(format_args!("protocol error: {problem}")),
            };
            if let Some(code) = code.filter(|&code| code != this) {
                self.fail(format_args!(
                    "protocol error: a {this} line in a {code} reply"
                ));
            }
            code = Some(this);
            let line = String::from_utf8_lossy(&bytes).into_owned();
            lines.push(line.get(4..).unwrap_or_default().to_string());
            written.push(line);
            if last {
                return Some(Reply {
                    code: this,
                    lines,
                    written,
                });
            }
        }
    }

    /// Sends `line` and a CRLF, and returns the reply. `line` is one line: use
    /// [`send`](Self::send) for anything else.
    pub async fn command(&mut self, line: &str) -> Reply {
        if line.contains(['\r', '\n']) {
            self.fail(format_args!(
                "command() takes one line without CRLF, not {line:?}; send() sends any bytes"
            ));
        }
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends `line` and a CRLF and returns the reply, or `None` if the connection closed
    /// before it (then nothing panics): for senders that go on after the farm hangs up.
    pub async fn try_command(&mut self, line: &str) -> Option<Reply> {
        self.exchange(format!("{line}\r\n")).await
    }

    /// The next reply, which must be exactly `expected`, as [`Reply::text`] writes it.
    pub async fn expect(&mut self, expected: &str) -> Reply {
        let Some(reply) = self.try_reply().await else {
            self.fail(format_args!(
                "expected the reply\n    {expected:?}\nbut the connection closed"
            ));
        };
        if reply.text() != expected {
            self.fail(format_args!(
                "expected the reply\n    {expected:?}\ngot\n    {:?}",
                reply.text()
            ));
        }
        reply
    }

    /// The next reply, which must have the code `code`.
    pub async fn expect_code(&mut self, code: u16) -> Reply {
        let Some(reply) = self.try_reply().await else {
            self.fail(format_args!(
                "expected a {code} reply, but the connection closed"
            ));
        };
        if reply.code != code {
            self.fail(format_args!(
                "expected a {code} reply, got\n    {:?}",
                reply.text()
            ));
        }
        reply
    }

    /// Waits until the farm closes the connection (EOF or reset); panics if it sends
    /// anything first.
    pub async fn expect_closed(&mut self) {
        let guard = self.guard;
        let read = within(guard, async {
            match self.io.fill_buf().await {
                Ok(bytes) => Ok(bytes.to_vec()),
                Err(e) => Err(e),
            }
        })
        .await;
        match read {
            None => self.fail(format_args!(
                "expected the farm to close the connection, but it was still open after {:?}",
                guard.unwrap_or_default()
            )),
            Some(Ok(bytes)) if bytes.is_empty() => self.record("S: (connection closed)"),
            Some(Ok(bytes)) => {
                let shown = format!("S: {}", printable(&bytes));
                self.record(&shown);
                self.fail("expected the farm to close the connection, but it sent more");
            }
            Some(Err(e)) if is_closed(&e) => self.record(&format!("S: (connection closed: {e})")),
            Some(Err(e)) => self.fail(format_args!("cannot read from the farm: {e}")),
        }
    }

    /// Reads the greeting, which must be a 220.
    pub async fn greeting(&mut self) -> Reply {
        let Some(reply) = self.try_reply().await else {
            self.fail("expected a 220 greeting, but the connection closed");
        };
        if reply.code != 220 {
            self.fail(format_args!(
                "expected a 220 greeting, got\n    {:?}",
                reply.text()
            ));
        }
        reply
    }

    /// Says `EHLO name`; the reply must be a 250.
    pub async fn ehlo(&mut self, name: &str) -> Reply {
        self.send(format!("EHLO {name}\r\n")).await;
        self.expect_code(250).await
    }

    /// One transaction as a sender does it: `MAIL FROM:<from>`, a `RCPT TO:<..>` per
    /// recipient, then DATA and `message` (dot-stuffed here, a CRLF added if it does not
    /// end with one, then the final dot; one write) if any recipient was accepted and DATA
    /// got its 354.
    ///
    /// It stops where the farm refuses MAIL or DATA, at a 421, or where the connection
    /// closes, and never panics on a refusal or a closed connection: the [`Transaction`]
    /// tells what happened. It does not QUIT; when every recipient was refused the farm
    /// still holds the MAIL, so send `RSET` before another transaction.
    pub async fn transaction(&mut self, from: &str, to: &[&str], message: &str) -> Transaction {
        let mut t = Transaction {
            mail: None,
            rcpt: vec![None; to.len()],
            data: None,
            end_of_data: None,
            lost: false,
        };
        t.mail = self.exchange(format!("MAIL FROM:<{from}>\r\n")).await;
        match &t.mail {
            Some(mail) if mail.is_positive() => {}
            Some(_) => return t,
            None => {
                t.lost = true;
                return t;
            }
        }
        for (i, recipient) in to.iter().enumerate() {
            let reply = self.exchange(format!("RCPT TO:<{recipient}>\r\n")).await;
            let closing = reply.as_ref().is_none_or(|r| r.code == 421);
            t.lost = reply.is_none();
            t.rcpt[i] = reply;
            if closing {
                return t;
            }
        }
        if !t.rcpt.iter().flatten().any(Reply::is_positive) {
            return t;
        }
        t.data = self.exchange("DATA\r\n".to_string()).await;
        match &t.data {
            Some(data) if data.code == 354 => {}
            Some(_) => return t,
            None => {
                t.lost = true;
                return t;
            }
        }
        t.end_of_data = self.exchange(dot_stuffed(message)).await;
        t.lost = t.end_of_data.is_none();
        t
    }

    /// Says QUIT and lets the connection go. A 221, a 421 or a connection already closed
    /// are all fine; any other reply panics.
    pub async fn quit(&mut self) {
        if let Some(reply) = self.exchange("QUIT\r\n".to_string()).await
            && reply.code != 221
            && reply.code != 421
        {
            self.fail(format_args!(
                "expected 221 to QUIT, got\n    {:?}",
                reply.text()
            ));
        }
    }

    /// The whole conversation so far, a line per line sent (`C: `) or received (`S: `),
    /// long lines shortened, invalid UTF-8 and control characters escaped.
    pub fn conversation(&self) -> String {
        self.log.join("\n")
    }

    /// The stream, to start TLS on after `220 Ready to start TLS` (with e.g.
    /// `tokio_rustls::TlsConnector::connect(name, client.into_inner())`); talk on with
    /// [`SmtpClient::over`] the TLS stream. Panics if the farm has sent bytes that were not
    /// read yet: they would be lost.
    pub fn into_inner(mut self) -> Box<dyn Stream> {
        if !self.io.buffer().is_empty() {
            let unread = format!("S: {} (not read)", printable(self.io.buffer()));
            self.record(&unread);
            self.fail("the farm sent bytes that were not read yet");
        }
        self.io.into_inner()
    }

    /// Sends a command or a message, then reads its reply; `None` if the connection is gone.
    async fn exchange(&mut self, bytes: String) -> Option<Reply> {
        if let Err(e) = self.try_send(bytes.as_bytes()).await {
            if !is_closed(&e) {
                self.fail(format_args!("cannot send to the farm: {e}"));
            }
            self.record(&format!("C: (not sent, the connection closed: {e})"));
            return None;
        }
        self.try_reply().await
    }

    async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for line in sent_lines(bytes) {
            self.record(&line);
        }
        let guard = self.guard;
        let writer = self.io.get_mut();
        let written = within(guard, async {
            writer.write_all(bytes).await?;
            writer.flush().await
        })
        .await;
        match written {
            Some(result) => result,
            None => self.fail(format_args!(
                "the farm did not take the bytes within {:?}",
                guard.unwrap_or_default()
            )),
        }
    }

    async fn read_line(&mut self) -> Line {
        let guard = self.guard;
        let mut bytes = Vec::new();
        let read = within(guard, self.io.read_until(b'\n', &mut bytes)).await;
        match read {
            None => {
                if !bytes.is_empty() {
                    self.record(&format!("S: {} (no line end yet)", printable(&bytes)));
                }
                self.fail(format_args!(
                    "no reply within {:?}",
                    guard.unwrap_or_default()
                ))
            }
            Some(Ok(_)) if bytes.ends_with(b"\r\n") => {
                bytes.truncate(bytes.len() - 2);
                self.record(&format!("S: {}", printable(&bytes)));
                Line::Whole(bytes)
            }
            Some(Ok(_)) if bytes.ends_with(b"\n") => {
                self.record(&format!("S: {}", printable(&bytes)));
                self.fail("protocol error: a reply line ended by a bare LF, not CRLF")
            }
            Some(Ok(_)) => {
                if bytes.is_empty() {
                    self.record("S: (connection closed)");
                } else {
                    let partial = printable(&bytes);
                    self.record(&format!("S: {partial} (then the connection closed)"));
                }
                Line::Closed
            }
            Some(Err(e)) if is_closed(&e) => {
                self.record(&format!("S: (connection closed: {e})"));
                Line::Closed
            }
            Some(Err(e)) => self.fail(format_args!("cannot read from the farm: {e}")),
        }
    }

    fn record(&mut self, line: &str) {
        self.log.push(line.to_string());
    }

    /// Panics with `what` and the end of the conversation.
    fn fail(&self, what: impl fmt::Display) -> ! {
        let skipped = self.log.len().saturating_sub(SHOWN_LINES);
        let mut shown = String::new();
        if skipped > 0 {
            let _ = writeln!(shown, "({skipped} earlier lines left out)");
        }
        for line in &self.log[skipped..] {
            let _ = writeln!(shown, "{line}");
        }
        panic!("{what}\nconversation so far:\n{shown}");
    }
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("guard", &self.guard)
            .field("conversation", &self.log)
            .finish_non_exhaustive()
    }
}

/// Runs `f` within `guard`; `None` if the guard ran out first.
async fn within<F: Future>(guard: Option<Duration>, f: F) -> Option<F::Output> {
    match guard {
        Some(guard) => tokio::time::timeout(guard, f).await.ok(),
        None => Some(f.await),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

    use super::*;

    /// A client over a duplex stream, and the peer's end, which a test scripts by hand.
    fn pair() -> (SmtpClient, BufReader<DuplexStream>) {
        let (ours, theirs) = tokio::io::duplex(4096);
        (SmtpClient::over(ours), BufReader::new(theirs))
    }

    /// Reads one line the client sent, CRLF included.
    async fn line(peer: &mut BufReader<DuplexStream>) -> String {
        let mut line = String::new();
        peer.read_line(&mut line).await.unwrap();
        line
    }

    async fn write(peer: &mut BufReader<DuplexStream>, bytes: &str) {
        peer.get_mut().write_all(bytes.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn reads_a_multi_line_reply_whole() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "220 mx1.test ESMTP\r\n").await;
        assert_eq!(client.greeting().await.lines, vec!["mx1.test ESMTP"]);
        let farm = async {
            assert_eq!(line(&mut peer).await, "EHLO me.test\r\n");
            write(
                &mut peer,
                "250-mx1.test\r\n250-SIZE 100\r\n250 PIPELINING\r\n",
            )
            .await;
        };
        let (reply, ()) = tokio::join!(client.ehlo("me.test"), farm);
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, vec!["mx1.test", "SIZE 100", "PIPELINING"]);
        assert_eq!(reply.text(), "250-mx1.test\n250-SIZE 100\n250 PIPELINING");
        assert_eq!(reply.to_string(), reply.text());
        assert!(reply.is_positive());
        assert_eq!(
            client.conversation(),
            "S: 220 mx1.test ESMTP\nC: EHLO me.test\nS: 250-mx1.test\nS: 250-SIZE 100\n\
             S: 250 PIPELINING"
        );
    }

    #[tokio::test]
    async fn a_bare_code_ends_a_reply_and_is_kept_as_written() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "250-\r\n250\r\n").await;
        let reply = client.reply().await;
        assert_eq!(reply.lines, vec!["", ""]);
        assert_eq!(reply.text(), "250-\n250");
    }

    #[tokio::test]
    #[should_panic(
        expected = "protocol error: a reply line must start with three digits\n\
                               conversation so far:\nC: NOOP\nS: hello there\n"
    )]
    async fn a_line_without_a_code_is_a_protocol_error() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "hello there\r\n").await;
        client.command("NOOP").await;
    }

    #[tokio::test]
    #[should_panic(expected = "protocol error: a 550 line in a 250 reply")]
    async fn lines_with_different_codes_are_a_protocol_error() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "250-one\r\n550 two\r\n").await;
        client.reply().await;
    }

    #[tokio::test]
    #[should_panic(expected = "protocol error: a reply code must be followed by")]
    async fn a_code_run_into_its_text_is_a_protocol_error() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "250Ok\r\n").await;
        client.reply().await;
    }

    #[tokio::test]
    #[should_panic(expected = "bare LF")]
    async fn a_bare_lf_is_a_protocol_error() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "250 Ok\n").await;
        client.reply().await;
    }

    #[tokio::test]
    async fn eof_before_a_whole_reply_is_none() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "250-first\r\n250 sec").await;
        drop(peer);
        assert_eq!(client.try_reply().await, None);
        assert_eq!(
            client.conversation(),
            "S: 250-first\nS: 250 sec (then the connection closed)"
        );
        assert_eq!(client.try_reply().await, None);
    }

    #[tokio::test]
    #[should_panic(expected = "expected a reply, but the connection closed")]
    async fn reply_panics_at_eof() {
        let (mut client, peer) = pair();
        drop(peer);
        client.reply().await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected the reply\n    \"250 2.0.0 Ok\"\ngot\n    \"550 No\"")]
    async fn expect_shows_both_replies() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "550 No\r\n").await;
        client.expect("250 2.0.0 Ok").await;
    }

    #[tokio::test]
    async fn expect_closed_takes_eof() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "221 Bye\r\n").await;
        drop(peer);
        client.expect("221 Bye").await;
        client.expect_closed().await;
        assert!(client.conversation().ends_with("S: (connection closed)"));
    }

    #[tokio::test]
    #[should_panic(expected = "expected the farm to close the connection, but it sent more")]
    async fn expect_closed_panics_on_more_bytes() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "421 Bye\r\n").await;
        client.expect_closed().await;
    }

    #[tokio::test]
    #[should_panic(expected = "no reply within 10ms")]
    async fn the_guard_ends_a_silent_wait() {
        let (client, _peer) = pair();
        let mut client = client.with_guard(Some(Duration::from_millis(10)));
        client.reply().await;
    }

    #[tokio::test]
    async fn a_panic_shows_only_the_last_lines() {
        let (mut client, mut peer) = pair();
        for i in 0..50 {
            write(&mut peer, &format!("250 line {i}\r\n")).await;
            client.reply().await;
        }
        write(&mut peer, "oops\r\n").await;
        let panic = tokio::spawn(async move { client.reply().await })
            .await
            .unwrap_err()
            .into_panic();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("(11 earlier lines left out)\nS: 250 line 11\n"));
        assert!(message.ends_with("S: 250 line 49\nS: oops\n"), "{message}");
    }

    #[tokio::test]
    async fn the_log_escapes_and_shortens() {
        let (mut client, mut peer) = pair();
        client.send(b"\x00\xff\tx\r\nlong ".as_slice()).await;
        client.send("y".repeat(300)).await;
        let mut sent = vec![0; 6 + 5 + 300];
        peer.read_exact(&mut sent).await.unwrap();
        let log = client.conversation();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], "C: \\x00\\xff\\tx");
        assert_eq!(lines[1], "C: long  (no line end)");
        assert_eq!(
            lines[2],
            format!("C: {}… (300 bytes) (no line end)", "y".repeat(200))
        );
    }

    #[test]
    fn dot_stuffing_and_the_final_dot() {
        assert_eq!(dot_stuffed(""), ".\r\n");
        assert_eq!(dot_stuffed("a\r\n"), "a\r\n.\r\n");
        assert_eq!(dot_stuffed("no end"), "no end\r\n.\r\n");
        assert_eq!(
            dot_stuffed(".lead\r\nmid\r\n.\r\n..two\r\n"),
            "..lead\r\nmid\r\n..\r\n...two\r\n.\r\n"
        );
        // Only after a CRLF, as the farm reads it.
        assert_eq!(dot_stuffed("a\n.b\r\n"), "a\n.b\r\n.\r\n");
    }

    /// The farm's side of a transaction: answers each line from `script` in turn.
    async fn serve(mut peer: BufReader<DuplexStream>, script: &[(&str, &str)]) -> Vec<String> {
        let mut got = Vec::new();
        for (expected, reply) in script {
            let mut received = String::new();
            loop {
                let line = line(&mut peer).await;
                received.push_str(&line);
                if !expected.starts_with("Subject") || line == ".\r\n" {
                    break;
                }
            }
            assert_eq!(received, *expected);
            got.push(received);
            write(&mut peer, reply).await;
        }
        got
    }

    #[tokio::test]
    async fn a_transaction_delivers_to_the_accepted_recipients() {
        let (mut client, peer) = pair();
        let farm = serve(
            peer,
            &[
                ("MAIL FROM:<me@a.test>\r\n", "250 Ok\r\n"),
                ("RCPT TO:<x@b.test>\r\n", "452 Full\r\n"),
                ("RCPT TO:<y@b.test>\r\n", "250 Ok\r\n"),
                ("DATA\r\n", "354 Go\r\n"),
                ("Subject: s\r\n\r\n..dot\r\n.\r\n", "250 Queued\r\n"),
            ],
        );
        let (t, _) = tokio::join!(
            client.transaction(
                "me@a.test",
                &["x@b.test", "y@b.test"],
                "Subject: s\r\n\r\n.dot"
            ),
            farm
        );
        assert!(t.delivered());
        assert!(!t.closed());
        assert_eq!(t.refusal().map(Reply::text).as_deref(), Some("452 Full"));
        assert_eq!(t.rcpt.len(), 2);
        assert_eq!(t.data.map(|r| r.code), Some(354));
    }

    #[tokio::test]
    async fn a_transaction_stops_where_the_farm_refuses() {
        let (mut client, peer) = pair();
        let farm = serve(
            peer,
            &[
                ("MAIL FROM:<>\r\n", "250 Ok\r\n"),
                ("RCPT TO:<x@b.test>\r\n", "550 No\r\n"),
            ],
        );
        let (t, _) = tokio::join!(client.transaction("", &["x@b.test"], "hi"), farm);
        assert!(!t.delivered());
        assert!(!t.closed());
        assert_eq!(t.data, None);
        assert_eq!(t.refusal().map(|r| r.code), Some(550));

        let (mut client, peer) = pair();
        let farm = serve(peer, &[("MAIL FROM:<a@b>\r\n", "451 Later\r\n")]);
        let (t, _) = tokio::join!(client.transaction("a@b", &["x@b.test"], "hi"), farm);
        assert_eq!(t.rcpt, vec![None]);
        assert_eq!(t.refusal().map(|r| r.code), Some(451));
    }

    #[tokio::test]
    async fn a_transaction_ends_at_a_421_or_a_closed_connection() {
        let (mut client, peer) = pair();
        let farm = serve(
            peer,
            &[
                ("MAIL FROM:<a@b>\r\n", "250 Ok\r\n"),
                ("RCPT TO:<x@b.test>\r\n", "421 Bye\r\n"),
            ],
        );
        let (t, _) = tokio::join!(
            client.transaction("a@b", &["x@b.test", "y@b.test"], ""),
            farm
        );
        assert!(t.closed());
        assert_eq!(t.rcpt[1], None);
        assert!(!client.conversation().contains("y@b.test"));

        let (mut client, peer) = pair();
        let farm = async move {
            let mut peer = peer;
            line(&mut peer).await;
            write(&mut peer, "250 Ok\r\n").await;
            line(&mut peer).await;
            drop(peer);
        };
        let (t, ()) = tokio::join!(client.transaction("a@b", &["x@b.test"], ""), farm);
        assert!(t.closed());
        assert_eq!(t.refusal(), None);
        assert_eq!(t.rcpt, vec![None]);
        // QUIT on a closed connection is fine.
        client.quit().await;
    }

    #[tokio::test]
    #[should_panic(expected = "takes one line without CRLF")]
    async fn command_refuses_line_ends() {
        let (mut client, _peer) = pair();
        client.command("NOOP\r\n").await;
    }

    #[tokio::test]
    #[should_panic(expected = "the farm sent bytes that were not read yet")]
    async fn into_inner_refuses_to_lose_bytes() {
        let (mut client, mut peer) = pair();
        write(&mut peer, "220 Ready\r\n250 early\r\n").await;
        client.expect("220 Ready").await;
        let _ = client.into_inner();
    }
}
