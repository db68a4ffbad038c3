//! The overall findings: per check, the worst severity across deliveries.

use std::net::IpAddr;

use super::{Check, ClientReport, DeliveryReport, Finding, FindingKind, Severity};

/// Where a finding was: a delivery (its number) or a client's contacts tied to no message.
#[derive(Clone, Copy)]
enum Place {
    Delivery(usize),
    Client(IpAddr),
}

/// Per check, the worst severity across the deliveries and clients where it applied.
pub(super) fn overall(deliveries: &[DeliveryReport], clients: &[ClientReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    for check in Check::ALL {
        let found: Vec<(Place, Severity)> = deliveries
            .iter()
            .enumerate()
            .filter_map(|(d, r)| {
                r.finding(check)
                    .map(|f| (Place::Delivery(d + 1), f.severity))
            })
            .chain(clients.iter().filter_map(|c| {
                c.finding(check)
                    .map(|f| (Place::Client(c.client), f.severity))
            }))
            .collect();
        let Some(worst) = found.iter().map(|(_, s)| *s).max_by_key(|s| s.rank()) else {
            continue;
        };
        let places: Vec<Place> = found
            .iter()
            .filter(|(_, s)| *s == worst)
            .map(|(p, _)| *p)
            .collect();
        let which: Vec<usize> = places
            .iter()
            .filter_map(|p| match p {
                Place::Delivery(d) => Some(*d),
                Place::Client(_) => None,
            })
            .collect();
        let which_clients: Vec<IpAddr> = places
            .iter()
            .filter_map(|p| match p {
                Place::Client(ip) => Some(*ip),
                Place::Delivery(_) => None,
            })
            .collect();
        let mut parts: Vec<String> = Vec::new();
        if !which.is_empty() {
            let list = which
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "{} {list}",
                if which.len() == 1 {
                    "delivery"
                } else {
                    "deliveries"
                }
            ));
        }
        for ip in &which_clients {
            parts.push(format!("the contacts from {ip} for no message"));
        }
        let list = parts.join(" and ");
        let text = match worst {
            Severity::Ok if found.len() == 1 => {
                format!("ok in the 1 {} where it applies", kinds(&found))
            }
            Severity::Ok => format!(
                "ok in all {} {} where it applies",
                found.len(),
                kinds(&found)
            ),
            Severity::Info | Severity::Problem => format!(
                "{} in {list} ({} of {} where it applies)",
                if worst == Severity::Problem {
                    "problem"
                } else {
                    "to note"
                },
                places.len(),
                found.len(),
            ),
        };
        out.push(Finding {
            kind: FindingKind::Summary {
                of: check,
                deliveries: which.len(),
                clients: which_clients.len(),
                applied: found.len(),
            },
            severity: worst,
            attempts: Vec::new(),
            deliveries: which,
            clients: which_clients,
            text,
        });
    }
    out
}

/// What the places are: deliveries, clients' own contacts, or both.
fn kinds(found: &[(Place, Severity)]) -> &'static str {
    let deliveries = found
        .iter()
        .filter(|(p, _)| matches!(p, Place::Delivery(_)))
        .count();
    match (deliveries, found.len() - deliveries) {
        (1, 0) => "delivery",
        (_, 0) => "deliveries",
        (0, 1) => "client's own contacts",
        (0, _) => "clients' own contacts",
        _ => "deliveries and clients' own contacts",
    }
}
