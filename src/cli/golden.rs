//! Golden-file checks of transcripts, the same for a journal file (`mxfarm transcript
//! --check`) and a running farm (`mxfarm ctl transcript --check`): the same messages,
//! the same exit codes.

use std::path::Path;
use std::process::ExitCode;

use super::{finish, print_err};

/// Compares `text` (the transcript of `what`) with the file `expected`: 0 and a line
/// saying so when they match, 1 with a diff and a hint when they differ or the file
/// cannot be read. `accept` is the command that writes the file.
pub(crate) fn compare(text: &str, expected: &Path, what: &str, accept: &str) -> ExitCode {
    let golden = match std::fs::read_to_string(expected) {
        Ok(golden) => golden,
        Err(e) => {
            print_err(&format!(
                "error: cannot read {}: {e}\n  help: create it with `{accept} > {}`",
                expected.display(),
                expected.display()
            ));
            return ExitCode::FAILURE;
        }
    };
    if golden == text {
        let matches = format!("transcript matches {}\n", expected.display());
        return finish(&matches, ExitCode::SUCCESS);
    }
    let diff = similar::TextDiff::from_lines(&golden, text)
        .unified_diff()
        .header(&expected.display().to_string(), what)
        .to_string();
    print_err(diff.strip_suffix('\n').unwrap_or(&diff));
    print_err(&format!(
        "the sender's retry behaviour changed: the transcript differs from {}\n  help: if the new behaviour is right, accept it with `{accept} > {}`",
        expected.display(),
        expected.display()
    ));
    ExitCode::FAILURE
}
