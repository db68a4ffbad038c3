//! Starting a farm: every listener bound first, then the journal, the DNS, and a serving
//! task per host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::{BoundHost, Core, Farm, FarmError, FarmOptions};
use crate::capture::Inbox;
use crate::clock::Clock;
use crate::dns::lookup::Lookups;
use crate::dns::{DnsService, DnsSockets};
use crate::journal::{DomainRecord, EventKind, Journal, Sink};
use crate::policy::PolicyState;
use crate::scenario::Scenario;
use crate::smtp::{Env, HostRuntime, Shutdown, serve};
use crate::tls::{self, FarmCa};

impl Farm {
    /// Starts the farm with the given listen addresses.
    pub async fn start_with(scenario: Scenario, options: FarmOptions) -> Result<Farm, FarmError> {
        for host in options.bind.keys() {
            if scenario.host(host).is_none() {
                let known: Vec<&str> = scenario.hosts.iter().map(|h| h.name.as_str()).collect();
                return Err(FarmError::UnknownHost {
                    host: host.clone(),
                    known: known.join(", "),
                });
            }
        }
        // A fresh CA per farm unless one is given: a P-256 key takes well under a
        // millisecond, and `ca_certificate_pem` always has something to return.
        let ca = match options.ca {
            Some(ca) => ca,
            None => Arc::new(FarmCa::generate_in(&tls::CaScope::for_scenario(&scenario))?),
        };
        let clock = Clock::new();
        let policy = PolicyState::for_scenario(&scenario);
        let shutdown = Shutdown::new();
        // Bind every listener before serving any, so a farm starts whole or not at all.
        let mut listeners = Vec::new();
        for host in &scenario.hosts {
            let addr = match options.bind.get(&host.name) {
                Some(addr) => *addr,
                None if options.ephemeral_ports => SocketAddr::from(([127, 0, 0, 1], 0)),
                None => host.listen,
            };
            let listener = listen(addr)
                .and_then(|l| l.local_addr().map(|bound| (l, bound)))
                .map_err(|source| FarmError::Bind {
                    host: host.name.clone(),
                    addr,
                    source,
                })?;
            listeners.push((host.clone(), listener));
        }
        let bound: HashMap<String, SocketAddr> = listeners
            .iter()
            .map(|(host, (_, addr))| (host.name.clone(), *addr))
            .collect();
        // Rules that test DNS look it up through the farm's own server: one on a free
        // loopback port when the run asked for none.
        let tests_dns = crate::policy::learnt::DnsNeeds::in_scenario(&scenario);
        let dns_addr = options
            .dns
            .or_else(|| tests_dns.then(|| SocketAddr::from(([127, 0, 0, 1], 0))));
        let dns_sockets = match dns_addr {
            Some(addr) => Some(
                DnsSockets::bind(addr)
                    .await
                    .map_err(|source| FarmError::DnsBind { addr, source })?,
            ),
            None => None,
        };
        // The file only once every listener is bound: a farm that cannot start must not
        // have replaced the journal of the run before.
        let sink = match options.journal_file {
            Some(file) => {
                let path = file.path.clone();
                Some(Sink::start(file).map_err(|source| FarmError::JournalFile { path, source })?)
            }
            None => None,
        };
        let journal = Arc::new(Journal::with_sink(
            clock.clone(),
            scenario.journal.max_events,
            sink,
        ));
        let inbox = Arc::new(Inbox::new(journal.clone(), scenario.capture.clone()));
        let started = journal.record(EventKind::FarmStarted {
            scenario: scenario.name.clone(),
            domains: scenario
                .domains
                .iter()
                .map(|d| DomainRecord {
                    name: d.name.clone(),
                    mx: d
                        .mx
                        .iter()
                        .map(|m| (m.host.clone(), m.preference))
                        .collect(),
                })
                .collect(),
            hostnames: scenario
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.hostname.clone()))
                .collect(),
        });
        // A journal file that cannot take its first line will take no message: say so
        // now, rather than answer every sender 451.
        if let Err(unwritable) = journal.written(started).await {
            journal.close();
            return Err(FarmError::JournalUnwritable(unwritable));
        }
        let dns = dns_sockets.map(|sockets| {
            DnsService::start(
                sockets,
                &scenario,
                |host| bound.get(host).map(|a| a.ip()),
                clock.clone(),
                journal.clone(),
            )
        });
        let mut env = Env::new(
            clock.clone(),
            journal.clone(),
            inbox.clone(),
            scenario.limits.max_buffered_data,
        );
        if let Some(dns) = dns.as_ref().filter(|_| tests_dns) {
            env = env.with_lookups(Arc::new(Lookups::new(dns.addr(), clock.clone())));
        }
        let tasks = TaskTracker::new();
        let mut hosts = Vec::new();
        for (config, (listener, addr)) in listeners {
            let tls = tls::acceptor(&config, addr.ip(), &ca).map_err(FarmError::Tls)?;
            let runtime = HostRuntime::new(config, tls, policy.clone());
            hosts.push(BoundHost {
                name: runtime.config.name.clone(),
                hostname: runtime.config.hostname.clone(),
                addr,
                runtime: runtime.clone(),
            });
            let serving = serve(
                listener,
                runtime,
                env.clone(),
                shutdown.clone(),
                tasks.clone(),
            );
            tasks.spawn(serving);
        }
        Ok(Farm {
            core: Arc::new(Core {
                env,
                journal,
                inbox,
                clock,
                shutdown,
                ca,
                scenario: Arc::new(scenario),
                hosts,
                tasks,
                dns,
                policy,
            }),
            owner: true,
        })
    }
}

/// A listener with a backlog deep enough for a burst of senders (the default, 128, makes
/// clients beyond it wait a second for a SYN retry).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
