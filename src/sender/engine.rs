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

use futures_util::StreamExt;
use parking_lot::Mutex;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::client::{self, Envelope, Trouble};
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
    model: Mutex<(Box<dyn Model>, ChaCha8Rng)>,
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
        model: Mutex::new((model, ChaCha8Rng::seed_from_u64(options.seed))),
        client: options.client,
        port: AtomicU32::new(0),
    };
    let mut queue: Vec<Queued> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| queued(i, m, start))
        .collect();
    let until = start + options.limit;
    while let Some(next) = queue.iter().filter_map(|q| q.next_at).min() {
        if next > until {
            break;
        }
        farm.clock().sleep_until(next).await;
        let now = farm.now();
        let due = queue
            .iter_mut()
            .filter(|q| q.next_at.is_some_and(|t| t <= now));
        futures_util::stream::iter(due)
            .map(|q| look(&shared, q))
            .buffer_unordered(lanes)
            .collect::<Vec<()>>()
            .await;
    }
    queue
        .into_iter()
        .map(|mut q| {
            for &i in &q.pending {
                q.outcome.recipients[i].fate = Fate::Queued;
            }
            q.outcome
        })
        .collect()
}

fn queued(index: usize, message: &SimMessage, start: Duration) -> Queued {
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
    let arrived = start + message.at;
    Queued {
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
    let mut next_at: Option<Duration> = None;
    for domain in domains {
        if let Some(at) = look_at_domain(shared, q, &domain).await {
            next_at = Some(next_at.map_or(at, |n| n.min(at)));
        }
    }
    let end = shared.farm.now();
    q.next_at = if q.pending.is_empty() { None } else { next_at };
    if !q.pending.is_empty() {
        let notices = {
            let addresses = addresses(q);
            let borrowed: Vec<(usize, &str)> =
                addresses.iter().map(|(i, a)| (*i, a.as_str())).collect();
            let view = view(q, &borrowed);
            shared.model.lock().0.notices(&view, end)
        };
        for n in notices {
            q.outcome.notices.push(SentNotice {
                at: end,
                kind: NoticeKind::DelayWarning,
                text: n.text,
            });
        }
    }
    if bounced(q) > bounces_before {
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
        let text = shared.model.lock().0.bounce(&why);
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

fn view<'a>(q: &'a Queued, pending: &'a [(usize, &'a str)]) -> MessageView<'a> {
    MessageView {
        index: q.outcome.number - 1,
        from: &q.outcome.from,
        arrived: q.outcome.arrived,
        pending,
        tries: q.outcome.tries.len(),
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
                waited: Some(why),
            });
            let borrowed: Vec<(usize, &str)> = ours.iter().map(|(i, a)| (*i, a.as_str())).collect();
            return decide(shared, q, &borrowed, None);
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
    let plan = {
        let view = view(q, &borrowed);
        let (model, rng) = &mut *shared.model.lock();
        model.plan(&view, &mx, now, rng)
    };
    let (hosts, mut todo) = match plan {
        Plan::Wait { why } => {
            q.outcome.tries.push(Try {
                at: now,
                sessions: Vec::new(),
                waited: Some(why),
            });
            return decide(shared, q, &borrowed, None);
        }
        Plan::Try { hosts, recipients } => (hosts, recipients),
    };
    let (timeouts, limit, helo, bounce_5xx_handshake) = {
        let guard = shared.model.lock();
        let m = &guard.0;
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
            for &i in &todo {
                if q.pending.contains(&i) {
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
                .0
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
    decide(shared, q, &borrowed, Some(&end))
}

/// Asks the model when to look again at `ours` recipients still pending after a try (or
/// a wait), and bounces them if it gives up.
fn decide(
    shared: &Shared<'_>,
    q: &mut Queued,
    ours: &[(usize, &str)],
    end: Option<&TryEnd>,
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
        shared.model.lock().0.next(&view, end, now)
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
