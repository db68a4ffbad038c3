//! What every model of a sending MTA decides, and what it is told: the seam between the
//! queue in virtual time (`engine`) and each MTA's rules (`postfix`, `exim`, `exchange`,
//! `sendmail`, `custom`).
//!
//! The engine owns the messages, the sessions and the clock; a model owns the MTA's
//! state (Postfix's suspended destinations, Exim's retry records, Exchange's queue in
//! retry) and answers four questions: which hosts and recipients to try now, whether to
//! go on to the next host after a session, when to look at a message again, and which
//! notices the sender owes.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Stage, Timeouts, Trouble};

/// One MX host of a domain, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    /// The farm's host name (`mx1`), which the in-memory connection takes.
    pub host: String,
    pub preference: u16,
}

/// A message as the model sees it.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    pub index: usize,
    pub from: &'a str,
    pub arrived: Duration,
    /// Recipients still pending (index, address), all of one domain.
    pub pending: &'a [(usize, &'a str)],
    /// How many tries of this message have been made (sessions or not).
    pub tries: usize,
}

impl MessageView<'_> {
    /// The domain of its pending recipients (one domain, but for notices: the first's),
    /// lower case: the destination whose queue an MTA keeps state for.
    pub fn domain(&self) -> String {
        self.pending
            .first()
            .and_then(|(_, a)| a.rsplit_once('@'))
            .map_or(String::new(), |(_, d)| d.to_ascii_lowercase())
    }

    /// Whether this is a bounce (null sender), which some MTAs keep for a shorter time.
    pub fn is_bounce(&self) -> bool {
        self.from.is_empty()
    }
}

/// What to do now for a message's recipients of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try these hosts in order, for these recipients (indexes into the message).
    Try {
        hosts: Vec<String>,
        recipients: Vec<usize>,
    },
    /// No connection now, and why (Postfix: "delivery temporarily suspended"; Exim:
    /// "retry time not reached for any host").
    Wait { why: String },
}

/// How a try of one domain's recipients ended, for the model's retry decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryEnd<'a> {
    /// The sessions, in order, with their host.
    pub sessions: &'a [(String, Session)],
    /// Whether any session got past the handshake.
    pub any_handshake: bool,
}

impl TryEnd<'_> {
    /// The host and failure of the last session, if it failed: what the sender's log
    /// gives as the reason of the deferral.
    pub fn last_failure(&self) -> Option<(&str, Stage, &Trouble)> {
        let (host, session) = self.sessions.last()?;
        let (stage, trouble) = session.failure.as_ref()?;
        Some((host, *stage, trouble))
    }
}

/// When the engine looks at a message next, if it still has pending recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    At(Duration),
    /// Give up now: the pending recipients bounce with this reason.
    GiveUp {
        why: String,
    },
}

/// A notice the sending MTA sends its own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
}

/// How one delivery may use the sender's connection cache: Postfix's delivery request
/// flags `DEL_REQ_FLAG_CONN_LOAD` (look for an open connection first) and
/// `DEL_REQ_FLAG_CONN_STORE` (keep this delivery's connection open after it), with the
/// SMTP client's limits on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    pub load: bool,
    pub store: bool,
    /// How long a saved connection waits for its next use
    /// (`smtp_connection_cache_time_limit`).
    pub keep_for: Duration,
    /// A connection this old is not saved again (`smtp_connection_reuse_time_limit`).
    pub reuse_time: Duration,
    /// A connection reused this often is not saved again (0: no limit;
    /// `smtp_connection_reuse_count_limit`).
    pub reuse_count: u32,
    /// The wait for the reply to the RSET that probes a cached connection
    /// (`smtp_rset_timeout`).
    pub probe_timeout: Duration,
}

impl CacheUse {
    /// Neither: a new connection for every session, QUIT after each.
    pub const NONE: CacheUse = CacheUse {
        load: false,
        store: false,
        keep_for: Duration::ZERO,
        reuse_time: Duration::ZERO,
        reuse_count: 0,
        probe_timeout: Duration::ZERO,
    };
}

/// A destination (the recipients' domain) as the engine's queue sees it when one of its
/// deliveries starts or ends.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub name: &'a str,
    /// Deliveries to it under way, the one starting or ending included.
    pub busy: usize,
    /// When its last delivery ended, while its queue has been in use since (`None`
    /// after it emptied: Postfix's qmgr then drops the in-core queue and what it knew).
    pub last_done: Option<Duration>,
}

/// An MTA's behaviour. Implementations keep whatever state the MTA keeps across
/// messages and tries; the engine calls them from one task at a time.
pub trait Model: Send {
    /// Timeouts of each stage of a session.
    fn timeouts(&self) -> Timeouts;
    /// How many deliveries run at once.
    fn lanes(&self) -> usize;
    /// The EHLO name.
    fn helo(&self) -> &str {
        "mta.sender.test"
    }
    /// Which hosts to try now, and for which pending recipients.
    fn plan(
        &mut self,
        message: &MessageView,
        mx: &[Mx],
        now: Duration,
        rng: &mut ChaCha8Rng,
    ) -> Plan;
    /// The most sessions of one try that count (Postfix's `smtp_mx_session_limit`), and
    /// whether a session counts.
    fn session_limit(&self) -> Option<usize> {
        None
    }
    /// Told of each session as it ends; `false` stops the try (the next host is not
    /// tried).
    fn after_session(
        &mut self,
        message: &MessageView,
        host: &str,
        session: &Session,
        now: Duration,
    ) -> bool;
    /// Whether a 5xx greeting or EHLO reply bounces the recipients (Exim) instead of
    /// moving on to the next host (Postfix's `smtp_skip_5xx_greeting`).
    fn bounces_on_5xx_handshake(&self) -> bool {
        false
    }
    /// After a try (or a wait) that left recipients pending, at `now`.
    fn next(&mut self, message: &MessageView, end: Option<&TryEnd>, now: Duration) -> Next;
    /// After a lookup of the domain's MX hosts or their addresses failed for now (`why`,
    /// as the sender logs it). Most MTAs retry it as any deferral.
    fn lookup_failed(&mut self, message: &MessageView, why: &str, now: Duration) -> Next {
        let _ = why;
        self.next(message, None, now)
    }
    /// The delay notices due at `now` for a message still pending (called after each
    /// look); the model remembers what it sent.
    fn notices(&mut self, message: &MessageView, now: Duration) -> Vec<Notice>;
    /// The text of a bounce for `why`.
    fn bounce(&self, why: &str) -> String;
    /// How many deliveries to `destination` may run at once now (Postfix's concurrency
    /// window); the engine holds the others until one ends.
    fn window(&self, destination: &str) -> usize {
        let _ = destination;
        usize::MAX
    }
    /// Told a delivery to `destination` starts, at `now`; answers how it may use the
    /// connection cache.
    fn delivery_starts(&mut self, destination: &Destination, now: Duration) -> CacheUse {
        let _ = (destination, now);
        CacheUse::NONE
    }
    /// Told a delivery to `destination` ended; `site_failed` when its last session
    /// failed the host (it refused to talk, or the connection was lost or timed out).
    fn delivery_ends(&mut self, destination: &Destination, site_failed: bool, now: Duration) {
        let _ = (destination, site_failed, now);
    }
    /// Told nothing is queued for `destination` any more: an MTA that keeps state per
    /// in-core queue forgets it.
    fn queue_done(&mut self, destination: &str) {
        let _ = destination;
    }
}

/// Which messages a one-time delay warning went out for.
#[derive(Debug, Default)]
pub struct WarnedOnce(std::collections::HashSet<usize>);

impl WarnedOnce {
    /// Whether the warning due at age `after` (`None`: the MTA is set never to warn) goes
    /// out for `message` now: not for a bounce, not before that age, once. Then it counts
    /// as sent.
    pub fn due(&mut self, message: &MessageView, now: Duration, after: Option<Duration>) -> bool {
        after.is_some_and(|after| {
            !message.is_bounce()
                && now.saturating_sub(message.arrived) >= after
                && self.0.insert(message.index)
        })
    }
}

/// The hosts of `mx` by preference, those of equal preference shuffled when `randomize`
/// (as Postfix's `smtp_randomize_addresses` and Exim do), at most `limit`.
pub fn order_hosts(mx: &[Mx], randomize: bool, limit: usize, rng: &mut ChaCha8Rng) -> Vec<String> {
    use rand_chacha::rand_core::Rng;
    let mut sorted: Vec<&Mx> = mx.iter().collect();
    sorted.sort_by_key(|m| m.preference);
    if randomize {
        let mut start = 0;
        while start < sorted.len() {
            let preference = sorted[start].preference;
            let end = sorted[start..]
                .iter()
                .position(|m| m.preference != preference)
                .map_or(sorted.len(), |n| start + n);
            // Fisher-Yates over the run of equal preference.
            for i in (start + 1..end).rev() {
                let span = (i - start + 1) as u64;
                let j = start + (rng.next_u64() % span) as usize;
                sorted.swap(i, j);
            }
            start = end;
        }
    }
    sorted
        .into_iter()
        .take(limit)
        .map(|m| m.host.clone())
        .collect()
}

/// The first time at or after `t` of a queue scan every `period` from farm time zero.
pub fn next_scan(t: Duration, period: Duration) -> Duration {
    if period.is_zero() {
        return t;
    }
    let p = period.as_millis();
    let k = t.as_millis().div_ceil(p);
    Duration::from_millis(u64::try_from(k * p).unwrap_or(u64::MAX))
}

/// A message of `a@sender.test` to `b@x.test` that arrived at farm time zero, as the
/// models' tests ask about.
#[cfg(test)]
pub(crate) fn one_recipient() -> MessageView<'static> {
    MessageView {
        index: 0,
        from: "a@sender.test",
        arrived: Duration::ZERO,
        pending: &[(0, "b@x.test")],
        tries: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn mx(list: &[(&str, u16)]) -> Vec<Mx> {
        list.iter()
            .map(|(h, p)| Mx {
                host: h.to_string(),
                preference: *p,
            })
            .collect()
    }

    #[test]
    fn hosts_go_by_preference_and_equal_ones_are_shuffled_by_the_seed() {
        let list = mx(&[("b", 20), ("a1", 10), ("a2", 10), ("a3", 10)]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plain = order_hosts(&list, false, 5, &mut rng);
        assert_eq!(plain, ["a1", "a2", "a3", "b"]);
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let order = order_hosts(&list, true, 5, &mut rng);
            assert_eq!(order[3], "b", "a lower preference stays last");
            orders.insert(order);
        }
        assert_eq!(
            orders.len(),
            6,
            "every order of the three equal hosts comes up"
        );
        assert_eq!(order_hosts(&list, false, 2, &mut rng), ["a1", "a2"]);
    }

    #[test]
    fn scans_come_every_period_from_zero() {
        let s = |t, p| next_scan(Duration::from_secs(t), Duration::from_secs(p)).as_secs();
        assert_eq!(s(0, 300), 0);
        assert_eq!(s(1, 300), 300);
        assert_eq!(s(300, 300), 300);
        assert_eq!(s(301, 300), 600);
        assert_eq!(s(301, 0), 301);
    }
}
