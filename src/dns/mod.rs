//! The farm's own DNS: an authoritative server for the scenario's zones (MX, A/AAAA,
//! PTR, TXT, CNAME, null MX, an SOA per zone), with the scenario's DNS faults, so that a
//! real MTA finds the MX hosts by itself.
//!
//! - [`zone`]: the records, built once from the scenario (no hickory types);
//! - [`server`]: the server on the wire (hickory-server).
//!
//! Every hickory type stays inside this module (hickory renames its types between minor
//! versions, and the crate pins 0.26).

pub(crate) mod lookup;
pub(crate) mod server;
pub(crate) mod tcp;
pub(crate) mod zone;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::journal::Journal;
use crate::policy::dns::DnsPolicy;
use crate::scenario::Scenario;
use zone::Zone;

/// The zone `scenario` produces, as zone-file text: what the farm's DNS will answer,
/// with each host at the address its scenario gives.
pub fn zone_file(scenario: &Scenario) -> String {
    let listen: HashMap<&str, IpAddr> = scenario
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.listen.ip()))
        .collect();
    let mut out = Zone::build(scenario, |name| listen.get(name).copied()).zone_file();
    if !scenario.dns.rules.is_empty() {
        out.push_str("\n; and these rules change the answers, the first that matches deciding:\n");
        for rule in &scenario.dns.rules {
            out.push_str(&format!("; {rule}\n"));
        }
    }
    out
}

/// The farm's running DNS server.
#[derive(Debug)]
pub(crate) struct DnsService {
    addr: SocketAddr,
    /// The zone and rules it answers from, which [`DnsService::replace`] swaps.
    current: Arc<parking_lot::RwLock<Arc<server::Current>>>,
    running: tokio::sync::Mutex<Option<server::Running>>,
}

impl std::fmt::Debug for server::Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Running")
    }
}

/// The DNS server's sockets, bound and not yet answering.
pub(crate) struct DnsSockets(server::Bound);

impl DnsSockets {
    /// Binds UDP and TCP on `addr` (port 0: a port free for both).
    pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        server::Bound::new(addr).await.map(Self)
    }
}

impl DnsService {
    /// Builds the zone with each host at `address_of(host)` and starts answering on the
    /// sockets.
    pub(crate) fn start(
        sockets: DnsSockets,
        scenario: &Scenario,
        address_of: impl Fn(&str) -> Option<IpAddr>,
        clock: Clock,
        journal: Arc<Journal>,
    ) -> Self {
        let zone = Arc::new(Zone::build(scenario, address_of));
        let addr = sockets.0.addr;
        let policy = Arc::new(DnsPolicy::new(scenario));
        let current = Arc::new(parking_lot::RwLock::new(Arc::new(server::Current {
            zone,
            policy,
        })));
        let handler = server::Handler {
            current: current.clone(),
            clock,
            journal,
            delayed: Arc::new(Semaphore::new(server::MAX_DELAYED)),
            server: addr,
            held: Arc::default(),
        };
        let running = server::Running::start(sockets.0, handler);
        Self {
            addr,
            current,
            running: tokio::sync::Mutex::new(Some(running)),
        }
    }

    /// Forgets the DNS rules' `attempt` counts (a reset of the policy state).
    pub(crate) fn clear_state(&self) {
        self.current.read().policy.clear();
    }

    /// Answers from `scenario`'s zone and DNS rules from now on, each host at
    /// `address_of(host)`. With `keep_state`, the rules' `attempt` counts go on (those of
    /// a rule that is gone are never read again); else they start at zero.
    pub(crate) fn replace(
        &self,
        scenario: &Scenario,
        address_of: impl Fn(&str) -> Option<IpAddr>,
        keep_state: bool,
    ) {
        let zone = Arc::new(Zone::build(scenario, address_of));
        let mut current = self.current.write();
        let policy = Arc::new(DnsPolicy::new(scenario));
        if keep_state {
            policy.take_counts(&current.policy);
        }
        *current = Arc::new(server::Current { zone, policy });
    }

    /// Where it answers.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it serves, for the startup summary: its address, then every record.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  dns  {} (udp and tcp), {} names; the zone it serves:",
            self.addr,
            self.current.read().zone.len()
        );
        let zone_file = self.current.read().zone.zone_file();
        for line in zone_file.lines().filter(|l| !l.is_empty()) {
            let _ = writeln!(out, "      {line}");
        }
        out
    }

    /// Stops answering.
    pub(crate) async fn shutdown(&self) {
        if let Some(running) = self.running.lock().await.take() {
            running.shutdown().await;
        }
    }
}
