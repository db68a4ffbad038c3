//! Controlling a running farm from outside its sessions: moving its clock, resetting what
//! it learnt, its greylists, its captured messages, and what each host is doing. The
//! control API (`crate::api`) is a thin layer over these; Rust tests call them directly.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::Farm;
use crate::capture::Message;
use crate::clock::TooFar;
use crate::journal::EventKind;
use crate::policy::greylist::{GreylistEntry, WhitelistEntry};
use std::time::Duration;

/// What [`Farm::reset`] forgets; each part on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResetScope {
    /// What the stateful rules learnt: greylist triplets and whitelists, rate counts,
    /// attempt counts (the DNS rules' too). Open connections stay counted.
    pub policy: bool,
    /// The journal's events (but `farm-started`): transcripts and reports start again.
    /// A journal file keeps them, and reads from the reset on, as the farm does.
    pub journal: bool,
    /// The captured messages. Their numbers are not given again.
    pub messages: bool,
}

impl ResetScope {
    /// Everything: policy state, journal and messages.
    pub const ALL: ResetScope = ResetScope {
        policy: true,
        journal: true,
        messages: true,
    };
}

/// One host as it is now: where it listens, and what it has done since the journal
/// began (or was last reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    pub name: String,
    /// What the farm's DNS gives an address for, and what the host calls itself.
    pub hostname: String,
    pub addr: SocketAddr,
    /// Connections the host serves now.
    pub open_connections: usize,
    /// Connections it took.
    pub connections: u64,
    /// Messages it accepted.
    pub messages: u64,
    /// Replies it sent, by first digit: `[2xx, 3xx, 4xx, 5xx]`.
    pub replies: ReplyCounts,
}

/// Replies by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReplyCounts {
    #[serde(rename = "2xx")]
    pub positive: u64,
    #[serde(rename = "3xx")]
    pub intermediate: u64,
    #[serde(rename = "4xx")]
    pub transient: u64,
    #[serde(rename = "5xx")]
    pub permanent: u64,
}

impl ReplyCounts {
    /// The class of a reply code, as these counts and the metrics name it: `2xx`, `3xx`,
    /// `4xx` or `5xx` (anything else is counted as `5xx`, as a sender treats it).
    pub fn class(code: u16) -> &'static str {
        match code / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        }
    }

    /// Counts one reply with this code.
    pub fn count(&mut self, code: u16) {
        match Self::class(code) {
            "2xx" => self.positive += 1,
            "3xx" => self.intermediate += 1,
            "4xx" => self.transient += 1,
            _ => self.permanent += 1,
        }
    }
}

impl Farm {
    /// Moves farm time forward like [`Farm::advance`], or refuses, leaving time as it was.
    /// The jump is journalled (`clock-advanced`), so a transcript can tell it from a
    /// sender that waited.
    pub fn try_advance(&self, by: Duration) -> Result<(), TooFar> {
        self.core.clock.advance(by)?;
        self.core.journal.record(EventKind::ClockAdvanced { by });
        Ok(())
    }

    /// Forgets what `scope` names, and journals that it did (`reset`); returns the
    /// sequence number of that event. Sessions under way go on; what they do next is
    /// decided on the state as reset.
    pub fn reset(&self, scope: ResetScope) -> u64 {
        if scope.policy {
            let running = self.running();
            running.policy.clear();
            if let Some(dns) = &running.dns {
                dns.clear_state();
            }
        }
        if scope.messages {
            self.core.inbox.clear();
        }
        let event = EventKind::Reset {
            policy: scope.policy,
            journal: scope.journal,
            messages: scope.messages,
        };
        if scope.journal {
            self.core.journal.clear(event)
        } else {
            self.core.journal.record(event)
        }
    }

    /// Every greylist triplet the farm keeps, by greylist, oldest first: when each was
    /// first seen, whether it passed, and from when a retry passes.
    pub fn greylist(&self) -> Vec<GreylistEntry> {
        self.running().policy.greylist_entries()
    }

    /// Every client on a greylist's whitelist, by passes or by hand.
    pub fn greylist_whitelist(&self) -> Vec<WhitelistEntry> {
        self.running().policy.whitelist_entries(self.now())
    }

    /// Forgets the greylist triplet with this [`GreylistEntry::id`]: its next attempt is
    /// greylisted as a new one. False if no greylist has it.
    pub fn forget_greylisted(&self, id: &str) -> bool {
        self.running().policy.forget_greylisted(id)
    }

    /// Whitelists `client` on every greylist of the farm (until it has not been seen for
    /// the greylist's `expiry`); returns how many greylists there are.
    pub fn whitelist(&self, client: IpAddr) -> usize {
        self.running().policy.whitelist(client, self.now())
    }

    /// The accepted message numbered `id`, if the farm still keeps it.
    pub fn message(&self, id: u64) -> Option<Message> {
        self.core.inbox.message(id)
    }

    /// Each host with its address and what it did, in scenario order: connections open
    /// now, and connections, messages and replies by class since the journal began (or
    /// was last reset).
    pub fn host_status(&self) -> Vec<HostStatus> {
        let events = self.journal();
        let events = crate::journal::since_last_reset(&events);
        let mut status: Vec<HostStatus> = self
            .hosts()
            .iter()
            .map(|h| HostStatus {
                name: h.name.clone(),
                hostname: h.hostname.clone(),
                addr: h.addr,
                open_connections: h.listening.current().0.open_connections(),
                connections: 0,
                messages: 0,
                replies: ReplyCounts::default(),
            })
            .collect();
        for event in events.iter() {
            let Some((host, _)) = event.kind.connection() else {
                continue;
            };
            let Some(entry) = status.iter_mut().find(|s| s.name == host) else {
                continue;
            };
            match &event.kind {
                EventKind::ConnectionOpened { .. } => entry.connections += 1,
                EventKind::MessageAccepted { .. } => entry.messages += 1,
                EventKind::Reply { reply, .. } => entry.replies.count(reply.code),
                _ => {}
            }
        }
        status
    }
}
