//! How the journal holds its events in memory: the frequent kinds (connections, commands,
//! replies, accepted messages) as a few dozen bytes each, in segments of consecutive
//! events, and decoded back into [`Event`]s when read.
//!
//! Why: an [`Event`] is about 200 bytes before its strings, and a command line, a reply's
//! text, a sender and each recipient are one heap allocation each, so the 100,000 events
//! of a default journal took most of the farm's 50 MB. Encoded, an event is its bytes
//! and a 4-byte end offset; host and rule names are numbers into a table of shared names,
//! and a sender, recipient or EHLO name found in its command line is an offset into it.
//! The rare kinds (farm started, DNS, TLS, resets, clock jumps) are kept as they are.
//!
//! Decoding reads only what encoding wrote, so it cannot fail unless this file has a
//! bug; [`Segment::get`] then gives `None` rather than a wrong event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod codec;

use codec::{Reader, Writer};

use super::event::{ClosedBy, Event, EventKind};
use crate::scenario::{Reply, Stage};

/// The recipients of an accepted message in one string, shared by the capture and the
/// journal's `message-accepted` event: a message for 1,000 recipients is 22 KB of them,
/// which was kept twice, each recipient an allocation of its own.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Recipients {
    joined: Box<str>,
    /// Where each recipient ends in `joined`.
    ends: Box<[usize]>,
}

impl Recipients {
    pub(crate) fn new(recipients: &[String]) -> Self {
        let mut joined = String::with_capacity(recipients.iter().map(String::len).sum());
        let mut ends = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            joined.push_str(recipient);
            ends.push(joined.len());
        }
        Self {
            joined: joined.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// One string each, as they were given.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let recipient = self.joined.get(start..end).unwrap_or_default();
            start = end;
            recipient
        })
    }

    fn heap_bytes(&self) -> usize {
        self.joined.len() + self.ends.len() * size_of::<usize>()
    }
}

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
}

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
        let mut w = Writer(&mut self.bytes);
        w.duration(at);
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
            } => {
                w.u8(COMMAND);
                w.uint(names.id(&host).into());
                w.uint(conn);
                w.str(&line);
                w.command(&line, &command);
            }
            EventKind::Reply {
                host,
                conn,
                stage,
                reply,
                rule,
                retry_after,
                retry_after_told,
            } => w.reply_event(
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
            ),
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
                    Some(list) if list.joined.len() >= SHARED_RECIPIENTS => {
                        w.uint(self.recipients.len() as u64 * 2 + 1);
                        self.recipients.push(list.clone());
                    }
                    Some(list) => {
                        w.uint(list.ends.len() as u64 * 2);
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
        let mut w = Writer(&mut self.bytes);
        w.duration(at);
        w.u8(RARE);
        w.uint(self.rare.len() as u64);
        self.rare.push(kind);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// Appends a reply event, read from where it is: the session's reply is not cloned.
    pub(super) fn push_reply(&mut self, names: &mut Names, at: Duration, reply: &ReplyRecord<'_>) {
        let mut w = Writer(&mut self.bytes);
        w.duration(at);
        w.reply_event(names, reply);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// The event at `index` (0 is `first_seq`).
    pub(super) fn get(&self, names: &Names, index: usize) -> Option<Event> {
        let start = match index {
            0 => 0,
            i => *self.ends.get(i - 1)? as usize,
        };
        let end = *self.ends.get(index)? as usize;
        let mut r = Reader(self.bytes.get(start..end)?);
        let at = r.duration()?;
        let kind = match r.u8()? {
            OPENED => EventKind::ConnectionOpened {
                host: names.get(r.uint()?)?,
                conn: r.uint()?,
                client: r.addr()?,
            },
            COMMAND => {
                let host = names.get(r.uint()?)?;
                let conn = r.uint()?;
                let line = r.string()?;
                let command = r.command(&line)?;
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
                let reply = r.reply()?;
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
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::journal::event::Command;
    use crate::journal::strategies::{duration, kind};

    proptest! {
        /// Whatever is kept is read back as it was, in order, with its time and number.
        #[test]
        fn every_event_reads_back_as_it_was(
            events in proptest::collection::vec((duration(), kind()), 1..40),
            first in 1..u64::MAX / 2,
        ) {
            let mut names = Names::default();
            let mut segment = Segment::new(first, events.len(), 0);
            for (at, kind) in &events {
                segment.push(&mut names, *at, kind.clone(), None);
            }
            prop_assert_eq!(segment.len(), events.len());
            for (index, (at, kind)) in events.iter().enumerate() {
                let read = segment.get(&names, index);
                prop_assert_eq!(
                    read,
                    Some(Event { seq: first + index as u64, at: *at, kind: kind.clone() })
                );
            }
            prop_assert_eq!(segment.get(&names, events.len()), None);
        }
    }

    /// A recipient list shared with the capture is read back into the event, long (kept
    /// by reference) or short (encoded), and the event's own list wins when it has one.
    #[test]
    fn shared_recipients_read_back_into_the_event() {
        let accepted = |recipients: Vec<String>| EventKind::MessageAccepted {
            host: "mx1".into(),
            conn: 1,
            id: 7,
            sender: "s@x.test".into(),
            recipients,
            size: 10,
            message_id: None,
            subject: None,
            tls: false,
        };
        let long: Vec<String> = (0..100).map(|n| format!("r{n}@y.test")).collect();
        let short = vec!["a@y.test".to_string(), String::new()];
        let mut names = Names::default();
        let mut segment = Segment::new(1, 3, 0);
        for list in [&long, &short] {
            let shared = Arc::new(Recipients::new(list));
            segment.push(
                &mut names,
                Duration::ZERO,
                accepted(Vec::new()),
                Some(&shared),
            );
        }
        let other = Arc::new(Recipients::new(&long));
        segment.push(
            &mut names,
            Duration::ZERO,
            accepted(short.clone()),
            Some(&other),
        );
        assert_eq!(segment.recipients.len(), 1, "only the long list is shared");
        let read: Vec<EventKind> = (0..3)
            .map(|i| segment.get(&names, i).map(|e| e.kind))
            .collect::<Option<_>>()
            .unwrap();
        assert_eq!(
            read,
            [accepted(long), accepted(short.clone()), accepted(short)]
        );
    }

    /// What the frequent events of a message take: the figure BENCHMARKS.md explains.
    #[test]
    fn a_reply_takes_a_few_dozen_bytes() {
        let mut names = Names::default();
        let mut segment = Segment::new(1, 2, 0);
        let host: Arc<str> = "mx1".into();
        segment.push(
            &mut names,
            Duration::from_millis(1500),
            EventKind::Reply {
                host: host.clone(),
                conn: 1234,
                stage: Some(Stage::Rcpt),
                reply: Reply::new(250, Some("2.1.5"), "Ok"),
                rule: None,
                retry_after: None,
                retry_after_told: false,
            },
            None,
        );
        assert!(segment.used_bytes() <= 32, "{} bytes", segment.used_bytes());
        segment.push(
            &mut names,
            Duration::from_millis(1501),
            EventKind::Command {
                host,
                conn: 1234,
                line: "RCPT TO:<alice@aol.test>".into(),
                command: Command::Rcpt {
                    recipient: "alice@aol.test".into(),
                },
            },
            None,
        );
        assert!(
            segment.used_bytes() <= 32 + 40,
            "{} bytes",
            segment.used_bytes()
        );
    }
}
