//! The journal as a file of JSON lines, one event per line: written by `mxfarm run
//! --journal FILE` as the farm runs, read back by `mxfarm transcript` and `mxfarm report`
//! (and by anyone's script: every line is a JSON object with `seq`, `ms` and `event`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::event::Event;
use super::store::{Cursor, Journal, Read};

/// Why a journal file could not be read or written, phrased for the command line.
#[derive(Debug, thiserror::Error)]
pub enum JournalFileError {
    #[error(
        "cannot read the journal {path}: {source}\n  help: write one with `mxfarm run --journal {path}`"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: not a journal event: {message}\n  help: give the file that `mxfarm run --journal` wrote, unchanged"
    )]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "cannot write the journal to {path}: {source}\n  help: check that the directory exists and is writable"
    )]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a journal file written by `mxfarm run --journal`.
pub fn read(path: &Path) -> Result<Vec<Event>, JournalFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| JournalFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of a journal file; `path` names it in errors. Blank lines are skipped,
/// and so are the `writer-lagged` lines that older versions wrote.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Event>, JournalFileError> {
    let mut events = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.contains("\"event\":\"writer-lagged\"") {
            continue;
        }
        let event = serde_json::from_str(line).map_err(|e| JournalFileError::Line {
            path: path.to_path_buf(),
            line: number + 1,
            message: e.to_string(),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// Appends `event` to `out` as one JSON line.
pub fn write_line(out: &mut Vec<u8>, event: &Event) {
    if serde_json::to_writer(&mut *out, event).is_ok() {
        out.push(b'\n');
    }
}

/// Creates (or replaces) `path` and writes every event of `journal` to it, from the first
/// one still held, as they are recorded, until the journal is closed. Events dropped from
/// the journal before the writer got to them leave a gap in the file's sequence numbers,
/// which the views over the file report; the writer logs how many.
pub(crate) async fn spawn_writer(
    journal: Arc<Journal>,
    path: &Path,
) -> Result<tokio::task::JoinHandle<()>, JournalFileError> {
    // A new file per run: sequence numbers start at 1 again, so appending would mix runs.
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|source| JournalFileError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    let path = path.to_path_buf();
    let mut cursor = Cursor::new(journal, 0);
    Ok(tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(file);
        let mut lines = Vec::new();
        loop {
            // Take what is there without waiting; write it in one go before waiting.
            let next = match cursor.try_next() {
                Some(next) => Some(next),
                None => {
                    if let Err(e) = flush(&mut out, &mut lines).await {
                        tracing::error!(path = %path.display(), error = %e, "journal file write failed");
                        return;
                    }
                    cursor.next().await
                }
            };
            match next {
                Some(Read::Event(event)) => write_line(&mut lines, &event),
                Some(Read::Missed(missed)) => {
                    tracing::warn!(
                        missed,
                        "the journal file fell behind; events were dropped before they were written"
                    );
                }
                None => break,
            }
        }
        if let Err(e) = flush(&mut out, &mut lines).await {
            tracing::error!(path = %path.display(), error = %e, "journal file write failed");
        }
    }))
}

async fn flush(
    out: &mut tokio::io::BufWriter<tokio::fs::File>,
    lines: &mut Vec<u8>,
) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    out.write_all(lines).await?;
    out.flush().await?;
    lines.clear();
    Ok(())
}
