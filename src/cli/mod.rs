//! The command line's larger commands, one file each; `main.rs` holds the argument
//! definitions and the small ones.

pub(crate) mod addresses;
pub(crate) mod ctl;
pub(crate) mod golden;
pub(crate) mod journal_views;
pub(crate) mod privileges;
pub(crate) mod run;
pub(crate) mod simulate;

use std::io::Write;
use std::process::ExitCode;

/// Prints `text` and ends with `code`, or with a failure if stdout cannot be written.
pub(crate) fn finish(text: &str, code: ExitCode) -> ExitCode {
    match print_out(text) {
        Ok(()) => code,
        Err(error) => stdout_failed(&error),
    }
}

pub(crate) fn stdout_failed(error: &std::io::Error) -> ExitCode {
    print_err(&format!("error: cannot write to stdout: {error}"));
    ExitCode::FAILURE
}

/// Writes `text` to stdout. Every command prints through here rather than with `print!`,
/// which panics when the reader has gone: a reader that closed the pipe early
/// (`mxfarm reference | head -1`) has what it wanted, so that is `Ok`, and the command
/// goes on or ends as it would have. Any other failure (a full disk behind `> file`) is
/// returned.
pub(crate) fn print_out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match written {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

/// Writes a line to stderr. Unlike `eprintln!` it never panics: with `2>&1 | head` stderr
/// is a pipe whose reader may have gone too, and then there is no one left to tell.
pub(crate) fn print_err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
