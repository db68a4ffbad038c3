//! The overall findings: per check, the worst severity across deliveries.

use super::{Check, DeliveryReport, Finding, FindingKind, Severity};

/// Per check, the worst severity across the deliveries where it applied.
pub(super) fn overall(deliveries: &[DeliveryReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    for check in Check::ALL {
        let found: Vec<(usize, Severity)> = deliveries
            .iter()
            .enumerate()
            .filter_map(|(d, r)| r.finding(check).map(|f| (d + 1, f.severity)))
            .collect();
        let Some(worst) = found.iter().map(|(_, s)| *s).max_by_key(|s| s.rank()) else {
            continue;
        };
        let which: Vec<usize> = found
            .iter()
            .filter(|(_, s)| *s == worst)
            .map(|(d, _)| *d)
            .collect();
        let list = which
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let text = match worst {
            Severity::Ok if found.len() == 1 => "ok in the 1 delivery where it applies".to_string(),
            Severity::Ok => format!("ok in all {} deliveries where it applies", found.len()),
            Severity::Info | Severity::Problem => format!(
                "{} in {} {list} ({} of {} where it applies)",
                if worst == Severity::Problem {
                    "problem"
                } else {
                    "to note"
                },
                if which.len() == 1 {
                    "delivery"
                } else {
                    "deliveries"
                },
                which.len(),
                found.len(),
            ),
        };
        out.push(Finding {
            kind: FindingKind::Summary {
                of: check,
                deliveries: which.len(),
                applied: found.len(),
            },
            severity: worst,
            attempts: Vec::new(),
            deliveries: which,
            text,
        });
    }
    out
}
