//! The journal file as the farm writes it: every event, in order, none skipped, and each
//! accepted message's line handed to the operating system before its 250 is sent.
//!
//! Events are serialized as they are recorded, under the journal's lock (so the file's
//! order is the sequence order), into a pending buffer. Whoever writes takes the whole
//! buffer at a time and writes it with a single `write` (group commit): under load, many
//! sessions' events share one system call.
//!
//! Two writers take turns, under the file's own lock:
//! - **The session that waits for its message's line** (before a 250) writes the pending
//!   buffer itself when nobody else is writing, it is small ([`WRITE_HERE_AT_MOST`]) and
//!   would not rotate the file, the file is a regular one (not a pipe or a device), no
//!   `fsync` is asked for, and no write has been slow lately ([`SlowWrites`]). A `write`
//!   into the page cache takes microseconds; handing it to a thread and being woken
//!   again took two thread wake-ups per message, which made the farm with a file a
//!   quarter costlier per message than without (BENCHMARKS.md). It first yields to the
//!   runtime once, so that the other sessions woken in the same turn add their lines:
//!   under load one `write` then carries several messages' lines (half as many writes
//!   per message on one message per connection).
//! - **A writer thread** does everything else: lines nobody waits for ([`FLUSH_EVERY`]
//!   after the first of them, or at [`BATCH`] bytes pending), a session's line while
//!   another write is under way, every batch with `fsync`, and every batch for a while
//!   after a write took longer than [`SLOW_WRITE`]: a disk whose dirty pages the kernel
//!   holds back must slow the sessions that wait for it, not hold the runtime thread
//!   that every other session needs. A blocking thread rather than a tokio task, because
//!   file writes block.
//!
//! Once written, the batch's last sequence number is published; [`Journal::written`] waits
//! for it. Because the lines are in the kernel's page cache once `write` returns, a farm
//! killed with SIGKILL loses no acknowledged message; `fsync` (`--journal-fsync`) makes
//! them survive a power loss too, at the cost of one `fdatasync` per batch.
//!
//! A write that fails (disk full, `/dev/full`, a file size limit) is logged once; the file
//! is cut back to the end of its last whole batch, so that it stays readable, and from
//! then on nothing more is written: [`Journal::written`] says so, and the session answers
//! `451 4.3.0` instead of 250. The farm does not try again: a journal with a hole in it
//! would tell a story with attempts missing.
//!
//! [`Journal::written`]: super::store::Journal::written

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// Where and how the farm writes its journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalFileOptions {
    /// The file, created or replaced when the farm starts.
    pub path: PathBuf,
    /// `fdatasync` after every batch, before its messages are acknowledged: the journal
    /// then survives a power loss, not only the farm's own death.
    pub fsync: bool,
    /// Rotate when the file would grow past this many bytes: the file becomes `FILE.1`
    /// (replacing an older one) and a new `FILE` begins with the `farm-started` event.
    /// `None`: the file grows as long as the farm runs.
    pub max_bytes: Option<u64>,
}

impl JournalFileOptions {
    /// A journal file at `path`, without fsync or rotation.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fsync: false,
            max_bytes: None,
        }
    }

    /// The name a rotated file gets: `FILE.1`.
    pub fn rotated_path(&self) -> PathBuf {
        rotated(&self.path)
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Pending bytes at which the writer is woken even if nobody waits.
pub(crate) const BATCH: usize = 256 * 1024;

/// How long lines nobody waits for may stay pending, counted from the first of them: a
/// reader of the file (`tail -f`, `mxfarm transcript FILE` while the farm runs) sees every
/// event this soon, and under load the writer wakes at most this often.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(2);

/// The most a session writes itself: more pending means the writer thread is behind (or
/// the lines are a huge message's), and a write that size is the thread's to make.
const WRITE_HERE_AT_MOST: usize = 64 * 1024;

/// A write that takes longer than this is a slow disk's: sessions leave the writing to
/// the thread for [`SLOW_FOR`] after it. A `write` of a batch into the page cache takes
/// tens of microseconds.
const SLOW_WRITE: Duration = Duration::from_millis(2);

/// How long after a slow write sessions stay off the file: every write in that time is
/// the thread's, and a slow one among them starts the time again.
const SLOW_FOR: Duration = Duration::from_secs(1);

/// What is waiting to be written, under the sink's own lock (taken inside the journal's
/// lock by `push`, and alone, for a moment, by a writer).
#[derive(Debug)]
struct Pending {
    /// JSON lines of events recorded but not yet taken by a writer.
    bytes: Vec<u8>,
    /// The buffer of a batch written, emptied, for `bytes` to be once it is taken: lines
    /// then go into a buffer of the right size rather than one regrown from nothing,
    /// with a copy at each doubling, for every batch.
    spare: Vec<u8>,
    /// When the first of `bytes` came.
    since: Instant,
    /// The sequence number of the last event in `bytes`.
    last_seq: u64,
    /// The highest sequence number a session waits for the writer thread to write.
    wanted: u64,
    /// The last sequence number a writer took (written, or being written).
    taken: u64,
    /// The writer thread sleeps until woken (nothing was pending): the next line wakes it.
    writer_idle: bool,
    /// Lines came since the writer thread last looked: it looks again after
    /// [`FLUSH_EVERY`] rather than sleep until the next line wakes it, which under load
    /// (sessions writing their own lines, the buffer often empty) would be for every
    /// message.
    lately: bool,
    /// The line of the `farm-started` event, which every rotated file begins with.
    header: Option<Arc<[u8]>>,
    /// No more events will come: the writer writes what is pending and ends.
    closed: bool,
    /// A write failed; nothing more is buffered or written.
    failed: bool,
}

impl Pending {
    /// Takes the whole buffer for a writer that holds the file's lock.
    fn take(&mut self, backlog: &AtomicUsize) -> Batch {
        backlog.store(0, Ordering::Relaxed);
        self.taken = self.last_seq;
        Batch {
            lines: std::mem::replace(&mut self.bytes, std::mem::take(&mut self.spare)),
            last_seq: self.last_seq,
            header: self.header.clone(),
        }
    }
}

/// How far the file has got: what a session waits on before its 250.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Written {
    /// Every event up to this sequence number is in the file (handed to the OS).
    seq: u64,
    /// Why the file cannot be written, once a write failed.
    failed: Option<Arc<str>>,
    /// The writer has ended: everything it will ever write is written.
    finished: bool,
}

/// Why a message cannot be acknowledged: its journal line did not reach the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the journal file cannot be written: {0}")]
pub struct Unwritable(pub Arc<str>);

/// The journal's file end: a pending buffer filled as events are recorded, the file
/// that sessions and the writer thread write it to in turn, and the thread.
#[derive(Debug)]
pub(crate) struct Sink {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held for the whole of a batch, from taking it to publishing how far the file got,
    /// so that batches reach the file in the order they were taken.
    file: Mutex<FileWriter>,
    written: watch::Sender<Written>,
    /// Bytes pending, readable without the lock: every session looks at it before each
    /// read from its client.
    backlog: AtomicUsize,
    slow: SlowWrites,
    /// Only the thread writes: every batch is `fdatasync`ed, or the journal is not a
    /// regular file (a pipe, `/dev/stdout`, a device), whose `write` waits for a reader
    /// for as long as it likes.
    thread_only: bool,
}

impl Sink {
    /// Creates (or replaces) the file and starts its writer thread. A new file per run:
    /// sequence numbers start at 1 again, so appending would mix runs.
    pub(crate) fn start(options: JournalFileOptions) -> std::io::Result<Arc<Sink>> {
        let file = File::create(&options.path)?;
        let thread_only = options.fsync || !file.metadata()?.file_type().is_file();
        let sink = Arc::new(Sink {
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                spare: Vec::new(),
                since: Instant::now(),
                last_seq: 0,
                wanted: 0,
                taken: 0,
                writer_idle: false,
                lately: false,
                header: None,
                closed: false,
                failed: false,
            }),
            wake: Condvar::new(),
            thread_only,
            file: Mutex::new(FileWriter {
                options,
                file,
                size: 0,
            }),
            written: watch::channel(Written::default()).0,
            backlog: AtomicUsize::new(0),
            slow: SlowWrites::new(),
        });
        let thread = sink.clone();
        std::thread::Builder::new()
            .name("mxfarm-journal".into())
            .spawn(move || thread.run())?;
        Ok(sink)
    }

    /// Buffers the line of event `seq`, which `write` appends, for the writer; called
    /// under the journal's lock, in sequence order. `header`: it is the `farm-started`
    /// event.
    pub(crate) fn push(&self, seq: u64, header: bool, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.pending.lock();
        if pending.failed || pending.closed {
            return;
        }
        let start = pending.bytes.len();
        write(&mut pending.bytes);
        if header {
            pending.header = Some(Arc::from(&pending.bytes[start..]));
        }
        pending.last_seq = seq;
        self.backlog.store(pending.bytes.len(), Ordering::Relaxed);
        let mut wake = start < BATCH && pending.bytes.len() >= BATCH;
        if start == 0 {
            pending.since = Instant::now();
            pending.lately = true;
            wake |= std::mem::take(&mut pending.writer_idle);
        }
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Bytes recorded but not yet written: how far the disk is behind.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Why the file cannot be written, once a write failed.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.written.borrow().failed.clone()
    }

    /// Waits until every event up to `seq` is in the file, or says why it never will be.
    /// Writes it here when it may (see the module's doc), else asks the writer thread.
    pub(crate) async fn written(&self, seq: u64) -> Result<(), Unwritable> {
        let mut progress = self.written.subscribe();
        if progress.borrow().seq < seq && !self.thread_only {
            // Group commit on the runtime: the other sessions woken in this turn of the
            // runtime (under load, a turn wakes dozens) add their lines before one of
            // them writes the batch; the rest find theirs written when they resume.
            tokio::task::yield_now().await;
        }
        if progress.borrow().seq < seq && !self.write_here(seq) {
            let mut pending = self.pending.lock();
            if pending.wanted < seq {
                pending.wanted = seq;
                if pending.taken < seq {
                    self.wake.notify_one();
                }
            }
        }
        let state = progress
            .wait_for(|w| w.seq >= seq || w.failed.is_some() || w.finished)
            .await
            .map(|w| w.clone())
            .unwrap_or_default();
        if state.seq >= seq {
            return Ok(());
        }
        let why = state
            .failed
            .unwrap_or_else(|| Arc::from("the farm stopped before it was written"));
        Err(Unwritable(why))
    }

    /// Writes what is pending, up to and past `seq`, on the caller's thread, if it may:
    /// true when `seq` is written now (or can never be: the file failed), false when it
    /// is the writer thread's to write.
    fn write_here(&self, seq: u64) -> bool {
        if self.thread_only || !self.slow.passed(Instant::now()) {
            return false;
        }
        // Never wait for another's write here: that is what the thread is for.
        let Some(mut file) = self.file.try_lock() else {
            return false;
        };
        let batch = {
            let mut pending = self.pending.lock();
            if pending.failed || pending.taken >= seq {
                // Whoever took it held the file's lock until the file had it, and told.
                return true;
            }
            if pending.bytes.is_empty()
                || pending.bytes.len() > WRITE_HERE_AT_MOST
                || file.would_rotate(pending.bytes.len())
            {
                return false;
            }
            pending.take(&self.backlog)
        };
        self.write_out(&mut file, batch);
        true
    }

    /// No more events will come: the writer writes what is pending, then ends.
    pub(crate) fn close(&self) {
        self.pending.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until the writer has ended (after [`Sink::close`]).
    pub(crate) async fn finished(&self) {
        let mut progress = self.written.subscribe();
        let _ = progress.wait_for(|w| w.finished).await;
    }

    /// The writer thread: write each batch that is due, until the journal is closed and
    /// everything is written, or a write fails.
    fn run(&self) {
        while self.wait_until_due() {
            let mut file = self.file.lock();
            let batch = {
                let mut pending = self.pending.lock();
                // A session may have written it meanwhile.
                if pending.bytes.is_empty() || pending.failed {
                    continue;
                }
                pending.take(&self.backlog)
            };
            self.write_out(&mut file, batch);
        }
        // A session's write still under way holds the file: it is part of what was written.
        let _file = self.file.lock();
        self.written.send_modify(|w| w.finished = true);
    }

    /// Waits until a batch is due for the writer thread; false once there will be none
    /// (the journal closed with nothing pending, or a write failed).
    fn wait_until_due(&self) -> bool {
        let mut pending = self.pending.lock();
        loop {
            if pending.failed {
                return false;
            }
            if pending.bytes.is_empty() {
                if pending.closed {
                    return false;
                }
                if std::mem::take(&mut pending.lately) {
                    self.wake.wait_for(&mut pending, FLUSH_EVERY);
                } else {
                    pending.writer_idle = true;
                    self.wake.wait(&mut pending);
                }
                continue;
            }
            let waited = pending.since.elapsed();
            if pending.wanted > pending.taken
                || pending.bytes.len() >= BATCH
                || pending.closed
                || waited >= FLUSH_EVERY
            {
                return true;
            }
            // Lines came: gather what else comes for a moment, unless a session waits
            // for one of them (it wakes the writer at once). Under load the sessions
            // write before the moment is over, and the thread takes nothing from them.
            self.wake.wait_for(&mut pending, FLUSH_EVERY - waited);
        }
    }

    /// Writes `batch` (its writer holds the file's lock) and publishes how far the file
    /// got, or, if the write failed, that nothing more will be written.
    fn write_out(&self, writer: &mut FileWriter, batch: Batch) {
        let began = Instant::now();
        let result = writer.write_batch(&batch.lines, batch.header.as_deref());
        // A big batch (the thread catching up) may take its time on a fast disk.
        if batch.lines.len() <= WRITE_HERE_AT_MOST {
            self.slow.took(began, Instant::now());
        }
        let Err(error) = result else {
            self.written.send_modify(|w| w.seq = batch.last_seq);
            self.recycle(batch.lines);
            return;
        };
        let path = writer.options.path.display().to_string();
        tracing::error!(
            path,
            %error,
            "the journal file cannot be written: messages are answered 451 4.3.0 from \
             now on, and the file keeps what it had; free the space (or fix the file) \
             and restart the farm"
        );
        let mut pending = self.pending.lock();
        pending.failed = true;
        pending.bytes = Vec::new();
        self.backlog.store(0, Ordering::Relaxed);
        drop(pending);
        self.written.send_modify(|w| {
            w.failed = Some(Arc::from(format!("{path}: {error}")));
            w.finished = true;
        });
        // The thread may be asleep with nothing pending: it is to end now.
        self.wake.notify_one();
    }

    /// Keeps a written batch's buffer, emptied, as the next one's (see `Pending::spare`),
    /// unless it is a big one (the thread catching up), which is given back to the
    /// allocator rather than held for the rest of the run.
    fn recycle(&self, mut lines: Vec<u8>) {
        if lines.capacity() > WRITE_HERE_AT_MOST {
            return;
        }
        lines.clear();
        let mut pending = self.pending.lock();
        if pending.spare.capacity() < lines.capacity() {
            pending.spare = lines;
        }
    }
}

/// Whether sessions may write the file themselves: not for [`SLOW_FOR`] after a write
/// that took longer than [`SLOW_WRITE`].
#[derive(Debug)]
struct SlowWrites {
    origin: Instant,
    /// Nanoseconds after `origin` until which sessions leave the file to the thread.
    until: AtomicU64,
}

impl SlowWrites {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.origin))
    }

    /// No slow write lately, as of `now`.
    fn passed(&self, now: Instant) -> bool {
        self.nanos(now) >= self.until.load(Ordering::Relaxed)
    }

    /// A write began and ended then.
    fn took(&self, began: Instant, ended: Instant) {
        if ended.saturating_duration_since(began) > SLOW_WRITE {
            let until = self.nanos(ended).saturating_add(nanos(SLOW_FOR));
            self.until.fetch_max(until, Ordering::Relaxed);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a writer takes in one go: whole lines, the last event's sequence number, and
/// the first line, in case the file is rotated before them.
struct Batch {
    lines: Vec<u8>,
    last_seq: u64,
    header: Option<Arc<[u8]>>,
}

/// The file end of the writer: the open file, its size, and how to rotate it.
#[derive(Debug)]
struct FileWriter {
    options: JournalFileOptions,
    file: File,
    /// Bytes in the current file, all of them whole lines.
    size: u64,
}

impl FileWriter {
    /// A batch of `len` bytes would pass the size limit, so start a new file first (if
    /// the file holds more than its header): a rename and a create, which are the
    /// thread's to make.
    fn would_rotate(&self, len: usize) -> bool {
        self.options
            .max_bytes
            .is_some_and(|max| self.size + len as u64 > max)
    }

    /// Writes one batch (rotating first if it would pass the size limit), so that either
    /// all of it is in the file or the file is as it was before.
    fn write_batch(&mut self, batch: &[u8], header: Option<&[u8]>) -> std::io::Result<()> {
        if let Some(header) = header
            && self.size > header.len() as u64
            && self.would_rotate(batch.len())
        {
            self.rotate(header)?;
        }
        if let Err(error) = self.file.write_all(batch) {
            // Cut a half-written batch off, so the file ends with a whole line; a device
            // such as /dev/full cannot be cut, and has nothing to cut.
            let _ = self.file.set_len(self.size);
            return Err(error);
        }
        self.size += batch.len() as u64;
        if self.options.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// `FILE` becomes `FILE.1`; a new `FILE` begins with the `farm-started` line, so each
    /// file can be read on its own (its gap in sequence numbers says what is elsewhere).
    fn rotate(&mut self, header: &[u8]) -> std::io::Result<()> {
        if self.options.fsync {
            self.file.sync_data()?;
        }
        std::fs::rename(&self.options.path, self.options.rotated_path())?;
        self.file = File::create(&self.options.path)?;
        self.size = 0;
        self.file.write_all(header)?;
        self.size = header.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    fn line(n: u64) -> impl FnOnce(&mut Vec<u8>) {
        move |out: &mut Vec<u8>| out.extend_from_slice(format!("{{\"seq\":{n}}}\n").as_bytes())
    }

    /// Pushes a line that the thread will not write by itself (as if it had come just
    /// now, for an hour): what a test then sees was written by whom it says.
    fn push_fresh(sink: &Sink, seq: u64, write: impl FnOnce(&mut Vec<u8>)) {
        // The thread takes nothing without the file.
        let _file = sink.file.lock();
        sink.push(seq, seq == 1, write);
        sink.pending.lock().since = Instant::now() + Duration::from_secs(3600);
    }

    fn started(dir: &tempfile::TempDir, fsync: bool) -> (Arc<Sink>, PathBuf) {
        let path = dir.path().join("journal.jsonl");
        let mut options = JournalFileOptions::new(&path);
        options.fsync = fsync;
        (Sink::start(options).unwrap(), path)
    }

    /// The session that waits for its line writes it itself when nobody else is writing,
    /// without asking the thread.
    #[tokio::test]
    async fn a_session_writes_its_own_line_when_it_may() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = started(&dir, false);
        push_fresh(&sink, 1, line(1));
        push_fresh(&sink, 2, line(2));
        assert_eq!(sink.written(1).await, Ok(()));
        assert_eq!(sink.pending.lock().wanted, 0, "the thread was asked");
        // The whole batch went: what came with the line is written too.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
        assert_eq!(sink.written(2).now_or_never(), Some(Ok(())));
        assert_eq!(sink.backlog(), 0);
    }

    /// Sessions woken in one turn of the runtime share a write: the first to wait lets
    /// the others add their lines before it writes, and they find theirs written.
    #[tokio::test]
    async fn sessions_of_one_turn_share_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = started(&dir, false);
        let session = |seq: u64| {
            let sink = sink.clone();
            let path = path.clone();
            tokio::spawn(async move {
                push_fresh(&sink, seq, line(seq));
                sink.written(seq).await.unwrap();
                std::fs::read_to_string(&path).unwrap()
            })
        };
        let (first, second) = (session(1), session(2));
        let both = "{\"seq\":1}\n{\"seq\":2}\n";
        assert_eq!(
            first.await.unwrap(),
            both,
            "the first wrote only its own line"
        );
        assert_eq!(second.await.unwrap(), both);
        assert_eq!(sink.pending.lock().wanted, 0, "the thread was asked");
    }

    /// While another write holds the file, the session leaves its line to the thread, which
    /// writes it once the file is free.
    #[tokio::test]
    async fn a_session_does_not_wait_for_another_write() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = started(&dir, false);
        push_fresh(&sink, 1, line(1));
        let held = sink.file.lock();
        assert!(!sink.write_here(1));
        let mut wait = Box::pin(sink.written(1));
        assert_eq!((&mut wait).now_or_never(), None);
        drop(held);
        assert_eq!(wait.await, Ok(()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"seq\":1}\n");
    }

    /// With fsync, after a slow write, for a big batch, a device, or a batch that would rotate
    /// the file, the writing is the thread's.
    #[tokio::test]
    async fn slow_synced_and_big_writes_are_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let (synced, _) = started(&dir, true);
        push_fresh(&synced, 1, line(1));
        assert!(!synced.write_here(1));
        assert_eq!(synced.written(1).await, Ok(()));

        let other = tempfile::tempdir().unwrap();
        let (sink, path) = started(&other, false);
        push_fresh(&sink, 1, line(1));
        let now = Instant::now();
        sink.slow
            .took(now, now + SLOW_WRITE + Duration::from_micros(1));
        assert!(!sink.write_here(1));
        assert_eq!(sink.written(1).await, Ok(()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"seq\":1}\n");

        let third = tempfile::tempdir().unwrap();
        let (sink, _) = started(&third, false);
        push_fresh(&sink, 1, |out| out.resize(WRITE_HERE_AT_MOST + 1, b'x'));
        assert!(!sink.write_here(1));
        assert_eq!(sink.written(1).await, Ok(()));

        // Not a regular file: a write may wait for a reader.
        let device = Sink::start(JournalFileOptions::new("/dev/null")).unwrap();
        push_fresh(&device, 1, line(1));
        assert!(!device.write_here(1));
        assert_eq!(device.written(1).await, Ok(()));

        // A batch that would rotate the file.
        let fourth = tempfile::tempdir().unwrap();
        let mut options = JournalFileOptions::new(fourth.path().join("j.jsonl"));
        options.max_bytes = Some(5);
        let rotating = Sink::start(options).unwrap();
        push_fresh(&rotating, 1, line(1));
        assert!(!rotating.write_here(1));
        assert_eq!(rotating.written(1).await, Ok(()));
    }

    /// Sessions stay off the file for `SLOW_FOR` after a slow write, counted from its end;
    /// a write as slow as `SLOW_WRITE` is not slow yet.
    #[test]
    fn a_slow_write_keeps_sessions_off_the_file_for_a_while() {
        let slow = SlowWrites::new();
        let t = slow.origin + Duration::from_secs(5);
        assert!(slow.passed(t));
        slow.took(t, t + SLOW_WRITE);
        assert!(slow.passed(t + SLOW_WRITE));
        let ended = t + SLOW_WRITE * 2;
        slow.took(t, ended);
        assert!(!slow.passed(ended));
        assert!(!slow.passed(ended + SLOW_FOR - Duration::from_nanos(1)));
        assert!(slow.passed(ended + SLOW_FOR));
        // A fast write does not shorten the time.
        slow.took(ended, ended);
        assert!(!slow.passed(ended + SLOW_FOR / 2));
    }

    /// Lines nobody waits for reach the file by themselves (within `FLUSH_EVERY`), and
    /// everything pending is written before the writer says it has finished.
    #[tokio::test]
    async fn lines_nobody_waits_for_are_written_and_closing_writes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = started(&dir, false);
        sink.push(1, true, line(1));
        let mut progress = sink.written.subscribe();
        let _ = progress.wait_for(|w| w.seq >= 1).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"seq\":1}\n");
        sink.push(2, false, line(2));
        sink.close();
        sink.push(3, false, line(3));
        sink.finished().await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
        assert!(sink.written(3).await.is_err(), "pushed after the close");
    }
}
