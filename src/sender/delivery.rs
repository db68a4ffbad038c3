//! One delivery of a message's recipients at one domain: the MX hosts the model picked,
//! walked in order, each over an in-memory session with the farm, or over a connection
//! an earlier delivery left in the sender's connection cache.
//!
//! With the cache (Postfix's `smtp_connect.c`, `smtp_reuse_session`): first the
//! connection bound to the destination, which skips straight to the host that took
//! its last good session; then open connections to the best-preference hosts; then the
//! remaining hosts in order, each over a cached connection to it if there is one (for
//! a host of lower preference) or a new one. Each cached connection is probed with RSET
//! first. After a session fit for another transaction, the connection is saved under
//! its host, and, if no session before it in this delivery was good, under the
//! destination too; a session that failed the site (refused to talk, a 421, lost or
//! timed out) leaves that binding to a later, good one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::cache::Cached;
use super::client::{self, Envelope, Session, Stage, Start, Trouble};
use super::engine::{Queued, Shared, settle, view};
use super::model::{CacheUse, Mx};
use super::outcome::{Fate, SessionLog};

/// Where the next session of a delivery comes from.
enum Source {
    /// The connection bound to the destination.
    Destination,
    /// An open connection to this host, or nothing.
    CachedOnly(String),
    /// A connection to this host: an open one if `reuse` and there is one, else new.
    Host { host: String, reuse: bool },
}

/// The order in which a delivery looks for connections to `hosts`.
fn sources(hosts: Vec<String>, mx: &[Mx], cache: CacheUse) -> Vec<Source> {
    let preference = |h: &str| {
        mx.iter()
            .find(|m| m.host == h)
            .map_or(u16::MAX, |m| m.preference)
    };
    let best = hosts.iter().map(|h| preference(h)).min();
    let mut out = Vec::new();
    if cache.load {
        out.push(Source::Destination);
        out.extend(
            hosts
                .iter()
                .filter(|h| Some(preference(h)) == best)
                .map(|h| Source::CachedOnly(h.clone())),
        );
    }
    out.extend(hosts.into_iter().map(|host| {
        let reuse = cache.load && Some(preference(&host)) != best;
        Source::Host { host, reuse }
    }));
    out
}

/// A cached connection that answered the RSET probe, with what the cache knew of it
/// and its use counted.
async fn from_cache(taken: Option<Cached>, cache: CacheUse) -> Option<Cached> {
    let mut entry = taken?;
    entry.connection = entry.connection.probe(cache.probe_timeout).await?;
    entry.uses += 1;
    Some(entry)
}

/// Tries `hosts` for the `todo` recipients of `q` at `domain`; returns the sessions as
/// logged and as the model reads them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn try_hosts(
    shared: &Shared<'_>,
    q: &mut Queued,
    borrowed: &[(usize, &str)],
    domain: &str,
    hosts: Vec<String>,
    mx: &[Mx],
    mut todo: Vec<usize>,
    cache: CacheUse,
) -> (Vec<SessionLog>, Vec<(String, Session)>) {
    let (timeouts, limit, helo, bounce_5xx_handshake) = {
        let m = shared.model.lock();
        (
            m.timeouts(),
            m.session_limit(),
            m.helo().to_string(),
            m.bounces_on_5xx_handshake(),
        )
    };
    let mut sessions = Vec::new();
    let mut logs = Vec::new();
    let mut counted = 0;
    let mut used: Vec<String> = Vec::new();
    // Until a session is good, the next one fit to keep is kept under the destination.
    let mut bind_destination = true;
    for source in sources(hosts, mx, cache) {
        if limit.is_some_and(|l| counted >= l) || todo.is_empty() {
            break;
        }
        let now = shared.farm.now();
        let cached = match &source {
            Source::Destination => shared.cache.lock().take_destination(domain, now),
            Source::CachedOnly(h)
            | Source::Host {
                host: h,
                reuse: true,
            } if !used.contains(h) => shared.cache.lock().take_host(h, now),
            _ => None,
        };
        let (host, start, opened, uses, port) = match (from_cache(cached, cache).await, source) {
            (Some(entry), _) => (
                entry.host,
                Start::Reused(entry.connection),
                entry.opened,
                entry.uses,
                entry.port,
            ),
            (None, Source::Host { host, .. }) if !used.contains(&host) => {
                let port = (1024 + shared.port.fetch_add(1, Ordering::Relaxed) % 64_000) as u16;
                let Some(stream) = shared
                    .farm
                    .connect_in_memory(&host, SocketAddr::new(shared.client, port))
                else {
                    continue;
                };
                (host, Start::Fresh(stream), now, 0, port)
            }
            _ => continue,
        };
        used.push(host.clone());
        let reused = matches!(start, Start::Reused(_));
        let recipients: Vec<(usize, &str)> = todo
            .iter()
            .map(|&i| (i, q.outcome.recipients[i].address.as_str()))
            .collect();
        let envelope = Envelope {
            helo: &helo,
            from: &q.outcome.from,
            recipients: &recipients,
            content: &q.content,
        };
        let fresh_enough = now.saturating_sub(opened) < cache.reuse_time
            && (cache.reuse_count == 0 || uses < cache.reuse_count);
        let keep = cache.store && fresh_enough;
        let (session, kept) = client::deliver(start, envelope, &timeouts, keep).await;
        drop(recipients);
        let at = shared.farm.now();
        if let Some(connection) = kept {
            let mut entry = Cached::new(host.clone(), connection, opened, port);
            entry.uses = uses;
            let destination = bind_destination.then_some(domain);
            shared
                .cache
                .lock()
                .save(entry, destination, at, cache.keep_for);
        }
        if !failed_the_site(&session) {
            bind_destination = false;
        }
        if session.passed_handshake() {
            counted += 1;
        }
        let log = record(q, &host, &session, &todo, bounce_5xx_handshake, at, reused);
        todo.retain(|i| q.pending.contains(i));
        let go_on = {
            let view = view(q, borrowed);
            shared
                .model
                .lock()
                .after_session(&view, &host, &session, at)
        };
        logs.push(log);
        sessions.push((host, session));
        if !go_on {
            break;
        }
    }
    (logs, sessions)
}

/// Whether `session` failed the host rather than the message (Postfix's throttled
/// session): it refused to talk, sent a 421, or the connection was lost or timed out.
fn failed_the_site(session: &Session) -> bool {
    match &session.failure {
        None => false,
        Some((stage, Trouble::Reply { reply })) => stage.is_handshake() || reply.code == 421,
        Some(_) => true,
    }
}

/// Settles what `session` decided for the recipients of `q` it was for, and logs it.
fn record(
    q: &mut Queued,
    host: &str,
    session: &Session,
    todo: &[usize],
    bounce_5xx_handshake: bool,
    at: Duration,
    reused: bool,
) -> SessionLog {
    let mut log = SessionLog {
        host: host.to_string(),
        reused,
        delivered: session.delivered.len(),
        refused: Vec::new(),
        failed: session.failure.clone(),
    };
    for &i in &session.delivered {
        settle(
            q,
            i,
            Fate::Delivered {
                at,
                host: host.to_string(),
            },
        );
    }
    for (i, reply) in &session.rcpt {
        if !reply.is_ok() {
            log.refused
                .push((q.outcome.recipients[*i].address.clone(), reply.to_string()));
            if reply.is_permanent() {
                settle(
                    q,
                    *i,
                    Fate::Bounced {
                        at,
                        why: reply.to_string(),
                    },
                );
            }
        }
    }
    let permanent = match &session.failure {
        Some((stage, trouble @ Trouble::Reply { .. })) if trouble.is_permanent() => {
            !stage.is_handshake() || bounce_5xx_handshake
        }
        _ => false,
    };
    if permanent && let Some((stage, trouble)) = &session.failure {
        let why = format!("{trouble} (at {})", stage.name());
        // After RCPT, the refusal is of the message its recipients were accepted
        // for; one deferred at RCPT stays deferred.
        let accepted: Vec<usize> = session
            .rcpt
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| *i)
            .collect();
        let after_rcpt = matches!(stage, Stage::Data | Stage::Dot);
        for &i in todo {
            if q.pending.contains(&i) && (!after_rcpt || accepted.contains(&i)) {
                settle(
                    q,
                    i,
                    Fate::Bounced {
                        at,
                        why: why.clone(),
                    },
                );
            }
        }
    }
    log
}
