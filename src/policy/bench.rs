//! The RCPT decision alone, for `benches/policy_state.rs`: the bound is on the
//! decision, and a time taken over a connection is mostly the session and the wake-ups
//! of the runtime (a rule-less host's RCPT had a higher p99 than the full greylist's).
//! Not part of the API (hidden from the docs); it calls what a session calls.

use std::net::IpAddr;
use std::time::Duration;

use super::{Act, Conversation, Facts, HostPolicy, PolicyState, Rcpt};
use crate::scenario::Scenario;

/// One connection's RCPT decisions on one host of a scenario, with the farm's policy
/// state of its own.
#[derive(Debug)]
pub struct RcptDecider {
    policy: HostPolicy,
    conv: Conversation,
    sender: String,
}

impl RcptDecider {
    /// The decisions of host `host` of `scenario`, for a client at `client` whose MAIL
    /// gave `sender`; `None` if there is no such host.
    pub fn new(scenario: &Scenario, host: &str, client: IpAddr, sender: &str) -> Option<Self> {
        let host = scenario.hosts.iter().find(|h| h.name == host)?;
        let policy = HostPolicy::new(host, PolicyState::for_scenario(scenario));
        let conv = policy.open(1, client);
        Some(Self {
            policy,
            conv,
            sender: sender.to_string(),
        })
    }

    /// Decides a RCPT to `recipient` at farm time `now`: the reply code it gets (250 for
    /// the stage's own positive reply).
    pub fn decide(&mut self, recipient: &str, now: Duration) -> u16 {
        let facts = Facts {
            helo: Some("bench.test"),
            sender: Some(&self.sender),
            transactions: 1,
            ..Facts::default()
        };
        let verdict = self
            .policy
            .decide(Rcpt { recipient }, &facts, &mut self.conv, now);
        match verdict.act {
            Act::Accept(reply) => reply.map_or(250, |r| r.code),
            Act::Refuse { reply, .. } => reply.code,
            _ => 0,
        }
    }
}
