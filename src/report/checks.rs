//! The checks that need nothing but one delivery's attempts, its tries and its domain's
//! MX hosts: one function each, giving at most one finding. The module docs of [`super`]
//! say what each checks and with which severity.

use std::collections::BTreeSet;
use std::time::Duration;

use super::render::{duration, host_label, plural, what};
use super::tries::{busiest_hour, firsts, related};
use super::{
    Finding, FindingKind, HAMMERING_PER_HOUR, RFC_RETRY_INTERVAL, SHORT_DEFERRAL, Severity,
};
use crate::deliveries::Outcome;
use crate::transcript::TranscriptAttempt;

pub(super) fn early_retry(a: &[TranscriptAttempt], tries: &[Vec<usize>]) -> Option<Finding> {
    let mut try_of = vec![0; a.len()];
    for (t, members) in tries.iter().enumerate() {
        for &i in members {
            try_of[i] = t;
        }
    }
    let mut checked = 0;
    // (earlier, retry, waited, asked)
    let mut early: Vec<(usize, usize, Duration, Duration)> = Vec::new();
    let mut closest: Option<(usize, usize, Duration, Duration)> = None;
    for j in 0..a.len() {
        let Some(i) = (0..j)
            .rev()
            .filter(|&i| try_of[i] < try_of[j])
            .find(|&i| related(&a[i], &a[j]))
        else {
            continue;
        };
        let Some(asked) = a[i]
            .attempt
            .retry_after
            .filter(|_| a[i].outcome == Outcome::Deferred)
        else {
            continue;
        };
        checked += 1;
        let waited = a[j].attempt.at.saturating_sub(a[i].attempt.at);
        if waited < asked && a[j].outcome == Outcome::Deferred {
            early.push((i, j, waited, asked));
        } else if closest
            .is_none_or(|(_, _, w, k)| waited.saturating_sub(asked) < w.saturating_sub(k))
        {
            closest = Some((i, j, waited, asked));
        }
    }
    if checked == 0 {
        return None;
    }
    if let Some(&(i, j, waited, asked)) = early.first() {
        let short = early.iter().any(|e| e.3 <= SHORT_DEFERRAL);
        let attempts: Vec<usize> = early.iter().flat_map(|e| [e.0, e.1]).collect();
        let text = format!(
            "{} came before the known end of a deferral and {} deferred again (wasted); the first: #{} {} after #{}, which asked for {}{}",
            plural(early.len(), "retry", "retries"),
            if early.len() == 1 { "was" } else { "were" },
            j + 1,
            duration(waited),
            i + 1,
            duration(asked),
            if short {
                ""
            } else {
                "; a wait that long is not one a sender can know"
            },
        );
        let kind = FindingKind::EarlyRetry {
            early: early.len(),
            checked,
            waited,
            asked,
        };
        let severity = if short {
            Severity::Problem
        } else {
            Severity::Info
        };
        return Some(Finding::new(kind, severity, &attempts, text));
    }
    let (i, j, waited, asked) = closest?;
    let text = format!(
        "every retry waited out the known end of the deferral before it ({} checked); the closest: #{} {} after #{}, which asked for {}",
        checked,
        j + 1,
        duration(waited),
        i + 1,
        duration(asked),
    );
    let kind = FindingKind::EarlyRetry {
        early: 0,
        checked,
        waited,
        asked,
    };
    Some(Finding::new(kind, Severity::Ok, &[i, j], text))
}

pub(super) fn mx_failover(a: &[TranscriptAttempt], mx: &[(String, u16)]) -> Option<Finding> {
    if mx.len() < 2 {
        return None;
    }
    let mut failures = Vec::new();
    let mut same = Vec::new();
    for i in 0..a.len().saturating_sub(1) {
        let failed =
            a[i].outcome == Outcome::Deferred && a[i].reply.as_ref().is_none_or(|r| r.code == 421);
        if !failed {
            continue;
        }
        failures.push(i);
        if a[i + 1].host == a[i].host {
            same.push(i);
        }
    }
    let &first = failures.first()?;
    let kind = FindingKind::MxFailover {
        failures: failures.len(),
        same_host: same.len(),
    };
    if let Some(&i) = same.first() {
        let others: Vec<String> = mx
            .iter()
            .filter(|(h, _)| *h != a[i].host)
            .map(|(h, p)| host_label(h, Some(*p)))
            .collect();
        let text = format!(
            "after the {} at #{} on {}, the next attempt #{} went to {} again although the domain has other MX hosts ({}); {} of {}",
            what(&a[i]),
            i + 1,
            a[i].host,
            i + 2,
            a[i].host,
            others.join(", "),
            same.len(),
            plural(failures.len(), "time", "times"),
        );
        let attempts: Vec<usize> = same.iter().flat_map(|&i| [i, i + 1]).collect();
        return Some(Finding::new(kind, Severity::Problem, &attempts, text));
    }
    let text = format!(
        "moved to another MX after each 421 or lost connection ({}); e.g. after the {} at #{} on {}, #{} went to {}",
        plural(failures.len(), "time", "times"),
        what(&a[first]),
        first + 1,
        a[first].host,
        first + 2,
        a[first + 1].host,
    );
    Some(Finding::new(kind, Severity::Ok, &[first, first + 1], text))
}

pub(super) fn mx_preference(
    a: &[TranscriptAttempt],
    tries: &[Vec<usize>],
    mx: &[(String, u16)],
) -> Option<Finding> {
    let levels: BTreeSet<u16> = mx.iter().map(|(_, p)| *p).collect();
    if levels.len() < 2 {
        return None;
    }
    let preference = |host: &str| mx.iter().find(|(h, _)| h == host).map(|(_, p)| *p);
    let mut out_of_order: Vec<(usize, Vec<String>)> = Vec::new();
    for members in tries {
        let mut tried: Vec<&str> = Vec::new();
        for &j in members {
            if let Some(p) = preference(&a[j].host) {
                let skipped: Vec<String> = mx
                    .iter()
                    .filter(|(h, q)| *q < p && !tried.contains(&h.as_str()))
                    .map(|(h, q)| host_label(h, Some(*q)))
                    .collect();
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
            "#{} went to {} while {} had not been tried in that try{} (a connection refused at TCP or at the greeting is not part of a delivery)",
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
    let lowest = *levels.first()?;
    let text =
        format!("every try went to the MX hosts in preference order, from preference {lowest} up");
    // A try that went to more than one host shows the order best.
    let shown = tries.iter().find(|t| t.len() > 1).unwrap_or(&tries[0]);
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

pub(super) fn retry_after_5xx(a: &[TranscriptAttempt]) -> Option<Finding> {
    let i = a.iter().position(|x| x.outcome == Outcome::Rejected)?;
    let code = a[i].reply.as_ref().map_or(0, |r| r.code);
    let retries = a.len() - i - 1;
    let kind = FindingKind::RetryAfter5xx { code, retries };
    if retries == 0 {
        let text = format!("no retry after the permanent {} at #{}", what(&a[i]), i + 1);
        return Some(Finding::new(kind, Severity::Ok, &[i], text));
    }
    let text = format!(
        "tried {} more after the permanent {} at #{}; a 5xx must not be retried",
        plural(retries, "time", "times"),
        what(&a[i]),
        i + 1,
    );
    let attempts: Vec<usize> = (i..a.len()).collect();
    Some(Finding::new(kind, Severity::Problem, &attempts, text))
}

pub(super) fn backoff(tries: &[Vec<usize>], intervals: &[Duration]) -> Option<Finding> {
    if intervals.len() < 2 {
        return None;
    }
    let (first, last) = (intervals[0], intervals[intervals.len() - 1]);
    let growing = last > first;
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

pub(super) fn hammering(tries: &[Vec<usize>], starts: &[Duration]) -> Option<Finding> {
    if tries.len() < 2 {
        return None;
    }
    let (from, max_per_hour) = busiest_hour(starts);
    let kind = FindingKind::Hammering { max_per_hour };
    if max_per_hour > HAMMERING_PER_HOUR {
        let attempts: Vec<usize> = tries[from..from + max_per_hour]
            .iter()
            .flatten()
            .copied()
            .collect();
        let text = format!(
            "{max_per_hour} tries within one hour from #{}; more than {HAMMERING_PER_HOUR} an hour (under 5 minutes apart) hammers the MX",
            tries[from][0] + 1,
        );
        return Some(Finding::new(kind, Severity::Problem, &attempts, text));
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
