//! Exim's retry logic, as its specification describes it (chapters "Retry
//! configuration" and "Errors in outgoing SMTP"; `../shared/reference/provider-behaviours.md`
//! §6.2), and as `src/src/retry.c` computes it.
//!
//! - **Retry rules** in Exim's syntax, `F,2h,15m; G,16h,1h,1.5; F,4d,6h` by default
//!   (`configure.default`): each item holds until its cutoff, measured from the *first
//!   failure*; `F,cutoff,interval` retries every interval, `G,cutoff,first,factor` waits
//!   `first`, then each wait the last one times the factor. Past the last cutoff the next
//!   failure bounces ("retry timeout exceeded").
//! - **Retry records** by what failed: a host error (connection, greeting, EHLO, a lost
//!   connection before the end of data) is kept for the *host*, and the host is not tried
//!   for any message until its time; a message error (4xx to MAIL, DATA or the end of
//!   data) for the host and message; a recipient error (4xx to RCPT) for the address and
//!   sender (`address_retry_include_sender`). A success clears the record.
//! - **Queue runs** every `queue_run_interval` (the daemon's `-q` option) look at every
//!   message; an address or host whose retry time has not come is skipped.
//! - **Hosts**: MX order, equal preferences shuffled, at most `hosts_max_try`; the next
//!   host is tried in the same run for the addresses still deferred, until a host takes
//!   the message for some of them: then the rest wait for the next queue run, with no
//!   retry record of their own, as the real Exim of the end-to-end suite does. A 5xx greeting fails the addresses (Exim,
//!   unlike Postfix, does not move on).
//! - **Delay warnings** at each time of `delay_warning` (a colon-separated list, the last
//!   repeating).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Stage, Timeouts, Trouble};
use super::model::{MessageView, Model, Mx, Next, Notice, Plan, TryEnd, next_scan, order_hosts};
use super::params::{Kind, Params, Spec, compact, parse_duration};

const SPEC: &str = "[C] Exim specification (doc/doc-docbook/spec.xfpt)";

pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "retry",
        kind: Kind::Text(check_rules),
        default: "F,2h,15m; G,16h,1h,1.5; F,4d,6h",
        source: "[C] src/src/configure.default, the default retry rule `* * F,2h,15m; G,16h,1h,1.5; F,4d,6h`",
        what: "the retry rule's items, times from the first failure",
    },
    Spec {
        name: "queue_run_interval",
        kind: Kind::Duration,
        default: "30m",
        source: "[U] Debian's /etc/default/exim4 (QUEUEINTERVAL='30m'); Exim itself takes it from -q",
        what: "how often a queue runner looks at the deferred messages",
    },
    Spec {
        name: "delay_warning",
        kind: Kind::Text(check_warnings),
        default: "24h",
        source: SPEC,
        what: "ages at which the sender is warned, colon-separated, the last repeating",
    },
    Spec {
        name: "hosts_max_try",
        kind: Kind::Count,
        default: "5",
        source: SPEC,
        what: "hosts tried per delivery",
    },
    Spec {
        name: "queue_run_max",
        kind: Kind::Count,
        default: "5",
        source: SPEC,
        what: "queue runners at once",
    },
    Spec {
        name: "address_retry_include_sender",
        kind: Kind::Flag,
        default: "true",
        source: SPEC,
        what: "a recipient's retry record is per sender too",
    },
    Spec {
        name: "command_timeout",
        kind: Kind::Duration,
        default: "5m",
        source: SPEC,
        what: "wait for each reply but the end of data's",
    },
    Spec {
        name: "final_timeout",
        kind: Kind::Duration,
        default: "10m",
        source: SPEC,
        what: "wait for the reply to the end of data",
    },
];

/// The longest wait a geometric item gives.
const MAX_WAIT: Duration = Duration::from_secs(365 * 86_400);

/// One item of a retry rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Item {
    /// Every `interval` until `cutoff`.
    Fixed {
        cutoff: Duration,
        interval: Duration,
    },
    /// `first`, then the last wait times `factor`, until `cutoff`.
    Geometric {
        cutoff: Duration,
        first: Duration,
        factor: f64,
    },
}

impl Item {
    fn cutoff(&self) -> Duration {
        match self {
            Item::Fixed { cutoff, .. } | Item::Geometric { cutoff, .. } => *cutoff,
        }
    }
}

/// Reads `F,2h,15m; G,16h,1h,1.5; F,4d,6h`.
pub(super) fn parse_rules(text: &str) -> Result<Vec<Item>, String> {
    let hint =
        "write items like F,2h,15m; G,16h,1h,1.5 (F,cutoff,interval or G,cutoff,first,factor)";
    let mut items = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let fields: Vec<&str> = item.split(',').map(str::trim).collect();
        let time = |f: &str| parse_duration(f).map_err(|e| format!("{item}: {e}"));
        let parsed = match fields[..] {
            ["F" | "f", cutoff, interval] => Item::Fixed {
                cutoff: time(cutoff)?,
                interval: time(interval)?,
            },
            ["G" | "g", cutoff, first, factor] => Item::Geometric {
                cutoff: time(cutoff)?,
                first: time(first)?,
                factor: factor
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 1.0)
                    .ok_or_else(|| format!("{item}: the factor must be a number of at least 1"))?,
            },
            _ => return Err(format!("{item:?} is not a retry item; {hint}")),
        };
        if let Some(last) = items.last().map(Item::cutoff)
            && parsed.cutoff() < last
        {
            return Err(format!(
                "{item}: each cutoff must be at least the one before"
            ));
        }
        items.push(parsed);
    }
    if items.is_empty() {
        return Err(format!("no retry items; {hint}"));
    }
    Ok(items)
}

fn check_rules(text: &str) -> Result<(), String> {
    parse_rules(text).map(|_| ())
}

fn parse_warnings(text: &str) -> Result<Vec<Duration>, String> {
    text.split(':')
        .map(|t| parse_duration(t).map_err(|e| format!("{t}: {e}")))
        .collect()
}

fn check_warnings(text: &str) -> Result<(), String> {
    parse_warnings(text).map(|_| ())
}

/// A retry record: when the thing first failed, when it was last tried, when it may be
/// tried next, and whether its rule has run out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Record {
    pub first_failed: Duration,
    pub last_try: Duration,
    pub next_try: Duration,
    pub expired: bool,
}

/// The record after a failure at `now` (`retry.c`, `retry_update`): the item whose cutoff
/// the time since the first failure has not reached decides the wait.
pub(super) fn after_failure(rules: &[Item], old: Option<Record>, now: Duration) -> Record {
    let first_failed = old.map_or(now, |r| r.first_failed);
    let failing = now.saturating_sub(first_failed);
    let Some(item) = rules.iter().find(|i| failing < i.cutoff()) else {
        return Record {
            first_failed,
            last_try: now,
            next_try: now,
            expired: true,
        };
    };
    let wait = match *item {
        Item::Fixed { interval, .. } => interval,
        Item::Geometric { first, factor, .. } => match old {
            None => first,
            Some(r) => {
                // The last gap: as predicted, or as it came if the try came early.
                let predicted = r.next_try.saturating_sub(r.last_try);
                let actual = now.saturating_sub(r.last_try);
                let last = predicted.min(actual);
                if last < first {
                    first
                } else {
                    // A huge factor waits a year at most, and never overflows.
                    Duration::try_from_secs_f64(last.as_secs_f64() * factor)
                        .unwrap_or(MAX_WAIT)
                        .min(MAX_WAIT)
                }
            }
        },
    };
    Record {
        first_failed,
        last_try: now,
        next_try: now + wait,
        expired: false,
    }
}

pub(super) struct Exim {
    rules: Vec<Item>,
    queue_run_interval: Duration,
    warnings: Vec<Duration>,
    hosts_max_try: usize,
    lanes: usize,
    include_sender: bool,
    timeouts: Timeouts,
    hosts: HashMap<String, Record>,
    messages: HashMap<(String, usize), Record>,
    addresses: HashMap<String, Record>,
    /// Lookups that failed for now, by domain.
    lookups: HashMap<String, Record>,
    /// Per message: the records this try touched ran out.
    expired: HashSet<usize>,
    /// Warnings sent per message.
    warned: HashMap<usize, usize>,
}

impl Exim {
    pub(super) fn new(p: &Params) -> Exim {
        let command = p.duration("command_timeout");
        Exim {
            rules: parse_rules(p.text("retry")).unwrap_or_default(),
            queue_run_interval: p.duration("queue_run_interval"),
            warnings: parse_warnings(p.text("delay_warning")).unwrap_or_default(),
            hosts_max_try: usize::try_from(p.count("hosts_max_try")).unwrap_or(usize::MAX),
            lanes: usize::try_from(p.count("queue_run_max")).unwrap_or(1),
            include_sender: p.flag("address_retry_include_sender"),
            timeouts: Timeouts {
                greeting: command,
                helo: command,
                mail: command,
                rcpt: command,
                data: command,
                dot: p.duration("final_timeout"),
            },
            hosts: HashMap::new(),
            messages: HashMap::new(),
            addresses: HashMap::new(),
            lookups: HashMap::new(),
            expired: HashSet::new(),
            warned: HashMap::new(),
        }
    }

    fn address_key(&self, message: &MessageView, address: &str) -> String {
        if self.include_sender {
            format!("{}:<{}>", address.to_ascii_lowercase(), message.from)
        } else {
            address.to_ascii_lowercase()
        }
    }

    /// Records a failure of what `which` names, for message `index`.
    fn fail(&mut self, which: Which, now: Duration, index: usize) {
        let rules = &self.rules;
        let record = match which {
            Which::Host(h) => bump(rules, &mut self.hosts, h, now),
            Which::Message(h) => bump(rules, &mut self.messages, (h, index), now),
            Which::Address(a) => bump(rules, &mut self.addresses, a, now),
        };
        if record.expired {
            self.expired.insert(index);
        }
    }
}

/// The retry record of `key` in `records` after a failure at `now`.
fn bump<K: std::hash::Hash + Eq>(
    rules: &[Item],
    records: &mut HashMap<K, Record>,
    key: K,
    now: Duration,
) -> Record {
    let record = after_failure(rules, records.get(&key).copied(), now);
    records.insert(key, record);
    record
}

enum Which {
    Host(String),
    Message(String),
    Address(String),
}

/// Whether a failure at `stage` is a host error (spec, "Errors in outgoing SMTP"):
/// any error on connection or to EHLO/HELO, a lost connection except after the end of
/// data, a timeout other than after MAIL, RCPT or the end of data.
fn is_host_error(stage: Stage, trouble: &Trouble) -> bool {
    match trouble {
        Trouble::Reply { .. } => stage.is_handshake(),
        Trouble::Lost => stage != Stage::Dot,
        Trouble::Timeout { .. } => !matches!(stage, Stage::Mail | Stage::Rcpt | Stage::Dot),
    }
}

impl Model for Exim {
    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn plan(
        &mut self,
        message: &MessageView,
        mx: &[Mx],
        now: Duration,
        rng: &mut ChaCha8Rng,
    ) -> Plan {
        self.expired.remove(&message.index);
        let due = |r: Option<&Record>| r.is_none_or(|r| r.next_try <= now || r.expired);
        let recipients: Vec<usize> = message
            .pending
            .iter()
            .filter(|(_, a)| due(self.addresses.get(&self.address_key(message, a))))
            .map(|(i, _)| *i)
            .collect();
        if recipients.is_empty() {
            return Plan::Wait {
                why: "retry time not reached for any address".to_string(),
            };
        }
        let hosts: Vec<String> = order_hosts(mx, true, usize::MAX, rng)
            .into_iter()
            .filter(|h| {
                due(self.hosts.get(h)) && due(self.messages.get(&(h.clone(), message.index)))
            })
            .take(self.hosts_max_try)
            .collect();
        if hosts.is_empty() {
            return Plan::Wait {
                why: "retry time not reached for any host".to_string(),
            };
        }
        Plan::Try { hosts, recipients }
    }

    fn after_session(
        &mut self,
        message: &MessageView,
        host: &str,
        session: &Session,
        now: Duration,
    ) -> bool {
        let index = message.index;
        for (i, reply) in &session.rcpt {
            let Some((_, address)) = message.pending.iter().find(|(p, _)| p == i) else {
                continue;
            };
            let key = self.address_key(message, address);
            if reply.is_ok() {
                self.addresses.remove(&key);
            } else if !reply.is_permanent() && session.delivered.is_empty() {
                // Beside recipients the host took, a 4xx leaves no retry record (Exim
                // logs it `defer (0)`, not the RCPT error's -44): the next queue run
                // tries it again, on every host.
                self.fail(Which::Address(key), now, index);
            }
        }
        match &session.failure {
            None => {
                self.hosts.remove(host);
                self.messages.remove(&(host.to_string(), index));
            }
            Some((stage, trouble)) if is_host_error(*stage, trouble) => {
                self.fail(Which::Host(host.to_string()), now, index);
            }
            Some((Stage::Rcpt, _)) => {
                self.hosts.remove(host);
            }
            Some(_) => {
                self.hosts.remove(host);
                self.fail(Which::Message(host.to_string()), now, index);
            }
        }
        // A host that took the message for some recipients ends the delivery for the
        // rest, which the next queue run takes up, as the real Exim 4.96 of the
        // end-to-end suite does (tests/e2e/model-check.toml, dave@ and slow-eve@ in one
        // message).
        session.delivered.is_empty()
    }

    fn bounces_on_5xx_handshake(&self) -> bool {
        true
    }

    fn next(&mut self, message: &MessageView, end: Option<&TryEnd>, now: Duration) -> Next {
        if end.is_some() && self.expired.remove(&message.index) {
            let last = end
                .and_then(TryEnd::last_failure)
                .map(|(host, stage, trouble)| format!("{host}: {trouble} (at {})", stage.name()))
                .unwrap_or_default();
            return Next::GiveUp {
                why: format!("retry timeout exceeded; last error: {last}"),
            };
        }
        Next::At(next_scan(
            now + Duration::from_millis(1),
            self.queue_run_interval,
        ))
    }

    /// A lookup that fails for now is a deferral with a retry record of its own (per
    /// domain), so a lookup that keeps failing ends the message at the rule's cutoff.
    fn lookup_failed(&mut self, message: &MessageView, why: &str, now: Duration) -> Next {
        let domain = message.domain();
        let record = bump(&self.rules, &mut self.lookups, domain, now);
        if record.expired {
            return Next::GiveUp {
                why: format!("retry timeout exceeded; last error: {why}"),
            };
        }
        Next::At(next_scan(
            record.next_try.max(now + Duration::from_millis(1)),
            self.queue_run_interval,
        ))
    }

    fn notices(&mut self, message: &MessageView, now: Duration) -> Vec<Notice> {
        if message.is_bounce() || self.warnings.is_empty() {
            return Vec::new();
        }
        let sent = self.warned.get(&message.index).copied().unwrap_or(0);
        // The time of warning `n` (0-based): the list's, then the last one repeating.
        let at = |n: usize| -> Duration {
            let listed = self.warnings.len();
            match self.warnings.get(n) {
                Some(t) => *t,
                None => {
                    let last = self.warnings[listed - 1];
                    last + last * u32::try_from(n + 1 - listed).unwrap_or(u32::MAX)
                }
            }
        };
        let due = at(sent);
        if due.is_zero() || now.saturating_sub(message.arrived) < due {
            return Vec::new();
        }
        self.warned.insert(message.index, sent + 1);
        vec![Notice {
            text: format!(
                "Warning: message {} delayed {}",
                message.index + 1,
                compact(due)
            ),
        }]
    }

    fn bounce(&self, why: &str) -> String {
        format!("Mail delivery failed: returning message to sender: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    /// The spec, "Retry rules": with the default rule, "every 15 minutes for 2 hours, then
    /// at intervals starting at one hour and increasing by a factor of 1.5 until 16 hours
    /// have passed, then every 6 hours up to 4 days".
    #[test]
    fn the_default_rule_is_fixed_then_geometric_then_fixed_until_four_days() {
        let rules = parse_rules("F,2h,15m; G,16h,1h,1.5; F,4d,6h").unwrap();
        let mut record = None;
        let mut now = Duration::ZERO;
        let mut waits = Vec::new();
        loop {
            let r = after_failure(&rules, record, now);
            if r.expired {
                break;
            }
            waits.push(secs(r.next_try - now) / 60);
            now = r.next_try;
            record = Some(r);
        }
        // 8 tries at 15 minutes fill the first 2 hours.
        assert_eq!(&waits[..8], &[15; 8]);
        // Then 1 h, 1.5 h, 2.25 h, 3.375 h, 5.0625 h, 7.59 h: the last is chosen 15.2 h
        // after the first failure, still under 16 h, so it runs past the cutoff.
        assert_eq!(&waits[8..14], &[60, 90, 135, 202, 303, 455]);
        // The rest every 6 hours, until 4 days after the first failure.
        assert!(waits[14..].iter().all(|w| *w == 360), "{waits:?}");
        assert!(
            secs(now) >= 4 * 86_400 && secs(now) < 4 * 86_400 + 6 * 3600,
            "{now:?}"
        );
    }

    #[test]
    fn rules_that_do_not_read_say_how_to_write_them() {
        assert!(
            parse_rules("F,2h")
                .unwrap_err()
                .contains("F,cutoff,interval")
        );
        assert!(
            parse_rules("G,16h,1h,0.5")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            parse_rules("F,4d,6h; F,2h,15m")
                .unwrap_err()
                .contains("cutoff")
        );
        assert!(parse_rules("").is_err());
        // A factor that would overflow waits a year, at most.
        let rules = parse_rules("G,4d,1h,1e300").unwrap();
        let first = after_failure(&rules, None, Duration::ZERO);
        let second = after_failure(&rules, Some(first), first.next_try);
        assert_eq!(second.next_try - first.next_try, MAX_WAIT);
    }

    /// The spec, "Retry rules": lookups that keep failing are retried by the rules, then
    /// the address fails at the last cutoff (4 days with the default rule).
    #[test]
    fn a_lookup_that_keeps_failing_gives_up_at_the_cutoff() {
        let mut exim = Exim::new(&Params::defaults("exim", SPECS));
        let view = crate::sender::model::one_recipient();
        let mut now = Duration::ZERO;
        let why = loop {
            match exim.lookup_failed(&view, "Name service error", now) {
                Next::At(t) => now = t,
                Next::GiveUp { why } => break why,
            }
            assert!(now < Duration::from_secs(5 * 86_400), "never gave up");
        };
        assert!(
            why.contains("retry timeout exceeded") && why.contains("Name service"),
            "{why}"
        );
        assert!(now >= Duration::from_secs(4 * 86_400));
    }

    /// The spec, `delay_warning`: the last time in the list repeats.
    #[test]
    fn delay_warnings_repeat_the_last_time() {
        let mut p = Params::defaults("exim", SPECS);
        p.assign(SPECS, "delay_warning=4h:24h").unwrap();
        let mut exim = Exim::new(&p);
        let view = crate::sender::model::one_recipient();
        let h = |n| Duration::from_secs(n * 3600);
        let times: Vec<u64> = (0..=72)
            .filter(|n| !exim.notices(&view, h(*n)).is_empty())
            .collect();
        assert_eq!(times, [4, 24, 48, 72]);
    }
}
