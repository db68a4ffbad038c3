//! Stable text renderings of the journal, and the one way views write times, for people
//! and for snapshots. Transcripts and reports render themselves with these.
//!
//! Only what is stable between runs is shown: farm time at a chosen granularity, host
//! names, farm connection numbers, client IPs (never ports), commands and replies.

use std::fmt::Write as _;
use std::time::Duration;

use crate::journal::{ClosedBy, DnsReply, DnsTransport, Event, EventKind, TlsOutcome};

/// How precisely times are shown. Coarser granularity keeps snapshots stable when the
/// sender runs in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// Milliseconds.
    Exact,
    /// Whole seconds, rounded down.
    #[default]
    Seconds,
    /// Whole minutes, rounded down.
    Minutes,
    /// No times at all.
    None,
}

impl Granularity {
    /// Every granularity with its name, as the command line and the control API take it.
    pub const NAMES: [(&'static str, Granularity); 4] = [
        ("exact", Granularity::Exact),
        ("seconds", Granularity::Seconds),
        ("minutes", Granularity::Minutes),
        ("none", Granularity::None),
    ];

    /// The granularity named `name` (`exact`, `seconds`, `minutes`, `none`).
    pub fn named(name: &str) -> Option<Granularity> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, g)| *g)
    }

    /// Its name, as [`Granularity::named`] takes it.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, g)| *g == self)
            .map_or("seconds", |(n, _)| n)
    }
}

/// `+1h02m03s` style offsets, at the given granularity (empty for [`Granularity::None`]).
pub fn offset(d: Duration, granularity: Granularity) -> String {
    match granularity {
        Granularity::None => String::new(),
        g => format!("+{}", span(d, g)),
    }
}

/// A length of time, the one way every view writes it: `30s`, `5m02s`, `1h20m00s`,
/// `2d01h15m00s` at [`Granularity::Seconds`]; `2d01h15m` at minutes; `9.470s` exactly;
/// `-` for [`Granularity::None`]. Rounded down.
pub fn span(d: Duration, granularity: Granularity) -> String {
    let secs = d.as_secs();
    let (days, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let ms = d.subsec_millis();
    let (seconds, short) = match granularity {
        Granularity::None => return "-".to_string(),
        Granularity::Exact => (format!("{s:02}.{ms:03}s"), format!("{s}.{ms:03}s")),
        Granularity::Seconds => (format!("{s:02}s"), format!("{s}s")),
        Granularity::Minutes => (String::new(), "0m".to_string()),
    };
    if days > 0 {
        format!("{days}d{h:02}h{m:02}m{seconds}")
    } else if h > 0 {
        format!("{h}h{m:02}m{seconds}")
    } else if m > 0 {
        format!("{m}m{seconds}")
    } else {
        short
    }
}

/// One line per event: `+0s  mx1 #1  < EHLO client.test`.
///
/// A DNS query in one line: `* 127.0.0.1 asked aol.test MX (udp): SERVFAIL [dns rule 1]`.
pub fn dns_query(kind: &EventKind) -> String {
    let EventKind::DnsQuery {
        client,
        by_farm,
        transport,
        name,
        qtype,
        answer,
        records,
        rule,
        delay,
    } = kind
    else {
        return String::new();
    };
    let via = match transport {
        DnsTransport::Udp => "udp",
        DnsTransport::Tcp => "tcp",
    };
    let who = if *by_farm {
        "the farm".to_string()
    } else {
        client.ip().to_string()
    };
    let mut text = format!("* {who} asked {name} {qtype} ({via}): ");
    if *answer == DnsReply::Records && !records.is_empty() {
        text.push_str(&records.join(", "));
    } else {
        text.push_str(answer.as_str());
    }
    if let Some(delay) = delay {
        let exact = if delay.subsec_millis() == 0 {
            Granularity::Seconds
        } else {
            Granularity::Exact
        };
        let _ = write!(text, " after {}", span(*delay, exact));
    }
    if let Some(rule) = rule {
        let _ = write!(text, "   [{rule}]");
    }
    text
}

/// `<` marks what the client sent, `>` what the farm answered, `*` everything else.
pub fn journal(events: &[Event], granularity: Granularity) -> String {
    let mut out = String::new();
    let mut expected = 1;
    for event in events {
        if event.seq > expected {
            // Sequence numbers have no gaps in a whole journal: these events were dropped.
            let missing = event.seq - expected;
            let text = format!(
                "* {missing} event{} missing here (dropped from a full journal)",
                if missing == 1 { "" } else { "s" }
            );
            if granularity == Granularity::None {
                let _ = writeln!(out, "{:<10} {text}", "journal");
            } else {
                let _ = writeln!(out, "{:<10} {:<10} {text}", "", "journal");
            }
        }
        expected = expected.max(event.seq.saturating_add(1));
        let time = offset(event.at, granularity);
        let (prefix, text) = match &event.kind {
            EventKind::ConnectionOpened { host, conn, client } => (
                format!("{host} #{conn}"),
                format!("* connected from {}", client.ip()),
            ),
            EventKind::Command {
                host, conn, line, ..
            } => (format!("{host} #{conn}"), format!("< {line}")),
            EventKind::Reply {
                host,
                conn,
                reply,
                rule,
                ..
            } => {
                let mut text = format!("> {}", reply.one_line());
                if let Some(rule) = rule {
                    let _ = write!(text, "   [{rule}]");
                }
                (format!("{host} #{conn}"), text)
            }
            EventKind::MessageAccepted {
                host,
                conn,
                id,
                sender,
                recipients,
                size,
                tls,
                ..
            } => (
                format!("{host} #{conn}"),
                format!(
                    "* accepted message {id} <{sender}> -> {} ({size} bytes{})",
                    recipients
                        .iter()
                        .map(|r| format!("<{r}>"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    if *tls { ", over TLS" } else { "" }
                ),
            ),
            EventKind::ConnectionClosed {
                host,
                conn,
                by,
                reason,
            } => {
                let who = match by {
                    ClosedBy::Client => "client",
                    ClosedBy::Farm => "farm",
                };
                (
                    format!("{host} #{conn}"),
                    format!("* closed by {who}: {reason}"),
                )
            }
            EventKind::TlsHandshake {
                host,
                conn,
                outcome,
            } => {
                let text = match outcome {
                    TlsOutcome::Established {
                        version, cipher, ..
                    } => format!("* TLS established: {version} {cipher}"),
                    TlsOutcome::Failed { error, aborted_by } => {
                        let who = match aborted_by {
                            ClosedBy::Client => "client",
                            ClosedBy::Farm => "farm",
                        };
                        format!("* TLS failed, aborted by the {who}: {error}")
                    }
                };
                (format!("{host} #{conn}"), text)
            }
            EventKind::FarmStarted { scenario, .. } => (
                "farm".to_string(),
                format!("* started, playing scenario {scenario:?}"),
            ),
            EventKind::DnsQuery { .. } => ("dns".to_string(), dns_query(&event.kind)),
            EventKind::ScenarioReplaced {
                scenario,
                state_kept,
                ..
            } => (
                "farm".to_string(),
                format!(
                    "* scenario replaced: now playing {scenario:?}, {}",
                    if *state_kept {
                        "state kept"
                    } else {
                        "state reset"
                    }
                ),
            ),
            EventKind::ClockAdvanced { by } => (
                "farm".to_string(),
                format!("* clock advanced by {}", span(*by, Granularity::Exact)),
            ),
            EventKind::Reset {
                policy,
                journal,
                messages,
            } => {
                let what: Vec<&str> = [
                    (*policy, "policy state"),
                    (*journal, "journal"),
                    (*messages, "captured messages"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                ("farm".to_string(), format!("* reset: {}", what.join(", ")))
            }
            EventKind::DnsCheck {
                host,
                conn,
                check,
                subject,
                result,
                took,
            } => (
                format!("{host} #{conn}"),
                format!(
                    "* {check} of {subject}: {result} (looked up in {})",
                    span(*took, Granularity::Exact)
                ),
            ),
        };
        if granularity == Granularity::None {
            let _ = writeln!(out, "{prefix:<10} {text}");
        } else {
            let _ = writeln!(out, "{time:<10} {prefix:<10} {text}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_at_each_granularity() {
        let d = Duration::from_millis(3_723_456);
        assert_eq!(offset(d, Granularity::Seconds), "+1h02m03s");
        assert_eq!(offset(d, Granularity::Minutes), "+1h02m");
        assert_eq!(offset(d, Granularity::Exact), "+1h02m03.456s");
        assert_eq!(
            offset(Duration::from_millis(1500), Granularity::Exact),
            "+1.500s"
        );
        assert_eq!(
            offset(Duration::from_secs(302), Granularity::Seconds),
            "+5m02s"
        );
        assert_eq!(offset(Duration::ZERO, Granularity::Seconds), "+0s");
        assert_eq!(offset(Duration::ZERO, Granularity::Minutes), "+0m");
        assert_eq!(offset(d, Granularity::None), "");
    }

    #[test]
    fn spans_show_days_and_fractions_the_same_everywhere() {
        let two_days = Duration::from_secs(2 * 86_400 + 3600 + 15 * 60);
        assert_eq!(span(two_days, Granularity::Seconds), "2d01h15m00s");
        assert_eq!(span(two_days, Granularity::Minutes), "2d01h15m");
        assert_eq!(
            span(Duration::from_millis(9_470), Granularity::Exact),
            "9.470s"
        );
        assert_eq!(
            span(Duration::from_millis(470), Granularity::Exact),
            "0.470s"
        );
        assert_eq!(span(Duration::from_secs(9), Granularity::Seconds), "9s");
        assert_eq!(span(Duration::from_secs(19), Granularity::Seconds), "19s");
        assert_eq!(span(Duration::ZERO, Granularity::Seconds), "0s");
        assert_eq!(
            span(Duration::from_secs(302), Granularity::Seconds),
            "5m02s"
        );
        assert_eq!(span(Duration::from_secs(5), Granularity::None), "-");
    }
}
