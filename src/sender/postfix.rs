//! Postfix's queue manager and SMTP client, as `postconf(5)`, `qmgr(8)` and the sources
//! describe them (`../shared/reference/provider-behaviours.md` §6.1).
//!
//! - **Backoff**: a deferred message waits its age (time since it arrived), at least
//!   `minimal_backoff_time` and at most `maximal_backoff_time` (`qmgr_active.c`: the
//!   queue file's time is set to now plus that delay), and is picked up by the first
//!   deferred-queue scan after that, scans coming every `queue_run_delay`. With the
//!   defaults that is 5, 10, 20, 40, 80 minutes, then every 4000 s rounded up to the scan.
//! - **A try** walks the MX hosts by preference, equal ones shuffled
//!   (`smtp_randomize_addresses`), at most `smtp_mx_address_limit`, and at most
//!   `smtp_mx_session_limit` sessions that got past the handshake: a host that refuses
//!   to talk (4xx or 5xx greeting, 421 to EHLO, a connection lost before EHLO was
//!   answered) sends Postfix on to the next without counting. A 4xx to RCPT keeps that recipient for the next host.
//! - **A destination whose last host tried failed the site** (refused to talk, or the
//!   connection was lost or timed out) is suspended for `minimal_backoff_time`: its other
//!   messages are deferred without a connection ("delivery temporarily suspended",
//!   `qmgr_queue_throttle`).
//! - **Expiry**: a message deferred when older than `maximal_queue_lifetime`
//!   (`bounce_queue_lifetime` for a bounce) is returned to its sender.
//! - **Delay warning**: with `delay_warning_time` set (off by default), once, after the
//!   first try that leaves the message deferred past that age.
//! - **Concurrency**: a destination's in-core queue lets `initial_destination_concurrency`
//!   deliveries go at once, one more after each that did not fail the site, up to
//!   `default_destination_concurrency_limit` (`qmgr_queue_unthrottle`, feedback 1).
//! - **Connection cache** (`smtp_connection_cache_on_demand`): turned on for a destination
//!   by a delivery picked back to back with its last one (`qmgr_entry_select`); a
//!   delivery then keeps its connection open for `smtp_connection_cache_time_limit`, and
//!   the next one takes it after an RSET, the destination's binding first: straight to
//!   the host that took the last good session (`engine`, `delivery`, `cache`).

use std::collections::HashMap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Stage, Timeouts, Trouble};
use super::model::{
    CacheUse, Destination, MessageView, Model, Mx, Next, Notice, Plan, TryEnd, WarnedOnce,
    next_scan, order_hosts,
};
use super::params::{Kind, Params, Spec, compact};

const PC: &str = "[C] postconf(5), proto/postconf.proto (Postfix 3.12 snapshot)";

pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "minimal_backoff_time",
        kind: Kind::Duration,
        default: "300s",
        source: PC,
        what: "the least a deferred message waits; also how long a destination whose hosts all failed stays suspended",
    },
    Spec {
        name: "maximal_backoff_time",
        kind: Kind::Duration,
        default: "4000s",
        source: PC,
        what: "the most a deferred message waits",
    },
    Spec {
        name: "queue_run_delay",
        kind: Kind::Duration,
        default: "300s",
        source: PC,
        what: "how often the deferred queue is scanned",
    },
    Spec {
        name: "maximal_queue_lifetime",
        kind: Kind::Duration,
        default: "5d",
        source: PC,
        what: "age after which a deferred message is returned",
    },
    Spec {
        name: "bounce_queue_lifetime",
        kind: Kind::Duration,
        default: "5d",
        source: PC,
        what: "the same for bounces (null sender)",
    },
    Spec {
        name: "delay_warning_time",
        kind: Kind::Duration,
        default: "0h",
        source: PC,
        what: "age at which the sender is warned once (0: never)",
    },
    Spec {
        name: "smtp_mx_address_limit",
        kind: Kind::Count,
        default: "5",
        source: PC,
        what: "MX addresses tried per delivery",
    },
    Spec {
        name: "smtp_mx_session_limit",
        kind: Kind::Count,
        default: "2",
        source: PC,
        what: "sessions per delivery that got past the handshake",
    },
    Spec {
        name: "smtp_skip_4xx_greeting",
        kind: Kind::Flag,
        default: "yes",
        source: "[C] postconf(5): Postfix 2.0 and earlier; later versions always skip",
        what: "go on to the next host after a 4xx greeting",
    },
    Spec {
        name: "smtp_skip_5xx_greeting",
        kind: Kind::Flag,
        default: "yes",
        source: PC,
        what: "go on to the next host after a 5xx greeting, instead of bouncing",
    },
    Spec {
        name: "smtp_randomize_addresses",
        kind: Kind::Flag,
        default: "yes",
        source: PC,
        what: "shuffle MX hosts of equal preference",
    },
    Spec {
        name: "default_process_limit",
        kind: Kind::Count,
        default: "100",
        source: PC,
        what: "deliveries at once, all destinations together (smtp processes)",
    },
    Spec {
        name: "initial_destination_concurrency",
        kind: Kind::Count,
        default: "5",
        source: PC,
        what: "deliveries to one destination at once, to begin with; one more after each that did not fail the site",
    },
    Spec {
        name: "default_destination_concurrency_limit",
        kind: Kind::Count,
        default: "20",
        source: PC,
        what: "the most deliveries to one destination at once",
    },
    Spec {
        name: "smtp_connection_cache_on_demand",
        kind: Kind::Flag,
        default: "yes",
        source: PC,
        what: "keep connections open for a destination while its deliveries come back to back",
    },
    Spec {
        name: "smtp_connection_cache_destinations",
        kind: Kind::Text(check_destinations),
        default: "",
        source: PC,
        what: "destinations whose connections are always kept open (comma or space separated)",
    },
    Spec {
        name: "smtp_connection_cache_time_limit",
        kind: Kind::Duration,
        default: "2s",
        source: PC,
        what: "how long an open connection waits in the cache for its next delivery",
    },
    Spec {
        name: "smtp_connection_reuse_time_limit",
        kind: Kind::Duration,
        default: "300s",
        source: PC,
        what: "a connection this old is not kept open again",
    },
    Spec {
        name: "smtp_connection_reuse_count_limit",
        kind: Kind::Count,
        default: "0",
        source: PC,
        what: "a connection reused this often is not kept open again (0: no limit)",
    },
    Spec {
        name: "smtp_rset_timeout",
        kind: Kind::Duration,
        default: "20s",
        source: PC,
        what: "wait for the reply to the RSET that checks a cached connection",
    },
    Spec {
        name: "smtp_helo_timeout",
        kind: Kind::Duration,
        default: "300s",
        source: PC,
        what: "wait for the greeting and the EHLO reply",
    },
    Spec {
        name: "smtp_mail_timeout",
        kind: Kind::Duration,
        default: "300s",
        source: PC,
        what: "wait for the MAIL reply",
    },
    Spec {
        name: "smtp_rcpt_timeout",
        kind: Kind::Duration,
        default: "300s",
        source: PC,
        what: "wait for each RCPT reply",
    },
    Spec {
        name: "smtp_data_init_timeout",
        kind: Kind::Duration,
        default: "120s",
        source: PC,
        what: "wait for the DATA reply",
    },
    Spec {
        name: "smtp_data_done_timeout",
        kind: Kind::Duration,
        default: "600s",
        source: PC,
        what: "wait for the reply to the end of data",
    },
];

/// `smtp_connection_cache_destinations`: names only (no `/file` or `type:table` here).
fn check_destinations(text: &str) -> Result<(), String> {
    match text
        .split([',', ' '])
        .find(|d| d.starts_with('/') || d.contains(':'))
    {
        Some(d) => Err(format!(
            "{d}: the model takes domain names only, not a file or a lookup table; write them out, e.g. aol.test, yahoo.test"
        )),
        None => Ok(()),
    }
}

/// What qmgr keeps of a destination while its in-core queue exists.
#[derive(Debug, Clone, Copy)]
struct InCoreQueue {
    /// Deliveries allowed at once.
    window: usize,
    /// On-demand connection caching: look for open connections, keep them open.
    load: bool,
    store: bool,
}

pub(super) struct Postfix {
    min_backoff: Duration,
    max_backoff: Duration,
    queue_run_delay: Duration,
    lifetime: Duration,
    bounce_lifetime: Duration,
    delay_warning: Duration,
    address_limit: usize,
    session_limit: usize,
    skip_4xx_greeting: bool,
    skip_5xx_greeting: bool,
    randomize: bool,
    lanes: usize,
    initial_concurrency: usize,
    concurrency_limit: usize,
    cache_on_demand: bool,
    cache_destinations: Vec<String>,
    cache: CacheUse,
    queues: HashMap<String, InCoreQueue>,
    timeouts: Timeouts,
    /// Destinations suspended until a time, with the reason qmgr gives.
    suspended: HashMap<String, (Duration, String)>,
    /// Messages warned about.
    warned: WarnedOnce,
}

impl Postfix {
    pub(super) fn new(p: &Params) -> Postfix {
        Postfix {
            min_backoff: p.duration("minimal_backoff_time"),
            max_backoff: p.duration("maximal_backoff_time"),
            queue_run_delay: p.duration("queue_run_delay"),
            lifetime: p.duration("maximal_queue_lifetime"),
            bounce_lifetime: p.duration("bounce_queue_lifetime"),
            delay_warning: p.duration("delay_warning_time"),
            address_limit: usize::try_from(p.count("smtp_mx_address_limit")).unwrap_or(usize::MAX),
            session_limit: usize::try_from(p.count("smtp_mx_session_limit")).unwrap_or(usize::MAX),
            skip_4xx_greeting: p.flag("smtp_skip_4xx_greeting"),
            skip_5xx_greeting: p.flag("smtp_skip_5xx_greeting"),
            randomize: p.flag("smtp_randomize_addresses"),
            lanes: usize::try_from(p.count("default_process_limit")).unwrap_or(usize::MAX),
            initial_concurrency: usize::try_from(p.count("initial_destination_concurrency"))
                .unwrap_or(usize::MAX)
                .max(1),
            concurrency_limit: usize::try_from(p.count("default_destination_concurrency_limit"))
                .unwrap_or(usize::MAX),
            cache_on_demand: p.flag("smtp_connection_cache_on_demand"),
            cache_destinations: p
                .text("smtp_connection_cache_destinations")
                .split([',', ' '])
                .filter(|d| !d.is_empty())
                .map(str::to_ascii_lowercase)
                .collect(),
            cache: CacheUse {
                load: false,
                store: false,
                keep_for: p.duration("smtp_connection_cache_time_limit"),
                reuse_time: p.duration("smtp_connection_reuse_time_limit"),
                reuse_count: u32::try_from(p.count("smtp_connection_reuse_count_limit"))
                    .unwrap_or(u32::MAX),
                probe_timeout: p.duration("smtp_rset_timeout"),
            },
            queues: HashMap::new(),
            timeouts: Timeouts {
                greeting: p.duration("smtp_helo_timeout"),
                helo: p.duration("smtp_helo_timeout"),
                mail: p.duration("smtp_mail_timeout"),
                rcpt: p.duration("smtp_rcpt_timeout"),
                data: p.duration("smtp_data_init_timeout"),
                dot: p.duration("smtp_data_done_timeout"),
            },
            suspended: HashMap::new(),
            warned: WarnedOnce::default(),
        }
    }

    /// The wait after a deferral at `now` of a message that arrived at `arrived`.
    pub(super) fn backoff(&self, arrived: Duration, now: Duration) -> Duration {
        now.saturating_sub(arrived)
            .clamp(self.min_backoff, self.max_backoff.max(self.min_backoff))
    }
}

/// What Postfix's log says of a failed session: `host mx1 said: 451 ... (in reply to RCPT
/// TO command)`, `host mx1 refused to talk to me: 421 ...`, `lost connection with mx1`.
pub(super) fn said(host: &str, stage: Stage, trouble: &Trouble) -> String {
    match (stage, trouble) {
        (Stage::Greeting, Trouble::Reply { reply }) => {
            format!("host {host} refused to talk to me: {reply}")
        }
        (_, Trouble::Reply { reply }) => {
            format!(
                "host {host} said: {reply} (in reply to {} command)",
                stage.name()
            )
        }
        (_, Trouble::Lost) => format!(
            "lost connection with {host} while waiting for {}",
            stage.name()
        ),
        (_, Trouble::Timeout { .. }) => format!(
            "conversation with {host} timed out while waiting for {}",
            stage.name()
        ),
    }
}

impl Model for Postfix {
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
        let destination = message.domain();
        if let Some((until, why)) = self.suspended.get(&destination)
            && *until > now
        {
            return Plan::Wait {
                why: format!("delivery temporarily suspended: {why}"),
            };
        }
        Plan::Try {
            hosts: order_hosts(mx, self.randomize, self.address_limit, rng),
            recipients: message.pending.iter().map(|(i, _)| *i).collect(),
        }
    }

    fn session_limit(&self) -> Option<usize> {
        Some(self.session_limit)
    }

    fn after_session(&mut self, _: &MessageView, _: &str, session: &Session, _: Duration) -> bool {
        match &session.failure {
            Some((Stage::Greeting, Trouble::Reply { reply })) if reply.code < 500 => {
                self.skip_4xx_greeting
            }
            _ => true,
        }
    }

    fn bounces_on_5xx_handshake(&self) -> bool {
        !self.skip_5xx_greeting
    }

    fn next(&mut self, message: &MessageView, end: Option<&TryEnd>, now: Duration) -> Next {
        // A site failure on the last host tried (it refused to talk, or the connection
        // was lost or timed out, at any stage) throttles the destination:
        // smtp_site_fail and smtp_stream_except, then qmgr_queue_throttle.
        if let Some(end) = end
            && let Some((host, stage, trouble)) = end.last_failure()
            && (stage.is_handshake() || matches!(trouble, Trouble::Lost | Trouble::Timeout { .. }))
        {
            self.suspended.insert(
                message.domain(),
                (now + self.min_backoff, said(host, stage, trouble)),
            );
        }
        let lifetime = if message.is_bounce() {
            self.bounce_lifetime
        } else {
            self.lifetime
        };
        if now.saturating_sub(message.arrived) >= lifetime {
            let last = end
                .and_then(TryEnd::last_failure)
                .map(|(host, stage, trouble)| said(host, stage, trouble))
                .unwrap_or_else(|| "delivery temporarily suspended".to_string());
            return Next::GiveUp {
                why: format!(
                    "message expired after {} in the queue (maximal_queue_lifetime); last: {last}",
                    compact(lifetime)
                ),
            };
        }
        Next::At(next_scan(
            now + self.backoff(message.arrived, now),
            self.queue_run_delay,
        ))
    }

    fn notices(&mut self, message: &MessageView, now: Duration) -> Vec<Notice> {
        if !self.warned.due(
            message,
            now,
            Some(self.delay_warning).filter(|d| !d.is_zero()),
        ) {
            return Vec::new();
        }
        let hours = self.delay_warning.as_secs().div_ceil(3600);
        let days = self.lifetime.as_secs().div_ceil(86_400);
        vec![Notice {
            text: format!(
                "delayed mail (still being retried): Your message could not be delivered for more than {hours} hour(s). It will be retried until it is {days} day(s) old."
            ),
        }]
    }

    fn bounce(&self, why: &str) -> String {
        format!("Undelivered Mail Returned to Sender: {why}")
    }

    fn window(&self, destination: &str) -> usize {
        self.queues
            .get(destination)
            .map_or(self.initial_concurrency, |q| q.window)
    }

    /// `qmgr_entry_select`: on-demand caching turns on when a delivery is picked while
    /// the destination's last one ended at most a second before (back to back), and
    /// stays on while its deliveries are concurrent or back to back; when it turns off,
    /// open connections are still used but no more are kept. `smtp_cache_policy`: a
    /// destination in `smtp_connection_cache_destinations` always caches.
    fn delivery_starts(&mut self, destination: &Destination, now: Duration) -> CacheUse {
        let initial = self.initial_concurrency;
        let q = self
            .queues
            .entry(destination.name.to_string())
            .or_insert(InCoreQueue {
                window: initial,
                load: false,
                store: false,
            });
        let back_to_back = destination
            .last_done
            .is_some_and(|t| now.saturating_sub(t) <= Duration::from_secs(1));
        if !q.store {
            if back_to_back {
                q.load = true;
                q.store = true;
            }
        } else if !(destination.busy > 1 || back_to_back) {
            q.store = false;
        }
        let (load, store) = if self
            .cache_destinations
            .iter()
            .any(|d| d == destination.name)
        {
            (true, true)
        } else if self.cache_on_demand {
            (q.load, q.store)
        } else {
            (false, false)
        };
        CacheUse {
            load,
            store,
            ..self.cache
        }
    }

    /// `qmgr_queue_unthrottle` / `qmgr_queue_throttle` with the default feedback of 1:
    /// one more delivery at once after each that did not fail the site (while the window
    /// is under the limit and under those busy plus the initial concurrency), one fewer
    /// after one that did (never under one: the suspension above stands for a dead
    /// destination).
    fn delivery_ends(&mut self, destination: &Destination, site_failed: bool, _: Duration) {
        let Some(q) = self.queues.get_mut(destination.name) else {
            return;
        };
        if site_failed {
            q.window = q.window.saturating_sub(1).max(1);
        } else if q.window < self.concurrency_limit
            && q.window < destination.busy + self.initial_concurrency
        {
            q.window += 1;
        }
    }

    fn queue_done(&mut self, destination: &str) {
        self.queues.remove(destination);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::params::Params;

    fn postfix(set: &[&str]) -> Postfix {
        let mut p = Params::defaults("postfix", SPECS);
        for s in set {
            p.assign(SPECS, s).unwrap();
        }
        Postfix::new(&p)
    }

    /// postconf(5), minimal_backoff_time / maximal_backoff_time, and qmgr(8): "The time
    /// interval between delivery attempts is doubled after each attempt", bounded by the
    /// two: retries at 5, 10, 20, 40, 80 minutes, then every 4000 s, each on a scan.
    #[test]
    fn backoff_doubles_between_the_minimal_and_maximal_backoff_times() {
        let mut m = postfix(&[]);
        let view = crate::sender::model::one_recipient();
        let mut at = Duration::ZERO;
        let mut times = Vec::new();
        for _ in 0..8 {
            match m.next(&view, None, at) {
                Next::At(t) => at = t,
                Next::GiveUp { .. } => panic!("gave up at {at:?}"),
            }
            times.push(at.as_secs());
        }
        assert_eq!(times, [300, 600, 1200, 2400, 4800, 9000, 13200, 17400]);
        // 4000 s after 4800 is 8800, rounded up to the 300 s scan: 9000.
    }

    /// postconf(5), maximal_queue_lifetime: a message deferred past it is returned;
    /// bounce_queue_lifetime for a bounce.
    #[test]
    fn a_message_deferred_past_its_lifetime_is_returned() {
        let mut m = postfix(&["maximal_queue_lifetime=1h", "bounce_queue_lifetime=10m"]);
        let mut view = crate::sender::model::one_recipient();
        assert!(matches!(
            m.next(&view, None, Duration::from_secs(3599)),
            Next::At(_)
        ));
        let Next::GiveUp { why } = m.next(&view, None, Duration::from_secs(3600)) else {
            panic!("kept a message past its lifetime");
        };
        assert!(why.contains("expired after 1h"), "{why}");
        view.from = "";
        assert!(matches!(
            m.next(&view, None, Duration::from_secs(600)),
            Next::GiveUp { .. }
        ));
    }

    /// qmgr_queue_throttle: a connection lost on the last host tried suspends the
    /// destination for minimal_backoff_time; its next message waits without a connection.
    #[test]
    fn a_lost_connection_suspends_the_destination() {
        use crate::sender::client::Session;
        use rand_chacha::rand_core::SeedableRng;
        let mut m = postfix(&[]);
        let view = crate::sender::model::one_recipient();
        let lost = Session {
            failure: Some((Stage::Rcpt, Trouble::Lost)),
            ..Session::default()
        };
        let sessions = [("mx1".to_string(), lost)];
        let end = TryEnd {
            sessions: &sessions,
            any_handshake: true,
        };
        m.next(&view, Some(&end), Duration::ZERO);
        let mx = [Mx {
            host: "mx1".to_string(),
            preference: 10,
        }];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let Plan::Wait { why } = m.plan(&view, &mx, Duration::from_secs(299), &mut rng) else {
            panic!("not suspended");
        };
        assert!(
            why.contains("delivery temporarily suspended: lost connection with mx1"),
            "{why}"
        );
        assert!(matches!(
            m.plan(&view, &mx, Duration::from_secs(300), &mut rng),
            Plan::Try { .. }
        ));
    }

    /// postconf(5), delay_warning_time: off by default; once set, one warning.
    #[test]
    fn a_delay_warning_comes_once_and_only_when_set() {
        let view = crate::sender::model::one_recipient();
        let day = Duration::from_secs(86_400);
        assert!(postfix(&[]).notices(&view, day).is_empty());
        let mut m = postfix(&["delay_warning_time=4h"]);
        assert!(m.notices(&view, Duration::from_secs(3 * 3600)).is_empty());
        let warned = m.notices(&view, Duration::from_secs(4 * 3600));
        assert!(warned[0].text.contains("more than 4 hour(s)"), "{warned:?}");
        assert!(m.notices(&view, day).is_empty());
    }

    fn dest(name: &str, busy: usize, last_done: Option<u64>) -> Destination<'_> {
        Destination {
            name,
            busy,
            last_done: last_done.map(Duration::from_secs),
        }
    }

    /// qmgr_entry_select: caching turns on for a delivery back to back with the last one
    /// (at most a second after it ended), stays on while deliveries are concurrent or
    /// back to back, and when it goes off, open connections are still used
    /// (DEL_REQ_FLAG_CONN_LOAD) but no more kept (DEL_REQ_FLAG_CONN_STORE).
    #[test]
    fn on_demand_caching_follows_back_to_back_deliveries() {
        let mut m = postfix(&[]);
        let s = Duration::from_secs;
        let first = m.delivery_starts(&dest("x.test", 1, None), s(10));
        assert!(!first.load && !first.store, "{first:?}");
        let concurrent = m.delivery_starts(&dest("x.test", 2, None), s(10));
        assert!(!concurrent.store, "concurrency alone does not turn it on");
        let back_to_back = m.delivery_starts(&dest("x.test", 2, Some(10)), s(11));
        assert!(back_to_back.load && back_to_back.store, "{back_to_back:?}");
        assert_eq!(back_to_back.keep_for, s(2));
        assert_eq!(back_to_back.reuse_time, s(300));
        let still = m.delivery_starts(&dest("x.test", 2, Some(10)), s(30));
        assert!(still.store, "kept on while deliveries are concurrent");
        let drained = m.delivery_starts(&dest("x.test", 1, Some(10)), s(40));
        assert!(drained.load && !drained.store, "{drained:?}");
        m.queue_done("x.test");
        let fresh = m.delivery_starts(&dest("x.test", 1, None), s(41));
        assert!(!fresh.load, "a new in-core queue knows nothing");

        let mut off = postfix(&["smtp_connection_cache_on_demand=no"]);
        let never = off.delivery_starts(&dest("x.test", 2, Some(10)), s(10));
        assert!(!never.load && !never.store);
        let mut always = postfix(&[
            "smtp_connection_cache_on_demand=no",
            "smtp_connection_cache_destinations=y.test, x.test",
        ]);
        let listed = always.delivery_starts(&dest("x.test", 1, None), s(10));
        assert!(listed.load && listed.store);
        assert!(
            crate::sender::params::parse(Kind::Text(check_destinations), "hash:/etc/x")
                .unwrap_err()
                .contains("domain names only")
        );
    }

    /// qmgr_queue_unthrottle / qmgr_queue_throttle with feedback 1: the window starts at
    /// initial_destination_concurrency, grows by one per delivery that did not fail the
    /// site while under the limit and under busy + initial, shrinks by one (not below
    /// one) after a site failure.
    #[test]
    fn the_concurrency_window_grows_and_shrinks_with_feedback() {
        let mut m = postfix(&["default_destination_concurrency_limit=7"]);
        let t = Duration::ZERO;
        assert_eq!(m.window("x.test"), 5);
        m.delivery_starts(&dest("x.test", 1, None), t);
        m.delivery_ends(&dest("x.test", 1, None), false, t);
        assert_eq!(m.window("x.test"), 6);
        // busy 1 + initial 5 = 6: not past it.
        m.delivery_ends(&dest("x.test", 1, Some(0)), false, t);
        assert_eq!(m.window("x.test"), 6);
        for _ in 0..5 {
            m.delivery_ends(&dest("x.test", 6, Some(0)), false, t);
        }
        assert_eq!(m.window("x.test"), 7, "capped at the limit");
        for _ in 0..10 {
            m.delivery_ends(&dest("x.test", 1, Some(0)), true, t);
        }
        assert_eq!(m.window("x.test"), 1, "never under one");
        m.queue_done("x.test");
        assert_eq!(m.window("x.test"), 5);
    }
}
