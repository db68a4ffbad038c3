//! sendmail's queue (`cf/README`, "TWEAKING CONFIGURATION OPTIONS";
//! `../shared/reference/provider-behaviours.md` §6.4).
//!
//! - **Queue runs** every `QueueInterval` (the daemon's `-q` option) deliver the queued
//!   messages one after another; a message tried less than `MinQueueAge` ago is skipped.
//! - **Host status**: a host that failed to connect or greet is not tried again, for any
//!   message, until `Timeout.hoststatus` has passed.
//! - **Warning** once the message is older than `Timeout.queuewarn`; **return** once it is
//!   older than `Timeout.queuereturn`.
//! - MX hosts in preference order, equal ones shuffled, each tried in turn on a temporary
//!   failure.

use std::collections::HashMap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Timeouts};
use super::model::{
    MessageView, Model, Mx, Next, Notice, Plan, TryEnd, WarnedOnce, next_scan, order_hosts,
};
use super::params::{Kind, Params, Spec, compact};

const CF: &str = "[C] sendmail cf/README, TWEAKING CONFIGURATION OPTIONS";

pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "QueueInterval",
        kind: Kind::Duration,
        default: "30m",
        source: "[U] the daemon's -q option has no default; -q15m, -q30m and -q1h are common",
        what: "how often a queue run delivers the deferred messages",
    },
    Spec {
        name: "MinQueueAge",
        kind: Kind::Duration,
        default: "0",
        source: CF,
        what: "the least time between two tries of a message",
    },
    Spec {
        name: "Timeout.queuewarn",
        kind: Kind::Duration,
        default: "4h",
        source: CF,
        what: "age at which the sender is warned once",
    },
    Spec {
        name: "Timeout.queuereturn",
        kind: Kind::Duration,
        default: "5d",
        source: CF,
        what: "age at which the message is returned",
    },
    Spec {
        name: "Timeout.hoststatus",
        kind: Kind::Duration,
        default: "30m",
        source: CF,
        what: "how long a host that failed is skipped",
    },
    Spec {
        name: "Timeout.initial",
        kind: Kind::Duration,
        default: "5m",
        source: CF,
        what: "wait for the greeting",
    },
    Spec {
        name: "Timeout.helo",
        kind: Kind::Duration,
        default: "5m",
        source: CF,
        what: "wait for the EHLO reply",
    },
    Spec {
        name: "Timeout.mail",
        kind: Kind::Duration,
        default: "10m",
        source: CF,
        what: "wait for the MAIL reply",
    },
    Spec {
        name: "Timeout.rcpt",
        kind: Kind::Duration,
        default: "1h",
        source: CF,
        what: "wait for each RCPT reply",
    },
    Spec {
        name: "Timeout.datainit",
        kind: Kind::Duration,
        default: "5m",
        source: CF,
        what: "wait for the DATA reply",
    },
    Spec {
        name: "Timeout.datafinal",
        kind: Kind::Duration,
        default: "1h",
        source: CF,
        what: "wait for the reply to the end of data",
    },
];

pub(super) struct Sendmail {
    queue_interval: Duration,
    min_queue_age: Duration,
    queuewarn: Duration,
    queuereturn: Duration,
    hoststatus: Duration,
    timeouts: Timeouts,
    /// Hosts that failed, and until when they are skipped.
    down: HashMap<String, Duration>,
    warned: WarnedOnce,
}

impl Sendmail {
    pub(super) fn new(p: &Params) -> Sendmail {
        Sendmail {
            queue_interval: p.duration("QueueInterval"),
            min_queue_age: p.duration("MinQueueAge"),
            queuewarn: p.duration("Timeout.queuewarn"),
            queuereturn: p.duration("Timeout.queuereturn"),
            hoststatus: p.duration("Timeout.hoststatus"),
            timeouts: Timeouts {
                greeting: p.duration("Timeout.initial"),
                helo: p.duration("Timeout.helo"),
                mail: p.duration("Timeout.mail"),
                rcpt: p.duration("Timeout.rcpt"),
                data: p.duration("Timeout.datainit"),
                dot: p.duration("Timeout.datafinal"),
            },
            down: HashMap::new(),
            warned: WarnedOnce::default(),
        }
    }
}

impl Model for Sendmail {
    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A queue run delivers one message after another.
    fn lanes(&self) -> usize {
        1
    }

    fn plan(
        &mut self,
        message: &MessageView,
        mx: &[Mx],
        now: Duration,
        rng: &mut ChaCha8Rng,
    ) -> Plan {
        let hosts: Vec<String> = order_hosts(mx, true, usize::MAX, rng)
            .into_iter()
            .filter(|h| self.down.get(h).is_none_or(|until| *until <= now))
            .collect();
        if hosts.is_empty() {
            return Plan::Wait {
                why: "Deferred: every MX host's cached status is a failure (Timeout.hoststatus)"
                    .to_string(),
            };
        }
        Plan::Try {
            hosts,
            recipients: message.pending.iter().map(|(i, _)| *i).collect(),
        }
    }

    fn after_session(
        &mut self,
        _: &MessageView,
        host: &str,
        session: &Session,
        now: Duration,
    ) -> bool {
        if session.passed_handshake() {
            self.down.remove(host);
        } else {
            self.down.insert(host.to_string(), now + self.hoststatus);
        }
        true
    }

    fn next(&mut self, message: &MessageView, _: Option<&TryEnd>, now: Duration) -> Next {
        if now.saturating_sub(message.arrived) >= self.queuereturn {
            return Next::GiveUp {
                why: format!("Cannot send message for {}", compact(self.queuereturn)),
            };
        }
        let earliest = now + self.min_queue_age.max(Duration::from_millis(1));
        Next::At(next_scan(earliest, self.queue_interval))
    }

    fn notices(&mut self, message: &MessageView, now: Duration) -> Vec<Notice> {
        if !self
            .warned
            .due(message, now, Some(self.queuewarn).filter(|d| !d.is_zero()))
        {
            return Vec::new();
        }
        vec![Notice {
            text: format!(
                "Warning: could not send message for past {}",
                compact(self.queuewarn)
            ),
        }]
    }

    fn bounce(&self, why: &str) -> String {
        format!("Returned mail: see transcript for details: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cf/README: Timeout.queuewarn (4h) warns once, Timeout.queuereturn (5d) returns;
    /// queue runs every QueueInterval.
    #[test]
    fn it_warns_at_queuewarn_returns_at_queuereturn_and_retries_on_queue_runs() {
        let mut sendmail = Sendmail::new(&Params::defaults("sendmail", SPECS));
        let view = crate::sender::model::one_recipient();
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert!(sendmail.notices(&view, h(3)).is_empty());
        assert!(sendmail.notices(&view, h(4))[0].text.contains("past 4h"));
        assert!(sendmail.notices(&view, h(5)).is_empty());
        assert_eq!(
            sendmail.next(&view, None, Duration::from_secs(61)),
            Next::At(Duration::from_secs(1800))
        );
        assert!(matches!(
            sendmail.next(&view, None, h(120)),
            Next::GiveUp { .. }
        ));
    }

    /// cf/README, Timeout.hoststatus: a host whose handshake failed is skipped for 30
    /// minutes, for every message.
    #[test]
    fn a_failed_host_is_skipped_for_timeout_hoststatus() {
        use crate::sender::client::{Session, Stage, Trouble};
        let mut sendmail = Sendmail::new(&Params::defaults("sendmail", SPECS));
        let view = crate::sender::model::one_recipient();
        let failed = Session {
            failure: Some((Stage::Connect, Trouble::Lost)),
            ..Session::default()
        };
        sendmail.after_session(&view, "mx1", &failed, Duration::ZERO);
        let mx = [Mx {
            host: "mx1".to_string(),
            preference: 10,
        }];
        let mut rng = <ChaCha8Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(1);
        let at = |m: u64| Duration::from_secs(m * 60);
        assert!(matches!(
            sendmail.plan(&view, &mx, at(29), &mut rng),
            Plan::Wait { .. }
        ));
        assert!(matches!(
            sendmail.plan(&view, &mx, at(30), &mut rng),
            Plan::Try { .. }
        ));
    }
}
