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
/// and so are the lines that older versions wrote besides events: `writer-lagged`
/// (which had no sequence number) and `events-dropped`, which took one of its own in a
/// file that still held every event; the sequence is closed over those, so that a gap
/// still means missing events.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Event>, JournalFileError> {
    let mut events = Vec::new();
    let mut markers = 0;
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.contains("\"event\":\"writer-lagged\"") {
            continue;
        }
        if line.contains("\"event\":\"events-dropped\"") {
            markers += 1;
            continue;
        }
        let mut event: Event = serde_json::from_str(line).map_err(|e| JournalFileError::Line {
            path: path.to_path_buf(),
            line: number + 1,
            message: e.to_string(),
        })?;
        event.seq = event.seq.saturating_sub(markers);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::gaps;

    /// A journal file of an older version, whose in-memory journal overflowed: its
    /// `events-dropped` markers are skipped and the file still reads as complete.
    #[test]
    fn reads_files_with_the_markers_of_older_versions() {
        let text = r#"{"seq":1,"ms":0,"event":"farm-started","scenario":"t","domains":[]}
{"seq":2,"ms":0,"event":"connection-opened","host":"mx1","conn":1,"client":"127.0.0.1:1"}
{"seq":3,"ms":0,"event":"events-dropped","count":1,"total":1}
{"event":"writer-lagged","missed":0}

{"seq":4,"ms":5,"event":"connection-closed","host":"mx1","conn":1,"by":"client","reason":"QUIT"}
"#;
        let events = parse(Path::new("old.jsonl"), text).unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(gaps(&events), None);
        let broken = parse(Path::new("j.jsonl"), "{\"seq\":1}\n").unwrap_err();
        assert!(
            broken
                .to_string()
                .starts_with("j.jsonl:1: not a journal event"),
            "{broken}"
        );
    }
}
