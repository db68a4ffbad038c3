//! Message content: DATA (through `smtp-proto`'s receivers, which undo dot-stuffing),
//! BDAT chunks, and the end of data, where an accepted message is journalled and kept
//! before its 250 is written.

use std::sync::Arc;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};

use super::super::env::{DataBudget, Held};
use super::act::{Done, client_left};
use super::input::{Limit, Waited};
use super::{Closed, Session, Step};
use crate::capture::{Message, parse_headers};
use crate::journal::{CommandRef, EventKind};
use crate::policy::{self, Act};
use crate::scenario::{Parsing, Stage};

impl Session {
    /// Checks that a transaction can take message content now; answers and returns false
    /// when it cannot.
    fn ready_for_content(&mut self) -> Step<bool> {
        let host = self.host.clone();
        match &self.protocol.tx {
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

    pub(super) async fn data(&mut self) -> Step {
        let host = self.host.clone();
        if self
            .protocol
            .tx
            .as_ref()
            .is_some_and(|tx| tx.chunks.is_some())
        {
            return self.protocol_error(&host.replies.data_after_bdat);
        }
        if !self.ready_for_content()? {
            return Ok(());
        }
        match self.decide(policy::Data).await? {
            Done::Accepted { reply, rule } => {
                let reply = reply.as_ref().unwrap_or(&host.replies.data_go_ahead);
                self.answer(Stage::Data, reply, rule);
            }
            Done::Refused(reply) => {
                self.end_transaction(&format!("refused at data: {}", reply.one_line()));
                return Ok(());
            }
        }
        let content = self.receive_data().await?;
        self.end_of_data(content).await
    }

    /// Refuses content that no rule gets to decide: too big, no room in the farm, or a
    /// bare LF (see [`Unfit`]).
    fn refuse_unfit(&mut self, unfit: Unfit) {
        let host = self.host.clone();
        let reply = match unfit {
            Unfit::TooBig => &host.replies.message_too_big,
            Unfit::NoRoom => &host.replies.insufficient_storage,
            Unfit::BareLf => &host.replies.bare_lf_in_content,
        };
        self.answer(Stage::EndOfData, reply, None);
        self.end_transaction(&format!("refused at end-of-data: {}", reply.one_line()));
    }

    /// Receives DATA content up to the final dot, dot-unstuffed. Content past the size
    /// limit or the farm's budget is read to the final dot and dropped as it comes.
    ///
    /// The whole content must arrive within the data timeout of the 354, not each read:
    /// a minimum rate (Postfix's `smtpd_min_data_rate`) would still let a client hold the
    /// connection for hours at just above it, and for ever past the size limit, whose
    /// content is read and dropped up to the final dot.
    async fn receive_data(&mut self) -> Step<Result<Content, Unfit>> {
        let max_size = self.host.config.limits.max_message_size;
        let mut deadline = None;
        let mut receiver = DataReceiver::new();
        let mut incoming = Incoming::new(&self.env.buffered);
        // The receiver recognises the final dot and dot-stuffing only after a CRLF; the
        // content starts right after the CRLF of the DATA line, so prime it with one.
        receiver.ingest(&mut b"\r\n".iter(), &mut incoming.body);
        incoming.body.clear();
        self.expect_content();
        let mut discard: Option<DummyDataReceiver> = None;
        loop {
            let pending = &self.input.buf[self.input.start..];
            if !pending.is_empty() {
                let mut bytes = pending.iter();
                let done = match discard.as_mut() {
                    Some(dummy) => dummy.ingest(&mut bytes),
                    None => receiver.ingest(&mut bytes, &mut incoming.body),
                };
                self.input.start += pending.len() - bytes.as_slice().len();
                if discard.is_none() && !incoming.fits(max_size) {
                    discard = Some(DummyDataReceiver::new_data(&receiver));
                }
                if done {
                    return Ok(self.end_of_content(b".", incoming));
                }
            }
            let until = *deadline.get_or_insert_with(|| self.deadline_in(Limit::Data));
            self.fill_until(until).await?;
        }
    }

    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Step {
        let host = self.host.clone();
        if !host.config.extensions.chunking {
            return self.protocol_error(&host.replies.not_implemented);
        }
        // RFC 3030: the chunk follows the command whatever the answer, so it is always read.
        let starting = self
            .protocol
            .tx
            .as_ref()
            .is_some_and(|tx| tx.chunks.is_none());
        if !self.ready_for_content()? {
            return self.skip_chunk(size).await;
        }
        if starting {
            match self.decide(policy::Data).await? {
                Done::Accepted { .. } => {
                    let incoming = Incoming::new(&self.env.buffered);
                    if let Some(tx) = self.protocol.tx.as_mut() {
                        tx.chunks = Some(incoming);
                    }
                }
                Done::Refused(reply) => {
                    self.end_transaction(&format!("refused at data: {}", reply.one_line()));
                    return self.skip_chunk(size).await;
                }
            }
        }
        self.read_chunk(size).await?;
        let Some(tx) = self.protocol.tx.as_mut() else {
            return Ok(());
        };
        let no_room = tx
            .chunks
            .as_ref()
            .is_some_and(|c| c.unfit == Some(Unfit::NoRoom));
        if !last {
            // RFC 3030: after a 4xx to a chunk the transaction has failed; the client
            // sends no more chunks, and those already pipelined get the same answer.
            let reply = if no_room {
                host.replies.insufficient_storage.clone()
            } else {
                let enhanced = host.config.extensions.enhanced_status_codes;
                host.replies.chunk_received(enhanced, size)
            };
            self.answer(Stage::Data, &reply, None);
            return Ok(());
        }
        // Set when the first chunk was accepted, so always there.
        let incoming = tx
            .chunks
            .take()
            .unwrap_or_else(|| Incoming::new(&self.env.buffered));
        let content = self.end_of_content(b"", incoming);
        self.end_of_data(content).await
    }

    /// Appends a BDAT chunk of `size` bytes to the transaction, or drops it once the
    /// message is over the size limit or the farm's budget. The whole chunk must arrive
    /// within the data timeout, as DATA's content must.
    async fn read_chunk(&mut self, size: u64) -> Step {
        let max_size = self.host.config.limits.max_message_size;
        let mut deadline = None;
        let mut left = size;
        self.expect_content();
        loop {
            let pending = &self.input.buf[self.input.start..];
            let take = pending
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(incoming) = self.protocol.tx.as_mut().and_then(|tx| tx.chunks.as_mut())
                && incoming.unfit.is_none()
            {
                incoming.body.extend_from_slice(&pending[..take]);
                incoming.fits(max_size);
            }
            self.input.start += take;
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
            let until = *deadline.get_or_insert_with(|| self.deadline_in(Limit::Data));
            self.fill_until(until).await?;
        }
    }

    /// Reads and drops a BDAT chunk of `size` bytes, within the data timeout.
    async fn skip_chunk(&mut self, size: u64) -> Step {
        let mut deadline = None;
        let mut left = size;
        loop {
            let pending = self.input.buf.len() - self.input.start;
            let take = pending.min(usize::try_from(left).unwrap_or(usize::MAX));
            self.input.start += take;
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
            let until = *deadline.get_or_insert_with(|| self.deadline_in(Limit::Data));
            self.fill_until(until).await?;
        }
    }

    /// The end of the content: the final dot (`line` is `.`) or the last BDAT chunk (an
    /// empty `line`). It is a command of its own in the journal, with what tells this
    /// message from another (its Message-ID and a digest of its content), so that the
    /// stories can tell a retry from a new message even when no copy was kept; tests wait
    /// for it, and end-of-data delays count from it. Content that was dropped as it came
    /// is journalled with size 0 and no identity.
    fn end_of_content(&mut self, line: &[u8], incoming: Incoming) -> Result<Content, Unfit> {
        let Incoming { body, held, unfit } = incoming;
        let body = match unfit {
            None => Some(body),
            Some(_) => None,
        };
        let (message_id, subject) = body.as_deref().map_or((None, None), parse_headers);
        let digest = body.as_deref().map(digest);
        let size = body.as_ref().map_or(0, |b| b.len() as u64);
        self.record_command(
            line,
            CommandRef::EndOfData {
                size,
                message_id: message_id.as_deref(),
                digest: digest.as_deref(),
            },
        );
        match (body, unfit) {
            (Some(body), _) if self.host.config.parsing == Parsing::Strict && bare_lf(&body) => {
                Err(Unfit::BareLf)
            }
            (Some(body), _) => Ok(Content {
                body,
                held,
                message_id,
                subject,
            }),
            (None, unfit) => Err(unfit.unwrap_or(Unfit::TooBig)),
        }
    }

    /// The end of the content: decide, and keep the message if accepted (or if the rule
    /// loses the reply, or the client gave up while the farm delayed its answer: then
    /// the farm has the message and the client will never know).
    async fn end_of_data(&mut self, content: Result<Content, Unfit>) -> Step {
        let host = self.host.clone();
        let content = match content {
            Ok(content) => content,
            Err(unfit) => {
                self.refuse_unfit(unfit);
                return Ok(());
            }
        };
        let size = content.body.len() as u64;
        let mut verdict = self.verdict(policy::EndOfData { size });
        let keeps = matches!(verdict.act, Act::Accept(_) | Act::Effect(_));
        if let Some(delay) = verdict.delay.take()
            && self.pause(delay).await? == Waited::ClientLeft
        {
            if !keeps {
                return Err(client_left(Stage::EndOfData));
            }
            self.keep(content, Some("the client left before the reply"))
                .await;
            return Err(Closed::by_client(
                "the client closed the connection while the farm delayed its answer to the final dot; the message was kept",
            ));
        }
        let (reply, rule, lost) = match self.carry_out(Stage::EndOfData, verdict).await? {
            Done::Accepted { reply, rule } => (reply, rule, None),
            Done::Effect {
                effect: policy::LoseReply,
                rule,
            } => (None, None, Some(rule)),
            Done::Refused(reply) => {
                self.end_transaction(&format!("refused at end-of-data: {}", reply.one_line()));
                return Ok(());
            }
        };
        let lost_by = lost.map(|rule| rule.as_deref().unwrap_or("the farm").to_string());
        let why = lost_by
            .as_ref()
            .map(|by| format!("the reply was lost by {by}"));
        let id = match self.keep(content, why.as_deref()).await {
            Kept::Message(id) => id,
            Kept::NoTransaction => return Ok(()),
            Kept::Unwritable => {
                self.answer(Stage::EndOfData, &host.replies.journal_unwritable, None);
                return Ok(());
            }
        };
        if let Some(by) = lost_by {
            return Err(Closed::by_farm(format!(
                "closed without the reply at end-of-data by {by} (message kept)"
            )));
        }
        let enhanced = host.config.extensions.enhanced_status_codes;
        let reply = reply.unwrap_or_else(|| host.replies.queued(enhanced, id));
        self.answer(Stage::EndOfData, &reply, rule);
        Ok(())
    }

    /// Keeps the message of the transaction in progress: numbered, journalled and kept in
    /// one step; and, when the client is to get a 250, waits until the message's line is
    /// in the journal file (every 250 the client sees is in the journal, in memory and in
    /// the file). `why_unanswered` says why the client will not get the 250, when it will
    /// not.
    async fn keep(&mut self, content: Content, why_unanswered: Option<&str>) -> Kept {
        let Some(tx) = self.protocol.tx.take() else {
            return Kept::NoTransaction;
        };
        if why_unanswered.is_none() && self.env.journal.file_failure().is_some() {
            // Already known: take nothing the journal cannot record.
            self.log_transaction(&tx, "not accepted: the journal file cannot be written");
            return Kept::Unwritable;
        }
        let Content {
            body,
            held,
            message_id,
            subject,
        } = content;
        let host = self.host.clone();
        let size = body.len() as u64;
        let at = self.env.clock.now();
        let helo = self.protocol.helo.clone().unwrap_or_default();
        let (conn, client, tls) = (self.conn, self.client, self.protocol.encrypted);
        let (id, seq) = self.env.inbox.accept(&tx.recipients, |id| {
            let event = EventKind::MessageAccepted {
                host: host.name.clone(),
                conn,
                id,
                sender: tx.sender.clone(),
                // Both get the inbox's one list of them.
                recipients: Vec::new(),
                size,
                message_id: message_id.clone(),
                subject: subject.clone(),
                tls,
            };
            let message = Message {
                id,
                host: host.name.clone(),
                conn,
                at,
                client,
                helo,
                sender: tx.sender.clone(),
                recipients: Vec::new(),
                size,
                message_id,
                subject,
                tls,
                data: Arc::from(body),
            };
            (event, message)
        });
        // Kept in the inbox (which has its own bound), the message no longer counts
        // against the farm's budget of content in flight.
        drop(held);
        if why_unanswered.is_none()
            && let Err(unwritable) = self.env.journal.written(seq).await
        {
            self.env.inbox.withdraw(id);
            tracing::debug!(id, %unwritable, "message given back");
            self.log_transaction(&tx, "not accepted: the journal file cannot be written");
            return Kept::Unwritable;
        }
        let result = match why_unanswered {
            // The client will not know that it was accepted; the log line must say so.
            Some(why) => format!("accepted as message {id}, but {why}"),
            None => format!("accepted as message {id}"),
        };
        self.log_transaction(&tx, &result);
        Kept::Message(id)
    }
}

/// What became of the message at the end of data.
enum Kept {
    /// Kept, with this number; in the journal file, if it is to be acknowledged.
    Message(u64),
    /// No transaction was in progress.
    NoTransaction,
    /// Not kept: the journal file cannot be written, so the client must not get a 250.
    Unwritable,
}

/// A message's content and what the journal says of it.
struct Content {
    body: Vec<u8>,
    /// The body's share of the farm's budget, until the message is kept or dropped.
    held: Held,
    message_id: Option<String>,
    subject: Option<String>,
}

/// Why content is refused before any rule decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unfit {
    /// Past the host's `max-message-size`: 552 5.3.4 at the end.
    TooBig,
    /// Past the farm's `max-buffered-data`, with the content of other sessions:
    /// 452 4.3.1, at the end of DATA or to the BDAT chunk.
    NoRoom,
    /// A bare LF in the content, on a strict host: 550 5.5.2 at the end, as Postfix
    /// refuses it with smtpd_forbid_bare_newline = reject (DATA and BDAT alike: the farm
    /// does not offer BINARYMIME, so content is text, in lines ending in CRLF). The
    /// farm still reads to CRLF.CRLF, never to `<LF>.<LF>`, so what a smuggler hides
    /// behind one stays in the refused message.
    BareLf,
}

/// Whether `body` holds an LF without its CR. The body starts right after a CRLF.
fn bare_lf(body: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', body).any(|at| at == 0 || body[at - 1] != b'\r')
}

/// Content as it arrives, and what it holds of the farm's budget; once unfit, its bytes
/// are dropped (and the budget given back) and the rest of it is read and dropped too.
#[derive(Debug)]
pub(super) struct Incoming {
    body: Vec<u8>,
    held: Held,
    pub(super) unfit: Option<Unfit>,
}

impl Incoming {
    fn new(budget: &Arc<DataBudget>) -> Self {
        Self {
            body: Vec::new(),
            held: Held::nothing_of(budget),
            unfit: None,
        }
    }

    /// After the body grew: whether it still fits the size limit and the farm's budget.
    /// When it does not, the body is dropped and the budget given back.
    fn fits(&mut self, max_size: u64) -> bool {
        if self.unfit.is_some() {
            return false;
        }
        let size = self.body.len() as u64;
        let unfit = if size > max_size {
            Unfit::TooBig
        } else if !self.held.grow_to(size) {
            Unfit::NoRoom
        } else {
            return true;
        };
        self.body = Vec::new();
        self.held.release();
        self.unfit = Some(unfit);
        false
    }
}

/// The XXH3-64 hash of a message's content, as 16 hex digits (what `xxhsum -H3` prints).
/// It only tells a retry (the same bytes) from another message, so it need not be a
/// cryptographic hash; SHA-256 cost the farm 60,000 instructions per 1.7 KB message,
/// almost half of all it did for one (BENCHMARKS.md, "Instructions per message").
fn digest(body: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::journal::{Command, EventKind};
    use crate::smtp::session::tests::{Harness, Logs, host};

    /// The digest is what `xxhsum -H3` prints for the same bytes (these two were
    /// printed by xxhsum 0.8.1), so a user can match a file to a journalled message.
    #[test]
    fn the_digest_is_xxh3_64_as_xxhsum_prints_it() {
        assert_eq!(super::digest(b""), "2d06800538d394c2");
        assert_eq!(super::digest(b"hello\r\n"), "e1de59409fa22061");
    }

    /// A message of a few KiB that arrives at once is read at once: the session asks for
    /// a whole chunk as soon as content is coming, not for a command line's worth first.
    #[tokio::test(start_paused = true)]
    async fn content_that_arrives_at_once_is_read_at_once() {
        let h = host("");
        let (mut c, reads) = h.connect_counting_reads();
        c.greeting().await;
        c.command("EHLO c.test").await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        assert_eq!(c.command("DATA").await.code, 354);
        let before = reads.load(Ordering::Relaxed);
        let body = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(4000));
        c.send(&body).await;
        c.expect("250 2.0.0 Ok: queued as 1").await;
        assert_eq!(reads.load(Ordering::Relaxed) - before, 1);
        // A BDAT chunk on a fresh connection: its command's read brings the chunk's
        // first bytes, one more read the rest.
        let (mut c, reads) = h.connect_counting_reads();
        c.greeting().await;
        c.command("EHLO c.test").await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        let before = reads.load(Ordering::Relaxed);
        c.send(format!("BDAT 4000 LAST\r\n{}", "y".repeat(4000)))
            .await;
        c.expect("250 2.0.0 Ok: queued as 2").await;
        assert_eq!(reads.load(Ordering::Relaxed) - before, 2);
    }

    /// Dot-stuffing is undone, the final dot is a command of its own in the journal, and
    /// the message is journalled and kept before the 250 names it.
    #[tokio::test(start_paused = true)]
    async fn data_is_unstuffed_journalled_and_kept_before_the_250() {
        let h = host("");
        let mut c = h.ready().await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        assert_eq!(c.command("DATA").await.code, 354);
        c.send("Message-ID: <m1@x.test>\r\nSubject: dots\r\n\r\n..leading dot\r\n.\r\n")
            .await;
        c.expect("250 2.0.0 Ok: queued as 1").await;
        let messages = h.env.inbox.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].text().ends_with("\r\n.leading dot\r\n"));
        assert_eq!(messages[0].message_id.as_deref(), Some("m1@x.test"));
        let kinds: Vec<String> = h
            .journal()
            .iter()
            .rev()
            .take(3)
            .map(|e| match &e.kind {
                EventKind::Command { line, .. } => format!("command {line}"),
                EventKind::MessageAccepted { id, .. } => format!("accepted {id}"),
                EventKind::Reply { reply, .. } => format!("reply {}", reply.code),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["reply 250", "accepted 1", "command ."]);
    }

    #[tokio::test(start_paused = true)]
    async fn data_without_recipients_and_too_big_messages_are_refused() {
        let h = host("[host.limits]\nmax-message-size = 100\n");
        let mut c = h.ready().await;
        c.send("DATA\r\nMAIL FROM:<s@x.test>\r\nDATA\r\n").await;
        c.expect("503 5.5.1 Error: need MAIL command").await;
        c.expect("250 2.1.0 Ok").await;
        c.expect("503 5.5.1 Error: need RCPT command").await;
        c.command("RCPT TO:<r@y.test>").await;
        c.command("DATA").await;
        c.send(format!("{}\r\n.\r\n", "x".repeat(500))).await;
        c.expect("552 5.3.4 Error: message file too big").await;
        assert!(h.env.inbox.messages().is_empty());
    }

    /// Waits until the farm holds at least `bytes` of content in flight.
    async fn holding(h: &Harness, bytes: u64) {
        while h.env.buffered.in_use() < bytes {
            tokio::task::yield_now().await;
        }
    }

    /// The farm bounds the content all its sessions hold at once: a DATA that would go
    /// past it gets 452 4.3.1 after its final dot, without holding what it sent, and the
    /// session goes on in step; the budget comes back when the other message is kept.
    #[tokio::test(start_paused = true)]
    async fn data_past_the_farms_budget_gets_452_and_the_session_goes_on() {
        let h = host("[limits]\nmax-buffered-data = \"10KiB\"\n");
        let mut first = h.ready().await;
        first.command("MAIL FROM:<a@x.test>").await;
        first.command("RCPT TO:<r@y.test>").await;
        first.command("DATA").await;
        first
            .send(format!("Subject: big\r\n\r\n{}\r\n", "a".repeat(8000)))
            .await;
        holding(&h, 8000).await;
        let mut second = h.ready().await;
        second.command("MAIL FROM:<b@x.test>").await;
        second.command("RCPT TO:<r@y.test>").await;
        second.command("DATA").await;
        second
            .send(format!(
                "Subject: b\r\n\r\n{}\r\n.\r\nNOOP\r\n",
                "b".repeat(4000)
            ))
            .await;
        second
            .expect("452 4.3.1 Error: insufficient system storage")
            .await;
        second.expect("250 2.0.0 Ok").await;
        assert!(
            h.env.buffered.in_use() < 8100,
            "only the first message is held"
        );
        first.send(".\r\n").await;
        first.expect("250 2.0.0 Ok: queued as 1").await;
        assert_eq!(h.env.buffered.in_use(), 0);
        let again = second
            .transaction("b@x.test", &["r@y.test"], "Subject: again\r\n\r\nhi\r\n")
            .await;
        assert!(again.delivered());
    }

    /// A BDAT chunk that would go past the farm's budget gets 452 4.3.1, and so do the
    /// chunks pipelined after it (RFC 3030: the transaction has failed); the client's
    /// RSET ends it and the session goes on.
    #[tokio::test(start_paused = true)]
    async fn a_bdat_chunk_past_the_farms_budget_gets_452() {
        let logs = Logs::capture();
        let h = host("[limits]\nmax-buffered-data = \"10KiB\"\n");
        let mut first = h.ready().await;
        first.command("MAIL FROM:<a@x.test>").await;
        first.command("RCPT TO:<r@y.test>").await;
        first
            .send(format!("BDAT 8000\r\n{}", "a".repeat(8000)))
            .await;
        first.expect("250 2.0.0 8000 octets received").await;
        let mut second = h.ready().await;
        second.command("MAIL FROM:<b@x.test>").await;
        second.command("RCPT TO:<r@y.test>").await;
        second
            .send(format!(
                "BDAT 4000\r\n{}BDAT 5 LAST\r\nhello",
                "b".repeat(4000)
            ))
            .await;
        second
            .expect("452 4.3.1 Error: insufficient system storage")
            .await;
        second
            .expect("452 4.3.1 Error: insufficient system storage")
            .await;
        second.command("RSET").await;
        // A client that RSETs after the 452, as RFC 3030 says, ends a refused transaction.
        second.command("MAIL FROM:<c@x.test>").await;
        second.command("RCPT TO:<r@y.test>").await;
        second
            .send(format!("BDAT 4000\r\n{}", "c".repeat(4000)))
            .await;
        second
            .expect("452 4.3.1 Error: insufficient system storage")
            .await;
        second.command("RSET").await;
        assert!(
            h.env.buffered.in_use() <= 8000,
            "only the first message is held"
        );
        first.send("BDAT 2 LAST\r\nhi").await;
        first.expect("250 2.0.0 Ok: queued as 1").await;
        assert_eq!(h.env.buffered.in_use(), 0);
        let line = logs.line("from=b@x.test");
        assert!(line.contains("refused at end-of-data: 452 4.3.1"), "{line}");
        let line = logs.line("from=c@x.test");
        let expected =
            "refused at data: 452 4.3.1 Error: insufficient system storage, then ended by RSET";
        assert!(line.contains(expected), "{line}");
    }

    /// BDAT chunks make one message; DATA cannot follow them; a refused BDAT's chunk is
    /// read and dropped.
    #[tokio::test(start_paused = true)]
    async fn bdat_chunks_make_one_message() {
        let h = host(
            "[[host.rule]]\nstage = \"data\"\nwhen = { rcpt = \"no@y.test\" }\nthen = { reply = \"554 5.7.1 Not this one\" }\n",
        );
        let mut c = h.ready().await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        c.send("BDAT 6\r\nhello BDAT 7 LAST\r\nworld\r\n").await;
        c.expect("250 2.0.0 6 octets received").await;
        c.expect("250 2.0.0 Ok: queued as 1").await;
        assert_eq!(h.env.inbox.messages()[0].text(), "hello world\r\n");
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        c.send("BDAT 2\r\nhiDATA\r\n").await;
        c.expect_code(250).await;
        c.expect("503 5.5.1 Error: DATA not allowed after BDAT")
            .await;
        c.command("RSET").await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<no@y.test>").await;
        c.send("BDAT 3 LAST\r\nabcNOOP\r\n").await;
        c.expect("554 5.7.1 Not this one").await;
        c.expect("250 2.0.0 Ok").await;
    }

    /// A slowloris in the content: DATA, or a BDAT chunk, trickled one byte per 2 s
    /// under a 10 s data timeout is cut off after 10 s, not kept open by each byte.
    #[tokio::test(start_paused = true)]
    async fn trickled_content_is_cut_off_at_the_data_timeout() {
        let h = host("[host.limits]\ndata-timeout = \"10s\"\n");
        let envelope = "EHLO a.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\n";
        let slowly =
            b"Subject: slow\r\n\r\none byte every two seconds, for as long as it takes\r\n";
        for (conn, start) in [(1, "DATA\r\n"), (2, "BDAT 1000 LAST\r\n")] {
            let at_once = format!("{envelope}{start}");
            let seen = h
                .trickle(at_once.as_bytes(), slowly, Duration::from_secs(2))
                .await;
            assert!(
                seen.replies
                    .ends_with("421 4.4.2 mx1.farm.test Error: timeout exceeded\r\n"),
                "{start}: {seen:?}"
            );
            assert!(seen.sent <= 5, "{start}: cut off after 10 s: {seen:?}");
            h.finish().await;
            h.tasks.reopen();
            assert_eq!(
                h.closed_reason(conn).as_deref(),
                Some("timeout waiting for the client"),
                "{start}"
            );
        }
        assert!(h.env.inbox.messages().is_empty());
    }

    /// `lose-reply` keeps the message, then closes without its 250.
    #[tokio::test(start_paused = true)]
    async fn a_lost_reply_keeps_the_message_and_closes() {
        let logs = Logs::capture();
        let h = host("[[host.rule]]\nstage = \"end-of-data\"\nthen = { lose-reply = true }\n");
        let mut c = h.ready().await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        c.command("DATA").await;
        c.send("Subject: lost\r\n\r\nhi\r\n.\r\n").await;
        c.expect_closed().await;
        h.finish().await;
        assert_eq!(h.env.inbox.messages().len(), 1);
        assert_eq!(
            h.closed_reason(1).as_deref(),
            Some("closed without the reply at end-of-data by host mx1 rule 1 (message kept)")
        );
        // The client never learns that message 1 was accepted: the log line says so.
        let line = logs.line("accepted as message 1");
        assert!(
            line.contains("but the reply was lost by host mx1 rule 1"),
            "{line}"
        );
    }

    /// An end-of-data rule after BDAT is decided when the last chunk has arrived, as
    /// after DATA it is decided at the final dot, not when the BDAT line came in.
    #[tokio::test(start_paused = true)]
    async fn end_of_data_after_bdat_is_decided_when_the_last_chunk_is_in() {
        let h = host(
            "[[host.rule]]\nstage = \"end-of-data\"\nwhen = { time = \">=1h\" }\n\
             then = { reply = \"554 5.7.1 too late\" }\n",
        );
        let mut c = h.ready().await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        c.send("BDAT 7 LAST\r\n").await;
        // Wait until the farm has read the BDAT line, then let two hours pass before the
        // chunk arrives.
        loop {
            let arrived = h.journal().iter().any(|e| {
                matches!(
                    &e.kind,
                    EventKind::Command {
                        command: Command::Bdat { .. },
                        ..
                    }
                )
            });
            if arrived {
                break;
            }
            tokio::task::yield_now().await;
        }
        h.env.clock.advance(Duration::from_secs(7200)).unwrap();
        c.send("hello\r\n").await;
        c.expect("554 5.7.1 too late").await;
    }

    /// A client that gives up while the farm delays its answer to the final dot is seen
    /// to go at that time: journalled then, before anything the client does next. The
    /// farm keeps a message it was going to accept (the client never learns it arrived);
    /// one it was going to refuse is not kept.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_gives_up_during_a_delayed_answer_is_seen_to_go() {
        let h = host(
            "[[host.rule]]\nstage = \"end-of-data\"\nwhen = { rcpt = \"no@y.test\" }\n\
             then = { reply = \"451 4.3.0 later\", delay = \"15m\" }\n\
             [[host.rule]]\nstage = \"end-of-data\"\nthen = { lose-reply = true, delay = \"15m\" }\n",
        );
        // (recipient, messages kept so far)
        for (recipient, kept) in [("r@y.test", 1), ("no@y.test", 1)] {
            let mut c = h.ready().await;
            c.command("MAIL FROM:<s@x.test>").await;
            c.command(&format!("RCPT TO:<{recipient}>")).await;
            c.command("DATA").await;
            c.send("Subject: slow\r\n\r\nhi\r\n.\r\n").await;
            // The sender's own timeout (10 minutes for the final dot, RFC 5321) is up
            // before the farm's 15.
            let before = h.env.clock.now();
            loop {
                let dot = h.journal().iter().any(|e| {
                    matches!(
                        &e.kind,
                        EventKind::Command {
                            command: Command::EndOfData { .. },
                            ..
                        }
                    ) && e.at >= before
                });
                if dot {
                    break;
                }
                tokio::task::yield_now().await;
            }
            h.env.clock.advance(Duration::from_secs(600)).unwrap();
            drop(c);
            h.finish().await;
            h.tasks.reopen();
            let closed = h.journal().into_iter().rev().find_map(|e| match e.kind {
                EventKind::ConnectionClosed { by, reason, .. } => Some((e.at, by, reason)),
                _ => None,
            });
            let (at, by, reason) = closed.unwrap();
            assert_eq!(by, crate::journal::ClosedBy::Client, "{reason}");
            assert!(
                at - before < Duration::from_secs(660),
                "seen when it went: {at:?}"
            );
            assert_eq!(h.env.inbox.messages().len(), kept, "{recipient}: {reason}");
        }
    }

    /// A client that sends everything at once, QUIT included, and half-closes (as Exim
    /// does with BDAT) is still there: after the farm's delay it gets the 250 and the 221.
    #[tokio::test(start_paused = true)]
    async fn a_half_closed_client_still_gets_its_delayed_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let h = host("[[host.rule]]\nstage = \"end-of-data\"\nthen = { delay = \"2m\" }\n");
        let mut stream = h.connect_raw();
        let message = "Subject: x\r\n\r\nhi\r\n";
        let all = format!(
            "EHLO me\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nBDAT {} LAST\r\n{message}QUIT\r\n",
            message.len()
        );
        stream.write_all(all.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut replies = String::new();
        stream.read_to_string(&mut replies).await.unwrap();
        assert!(replies.contains("250 2.0.0 Ok: queued as 1"), "{replies}");
        assert!(replies.contains("221 "), "{replies}");
        assert!(h.env.clock.now() >= Duration::from_secs(120));
        h.finish().await;
        assert_eq!(h.env.inbox.messages().len(), 1);
    }

    /// The end of BDAT content is journalled like the final dot, with the message's
    /// identity, so that a retry is recognised whichever way the content came.
    #[tokio::test(start_paused = true)]
    async fn the_end_of_content_says_which_message_it_was() {
        let h = host("");
        let mut c = h.ready().await;
        let message = "Message-ID: <same@x.test>\r\n\r\nhello\r\n";
        c.transaction("s@x.test", &["r@y.test"], message).await;
        c.command("MAIL FROM:<s@x.test>").await;
        c.command("RCPT TO:<r@y.test>").await;
        c.send(format!("BDAT {} LAST\r\n{message}", message.len()))
            .await;
        c.expect_code(250).await;
        let ends: Vec<(String, Option<String>, Option<String>)> = h
            .journal()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Command {
                    line,
                    command:
                        Command::EndOfData {
                            message_id, digest, ..
                        },
                    ..
                } => Some((line, message_id, digest)),
                _ => None,
            })
            .collect();
        assert_eq!(ends.len(), 2);
        assert_eq!(ends[0].0, ".");
        assert_eq!(ends[1].0, "");
        assert_eq!(ends[0].1.as_deref(), Some("same@x.test"));
        assert_eq!(ends[0].1, ends[1].1);
        assert_eq!(ends[0].2, ends[1].2, "the same content, the same digest");
        assert_eq!(ends[0].2.as_ref().map(String::len), Some(16));
    }
}
