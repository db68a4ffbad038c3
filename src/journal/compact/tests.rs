//! The compact journal read back: every kind, every time, every reply met again.

use proptest::prelude::*;

use super::*;
use crate::journal::event::Command;
use crate::journal::strategies::{duration, kind};

/// Times as the journal stamps them: microseconds apart, now and then seconds, once in a
/// while earlier than the last (which the segment must keep whole) or huge.
fn times(count: usize) -> impl Strategy<Value = Vec<Duration>> {
    proptest::collection::vec(
        prop_oneof![
            8 => (0..20_000u64).prop_map(|n| (true, Duration::from_nanos(n))),
            2 => (0..5_000u64).prop_map(|n| (true, Duration::from_millis(n))),
            1 => duration().prop_map(|d| (false, d)),
        ],
        count,
    )
    .prop_map(|steps| {
        let mut at = Duration::from_secs(1);
        steps
            .into_iter()
            .map(|(step, d)| {
                at = if step { at.saturating_add(d) } else { d };
                at
            })
            .collect()
    })
}

/// Reads every event of `segment` both ways: one by one, and in order from `from` on.
fn read_all(segment: &Segment, names: &Names, from: usize) -> (Vec<Event>, Vec<Event>) {
    let one_by_one = (0..segment.len())
        .filter_map(|i| segment.get(names, i))
        .collect();
    let mut in_order = Vec::new();
    segment.read(names, from..segment.len(), |_, e| in_order.extend(e));
    (one_by_one, in_order)
}

proptest! {
    /// Events stamped microseconds apart, or not, are read back with their times, one by
    /// one or in order from anywhere.
    #[test]
    fn every_time_reads_back_as_it_was(
        (times, kinds, from) in (1..120usize).prop_flat_map(|n| (
            times(n),
            proptest::collection::vec(kind(), n),
            0..n,
        )),
    ) {
        let mut names = Names::default();
        let mut segment = Segment::new(1, times.len(), 0);
        for (at, kind) in times.iter().zip(&kinds) {
            segment.push(&mut names, *at, kind.clone(), None);
        }
        let expected: Vec<Event> = times
            .iter()
            .zip(kinds)
            .enumerate()
            .map(|(i, (at, kind))| Event { seq: 1 + i as u64, at: *at, kind })
            .collect();
        let (one_by_one, in_order) = read_all(&segment, &names, from);
        prop_assert_eq!(&one_by_one, &expected);
        prop_assert_eq!(&in_order[..], &expected[from..]);
    }

    /// Replies sent again from where a host keeps them are kept once per segment, and
    /// replies built afresh, maybe where another was, are never taken for one kept.
    #[test]
    fn replies_met_again_read_back_as_they_were(
        picks in proptest::collection::vec(
            (0..6usize, 200..600u16, r#"[A-Za-z ]{0,6}"#), 1..80),
    ) {
        let kept = [
            Reply::new(250, Some("2.1.5"), "Ok"),
            Reply::new(250, Some("2.1.0"), "Ok"),
            Reply::new(250, Some("2.1.5"), "Ok"),
            Reply {
                code: 250,
                status: None,
                lines: vec!["mx1.test".into(), "PIPELINING".into(), String::new()],
            },
        ];
        let host: Arc<str> = "mx1".into();
        let mut names = Names::default();
        let mut segment = Segment::new(1, picks.len(), 0);
        let mut expected = Vec::new();
        for (i, (pick, code, text)) in picks.iter().enumerate() {
            let fresh = Box::new(Reply::new(*code, None, text.clone()));
            let reply = kept.get(*pick).unwrap_or(&fresh);
            let at = Duration::from_micros(i as u64 * 7);
            segment.push_reply(
                &mut names,
                at,
                &ReplyRecord {
                    host: &host,
                    conn: 3,
                    stage: Some(Stage::Rcpt),
                    reply,
                    rule: None,
                    retry_after: None,
                    retry_after_told: false,
                },
            );
            expected.push(Event {
                seq: 1 + i as u64,
                at,
                kind: EventKind::Reply {
                    host: host.clone(),
                    conn: 3,
                    stage: Some(Stage::Rcpt),
                    reply: reply.clone(),
                    rule: None,
                    retry_after: None,
                    retry_after_told: false,
                },
            });
        }
        let (one_by_one, in_order) = read_all(&segment, &names, 0);
        prop_assert_eq!(&one_by_one, &expected);
        prop_assert_eq!(&in_order, &expected);
    }

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

/// What a recipient's two events take once the segment has met its reply: the figure
/// BENCHMARKS.md explains. A RCPT line the command spells out is its address and ten
/// bytes; the `250 2.1.5 Ok` after it, ten.
#[test]
fn a_recipient_takes_a_score_of_bytes() {
    let mut names = Names::default();
    let mut segment = Segment::new(1, 6, 0);
    let host: Arc<str> = "mx1".into();
    let ok = Reply::new(250, Some("2.1.5"), "Ok");
    let mut at = Duration::from_millis(1500);
    let mut sizes = Vec::new();
    for n in 0..3 {
        let recipient = format!("r{n}@aol.test");
        at += Duration::from_micros(20);
        let before = segment.used_bytes();
        segment.push(
            &mut names,
            at,
            EventKind::Command {
                host: host.clone(),
                conn: 1234,
                line: format!("RCPT TO:<{recipient}>"),
                command: Command::Rcpt { recipient },
            },
            None,
        );
        at += Duration::from_micros(5);
        let between = segment.used_bytes();
        segment.push_reply(
            &mut names,
            at,
            &ReplyRecord {
                host: &host,
                conn: 1234,
                stage: Some(Stage::Rcpt),
                reply: &ok,
                rule: None,
                retry_after: None,
                retry_after_told: false,
            },
        );
        sizes.push((between - before, segment.used_bytes() - between));
    }
    // The first command holds a whole time, the first reply its text.
    assert_eq!(sizes[0], (25, 21));
    assert_eq!(sizes[2], (21, 10));
    let read: Vec<Event> = (0..6).filter_map(|i| segment.get(&names, i)).collect();
    assert_eq!(read.len(), 6);
    assert_eq!(read[5].at, at);
}
