//! What mxfarm's fuzz targets share: a client whose bytes and pauses come from the fuzzer
//! (`script`), a whole farm per input that it talks to in memory under paused time
//! (`session`), the promises checked of every journal (`checks`), and journals built
//! from bytes for the views (`events`).
//!
//! A fuzz target must fail on a broken promise, not only on a panic: the checks here are
//! the ones the README makes (every `queued as N` the client saw is journalled, every
//! session ends once its client stops, the journal file reads back what was written, and
//! no view panics on any journal).

pub mod checks;
pub mod events;
pub mod script;
pub mod session;
