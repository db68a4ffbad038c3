//! The journal file as the farm writes it: every event, in order, none skipped, and each
//! accepted message's line handed to the operating system before its 250 is sent.
//!
//! Events are serialized as they are recorded, under the journal's lock (so the file's
//! order is the sequence order), into a pending buffer. One writer thread takes the whole
//! buffer at a time and writes it with a single `write` (group commit): under load, many
//! sessions' events share one system call, and a session that waits for its message's
//! line waits for one batch at most. The writer is woken when a session waits for a line
//! (before a 250), when [`BATCH`] bytes are pending, or [`FLUSH_EVERY`] after the first
//! line pending: not for every event, which cost a wake-up of the thread and a `write`
//! per RCPT and made the farm with a file twice as costly per RCPT as without. A blocking
//! thread rather than a tokio task, because file writes block, and a slow disk must not
//! hold a runtime thread that other sessions need.
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
use std::sync::atomic::{AtomicUsize, Ordering};

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
pub(crate) const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

/// What is waiting to be written, under the sink's own lock (taken inside the journal's
/// lock by `push`, and alone, for a moment, by the writer).
#[derive(Debug, Default)]
struct Pending {
    /// JSON lines of events recorded but not yet taken by the writer.
    bytes: Vec<u8>,
    /// The sequence number of the last event in `bytes`.
    last_seq: u64,
    /// The highest sequence number a session waits to see written.
    wanted: u64,
    /// The last sequence number the writer took (written, or being written).
    taken: u64,
    /// The writer sleeps until woken (nothing was pending): the next line wakes it.
    writer_idle: bool,
    /// The line of the `farm-started` event, which every rotated file begins with.
    header: Option<Arc<[u8]>>,
    /// No more events will come: the writer writes what is pending and ends.
    closed: bool,
    /// The writer failed; nothing more is buffered.
    failed: bool,
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

/// The journal's file end: a pending buffer filled as events are recorded, and the
/// thread that writes it out.
#[derive(Debug)]
pub(crate) struct Sink {
    pending: Mutex<Pending>,
    wake: Condvar,
    written: watch::Sender<Written>,
    /// Bytes pending, readable without the lock: every session looks at it before each
    /// read from its client.
    backlog: AtomicUsize,
}

impl Sink {
    /// Creates (or replaces) the file and starts its writer thread. A new file per run:
    /// sequence numbers start at 1 again, so appending would mix runs.
    pub(crate) fn start(options: JournalFileOptions) -> std::io::Result<Arc<Sink>> {
        let file = File::create(&options.path)?;
        let sink = Arc::new(Sink {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            written: watch::channel(Written::default()).0,
            backlog: AtomicUsize::new(0),
        });
        let writer = FileWriter {
            options,
            file,
            size: 0,
        };
        let thread = sink.clone();
        std::thread::Builder::new()
            .name("mxfarm-journal".into())
            .spawn(move || thread.run(writer))?;
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
        let wake =
            (start == 0 && pending.writer_idle) || (start < BATCH && pending.bytes.len() >= BATCH);
        if start == 0 {
            pending.writer_idle = false;
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
    pub(crate) async fn written(&self, seq: u64) -> Result<(), Unwritable> {
        let mut progress = self.written.subscribe();
        if progress.borrow().seq < seq {
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

    /// The writer thread: take the pending batch, write it, publish how far the file got;
    /// until the journal is closed and everything is written, or a write fails.
    fn run(&self, mut writer: FileWriter) {
        while let Some(batch) = self.take_batch() {
            if let Err(error) = writer.write_batch(&batch.lines, batch.header.as_deref()) {
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
                return;
            }
            self.written.send_modify(|w| w.seq = batch.last_seq);
        }
        self.written.send_modify(|w| w.finished = true);
    }

    /// Waits until there is something to write, or the journal is closed; returns the
    /// batch, or `None` once closed with nothing left.
    fn take_batch(&self) -> Option<Batch> {
        let mut pending = self.pending.lock();
        let mut waited_long = false;
        loop {
            let due = pending.wanted > pending.taken
                || pending.bytes.len() >= BATCH
                || pending.closed
                || waited_long;
            if due && !pending.bytes.is_empty() {
                self.backlog.store(0, Ordering::Relaxed);
                pending.taken = pending.last_seq;
                return Some(Batch {
                    lines: std::mem::take(&mut pending.bytes),
                    last_seq: pending.last_seq,
                    header: pending.header.clone(),
                });
            }
            if pending.closed {
                return None;
            }
            if pending.bytes.is_empty() {
                pending.writer_idle = true;
                self.wake.wait(&mut pending);
                waited_long = false;
            } else {
                // Lines came: gather what else comes for a moment, unless a session
                // waits for one of them (it wakes the writer at once).
                waited_long = self.wake.wait_for(&mut pending, FLUSH_EVERY).timed_out();
            }
        }
    }
}

/// What the writer takes in one go: whole lines, the last event's sequence number, and
/// the first line, in case the file is rotated before them.
struct Batch {
    lines: Vec<u8>,
    last_seq: u64,
    header: Option<Arc<[u8]>>,
}

/// The file end of the writer: the open file, its size, and how to rotate it.
struct FileWriter {
    options: JournalFileOptions,
    file: File,
    /// Bytes in the current file, all of them whole lines.
    size: u64,
}

impl FileWriter {
    /// Writes one batch (rotating first if it would pass the size limit), so that either
    /// all of it is in the file or the file is as it was before.
    fn write_batch(&mut self, batch: &[u8], header: Option<&[u8]>) -> std::io::Result<()> {
        if let (Some(max), Some(header)) = (self.options.max_bytes, header)
            && self.size > header.len() as u64
            && self.size + batch.len() as u64 > max
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
