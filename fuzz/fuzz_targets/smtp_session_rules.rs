//! The SMTP session of hosts with stateful rules (greylisting, rate limits, concurrency),
//! tarpits, hangs, lost replies, closes and STARTTLS faults, and small limits, over
//! in-memory streams: the same promises as `smtp_session`, where policy decides.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mxfarm_fuzz::session::Target;

static TARGET: LazyLock<Target> =
    LazyLock::new(|| Target::new("rules.toml", include_str!("../scenarios/rules.toml")));

fuzz_target!(|data: &[u8]| {
    TARGET.run(data);
});
