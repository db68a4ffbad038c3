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
