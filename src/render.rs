//! Stable text renderings of the journal and the deliveries, for people and for snapshots.
//!
//! Only what is stable between runs is shown: farm time at a chosen granularity, host
//! names, farm connection numbers, client IPs (never ports), commands and replies.

use std::fmt::Write as _;
use std::time::Duration;

use crate::deliveries::{Deliveries, Outcome};
use crate::journal::{ClosedBy, Event, EventKind, TlsOutcome};

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

/// `+1h02m03s` style offsets, at the given granularity.
pub fn offset(d: Duration, granularity: Granularity) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::from("+");
    match granularity {
        Granularity::None => return String::new(),
        Granularity::Exact => {
            let ms = d.subsec_millis();
            if h > 0 {
                let _ = write!(out, "{h}h{m:02}m{s:02}.{ms:03}s");
            } else if m > 0 {
                let _ = write!(out, "{m}m{s:02}.{ms:03}s");
            } else {
                let _ = write!(out, "{s}.{ms:03}s");
            }
        }
        Granularity::Seconds => {
            if h > 0 {
                let _ = write!(out, "{h}h{m:02}m{s:02}s");
            } else if m > 0 {
                let _ = write!(out, "{m}m{s:02}s");
            } else {
                let _ = write!(out, "{s}s");
            }
        }
        Granularity::Minutes => {
            if h > 0 {
                let _ = write!(out, "{h}h{m:02}m");
            } else {
                let _ = write!(out, "{m}m");
            }
        }
    }
    out
}

/// One line per event: `+0s  mx1 #1  < EHLO client.test`.
///
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
        };
        if granularity == Granularity::None {
            let _ = writeln!(out, "{prefix:<10} {text}");
        } else {
            let _ = writeln!(out, "{time:<10} {prefix:<10} {text}");
        }
    }
    out
}

/// One block per delivery: each attempt with its time, host, connection, stage and reply.
pub fn deliveries(deliveries: &Deliveries, granularity: Granularity) -> String {
    let mut out = String::new();
    if let Some(missing) = &deliveries.incomplete {
        let _ = writeln!(out, "{missing}");
    }
    let host_width = deliveries
        .iter()
        .flat_map(|d| d.attempts.iter().map(|a| a.host.len()))
        .max()
        .unwrap_or(0)
        .max(6);
    for delivery in deliveries {
        let recipient = delivery
            .recipient
            .as_deref()
            .map_or("(no recipient given)".to_string(), |r| format!("<{r}>"));
        let _ = writeln!(out, "delivery <{}> -> {recipient}", delivery.sender);
        for (i, attempt) in delivery.attempts.iter().enumerate() {
            let what = match (&attempt.reply, &attempt.closed) {
                (Some(reply), _) => reply.one_line(),
                (None, Some(closed)) => closed.clone(),
                (None, None) => "no reply".to_string(),
            };
            let time = match granularity {
                Granularity::None => String::new(),
                _ => format!("{:<9} ", offset(attempt.at, granularity)),
            };
            let _ = writeln!(
                out,
                "  {:<4}{time}{:<host_width$} conn {:<3} {:<12} {what}",
                format!("#{}", i + 1),
                attempt.host,
                attempt.conn,
                attempt.stage.as_str().to_uppercase(),
            );
        }
        let delivered = delivery.times_delivered();
        let verdict = match delivered {
            0 => match delivery.attempts.last().map(|a| a.outcome) {
                Some(Outcome::Rejected) => "rejected".to_string(),
                Some(Outcome::Abandoned) => "abandoned by the client".to_string(),
                _ => "not delivered yet".to_string(),
            },
            1 => format!("delivered after {} attempt(s)", delivery.attempts.len()),
            n => format!("delivered {n} times (duplicate)"),
        };
        let _ = writeln!(out, "  {verdict}");
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
    }
}
