//! Attempts grouped into tries, and the intervals between tries (the module docs of
//! [`super`] say what a try is). Most checks look at tries rather than attempts.

use std::time::Duration;

use super::{IntervalStats, TRY_GAP};
use crate::deliveries::Outcome;
use crate::transcript::TranscriptAttempt;

/// Groups attempts into tries (0-based attempt indices); see the module docs.
pub(super) fn tries(a: &[TranscriptAttempt]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        let joins = i > 0
            && out.last().is_some_and(|current| {
                let prev = &a[i - 1];
                prev.outcome == Outcome::Deferred
                    && x.attempt.at.saturating_sub(prev.attempt.at) <= TRY_GAP
                    && current.iter().all(|&j| a[j].host != x.host)
            });
        match out.last_mut() {
            Some(current) if joins => current.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

pub(super) fn interval_stats(starts: &[Duration], intervals: &[Duration]) -> Option<IntervalStats> {
    if intervals.is_empty() {
        return None;
    }
    let mut sorted = intervals.to_vec();
    sorted.sort_unstable();
    Some(IntervalStats {
        tries: starts.len(),
        min: sorted[0],
        median: sorted[(sorted.len() - 1) / 2],
        max: sorted[sorted.len() - 1],
        max_per_hour: busiest_hour(starts).1,
    })
}

/// The first try of the busiest one-hour window, and how many tries it holds.
pub(super) fn busiest_hour(starts: &[Duration]) -> (usize, usize) {
    let hour = Duration::from_secs(3600);
    (0..starts.len())
        .map(|r| {
            let n = starts[r..]
                .iter()
                .take_while(|&&s| s < starts[r] + hour)
                .count();
            (r, n)
        })
        .fold((0, 0), |best, x| if x.1 > best.1 { x } else { best })
}

pub(super) fn related(x: &TranscriptAttempt, y: &TranscriptAttempt) -> bool {
    x.host == y.host
        || match (&x.reply, &y.reply) {
            (Some(rx), Some(ry)) => rx.code == ry.code && rx.status == ry.status,
            _ => false,
        }
}

pub(super) fn firsts(tries: &[Vec<usize>]) -> Vec<usize> {
    tries.iter().map(|t| t[0]).collect()
}
