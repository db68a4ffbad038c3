//! The startup summary: what the farm plays, host by host.

use super::Farm;

impl Farm {
    /// What the farm plays, as the command line shows it at the start: the scenario, each
    /// domain's MX records, and each host with its address, hostname, STARTTLS and rules.
    pub fn summary(&self) -> String {
        use crate::scenario::{Parsing, TlsMode, TlsVersions};
        use std::fmt::Write as _;
        let running = self.running();
        let scenario = &*running.scenario;
        let mut out = format!("mxfarm: scenario {:?}", scenario.name);
        if !scenario.description.is_empty() {
            let _ = write!(out, " - {}", scenario.description);
        }
        out.push('\n');
        for domain in &scenario.domains {
            let mx: Vec<String> = domain
                .mx
                .iter()
                .map(|m| format!("{} {}", m.preference, m.host))
                .collect();
            let _ = writeln!(out, "  domain {:<22} MX {}", domain.name, mx.join(", "));
        }
        for (bound, host) in running.hosts.iter().zip(&scenario.hosts) {
            let mode = host.tls.mode.as_str();
            let tls = match (host.tls.mode, host.tls.versions) {
                (TlsMode::Off, _) => "no STARTTLS".to_string(),
                (_, TlsVersions::Any) => format!("STARTTLS {mode}"),
                (_, TlsVersions::Only12) => format!("STARTTLS {mode} (TLS 1.2 only)"),
                (_, TlsVersions::Only13) => format!("STARTTLS {mode} (TLS 1.3 only)"),
            };
            // Strict is what a user expects of an MX today; a lenient host says so.
            let parsing = match host.parsing {
                Parsing::Strict => "",
                Parsing::Lenient => ", lenient parsing",
            };
            let _ = writeln!(
                out,
                "  host {:<6} {:<21} {:<32} {tls}{parsing}",
                bound.name,
                bound.addr.to_string(),
                bound.hostname
            );
            if host.rules.is_empty() {
                out.push_str("      (no rules: accepts everything)\n");
            }
            for rule in host.rules.iter() {
                let _ = writeln!(out, "      {rule}");
            }
        }
        if let Some(dns) = &running.dns {
            out.push_str(&dns.summary());
            for rule in &scenario.dns.rules {
                let _ = writeln!(out, "      {rule}");
            }
        }
        out
    }
}
