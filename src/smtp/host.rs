//! A host as the engine runs it: its validated configuration, its prebuilt replies, and
//! the count of connections it is serving now.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::reply::Replies;
use crate::scenario::Host;

/// Everything a session needs to know about its host; shared by all its sessions.
pub struct HostRuntime {
    pub name: Arc<str>,
    pub config: Host,
    pub replies: Replies,
    /// The TLS acceptor when the host offers STARTTLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    active: AtomicUsize,
    /// Connections accepted so far, for `connection` conditions.
    connections: AtomicU64,
}

impl std::fmt::Debug for HostRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRuntime")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HostRuntime {
    pub fn new(config: Host, tls: Option<tokio_rustls::TlsAcceptor>) -> Arc<Self> {
        Arc::new(Self {
            tls,
            name: Arc::from(config.name.as_str()),
            replies: Replies::for_host(&config),
            config,
            active: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
        })
    }

    /// Numbers a new connection: 1 for the host's first.
    pub fn next_connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One of a host's connection slots; the slot is freed when the guard is dropped.
#[derive(Debug)]
pub struct ActiveGuard {
    host: Arc<HostRuntime>,
}

impl ActiveGuard {
    /// Takes a slot, or `None` if the host already serves `max_connections`.
    pub fn try_acquire(host: &Arc<HostRuntime>) -> Option<Self> {
        let max = host.config.limits.max_connections;
        host.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self { host: host.clone() })
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.host.active.fetch_sub(1, Ordering::AcqRel);
    }
}
