//! The views (deliveries, transcript, report, the journal's text) over journals built
//! from the fuzz bytes: any events in any order, sequence numbers and times included.
//! None may panic, and the file holds them all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxfarm_fuzz::{checks, events};

fuzz_target!(|data: &[u8]| {
    let events = events::journal(data);
    checks::file_round_trip(&events);
    checks::views(&events);
});
