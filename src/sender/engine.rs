//! The sender's queue in virtual time: every message waits for the time its model gives,
//! then is looked at: its recipients grouped by domain, each domain's MX hosts from the
//! scenario, the hosts the model picks tried over in-memory SMTP sessions with the farm,
//! and the model told how each ended. Looks that fall due together run side by side, up to
//! the model's number of lanes, as an MTA's delivery agents do.
//!
//! Time is the farm's clock, which under tokio's paused time jumps straight to the next
//! wait: days of retries take as long as their sessions' work.

use std::net::IpAddr;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::cache::ConnectionCache;
use super::client::{self, Trouble};
use super::delivery;
use super::model::{CacheUse, Destination, MessageView, Model, Next, Plan, TryEnd};
use super::outcome::{Fate, MessageOutcome, NoticeKind, RecipientOutcome, SentNotice, Try};
use super::resolve::{Resolved, Resolver};
use super::{SimMessage, SimOptions};
use crate::farm::Farm;

/// The least time between two looks at a message.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// A message in the queue.
pub(super) struct Queued {
    pub(super) rng: ChaCha8Rng,
    /// When each domain of its pending recipients is looked at next (absent: now).
    due: BTreeMap<String, Duration>,
    /// Tries made per domain: the schedule of one domain is not the other's.
    domain_tries: BTreeMap<String, usize>,
    pub(super) outcome: MessageOutcome,
    pub(super) content: String,
    /// Recipients not yet delivered or bounced, by index.
    pub(super) pending: Vec<usize>,
    /// When it is looked at next; `None` once nothing is pending.
    next_at: Option<Duration>,
}

/// What the looks share: the model and its randomness, behind one lock that is never
/// held across a session.
pub(super) struct Shared<'a> {
    pub farm: &'a Farm,
    resolver: Resolver,
    pub model: Mutex<Box<dyn Model>>,
    pub client: IpAddr,
    pub port: AtomicU32,
    /// Each destination's queue while it is in use; locked before `model` when both are.
    queues: Mutex<BTreeMap<String, QueueState>>,
    pub cache: Mutex<ConnectionCache>,
}

/// What the queue knows of a destination while messages for it are under way.
#[derive(Debug, Default)]
struct QueueState {
    busy: usize,
    last_done: Option<Duration>,
}

pub(super) async fn run(
    farm: &Farm,
    model: Box<dyn Model>,
    messages: &[SimMessage],
    options: &SimOptions,
) -> Vec<MessageOutcome> {
    let start = farm.now();
    let lanes = model.lanes().max(1);
    let shared = Shared {
        farm,
        resolver: Resolver::new(farm, options.client),
        model: Mutex::new(model),
        client: options.client,
        port: AtomicU32::new(0),
        queues: Mutex::new(BTreeMap::new()),
        cache: Mutex::new(ConnectionCache::default()),
    };
    let mut slots: Vec<Option<Queued>> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| Some(queued(i, m, start, options.seed)))
        .collect();
    let until = start.saturating_add(options.limit);
    let mut running = FuturesUnordered::new();
    loop {
        let now = farm.now();
        // Connections the cache has kept past their time are closed, without QUIT.
        drop(shared.cache.lock().expire(now));
        forget_idle_queues(&shared, &slots, now);
        // Each look starts when it falls due, oldest due first, while a lane is free and
        // its destination's window has room: a session that hangs holds up its own
        // message only.
        if running.len() < lanes {
            let mut due: Vec<(Duration, usize)> = slots
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let t = slot.as_ref()?.next_at?;
                    (t <= now && t <= until).then_some((t, i))
                })
                .collect();
            due.sort_unstable();
            for (_, i) in due {
                if running.len() >= lanes {
                    break;
                }
                let Some(q) = slots[i].as_ref() else { continue };
                let starting = start_deliveries(&shared, q, now);
                if starting.is_empty() {
                    continue;
                }
                if let Some(q) = slots[i].take() {
                    let shared = &shared;
                    running.push(async move {
                        let mut q = q;
                        look(shared, &mut q, starting).await;
                        (i, q)
                    });
                }
            }
        }
        // Only what falls due later wakes the loop: a look due now that did not start
        // waits for a lane or a window, which the end of a running look frees.
        let next_idle = slots
            .iter()
            .flatten()
            .filter_map(|q| q.next_at)
            .filter(|t| *t > now && *t <= until)
            .min();
        let cache_due = shared.cache.lock().next_expiry();
        if running.is_empty() {
            match earliest(next_idle, cache_due) {
                Some(t) => farm.clock().sleep_until(t).await,
                None => break,
            }
            continue;
        }
        let wake = earliest(next_idle.filter(|_| running.len() < lanes), cache_due);
        tokio::select! {
            Some((i, q)) = running.next() => slots[i] = Some(q),
            () = sleep_or_never(farm, wake) => {}
        }
    }
    // The farm's sessions see the last connections closed (the cache's, at its time
    // limit) before the caller reads the journal: under paused time the clock moves on
    // only once every task is idle.
    drop(shared.cache.lock().expire(Duration::MAX));
    farm.clock()
        .sleep_until(farm.now() + Duration::from_millis(1))
        .await;
    slots
        .into_iter()
        .flatten()
        .map(|mut q| {
            for &i in &q.pending {
                q.outcome.recipients[i].fate = Fate::Queued;
            }
            q.outcome
        })
        .collect()
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The domains of `q`'s pending recipients, in order of first appearance.
fn pending_domains(q: &Queued) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    for &i in &q.pending {
        let d = domain_of(&q.outcome.recipients[i].address);
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    domains
}

/// Starts the deliveries of `q` that are due at `now` and whose destination's window
/// has room: each counted busy, and the model told, which answers how each may use
/// the connection cache. Empty when none can start.
fn start_deliveries(shared: &Shared<'_>, q: &Queued, now: Duration) -> Vec<(String, CacheUse)> {
    let mut queues = shared.queues.lock();
    let mut model = shared.model.lock();
    let mut starting = Vec::new();
    for domain in pending_domains(q) {
        if q.due.get(&domain).is_some_and(|t| *t > now) {
            continue;
        }
        let state = queues.entry(domain.clone()).or_default();
        if state.busy >= model.window(&domain) {
            continue;
        }
        state.busy += 1;
        let cache = model.delivery_starts(
            &Destination {
                name: &domain,
                busy: state.busy,
                last_done: state.last_done,
            },
            now,
        );
        starting.push((domain, cache));
    }
    starting
}

/// Ends a delivery to `domain` started by [`start_deliveries`]; `site_failed` is `None`
/// when no delivery was made after all (the model waited).
fn end_delivery(shared: &Shared<'_>, domain: &str, site_failed: Option<bool>) {
    let now = shared.farm.now();
    let mut queues = shared.queues.lock();
    let mut model = shared.model.lock();
    let Some(state) = queues.get_mut(domain) else {
        return;
    };
    let Some(site_failed) = site_failed else {
        state.busy = state.busy.saturating_sub(1);
        return;
    };
    {
        model.delivery_ends(
            &Destination {
                name: domain,
                busy: state.busy,
                last_done: state.last_done,
            },
            site_failed,
            now,
        );
        state.busy = state.busy.saturating_sub(1);
        state.last_done = Some(now);
    }
}

/// Drops the queue of every destination with no delivery under way and no message
/// waiting for it now, as Postfix's qmgr drops an empty in-core queue (and with it
/// when its last delivery ended, which decides on-demand connection caching).
fn forget_idle_queues(shared: &Shared<'_>, slots: &[Option<Queued>], now: Duration) {
    let mut queues = shared.queues.lock();
    let idle: Vec<String> = queues
        .iter()
        .filter(|(_, s)| s.busy == 0)
        .map(|(d, _)| d.clone())
        .filter(|d| {
            !slots.iter().flatten().any(|q| {
                q.next_at.is_some_and(|t| t <= now)
                    && q.due.get(d).is_none_or(|t| *t <= now)
                    && pending_domains(q).contains(d)
            })
        })
        .collect();
    if idle.is_empty() {
        return;
    }
    let mut model = shared.model.lock();
    for d in idle {
        queues.remove(&d);
        model.queue_done(&d);
    }
}

/// Sleeps until farm time `wake`, or for ever.
async fn sleep_or_never(farm: &Farm, wake: Option<Duration>) {
    match wake {
        Some(t) => farm.clock().sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn queued(index: usize, message: &SimMessage, start: Duration, seed: u64) -> Queued {
    let number = index + 1;
    let domain = message
        .from
        .rsplit_once('@')
        .map_or("sender.test", |(_, d)| d);
    let message_id = format!("<sim-{number}@{domain}>");
    let content = client::dot_stuffed(&format!(
        "From: <{from}>\r\nTo: {to}\r\nSubject: simulated message {number}\r\nMessage-ID: {message_id}\r\n\r\nThis message was sent by mxfarm's sender simulation.\r\n",
        from = message.from,
        to = message
            .to
            .iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let arrived = start.saturating_add(message.at);
    Queued {
        // A generator per message, from the seed and its number: the order of
        // equal-preference hosts does not hang on the order in which looks come.
        rng: ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        due: BTreeMap::new(),
        domain_tries: BTreeMap::new(),
        outcome: MessageOutcome {
            number,
            message_id,
            from: message.from.clone(),
            arrived,
            recipients: message
                .to
                .iter()
                .map(|address| RecipientOutcome {
                    address: address.clone(),
                    fate: Fate::Queued,
                })
                .collect(),
            tries: Vec::new(),
            notices: Vec::new(),
        },
        content,
        pending: (0..message.to.len()).collect(),
        next_at: Some(arrived),
    }
}

/// The domain part of an address, lower case.
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(_, d)| d)
        .to_ascii_lowercase()
}

/// One look at a message: the deliveries [`start_deliveries`] started, each domain's
/// pending recipients tried as the model says.
async fn look(shared: &Shared<'_>, q: &mut Queued, starting: Vec<(String, CacheUse)>) {
    let bounces_before = bounced(q);
    let now = shared.farm.now();
    for (domain, cache) in starting {
        *q.domain_tries.entry(domain.clone()).or_default() += 1;
        let (again, site_failed) = look_at_domain(shared, q, &domain, cache).await;
        end_delivery(shared, &domain, site_failed);
        match again {
            Some(at) => q.due.insert(domain, at),
            None => q.due.remove(&domain),
        };
    }
    let end = shared.farm.now();
    // A domain that could not start (its window was full) is due still, now.
    q.next_at = pending_domains(q)
        .iter()
        .map(|d| q.due.get(d).copied().unwrap_or(end))
        .min();
    if !q.pending.is_empty() {
        let notices = {
            let addresses = addresses(q);
            let borrowed: Vec<(usize, &str)> =
                addresses.iter().map(|(i, a)| (*i, a.as_str())).collect();
            let view = view(q, &borrowed);
            shared.model.lock().notices(&view, end)
        };
        for n in notices {
            q.outcome.notices.push(SentNotice {
                at: end,
                kind: NoticeKind::DelayWarning,
                text: n.text,
            });
        }
    }
    // A bounce is never sent for a bounce (RFC 5321 section 6.1).
    if bounced(q) > bounces_before && !q.outcome.from.is_empty() {
        let why = q
            .outcome
            .recipients
            .iter()
            .rev()
            .find_map(|r| match &r.fate {
                Fate::Bounced { at, why } if *at >= now => Some(why.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let text = shared.model.lock().bounce(&why);
        q.outcome.notices.push(SentNotice {
            at: end,
            kind: NoticeKind::Bounce,
            text,
        });
    }
}

fn bounced(q: &Queued) -> usize {
    q.outcome
        .recipients
        .iter()
        .filter(|r| matches!(r.fate, Fate::Bounced { .. }))
        .count()
}

fn addresses(q: &Queued) -> Vec<(usize, String)> {
    q.pending
        .iter()
        .map(|&i| (i, q.outcome.recipients[i].address.clone()))
        .collect()
}

/// The model's view of `q` with `pending` (all of one domain, but for notices); its
/// tries are those of that domain.
pub(super) fn view<'a>(q: &'a Queued, pending: &'a [(usize, &'a str)]) -> MessageView<'a> {
    let tries = pending
        .first()
        .and_then(|(_, a)| q.domain_tries.get(&domain_of(a)))
        .copied()
        .unwrap_or(q.outcome.tries.len());
    MessageView {
        index: q.outcome.number - 1,
        from: &q.outcome.from,
        arrived: q.outcome.arrived,
        pending,
        tries,
    }
}

/// Tries `domain`'s pending recipients of `q`; returns when to look again if some are
/// still pending.
async fn look_at_domain(
    shared: &Shared<'_>,
    q: &mut Queued,
    domain: &str,
    cache: CacheUse,
) -> (Option<Duration>, Option<bool>) {
    let now = shared.farm.now();
    let ours: Vec<(usize, String)> = addresses(q)
        .into_iter()
        .filter(|(_, a)| domain_of(a) == domain)
        .collect();
    let mx = match shared.resolver.resolve(shared.farm, domain).await {
        Resolved::Hosts(mx) => mx,
        Resolved::Temporary(why) => {
            q.outcome.tries.push(Try {
                at: now,
                sessions: Vec::new(),
                waited: Some(why.clone()),
            });
            let borrowed: Vec<(usize, &str)> = ours.iter().map(|(i, a)| (*i, a.as_str())).collect();
            return (
                decide(shared, q, &borrowed, Decided::LookupFailed(&why)),
                Some(false),
            );
        }
        Resolved::Permanent(why) => {
            for (i, _) in &ours {
                settle(
                    q,
                    *i,
                    Fate::Bounced {
                        at: now,
                        why: why.clone(),
                    },
                );
            }
            return (None, Some(false));
        }
    };
    let borrowed: Vec<(usize, &str)> = ours.iter().map(|(i, a)| (*i, a.as_str())).collect();
    let mut rng = std::mem::replace(&mut q.rng, ChaCha8Rng::seed_from_u64(0));
    let plan = {
        let view = view(q, &borrowed);
        shared.model.lock().plan(&view, &mx, now, &mut rng)
    };
    q.rng = rng;
    let (hosts, todo) = match plan {
        Plan::Wait { why } => {
            q.outcome.tries.push(Try {
                at: now,
                sessions: Vec::new(),
                waited: Some(why),
            });
            return (decide(shared, q, &borrowed, Decided::Waited), None);
        }
        Plan::Try { hosts, recipients } => (hosts, recipients),
    };
    let (logs, sessions) =
        delivery::try_hosts(shared, q, &borrowed, domain, hosts, &mx, todo, cache).await;
    q.outcome.tries.push(Try {
        at: now,
        sessions: logs,
        waited: None,
    });
    let end = TryEnd {
        any_handshake: sessions.iter().any(|(_, s)| s.passed_handshake()),
        sessions: &sessions,
    };
    let site_failed = end.last_failure().is_some_and(|(_, stage, trouble)| {
        stage.is_handshake() || matches!(trouble, Trouble::Lost | Trouble::Timeout { .. })
    });
    (
        decide(shared, q, &borrowed, Decided::Tried(&end)),
        Some(site_failed),
    )
}

/// What the model is asked to decide after.
enum Decided<'a> {
    Tried(&'a TryEnd<'a>),
    /// The model's plan was a wait.
    Waited,
    /// The MX or address lookup failed for now, with the sender's words for it.
    LookupFailed(&'a str),
}

/// Asks the model when to look again at `ours` recipients still pending after a try (or
/// a wait), and bounces them if it gives up.
fn decide(
    shared: &Shared<'_>,
    q: &mut Queued,
    ours: &[(usize, &str)],
    end: Decided,
) -> Option<Duration> {
    let still: Vec<(usize, &str)> = ours
        .iter()
        .copied()
        .filter(|(i, _)| q.pending.contains(i))
        .collect();
    if still.is_empty() {
        return None;
    }
    let now = shared.farm.now();
    let next = {
        let view = view(q, &still);
        let mut model = shared.model.lock();
        match end {
            Decided::Tried(end) => model.next(&view, Some(end), now),
            Decided::Waited => model.next(&view, None, now),
            Decided::LookupFailed(why) => model.lookup_failed(&view, why, now),
        }
    };
    match next {
        // At least a second on: a model set to wait nothing (`MessageRetryInterval=0`)
        // would otherwise look again at the same instant for ever.
        Next::At(t) => Some(t.max(now + MIN_WAIT)),
        Next::GiveUp { why } => {
            for (i, _) in still {
                settle(
                    q,
                    i,
                    Fate::Bounced {
                        at: now,
                        why: why.clone(),
                    },
                );
            }
            None
        }
    }
}

pub(super) fn settle(q: &mut Queued, index: usize, fate: Fate) {
    q.pending.retain(|&i| i != index);
    q.outcome.recipients[index].fate = fate;
}
