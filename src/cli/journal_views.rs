//! The commands that read journals back: `mxfarm report` and `mxfarm transcript`, and
//! the errors they give for a journal that cannot be read or tells nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use mxfarm::Event;
use mxfarm::render::Granularity;
use mxfarm::transcript::Transcript;

use super::{finish, golden, print_err};

/// Exits with 0 when no finding is a problem, 2 when some are, 1 when the journal cannot
/// be read, holds no events or no connection; a reader that stops reading early does not
/// change that.
pub(crate) fn report(journals: &[PathBuf], json: bool) -> ExitCode {
    let journal = newest(journals);
    let events = match read_journal(journals) {
        Ok(events) => events,
        Err(failed) => return failed,
    };
    // "0 deliveries; 0 problems" would pass a CI job whose sender never reached the farm.
    let nothing = "there is no retry behaviour to check";
    if events.is_empty() {
        print_err(&format!("error: {}", empty_journal(journal, nothing)));
        return ExitCode::FAILURE;
    }
    if !has_contacts(&events) {
        print_err(&format!("error: {}", no_contacts(journal, nothing)));
        return ExitCode::FAILURE;
    }
    let report = mxfarm::report::report_journal(&events);
    let text = if json {
        format!("{}\n", report.to_json())
    } else {
        report.render()
    };
    let code = if report.problems().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    };
    finish(&text, code)
}

/// Reads a journal written by `run --journal`, or says on stderr what went wrong and gives
/// the exit code. A last line that a farm stopped mid-write left unfinished is skipped
/// with a warning: the events before it are worth reading.
fn read_journal(paths: &[PathBuf]) -> Result<Vec<Event>, ExitCode> {
    let mut files = Vec::new();
    for path in paths {
        let parsed = mxfarm::journal::file::read(path).map_err(|e| {
            print_err(&format!("error: {e}"));
            ExitCode::FAILURE
        })?;
        if let Some(line) = parsed.torn {
            print_err(&format!(
                "warning: the last line ({line}) of {} is incomplete, as a farm stopped mid-write (or still writing) leaves it; it was skipped",
                path.display()
            ));
        }
        files.push(parsed.events);
    }
    Ok(mxfarm::journal::file::merge(files))
}

/// The journal named last: the newest file, which messages about "the journal" name.
fn newest(journals: &[PathBuf]) -> &Path {
    journals
        .last()
        .map_or(Path::new("journal.jsonl"), PathBuf::as_path)
}

/// What to say of a journal file without a single event: `nothing` is what this command
/// then has to show.
fn empty_journal(path: &Path, nothing: &str) -> String {
    format!(
        "the journal {path} holds no events: {nothing}\n  help: run the farm with `mxfarm run --journal {path}` and send it mail; every attempt is written to the file as it happens",
        path = path.display()
    )
}

/// Whether any sender connected: a journal of only `farm-started` is a farm nobody reached.
fn has_contacts(events: &[mxfarm::Event]) -> bool {
    // Any event of a connection, after the last reset of the journal (what the views
    // read): in a rotated file, the opening may be in an older one. A clock jump, a reset
    // or a DNS query is no contact.
    mxfarm::journal::since_last_reset(events)
        .iter()
        .any(|e| e.kind.connection().is_some())
}

/// What to say of a journal in which the farm ran but no sender connected.
fn no_contacts(path: &Path, nothing: &str) -> String {
    format!(
        "the journal {} records no connection: the farm ran, but no sender reached it, so {nothing}\n  help: point the sender at the addresses in the farm's startup summary (its MX lookups, or a transport map / smarthost), then send mail again",
        path.display()
    )
}

pub(crate) fn transcript(
    journals: &[PathBuf],
    granularity: TimeGranularity,
    json: bool,
    check: Option<&Path>,
) -> ExitCode {
    let journal = newest(journals);
    let events = match read_journal(journals) {
        Ok(events) => events,
        Err(failed) => return failed,
    };
    // The transcript of no events is empty, and true; the note on stderr says why, and
    // keeps stdout what a golden file should hold.
    if events.is_empty() {
        print_err(&empty_journal(journal, "there are no deliveries to tell"));
    } else if !has_contacts(&events) {
        print_err(&no_contacts(journal, "there are no deliveries to tell"));
    }
    let transcript = Transcript::from_events(&events);
    if json {
        return finish(&format!("{}\n", transcript.to_json()), ExitCode::SUCCESS);
    }
    let text = transcript.render(granularity.into());
    match check {
        None => finish(&text, ExitCode::SUCCESS),
        Some(expected) => golden::compare(
            &text,
            expected,
            "this journal",
            &transcript_command(journals, granularity),
        ),
    }
}

/// The command that writes the transcript `--check` compares, for the hints that say how
/// to create or accept EXPECTED: with the granularity of the check, or the file it writes
/// would never match.
fn transcript_command(journals: &[PathBuf], granularity: TimeGranularity) -> String {
    let mut command = String::from("mxfarm transcript");
    for journal in journals {
        command.push_str(&format!(" {}", journal.display()));
    }
    if granularity != DEFAULT_GRANULARITY
        && let Some(value) = granularity.to_possible_value()
    {
        command.push_str(" --granularity ");
        command.push_str(value.get_name());
    }
    command
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub(crate) enum TimeGranularity {
    Exact,
    Seconds,
    Minutes,
    None,
}

pub(crate) const DEFAULT_GRANULARITY: TimeGranularity = TimeGranularity::Seconds;

impl From<TimeGranularity> for Granularity {
    fn from(g: TimeGranularity) -> Self {
        match g {
            TimeGranularity::Exact => Granularity::Exact,
            TimeGranularity::Seconds => Granularity::Seconds,
            TimeGranularity::Minutes => Granularity::Minutes,
            TimeGranularity::None => Granularity::None,
        }
    }
}
