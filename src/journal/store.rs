//! The bounded, append-only journal of one farm, and cursors that read it in order.
//!
//! Every event gets the next sequence number and a farm time that never goes backwards
//! against the sequence: both are taken under the one lock that appends, so a busy farm
//! cannot journal an event "earlier" than the one before it.
//!
//! When the journal holds `max_events`, it drops its oldest tenth at once (so that dropping
//! is rare, not one event per append). The `farm-started` event is never dropped: it says
//! which MX records the farm serves, which every view of the journal needs. Nothing is
//! put in the place of what was dropped; a reader sees a gap in the sequence numbers, and a
//! [`Cursor`] is told exactly how many events it missed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::compact::{CommandRecord, Names, Recipients, ReplyRecord, Segment};
use super::event::{Event, EventKind};
use super::line;
use super::sink::{Sink, Unwritable};
use crate::clock::Clock;

/// A segment takes no more events once it holds this many bytes (a few events of
/// megabytes each can make it): its ends are 32-bit offsets.
const MAX_SEGMENT_BYTES: usize = 1 << 30;
/// What a new segment reserves ahead at most, in events and bytes: a journal of
/// `max-events = 1000000000000` reserves as one of 10,000,000 would, and grows from there.
const MAX_RESERVED_EVENTS: usize = 1 << 20;
const MAX_RESERVED_BYTES: usize = 64 << 20;

/// The fewest events a journal keeps, whatever the scenario asks for.
pub(crate) const MIN_EVENTS: usize = 16;

/// How far (in bytes of JSON lines) the journal file may fall behind before sessions
/// wait for it; a batch of this size is one write.
pub(crate) const MAX_FILE_BACKLOG: usize = 8 * 1024 * 1024;

/// The bounded event log of one farm.
#[derive(Debug)]
pub(crate) struct Journal {
    clock: Clock,
    state: Mutex<State>,
    /// The sequence number of the newest event, for readers waiting for more; and
    /// whether the journal is closed (no more events will come).
    appended: watch::Sender<(u64, bool)>,
    /// The journal file, when the farm writes one: it gets every event, in order, as it
    /// is recorded, whatever the bound above drops.
    sink: Option<Arc<Sink>>,
}

#[derive(Debug)]
struct State {
    /// The `farm-started` event, kept however full the journal gets.
    header: Option<Event>,
    /// The latest `scenario-replaced` event, also kept (a copy) after it is dropped:
    /// views need what the farm plays now.
    layout: Option<Event>,
    /// Every other event still held, encoded ([`super::compact`]), in segments of
    /// `segment_events` consecutive events: the oldest tenth is one segment.
    segments: VecDeque<Segment>,
    /// The host and rule names the segments refer to.
    names: Names,
    /// How many events the segments hold.
    held: usize,
    segment_events: usize,
    next_seq: u64,
    last_at: Duration,
    max_events: usize,
    dropped: u64,
    /// Events before this sequence number (but the header) were cleared by a reset, not
    /// dropped: readers are not told they missed them.
    cleared_before: u64,
}

impl State {
    /// Keeps `event`, the one after the newest held.
    fn push(&mut self, event: Event, shared: Option<&Arc<Recipients>>) {
        self.open_segment_for(event.seq);
        if let Some(segment) = self.segments.back_mut() {
            segment.push(&mut self.names, event.at, event.kind, shared);
            self.held += 1;
        }
    }

    /// Keeps a command, the event after the newest held.
    fn push_command(&mut self, seq: u64, at: Duration, command: &CommandRecord<'_>) {
        self.open_segment_for(seq);
        if let Some(segment) = self.segments.back_mut() {
            segment.push_command(&mut self.names, at, command);
            self.held += 1;
        }
    }

    /// Keeps a reply, the event after the newest held.
    fn push_reply(&mut self, seq: u64, at: Duration, reply: &ReplyRecord<'_>) {
        self.open_segment_for(seq);
        if let Some(segment) = self.segments.back_mut() {
            segment.push_reply(&mut self.names, at, reply);
            self.held += 1;
        }
    }

    /// Makes the last segment one with room for event `seq`: a new one when it is full.
    fn open_segment_for(&mut self, seq: u64) {
        // Full by count, or by bytes: a segment's ends are 32-bit offsets, and a client
        // can send events of megabytes (a Subject is kept whole).
        let full = self.segments.back().is_none_or(|last| {
            last.len() >= self.segment_events || last.used_bytes() >= MAX_SEGMENT_BYTES
        });
        if full {
            // A new segment is sized like the last one, which is what events take here;
            // what is reserved ahead is bounded, whatever `max-events` says.
            let events = self.segment_events.min(MAX_RESERVED_EVENTS);
            let bytes = self
                .segments
                .back_mut()
                .map_or(64 * events, |last| {
                    last.seal();
                    last.used_bytes() + last.used_bytes() / 8
                })
                .min(MAX_RESERVED_BYTES);
            self.segments.push_back(Segment::new(seq, events, bytes));
        }
    }

    /// When the journal holds `max_events`, drops its oldest segment (a tenth) and gives
    /// it back, to be freed once the lock is let go: other sessions need not wait for it.
    fn make_room(&mut self) -> Option<Segment> {
        let held = self.held + usize::from(self.header.is_some());
        if held < self.max_events {
            return None;
        }
        let oldest = self.segments.pop_front()?;
        self.held -= oldest.len();
        self.dropped += oldest.len() as u64;
        Some(oldest)
    }

    /// The next sequence number and its time. Read under the lock: a later sequence
    /// number never gets an earlier time.
    fn stamp(&mut self, clock: &Clock) -> (u64, Duration) {
        self.stamp_at(clock.now())
    }

    /// The same for an event that happened at `at`, a moment ago by the same clock; never
    /// before the event recorded last.
    fn stamp_at(&mut self, at: Duration) -> (u64, Duration) {
        let at = at.max(self.last_at);
        self.last_at = at;
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, at)
    }

    /// Up to `limit` events held, from the `skip`th on.
    fn read(&self, skip: usize, limit: usize, into: &mut Vec<Event>) {
        let mut skip = skip;
        let mut left = limit;
        for segment in &self.segments {
            if left == 0 {
                break;
            }
            if skip >= segment.len() {
                skip -= segment.len();
                continue;
            }
            let end = segment.len().min(skip.saturating_add(left));
            segment.read(&self.names, skip..end, |index, event| match event {
                Some(event) => into.push(event),
                None => tracing::error!(
                    seq = segment.first_seq() + index as u64,
                    "mxfarm bug: a journal event could not be decoded"
                ),
            });
            left -= end - skip;
            skip = 0;
        }
    }

    /// The heap bytes of the events held, and how many they are.
    fn footprint(&self) -> (usize, usize) {
        let bytes = self.segments.iter().map(Segment::heap_bytes).sum();
        (bytes, self.held)
    }
}

/// Events read from a journal after some sequence number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    /// Events after the cursor that were dropped before they could be read.
    pub missed: u64,
    /// The first event held but the kept ones (`farm-started`, the latest layout): what
    /// was dropped lies before it.
    pub first_held: u64,
    /// The events, in sequence order.
    pub events: Vec<Event>,
}

impl Journal {
    /// A journal keeping at most `max_events` events (at least [`MIN_EVENTS`]).
    #[cfg(test)]
    pub(crate) fn new(clock: Clock, max_events: usize) -> Self {
        Self::with_sink(clock, max_events, None)
    }

    /// A journal that also writes every event to `sink`'s file.
    pub(crate) fn with_sink(clock: Clock, max_events: usize, sink: Option<Arc<Sink>>) -> Self {
        let (appended, _) = watch::channel((0, false));
        Self {
            clock,
            state: Mutex::new(State {
                header: None,
                layout: None,
                segments: VecDeque::new(),
                names: Names::default(),
                held: 0,
                segment_events: (max_events.max(MIN_EVENTS) / 10).max(1),
                next_seq: 1,
                last_at: Duration::ZERO,
                max_events: max_events.max(MIN_EVENTS),
                dropped: 0,
                cleared_before: 0,
            }),
            appended,
            sink,
        }
    }

    /// Appends an event stamped with the current farm time; returns its sequence number.
    pub(crate) fn record(&self, kind: EventKind) -> u64 {
        let state = self.state.lock();
        self.append(state, kind)
    }

    /// Forgets every event held but the `farm-started` header, and records `reset` (a
    /// [`EventKind::Reset`]) in the same step, so no event falls between the two. The
    /// journal file keeps everything; readers are not told of the cleared events as
    /// missed ones.
    pub(crate) fn clear(&self, reset: EventKind) -> u64 {
        let mut state = self.state.lock();
        state.segments.clear();
        state.held = 0;
        state.cleared_before = state.next_seq;
        self.append(state, reset)
    }

    /// Appends a `message-accepted` event whose recipients are `recipients`, which the
    /// capture keeps too: the journal shares the list instead of keeping a copy. The
    /// event's own list may be left empty.
    pub(crate) fn record_accepted(&self, kind: EventKind, recipients: &Arc<Recipients>) -> u64 {
        let state = self.state.lock();
        self.append_sharing(state, kind, Some(recipients))
    }

    /// Appends a reply event without copying the reply: it is encoded, and written to
    /// the journal file's line, from where it is.
    pub(crate) fn record_reply(&self, reply: ReplyRecord<'_>) -> u64 {
        let mut state = self.state.lock();
        let (seq, at) = state.stamp(&self.clock);
        if let Some(sink) = &self.sink {
            // Under the lock: the file's lines are in sequence order.
            sink.push(seq, false, |out| line::write_reply(out, seq, at, &reply));
        }
        let dropped = state.make_room();
        state.push_reply(seq, at, &reply);
        drop(state);
        drop(dropped);
        self.appended_up_to(seq);
        seq
    }

    /// Appends a command event that happened at farm time `at`, which the caller (a
    /// session, when the command arrived) has just read for its own use: one reading of
    /// the clock instead of two, and an event never stamped before the one recorded
    /// last. Nothing of the command is copied: its line and parts are encoded, and
    /// written to the journal file's line, from where they are.
    pub(crate) fn record_command(&self, command: &CommandRecord<'_>, at: Duration) -> u64 {
        let mut state = self.state.lock();
        let (seq, at) = state.stamp_at(at);
        if let Some(sink) = &self.sink {
            // Under the lock: the file's lines are in sequence order.
            sink.push(seq, false, |out| line::write_command(out, seq, at, command));
        }
        let dropped = state.make_room();
        state.push_command(seq, at, command);
        drop(state);
        drop(dropped);
        self.appended_up_to(seq);
        seq
    }

    fn appended_up_to(&self, seq: u64) {
        if self.appended.receiver_count() > 0 {
            self.appended.send_modify(|(last, _)| *last = seq);
        }
    }

    fn append(&self, state: parking_lot::MutexGuard<'_, State>, kind: EventKind) -> u64 {
        self.append_sharing(state, kind, None)
    }

    fn append_sharing(
        &self,
        mut state: parking_lot::MutexGuard<'_, State>,
        kind: EventKind,
        shared: Option<&Arc<Recipients>>,
    ) -> u64 {
        let (seq, at) = state.stamp(&self.clock);
        let mut event = Event { seq, at, kind };
        let header = state.header.is_none() && matches!(event.kind, EventKind::FarmStarted { .. });
        if let Some(sink) = &self.sink {
            // Under the lock: the file's lines are in sequence order.
            sink.push(seq, header, |out| {
                line::write_event(out, &event, shared.map(|list| &**list));
            });
        }
        if let (Some(_), EventKind::MessageAccepted { recipients, .. }) = (shared, &mut event.kind)
        {
            // Kept once, in the shared list.
            recipients.clear();
        }
        if matches!(event.kind, EventKind::ScenarioReplaced { .. }) {
            state.layout = Some(event.clone());
        }
        let mut dropped = None;
        if header {
            state.header = Some(event);
        } else {
            dropped = state.make_room();
            state.push(event, shared);
        }
        drop(state);
        drop(dropped);
        self.appended_up_to(seq);
        seq
    }

    /// A copy of every event still held, oldest first.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.after(0, usize::MAX).events
    }

    /// Up to `limit` events with a sequence number above `after`, and how many such events
    /// were dropped before they could be read.
    pub(crate) fn after(&self, after: u64, limit: usize) -> Page {
        let state = self.state.lock();
        let mut events = Vec::new();
        if let Some(header) = &state.header
            && header.seq > after
            && limit > 0
        {
            events.push(header.clone());
        }
        let first = state
            .segments
            .front()
            .map_or(state.next_seq, Segment::first_seq);
        // The latest layout, when it is no longer held: it comes after the header, and
        // before every event held, as its sequence number says.
        let layout = state
            .layout
            .as_ref()
            .filter(|l| l.seq > after && l.seq < first && events.len() < limit);
        if let Some(layout) = layout {
            events.push(layout.clone());
        }
        // Dropped events are those between the header (or the last reset) and the first
        // event held, but the layout.
        let dropped_from = state
            .header
            .as_ref()
            .map_or(1, |h| h.seq + 1)
            .max(state.cleared_before);
        let range = (after + 1).max(dropped_from);
        let missed = first
            .saturating_sub(range)
            .saturating_sub(u64::from(layout.is_some_and(|l| l.seq >= range)));
        let skip = usize::try_from(after.saturating_sub(first - 1)).unwrap_or(usize::MAX);
        let room = limit - events.len();
        state.read(skip, room, &mut events);
        Page {
            missed,
            first_held: first,
            events,
        }
    }

    /// How many events were dropped because the journal was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    /// What the events held take on the heap, in bytes, and how many they are (the
    /// header and the layout, kept apart, are not counted): what BENCHMARKS.md reports
    /// as bytes per event.
    pub(crate) fn footprint(&self) -> (usize, usize) {
        self.state.lock().footprint()
    }

    /// The sequence number of the newest event (0 before the first).
    pub(crate) fn last_seq(&self) -> u64 {
        self.state.lock().next_seq - 1
    }

    /// Says that no more events will come: readers waiting at the end return `None`,
    /// and the file writer writes what is left, then ends.
    pub(crate) fn close(&self) {
        self.appended.send_modify(|(_, closed)| *closed = true);
        if let Some(sink) = &self.sink {
            sink.close();
        }
    }

    /// Waits until the event `seq` is in the journal file (at once without a file), or
    /// says why it will never be: what a 250 after the final dot waits for.
    pub(crate) async fn written(&self, seq: u64) -> Result<(), Unwritable> {
        match &self.sink {
            Some(sink) => sink.written(seq).await,
            None => Ok(()),
        }
    }

    /// Why the journal file cannot be written, once a write to it failed.
    pub(crate) fn file_failure(&self) -> Option<Arc<str>> {
        self.sink.as_ref().and_then(|sink| sink.failure())
    }

    /// Waits, when the journal file is more than [`MAX_FILE_BACKLOG`] behind, until it
    /// has caught up with what is recorded now: sessions call it before reading more of
    /// their client, so a disk slower than the clients slows the clients down instead of
    /// growing the farm's memory.
    pub(crate) async fn keep_up_with_file(&self) {
        if let Some(sink) = &self.sink
            && sink.backlog() > MAX_FILE_BACKLOG
        {
            let _ = sink.written(self.last_seq()).await;
        }
    }

    /// Waits until the journal file has everything recorded before [`Journal::close`].
    pub(crate) async fn file_finished(&self) {
        if let Some(sink) = &self.sink {
            sink.finished().await;
        }
    }
}

/// A reader of a journal that goes through its events in order, waiting for new ones, and
/// never skips one silently: events dropped before it read them are counted in
/// [`Read::Missed`].
#[derive(Debug)]
pub struct Cursor {
    journal: Arc<Journal>,
    after: u64,
    changes: watch::Receiver<(u64, bool)>,
    ready: VecDeque<Read>,
}

/// What a [`Cursor`] read next.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Event(Event),
    /// This many events were dropped from the journal before the cursor reached them.
    Missed(u64),
}

impl Cursor {
    /// A cursor at the events after sequence number `after` (0: from the first).
    pub(crate) fn new(journal: Arc<Journal>, after: u64) -> Self {
        // Subscribed before the first read, so no append falls between the two.
        let changes = journal.appended.subscribe();
        Self {
            journal,
            after,
            changes,
            ready: VecDeque::new(),
        }
    }

    /// The next event, or how many were missed; waits for one to be recorded. `None`
    /// once the journal is closed and everything in it was read.
    pub async fn next(&mut self) -> Option<Read> {
        loop {
            self.changes.mark_unchanged();
            if let Some(next) = self.try_next() {
                return Some(next);
            }
            if self.changes.borrow().1 {
                return None;
            }
            if self.changes.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The next event, or how many were missed, if one is there now.
    pub fn try_next(&mut self) -> Option<Read> {
        if self.ready.is_empty() {
            // What was dropped lies after the header and before the other events; what a
            // reset cleared is not missed.
            let page = self.journal.after(self.after, 1024);
            let mut missed = (page.missed > 0).then_some(page.missed);
            for event in page.events {
                if event.seq >= page.first_held
                    && let Some(n) = missed.take()
                {
                    self.ready.push_back(Read::Missed(n));
                }
                self.ready.push_back(Read::Event(event));
            }
            if let Some(n) = missed {
                self.ready.push_back(Read::Missed(n));
            }
        }
        let next = self.ready.pop_front()?;
        if let Read::Event(event) = &next {
            self.after = event.seq;
        }
        Some(next)
    }

    /// The sequence number of the last event read (or the starting point).
    pub fn position(&self) -> u64 {
        self.after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::event::DomainRecord;

    fn opened(conn: u64) -> EventKind {
        EventKind::ConnectionOpened {
            host: "mx1".into(),
            conn,
            client: "127.0.0.1:1000".parse().unwrap(),
        }
    }

    fn started() -> EventKind {
        EventKind::FarmStarted {
            scenario: "t".into(),
            domains: vec![DomainRecord {
                name: "a.test".into(),
                mx: vec![("mx1".into(), 10)],
            }],
            hostnames: Vec::new(),
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// A journal that may keep a million million events reserves no more ahead than a
    /// small one would (it reserved a tenth of `max-events` per segment, terabytes here).
    #[test]
    fn a_huge_bound_reserves_little() {
        let journal = Journal::new(Clock::new(), 1_000_000_000_000);
        journal.record(started());
        for conn in 1..=100 {
            journal.record(opened(conn));
        }
        assert_eq!(journal.events().len(), 101);
        let (bytes, events) = journal.footprint();
        assert_eq!(events, 100);
        assert!(bytes < 128 << 20, "{bytes} bytes reserved");
    }

    /// A reply journalled from where it is reads back as the same reply journalled as an
    /// event, with and without a segment change in between.
    #[test]
    fn a_borrowed_reply_is_the_same_event() {
        let journal = Journal::new(Clock::new(), MIN_EVENTS);
        let host: Arc<str> = "mx1".into();
        let reply = crate::scenario::Reply::new(451, Some("4.7.1"), "Try again later");
        let rule: Option<Arc<str>> = Some("host mx1 rule 1".into());
        for conn in 0..(MIN_EVENTS as u64) {
            journal.record(EventKind::Reply {
                host: host.clone(),
                conn,
                stage: Some(crate::scenario::Stage::Rcpt),
                reply: reply.clone(),
                rule: rule.clone(),
                retry_after: Some(Duration::from_secs(300)),
                retry_after_told: true,
            });
            journal.record_reply(ReplyRecord {
                host: &host,
                conn,
                stage: Some(crate::scenario::Stage::Rcpt),
                reply: &reply,
                rule: rule.clone(),
                retry_after: Some(Duration::from_secs(300)),
                retry_after_told: true,
            });
        }
        let events = journal.events();
        assert!(events.len() >= MIN_EVENTS - 2, "{}", events.len());
        // Odd sequence numbers are the events, the next even ones the borrowed replies.
        let pairs: Vec<_> = events.windows(2).filter(|p| p[0].seq % 2 == 1).collect();
        assert!(pairs.len() >= MIN_EVENTS / 2 - 1, "{} pairs", pairs.len());
        for pair in pairs {
            assert_eq!(pair[0].kind, pair[1].kind);
            assert_eq!(pair[0].seq + 1, pair[1].seq);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn numbers_events_and_stamps_farm_time() {
        let clock = Clock::new();
        let journal = Journal::new(clock.clone(), 100);
        journal.record(opened(1));
        clock.advance(Duration::from_secs(90)).unwrap();
        journal.record(opened(2));
        let events = journal.events();
        assert_eq!(seqs(&events), [1, 2]);
        assert_eq!(events[1].at, Duration::from_secs(90));
    }

    /// Every size from the smallest up: never more than `max` held, only the oldest
    /// dropped, the header kept, and nothing but real events held (no markers).
    #[test]
    fn stays_within_its_bound_at_every_size() {
        for max in [1, 5, 15, 16, 17, 19, 20, 21, 100] {
            let journal = Journal::new(Clock::new(), max);
            let max = max.max(MIN_EVENTS);
            journal.record(started());
            for conn in 1..=(3 * max as u64) {
                journal.record(opened(conn));
                let events = journal.events();
                assert!(events.len() <= max, "max {max}: holds {}", events.len());
                assert_eq!(events[0].seq, 1, "max {max}: the header is kept");
                let rest = seqs(&events[1..]);
                let newest = conn + 1;
                assert_eq!(rest.last(), Some(&newest), "max {max}: the newest is kept");
                assert!(
                    rest.windows(2).all(|w| w[1] == w[0] + 1),
                    "max {max}: consecutive {rest:?}"
                );
                let held = events.len() as u64;
                assert_eq!(journal.dropped() + held, newest, "max {max}: all accounted");
            }
            // Dropping is by the tenth, not an event at a time.
            assert!(journal.dropped() >= 2 * max as u64 - 1, "max {max}");
        }
    }

    /// Times never go backwards against sequence numbers, even when the clock is read
    /// by racing threads.
    #[test]
    fn times_follow_the_sequence_across_threads() {
        let journal = Arc::new(Journal::new(Clock::new(), 100_000));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let journal = journal.clone();
                let handle = runtime.handle().clone();
                scope.spawn(move || {
                    let _guard = handle.enter();
                    for i in 0..2000 {
                        journal.record(opened(t * 10_000 + i));
                    }
                });
            }
        });
        let events = journal.events();
        assert_eq!(events.len(), 8000);
        assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    }

    fn replaced(name: &str) -> EventKind {
        EventKind::ScenarioReplaced {
            scenario: name.into(),
            domains: Vec::new(),
            hostnames: Vec::new(),
            state_kept: true,
        }
    }

    /// The latest scenario-replaced event stays readable after the journal dropped it,
    /// in its place by sequence number, and is not counted as missed.
    #[test]
    fn the_latest_layout_is_kept_however_full_the_journal_gets() {
        let journal = Journal::new(Clock::new(), 16);
        journal.record(started());
        journal.record(replaced("first"));
        let latest = journal.record(replaced("second"));
        for conn in 1..=40 {
            journal.record(opened(conn));
        }
        let page = journal.after(0, usize::MAX);
        assert_eq!(page.events[0].seq, 1);
        assert_eq!(
            page.events[1].seq, latest,
            "the latest layout, after the header"
        );
        let first_held = page.events[2].seq;
        // Everything between but the layout was dropped: the first layout too.
        assert_eq!(page.missed, first_held - 2 - 1);
        assert_eq!(
            crate::journal::gaps(&page.events).map(|m| m.events),
            Some(page.missed)
        );
        // A cursor reads it once, in order, and is told the rest is gone.
        let mut cursor = Cursor::new(Arc::new(journal), 0);
        let mut read = Vec::new();
        while let Some(next) = cursor.try_next() {
            read.push(match next {
                Read::Event(e) => e.seq as i64,
                Read::Missed(n) => -(n as i64),
            });
        }
        assert_eq!(read[..3], [1, latest as i64, -(page.missed as i64)]);
    }

    /// When the first event still held is itself a scenario-replaced event, the missed
    /// ones come before it, by sequence number, not after it by kind.
    #[test]
    fn what_was_missed_is_said_where_it_was_missed() {
        let journal = Arc::new(Journal::new(Clock::new(), 16));
        journal.record(started());
        for conn in 2..=16 {
            journal.record(opened(conn));
        }
        let layout = journal.record(replaced("now"));
        for conn in 18..=31 {
            journal.record(opened(conn));
        }
        let page = journal.after(0, usize::MAX);
        assert_eq!(
            page.first_held, layout,
            "the layout is the first event held"
        );
        let mut cursor = Cursor::new(journal, 0);
        let mut read = Vec::new();
        while let Some(next) = cursor.try_next() {
            read.push(match next {
                Read::Event(e) => e.seq as i64,
                Read::Missed(n) => -(n as i64),
            });
        }
        assert_eq!(read[..3], [1, -15, layout as i64]);
    }

    /// A reset clears what is held but the header and the latest layout; readers are not
    /// told of the cleared events as missed, and numbering goes on.
    #[test]
    fn a_reset_clears_the_journal_without_readers_missing_anything() {
        let journal = Arc::new(Journal::new(Clock::new(), 100));
        journal.record(started());
        let layout = journal.record(replaced("now"));
        for conn in 1..=5 {
            journal.record(opened(conn));
        }
        let mut behind = Cursor::new(journal.clone(), 3);
        let reset = journal.clear(EventKind::Reset {
            policy: false,
            journal: true,
            messages: false,
        });
        assert_eq!(reset, 8);
        journal.record(opened(6));
        let page = journal.after(0, usize::MAX);
        assert_eq!(seqs(&page.events), [1, layout, 8, 9]);
        assert_eq!(page.missed, 0);
        assert_eq!(crate::journal::gaps(&page.events), None);
        let mut read = Vec::new();
        while let Some(next) = behind.try_next() {
            read.push(next);
        }
        assert!(
            read.iter().all(|r| matches!(r, Read::Event(_))),
            "nothing missed: {read:?}"
        );
        assert_eq!(read.len(), 2, "the reset and the event after it");
    }

    #[test]
    fn pages_after_a_sequence_number_count_what_was_dropped() {
        let journal = Journal::new(Clock::new(), 20);
        journal.record(started());
        for conn in 1..=40 {
            journal.record(opened(conn));
        }
        // 41 recorded: the header and the newest held, the oldest dropped in twos.
        let all = journal.after(0, usize::MAX);
        assert!(all.events.len() <= 20);
        assert_eq!(all.events.len() as u64 + journal.dropped(), 41);
        assert_eq!(all.missed, journal.dropped());
        let first_held = all.events[1].seq;
        assert_eq!(first_held, 2 + journal.dropped());
        let page = journal.after(5, 3);
        assert_eq!(page.missed, first_held - 6);
        assert_eq!(
            seqs(&page.events),
            [first_held, first_held + 1, first_held + 2]
        );
        let page = journal.after(first_held, 100);
        assert_eq!(page.missed, 0);
        assert_eq!(page.events.first().map(|e| e.seq), Some(first_held + 1));
        assert!(journal.after(41, 10).events.is_empty());
    }

    #[tokio::test]
    async fn a_cursor_reads_everything_in_order_then_waits_then_ends() {
        let journal = Arc::new(Journal::new(Clock::new(), 1000));
        journal.record(started());
        let mut cursor = Cursor::new(journal.clone(), 0);
        let writer = {
            let journal = journal.clone();
            tokio::spawn(async move {
                for conn in 1..=3000 {
                    journal.record(opened(conn));
                    if conn % 500 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                journal.close();
            })
        };
        let mut read = Vec::new();
        let mut missed = 0;
        while let Some(next) = cursor.next().await {
            match next {
                Read::Event(e) => read.push(e.seq),
                Read::Missed(n) => missed += n,
            }
        }
        writer.await.unwrap();
        assert_eq!(read[0], 1);
        assert_eq!(
            read.len() as u64 + missed,
            3001,
            "each event read or counted"
        );
        assert!(read.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(cursor.position(), 3001);
    }
}
