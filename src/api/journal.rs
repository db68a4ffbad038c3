//! The journal over HTTP: pages by sequence number (`GET /journal?after=SEQ&limit=N`),
//! and the live stream (`GET /events`, Server-Sent Events) that a subscriber resumes
//! with `Last-Event-ID`. Both read through a journal cursor, which never skips an event
//! silently: what the journal dropped before a reader got to it is counted, and said.

use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::{Deserialize, Serialize};

use super::Api;
use super::problem::Problem;
use crate::journal::{Event, Read};

/// Events in one page unless the request says otherwise, and at most.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(super) struct Page {
    /// The events after `after`, oldest first, at most `limit`.
    events: Vec<Event>,
    /// Events after `after` that the journal dropped (it was full) before this read.
    missed: u64,
    /// The `after` of the next page.
    next_after: u64,
    /// Whether the page is full: there may be more.
    more: bool,
    /// The newest event's sequence number in the journal now: a reader that wants only
    /// what comes next starts there.
    last_seq: u64,
}

pub(super) fn bad_query(rejection: QueryRejection) -> Problem {
    Problem::bad_request(
        rejection.body_text(),
        "see /api/v1/openapi.json for the parameters this path takes",
    )
}

pub(super) async fn page(
    State(api): State<Api>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page>, Problem> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::bad_request(
            format!("limit={limit} is out of range"),
            format!("ask for 1 to {MAX_LIMIT} events a page; page on with after=next_after"),
        ));
    }
    let after = query.after.unwrap_or(0);
    // Off the runtime: a page of thousands of events takes a while to read back, and the
    // sessions (on one runtime thread unless --threads says more) must not wait for it.
    api.off_the_runtime(move |farm| {
        let mut cursor = farm.events_after(after);
        let mut page = Page {
            events: Vec::new(),
            missed: 0,
            next_after: cursor.position(),
            more: false,
            last_seq: farm.last_seq(),
        };
        while page.events.len() < limit {
            match cursor.try_next() {
                Some(Read::Event(event)) => page.events.push(event),
                Some(Read::Missed(n)) => page.missed += n,
                None => break,
            }
        }
        page.more = page.events.len() == limit;
        page.next_after = cursor.position();
        Json(page)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    after: Option<u64>,
}

/// The stream: each journal event as an SSE `message` whose `id` is its sequence number
/// and whose data is its JSON line (as in the journal file); a `dropped` event with
/// `{"dropped": N, "after": SEQ}` where the journal dropped N events before the stream
/// reached them. It starts after `Last-Event-ID` (what a browser's `EventSource` sends
/// when it reconnects), else after `?after=SEQ`, else at the first event, and ends when
/// the farm has shut down and every event was sent.
pub(super) async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(bad_query)?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "Last-Event-ID is not a sequence number",
                        "send the id of the last event received (a number), or none to start at the first",
                    )
                })?,
        ),
        None => None,
    };
    // An id past the journal's newest event is from an earlier farm (it restarted):
    // this farm's story starts over, at its first event.
    let resume = resume.filter(|&id| id <= api.farm.last_seq());
    let after = resume.or(query.after).unwrap_or(0);
    let Ok(permit) = api.subscribers.clone().try_acquire_owned() else {
        return Err(Problem::unavailable(
            format!("{} event streams are open already", api.max_subscribers),
            "close one, or read pages of /api/v1/journal?after=SEQ instead",
            5,
        ));
    };
    api.metrics.subscribers.inc();
    let cursor = api.farm.events_after(after);
    let held = Subscribed {
        _permit: permit,
        api: api.clone(),
    };
    let state = (cursor, held);
    let stream = stream::unfold(state, |(mut cursor, held)| async move {
        // Events first: a stream that stops sends what the journal already holds.
        let read = tokio::select! {
            biased;
            read = cursor.next() => read?,
            () = held.api.stopping.cancelled() => return None,
        };
        let event = match read {
            Read::Event(event) => SseEvent::default()
                .id(event.seq.to_string())
                .json_data(&event)
                .unwrap_or_default(),
            Read::Missed(n) => SseEvent::default()
                .event("dropped")
                .json_data(serde_json::json!({ "dropped": n, "after": cursor.position() }))
                .unwrap_or_default(),
        };
        Some((Ok::<_, Infallible>(event), (cursor, held)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A stream's permit and its count in the metrics, given back when the stream ends.
struct Subscribed {
    _permit: tokio::sync::OwnedSemaphorePermit,
    api: Api,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.api.metrics.subscribers.dec();
    }
}
