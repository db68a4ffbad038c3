//! An event as its line in the journal file: one JSON object, the bytes serde's derive of
//! [`Event`] gives (a property test holds the two together), written directly for the
//! kinds that every connection and message makes, and by serde_json for the rest.
//!
//! Why by hand: with `--journal FILE`, every command and reply becomes a line, and
//! serde_json's string escaping (a table lookup per byte) and map entries were a quarter
//! of the farm's instructions per RCPT. Here a string that needs no escape (almost all:
//! command lines, addresses, reply texts) is copied as it is, after one pass over its
//! bytes that the compiler vectorizes; one that does is escaped by serde_json, so the
//! escapes are serde_json's own.

use std::io::Write as _;
use std::time::Duration;

use super::compact::{CommandRecord, Recipients, ReplyRecord};
use super::event::{ClosedBy, CommandRef, Event, EventKind};
use crate::scenario::{Reply, Stage};

/// `,"event":"KIND","host":`, one constant: written with one copy instead of three.
macro_rules! event_key {
    ($kind:literal) => {
        concat!(",\"event\":\"", $kind, "\",\"host\":").as_bytes()
    };
}

/// Appends `event`'s line, with its newline. `shared`: the recipients of a
/// `message-accepted` event whose own list was left empty, because the capture keeps
/// them (see `Journal::record_accepted`).
pub(crate) fn write_event(out: &mut Vec<u8>, event: &Event, shared: Option<&Recipients>) {
    let mut line = Line(out);
    match &event.kind {
        EventKind::ConnectionOpened { host, conn, client } => {
            line.head(event, event_key!("connection-opened"), host, *conn);
            line.raw(b",\"client\":\"");
            // A socket address has nothing to escape.
            let _ = write!(line.0, "{client}");
            line.raw(b"\"}");
        }
        EventKind::Command {
            host,
            conn,
            line: text,
            command,
        } => {
            line.command_event(
                event.seq,
                event.at,
                &CommandRecord {
                    host,
                    conn: *conn,
                    line: text,
                    command: command.borrowed(),
                },
            );
        }
        EventKind::Reply {
            host,
            conn,
            stage,
            reply,
            rule,
            retry_after,
            retry_after_told,
        } => line.reply(
            event.seq,
            event.at,
            &ReplyRecord {
                host,
                conn: *conn,
                stage: *stage,
                reply,
                rule: rule.clone(),
                retry_after: *retry_after,
                retry_after_told: *retry_after_told,
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
            line.head(event, event_key!("message-accepted"), host, *conn);
            line.key_u64(b",\"id\":", *id);
            line.key_str(b",\"sender\":", sender);
            line.raw(b",\"recipients\":[");
            match shared {
                Some(shared) if recipients.is_empty() => line.list(shared.iter()),
                _ => line.list(recipients.iter().map(String::as_str)),
            }
            line.key_u64(b"],\"size\":", *size);
            line.optional_str(b",\"message_id\":", message_id.as_deref());
            line.optional_str(b",\"subject\":", subject.as_deref());
            line.raw(b",\"tls\":");
            line.bool(*tls);
            line.raw(b"}");
        }
        EventKind::ConnectionClosed {
            host,
            conn,
            by,
            reason,
        } => {
            line.head(event, event_key!("connection-closed"), host, *conn);
            line.raw(match by {
                ClosedBy::Client => b",\"by\":\"client\"",
                ClosedBy::Farm => b",\"by\":\"farm\"",
            });
            line.key_str(b",\"reason\":", reason);
            line.raw(b"}");
        }
        // Rare: a few per connection at most.
        EventKind::FarmStarted { .. }
        | EventKind::TlsHandshake { .. }
        | EventKind::DnsCheck { .. }
        | EventKind::ScenarioReplaced { .. }
        | EventKind::ClockAdvanced { .. }
        | EventKind::Reset { .. }
        | EventKind::DnsQuery { .. } => {
            let _ = serde_json::to_writer(&mut *line.0, event);
        }
    }
    out.push(b'\n');
}

/// Appends the line of a `command` event, from the command where it is.
pub(crate) fn write_command(
    out: &mut Vec<u8>,
    seq: u64,
    at: Duration,
    command: &CommandRecord<'_>,
) {
    Line(out).command_event(seq, at, command);
    out.push(b'\n');
}

/// Appends the line of a `reply` event, from the reply where it is.
pub(crate) fn write_reply(out: &mut Vec<u8>, seq: u64, at: Duration, reply: &ReplyRecord<'_>) {
    Line(out).reply(seq, at, reply);
    out.push(b'\n');
}

/// The line being written.
struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn u64(&mut self, n: u64) {
        self.raw(itoa::Buffer::new().format(n).as_bytes());
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }

    /// As `crate::millis` writes a duration: whole milliseconds.
    fn millis(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    fn str(&mut self, s: &str) {
        if needs_no_escape(s.as_bytes()) {
            let out = &mut *self.0;
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            self.escaped(s);
        }
    }

    /// A string with something to escape: rare, and kept out of `str` so that the common
    /// case does not pay for serde's call.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, s: &str) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.0, s);
    }

    /// `key` is the separator, the quoted key and the colon: `,"line":`.
    fn key_str(&mut self, key: &[u8], s: &str) {
        self.raw(key);
        self.str(s);
    }

    fn key_u64(&mut self, key: &[u8], n: u64) {
        self.raw(key);
        self.u64(n);
    }

    /// A field serde skips when it is `None`.
    fn optional_str(&mut self, key: &[u8], s: Option<&str>) {
        if let Some(s) = s {
            self.key_str(key, s);
        }
    }

    /// The items of a JSON array of strings, without the brackets.
    fn list<'s>(&mut self, items: impl Iterator<Item = &'s str>) {
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.str(item);
        }
    }

    /// `{"seq":..,"ms":..,"event":"..","host":"..","conn":..`: what every event of a
    /// connection begins with. `kind`: the event's name between its key and the host's,
    /// as `event_key!` writes it.
    fn head(&mut self, event: &Event, kind: &[u8], host: &str, conn: u64) {
        self.head_at(event.seq, event.at, kind, host, conn);
    }

    fn head_at(&mut self, seq: u64, at: Duration, kind: &[u8], host: &str, conn: u64) {
        self.key_u64(b"{\"seq\":", seq);
        self.raw(b",\"ms\":");
        self.millis(at);
        self.key_str(kind, host);
        self.key_u64(b",\"conn\":", conn);
    }

    /// A whole `command` event but its newline.
    fn command_event(&mut self, seq: u64, at: Duration, record: &CommandRecord<'_>) {
        self.head_at(seq, at, event_key!("command"), record.host, record.conn);
        self.key_str(b",\"line\":", record.line);
        self.command(record.command);
        self.raw(b"}");
    }

    /// A command's `verb` and its fields, flattened into the event as serde does.
    fn command(&mut self, command: CommandRef<'_>) {
        match command {
            CommandRef::Ehlo { name } => self.key_str(b",\"verb\":\"EHLO\",\"name\":", name),
            CommandRef::Helo { name } => self.key_str(b",\"verb\":\"HELO\",\"name\":", name),
            CommandRef::Mail { sender, size } => {
                self.key_str(b",\"verb\":\"MAIL\",\"sender\":", sender);
                if let Some(size) = size {
                    self.key_u64(b",\"size\":", size);
                }
            }
            CommandRef::Rcpt { recipient } => {
                self.key_str(b",\"verb\":\"RCPT\",\"recipient\":", recipient);
            }
            CommandRef::Data => self.raw(b",\"verb\":\"DATA\""),
            CommandRef::Bdat { size, last } => {
                self.key_u64(b",\"verb\":\"BDAT\",\"size\":", size);
                self.raw(b",\"last\":");
                self.bool(last);
            }
            CommandRef::Rset => self.raw(b",\"verb\":\"RSET\""),
            CommandRef::Noop => self.raw(b",\"verb\":\"NOOP\""),
            CommandRef::Vrfy => self.raw(b",\"verb\":\"VRFY\""),
            CommandRef::Help => self.raw(b",\"verb\":\"HELP\""),
            CommandRef::Quit => self.raw(b",\"verb\":\"QUIT\""),
            CommandRef::Starttls => self.raw(b",\"verb\":\"STARTTLS\""),
            CommandRef::EndOfData {
                size,
                message_id,
                digest,
            } => {
                self.key_u64(b",\"verb\":\"END-OF-DATA\",\"size\":", size);
                self.optional_str(b",\"message_id\":", message_id);
                self.optional_str(b",\"digest\":", digest);
            }
            CommandRef::Other => self.raw(b",\"verb\":\"OTHER\""),
        }
    }

    /// A whole `reply` event but its newline.
    fn reply(&mut self, seq: u64, at: Duration, record: &ReplyRecord<'_>) {
        self.head_at(seq, at, event_key!("reply"), record.host, record.conn);
        if let Some(stage) = record.stage {
            self.raw(stage_field(stage));
        }
        self.reply_object(record.reply);
        self.optional_str(b",\"rule\":", record.rule.as_deref());
        if let Some(after) = record.retry_after {
            self.raw(b",\"retry_after_ms\":");
            self.millis(after);
        }
        if record.retry_after_told {
            self.raw(b",\"retry_after_told\":true");
        }
        self.raw(b"}");
    }

    fn reply_object(&mut self, reply: &Reply) {
        self.key_u64(b",\"reply\":{\"code\":", u64::from(reply.code));
        self.optional_str(b",\"status\":", reply.status.as_deref());
        self.raw(b",\"lines\":[");
        self.list(reply.lines.iter().map(String::as_str));
        self.raw(b"]}");
    }
}

/// `,"stage":"NAME"`: one constant per stage, written with one copy.
fn stage_field(stage: Stage) -> &'static [u8] {
    macro_rules! field {
        ($name:literal) => {
            concat!(",\"stage\":\"", $name, "\"").as_bytes()
        };
    }
    match stage {
        Stage::Connect => field!("connect"),
        Stage::Ehlo => field!("ehlo"),
        Stage::Starttls => field!("starttls"),
        Stage::Mail => field!("mail"),
        Stage::Rcpt => field!("rcpt"),
        Stage::Data => field!("data"),
        Stage::EndOfData => field!("end-of-data"),
        Stage::Rset => field!("rset"),
        Stage::Quit => field!("quit"),
    }
}

/// Whether JSON takes `bytes` as they are between quotes: no control byte, quote or
/// backslash. Sixteen bytes at a time, the last sixteen overlapping the others, without
/// an early exit inside them: the compiler vectorizes that, and the strings are short.
fn needs_no_escape(bytes: &[u8]) -> bool {
    fn clean(chunk: &[u8]) -> bool {
        !chunk.iter().fold(false, |bad, &b| {
            bad | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    }
    match bytes.last_chunk::<16>() {
        Some(last) => bytes.as_chunks::<16>().0.iter().all(|c| clean(c)) && clean(last),
        // Shorter than a chunk (a host's name, a status, most reply lines): byte by byte,
        // which costs less than copying them into a padded chunk first.
        None => clean(bytes),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::journal::strategies::{duration, kind};

    proptest! {
        /// Every event's line is the bytes serde_json writes for it, strings with quotes,
        /// backslashes, control bytes and non-ASCII text included.
        #[test]
        fn a_line_is_what_serde_writes(at in duration(), seq in any::<u64>(), kind in kind()) {
            let event = Event { seq, at, kind };
            let mut direct = Vec::new();
            write_event(&mut direct, &event, None);
            let mut serde = serde_json::to_vec(&event).unwrap();
            serde.push(b'\n');
            prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&serde));
        }
    }

    /// A reply written from where it is, and the recipients of a shared list, give the
    /// same line as the whole event.
    #[test]
    fn borrowed_parts_write_the_same_line() {
        let reply = Reply::new(450, Some("4.2.0"), "Greylisted \"for\" 5\tminutes");
        let rule: Option<std::sync::Arc<str>> = Some("host mx1 rule 2".into());
        let event = Event {
            seq: 9,
            at: Duration::from_millis(1234),
            kind: EventKind::Reply {
                host: "mx1".into(),
                conn: 3,
                stage: Some(crate::scenario::Stage::Rcpt),
                reply: reply.clone(),
                rule: rule.clone(),
                retry_after: Some(Duration::from_secs(300)),
                retry_after_told: true,
            },
        };
        let (mut whole, mut borrowed) = (Vec::new(), Vec::new());
        write_event(&mut whole, &event, None);
        let host = "mx1".into();
        write_reply(
            &mut borrowed,
            9,
            Duration::from_millis(1234),
            &ReplyRecord {
                host: &host,
                conn: 3,
                stage: Some(crate::scenario::Stage::Rcpt),
                reply: &reply,
                rule,
                retry_after: Some(Duration::from_secs(300)),
                retry_after_told: true,
            },
        );
        assert_eq!(
            String::from_utf8_lossy(&borrowed),
            String::from_utf8_lossy(&whole)
        );

        let list = vec!["a@y.test".to_string(), "b\"@y.test".to_string()];
        let accepted = |recipients| Event {
            seq: 10,
            at: Duration::ZERO,
            kind: EventKind::MessageAccepted {
                host: "mx1".into(),
                conn: 3,
                id: 1,
                sender: String::new(),
                recipients,
                size: 0,
                message_id: None,
                subject: Some("ü".into()),
                tls: true,
            },
        };
        let (mut own, mut shared) = (Vec::new(), Vec::new());
        write_event(&mut own, &accepted(list.clone()), None);
        write_event(
            &mut shared,
            &accepted(Vec::new()),
            Some(&Recipients::new(&list)),
        );
        assert_eq!(
            String::from_utf8_lossy(&shared),
            String::from_utf8_lossy(&own)
        );
        assert!(
            String::from_utf8_lossy(&own).contains(r#""recipients":["a@y.test","b\"@y.test"]"#),
            "{}",
            String::from_utf8_lossy(&own)
        );
    }

    /// Each stage's field names it as serde does.
    #[test]
    fn a_stage_field_is_its_name() {
        for stage in Stage::ALL {
            let serde = serde_json::to_string(&stage).unwrap();
            assert_eq!(
                String::from_utf8_lossy(stage_field(stage)),
                format!(",\"stage\":{serde}")
            );
        }
    }

    #[test]
    fn only_quotes_backslashes_and_control_bytes_need_escapes() {
        assert!(needs_no_escape(b"RCPT TO:<a@b.test> \x7f \xc3\xbc"));
        for bad in [&b"a\"b"[..], b"a\\b", b"\x00", b"tab\there", b"\x1f"] {
            assert!(!needs_no_escape(bad), "{bad:?}");
        }
        // Wherever the byte is, in strings of every length around the chunks' size.
        for len in 1..70 {
            for at in 0..len {
                let mut text = vec![b'x'; len];
                assert!(needs_no_escape(&text));
                text[at] = b'"';
                assert!(!needs_no_escape(&text), "{len} {at}");
            }
        }
    }
}
