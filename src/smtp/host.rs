//! A host as the engine runs it: its validated configuration, its built-in replies, its
//! TLS acceptor, its policy, and the count of connections it is serving now.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::replies::Replies;
use crate::policy::{HostPolicy, PolicyState};
use crate::scenario::Host;

/// Everything a session needs to know about its host; shared by all its sessions.
pub(crate) struct HostRuntime {
    pub(crate) name: Arc<str>,
    pub(crate) config: Host,
    pub(super) replies: Replies,
    /// The TLS acceptor when the host offers STARTTLS.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) policy: HostPolicy,
    active: AtomicUsize,
}

impl std::fmt::Debug for HostRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRuntime")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HostRuntime {
    pub(crate) fn new(
        config: Host,
        tls: Option<tokio_rustls::TlsAcceptor>,
        policy: Arc<PolicyState>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tls,
            name: Arc::from(config.name.as_str()),
            replies: Replies::for_host(&config),
            policy: HostPolicy::new(&config, policy),
            config,
            active: AtomicUsize::new(0),
        })
    }
}

/// One of a host's connection slots; the slot is freed when the guard is dropped.
#[derive(Debug)]
pub(super) struct ActiveGuard {
    host: Arc<HostRuntime>,
}

impl ActiveGuard {
    /// Takes a slot, or `None` if the host already serves `max_connections`.
    pub(super) fn try_acquire(host: &Arc<HostRuntime>) -> Option<Self> {
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
