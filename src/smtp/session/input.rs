//! Framing and waiting: command lines out of the input, replies into the output, and
//! every wait of a session (for input, a tarpit, a hang), each bounded by the farm's clock
//! and cut short by shutdown.
//!
//! A timeout bounds a whole command, not one read: the deadline of a command line is
//! fixed when the session first waits for it (just before the reply that precedes it
//! goes out) and holds until its newline, however many reads the line takes. Per read, as
//! `smtpd_timeout` is in Postfix without `smtpd_per_request_deadline`, a client that sends
//! a byte every few seconds would keep a command open for ever.

use std::sync::Arc;
use std::time::Duration;

use memchr::memchr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Closed, FIRST_READ, READ_CHUNK, Session, Step};

/// Which of the host's timeouts bounds a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `command-timeout`: a command line, a TLS handshake, a write of replies.
    Command,
    /// `data-timeout`: a message's content.
    Data,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waited {
    /// The time was up.
    Elapsed,
    /// The client closed the connection first: nothing more goes to it.
    ClientLeft,
}

/// How long until a deferral clears, when the farm knows, and whether its reply said so.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RetryHint {
    pub after: Option<Duration>,
    pub told: bool,
}

/// Whether `pending` input holds a QUIT line: a client that pipelined QUIT and then
/// half-closed its side has sent all it will, but waits for the replies.
fn quit_pipelined(pending: &[u8]) -> bool {
    pending.split(|&b| b == b'\n').any(|line| {
        line.strip_suffix(b"\r")
            .unwrap_or(line)
            .eq_ignore_ascii_case(b"QUIT")
    })
}

/// How much of what a client pipelines during a tarpit is kept; beyond it the session
/// stops reading until the wait is over (so it may notice a close only then).
const PIPELINED_DURING_A_WAIT: usize = 64 * 1024;
use crate::journal::{CommandRecord, CommandRef, EventKind, ReplyRecord, sanitized};
use crate::scenario::{Reply, Stage};

impl Session {
    /// Reads the next complete command line into `line`, answering over-long lines.
    pub(super) async fn next_line(&mut self, line: &mut Vec<u8>) -> Step {
        let max = self.host.config.limits.max_line_length;
        // The command timeout counts once per line, from the first wait for it.
        let mut deadline = None;
        loop {
            let pending = &self.input.buf[self.input.start..];
            if let Some(end) = memchr(b'\n', pending) {
                let too_long = self.input.discarding_line || end.saturating_sub(1) > max;
                line.clear();
                line.extend_from_slice(&pending[..=end]);
                self.input.start += end + 1;
                if self.input.discarding_line {
                    self.input.discarding_line = false;
                    deadline = None;
                    continue;
                }
                if too_long {
                    let host = self.host.clone();
                    self.record_command(line, CommandRef::Other);
                    self.protocol_error(&host.replies.line_too_long)?;
                    deadline = None;
                    continue;
                }
                return self.refuse_bare_lf(line);
            }
            if !self.input.discarding_line && pending.len() > max + 2 {
                // No newline within the limit: answer now, then drop the rest of the line
                // as it arrives, so a hostile client cannot grow the buffer.
                let host = self.host.clone();
                let head = pending[..pending.len().min(512)].to_vec();
                self.record_command(&head, CommandRef::Other);
                self.protocol_error(&host.replies.line_too_long)?;
                self.input.discarding_line = true;
            }
            if self.input.discarding_line {
                self.input.start = self.input.buf.len();
            }
            let until = *deadline.get_or_insert_with(|| self.deadline_in(Limit::Command));
            self.fill_until(until).await?;
        }
    }

    /// The deadline `limit` from now. Taken before the replies that precede the wait go
    /// out, so that a client (or a test) that reacts to a reply by advancing the clock
    /// always moves this deadline too.
    pub(super) fn deadline_in(&self, limit: Limit) -> Duration {
        let limits = &self.host.config.limits;
        let timeout = match limit {
            Limit::Command => limits.command_timeout,
            Limit::Data => limits.data_timeout,
        };
        self.env.clock.now() + timeout
    }

    /// Flushes pending replies, then waits for more input until `deadline` (then 421 and
    /// a close) or the shutdown (421 too).
    pub(super) async fn fill_until(&mut self, deadline: Duration) -> Step {
        self.flush_until(deadline).await?;
        self.env.journal.keep_up_with_file().await;
        if self.input.start > 0 {
            self.input.buf.drain(..self.input.start);
            self.input.start = 0;
        }
        let room = if self.input.buf.is_empty() {
            FIRST_READ
        } else {
            READ_CHUNK
        };
        self.input.buf.reserve(room);
        enum Woke {
            Read(std::io::Result<usize>),
            Timeout,
            Shutdown,
        }
        let woke = tokio::select! {
            biased;
            () = &mut self.shutdown_begun => Woke::Shutdown,
            read = self.stream.read_buf(&mut self.input.buf) => Woke::Read(read),
            () = self.timer.until(deadline) => Woke::Timeout,
        };
        let host = self.host.clone();
        match woke {
            Woke::Read(Ok(0)) => Err(Closed::by_client("client closed the connection")),
            Woke::Read(Ok(_)) => Ok(()),
            Woke::Read(Err(e)) => Err(Closed::by_client(format!("read failed: {e}"))),
            Woke::Timeout => {
                self.send(&host.replies.timeout);
                Err(Closed::by_farm("timeout waiting for the client"))
            }
            Woke::Shutdown => {
                self.send(&host.replies.shutting_down);
                Err(Closed::by_farm("farm shutting down"))
            }
        }
    }

    /// Content is coming (DATA's, a BDAT chunk's): from the first read on, the session
    /// asks the kernel for a whole chunk, so that a message of a few KiB arrives in one
    /// read, not a command line's worth and then the rest. A session that waits for a
    /// command keeps its small buffer (see `FIRST_READ`).
    pub(super) fn expect_content(&mut self) {
        self.input.buf.reserve(READ_CHUNK);
    }

    /// Drops whatever input is buffered (plaintext after STARTTLS, bytes during a hang).
    pub(super) fn discard_input(&mut self) {
        self.input.buf.clear();
        self.input.start = 0;
    }

    /// Writes buffered replies; a client that stops reading is cut off after the
    /// command timeout rather than holding the session forever.
    pub(super) async fn flush(&mut self) -> Step {
        let deadline = self.deadline_in(Limit::Command);
        self.flush_until(deadline).await
    }

    /// Writes buffered replies by `deadline`. A client that does not read them is not
    /// told of a shutdown (it would not read that either): it is cut off when the
    /// shutdown's grace period is over.
    async fn flush_until(&mut self, deadline: Duration) -> Step {
        if self.output.is_empty() {
            return Ok(());
        }
        enum Wrote {
            Done(std::io::Result<()>),
            Timeout,
            Aborted,
        }
        let (stream, output) = (&mut self.stream, &self.output);
        // The stream's flush is inside the bound too: TLS keeps records that only it
        // writes out.
        let write = async move {
            stream.write_all(output).await?;
            stream.flush().await
        };
        let wrote = tokio::select! {
            biased;
            written = write => Wrote::Done(written),
            () = self.timer.until(deadline) => Wrote::Timeout,
            () = self.shutdown.aborted() => Wrote::Aborted,
        };
        self.output.clear();
        match wrote {
            Wrote::Done(Ok(())) => Ok(()),
            Wrote::Done(Err(e)) => Err(Closed::by_client(format!("write failed: {e}"))),
            Wrote::Timeout => Err(Closed::by_farm("client stopped reading replies")),
            Wrote::Aborted => Err(Closed::by_farm(
                "farm shut down: the client was not reading its replies when the grace period ended",
            )),
        }
    }

    /// A tarpit: replies so far go out, then nothing until `delay` of farm time has passed
    /// since the command arrived. Meanwhile the session keeps reading (what the client
    /// pipelines is kept, up to a bound), so that it notices when the client gives up
    /// waiting, as senders do when their own timeout is shorter: then the journal says so
    /// at the time it happened, and the farm answers nothing.
    pub(super) async fn pause(&mut self, delay: Duration) -> Step<Waited> {
        let deadline = self.command_at + delay;
        self.flush().await?;
        // Set once the client has sent all it will (a half-close after a pipelined QUIT):
        // it still reads, so the wait runs its course.
        let mut done_sending = false;
        loop {
            let room =
                !done_sending && self.input.buf.len() - self.input.start < PIPELINED_DURING_A_WAIT;
            if room {
                self.input.buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                () = &mut self.shutdown_begun => {
                    let host = self.host.clone();
                    self.send(&host.replies.shutting_down);
                    return Err(Closed::by_farm("farm shutting down"));
                }
                () = self.timer.until(deadline) => return Ok(Waited::Elapsed),
                read = self.stream.read_buf(&mut self.input.buf), if room => match read {
                    Ok(0) if quit_pipelined(&self.input.buf[self.input.start..]) => {
                        done_sending = true;
                    }
                    Ok(0) | Err(_) => return Ok(Waited::ClientLeft),
                    Ok(_) => {}
                },
            }
        }
    }

    /// Says nothing until the client gives up, `limit` passes, or the farm shuts down
    /// (then the connection ends, still without a word); whatever the client sends
    /// meanwhile is read and dropped.
    ///
    /// A client that half-closes after a pipelined QUIT (as Exim does) has not given up:
    /// it still reads, so the hang runs its course.
    pub(super) async fn hang(&mut self, limit: Duration) -> Step {
        let deadline = self.command_at + limit;
        self.flush().await?;
        let mut quit_seen = false;
        let mut done_sending = false;
        loop {
            quit_seen |= quit_pipelined(&self.input.buf[self.input.start..]);
            self.discard_input();
            self.input.buf.reserve(READ_CHUNK);
            tokio::select! {
                () = &mut self.shutdown_begun => {
                    return Err(Closed::by_farm("farm shutting down during a hang"));
                }
                () = self.timer.until(deadline) => return Ok(()),
                read = self.stream.read_buf(&mut self.input.buf), if !done_sending => match read {
                    Ok(0) if quit_seen => done_sending = true,
                    Ok(0) | Err(_) => return Err(Closed::by_client("client gave up while the farm hung")),
                    Ok(_) => {}
                },
            }
        }
    }

    /// Sends a protocol error and ends the connection after too many of them.
    pub(super) fn protocol_error(&mut self, reply: &Reply) -> Step {
        self.send(reply);
        self.count_error()
    }

    /// Counts a protocol error whose reply was sent, and ends the connection after too
    /// many of them.
    pub(super) fn count_error(&mut self) -> Step {
        self.protocol.errors += 1;
        if self.protocol.errors >= self.host.config.limits.max_errors {
            let host = self.host.clone();
            self.send(&host.replies.too_many_errors);
            return Err(Closed::by_farm("too many errors"));
        }
        Ok(())
    }

    /// Buffers one of the host's own replies that decides no stage (a protocol error, a
    /// timeout, NOOP's 250), and journals it.
    pub(super) fn send(&mut self, reply: &Reply) {
        self.write_reply(None, reply, None, RetryHint::default());
    }

    /// Buffers the reply that decided `stage`, from `rule` if one produced it.
    pub(super) fn answer(&mut self, stage: Stage, reply: &Reply, rule: Option<Arc<str>>) {
        self.write_reply(Some(stage), reply, rule, RetryHint::default());
    }

    /// Buffers a reply for the client and journals it.
    pub(super) fn write_reply(
        &mut self,
        stage: Option<Stage>,
        reply: &Reply,
        rule: Option<Arc<str>>,
        hint: RetryHint,
    ) {
        tracing::debug!(
            host = %self.host.name,
            conn = self.conn,
            rule = rule.as_deref().unwrap_or(""),
            "{}",
            reply.one_line()
        );
        reply.write_to(&mut self.output);
        self.env.journal.record_reply(ReplyRecord {
            host: &self.host.name,
            conn: self.conn,
            stage,
            reply,
            rule,
            retry_after: hint.after,
            retry_after_told: hint.told,
        });
    }

    /// Journals a command line as it arrived; delays and hangs count from now.
    pub(super) fn record_command(&mut self, line: &[u8], command: CommandRef<'_>) {
        self.command_at = self.env.clock.now();
        let record = CommandRecord {
            host: &self.host.name,
            conn: self.conn,
            line: &sanitized(line),
            command,
        };
        self.env.journal.record_command(&record, self.command_at);
    }

    pub(super) fn record(&self, kind: EventKind) {
        self.env.journal.record(kind);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::journal::{Command, EventKind};
    use crate::smtp::session::tests::host;

    /// Pipelined commands are answered in order, all in one write once the session
    /// would wait.
    #[tokio::test(start_paused = true)]
    async fn answers_pipelined_commands_in_order() {
        let h = host("");
        let mut c = h.connect();
        c.greeting().await;
        c.send("EHLO a.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nNOOP\r\n")
            .await;
        assert_eq!(c.reply().await.code, 250);
        c.expect("250 2.1.0 Ok").await;
        c.expect("250 2.1.5 Ok").await;
        c.expect("250 2.0.0 Ok").await;
    }

    /// A line over the limit is answered and dropped, however it arrives, and the
    /// session carries on with the next line.
    #[tokio::test(start_paused = true)]
    async fn an_overlong_line_is_refused_and_the_session_goes_on() {
        let h = host("[host.limits]\nmax-line-length = 20\n");
        let mut c = h.ready().await;
        c.send(format!("NOOP {}\r\n", "x".repeat(30))).await;
        c.expect("500 5.5.2 Error: line too long").await;
        // No newline within the limit: answered at once, the rest dropped as it comes.
        c.send("x".repeat(100)).await;
        c.expect("500 5.5.2 Error: line too long").await;
        c.send(format!("{}\r\nNOOP\r\n", "y".repeat(5000))).await;
        c.expect("250 2.0.0 Ok").await;
        let kept: Vec<usize> = h
            .journal()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Command {
                    line,
                    command: Command::Other,
                    ..
                } => Some(line.len()),
                _ => None,
            })
            .collect();
        assert!(kept.iter().all(|&n| n <= 515), "{kept:?}");
    }

    /// An idle client meets the command timeout, on the farm's clock.
    #[tokio::test(start_paused = true)]
    async fn an_idle_client_gets_421_after_the_command_timeout() {
        let h = host("[host.limits]\ncommand-timeout = \"2m\"\n");
        let mut c = h.ready().await;
        let before = h.env.clock.now();
        c.expect("421 4.4.2 mx1.farm.test Error: timeout exceeded")
            .await;
        c.expect_closed().await;
        assert!(h.env.clock.now() - before >= Duration::from_secs(120));
        h.finish().await;
        assert_eq!(
            h.closed_reason(1).as_deref(),
            Some("timeout waiting for the client")
        );
    }

    /// A slowloris: a command trickled one byte per 2 s under a 5 s command timeout is
    /// cut off 5 s after the greeting, however many bytes keep arriving; per read, each
    /// byte would restart the timer and the command would stay open for ever.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_command_is_cut_off_at_the_command_timeout() {
        let h = host("[host.limits]\ncommand-timeout = \"5s\"\n");
        let slowly = b"EHLO one-byte-every-two-seconds.test, never a newline in sight";
        let seen = h.trickle(b"", slowly, Duration::from_secs(2)).await;
        assert!(
            seen.replies
                .ends_with("421 4.4.2 mx1.farm.test Error: timeout exceeded\r\n"),
            "{seen:?}"
        );
        assert!(seen.sent <= 2, "cut off after 5 s, not per byte: {seen:?}");
        assert!(seen.lasted < Duration::from_secs(6), "{seen:?}");
        h.finish().await;
        assert_eq!(
            h.closed_reason(1).as_deref(),
            Some("timeout waiting for the client")
        );
    }

    /// The timeout is per command, not per session: commands that each take most of it,
    /// and together much more, are all answered.
    #[tokio::test(start_paused = true)]
    async fn each_command_has_its_own_timeout() {
        let h = host("[host.limits]\ncommand-timeout = \"5s\"\n");
        let slowly = b"NOOP\r\nNOOP\r\nNOOP\r\nQUIT\r\n";
        let seen = h.trickle(b"", slowly, Duration::from_millis(600)).await;
        assert_eq!(seen.sent, slowly.len(), "{seen:?}");
        assert_eq!(seen.replies.matches("250 2.0.0 Ok").count(), 3, "{seen:?}");
        assert!(seen.replies.ends_with("221 2.0.0 Bye\r\n"), "{seen:?}");
        assert!(seen.lasted > Duration::from_secs(10), "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_errors_end_the_connection() {
        let h = host("[host.limits]\nmax-errors = 2\n");
        let mut c = h.ready().await;
        c.send("BOGUS\r\nBOGUS\r\n").await;
        c.expect("500 5.5.1 Error: command not recognized").await;
        c.expect("500 5.5.1 Error: command not recognized").await;
        c.expect("421 4.7.0 mx1.farm.test Error: too many errors")
            .await;
        c.expect_closed().await;
    }

    /// Shutdown cuts every wait short with a 421.
    #[tokio::test(start_paused = true)]
    async fn shutdown_tells_a_waiting_session_421() {
        let h = host("");
        let mut c = h.ready().await;
        h.shutdown.begin();
        c.expect("421 4.3.2 mx1.farm.test Service shutting down")
            .await;
        c.expect_closed().await;
    }
}
