//! A host as the engine runs it: its validated configuration, its built-in replies, its
//! TLS acceptor, its policy, and the connections it is serving now, in all and from each
//! client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

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
    /// Shared with the runtime that succeeds this one on the same listener (a replaced
    /// scenario), so the limits count the sessions of both.
    serving: Arc<Mutex<Serving>>,
}

/// The connections a host serves now. Both counts change together under one lock, taken
/// only when a connection starts or ends and held for a map lookup: the lock is this
/// host's, so no other host's sessions ever wait on it.
#[derive(Debug, Default)]
struct Serving {
    total: usize,
    /// Only addresses with a connection open: at most `max-connections` entries.
    per_client: HashMap<IpAddr, usize>,
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
            serving: Arc::default(),
        })
    }

    /// The runtime of `config` on the listener where `old` served until a scenario
    /// replacement: the connections still open there count towards its limits.
    pub(crate) fn succeeding(
        config: Host,
        tls: Option<tokio_rustls::TlsAcceptor>,
        policy: Arc<PolicyState>,
        old: &HostRuntime,
        keep_state: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            tls,
            name: Arc::from(config.name.as_str()),
            replies: Replies::for_host(&config),
            policy: HostPolicy::succeeding(&config, policy, &old.policy, keep_state),
            config,
            serving: old.serving.clone(),
        })
    }
}

impl HostRuntime {
    /// How many connections the host serves now.
    pub(crate) fn open_connections(&self) -> usize {
        self.serving.lock().total
    }
}

/// What a new connection got: one of the host's connection slots, or the limit it met
/// (then the session only says so and closes).
#[derive(Debug)]
pub(super) enum Slot {
    /// Held until the guard drops, when the session ends.
    Held { _guard: ActiveGuard },
    /// The host already serves `max-connections`.
    HostFull,
    /// The host already serves `max-connections-per-client` from this address.
    ClientFull,
}

impl Slot {
    /// Takes a slot for a connection from `client`, if both limits allow it. The client's
    /// limit is checked first, so that a client that floods the host is told it is the
    /// one over its limit.
    pub(super) fn take(host: &Arc<HostRuntime>, client: IpAddr) -> Self {
        let limits = &host.config.limits;
        let mut serving = host.serving.lock();
        let from_client = serving.per_client.get(&client).copied().unwrap_or(0);
        if from_client >= limits.max_connections_per_client {
            return Slot::ClientFull;
        }
        if serving.total >= limits.max_connections {
            return Slot::HostFull;
        }
        serving.total += 1;
        *serving.per_client.entry(client).or_insert(0) += 1;
        Slot::Held {
            _guard: ActiveGuard {
                host: host.clone(),
                client,
            },
        }
    }
}

/// One of a host's connection slots; the slot is freed when the guard is dropped.
#[derive(Debug)]
pub(super) struct ActiveGuard {
    host: Arc<HostRuntime>,
    client: IpAddr,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut serving = self.host.serving.lock();
        serving.total = serving.total.saturating_sub(1);
        if let Some(n) = serving.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                serving.per_client.remove(&self.client);
            }
        }
    }
}
