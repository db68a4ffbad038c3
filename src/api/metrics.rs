//! The farm's metrics in Prometheus' text format, one registry per farm (so two farms in
//! one test process never share a count). Counters follow the journal with a cursor of
//! their own, so they count what the journal says and nothing else; gauges are read from
//! the farm when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::deliveries::Outcome;
use crate::farm::{Farm, ReplyCounts};
use crate::journal::{Cursor, EventKind, Read};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabel {
    host: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

pub(super) struct Metrics {
    registry: Registry,
    connections: Family<HostLabel, Counter>,
    replies: Family<ReplyLabel, Counter>,
    messages: Family<HostLabel, Counter>,
    journal_events: Counter,
    journal_dropped: Counter,
    open_connections: Family<HostLabel, Gauge>,
    deliveries: Family<OutcomeLabel, Gauge>,
    greylist_entries: Gauge,
    pub(super) subscribers: Gauge,
}

/// Every outcome a delivery can be in, with its label, so each has a series from the
/// start.
const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Delivered, "delivered"),
    (Outcome::Deferred, "deferred"),
    (Outcome::Rejected, "rejected"),
    (Outcome::Abandoned, "abandoned"),
    (Outcome::Unreached, "unreached"),
    (Outcome::Open, "open"),
];

impl Metrics {
    pub(super) fn new(farm: &Farm) -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("mxfarm"),
            connections: Family::default(),
            replies: Family::default(),
            messages: Family::default(),
            journal_events: Counter::default(),
            journal_dropped: Counter::default(),
            open_connections: Family::default(),
            deliveries: Family::default(),
            greylist_entries: Gauge::default(),
            subscribers: Gauge::default(),
        };
        metrics.registry.register(
            "connections",
            "Connections each host took",
            metrics.connections.clone(),
        );
        metrics.registry.register(
            "replies",
            "Replies each host sent, by class (2xx, 3xx, 4xx, 5xx)",
            metrics.replies.clone(),
        );
        metrics.registry.register(
            "messages_accepted",
            "Messages each host accepted",
            metrics.messages.clone(),
        );
        metrics.registry.register(
            "journal_events",
            "Events the journal recorded",
            metrics.journal_events.clone(),
        );
        metrics.registry.register(
            "journal_dropped_events",
            "Events the journal dropped (it was full) before the metrics read them",
            metrics.journal_dropped.clone(),
        );
        metrics.registry.register(
            "open_connections",
            "Connections each host serves now",
            metrics.open_connections.clone(),
        );
        metrics.registry.register(
            "deliveries",
            "Deliveries (one message to one recipient) by how their latest attempt ended, or delivered",
            metrics.deliveries.clone(),
        );
        metrics.registry.register(
            "greylist_entries",
            "Greylist triplets the farm keeps",
            metrics.greylist_entries.clone(),
        );
        metrics.registry.register(
            "api_event_streams",
            "Open /api/v1/events streams",
            metrics.subscribers.clone(),
        );
        // Every host has its series from the start, at zero.
        for host in farm.hosts().iter() {
            let label = HostLabel {
                host: host.name.clone(),
            };
            let _ = metrics.connections.get_or_create(&label);
            let _ = metrics.messages.get_or_create(&label);
        }
        metrics
    }

    /// The text a scrape gets, with the gauges read now.
    pub(super) fn render(&self, farm: &Farm) -> Result<String, std::fmt::Error> {
        for status in farm.host_status() {
            let label = HostLabel { host: status.name };
            let open = i64::try_from(status.open_connections).unwrap_or(i64::MAX);
            self.open_connections.get_or_create(&label).set(open);
        }
        let mut counts = [0i64; OUTCOMES.len()];
        for delivery in farm.deliveries().list.iter() {
            let outcome = if delivery.delivered() {
                Outcome::Delivered
            } else {
                delivery
                    .attempts
                    .last()
                    .map_or(Outcome::Open, |a| a.outcome)
            };
            if let Some(i) = OUTCOMES.iter().position(|(o, _)| *o == outcome) {
                counts[i] += 1;
            }
        }
        for ((_, name), count) in OUTCOMES.iter().zip(counts) {
            let label = OutcomeLabel {
                outcome: (*name).to_string(),
            };
            self.deliveries.get_or_create(&label).set(count);
        }
        let entries = i64::try_from(farm.greylist().len()).unwrap_or(i64::MAX);
        self.greylist_entries.set(entries);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn count(&self, kind: &EventKind) {
        match kind {
            EventKind::ConnectionOpened { host, .. } => {
                let label = HostLabel {
                    host: host.to_string(),
                };
                self.connections.get_or_create(&label).inc();
            }
            EventKind::Reply { host, reply, .. } => {
                let label = ReplyLabel {
                    host: host.to_string(),
                    class: ReplyCounts::class(reply.code).to_string(),
                };
                self.replies.get_or_create(&label).inc();
            }
            EventKind::MessageAccepted { host, .. } => {
                let label = HostLabel {
                    host: host.to_string(),
                };
                self.messages.get_or_create(&label).inc();
            }
            _ => {}
        }
    }
}

/// Counts every event of the journal as it is recorded, until the API stops or the
/// journal ends.
pub(super) async fn follow(
    metrics: std::sync::Arc<Metrics>,
    mut cursor: Cursor,
    stopping: CancellationToken,
) {
    loop {
        let read = tokio::select! {
            read = cursor.next() => read,
            () = stopping.cancelled() => return,
        };
        match read {
            Some(Read::Event(event)) => {
                metrics.journal_events.inc();
                metrics.count(&event.kind);
            }
            Some(Read::Missed(n)) => {
                metrics.journal_dropped.inc_by(n);
            }
            None => return,
        }
    }
}
