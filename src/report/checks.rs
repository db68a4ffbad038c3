//! The checks that need nothing but one delivery's attempts, its tries, its domain's MX
//! hosts and what its client knew of them: one function each, giving at most one
//! finding. The module docs of [`super`] say what each checks and with which severity.

use std::collections::BTreeSet;
use std::time::Duration;

use super::client::Client;
use super::render::{duration, host_label, plural, what};
use super::tries::{busiest_hour, firsts, related};
use super::{Finding, FindingKind, GROWTH, HAMMERING_PER_HOUR, RFC_RETRY_INTERVAL, Severity};
use crate::deliveries::Outcome;
use crate::render::{Granularity, span};
use crate::scenario::Stage;
use crate::transcript::TranscriptAttempt;

pub(super) fn early_retry(a: &[TranscriptAttempt], tries: &[Vec<usize>]) -> Option<Finding> {
    let mut try_of = vec![0; a.len()];
    for (t, members) in tries.iter().enumerate() {
        for &i in members {
            try_of[i] = t;
        }
    }
    let mut checked = 0;
    // (earlier, retry, waited, asked, told)
    let mut early: Vec<(usize, usize, Duration, Duration, bool)> = Vec::new();
    let mut closest: Option<(usize, usize, Duration, Duration, bool)> = None;
    for j in 0..a.len() {
        let Some(i) = (0..j)
            .rev()
            .filter(|&i| try_of[i] < try_of[j])
            .find(|&i| related(&a[i], &a[j]))
        else {
            continue;
        };
        let x = &a[i].attempt;
        let (Some(asked), Some(clears_at)) = (x.retry_after, x.clears_at) else {
            continue;
        };
        if a[i].outcome != Outcome::Deferred {
            continue;
        }
        checked += 1;
        let retry = &a[j].attempt;
        let waited = retry.started.saturating_sub(x.at);
        let found = (i, j, waited, asked, x.retry_after_told);
        if retry.started < clears_at && a[j].outcome == Outcome::Deferred {
            early.push(found);
        } else if closest
            .is_none_or(|(_, _, w, k, _)| waited.saturating_sub(asked) < w.saturating_sub(k))
        {
            closest = Some(found);
        }
    }
    if checked == 0 {
        return None;
    }
    if let Some(&(i, j, waited, asked, _)) = early.first() {
        let told = early.iter().any(|e| e.4);
        let attempts: Vec<usize> = early.iter().flat_map(|e| [e.0, e.1]).collect();
        let text = format!(
            "{} came before the known end of a deferral and {} deferred again (wasted); the first: #{} {} after #{}, which {}{}",
            plural(early.len(), "retry", "retries"),
            if early.len() == 1 { "was" } else { "were" },
            j + 1,
            fine(waited),
            i + 1,
            asked_for(asked, early[0].4),
            if told {
                ""
            } else {
                "; its reply did not say when, so the sender could not know"
            },
        );
        let kind = FindingKind::EarlyRetry {
            early: early.len(),
            checked,
            waited,
            asked,
            told,
        };
        let severity = if told {
            Severity::Problem
        } else {
            Severity::Info
        };
        return Some(Finding::new(kind, severity, &attempts, text));
    }
    let (i, j, waited, asked, told) = closest?;
    let text = format!(
        "every retry waited out the known end of the deferral before it ({} checked); the closest: #{} {} after #{}, which {}",
        checked,
        j + 1,
        fine(waited),
        i + 1,
        asked_for(asked, told),
    );
    let kind = FindingKind::EarlyRetry {
        early: 0,
        checked,
        waited,
        asked,
        told,
    };
    Some(Finding::new(kind, Severity::Ok, &[i, j], text))
}

/// What a deferral asked for: said in its text, or only known to the farm.
fn asked_for(asked: Duration, told: bool) -> String {
    if told {
        format!("asked for {}", fine(asked))
    } else {
        format!("would have cleared after {}", fine(asked))
    }
}

/// Under a minute to the millisecond, so that 9.470s and 9.980s do not both read 9s.
fn fine(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        span(d, Granularity::Exact)
    } else {
        duration(d)
    }
}

pub(super) fn mx_preference(
    a: &[TranscriptAttempt],
    tries: &[Vec<usize>],
    mx: &[(String, u16)],
    client: Option<&Client>,
) -> Option<Finding> {
    let levels: BTreeSet<u16> = mx.iter().map(|(_, p)| *p).collect();
    if levels.len() < 2 {
        return None;
    }
    let preference = |host: &str| mx.iter().find(|(h, _)| h == host).map(|(_, p)| *p);
    let mut out_of_order: Vec<(usize, Vec<String>)> = Vec::new();
    let mut passed_over = false;
    for members in tries {
        let mut tried: Vec<&str> = Vec::new();
        for &j in members {
            if let Some(p) = preference(&a[j].host) {
                let untried: Vec<&(String, u16)> = mx
                    .iter()
                    .filter(|(h, q)| *q < p && !tried.contains(&h.as_str()))
                    .collect();
                // A host the client just found refusing is rightly avoided.
                let skipped: Vec<String> = untried
                    .iter()
                    .filter(|(h, _)| {
                        !client.is_some_and(|c| c.last_failed(h, a[j].attempt.started))
                    })
                    .map(|(h, q)| host_label(h, Some(*q)))
                    .collect();
                passed_over |= untried.len() > skipped.len();
                if !skipped.is_empty() {
                    out_of_order.push((j, skipped));
                }
            }
            tried.push(&a[j].host);
        }
    }
    let kind = FindingKind::MxPreference {
        out_of_order: out_of_order.len(),
    };
    if let Some((j, skipped)) = out_of_order.first() {
        let text = format!(
            "#{} went to {} while {} had not been tried in that try and had not refused this client before{}",
            j + 1,
            host_label(&a[*j].host, preference(&a[*j].host)),
            skipped.join(", "),
            if out_of_order.len() > 1 {
                format!("; {} attempts like this", out_of_order.len())
            } else {
                String::new()
            },
        );
        let attempts: Vec<usize> = out_of_order.iter().map(|(j, _)| *j).collect();
        return Some(Finding::new(kind, Severity::Info, &attempts, text));
    }
    // A try that went to more than one host shows the order best.
    let shown = tries.iter().find(|t| t.len() > 1).or(tries.first())?;
    let text = if passed_over {
        "every try went to the MX hosts in preference order, passing over only hosts that had just refused this client".to_string()
    } else {
        "every try went to the MX hosts in preference order".to_string()
    };
    Some(Finding::new(kind, Severity::Ok, shown, text))
}

pub(super) fn mx_spread(a: &[TranscriptAttempt], mx: &[(String, u16)]) -> Option<Finding> {
    let lowest = mx.iter().map(|(_, p)| *p).min()?;
    let equal: Vec<&str> = mx
        .iter()
        .filter(|(_, p)| *p == lowest)
        .map(|(h, _)| h.as_str())
        .collect();
    if equal.len() < 2 || a.len() < 2 {
        return None;
    }
    let mut used: Vec<&str> = Vec::new();
    for x in a {
        if equal.contains(&x.host.as_str()) && !used.contains(&x.host.as_str()) {
            used.push(&x.host);
        }
    }
    let kind = FindingKind::MxSpread {
        used: used.len(),
        equal: equal.len(),
    };
    match used.as_slice() {
        [] => None,
        [only] => {
            let on: Vec<usize> = (0..a.len()).filter(|&i| a[i].host == *only).collect();
            let others: Vec<&str> = equal.iter().copied().filter(|h| h != only).collect();
            let text = format!(
                "all {} at preference {lowest} went to {only}, never to {} of the same preference; RFC 5321 §5.1 asks senders to spread the load among them",
                plural(on.len(), "attempt", "attempts"),
                others.join(", "),
            );
            Some(Finding::new(kind, Severity::Info, &on, text))
        }
        _ => {
            let text = format!(
                "used {} of the {} hosts at preference {lowest} ({})",
                used.len(),
                equal.len(),
                used.join(", ")
            );
            let firsts: Vec<usize> = used
                .iter()
                .filter_map(|h| a.iter().position(|x| x.host == *h))
                .collect();
            Some(Finding::new(kind, Severity::Ok, &firsts, text))
        }
    }
}

pub(super) fn retry_after_5xx(a: &[TranscriptAttempt], envelope_only: bool) -> Option<Finding> {
    // A 5xx greeting or EHLO rules out that host, not the message.
    let i = a.iter().position(|x| {
        x.outcome == Outcome::Rejected
            && matches!(
                x.stage,
                Stage::Mail | Stage::Rcpt | Stage::Data | Stage::EndOfData
            )
    })?;
    let code = a[i].reply.as_ref().map_or(0, |r| r.code);
    let retries = a.len() - i - 1;
    let kind = FindingKind::RetryAfter5xx { code, retries };
    if retries == 0 {
        let text = format!("no retry after the permanent {} at #{}", what(&a[i]), i + 1);
        return Some(Finding::new(kind, Severity::Ok, &[i], text));
    }
    let attempts: Vec<usize> = (i..a.len()).collect();
    if envelope_only {
        let text = format!(
            "{} with the same envelope and size followed the permanent {} at #{}; the content was never sent, so they may be new messages rather than retries",
            plural(retries, "attempt", "attempts"),
            what(&a[i]),
            i + 1,
        );
        return Some(Finding::new(kind, Severity::Info, &attempts, text));
    }
    let text = format!(
        "tried {} more after the permanent {} at #{}; a 5xx must not be retried",
        plural(retries, "time", "times"),
        what(&a[i]),
        i + 1,
    );
    Some(Finding::new(kind, Severity::Problem, &attempts, text))
}

pub(super) fn backoff(tries: &[Vec<usize>], intervals: &[Duration]) -> Option<Finding> {
    if intervals.len() < 2 {
        return None;
    }
    let (first, last) = (intervals[0], intervals[intervals.len() - 1]);
    let growing = grows(intervals);
    let kind = FindingKind::Backoff {
        first,
        last,
        growing,
    };
    let firsts = firsts(tries);
    if growing {
        let text = format!(
            "the interval between tries grows from {} to {}",
            duration(first),
            duration(last)
        );
        // The tries of the first and the last interval.
        let n = firsts.len();
        let ends = [firsts[0], firsts[1], firsts[n - 2], firsts[n - 1]];
        Some(Finding::new(kind, Severity::Ok, &ends, text))
    } else {
        let text = format!(
            "the interval between tries does not grow: first {}, last {}; a sender should back off",
            duration(first),
            duration(last)
        );
        Some(Finding::new(kind, Severity::Info, &firsts, text))
    }
}

/// Whether the intervals between tries back off: the last is at least [`GROWTH`] times
/// the first (jitter of a few milliseconds, or one longer gap among equal ones, is not a
/// backoff). backoff and hammering both use it, so they never disagree.
fn grows(intervals: &[Duration]) -> bool {
    match (intervals.first(), intervals.last()) {
        (Some(first), Some(last)) => {
            intervals.len() >= 2
                && last > first
                && last.as_secs_f64() >= first.as_secs_f64() * GROWTH
        }
        _ => false,
    }
}

pub(super) fn hammering(
    tries: &[Vec<usize>],
    starts: &[Duration],
    intervals: &[Duration],
) -> Option<Finding> {
    if tries.len() < 2 {
        return None;
    }
    let (from, max_per_hour) = busiest_hour(starts);
    let growing = grows(intervals);
    let kind = FindingKind::Hammering {
        max_per_hour,
        growing,
    };
    if max_per_hour > HAMMERING_PER_HOUR {
        let attempts: Vec<usize> = tries
            .iter()
            .zip(starts)
            .filter(|(_, s)| **s >= starts[from] && **s < starts[from] + Duration::from_secs(3600))
            .flat_map(|(t, _)| t.iter().copied())
            .collect();
        let (severity, why) = if growing {
            (
                Severity::Info,
                "though the intervals grow (a short backoff, as test setups use)",
            )
        } else {
            (
                Severity::Problem,
                "and the intervals never grow: this hammers the MX",
            )
        };
        let text = format!(
            "{max_per_hour} tries within one hour from #{}, more than {HAMMERING_PER_HOUR} (under 5 minutes apart), {why}",
            tries[from][0] + 1,
        );
        return Some(Finding::new(kind, severity, &attempts, text));
    }
    let text = format!(
        "at most {} in any hour",
        plural(max_per_hour, "try", "tries")
    );
    Some(Finding::new(kind, Severity::Ok, &[], text))
}

pub(super) fn retry_interval(tries: &[Vec<usize>], intervals: &[Duration]) -> Option<Finding> {
    let (k, &shortest) = intervals.iter().enumerate().min_by_key(|(_, d)| **d)?;
    let kind = FindingKind::RetryInterval { shortest };
    let pair = [tries[k][0], tries[k + 1][0]];
    if shortest < RFC_RETRY_INTERVAL {
        let text = format!(
            "shortest interval {} (#{} to #{}); RFC 5321 suggests at least 30 minutes, though real MTAs retry sooner",
            duration(shortest),
            pair[0] + 1,
            pair[1] + 1,
        );
        Some(Finding::new(kind, Severity::Info, &pair, text))
    } else {
        let text = format!(
            "shortest interval {}, at least the 30 minutes RFC 5321 suggests",
            duration(shortest)
        );
        Some(Finding::new(kind, Severity::Ok, &pair, text))
    }
}
