//! The sender's queue in virtual time: every message waits for the time its model gives,
//! then is looked at: its recipients grouped by domain, each domain's MX hosts from the
//! scenario, the hosts the model picks tried over in-memory SMTP sessions with the farm,
//! and the model told how each ended. Looks that fall due together run side by side, up to
//! the model's number of lanes, as an MTA's delivery agents do.
//!
//! Time is the farm's clock, which under tokio's paused time jumps straight to the next
//! wait: days of retries take as long as their sessions' work.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::client::{self, Envelope, Stage, Trouble};
use super::model::{MessageView, Model, Next, Plan, TryEnd};
use super::outcome::{
    Fate, MessageOutcome, NoticeKind, RecipientOutcome, SentNotice, SessionLog, Try,
};
use super::resolve::{Resolved, Resolver};
use super::{SimMessage, SimOptions};
use crate::farm::Farm;

/// The least time between two looks at a message.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// A message in the queue.
struct Queued {
    rng: ChaCha8Rng,
    /// When each domain of its pending recipients is looked at next (absent: now).
    due: BTreeMap<String, Duration>,
    /// Tries made per domain: the schedule of one domain is not the other's.
    domain_tries: BTreeMap<String, usize>,
    outcome: MessageOutcome,
    content: String,
    /// Recipients not yet delivered or bounced, by index.
    pending: Vec<usize>,
    /// When it is looked at next; `None` once nothing is pending.
    next_at: Option<Duration>,
}

/// What the looks share: the model and its randomness, behind one lock that is never
/// held across a session.
struct Shared<'a> {
    farm: &'a Farm,
    resolver: Resolver,
    model: Mutex<Box<dyn Model>>,
    client: IpAddr,
    port: AtomicU32,
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
        // Each look starts when it falls due, oldest due first, while a lane is free: a
        // session that hangs holds up its own message only.
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
            for (_, i) in due.into_iter().take(lanes - running.len()) {
                if let Some(q) = slots[i].take() {
                    let shared = &shared;
                    running.push(async move {
                        let mut q = q;
                        look(shared, &mut q).await;
                        (i, q)
                    });
                }
            }
        }
        let next_idle = slots
            .iter()
            .flatten()
            .filter_map(|q| q.next_at)
            .filter(|t| *t <= until)
            .min();
        if running.is_empty() {
            match next_idle {
                Some(t) => farm.clock().sleep_until(t).await,
                None => break,
            }
            continue;
        }
        let wake = next_idle.filter(|_| running.len() < lanes);
        tokio::select! {
            Some((i, q)) = running.next() => slots[i] = Some(q),
            () = sleep_or_never(farm, wake) => {}
        }
    }
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

/// One look at a message: each domain of its pending recipients tried as the model says.
async fn look(shared: &Shared<'_>, q: &mut Queued) {
    let now = shared.farm.now();
    let mut domains: Vec<String> = Vec::new();
    for &i in &q.pending {
        let d = domain_of(&q.outcome.recipients[i].address);
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    let bounces_before = bounced(q);
    for domain in domains {
        // Each domain on its own schedule: one in a long wait is not tried with another
        // that is due.
        if q.due.get(&domain).is_some_and(|t| *t > now) {
            continue;
        }
        *q.domain_tries.entry(domain.clone()).or_default() += 1;
        match look_at_domain(shared, q, &domain).await {
            Some(at) => q.due.insert(domain, at),
            None => q.due.remove(&domain),
        };
    }
    let end = shared.farm.now();
    q.next_at = if q.pending.is_empty() {
        None
    } else {
        q.due.values().min().copied()
    };
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
fn view<'a>(q: &'a Queued, pending: &'a [(usize, &'a str)]) -> MessageView<'a> {
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
async fn look_at_domain(shared: &Shared<'_>, q: &mut Queued, domain: &str) -> Option<Duration> {
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
            return decide(shared, q, &borrowed, Decided::LookupFailed(&why));
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
            return None;
        }
    };
    let borrowed: Vec<(usize, &str)> = ours.iter().map(|(i, a)| (*i, a.as_str())).collect();
    let mut rng = std::mem::replace(&mut q.rng, ChaCha8Rng::seed_from_u64(0));
    let plan = {
        let view = view(q, &borrowed);
        shared.model.lock().plan(&view, &mx, now, &mut rng)
    };
    q.rng = rng;
    let (hosts, mut todo) = match plan {
        Plan::Wait { why } => {
            q.outcome.tries.push(Try {
                at: now,
                sessions: Vec::new(),
                waited: Some(why),
            });
            return decide(shared, q, &borrowed, Decided::Waited);
        }
        Plan::Try { hosts, recipients } => (hosts, recipients),
    };
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
    for host in hosts {
        if limit.is_some_and(|l| counted >= l) || todo.is_empty() {
            break;
        }
        let port = 1024 + shared.port.fetch_add(1, Ordering::Relaxed) % 64_000;
        let Some(stream) = shared
            .farm
            .connect_in_memory(&host, SocketAddr::new(shared.client, port as u16))
        else {
            continue;
        };
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
        let session = client::session(stream, envelope, &timeouts).await;
        drop(recipients);
        let at = shared.farm.now();
        if session.passed_handshake() {
            counted += 1;
        }
        let mut log = SessionLog {
            host: host.clone(),
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
                    host: host.clone(),
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
            for &i in &todo {
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
        todo.retain(|i| q.pending.contains(i));
        let go_on = {
            let view = view(q, &borrowed);
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
    q.outcome.tries.push(Try {
        at: now,
        sessions: logs,
        waited: None,
    });
    let end = TryEnd {
        any_handshake: sessions.iter().any(|(_, s)| s.passed_handshake()),
        sessions: &sessions,
    };
    decide(shared, q, &borrowed, Decided::Tried(&end))
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

fn settle(q: &mut Queued, index: usize, fate: Fate) {
    q.pending.retain(|&i| i != index);
    q.outcome.recipients[index].fate = fate;
}
