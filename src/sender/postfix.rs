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

use std::collections::HashMap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Stage, Timeouts, Trouble};
use super::model::{
    MessageView, Model, Mx, Next, Notice, Plan, TryEnd, WarnedOnce, next_scan, order_hosts,
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
        name: "default_destination_concurrency_limit",
        kind: Kind::Count,
        default: "20",
        source: PC,
        what: "deliveries to one destination at once",
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
            lanes: usize::try_from(p.count("default_destination_concurrency_limit")).unwrap_or(1),
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
}
