//! The sender's side of a simulation: per message, when each recipient was delivered or
//! bounced, every try with the hosts it reached and how each session ended, the delay
//! notices the sender sent; and a summary with percentiles of delivery time. Text for
//! people and snapshots, JSON for programs.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::client::{Stage, Trouble};
use crate::render::{Granularity, offset, span};

/// A whole simulation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    /// The model (`postfix`, `exchange-2016`, ...).
    pub sender: String,
    /// The parameters changed from the model's defaults, as `NAME=VALUE`.
    pub settings: Vec<String>,
    pub messages: Vec<MessageOutcome>,
    pub summary: Summary,
}

/// One message, from the sender's side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageOutcome {
    /// 1-based, in the order given.
    pub number: usize,
    pub message_id: String,
    pub from: String,
    #[serde(rename = "arrived_ms", with = "crate::millis")]
    pub arrived: Duration,
    pub recipients: Vec<RecipientOutcome>,
    pub tries: Vec<Try>,
    pub notices: Vec<SentNotice>,
}

impl MessageOutcome {
    /// When its last recipient was delivered, from arrival; `None` unless all were.
    pub fn delivered_after(&self) -> Option<Duration> {
        self.recipients
            .iter()
            .map(|r| match r.fate {
                Fate::Delivered { at, .. } => Some(at),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
            .map(|at| at.saturating_sub(self.arrived))
    }

    /// Tries that reached at least one host.
    pub fn attempts(&self) -> usize {
        self.tries.iter().filter(|t| !t.sessions.is_empty()).count()
    }
}

/// One recipient's fate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecipientOutcome {
    pub address: String,
    pub fate: Fate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Fate {
    Delivered {
        #[serde(rename = "at_ms", with = "crate::millis")]
        at: Duration,
        host: String,
    },
    /// Refused for good (a 5xx), or given up on (the queue lifetime, a retry rule's end).
    Bounced {
        #[serde(rename = "at_ms", with = "crate::millis")]
        at: Duration,
        why: String,
    },
    /// Still queued when the simulation stopped (its time limit).
    Queued,
}

/// One look at a message: its sessions, or why it made none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Try {
    #[serde(rename = "at_ms", with = "crate::millis")]
    pub at: Duration,
    pub sessions: Vec<SessionLog>,
    /// Why no host was tried (a suspended destination, no retry time reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited: Option<String>,
}

/// One session of a try.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionLog {
    pub host: String,
    /// Whether it went over a connection an earlier delivery left open (the sender's
    /// connection cache), after an RSET.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// Recipients delivered in it.
    pub delivered: usize,
    /// Recipients deferred or refused at RCPT, with the reply.
    pub refused: Vec<(String, String)>,
    /// Where it failed and how, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<(Stage, Trouble)>,
}

/// A notice the sender sent its user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentNotice {
    #[serde(rename = "at_ms", with = "crate::millis")]
    pub at: Duration,
    pub kind: NoticeKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    DelayWarning,
    Bounce,
}

/// Totals and percentiles over every message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub messages: usize,
    /// Recipients over all messages (one message to two is two).
    pub recipients: usize,
    /// Recipients delivered.
    pub delivered: usize,
    /// Recipients bounced: refused for good or given up on.
    pub bounced: usize,
    /// Recipients still queued at the end.
    pub queued: usize,
    /// Delivery time of the delivered recipients, from their message's arrival: p50,
    /// p90, p99, max.
    pub delivery_time: Percentiles,
    /// Tries that reached a host, per message.
    pub attempts: CountPercentiles,
    pub delay_warnings: usize,
    pub bounces: usize,
    /// Sessions opened to each host, in the order of first use.
    pub sessions_per_host: Vec<(String, usize)>,
}

/// Nearest-rank percentiles; all zero when there is nothing to rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    #[serde(rename = "p50_ms", with = "crate::millis")]
    pub p50: Duration,
    #[serde(rename = "p90_ms", with = "crate::millis")]
    pub p90: Duration,
    #[serde(rename = "p99_ms", with = "crate::millis")]
    pub p99: Duration,
    #[serde(rename = "max_ms", with = "crate::millis")]
    pub max: Duration,
}

/// Nearest-rank percentiles of counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountPercentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// The 50th, 90th, 99th percentiles (nearest rank: the smallest value with at least p%
/// of them at or below it) and the largest; all default when there are none.
fn ranks<T: Ord + Copy + Default>(mut values: Vec<T>) -> [T; 4] {
    values.sort_unstable();
    let rank = |p: usize| -> T {
        let n = (p * values.len()).div_ceil(100).max(1);
        values.get(n - 1).copied().unwrap_or_default()
    };
    [
        rank(50),
        rank(90),
        rank(99),
        values.last().copied().unwrap_or_default(),
    ]
}

impl Percentiles {
    pub fn of(values: Vec<Duration>) -> Percentiles {
        let [p50, p90, p99, max] = ranks(values);
        Percentiles { p50, p90, p99, max }
    }
}

impl CountPercentiles {
    pub fn of(values: Vec<u64>) -> CountPercentiles {
        let [p50, p90, p99, max] = ranks(values);
        CountPercentiles { p50, p90, p99, max }
    }
}

impl Summary {
    pub fn of(messages: &[MessageOutcome]) -> Summary {
        let fates = || {
            messages
                .iter()
                .flat_map(|m| m.recipients.iter().map(move |r| (m, r)))
        };
        let delivered: Vec<Duration> = fates()
            .filter_map(|(m, r)| match r.fate {
                Fate::Delivered { at, .. } => Some(at.saturating_sub(m.arrived)),
                _ => None,
            })
            .collect();
        let bounced = fates()
            .filter(|(_, r)| matches!(r.fate, Fate::Bounced { .. }))
            .count();
        let queued = fates().filter(|(_, r)| r.fate == Fate::Queued).count();
        let attempts = messages.iter().map(|m| m.attempts() as u64).collect();
        let count = |kind| {
            messages
                .iter()
                .flat_map(|m| &m.notices)
                .filter(|n| n.kind == kind)
                .count()
        };
        let mut sessions_per_host: Vec<(String, usize)> = Vec::new();
        for session in messages
            .iter()
            .flat_map(|m| &m.tries)
            .flat_map(|t| &t.sessions)
        {
            match sessions_per_host
                .iter_mut()
                .find(|(h, _)| *h == session.host)
            {
                Some((_, n)) => *n += 1,
                None => sessions_per_host.push((session.host.clone(), 1)),
            }
        }
        Summary {
            messages: messages.len(),
            recipients: fates().count(),
            delivered: delivered.len(),
            bounced,
            queued,
            delivery_time: Percentiles::of(delivered),
            attempts: CountPercentiles::of(attempts),
            delay_warnings: count(NoticeKind::DelayWarning),
            bounces: count(NoticeKind::Bounce),
            sessions_per_host,
        }
    }

    /// The summary's lines, for the text output and for `--compare`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let t = |d: Duration| span(d, Granularity::Seconds);
        let _ = writeln!(
            out,
            "{} message(s) to {} recipient(s): {} delivered, {} bounced, {} still queued",
            self.messages, self.recipients, self.delivered, self.bounced, self.queued
        );
        let d = &self.delivery_time;
        let _ = writeln!(
            out,
            "delivery time  p50 {}  p90 {}  p99 {}  max {}",
            t(d.p50),
            t(d.p90),
            t(d.p99),
            t(d.max)
        );
        let n = &self.attempts;
        let _ = writeln!(
            out,
            "attempts       p50 {}  p90 {}  p99 {}  max {}",
            n.p50, n.p90, n.p99, n.max
        );
        let _ = writeln!(
            out,
            "notices        {} delay warning(s), {} bounce(s)",
            self.delay_warnings, self.bounces
        );
        let hosts: Vec<String> = self
            .sessions_per_host
            .iter()
            .map(|(h, n)| format!("{h} {n}"))
            .collect();
        let _ = writeln!(out, "sessions       {}", hosts.join(", "));
        out
    }
}

impl Simulation {
    /// The sender's side as text: a block per message, then the summary. Times are
    /// offsets from the message's arrival, at `granularity`.
    pub fn render(&self, granularity: Granularity) -> String {
        let mut out = format!("sender {}\n\n", self.describe());
        for m in &self.messages {
            render_message(&mut out, m, granularity);
        }
        out.push_str(&self.summary.render());
        out
    }

    /// `postfix (maximal_backoff_time=1h)`: the model and what differs from its
    /// defaults.
    pub fn describe(&self) -> String {
        if self.settings.is_empty() {
            self.sender.clone()
        } else {
            format!("{} ({})", self.sender, self.settings.join(", "))
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn render_message(out: &mut String, m: &MessageOutcome, g: Granularity) {
    let at = |t: Duration| offset(t.saturating_sub(m.arrived), g);
    let to: Vec<&str> = m.recipients.iter().map(|r| r.address.as_str()).collect();
    let _ = writeln!(
        out,
        "message {} {} from <{}> to {}",
        m.number,
        m.message_id,
        m.from,
        to.join(", ")
    );
    // Tries and notices in time order; a notice after the try it followed.
    let mut lines: Vec<(Duration, usize, String)> = Vec::new();
    for t in &m.tries {
        let text = match &t.waited {
            Some(why) => format!("no connection: {why}"),
            None => t
                .sessions
                .iter()
                .map(session_text)
                .collect::<Vec<_>>()
                .join("; "),
        };
        lines.push((t.at, 0, text));
    }
    for n in &m.notices {
        let kind = match n.kind {
            NoticeKind::DelayWarning => "delay warning",
            NoticeKind::Bounce => "bounce",
        };
        lines.push((n.at, 1, format!("{kind} to <{}>: {}", m.from, n.text)));
    }
    lines.sort_by_key(|(at, order, _)| (*at, *order));
    for (t, _, text) in lines {
        let _ = writeln!(out, "  {:<10} {text}", at(t));
    }
    for r in &m.recipients {
        let fate = match &r.fate {
            Fate::Delivered { at: t, host } => format!("delivered {} via {host}", at(*t)),
            Fate::Bounced { at: t, why } => format!("bounced {}: {why}", at(*t)),
            Fate::Queued => "still queued".to_string(),
        };
        let _ = writeln!(out, "  = {}: {fate}", r.address);
    }
    out.push('\n');
}

/// The longest reply the text shows whole; the JSON has every reply in full.
const SHOWN_REPLY: usize = 72;

/// `reply`, cut to [`SHOWN_REPLY`] characters with `...` when longer.
fn shown(reply: &str) -> String {
    match reply.char_indices().nth(SHOWN_REPLY) {
        Some((cut, _)) => format!("{}...", &reply[..cut]),
        None => reply.to_string(),
    }
}

fn session_text(s: &SessionLog) -> String {
    let mut parts = Vec::new();
    for (rcpt, reply) in &s.refused {
        parts.push(format!("{} to RCPT <{rcpt}>", shown(reply)));
    }
    if let Some((stage, trouble)) = &s.failed {
        parts.push(format!(
            "{} at {}",
            shown(&trouble.to_string()),
            stage.name()
        ));
    }
    if s.delivered > 0 {
        parts.push(format!("{} delivered", s.delivered));
    }
    if parts.is_empty() {
        parts.push("nothing to send".to_string());
    }
    let over = if s.reused { " (open connection)" } else { "" };
    format!("{}{over}: {}", s.host, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let secs = |v: &[u64]| v.iter().map(|s| Duration::from_secs(*s)).collect();
        let p = Percentiles::of(secs(&[5, 1, 4, 2, 3, 6, 7, 8, 9, 10]));
        assert_eq!(p.p50.as_secs(), 5);
        assert_eq!(p.p90.as_secs(), 9);
        assert_eq!(p.p99.as_secs(), 10);
        assert_eq!(p.max.as_secs(), 10);
        assert_eq!(Percentiles::of(Vec::new()).max, Duration::ZERO);
        assert_eq!(Percentiles::of(secs(&[7])).p50.as_secs(), 7);
    }
}
