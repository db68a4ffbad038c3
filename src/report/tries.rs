//! Attempts grouped into tries by the sender's own rhythm, and the intervals between
//! tries (the module docs of [`super`] say what a try is). Most checks look at tries
//! rather than attempts.

use std::time::Duration;

use super::client::tls_failed;
use super::{DEFAULT_WINDOW, IntervalStats, MIN_WINDOW, RHYTHM_JUMP};
use crate::deliveries::Outcome;
use crate::transcript::TranscriptAttempt;

/// Groups attempts into tries (0-based attempt indices): an attempt joins the try before
/// it when it follows within `window`, and either is on the same connection or goes to
/// a host the try has not used (but for a retry in clear after a failed TLS handshake)
/// after an attempt that did not end the delivery.
pub(super) fn tries(a: &[TranscriptAttempt], window: Duration) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        let joins = match out.last() {
            None => false,
            Some(current) => {
                let prev = &a[i - 1];
                gap(prev, x) <= window && (prev.conn == x.conn || !forced(a, current, i))
            }
        };
        match out.last_mut() {
            Some(current) if joins => current.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Whether attempt `i` must start a new try after the try `current`: it goes back to a
/// host the try already used, or the attempt before it delivered or bounced.
fn forced(a: &[TranscriptAttempt], current: &[usize], i: usize) -> bool {
    let prev = &a[i - 1];
    matches!(prev.outcome, Outcome::Delivered | Outcome::Rejected)
        || current
            .iter()
            .any(|&j| a[j].host == a[i].host && !(j == i - 1 && tls_failed(prev)))
}

/// From the end of one attempt to the start of the next.
fn gap(prev: &TranscriptAttempt, next: &TranscriptAttempt) -> Duration {
    next.attempt.started.saturating_sub(prev.attempt.at)
}

/// How long a sender may take to move on to its next MX host within one try, learnt from
/// all of one client's stories: a quarter of its quickest certain retry (a new connection
/// to a host the try already used, or an attempt after one that delivered or bounced),
/// at least [`MIN_WINDOW`]; without such retries, the
/// lower side of the first jump of [`RHYTHM_JUMP`] times between gaps sorted by length;
/// without one, [`DEFAULT_WINDOW`].
pub(super) fn window(stories: &[&[TranscriptAttempt]]) -> Duration {
    let mut certain: Vec<Duration> = Vec::new();
    let mut gaps: Vec<Duration> = Vec::new();
    for a in stories {
        let unbounded = tries(a, Duration::MAX);
        for current in &unbounded {
            for w in current.windows(2) {
                if a[w[0]].conn != a[w[1]].conn {
                    gaps.push(gap(&a[w[0]], &a[w[1]]));
                }
            }
        }
        for w in unbounded.windows(2) {
            let (last, next) = (w[0][w[0].len() - 1], w[1][0]);
            if a[last].conn != a[next].conn {
                certain.push(gap(&a[last], &a[next]));
            }
        }
    }
    if let Some(quickest) = certain.iter().min() {
        return (*quickest / 4).max(MIN_WINDOW);
    }
    gaps.retain(|g| !g.is_zero());
    gaps.sort_unstable();
    let floor = Duration::from_millis(100);
    gaps.windows(2)
        .find(|w| w[1] >= w[0].max(floor) * RHYTHM_JUMP)
        .map_or(DEFAULT_WINDOW, |w| w[0].max(MIN_WINDOW))
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

/// The first try of the busiest one-hour window, and how many tries it holds. `starts`
/// need not be sorted.
pub(super) fn busiest_hour(starts: &[Duration]) -> (usize, usize) {
    let hour = Duration::from_secs(3600);
    (0..starts.len())
        .map(|r| {
            let n = starts
                .iter()
                .filter(|&&s| s >= starts[r] && s < starts[r] + hour)
                .count();
            (r, n)
        })
        .fold((0, 0), |best, x| if x.1 > best.1 { x } else { best })
}

/// Whether two attempts met the same obstacle: the same host, or the same reply code and
/// enhanced status.
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
