//! The stable text form of a report ([`Report::render`]): no wall-clock times, durations
//! like `5m02s`, attempts as `#1-#3`. Snapshot tests and users read it, so it changes
//! only on purpose.

use std::fmt::Write as _;
use std::time::Duration;

use super::{DeliveryReport, Finding, Report, Severity};
use crate::deliveries::Outcome;
use crate::render::{Granularity, span};
use crate::scenario::Stage;
use crate::transcript::TranscriptAttempt;

impl Report {
    /// The stable text form: no wall-clock times, durations like `5m02s`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(missing) = &self.incomplete {
            let _ = writeln!(out, "{missing}");
        }
        if self.deliveries.is_empty() && self.clients.is_empty() {
            out.push_str("retry report: no contacts in the journal, so nothing to judge\n");
            return out;
        }
        let findings = || {
            self.deliveries
                .iter()
                .flat_map(|d| &d.findings)
                .chain(self.clients.iter().flat_map(|c| &c.findings))
        };
        let count = |s: Severity| findings().filter(|f| f.severity == s).count();
        let _ = writeln!(
            out,
            "retry report: {}; {}, {} to note",
            plural(self.deliveries.len(), "delivery", "deliveries"),
            plural(count(Severity::Problem), "problem", "problems"),
            count(Severity::Info),
        );
        for (i, delivery) in self.deliveries.iter().enumerate() {
            out.push('\n');
            delivery.render_into(&mut out, i + 1);
        }
        for client in &self.clients {
            out.push('\n');
            let _ = writeln!(
                out,
                "contacts from {} for no message the journal shows: {}",
                client.client,
                plural(client.attempts, "contact", "contacts")
            );
            for finding in &client.findings {
                finding.render_into(&mut out);
            }
        }
        if !self.overall.is_empty() {
            out.push_str("\noverall\n");
            for finding in &self.overall {
                finding.render_into(&mut out);
            }
        }
        out
    }
}

impl DeliveryReport {
    fn render_into(&self, out: &mut String, number: usize) {
        let recipient = self
            .recipient
            .as_deref()
            .map_or("(no recipient given)".to_string(), |r| format!("<{r}>"));
        let _ = writeln!(
            out,
            "delivery {number} <{}> -> {recipient} (message {})",
            self.sender, self.message
        );
        let _ = writeln!(out, "  {}", self.outcome.describe(Granularity::Seconds));
        match &self.intervals {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "  {} in {}; interval min {}, median {}, max {}; at most {} in an hour",
                    plural(self.attempts, "attempt", "attempts"),
                    plural(i.tries, "try", "tries"),
                    duration(i.min),
                    duration(i.median),
                    duration(i.max),
                    plural(i.max_per_hour, "try", "tries"),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {} in 1 try",
                    plural(self.attempts, "attempt", "attempts")
                );
            }
        }
        for finding in &self.findings {
            finding.render_into(out);
        }
    }
}

impl Finding {
    fn render_into(&self, out: &mut String) {
        let _ = write!(
            out,
            "  {:<8}{:<16}{}",
            self.severity.label(),
            self.kind.check().as_str(),
            self.text
        );
        if !self.attempts.is_empty() {
            let _ = write!(out, " [{}]", numbers(&self.attempts));
        }
        out.push('\n');
    }
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Problem => "PROBLEM",
            Severity::Info => "info",
            Severity::Ok => "ok",
        }
    }
}

/// `#1-#3, #5` for attempts 1, 2, 3 and 5.
pub(super) fn numbers(attempts: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < attempts.len() {
        let start = attempts[i];
        let mut end = start;
        while i + 1 < attempts.len() && attempts[i + 1] == end + 1 {
            i += 1;
            end = attempts[i];
        }
        parts.push(if end == start {
            format!("#{start}")
        } else {
            format!("#{start}-#{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// `30s`, `5m02s`, `1h20m00s`, `4d02h00m00s`: whole seconds, no leading `+`; the same
/// form as the transcript's ([`crate::render::span`]).
pub fn duration(d: Duration) -> String {
    span(d, Granularity::Seconds)
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the reply or the lost connection that ended an attempt was, in a few words.
pub(super) fn what(a: &TranscriptAttempt) -> String {
    match &a.reply {
        Some(r) => match &r.status {
            Some(status) => format!("{} {status}", r.code),
            None => r.code.to_string(),
        },
        None if a.outcome == Outcome::Unreached && a.stage == Stage::Starttls => {
            "failed TLS handshake".to_string()
        }
        None => "lost connection".to_string(),
    }
}

/// `mx1 (10)`.
pub(super) fn host_label(host: &str, preference: Option<u16>) -> String {
    match preference {
        Some(p) => format!("{host} ({p})"),
        None => host.to_string(),
    }
}
