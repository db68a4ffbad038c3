//! The promises checked of every journal a fuzz input produces or feeds.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use mxfarm::journal::file::{parse, write_line};
use mxfarm::render::{self, Granularity};
use mxfarm::report::report_journal;
use mxfarm::transcript::Transcript;
use mxfarm::{Event, EventKind};

const GRANULARITIES: [Granularity; 4] = [
    Granularity::Exact,
    Granularity::Seconds,
    Granularity::Minutes,
    Granularity::None,
];

/// What must hold of the journal of a farm the fuzzer talked to, given what each of its
/// connections received:
///
/// - no event is missing (a fuzz input is far below `[journal] max-events`);
/// - every connection opened was closed, and journalled as closed;
/// - with the farm's own end-of-data replies, every `250 ... queued as N` a client saw is
///   a `message-accepted` event with id N (the README: a 250 is journalled first);
/// - the journal file reads back exactly what was written, and no view panics.
pub fn farm_journal(events: &[Event], replies: &[Vec<u8>], builtin_queued_replies: bool) {
    if let Some(missing) = mxfarm::journal::gaps(events) {
        panic!("the farm's journal has a gap: {missing}");
    }
    let mut open = BTreeSet::new();
    let mut accepted = HashSet::new();
    for event in events {
        match &event.kind {
            EventKind::ConnectionOpened { host, conn, .. } => {
                assert!(
                    open.insert((host.clone(), *conn)),
                    "conn {conn} opened twice"
                );
            }
            EventKind::ConnectionClosed { host, conn, .. } => {
                assert!(
                    open.remove(&(host.clone(), *conn)),
                    "conn {conn} closed but not open"
                );
            }
            EventKind::MessageAccepted { id, .. } => {
                accepted.insert(*id);
            }
            _ => {}
        }
    }
    assert!(
        open.is_empty(),
        "connections never journalled as closed: {open:?}"
    );
    for (i, bytes) in replies.iter().enumerate() {
        replies_are_smtp(i, bytes);
    }
    if builtin_queued_replies {
        for (i, bytes) in replies.iter().enumerate() {
            for id in queued_ids(bytes) {
                assert!(
                    accepted.contains(&id),
                    "connection {i} saw `queued as {id}`, which the journal does not hold"
                );
            }
        }
    }
    file_round_trip(events);
    views(events);
}

/// Whatever the client sent, what the farm sends in clear is SMTP replies (RFC 5321
/// 4.2): lines of at most 512 octets with their CRLF, each a code and a space or a
/// hyphen, every line of a multi-line reply with the same code, the last one with a
/// space. After the 220 to STARTTLS come TLS records, which are not checked.
pub fn replies_are_smtp(conn: usize, bytes: &[u8]) {
    let mut code: Option<&[u8]> = None;
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            panic!("connection {conn}: a reply line without its CRLF: {rest:?}");
        };
        let line = &rest[..end];
        rest = &rest[end + 2..];
        let shown = String::from_utf8_lossy(line);
        assert!(
            line.len() + 2 <= 512,
            "connection {conn}: a reply line of {} octets",
            line.len() + 2
        );
        let well_formed = line.len() >= 4
            && (b'2'..=b'5').contains(&line[0])
            && line[1..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-')
            && !line.contains(&b'\r')
            && !line.contains(&b'\n');
        assert!(
            well_formed,
            "connection {conn}: not a reply line: {shown:?}"
        );
        if let Some(code) = code {
            assert_eq!(
                code,
                &line[..3],
                "connection {conn}: a multi-line reply changed its code: {shown:?}"
            );
        }
        code = (line[3] == b'-').then(|| &line[..3]);
        if code.is_none() && line.starts_with(b"220 ") && shown.contains("TLS") {
            return;
        }
    }
    assert!(
        code.is_none(),
        "connection {conn}: a multi-line reply without its last line"
    );
}

/// The ids of the `250 ... queued as N` replies in what a client received.
pub fn queued_ids(bytes: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter(|line| line.starts_with("250 "))
        .filter_map(|line| {
            let (_, rest) = line.split_once("queued as ")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The journal file holds every event, and reads back as the same lines: the farm never
/// writes a journal that `mxfarm transcript` or `report` would refuse.
pub fn file_round_trip(events: &[Event]) {
    let mut text = Vec::new();
    for event in events {
        write_line(&mut text, event);
    }
    let text = String::from_utf8(text).expect("journal lines are UTF-8");
    let parsed = parse(Path::new("fuzz.jsonl"), &text)
        .unwrap_or_else(|e| panic!("a journal the farm writes does not read back: {e}"));
    assert_eq!(parsed.torn, None, "a whole journal read as torn");
    assert_eq!(
        parsed.events.len(),
        events.len(),
        "the journal file lost events"
    );
    let mut again = Vec::new();
    for event in &parsed.events {
        write_line(&mut again, event);
    }
    assert!(
        again == text.as_bytes(),
        "a journal file read back is not the same when written again"
    );
}

/// Every view over `events` in every form; none may panic, whatever the events.
pub fn views(events: &[Event]) {
    let deliveries = mxfarm::deliveries::deliveries(events);
    for delivery in &deliveries {
        let _ = (delivery.delivered(), delivery.times_delivered());
    }
    let transcript = Transcript::from_events(events);
    for granularity in GRANULARITIES {
        let _ = transcript.render(granularity);
        let _ = render::journal(events, granularity);
    }
    let _ = transcript.to_json();
    let report = report_journal(events);
    let _ = report.render();
    let _ = report.to_json();
    let _ = report.problems();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_what_follows_starttls() {
        replies_are_smtp(0, b"220 mx ESMTP\r\n250-mx\r\n250 PIPELINING\r\n");
        replies_are_smtp(0, b"220 2.0.0 Ready to start TLS\r\n\x16\x03\x03 binary");
        assert_eq!(queued_ids(b"250 2.0.0 Ok: queued as 17\r\n"), [17]);
    }

    #[test]
    #[should_panic(expected = "not a reply line")]
    fn a_line_without_a_code_is_not_a_reply() {
        replies_are_smtp(0, b"220 mx\r\nhello\r\n");
    }

    #[test]
    #[should_panic(expected = "changed its code")]
    fn a_multi_line_reply_keeps_its_code() {
        replies_are_smtp(0, b"250-mx\r\n251 ok\r\n");
    }

    #[test]
    #[should_panic(expected = "without its CRLF")]
    fn a_reply_ends_with_crlf() {
        replies_are_smtp(0, b"250 ok\n");
    }
}
