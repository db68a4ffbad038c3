//! Microsoft Exchange's transport as a sender (`../shared/reference/provider-behaviours.md`
//! §3.4 and §6.3): the `Set-TransportService` / `Set-TransportServer` and
//! `Set-TransportConfig` parameters under their own names.
//!
//! - **Failover**: on a 4xx from one MX host Exchange tries the others ("Attempted
//!   failover to alternate host", KB 979175).
//! - **Connection failures** (no host got past the greeting) put the destination's queue
//!   in Retry: `TransientFailureRetryCount` retries `TransientFailureRetryInterval`
//!   apart, then every `OutboundConnectionFailureRetryInterval`; the queue's other
//!   messages wait with it.
//! - **A message deferred after the handshake** is retried every `MessageRetryInterval`.
//! - **Delay DSN** ("400 4.4.7 Message delayed") once the message is older than
//!   `DelayNotificationTimeout`, at the first retry after it; **NDR** once it is older
//!   than `MessageExpirationTimeout`.
//!
//! `exchange-2010` and `exchange-2016` differ only in the default of
//! `MessageRetryInterval`.

use std::collections::HashMap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use super::client::{Session, Timeouts};
use super::model::{MessageView, Model, Mx, Next, Notice, Plan, TryEnd, WarnedOnce, order_hosts};
use super::params::{Kind, Params, Spec, compact};

const fn specs(
    message_retry_default: &'static str,
    message_retry_source: &'static str,
) -> [Spec; 8] {
    [
        Spec {
            name: "TransientFailureRetryCount",
            kind: Kind::Count,
            default: "6",
            source: "[C] learn.microsoft.com exchange-server-2010 ff344266(v=exchg.140)",
            what: "quick retries of a queue after a connection failure",
        },
        Spec {
            name: "TransientFailureRetryInterval",
            kind: Kind::Duration,
            default: "00:05:00",
            source: "[C] Exchange 2007 Hub Transport Limits tab (bb629486(v=exchg.80))",
            what: "the wait between those quick retries",
        },
        Spec {
            name: "OutboundConnectionFailureRetryInterval",
            kind: Kind::Duration,
            default: "00:10:00",
            source: "[C] learn.microsoft.com ff339771(v=exchg.150): 10 min on Hub/Mailbox (30 min on Edge)",
            what: "the wait between retries of a queue after the quick ones",
        },
        Spec {
            name: "MessageRetryInterval",
            kind: Kind::Duration,
            default: message_retry_default,
            source: message_retry_source,
            what: "the wait before a deferred message is retried",
        },
        Spec {
            name: "DelayNotificationTimeout",
            kind: Kind::Duration,
            default: "04:00:00",
            source: "[C] learn.microsoft.com exchange-server-api ff342868(v=exchg.150)",
            what: "age after which the sender gets a delay DSN",
        },
        Spec {
            name: "MessageExpirationTimeout",
            kind: Kind::Duration,
            default: "2.00:00:00",
            source: "[C] learn.microsoft.com exchange-server-2010 ff324860(v=exchg.140)",
            what: "age after which the message is returned (NDR)",
        },
        Spec {
            name: "MaxPerDomainOutboundConnections",
            kind: Kind::Count,
            default: "20",
            source: "[U] Set-TransportService reference: 20 connections per destination domain",
            what: "deliveries to one domain at once",
        },
        Spec {
            name: "ConnectionInactivityTimeout",
            kind: Kind::Duration,
            default: "00:10:00",
            source: "[U] Set-SendConnector reference: 10 minutes",
            what: "wait for any reply",
        },
    ]
}

pub(super) const SPECS_2010: &[Spec] = &specs(
    "00:01:00",
    "[U] 1 minute is the value cited for Exchange 2010; Microsoft's reference gives 15 minutes for 2013 and later",
);
pub(super) const SPECS_2016: &[Spec] = &specs(
    "00:15:00",
    "[C] learn.microsoft.com TransportServer ff345508(v=exchg.150)",
);

/// A destination queue in Retry.
#[derive(Debug, Clone, Copy)]
struct QueueRetry {
    /// Connection failures in a row.
    failures: u64,
    until: Duration,
}

pub(super) struct Exchange {
    transient_count: u64,
    transient_interval: Duration,
    connection_interval: Duration,
    message_interval: Duration,
    delay_notification: Duration,
    expiration: Duration,
    lanes: usize,
    timeouts: Timeouts,
    queues: HashMap<String, QueueRetry>,
    warned: WarnedOnce,
}

impl Exchange {
    pub(super) fn new(p: &Params) -> Exchange {
        let idle = p.duration("ConnectionInactivityTimeout");
        Exchange {
            transient_count: p.count("TransientFailureRetryCount"),
            transient_interval: p.duration("TransientFailureRetryInterval"),
            connection_interval: p.duration("OutboundConnectionFailureRetryInterval"),
            message_interval: p.duration("MessageRetryInterval"),
            delay_notification: p.duration("DelayNotificationTimeout"),
            expiration: p.duration("MessageExpirationTimeout"),
            lanes: usize::try_from(p.count("MaxPerDomainOutboundConnections")).unwrap_or(1),
            timeouts: Timeouts {
                greeting: idle,
                helo: idle,
                mail: idle,
                rcpt: idle,
                data: idle,
                dot: idle,
            },
            queues: HashMap::new(),
            warned: WarnedOnce::default(),
        }
    }
}

impl Model for Exchange {
    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn helo(&self) -> &str {
        "exchange.sender.test"
    }

    fn plan(
        &mut self,
        message: &MessageView,
        mx: &[Mx],
        now: Duration,
        rng: &mut ChaCha8Rng,
    ) -> Plan {
        if let Some(q) = self.queues.get(&message.domain())
            && q.until > now
        {
            return Plan::Wait {
                why: format!(
                    "the queue for {} is in Retry after {} connection failure(s)",
                    message.domain(),
                    q.failures
                ),
            };
        }
        Plan::Try {
            hosts: order_hosts(mx, true, usize::MAX, rng),
            recipients: message.pending.iter().map(|(i, _)| *i).collect(),
        }
    }

    fn after_session(&mut self, _: &MessageView, _: &str, _: &Session, _: Duration) -> bool {
        true
    }

    fn next(&mut self, message: &MessageView, end: Option<&TryEnd>, now: Duration) -> Next {
        let destination = message.domain();
        let at = match end {
            // Tries that ran side by side and failed alike put the queue in Retry once:
            // the first to report does it, the others wait with it.
            Some(end)
                if !end.any_handshake
                    && let Some(q) = self.queues.get(&destination).filter(|q| q.until > now) =>
            {
                q.until
            }
            Some(end) if !end.any_handshake => {
                let failures = self.queues.get(&destination).map_or(0, |q| q.failures) + 1;
                let wait = if failures <= self.transient_count {
                    self.transient_interval
                } else {
                    self.connection_interval
                };
                self.queues.insert(
                    destination,
                    QueueRetry {
                        failures,
                        until: now + wait,
                    },
                );
                now + wait
            }
            Some(_) => {
                self.queues.remove(&destination);
                now + self.message_interval
            }
            None => self
                .queues
                .get(&destination)
                .map_or(now + self.message_interval, |q| q.until),
        };
        if now.saturating_sub(message.arrived) >= self.expiration {
            return Next::GiveUp {
                why: format!(
                    "550 4.4.7 QUEUE.Expired; message expired after {}",
                    compact(self.expiration)
                ),
            };
        }
        Next::At(at)
    }

    fn notices(&mut self, message: &MessageView, now: Duration) -> Vec<Notice> {
        let age = now.saturating_sub(message.arrived);
        if !self.warned.due(message, now, Some(self.delay_notification)) {
            return Vec::new();
        }
        let left = self.expiration.saturating_sub(age);
        vec![Notice {
            text: format!(
                "Delivery is delayed to these recipients or groups. The server will keep trying to deliver this message for the next {}. Remote Server returned '400 4.4.7 Message delayed'",
                compact(Duration::from_secs(left.as_secs() / 60 * 60))
            ),
        }]
    }

    fn bounce(&self, why: &str) -> String {
        format!("Delivery has failed to these recipients or groups: {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::client::{Session, Stage, Trouble};

    fn view() -> MessageView<'static> {
        crate::sender::model::one_recipient()
    }

    /// Microsoft's TransientFailureRetryCount and TransientFailureRetryInterval (6 tries
    /// 5 minutes apart), then OutboundConnectionFailureRetryInterval (10 minutes): the
    /// waits after connection failures in a row.
    #[test]
    fn connection_failures_retry_six_times_quickly_then_slowly() {
        let mut exchange = Exchange::new(&Params::defaults("exchange-2016", SPECS_2016));
        let refused = Session {
            failure: Some((Stage::Greeting, Trouble::Lost)),
            ..Session::default()
        };
        let sessions = [("mx1".to_string(), refused)];
        let end = TryEnd {
            sessions: &sessions,
            any_handshake: false,
        };
        let mut now = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let Next::At(at) = exchange.next(&view(), Some(&end), now) else {
                panic!("gave up");
            };
            waits.push((at - now).as_secs() / 60);
            now = at;
        }
        assert_eq!(waits, [5, 5, 5, 5, 5, 5, 10, 10]);
    }

    /// Messages that fail alike at once put the queue in Retry once, not once each.
    #[test]
    fn messages_failing_together_count_as_one_connection_failure() {
        let mut exchange = Exchange::new(&Params::defaults("exchange-2016", SPECS_2016));
        let refused = Session {
            failure: Some((Stage::Greeting, Trouble::Lost)),
            ..Session::default()
        };
        let sessions = [("mx1".to_string(), refused)];
        let end = TryEnd {
            sessions: &sessions,
            any_handshake: false,
        };
        for _ in 0..10 {
            assert_eq!(
                exchange.next(&view(), Some(&end), Duration::ZERO),
                Next::At(Duration::from_secs(300))
            );
        }
        assert_eq!(exchange.queues["x.test"].failures, 1);
    }

    /// MessageRetryInterval after a deferral past the handshake; MessageExpirationTimeout
    /// (2 days) returns the message.
    #[test]
    fn deferred_messages_retry_every_interval_and_expire_after_two_days() {
        let mut exchange = Exchange::new(&Params::defaults("exchange-2010", SPECS_2010));
        let sessions = [("mx1".to_string(), Session::default())];
        let end = TryEnd {
            sessions: &sessions,
            any_handshake: true,
        };
        let Next::At(at) = exchange.next(&view(), Some(&end), Duration::ZERO) else {
            panic!("gave up");
        };
        assert_eq!(at, Duration::from_secs(60));
        let two_days = Duration::from_secs(2 * 86_400);
        let Next::GiveUp { why } = exchange.next(&view(), Some(&end), two_days) else {
            panic!("kept a message past MessageExpirationTimeout");
        };
        assert!(why.contains("QUEUE.Expired"), "{why}");
    }
}
