//! How the journal holds its events in memory: the frequent kinds (connections, commands,
//! replies, accepted messages) as a few dozen bytes each, in segments of consecutive
//! events, and decoded back into [`Event`]s when read.
//!
//! Why: an [`Event`] is about 200 bytes before its strings, and a command line, a reply's
//! text, a sender and each recipient are one heap allocation each, so the 100,000 events
//! of a default journal took most of the farm's 50 MB. Encoded, an event is its bytes
//! and a 4-byte end offset:
//! - its time as the nanoseconds since the event before (whole every 32 events);
//! - host and rule names as numbers into a table of shared names;
//! - a command line that its command spells out (`RCPT TO:<a@b.test>`) as a flag, any
//!   other line whole, with a sender, recipient or EHLO name as an offset into it
//!   ([`canonical`]);
//! - a reply met again, from the same place, as the number of its first copy in the
//!   segment ([`replies`]).
//!
//! The rare kinds (farm started, DNS, TLS, resets, clock jumps) are kept as they are.
//!
//! Decoding reads only what encoding wrote, so it cannot fail unless this file has a
//! bug; [`Segment::read`] then gives `None` rather than a wrong event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod canonical;
mod codec;
mod recipients;
mod replies;

pub(crate) use recipients::Recipients;

use codec::{Reader, Writer};
use replies::ReplyCache;

use super::event::{ClosedBy, CommandRef, Event, EventKind};
use crate::scenario::{Reply, Stage};

/// Recipient lists at least this long (in bytes) are shared with the capture rather than
/// encoded: below it, the list's own bytes are smaller than sharing it.
const SHARED_RECIPIENTS: usize = 256;

/// Host and rule names, each stored once and referred to by number: a farm has few.
#[derive(Debug, Default)]
pub(super) struct Names {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn id(&mut self, name: &Arc<str>) -> u32 {
        // The hosts come first and are the same `Arc` in every event of theirs: found
        // without hashing.
        if let Some(id) = self.names.iter().take(8).position(|n| Arc::ptr_eq(n, name)) {
            return id as u32;
        }
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.clone());
        self.ids.insert(name.clone(), id);
        id
    }

    fn get(&self, id: u64) -> Option<Arc<str>> {
        self.names.get(usize::try_from(id).ok()?).cloned()
    }
}

/// Consecutive events, from `first_seq` on.
#[derive(Debug)]
pub(super) struct Segment {
    first_seq: u64,
    bytes: Vec<u8>,
    /// Where each event's bytes end.
    ends: Vec<u32>,
    /// The rare kinds, as they are; their bytes say which.
    rare: Vec<EventKind>,
    /// Long recipient lists of `message-accepted` events, shared with the capture.
    recipients: Vec<Arc<Recipients>>,
    /// The replies kept in full, for later copies of them to refer to.
    replies: ReplyCache,
    /// The time of the last event, which the next one's is counted from.
    last_at: Duration,
}

/// Every this many events, an event's time is kept whole rather than as the time since
/// the event before: reading one event then reads at most this many times.
const WHOLE_TIME_EVERY: usize = 32;

// Kinds and their numbers in the encoding.
const RARE: u8 = 0;
const OPENED: u8 = 1;
const COMMAND: u8 = 2;
const REPLY: u8 = 3;
const ACCEPTED: u8 = 4;
const CLOSED: u8 = 5;

impl Segment {
    /// An empty segment for `events` events; `bytes` is a guess of their size.
    pub(super) fn new(first_seq: u64, events: usize, bytes: usize) -> Self {
        Self {
            first_seq,
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(events),
            rare: Vec::new(),
            recipients: Vec::new(),
            replies: ReplyCache::default(),
            last_at: Duration::ZERO,
        }
    }

    pub(super) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The bytes it holds on the heap (what it reserved), for the journal's own measure.
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * size_of::<u32>()
            + self.rare.capacity() * size_of::<EventKind>()
            + self.recipients.capacity() * size_of::<Arc<Recipients>>()
            + self.replies.heap_bytes()
            + self
                .recipients
                .iter()
                .map(|r| r.heap_bytes())
                .sum::<usize>()
    }

    /// The bytes its events take, without what is reserved for more.
    pub(super) fn used_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Gives back what was reserved for events that will not come.
    pub(super) fn seal(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.replies.seal();
    }

    /// Appends the event after the last one held (its sequence number is implied).
    /// `shared` is the recipient list of a `message-accepted` event as the capture keeps
    /// it, when the event's own list was left empty.
    pub(super) fn push(
        &mut self,
        names: &mut Names,
        at: Duration,
        kind: EventKind,
        shared: Option<&Arc<Recipients>>,
    ) {
        // An event that would take the segment past 32-bit offsets (gigabytes of text in
        // one event) is kept as it is, among the rare ones.
        if self.bytes.len().saturating_add(text_len(&kind)) >= u32::MAX as usize / 2 {
            self.push_rare(at, kind);
            return;
        }
        self.write_time(at);
        let mut w = Writer(&mut self.bytes);
        match kind {
            EventKind::ConnectionOpened { host, conn, client } => {
                w.u8(OPENED);
                w.uint(names.id(&host).into());
                w.uint(conn);
                w.addr(client);
            }
            EventKind::Command {
                host,
                conn,
                line,
                command,
            } => w.command_event(
                names,
                &CommandRecord {
                    host: &host,
                    conn,
                    line: &line,
                    command: command.borrowed(),
                },
            ),
            EventKind::Reply {
                host,
                conn,
                stage,
                reply,
                rule,
                retry_after,
                retry_after_told,
            } => {
                w.reply_event(
                    names,
                    &ReplyRecord {
                        host: &host,
                        conn,
                        stage,
                        reply: &reply,
                        rule,
                        retry_after,
                        retry_after_told,
                    },
                    None,
                );
            }
            EventKind::MessageAccepted {
                host,
                conn,
                id,
                sender,
                recipients,
                size,
                message_id,
                subject,
                tls,
            } => {
                w.u8(ACCEPTED);
                w.uint(names.id(&host).into());
                w.uint(conn);
                w.uint(id);
                w.str(&sender);
                // A count times two, then the recipients; or a shared list's index
                // times two plus one.
                match shared.filter(|_| recipients.is_empty()) {
                    Some(list) if list.text_len() >= SHARED_RECIPIENTS => {
                        w.uint(self.recipients.len() as u64 * 2 + 1);
                        self.recipients.push(list.clone());
                    }
                    Some(list) => {
                        w.uint(list.len() as u64 * 2);
                        for recipient in list.iter() {
                            w.str(recipient);
                        }
                    }
                    None => {
                        w.uint(recipients.len() as u64 * 2);
                        for recipient in &recipients {
                            w.str(recipient);
                        }
                    }
                }
                w.uint(size);
                w.opt_str(message_id.as_deref());
                w.opt_str(subject.as_deref());
                w.u8(u8::from(tls));
            }
            EventKind::ConnectionClosed {
                host,
                conn,
                by,
                reason,
            } => {
                w.u8(CLOSED);
                w.uint(names.id(&host).into());
                w.uint(conn);
                w.u8(match by {
                    ClosedBy::Client => 0,
                    ClosedBy::Farm => 1,
                });
                w.str(&reason);
            }
            rare => {
                w.u8(RARE);
                w.uint(self.rare.len() as u64);
                self.rare.push(rare);
            }
        }
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    fn push_rare(&mut self, at: Duration, kind: EventKind) {
        self.write_time(at);
        let mut w = Writer(&mut self.bytes);
        w.u8(RARE);
        w.uint(self.rare.len() as u64);
        self.rare.push(kind);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// Appends a reply event, read from where it is: the session's reply is not cloned.
    /// Appends a command event, read from where it is: nothing of it is copied first.
    pub(super) fn push_command(
        &mut self,
        names: &mut Names,
        at: Duration,
        command: &CommandRecord<'_>,
    ) {
        if self.bytes.len().saturating_add(2 * command.line.len()) >= u32::MAX as usize / 2 {
            let kind = EventKind::Command {
                host: command.host.clone(),
                conn: command.conn,
                line: command.line.to_string(),
                command: command.command.to_owned_command(),
            };
            self.push_rare(at, kind);
            return;
        }
        self.write_time(at);
        Writer(&mut self.bytes).command_event(names, command);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// A reply met before in this segment is kept as a reference to its first copy.
    pub(super) fn push_reply(&mut self, names: &mut Names, at: Duration, reply: &ReplyRecord<'_>) {
        let copy = self.replies.find(reply.reply, &self.bytes);
        self.write_time(at);
        let start = Writer(&mut self.bytes).reply_event(names, reply, copy);
        if let Some(start) = start {
            self.replies.remember(reply.reply, start);
        }
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// Begins the next event with its time: the nanoseconds since the event before, plus
    /// one (two or three bytes where events come microseconds apart, against seven for a
    /// whole time); or 0 and the whole time, for every [`WHOLE_TIME_EVERY`]th event and
    /// one earlier than the last (which the journal's stamps never are).
    fn write_time(&mut self, at: Duration) {
        let since = nanos_since(self.last_at, at)
            .and_then(|n| n.checked_add(1))
            .filter(|_| !self.ends.len().is_multiple_of(WHOLE_TIME_EVERY));
        let mut w = Writer(&mut self.bytes);
        match since {
            Some(tag) => w.uint(tag),
            None => {
                w.uint(0);
                w.duration(at);
            }
        }
        self.last_at = at;
    }

    /// The bytes of event `index`.
    fn event_bytes(&self, index: usize) -> Option<&[u8]> {
        let start = match index {
            0 => 0,
            i => *self.ends.get(i - 1)? as usize,
        };
        let end = *self.ends.get(index)? as usize;
        self.bytes.get(start..end)
    }

    /// The time of event `index`, from the last whole time before it.
    fn time_of(&self, index: usize) -> Option<Duration> {
        let mut at = Duration::ZERO;
        for i in index - index % WHOLE_TIME_EVERY..=index {
            at = read_time(&mut Reader(self.event_bytes(i)?), Some(at))?;
        }
        Some(at)
    }

    /// Events `range`, in order, each given to `each` (`None` for one that cannot be
    /// read, which would be a bug of this file): read in order, each time is counted
    /// from the one before.
    pub(super) fn read(
        &self,
        names: &Names,
        range: std::ops::Range<usize>,
        mut each: impl FnMut(usize, Option<Event>),
    ) {
        let mut before = None;
        for index in range {
            let event = self.get_after(names, index, before);
            before = event.as_ref().map(|e| e.at);
            each(index, event);
        }
    }

    /// The event at `index` (0 is `first_seq`).
    #[cfg(test)]
    pub(super) fn get(&self, names: &Names, index: usize) -> Option<Event> {
        self.get_after(names, index, None)
    }

    /// The event at `index`; `before` is the time of the one before it, if known.
    fn get_after(&self, names: &Names, index: usize, before: Option<Duration>) -> Option<Event> {
        let mut r = Reader(self.event_bytes(index)?);
        let before = match before {
            Some(at) => Some(at),
            None if index.is_multiple_of(WHOLE_TIME_EVERY) => None,
            None => Some(self.time_of(index - 1)?),
        };
        let at = read_time(&mut r, before)?;
        let kind = match r.u8()? {
            OPENED => EventKind::ConnectionOpened {
                host: names.get(r.uint()?)?,
                conn: r.uint()?,
                client: r.addr()?,
            },
            COMMAND => {
                let host = names.get(r.uint()?)?;
                let conn = r.uint()?;
                let (line, command) = match r.len()? {
                    0 => {
                        let command = r.command("")?;
                        (canonical::canonical_line(command.borrowed())?, command)
                    }
                    n => {
                        let line = r.text(n - 1)?;
                        let command = r.command(&line)?;
                        (line, command)
                    }
                };
                EventKind::Command {
                    host,
                    conn,
                    line,
                    command,
                }
            }
            REPLY => {
                let host = names.get(r.uint()?)?;
                let conn = r.uint()?;
                let stage = match r.u8()? {
                    0 => None,
                    n => Some(*Stage::ALL.get(usize::from(n) - 1)?),
                };
                let reply = match r.reply_or_copy()? {
                    Ok(reply) => reply,
                    Err(copy) => Reader(self.bytes.get(self.replies.start(copy)?..)?).reply()?,
                };
                let rule = match r.uint()? {
                    0 => None,
                    id => Some(names.get(id - 1)?),
                };
                let flags = r.u8()?;
                let retry_after = if flags & 1 == 1 {
                    Some(r.duration()?)
                } else {
                    None
                };
                EventKind::Reply {
                    host,
                    conn,
                    stage,
                    reply,
                    rule,
                    retry_after,
                    retry_after_told: flags & 2 == 2,
                }
            }
            ACCEPTED => {
                let host = names.get(r.uint()?)?;
                let conn = r.uint()?;
                let id = r.uint()?;
                let sender = r.string()?;
                let tag = r.uint()?;
                let recipients = if tag % 2 == 1 {
                    self.recipients
                        .get(usize::try_from(tag / 2).ok()?)?
                        .to_vec()
                } else {
                    let count = tag / 2;
                    let mut recipients =
                        Vec::with_capacity(usize::try_from(count).ok()?.min(r.0.len()));
                    for _ in 0..count {
                        recipients.push(r.string()?);
                    }
                    recipients
                };
                EventKind::MessageAccepted {
                    host,
                    conn,
                    id,
                    sender,
                    recipients,
                    size: r.uint()?,
                    message_id: r.opt_string()?,
                    subject: r.opt_string()?,
                    tls: r.u8()? == 1,
                }
            }
            CLOSED => EventKind::ConnectionClosed {
                host: names.get(r.uint()?)?,
                conn: r.uint()?,
                by: match r.u8()? {
                    0 => ClosedBy::Client,
                    _ => ClosedBy::Farm,
                },
                reason: r.string()?,
            },
            RARE => self.rare.get(usize::try_from(r.uint()?).ok()?)?.clone(),
            _ => return None,
        };
        Some(Event {
            seq: self.first_seq + index as u64,
            at,
            kind,
        })
    }
}

/// The nanoseconds from `last` to `at`, if `at` is not earlier and they fit in 64 bits
/// (585 years): in 64-bit steps, as this runs for every event.
fn nanos_since(last: Duration, at: Duration) -> Option<u64> {
    let secs = at.as_secs().checked_sub(last.as_secs())?;
    let nanos = i64::from(at.subsec_nanos()) - i64::from(last.subsec_nanos());
    secs.checked_mul(1_000_000_000)?.checked_add_signed(nanos)
}

/// An event's time, written by [`Segment::write_time`]; `before` is the time of the event
/// before it, which only a time kept whole does without.
fn read_time(r: &mut Reader<'_>, before: Option<Duration>) -> Option<Duration> {
    match r.uint()? {
        0 => r.duration(),
        since => before?.checked_add(Duration::from_nanos(since - 1)),
    }
}

/// A command to journal, borrowed from the session that read it (see
/// `Journal::record_command`).
#[derive(Debug)]
pub(crate) struct CommandRecord<'a> {
    pub host: &'a Arc<str>,
    pub conn: u64,
    /// The line as the journal keeps it (`sanitize_line`).
    pub line: &'a str,
    pub command: CommandRef<'a>,
}

/// A reply to journal, borrowed from the session that sends it: the one event of every
/// command, journalled without copying its text (see `Journal::record_reply`).
#[derive(Debug)]
pub(crate) struct ReplyRecord<'a> {
    pub host: &'a Arc<str>,
    pub conn: u64,
    pub stage: Option<Stage>,
    pub reply: &'a Reply,
    pub rule: Option<Arc<str>>,
    pub retry_after: Option<Duration>,
    pub retry_after_told: bool,
}

/// About how many bytes of text an event holds (its strings), for the bound above.
fn text_len(kind: &EventKind) -> usize {
    match kind {
        EventKind::Command { line, .. } => 2 * line.len(),
        EventKind::Reply { reply, .. } => reply.lines.iter().map(String::len).sum(),
        EventKind::MessageAccepted {
            sender,
            recipients,
            message_id,
            subject,
            ..
        } => {
            sender.len()
                + recipients.iter().map(|r| r.len() + 10).sum::<usize>()
                + message_id.as_ref().map_or(0, String::len)
                + subject.as_ref().map_or(0, String::len)
        }
        EventKind::ConnectionClosed { reason, .. } => reason.len(),
        _ => 0,
    }
}

fn stage_number(stage: Stage) -> u8 {
    Stage::ALL
        .iter()
        .position(|s| *s == stage)
        .map_or(0, |i| i as u8 + 1)
}

#[cfg(test)]
mod tests;
