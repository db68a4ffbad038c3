//! One SMTP session as a sending MTA holds it: greeting, EHLO (HELO when EHLO is
//! refused with anything but 421), MAIL, a RCPT per recipient still pending, DATA, the
//! content, QUIT. Every wait has the model's timeout for that stage, so a farm host that
//! hangs costs the sender what it would cost a real one, in virtual time.
//!
//! Unlike [`crate::testing::SmtpClient`], nothing here panics: whatever the farm sends or
//! does not send is an outcome the model reacts to.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The longest reply line read; a longer one ends the session as a protocol error.
const MAX_LINE: u64 = 4096;
/// The most lines of one reply.
const MAX_LINES: usize = 100;

/// Where in a session something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Connect,
    Greeting,
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    /// The reply to the content's final dot.
    Dot,
}

impl Stage {
    /// As the output writes it: `greeting`, `RCPT`, `end of data`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::Dot => "end of data",
        }
    }

    /// Whether a failure here is before the session could carry mail: Postfix does not
    /// count such sessions against `smtp_mx_session_limit`, Exim calls them host errors.
    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            Stage::Connect | Stage::Greeting | Stage::Ehlo | Stage::Helo
        )
    }
}

/// A reply from the farm: its code and its text after the code, all lines joined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerReply {
    pub code: u16,
    pub text: String,
}

impl ServerReply {
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl std::fmt::Display for ServerReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.text)
        }
    }
}

/// What went wrong at a stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Trouble {
    /// A reply that refuses (4xx or 5xx; or anything but 354 to DATA, 220 as greeting).
    Reply { reply: ServerReply },
    /// The connection closed, or the farm sent what is not SMTP.
    Lost,
    /// No reply within the stage's timeout.
    Timeout {
        #[serde(rename = "after_ms", with = "crate::millis")]
        after: Duration,
    },
}

impl Trouble {
    /// Whether it is permanent (a 5xx reply).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Trouble::Reply { reply } if reply.is_permanent())
    }
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::Reply { reply } => write!(f, "{reply}"),
            Trouble::Lost => f.write_str("connection lost"),
            Trouble::Timeout { after } => {
                write!(f, "no reply within {}", super::params::compact(*after))
            }
        }
    }
}

/// The timeouts of each wait, from the model's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub greeting: Duration,
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data: Duration,
    pub dot: Duration,
}

/// What one session is for.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub helo: &'a str,
    pub from: &'a str,
    /// The recipients still pending, by their index in the message.
    pub recipients: &'a [(usize, &'a str)],
    /// The content, dot-stuffed, ending with `.\r\n`.
    pub content: &'a str,
}

/// How one session went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    /// The reply to each RCPT sent, by recipient index.
    pub rcpt: Vec<(usize, ServerReply)>,
    /// The recipients the end of data accepted.
    pub delivered: Vec<usize>,
    /// Where and how the session failed, if it did; `None` when it went through to the
    /// reply to the content (or had no recipient to send it to).
    pub failure: Option<(Stage, Trouble)>,
}

impl Session {
    /// Whether it got past the greeting and EHLO.
    pub fn passed_handshake(&self) -> bool {
        self.failure
            .as_ref()
            .is_none_or(|(stage, _)| !stage.is_handshake())
    }
}

/// Talks one session over `stream`: greeting, EHLO, one transaction, QUIT.
#[cfg(test)]
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    envelope: Envelope<'_>,
    timeouts: &Timeouts,
) -> Session {
    let (session, kept) = deliver(Start::Fresh(stream), envelope, timeouts, false).await;
    debug_assert!(kept.is_none());
    session
}

/// How a session begins: over a new connection (greeting and EHLO first), or over one
/// an earlier session left open, already probed with RSET.
pub enum Start<S> {
    Fresh(S),
    Reused(Connection<S>),
}

/// An open connection past its greeting and EHLO, between transactions: what a
/// connection cache keeps.
pub struct Connection<S> {
    talk: Talk<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Postfix's probe of a cached connection before it is used again
    /// (`smtp_reuse_common`): RSET, and a 2xx back within `timeout`. Anything else and
    /// the connection is closed (a QUIT that waits for nothing) and `None` returned.
    pub async fn probe(mut self, timeout: Duration) -> Option<Connection<S>> {
        // The probe waits in virtual time like any other command.
        match self.talk.command(Stage::Mail, "RSET\r\n", timeout).await {
            Ok(reply) if reply.is_ok() => Some(self),
            _ => {
                self.talk.quit().await;
                None
            }
        }
    }
}

/// Talks one transaction from `start`. With `keep`, a connection still fit for another
/// transaction is handed back instead of QUIT (Postfix with the connection cache: after
/// the end of data it sends nothing; after a transaction that ended before DATA, an
/// RSET first, `SMTP_STATE_ABORT`). A connection that was lost, timed out or got a 421
/// is never kept.
pub async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    start: Start<S>,
    envelope: Envelope<'_>,
    timeouts: &Timeouts,
    keep: bool,
) -> (Session, Option<Connection<S>>) {
    let mut out = Session::default();
    let mut talk = match start {
        Start::Fresh(stream) => {
            let mut talk = Talk {
                io: BufReader::new(stream),
            };
            if let Err(failure) = talk.handshake(envelope.helo, timeouts).await {
                out.failure = Some(failure);
                talk.quit().await;
                return (out, None);
            }
            talk
        }
        Start::Reused(connection) => connection.talk,
    };
    let result = talk.transact(envelope, timeouts, &mut out).await;
    if let Err(failure) = result {
        out.failure = Some(failure);
    }
    let fit = match &out.failure {
        None => true,
        Some((_, Trouble::Reply { reply })) => reply.code != 421,
        Some(_) => false,
    };
    if keep && fit {
        // The end of data (accepted or refused) leaves no transaction open; one that
        // ended before it is reset now, as Postfix does before it caches the connection.
        let open_transaction = !matches!(out.failure, Some((Stage::Dot, _)))
            && (out.failure.is_some() || out.delivered.is_empty());
        if !open_transaction
            || talk
                .command(Stage::Mail, "RSET\r\n", timeouts.mail)
                .await
                .is_ok_and(|r| r.is_ok())
        {
            return (out, Some(Connection { talk }));
        }
    }
    talk.quit().await;
    (out, None)
}

struct Talk<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Talk<S> {
    /// A polite QUIT that waits for nothing: the farm journals it when it comes.
    async fn quit(&mut self) {
        let _ = self.io.get_mut().write_all(b"QUIT\r\n").await;
        let _ = self.io.get_mut().shutdown().await;
    }

    async fn handshake(&mut self, helo: &str, timeouts: &Timeouts) -> Result<(), (Stage, Trouble)> {
        let greeting = self.reply(Stage::Greeting, timeouts.greeting).await?;
        if greeting.code != 220 {
            return Err(refused(Stage::Greeting, greeting));
        }
        let ehlo = self
            .command(Stage::Ehlo, &format!("EHLO {helo}\r\n"), timeouts.helo)
            .await?;
        if !ehlo.is_ok() {
            if ehlo.code == 421 {
                return Err(refused(Stage::Ehlo, ehlo));
            }
            let helo = self
                .command(Stage::Helo, &format!("HELO {helo}\r\n"), timeouts.helo)
                .await?;
            if !helo.is_ok() {
                return Err(refused(Stage::Helo, helo));
            }
        }
        Ok(())
    }

    async fn transact(
        &mut self,
        envelope: Envelope<'_>,
        timeouts: &Timeouts,
        out: &mut Session,
    ) -> Result<(), (Stage, Trouble)> {
        let mail = self
            .command(
                Stage::Mail,
                &format!("MAIL FROM:<{}>\r\n", envelope.from),
                timeouts.mail,
            )
            .await?;
        if !mail.is_ok() {
            return Err(refused(Stage::Mail, mail));
        }
        let mut accepted = Vec::new();
        for &(index, recipient) in envelope.recipients {
            let reply = self
                .command(
                    Stage::Rcpt,
                    &format!("RCPT TO:<{recipient}>\r\n"),
                    timeouts.rcpt,
                )
                .await?;
            let closing = reply.code == 421;
            if reply.is_ok() {
                accepted.push(index);
            }
            out.rcpt.push((index, reply.clone()));
            if closing {
                // The server is closing: the recipients after it were never asked about.
                return Err(refused(Stage::Rcpt, reply));
            }
        }
        if accepted.is_empty() {
            return Ok(());
        }
        let data = self.command(Stage::Data, "DATA\r\n", timeouts.data).await?;
        if data.code != 354 {
            return Err(refused(Stage::Data, data));
        }
        let dot = self
            .command(Stage::Dot, envelope.content, timeouts.dot)
            .await?;
        if !dot.is_ok() {
            return Err(refused(Stage::Dot, dot));
        }
        out.delivered = accepted;
        Ok(())
    }

    async fn command(
        &mut self,
        stage: Stage,
        bytes: &str,
        timeout: Duration,
    ) -> Result<ServerReply, (Stage, Trouble)> {
        let write = async {
            let io = self.io.get_mut();
            io.write_all(bytes.as_bytes()).await?;
            io.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err((stage, Trouble::Lost)),
            Err(_) => return Err((stage, timed_out(timeout))),
        }
        self.reply(stage, timeout).await
    }

    /// The next whole reply, within `timeout` from now.
    async fn reply(
        &mut self,
        stage: Stage,
        timeout: Duration,
    ) -> Result<ServerReply, (Stage, Trouble)> {
        match tokio::time::timeout(timeout, self.read_reply()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err((stage, Trouble::Lost)),
            Err(_) => Err((stage, timed_out(timeout))),
        }
    }

    /// `None` when the connection closed or what came is not an SMTP reply.
    async fn read_reply(&mut self) -> Option<ServerReply> {
        let mut first: Option<ServerReply> = None;
        let mut line = Vec::new();
        for _ in 0..MAX_LINES {
            line.clear();
            let read = (&mut self.io)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await;
            if !matches!(read, Ok(n) if n > 0) || !line.ends_with(b"\n") {
                return None;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (code, last, rest) = parse_line(text)?;
            match &mut first {
                Some(f) if f.code != code => return None,
                // The lines joined with spaces, as an MTA's log writes a multi-line
                // reply; an enhanced code repeated on every line is given once.
                Some(f) => {
                    let repeated = f.text.split(' ').next().filter(|c| c.contains('.'));
                    let rest = match repeated {
                        Some(c) => rest.strip_prefix(c).map_or(rest, str::trim_start),
                        None => rest,
                    };
                    if !rest.is_empty() {
                        f.text.push(' ');
                        f.text.push_str(rest);
                    }
                }
                None => {
                    first = Some(ServerReply {
                        code,
                        text: rest.to_string(),
                    })
                }
            }
            if last {
                return first;
            }
        }
        None
    }
}

/// `(code, is last line, text)` of `250-mx1.test`.
fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let digits = line.get(..3)?;
    let code: u16 = digits.parse().ok().filter(|c| (200..600).contains(c))?;
    match line.as_bytes().get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, line.get(4..).unwrap_or(""))),
        Some(b'-') => Some((code, false, line.get(4..).unwrap_or(""))),
        Some(_) => None,
    }
}

fn refused(stage: Stage, reply: ServerReply) -> (Stage, Trouble) {
    (stage, Trouble::Reply { reply })
}

fn timed_out(after: Duration) -> Trouble {
    Trouble::Timeout { after }
}

/// `content` dot-stuffed, with the final `.\r\n`.
pub fn dot_stuffed(content: &str) -> String {
    let mut out = String::with_capacity(content.len() + 8);
    for line in content.split_inclusive('\n') {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_are_read_or_refused() {
        assert_eq!(parse_line("250-mx1.test"), Some((250, false, "mx1.test")));
        assert_eq!(parse_line("250 ok"), Some((250, true, "ok")));
        assert_eq!(parse_line("421"), Some((421, true, "")));
        assert_eq!(parse_line("25x ok"), None);
        assert_eq!(parse_line("250+ok"), None);
        assert_eq!(parse_line("999 what"), None);
    }

    #[test]
    fn content_is_dot_stuffed_and_ended() {
        assert_eq!(dot_stuffed("a\r\n.b\r\n"), "a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuffed("a"), "a\r\n.\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out_and_garbage_is_a_lost_connection() {
        let timeouts = Timeouts {
            greeting: Duration::from_secs(300),
            helo: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data: Duration::from_secs(120),
            dot: Duration::from_secs(600),
        };
        let envelope = Envelope {
            helo: "mta.sender.test",
            from: "a@sender.test",
            recipients: &[(0, "b@x.test")],
            content: ".\r\n",
        };
        let (ours, _theirs) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        let silent = session(ours, envelope, &timeouts).await;
        assert_eq!(started.elapsed(), Duration::from_secs(300));
        assert!(matches!(
            silent.failure,
            Some((Stage::Greeting, Trouble::Timeout { .. }))
        ));

        let (ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(b"hello there\r\n").await.unwrap();
        let garbage = session(ours, envelope, &timeouts).await;
        assert_eq!(garbage.failure, Some((Stage::Greeting, Trouble::Lost)));
        assert!(!garbage.passed_handshake());
    }
}
