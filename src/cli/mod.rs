//! The command line's larger commands, one file each; `main.rs` holds the argument
//! definitions and the small ones.

pub(crate) mod run;
