//! The journal: every connection, command, reply and accepted message, in order.
//!
//! It is the one source of truth for the logs, the deliveries, transcripts and reports,
//! and the journal file (DESIGN principle 6). Each [`Event`] carries a farm-wide sequence
//! number and the farm time at which it happened. The journal is bounded; readers go
//! through it with a [`Cursor`], which never skips an event without saying so, and any
//! list of events tells by the gaps in its sequence numbers whether events are missing
//! ([`gaps`]).
//!
//! - [`event`]: the event types, which are also the JSON-lines format of the file.
//! - `store`: the bounded journal and its cursors.
//! - `compact`: how the store keeps events in memory, a few dozen bytes each.
//! - [`file`](mod@file): reading the journal file, and its line format.
//! - `line`: an event's line in the file, written directly for the frequent kinds.
//! - `sink`: writing the journal file, every event in order, before the 250s.
//! - [`target`]: whether a journal file may be written at a path.

mod compact;
pub mod event;
pub mod file;
mod line;
pub(crate) mod sink;
pub(crate) mod store;
#[cfg(test)]
mod strategies;
pub mod target;

pub(crate) use compact::{CommandRecord, Recipients, ReplyRecord};
pub use event::{
    ClosedBy, Command, DnsReply, DnsTransport, DomainRecord, Event, EventKind, TlsOutcome,
    sanitize_line,
};
pub(crate) use event::{CommandRef, sanitized};
pub(crate) use sink::Sink;
pub use sink::{JournalFileOptions, Unwritable};
pub(crate) use store::Journal;
pub use store::{Cursor, Read};

use serde::Serialize;

/// Events missing from a list of events: the journal was full and dropped them, or a file
/// writer fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// How many events are missing in all.
    pub events: u64,
    /// The sequence number of the first event after the first gap.
    pub before_seq: u64,
}

impl std::fmt::Display for Missing {
    /// The first line of a view over a journal with events missing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "INCOMPLETE: {} event{} missing from the journal, the first before event {} \
             (the farm's journal was full: raise [journal] max-events; or, for a file \
             rotated by --journal-max-bytes, read the older file too: FILE.1 FILE); \
             these stories may lack attempts",
            self.events,
            if self.events == 1 { " is" } else { "s are" },
            self.before_seq
        )
    }
}

/// What is missing from `events` (a journal's events in sequence order), judged by the
/// sequence numbers, which start at 1 and have no gaps in a whole journal.
pub fn gaps(events: &[Event]) -> Option<Missing> {
    let mut expected = 1;
    let mut missing = None::<Missing>;
    for event in events {
        // What a reset of the journal cleared is not missing, nor anything before it:
        // the views read from the reset on (the layout events kept before it included).
        if matches!(event.kind, EventKind::Reset { journal: true, .. }) {
            missing = None;
            expected = event.seq;
        }
        if event.seq > expected {
            let gap = event.seq - expected;
            match &mut missing {
                Some(m) => m.events += gap,
                None => {
                    missing = Some(Missing {
                        events: gap,
                        before_seq: event.seq,
                    })
                }
            }
        }
        expected = expected.max(event.seq.saturating_add(1));
    }
    missing
}

/// The events the views read: after the last reset of the journal
/// ([`EventKind::Reset`] with `journal`), with the `farm-started` and `scenario-replaced`
/// events before it, which say what the farm plays. A journal file keeps what came before a reset; a farm's
/// memory does not; both read the same.
pub fn since_last_reset(events: &[Event]) -> std::borrow::Cow<'_, [Event]> {
    let last_reset = events
        .iter()
        .rposition(|e| matches!(e.kind, EventKind::Reset { journal: true, .. }));
    match last_reset {
        None => std::borrow::Cow::Borrowed(events),
        Some(at) => {
            let header = events[..at]
                .iter()
                .filter(|e| e.kind.describes_the_farm())
                .cloned();
            std::borrow::Cow::Owned(header.chain(events[at..].iter().cloned()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seq: u64) -> Event {
        Event {
            seq,
            at: Duration::ZERO,
            kind: EventKind::ConnectionOpened {
                host: "mx1".into(),
                conn: seq,
                client: "127.0.0.1:1".parse().unwrap(),
            },
        }
    }

    /// A journal file holds what came before a reset; the views read from the reset on,
    /// with what the farm plays, as the farm's memory does.
    #[test]
    fn views_read_from_the_last_reset_of_the_journal() {
        let started = Event {
            seq: 1,
            at: Duration::ZERO,
            kind: EventKind::FarmStarted {
                scenario: "s".into(),
                domains: Vec::new(),
                hostnames: Vec::new(),
            },
        };
        let reset = |seq, journal| Event {
            seq,
            at: Duration::ZERO,
            kind: EventKind::Reset {
                policy: true,
                journal,
                messages: false,
            },
        };
        let events = vec![
            started.clone(),
            at(2),
            reset(3, true),
            at(4),
            reset(5, false),
            at(6),
        ];
        let seqs: Vec<u64> = since_last_reset(&events).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3, 4, 5, 6]);
        assert_eq!(
            gaps(&since_last_reset(&events)),
            None,
            "what a reset cleared is no gap"
        );
        let without = vec![started, at(2)];
        assert_eq!(since_last_reset(&without).len(), 2);
    }

    #[test]
    fn gaps_count_every_missing_sequence_number() {
        let events = |seqs: &[u64]| seqs.iter().map(|&s| at(s)).collect::<Vec<_>>();
        assert_eq!(gaps(&events(&[1, 2, 3])), None);
        assert_eq!(gaps(&[]), None);
        assert_eq!(
            gaps(&events(&[1, 5, 6, 9])),
            Some(Missing {
                events: 5,
                before_seq: 5
            })
        );
        assert_eq!(
            gaps(&events(&[3, 4])),
            Some(Missing {
                events: 2,
                before_seq: 3
            })
        );
    }
}
