//! The scenario loader on any text: it returns a scenario or every problem with its place
//! and hint, and neither loading nor showing the result (the rules' summaries, the DNS
//! zone it produces, the error with its source snippets) panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match mxfarm::scenario::load_str("fuzz.toml", text) {
        Ok(scenario) => {
            for host in &scenario.hosts {
                for rule in host.rules.iter() {
                    let _ = rule.to_string();
                }
            }
            let _ = mxfarm::dns::zone_file(&scenario);
        }
        Err(error) => {
            assert!(!error.problems().is_empty(), "an error without a problem");
            let _ = error.to_string();
        }
    }
});
