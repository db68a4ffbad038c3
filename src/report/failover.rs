//! mx-failover: after a connection-level failure on one MX host, did the client try
//! another? Judged on everything the client did, since parallel deliveries of one sender
//! share what it knows of the hosts (the module docs of [`super`] give the rule).

use std::time::Duration;

use super::client::{Clients, calls_for_failover, tls_failed};
use super::render::{duration, host_label, plural, what};
use super::{Finding, FindingKind, Severity};
use crate::transcript::TranscriptAttempt;

/// One failure and what the client did next.
struct Judged {
    failure: usize,
    /// `Some((conn, after))` when the next contact went to the same host again.
    stayed: Option<(u64, Duration)>,
    /// Where it went instead, when it moved on, and whether only after waiting longer
    /// than its move-on window (in a later try).
    moved_to: Option<(String, Option<Duration>)>,
}

/// The finding on the failures among `a`, with `mx_of` giving the MX hosts of the
/// domain an attempt was for.
pub(super) fn mx_failover<'m>(
    a: &[TranscriptAttempt],
    mx_of: &dyn Fn(&TranscriptAttempt) -> &'m [(String, u16)],
    clients: &Clients,
) -> Option<Finding> {
    let mut judged: Vec<Judged> = Vec::new();
    let mut alternatives_of_first_stay: Vec<String> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        if !calls_for_failover(x) {
            continue;
        }
        let mx = mx_of(x);
        let Some(client) = clients.of(x.attempt.client) else {
            continue;
        };
        let others: Vec<&(String, u16)> = mx.iter().filter(|(h, _)| *h != x.host).collect();
        // Hosts the sender may use: not the one that failed, nor any whose last contact
        // failed too, nor any whose address the farm's DNS did not give it.
        let usable: Vec<&(String, u16)> = others
            .iter()
            .copied()
            .filter(|(h, _)| {
                !client.last_failed(h, x.attempt.started)
                    && !client.unresolved(h, x.attempt.at + client.window)
            })
            .collect();
        if usable.is_empty() {
            continue;
        }
        let other_hosts: Vec<&str> = others.iter().map(|(h, _)| h.as_str()).collect();
        let all: Vec<&str> = mx.iter().map(|(h, _)| h.as_str()).collect();
        let until = x.attempt.at + client.window;
        // After a failed TLS handshake, the same host at once, in clear (Exim's
        // tls_tempfail_tryclear, Postfix at `may`), is right.
        if tls_failed(x)
            && client
                .contact_within(&[x.host.as_str()], x.conn, x.attempt.started, until)
                .is_some()
        {
            continue;
        }
        // Another host tried next, or already in this try (the failing host was its last).
        let moved = client
            .contact_within(&other_hosts, x.conn, x.attempt.started, until)
            .or_else(|| {
                client.earlier_in_try(&all, &other_hosts, x.conn, x.attempt.started, client.window)
            });
        if let Some(c) = moved {
            judged.push(Judged {
                failure: i,
                stayed: None,
                moved_to: Some((c.host.clone(), None)),
            });
            continue;
        }
        let Some(next) = client.next_contact(&all, x.attempt.at, x.conn) else {
            // Nothing followed: give-up judges that.
            continue;
        };
        if next.host == x.host {
            if judged.iter().all(|j| j.stayed.is_none()) {
                alternatives_of_first_stay = usable
                    .iter()
                    .map(|(h, p)| host_label(h, Some(*p)))
                    .collect();
            }
            judged.push(Judged {
                failure: i,
                stayed: Some((next.conn, next.started.saturating_sub(x.attempt.at))),
                moved_to: None,
            });
        } else {
            let waited = next.started.saturating_sub(x.attempt.at);
            judged.push(Judged {
                failure: i,
                stayed: None,
                moved_to: Some((next.host.clone(), Some(waited))),
            });
        }
    }
    let first = judged.first()?;
    let stays: Vec<&Judged> = judged.iter().filter(|j| j.stayed.is_some()).collect();
    let kind = FindingKind::MxFailover {
        failures: judged.len(),
        same_host: stays.len(),
    };
    if let Some(stay) = stays.first() {
        let i = stay.failure;
        let (conn, after) = stay.stayed.unwrap_or_default();
        let text = format!(
            "after the {} at #{} on {}, the client's next contact for the domain went to {} again {} later (conn {conn}), though {} had not refused it; {} of {}",
            what(&a[i]),
            i + 1,
            a[i].host,
            a[i].host,
            duration(after),
            alternatives_of_first_stay.join(", "),
            stays.len(),
            plural(judged.len(), "failure", "failures"),
        );
        let attempts: Vec<usize> = stays.iter().map(|j| j.failure).collect();
        return Some(Finding::new(kind, Severity::Problem, &attempts, text));
    }
    // Moving on only in a later try is not wrong, but not what RFC 5321 §5.1 asks.
    let late = judged.iter().find_map(|j| match &j.moved_to {
        Some((host, Some(waited))) => Some((j.failure, host, *waited)),
        _ => None,
    });
    if let Some((i, host, waited)) = late {
        let text = format!(
            "after the {} at #{} on {}, the client tried another MX ({host}) only {} later, in a later try; RFC 5321 §5.1 has a sender try the next MX at once",
            what(&a[i]),
            i + 1,
            a[i].host,
            duration(waited),
        );
        return Some(Finding::new(kind, Severity::Info, &[i], text));
    }
    let text = format!(
        "moved to another MX after each connection-level failure ({}); e.g. after the {} at #{} on {}, it went to {}",
        plural(judged.len(), "time", "times"),
        what(&a[first.failure]),
        first.failure + 1,
        a[first.failure].host,
        first
            .moved_to
            .as_ref()
            .map_or("another host", |(host, _)| host.as_str()),
    );
    Some(Finding::new(kind, Severity::Ok, &[first.failure], text))
}
