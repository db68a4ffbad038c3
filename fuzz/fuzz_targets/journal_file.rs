//! The journal file reader on any text: it returns the events (and a torn last line) or
//! an error naming the line, never panics; what it returns reads back the same when
//! written again, and no view panics on it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mxfarm_fuzz::checks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = mxfarm::journal::file::parse(Path::new("fuzz.jsonl"), text) {
        checks::file_round_trip(&parsed.events);
        checks::views(&parsed.events);
    }
});
