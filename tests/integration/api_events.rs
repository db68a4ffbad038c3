//! The API's event stream (Server-Sent Events) and its guards, over real HTTP: a
//! subscriber that disconnects and resumes loses nothing while a load runs, one behind a
//! full journal is told exactly how many events it missed, streams are limited, and
//! changes need the token.

use mxfarm::api::{ApiError, ApiOptions};
use serde_json::Value;

use crate::api::{GREYLIST, Http, send};
use crate::support::farm;

/// One SSE frame: its id, its event type (`message` unless named) and its data.
#[derive(Debug)]
struct Frame {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A subscriber of `/api/v1/events`, reading frames as they come.
struct Subscriber {
    response: reqwest::Response,
    buffer: String,
}

impl Subscriber {
    async fn open(http: &Http, last_event_id: Option<u64>) -> Subscriber {
        let mut request = http.client.get(http.url("/api/v1/events"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        // A stream lasts as long as the test needs; the client's overall timeout would
        // cut it, so this request has none.
        let response = request
            .timeout(std::time::Duration::from_secs(3600))
            .send()
            .await
            .expect("the stream opens");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Subscriber {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame with data (keep-alive comments skipped), or `None` at the end of
    /// the stream. Bounded by the test's guard.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        frame.id = id.parse().ok();
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        frame.event = event.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                frame.data = serde_json::from_str(&data).expect("JSON data");
                return Some(frame);
            }
            let chunk = tokio::time::timeout(mxfarm::testing::GUARD, self.response.chunk())
                .await
                .expect("the stream stalled")
                .expect("the stream broke")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

#[tokio::test]
async fn a_subscriber_that_disconnects_resumes_with_last_event_id_and_loses_nothing_under_load() {
    let farm = farm(
        r#"
name = "plain"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
"#,
    )
    .await;
    let http = Http::start(&farm).await;
    let mx1 = farm.addr("mx1");
    // A bounded load: 8 senders, 5 messages each, while the subscriber comes and goes.
    let load: Vec<_> = (0..8)
        .map(|n| {
            tokio::spawn(async move {
                for m in 0..5 {
                    assert_eq!(send(mx1, &format!("r{n}-{m}@plain.test")).await, 250);
                }
            })
        })
        .collect();

    let mut seen = Vec::new();
    let mut first = Subscriber::open(&http, None).await;
    while seen.len() < 40 {
        let frame = first.next().await.expect("events");
        assert_eq!(frame.event, "message", "{frame:?}");
        assert_eq!(frame.id, frame.data["seq"].as_u64());
        seen.push(frame.id.expect("an id"));
    }
    drop(first);

    // Resumed from the last id it got, as a browser's EventSource does.
    let mut resumed = Subscriber::open(&http, seen.last().copied()).await;
    for task in load {
        task.await.expect("the load ran");
    }
    let farm_events = farm.journal().len() as u64;
    let api = http.api;
    farm.shutdown().await;
    // The farm is gone: the stream sends what the journal holds, then ends.
    while let Some(frame) = resumed.next().await {
        assert_eq!(frame.event, "message", "nothing was dropped: {frame:?}");
        seen.push(frame.id.expect("an id"));
    }
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "every event once, in order");
    assert!(seen.len() as u64 >= farm_events && farm_events > 40 * 5);
    api.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_behind_a_full_journal_is_told_exactly_how_many_events_were_dropped() {
    let farm = farm(
        r#"
name = "small"
[journal]
max-events = 16
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
"#,
    )
    .await;
    let http = Http::start(&farm).await;
    for n in 0..4 {
        send(farm.addr("mx1"), &format!("r{n}@small.test")).await;
    }
    let held = farm.journal();
    let first_held = held[1].seq;
    let last = held.last().expect("events").seq;

    let mut subscriber = Subscriber::open(&http, None).await;
    let header = subscriber.next().await.expect("farm-started");
    assert_eq!(header.data["event"], "farm-started");
    let dropped = subscriber.next().await.expect("dropped");
    assert_eq!(dropped.event, "dropped");
    assert_eq!(
        dropped.data["dropped"].as_u64(),
        Some(first_held - 2),
        "{dropped:?}"
    );
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        ids.push(
            subscriber
                .next()
                .await
                .expect("held events")
                .id
                .expect("an id"),
        );
    }
    assert_eq!(ids, (first_held..=last).collect::<Vec<_>>());

    // Resuming from an event that is gone: told how many after it are gone too.
    let mut late = Subscriber::open(&http, Some(3)).await;
    let dropped = late.next().await.expect("dropped");
    assert_eq!(dropped.event, "dropped");
    assert_eq!(dropped.data["dropped"].as_u64(), Some(first_held - 4));
    assert_eq!(late.next().await.expect("next").id, Some(first_held));

    // An id past the newest event is from a farm that has restarted since: from the start.
    let mut after_restart = Subscriber::open(&http, Some(last + 1_000)).await;
    assert_eq!(
        after_restart.next().await.expect("the first event").id,
        Some(1)
    );
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn event_streams_are_limited_and_a_bad_last_event_id_is_refused() {
    let farm = farm(GREYLIST).await;
    let mut options = ApiOptions::ephemeral();
    options.max_subscribers = 1;
    let http = Http::with(&farm, options).await;
    let mut one = Subscriber::open(&http, None).await;
    assert_eq!(one.next().await.expect("an event").id, Some(1));
    let refused = http
        .client
        .get(http.url("/api/v1/events"))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = refused.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("1 event streams"),
        "{body}"
    );
    drop(one);

    let bad = http
        .client
        .get(http.url("/api/v1/events"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status().as_u16(), 400);
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn changes_need_the_token_and_the_host_must_be_this_machine() {
    let farm = farm(GREYLIST).await;
    let http = Http::with(&farm, ApiOptions::ephemeral().token("s3cret")).await;
    let reset = http.url("/api/v1/reset");
    let status = |response: reqwest::Response| response.status().as_u16();

    let none = http.client.post(&reset).send().await.expect("POST");
    assert_eq!(status(none), 401);
    let wrong = http
        .client
        .post(&reset)
        .header("x-mxfarm-token", "guess")
        .send()
        .await;
    assert_eq!(status(wrong.expect("POST")), 401);
    let bearer = http.client.post(&reset).bearer_auth("s3cret").send().await;
    assert_eq!(status(bearer.expect("POST")), 200);
    let header = http
        .client
        .post(&reset)
        .header("x-mxfarm-token", "s3cret")
        .send()
        .await;
    assert_eq!(status(header.expect("POST")), 200);
    // Reads stay open.
    http.get("/api/v1/clock").await;

    // A page whose name rebinds to 127.0.0.1 sends its own name as the Host.
    let rebound = http
        .client
        .get(http.url("/api/v1/messages"))
        .header("host", "attacker.test:8025")
        .send()
        .await
        .expect("GET");
    assert_eq!(status(rebound), 403);
    for local in [
        "localhost:8025",
        "127.0.0.1",
        "[::1]:8025",
        "farm.localhost",
    ] {
        let ok = http
            .client
            .get(http.url("/livez"))
            .header("host", local)
            .send()
            .await;
        assert_eq!(status(ok.expect("GET")), 200, "{local}");
    }

    // Larger bodies than a scenario are refused before they are read whole.
    let huge = vec![b' '; mxfarm::api::MAX_BODY_BYTES + 1];
    let too_big = http
        .client
        .post(&reset)
        .bearer_auth("s3cret")
        .body(huge)
        .send()
        .await;
    assert_eq!(status(too_big.expect("POST")), 413);
    http.api.shutdown().await;

    // Beyond loopback, no token, no API; and an empty token is no token.
    let open =
        mxfarm::api::ApiServer::start(&farm, ApiOptions::new("0.0.0.0:0".parse().unwrap())).await;
    assert!(matches!(open, Err(ApiError::NoToken { .. })), "{open:?}");
    let message = open.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--api-token"), "{message}");
    let empty = mxfarm::api::ApiServer::start(&farm, ApiOptions::ephemeral().token("")).await;
    assert!(matches!(empty, Err(ApiError::EmptyToken)));
    farm.shutdown().await;
}

/// Beyond loopback (in a container), the Host header must be one a user types: an
/// address, a compose service's name, a local name, or one allowed by name; a page that
/// rebinds its public domain to the farm's address is refused.
#[tokio::test]
async fn beyond_loopback_the_host_must_be_one_a_user_types() {
    let farm = farm(GREYLIST).await;
    let mut options = ApiOptions::new("0.0.0.0:0".parse().expect("addr")).token("s3cret");
    options.allowed_hosts = vec!["ci-runner.corp.example".into()];
    let http = Http::with(&farm, options).await;
    // The API on all addresses; the test speaks to it over loopback only.
    let url = format!("http://127.0.0.1:{}/livez", http.api.addr().port());
    let status = |host: &'static str| {
        let request = http.client.get(&url).header("host", host);
        async move { request.send().await.expect("GET").status().as_u16() }
    };
    for ok in [
        "mxfarm:8025",
        "192.0.2.5:8025",
        "[2001:db8::1]:8025",
        "farm.test",
        "ci-runner.corp.example:8025",
    ] {
        assert_eq!(status(ok).await, 200, "{ok}");
    }
    let refused = http
        .client
        .get(&url)
        .header("host", "rebound.attacker.example:8025")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().await.expect("JSON");
    assert!(
        body["help"]
            .as_str()
            .expect("help")
            .contains("--api-allow-host rebound.attacker.example"),
        "{body}"
    );
    http.api.shutdown().await;
    farm.shutdown().await;
}
