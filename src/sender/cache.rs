//! The sender's connection cache, as Postfix's `scache(8)` keeps one: open connections
//! between transactions, each under its host (the physical endpoint), and a binding
//! from a destination (the recipients' domain) to the host of its first good session,
//! so that a later delivery to that domain goes straight to the host that took mail
//! last, skipping the ones that refused it (CONNECTION_CACHE_README).
//!
//! An entry lives `smtp_connection_cache_time_limit` after it was saved; the engine
//! closes it then, without QUIT, as scache closes the descriptor it holds.

use std::time::Duration;

use tokio::io::DuplexStream;

use super::client::Connection;

/// A connection in the cache.
pub struct Cached {
    pub host: String,
    pub connection: Connection<DuplexStream>,
    /// When it was opened: Postfix stops reusing a connection
    /// `smtp_connection_reuse_time_limit` after that.
    pub opened: Duration,
    /// Transactions it has carried.
    pub uses: u32,
    /// The client port the farm saw it from.
    pub port: u16,
    /// When the cache closes it unless it is taken first.
    pub(super) until: Duration,
}

impl Cached {
    pub fn new(
        host: String,
        connection: Connection<DuplexStream>,
        opened: Duration,
        port: u16,
    ) -> Cached {
        Cached {
            host,
            connection,
            opened,
            uses: 0,
            port,
            until: Duration::ZERO,
        }
    }
}

/// The cache of one simulation.
#[derive(Default)]
pub struct ConnectionCache {
    entries: Vec<Cached>,
    /// Destination -> (host, until).
    bindings: Vec<(String, String, Duration)>,
}

impl ConnectionCache {
    /// Keeps `entry` until `now + ttl`, under its host and, with `destination`, under
    /// that destination too (replacing an older binding of it).
    pub fn save(
        &mut self,
        mut entry: Cached,
        destination: Option<&str>,
        now: Duration,
        ttl: Duration,
    ) {
        let until = now.saturating_add(ttl);
        entry.until = until;
        if let Some(d) = destination {
            self.bindings.retain(|(bound, _, _)| bound != d);
            self.bindings
                .push((d.to_string(), entry.host.clone(), until));
        }
        self.entries.push(entry);
    }

    /// A connection to the host `destination` is bound to, if both are still alive.
    pub fn take_destination(&mut self, destination: &str, now: Duration) -> Option<Cached> {
        let host = self
            .bindings
            .iter()
            .find(|(d, _, until)| d == destination && *until > now)
            .map(|(_, h, _)| h.clone())?;
        self.take_host(&host, now)
    }

    /// A connection to `host`, the one saved first.
    pub fn take_host(&mut self, host: &str, now: Duration) -> Option<Cached> {
        let at = self
            .entries
            .iter()
            .position(|e| e.host == host && e.until > now)?;
        Some(self.entries.remove(at))
    }

    /// Takes out what has outlived its time, for the caller to close.
    pub fn expire(&mut self, now: Duration) -> Vec<Cached> {
        self.bindings.retain(|(_, _, until)| *until > now);
        let (gone, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.until <= now);
        self.entries = kept;
        gone
    }

    /// When the next entry falls due to be closed.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.entries.iter().map(|e| e.until).min()
    }
}
