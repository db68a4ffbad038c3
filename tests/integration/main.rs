//! The one integration-test binary: everything over real sockets.

mod architecture;
mod assertions;
mod behaviours;
mod cli;
mod dns;
mod farm_ca;
mod fuzz_regressions;
mod in_memory;
mod journal;
mod journal_file;
mod journal_target;
mod library_client;
mod property;
mod protocol;
mod readme;
mod retry_report;
mod rules;
mod scenario_errors;
mod scenario_fixtures;
mod shipped;
mod slow_clients;
mod stories;
mod strict;
mod support;
mod tls;
mod views;
