//! The journal as a file of JSON lines, one event per line: written by `mxfarm run
//! --journal FILE` as the farm runs, read back by `mxfarm transcript` and `mxfarm report`
//! (and by anyone's script: every line is a JSON object with `seq`, `ms` and `event`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::event::Event;

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

/// The events of a journal file, and the last line if a farm left it unfinished.
#[derive(Debug)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// The number (from 1) of the file's last line when it was cut short, and skipped: a
    /// farm stopped mid-write (or still writing) leaves a last line that is incomplete
    /// JSON without its newline. The events before it are all there; say so to whoever
    /// reads them.
    pub torn: Option<usize>,
}

/// Reads a journal file written by `mxfarm run --journal`; see [`parse`]. A file cut in
/// the middle of a UTF-8 character is read up to it (its last line is then torn).
pub fn read(path: &Path) -> Result<Parsed, JournalFileError> {
    let read_error = |source| JournalFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(read_error)?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => Cow::Borrowed(text),
        // An incomplete character at the very end: where a farm stopped mid-write.
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
        Err(e) => {
            let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            return Err(read_error(invalid));
        }
    };
    parse(path, &text)
}

/// Parses the text of a journal file; `path` names it in errors. Blank lines are skipped,
/// and so are the lines that older versions wrote besides events: `writer-lagged`
/// (which had no sequence number) and `events-dropped`, which took one of its own in a
/// file that still held every event; the sequence is closed over those, so that a gap
/// still means missing events.
///
/// A line that is not an event is an error, except a last line that is incomplete JSON
/// without a newline after it: that is how a farm stopped mid-write leaves its file, so
/// it is skipped and named in [`Parsed::torn`]. (Before `torn`, this returned the events
/// alone, and such a file was an error.)
pub fn parse(path: &Path, text: &str) -> Result<Parsed, JournalFileError> {
    let mut events = Vec::new();
    let mut markers = 0;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() || line.contains("\"event\":\"writer-lagged\"") {
            continue;
        }
        if line.contains("\"event\":\"events-dropped\"") {
            markers += 1;
            continue;
        }
        let mut event: Event = match serde_json::from_str(line) {
            Ok(event) => event,
            Err(e) if e.is_eof() && lines.peek().is_none() && !text.ends_with('\n') => {
                return Ok(Parsed {
                    events,
                    torn: Some(number + 1),
                });
            }
            Err(e) => {
                return Err(JournalFileError::Line {
                    path: path.to_path_buf(),
                    line: number + 1,
                    message: e.to_string(),
                });
            }
        };
        event.seq = event.seq.saturating_sub(markers);
        events.push(event);
    }
    Ok(Parsed { events, torn: None })
}

/// The events of several journal files of one run (a file and the one it was rotated
/// into, in any order), as one journal: in sequence order, each event once (every file
/// begins with the same `farm-started` event).
pub fn merge(files: Vec<Vec<Event>>) -> Vec<Event> {
    if files.len() == 1 {
        return files.into_iter().flatten().collect();
    }
    let mut events: Vec<Event> = files.into_iter().flatten().collect();
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    events
}

/// Appends `event` to `out` as one JSON line, as the farm writes it.
pub fn write_line(out: &mut Vec<u8>, event: &Event) {
    super::line::write_event(out, event, None);
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
        let events = parse(Path::new("old.jsonl"), text).unwrap().events;
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

    const TWO_EVENTS: &str = r#"{"seq":1,"ms":0,"event":"farm-started","scenario":"t","domains":[]}
{"seq":2,"ms":0,"event":"connection-opened","host":"mx1","conn":1,"client":"127.0.0.1:1"}
"#;

    /// A farm stopped mid-write leaves a last line cut short, without its newline: the
    /// events before it are read, and the line is named.
    #[test]
    fn a_torn_last_line_is_skipped_and_named() {
        let torn = format!("{TWO_EVENTS}{{\"seq\":3,\"ms\":5,\"event\":\"conn");
        let parsed = parse(Path::new("j.jsonl"), &torn).unwrap();
        assert_eq!(parsed.events.len(), 2);
        assert_eq!(parsed.torn, Some(3));
        let whole = parse(Path::new("j.jsonl"), TWO_EVENTS).unwrap();
        assert_eq!((whole.events.len(), whole.torn), (2, None));
        // The last line, complete but without its newline, is an event like any other.
        let unended = parse(Path::new("j.jsonl"), TWO_EVENTS.trim_end()).unwrap();
        assert_eq!((unended.events.len(), unended.torn), (2, None));
    }

    /// Only a cut-short last line is torn: a broken line before others, or followed by its
    /// newline, or one that is whole JSON but not an event, is an error as before.
    #[test]
    fn other_broken_lines_stay_errors() {
        let cut = "{\"seq\":3,\"ms\":5,\"event\":\"conn";
        for (text, line) in [
            (format!("{cut}\n{TWO_EVENTS}"), 1),
            (format!("{TWO_EVENTS}{cut}\n"), 3),
            (format!("{TWO_EVENTS}{{\"seq\":3}}"), 3),
            (format!("{TWO_EVENTS}not json"), 3),
        ] {
            let error = parse(Path::new("j.jsonl"), &text).unwrap_err();
            let expected = format!("j.jsonl:{line}: not a journal event");
            assert!(error.to_string().starts_with(&expected), "{text}: {error}");
        }
    }

    /// A file cut inside a UTF-8 character is read up to it, its last line torn; invalid
    /// UTF-8 anywhere else is an error.
    #[test]
    fn a_file_cut_inside_a_character_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut bytes = TWO_EVENTS.as_bytes().to_vec();
        bytes.extend_from_slice("{\"seq\":3,\"ms\":5,\"event\":\"reply\",\"x\":\"é".as_bytes());
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        let parsed = read(&path).unwrap();
        assert_eq!((parsed.events.len(), parsed.torn), (2, Some(3)));
        bytes.extend_from_slice(b"\xff\"}\n");
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path), Err(JournalFileError::Read { .. })));
    }
}
