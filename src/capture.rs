//! The messages a farm accepted: envelope, size, raw bytes and the headers people look for,
//! bounded in count and bytes so that a long soak cannot exhaust memory.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::journal::{EventKind, Journal, Recipients};
use crate::scenario::CaptureLimits;

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Farm-wide message number, as in the `queued as` reply.
    pub id: u64,
    pub host: Arc<str>,
    pub conn: u64,
    /// Farm time of acceptance.
    #[serde(rename = "ms", serialize_with = "crate::millis::serialize")]
    pub at: Duration,
    pub client: SocketAddr,
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// Empty for the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: u64,
    /// The `Message-ID` header without angle brackets, if the message has one.
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// Whether it arrived over TLS (after STARTTLS).
    pub tls: bool,
    /// The message as received, dot-unstuffed, without the final dot.
    #[serde(skip)]
    pub data: Arc<[u8]>,
}

impl Message {
    /// The raw message as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// The `Message-ID` and `Subject` of a raw message, if it has them.
pub(crate) fn parse_headers(data: &[u8]) -> (Option<String>, Option<String>) {
    // Only the header block is parsed: a message body can be large and is not needed.
    let end = memchr_header_end(data).unwrap_or(data.len());
    let wanted = wanted_fields(&data[..end]);
    if wanted.is_empty() {
        return (None, None);
    }
    match header_parser().parse_headers(&wanted[..]) {
        Some(message) => (
            message.message_id().map(str::to_string),
            message.subject().map(str::to_string),
        ),
        None => (None, None),
    }
}

/// The `Message-ID` and `Subject` fields of a header block, each with its continuation
/// lines, and nothing else: mail-parser then reads two fields, not the twenty a real
/// message has.
fn wanted_fields(header: &[u8]) -> Vec<u8> {
    let mut wanted = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        if !continues {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            keep = line.contains(&b':')
                && (name.eq_ignore_ascii_case(b"message-id")
                    || name.eq_ignore_ascii_case(b"subject"));
        }
        if keep {
            wanted.extend_from_slice(line);
        }
    }
    if !wanted.is_empty() {
        // The end of the header block, as mail-parser expects it.
        wanted.extend_from_slice(b"\r\n");
    }
    wanted
}

/// A parser of the two headers the farm reads; every other header is skipped. The
/// parser `MessageParser::new()` gives parses dates, addresses and content types of
/// every header it knows: a third of the farm's work for a small message.
fn header_parser() -> &'static mail_parser::MessageParser {
    static PARSER: std::sync::LazyLock<mail_parser::MessageParser> =
        std::sync::LazyLock::new(|| {
            mail_parser::MessageParser::new()
                .header_id(mail_parser::HeaderName::MessageId)
                .header_text(mail_parser::HeaderName::Subject)
                .default_header_ignore()
        });
    &PARSER
}

fn memchr_header_end(data: &[u8]) -> Option<usize> {
    memchr::memmem::find(data, b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| memchr::memmem::find(data, b"\n\n").map(|p| p + 2))
}

/// Where accepted messages go: each is numbered, journalled and kept in one step, so that
/// message numbers appear in the journal and the capture in order, and the journal holds
/// a message before its 250 is written.
#[derive(Debug)]
pub(crate) struct Inbox {
    journal: Arc<Journal>,
    capture: Capture,
    /// The last message number given; under the lock that orders numbering, journal and
    /// capture.
    last_id: Mutex<u64>,
}

impl Inbox {
    pub(crate) fn new(journal: Arc<Journal>, limits: CaptureLimits) -> Self {
        Self {
            journal,
            capture: Capture::new(limits),
            last_id: Mutex::new(0),
        }
    }

    /// Numbers an accepted message, journals its event and keeps it; returns its number
    /// and the sequence number of its event (what a 250 waits for to be in the file).
    /// The event and the message `make` gives may leave their recipients empty: both get
    /// `recipients`, one list shared by the two.
    pub(crate) fn accept(
        &self,
        recipients: &[String],
        make: impl FnOnce(u64) -> (EventKind, Message),
    ) -> (u64, u64) {
        let shared = Arc::new(Recipients::new(recipients));
        let mut last_id = self.last_id.lock();
        *last_id += 1;
        let id = *last_id;
        let (event, message) = make(id);
        let seq = self.journal.record_accepted(event, &shared);
        self.capture.keep_sharing(message, Some(shared));
        (id, seq)
    }

    /// Gives message `id` back: its journal line could not be written, so the client is
    /// told 451 and will send it again; the farm must not show it as received.
    pub(crate) fn withdraw(&self, id: u64) {
        self.capture.remove(id);
    }

    /// The messages still kept, oldest first.
    pub(crate) fn messages(&self) -> Vec<Message> {
        self.capture.messages()
    }

    /// Message `id`, if it is still kept.
    pub(crate) fn message(&self, id: u64) -> Option<Message> {
        self.capture.message(id)
    }

    /// Forgets every message kept; numbering goes on, so a number never names two.
    pub(crate) fn clear(&self) -> usize {
        let _numbering = self.last_id.lock();
        self.capture.clear()
    }
}

/// The bounded store of accepted messages, oldest dropped first.
#[derive(Debug)]
struct Capture {
    limits: CaptureLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Kept>,
    bytes: u64,
    dropped: u64,
}

/// A message as the capture keeps it: its recipients in one string, not one allocation
/// each (a message for 1,000 recipients took 56 KB in them, more than its content), and
/// shared with its journal event.
#[derive(Debug)]
struct Kept {
    /// The message without its recipients.
    message: Message,
    recipients: Arc<Recipients>,
}

impl Kept {
    fn new(mut message: Message, recipients: Option<Arc<Recipients>>) -> Self {
        let own = std::mem::take(&mut message.recipients);
        let recipients = recipients
            .filter(|_| own.is_empty())
            .unwrap_or_else(|| Arc::new(Recipients::new(&own)));
        Self {
            message,
            recipients,
        }
    }

    fn id(&self) -> u64 {
        self.message.id
    }

    fn size(&self) -> u64 {
        self.message.data.len() as u64
    }

    /// The message whole again.
    fn message(&self) -> Message {
        Message {
            recipients: self.recipients.to_vec(),
            ..self.message.clone()
        }
    }
}

impl Capture {
    fn new(limits: CaptureLimits) -> Self {
        Self {
            limits,
            state: Mutex::default(),
        }
    }

    /// Keeps a message, dropping the oldest ones while over the limits. A message larger
    /// than the byte limit on its own is kept without its body.
    #[cfg(test)]
    fn keep(&self, message: Message) {
        self.keep_sharing(message, None);
    }

    /// Keeps a message whose recipients may be `recipients` (its own list left empty).
    fn keep_sharing(&self, mut message: Message, recipients: Option<Arc<Recipients>>) {
        if message.data.len() as u64 > self.limits.max_bytes {
            message.data = Arc::from(Vec::new());
        }
        let kept = Kept::new(message, recipients);
        let mut state = self.state.lock();
        state.bytes += kept.size();
        state.messages.push_back(kept);
        while state.messages.len() > self.limits.max_messages.max(1)
            || state.bytes > self.limits.max_bytes
        {
            match state.messages.pop_front() {
                Some(old) => {
                    state.bytes -= old.size();
                    state.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// Forgets message `id`, if it is still kept.
    fn remove(&self, id: u64) {
        let mut state = self.state.lock();
        if let Some(at) = state.messages.iter().rposition(|m| m.id() == id)
            && let Some(kept) = state.messages.remove(at)
        {
            state.bytes -= kept.size();
        }
    }

    fn message(&self, id: u64) -> Option<Message> {
        let state = self.state.lock();
        // Kept in numbering order.
        let at = state.messages.binary_search_by_key(&id, Kept::id).ok()?;
        state.messages.get(at).map(Kept::message)
    }

    /// Forgets every message; returns how many there were.
    fn clear(&self) -> usize {
        let mut state = self.state.lock();
        let count = state.messages.len();
        state.messages.clear();
        state.bytes = 0;
        count
    }

    /// A copy of every message still kept, oldest first.
    fn messages(&self) -> Vec<Message> {
        self.state
            .lock()
            .messages
            .iter()
            .map(Kept::message)
            .collect()
    }

    /// How many messages were dropped to stay within the limits.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, size: usize) -> Message {
        Message {
            id,
            host: "mx1".into(),
            conn: 1,
            at: Duration::ZERO,
            client: "127.0.0.1:1".parse().unwrap(),
            helo: "c.test".into(),
            sender: String::new(),
            recipients: vec!["a@b.test".into()],
            size: size as u64,
            message_id: None,
            subject: None,
            tls: false,
            data: Arc::from(vec![b'x'; size]),
        }
    }

    #[test]
    fn keeps_within_count_and_bytes() {
        let capture = Capture::new(CaptureLimits {
            max_messages: 3,
            max_bytes: 250,
        });
        for id in 1..=5 {
            capture.keep(message(id, 100));
        }
        let ids: Vec<u64> = capture.messages().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![4, 5]);
        assert_eq!(capture.dropped(), 3);
    }

    /// Recipients kept in one string come back one by one, as they were given.
    #[test]
    fn gives_back_every_recipient_as_given() {
        let capture = Capture::new(CaptureLimits {
            max_messages: 10,
            max_bytes: 1000,
        });
        let recipients = ["a@b.test", "", "ünï@b.test", "a@b.test", "x\u{0}y@c.test"];
        let mut many = message(1, 10);
        many.recipients = recipients.iter().map(|r| r.to_string()).collect();
        capture.keep(many.clone());
        let mut none = message(2, 10);
        none.recipients.clear();
        capture.keep(none.clone());
        assert_eq!(capture.messages(), vec![many.clone(), none]);
        assert_eq!(capture.message(1), Some(many));
    }

    #[test]
    fn finds_message_id_and_subject() {
        let raw =
            b"From: a@b.test\r\nSubject: Hello there\r\nMessage-ID: <abc@b.test>\r\n\r\nbody\r\n";
        let (id, subject) = parse_headers(raw);
        assert_eq!(id.as_deref(), Some("abc@b.test"));
        assert_eq!(subject.as_deref(), Some("Hello there"));
        assert_eq!(parse_headers(b"no headers at all"), (None, None));
    }

    /// Only the two fields are handed to mail-parser, but whole: folded lines, any case
    /// of the name, encoded words, a field that only looks like one of them.
    #[test]
    fn reads_folded_encoded_and_lookalike_fields() {
        let raw = b"X-Subject: not this\r\nsubject: =?UTF-8?B?SMOpbGxv?=\r\n world\r\n\
                    References: <r@b.test>\r\nMESSAGE-ID:\r\n\t<folded@b.test>\r\n\r\n\
                    Subject: in the body\r\n";
        let (id, subject) = parse_headers(raw);
        assert_eq!(id.as_deref(), Some("folded@b.test"));
        assert_eq!(subject.as_deref(), Some("H\u{e9}llo world"));
        let bare_lf = b"Message-ID: <lf@b.test>\nSubject: lf\n\nbody\n";
        assert_eq!(
            parse_headers(bare_lf),
            (Some("lf@b.test".into()), Some("lf".into()))
        );
        assert_eq!(parse_headers(b"From: a@b.test\r\n\r\n"), (None, None));
    }
}
