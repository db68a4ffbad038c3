//! The SMTP session of a host without rules (it accepts everything), over an in-memory
//! stream: whatever a client sends, and however long it pauses, the farm answers within
//! the protocol, ends the session once the client stops, journals every 250 it gives,
//! and writes a journal that reads back. See `mxfarm_fuzz::script` for the input's form.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mxfarm_fuzz::session::Target;

static TARGET: LazyLock<Target> = LazyLock::new(|| {
    Target::new(
        "accept-all.toml",
        include_str!("../scenarios/accept-all.toml"),
    )
});

fuzz_target!(|data: &[u8]| {
    TARGET.run(data);
});
