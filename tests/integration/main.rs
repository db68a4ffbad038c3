//! The one integration-test binary: everything over real sockets.

mod architecture;
mod assertions;
mod behaviours;
mod cli;
mod fuzz_regressions;
mod in_memory;
mod journal;
mod library_client;
mod property;
mod protocol;
mod readme;
mod retry_report;
mod rules;
mod scenario_errors;
mod scenario_fixtures;
mod shipped;
mod stories;
mod support;
mod tls;
mod views;
