//! Starting a farm: every listener bound first, then the journal, the DNS, and a serving
//! task per host. The pieces a replaced scenario needs too (binding a host, building its
//! runtime, describing the layout for the journal) are here, once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::{BoundHost, Core, Farm, FarmError, FarmOptions, Placement, Running};
use crate::capture::Inbox;
use crate::clock::Clock;
use crate::dns::lookup::Lookups;
use crate::dns::{DnsService, DnsSockets};
use crate::journal::{DomainRecord, EventKind, Journal, Sink};
use crate::policy::PolicyState;
use crate::policy::learnt::DnsNeeds;
use crate::scenario::{Host, Scenario};
use crate::smtp::{Env, HostRuntime, Listening, Shutdown, serve};
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
        let placement = Placement {
            bind: options.bind,
            ephemeral_ports: options.ephemeral_ports,
        };
        let clock = Clock::new();
        let policy = PolicyState::for_scenario(&scenario);
        let shutdown = Shutdown::new();
        // Bind every listener before serving any, so a farm starts whole or not at all.
        let mut listeners = Vec::new();
        for host in &scenario.hosts {
            let requested = placement.addr_of(host);
            let (listener, addr) = bind_host(host, requested)?;
            listeners.push((host.clone(), requested, listener, addr));
        }
        let bound: HashMap<String, SocketAddr> = listeners
            .iter()
            .map(|(host, _, _, addr)| (host.name.clone(), *addr))
            .collect();
        // Rules that test DNS look it up through the farm's own server: one on a free
        // loopback port when the run asked for none.
        let tests_dns = DnsNeeds::in_scenario(&scenario);
        let dns_addr = options
            .dns
            .or_else(|| tests_dns.then(|| SocketAddr::from(([127, 0, 0, 1], 0))));
        let dns_sockets = match dns_addr {
            Some(addr) => Some(bind_dns(addr).await?),
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
        let (domains, hostnames) = layout(&scenario);
        let started = journal.record(EventKind::FarmStarted {
            scenario: scenario.name.clone(),
            domains,
            hostnames,
        });
        // A journal file that cannot take its first line will take no message: say so
        // now, rather than answer every sender 451.
        if let Err(unwritable) = journal.written(started).await {
            journal.close();
            return Err(FarmError::JournalUnwritable(unwritable));
        }
        let dns = dns_sockets.map(|sockets| {
            Arc::new(DnsService::start(
                sockets,
                &scenario,
                |host| bound.get(host).map(|a| a.ip()),
                clock.clone(),
                journal.clone(),
            ))
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
        for (config, requested, listener, addr) in listeners {
            let runtime = runtime(config, addr, &ca, &policy)?;
            let listening = Listening::new(runtime, env.clone());
            hosts.push(bound_host(requested, addr, &listening));
            tasks.spawn(serve(listener, listening, shutdown.clone(), tasks.clone()));
        }
        Ok(Farm {
            core: Arc::new(Core {
                journal,
                inbox,
                clock,
                shutdown,
                ca,
                tasks,
                placement,
                running: parking_lot::RwLock::new(Running {
                    scenario: Arc::new(scenario),
                    hosts: hosts.into(),
                    env,
                    policy,
                    dns,
                }),
                replacing: tokio::sync::Mutex::new(()),
            }),
            owner: true,
        })
    }
}

/// Binds `host`'s listener on `addr`; the address it got.
pub(super) fn bind_host(
    host: &Host,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), FarmError> {
    listen(addr)
        .and_then(|l| l.local_addr().map(|bound| (l, bound)))
        .map_err(|source| FarmError::Bind {
            host: host.name.clone(),
            addr,
            source,
        })
}

/// Binds the DNS server's sockets on `addr`.
pub(super) async fn bind_dns(addr: SocketAddr) -> Result<DnsSockets, FarmError> {
    DnsSockets::bind(addr)
        .await
        .map_err(|source| FarmError::DnsBind { addr, source })
}

/// What a session needs of `config`, bound at `addr`: its TLS acceptor and policy.
fn runtime(
    config: Host,
    addr: SocketAddr,
    ca: &FarmCa,
    policy: &Arc<PolicyState>,
) -> Result<Arc<HostRuntime>, FarmError> {
    let tls = acceptor(&config, addr, ca)?;
    Ok(HostRuntime::new(config, tls, policy.clone()))
}

/// The TLS acceptor of `config` bound at `addr`, if it offers STARTTLS.
pub(super) fn acceptor(
    config: &Host,
    addr: SocketAddr,
    ca: &FarmCa,
) -> Result<Option<tokio_rustls::TlsAcceptor>, FarmError> {
    tls::acceptor(config, addr.ip(), ca).map_err(FarmError::Tls)
}

/// The host as the farm shows it.
pub(super) fn bound_host(
    requested: SocketAddr,
    addr: SocketAddr,
    listening: &Arc<Listening>,
) -> BoundHost {
    let (runtime, _) = listening.current();
    BoundHost {
        name: runtime.config.name.clone(),
        hostname: runtime.config.hostname.clone(),
        addr,
        requested,
        listening: listening.clone(),
    }
}

/// Each domain's MX records and each host's hostname, as the journal states them.
pub(super) fn layout(scenario: &Scenario) -> (Vec<DomainRecord>, Vec<(String, String)>) {
    let domains = scenario
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
        .collect();
    let hostnames = scenario
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.hostname.clone()))
        .collect();
    (domains, hostnames)
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
    // Replies go out at once, not held for the client's ACK. Linux gives every accepted
    // socket its listener's TCP_NODELAY, which saves a system call per connection.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On Linux a connection the listener accepts has TCP_NODELAY on, inherited from the
    /// listener (the accept loop relies on it): replies are not held back by Nagle.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_send_replies_at_once() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
