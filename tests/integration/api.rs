//! The control API over real HTTP (reqwest) against a farm on ephemeral ports, with real
//! SMTP clients as senders: every endpoint as a user would call it.

use std::net::SocketAddr;
use std::time::Duration;

use mxfarm::api::{ApiOptions, ApiServer};
use mxfarm::testing::GUARD;
use mxfarm::{EventKind, Farm};
use serde_json::{Value, json};

use crate::support::{farm, greeted};

pub const GREYLIST: &str = r#"
name = "grey"
[[domain]]
name = "grey.test"
mx = [{ host = "mx1", preference = 10 }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
[[host.rule]]
stage = "rcpt"
then = { greylist = { delay = "5m" } }
"#;

/// The API of `farm` on an ephemeral port, and a client for it.
pub struct Http {
    pub api: ApiServer,
    pub client: reqwest::Client,
}

impl Http {
    pub async fn start(farm: &Farm) -> Http {
        Self::with(farm, ApiOptions::ephemeral()).await
    }

    pub async fn with(farm: &Farm, options: ApiOptions) -> Http {
        let api = ApiServer::start(farm, options)
            .await
            .expect("the API starts");
        let client = reqwest::Client::builder()
            .timeout(GUARD)
            .build()
            .expect("a client");
        Http { api, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.url())
    }

    /// GET, expecting `status`; the body as text.
    pub async fn get_text(&self, path: &str, status: u16) -> String {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status().as_u16(), status, "GET {path}");
        response.text().await.expect("a body")
    }

    /// GET, expecting 200 and JSON.
    pub async fn get(&self, path: &str) -> Value {
        let text = self.get_text(path, 200).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// A change (POST, DELETE) with the token header, expecting `status`; the JSON body.
    pub async fn change(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let mut request = self
            .client
            .request(method.clone(), self.url(path))
            .header("x-mxfarm-token", "1");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request");
        let got = response.status().as_u16();
        let text = response.text().await.expect("a body");
        assert_eq!(got, status, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.change(reqwest::Method::POST, path, Some(body), 200)
            .await
    }
}

/// One SMTP transaction over TCP from a real client; the last reply's code.
pub async fn send(addr: SocketAddr, to: &str) -> u16 {
    let mut c = greeted(addr).await;
    c.ehlo("client.test").await;
    let t = c
        .transaction(
            "alice@sender.test",
            &[to],
            &format!("Subject: hello {to}\r\nMessage-ID: <{to}.msg@sender.test>\r\n\r\nHi.\r\n"),
        )
        .await;
    c.quit().await;
    t.end_of_data
        .or_else(|| t.rcpt.iter().flatten().next_back().cloned())
        .map_or(0, |r| r.code)
}

#[tokio::test]
async fn a_clock_advance_lets_a_greylisted_retry_through_without_waiting() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let mx1 = farm.addr("mx1");
    assert_eq!(send(mx1, "bob@grey.test").await, 450);

    // The greylist shows the triplet and when it passes.
    let grey = http.get("/api/v1/greylist").await;
    let entries = grey["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{grey}");
    assert_eq!(entries[0]["recipient"], "bob@grey.test");
    assert_eq!(entries[0]["sender"], "alice@sender.test");
    assert_eq!(entries[0]["client_network"], "127.0.0.0/24");
    assert_eq!(entries[0]["passed"], false);
    let first_seen = entries[0]["first_seen_ms"].as_u64().expect("first seen");
    assert_eq!(
        entries[0]["passes_at_ms"].as_u64(),
        Some(first_seen + 300_000)
    );

    // A retry now is too early; six minutes later, on the farm's clock, it passes.
    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    let before = http.get("/api/v1/clock").await["now_ms"]
        .as_u64()
        .expect("now");
    let advanced = http
        .post("/api/v1/clock/advance", json!({ "by": "6m" }))
        .await;
    assert_eq!(advanced["advanced_ms"], 360_000);
    assert!(advanced["now_ms"].as_u64().expect("now") >= before + 360_000);
    assert_eq!(send(mx1, "bob@grey.test").await, 250);
    let grey = http.get("/api/v1/greylist").await;
    assert_eq!(grey["entries"][0]["passed"], true, "{grey}");

    // The transcript over HTTP shows the jump, as text and as JSON.
    let text = http
        .get_text("/api/v1/transcript?granularity=minutes", 200)
        .await;
    assert!(
        text.contains("      farm clock advanced by 6m by hand\n  #3  +6m"),
        "{text}"
    );
    let as_json = http.get("/api/v1/transcript?format=json").await;
    assert_eq!(as_json["deliveries"][0]["clock_jumps"][0]["by_ms"], 360_000);
    assert!(farm.journal().iter().any(|e| e.kind
        == EventKind::ClockAdvanced {
            by: Duration::from_secs(360)
        }));

    // The deliveries and the report over HTTP say the same as the library.
    let deliveries = http.get("/api/v1/deliveries").await;
    assert_eq!(
        deliveries["list"][0]["attempts"].as_array().map(Vec::len),
        Some(3)
    );
    let report = http.get("/api/v1/report").await;
    assert_eq!(report["deliveries"][0]["outcome"]["result"], "delivered");
    let report_text = http.get_text("/api/v1/report?format=text", 200).await;
    assert_eq!(report_text, farm.report().render());

    // A jump past the clock's range (a hundred years in all) is refused, and time
    // stays where it was.
    let mut refused = None;
    for _ in 0..=100 {
        let response = http
            .client
            .post(http.url("/api/v1/clock/advance"))
            .header("x-mxfarm-token", "1")
            .json(&json!({ "by": "365d" }))
            .send()
            .await
            .expect("POST");
        if response.status().as_u16() != 200 {
            assert_eq!(response.status().as_u16(), 422);
            refused = Some(response.json::<Value>().await.expect("JSON"));
            break;
        }
    }
    let refused = refused.expect("a hundred years is the range");
    assert!(
        refused["error"]
            .as_str()
            .expect("error")
            .contains("cannot advance"),
        "{refused}"
    );
    let now = farm.now();
    http.change(
        reqwest::Method::POST,
        "/api/v1/clock/advance",
        Some(json!({ "by": "365d" })),
        422,
    )
    .await;
    assert!(farm.now() - now < Duration::from_secs(60));
    for bad in [
        json!({ "by": "5 minutes" }),
        json!({}),
        json!({ "by": "5m", "by_ms": 1 }),
        json!({ "by_ms": 31_536_000_001u64 }),
    ] {
        let problem = http
            .change(
                reqwest::Method::POST,
                "/api/v1/clock/advance",
                Some(bad.clone()),
                400,
            )
            .await;
        assert!(problem["help"].is_string(), "{bad}: {problem}");
    }
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn a_greylist_entry_can_be_forgotten_and_a_client_whitelisted() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let mx1 = farm.addr("mx1");
    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    http.post("/api/v1/clock/advance", json!({ "by": "6m" }))
        .await;
    let id = http.get("/api/v1/greylist").await["entries"][0]["id"]
        .as_str()
        .expect("an id")
        .to_string();

    // Forgotten, the triplet is new again: greylisted after the delay was over.
    let forgotten = http
        .change(
            reqwest::Method::DELETE,
            &format!("/api/v1/greylist/{id}"),
            None,
            200,
        )
        .await;
    assert_eq!(forgotten["forgotten"], id);
    assert_eq!(http.get("/api/v1/greylist").await["entries"], json!([]));
    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    // The same triplet again: the same id (it names the triplet), seen first just now.
    let grey = http.get("/api/v1/greylist").await;
    assert_eq!(grey["entries"][0]["id"], id.as_str(), "{grey}");
    assert_eq!(
        grey["entries"][0]["first_seen_ms"],
        grey["entries"][0]["last_seen_ms"]
    );
    let unknown = http
        .change(
            reqwest::Method::DELETE,
            &format!("/api/v1/greylist/{}", "0".repeat(32)),
            None,
            404,
        )
        .await;
    assert!(
        unknown["help"]
            .as_str()
            .expect("help")
            .contains("GET /api/v1/greylist")
    );
    http.change(
        reqwest::Method::DELETE,
        "/api/v1/greylist/not-an-id",
        None,
        404,
    )
    .await;

    // Whitelisted by hand, the client passes at once, for any recipient.
    let listed = http
        .post(
            "/api/v1/greylist/whitelist",
            json!({ "client": "127.0.0.1" }),
        )
        .await;
    assert_eq!(listed["greylists"], 1);
    assert_eq!(send(mx1, "carol@grey.test").await, 250);
    let grey = http.get("/api/v1/greylist").await;
    assert_eq!(grey["whitelist"][0]["client"], "127.0.0.1", "{grey}");
    assert_eq!(grey["whitelist"][0]["by_hand"], true);
    assert_eq!(grey["whitelist"][0]["whitelisted"], true);
    http.change(
        reqwest::Method::POST,
        "/api/v1/greylist/whitelist",
        Some(json!({ "client": "not an address" })),
        400,
    )
    .await;
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn resets_forget_each_part_on_its_own() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let mx1 = farm.addr("mx1");
    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    http.post("/api/v1/clock/advance", json!({ "by": "6m" }))
        .await;
    assert_eq!(send(mx1, "bob@grey.test").await, 250);
    assert_eq!(
        http.get("/api/v1/messages").await.as_array().map(Vec::len),
        Some(1)
    );

    // Messages only: the journal and the greylist stay.
    let reset = http
        .post("/api/v1/reset", json!({ "messages": true }))
        .await;
    assert_eq!(
        reset["reset"],
        json!({ "policy": false, "journal": false, "messages": true })
    );
    assert_eq!(http.get("/api/v1/messages").await, json!([]));
    assert_eq!(
        http.get("/api/v1/deliveries").await["list"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        send(mx1, "bob@grey.test").await,
        250,
        "the triplet still passes"
    );

    // The journal: transcripts start again, with no word of missing events.
    http.post("/api/v1/reset", json!({ "journal": true })).await;
    let journal = http.get("/api/v1/journal").await;
    let kinds: Vec<&str> = journal["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["farm-started", "reset"], "{journal}");
    assert_eq!(journal["missed"], 0);
    assert_eq!(http.get_text("/api/v1/transcript", 200).await, "");
    assert_eq!(send(mx1, "bob@grey.test").await, 250);
    let transcript = http
        .get_text("/api/v1/transcript?granularity=none", 200)
        .await;
    assert!(!transcript.contains("INCOMPLETE"), "{transcript}");
    assert!(
        transcript.contains("delivered after 1 attempt"),
        "{transcript}"
    );

    // The policy state: the same triplet is greylisted again. No body: everything.
    http.post("/api/v1/reset", json!({ "policy": true })).await;
    assert_eq!(http.get("/api/v1/greylist").await["entries"], json!([]));
    assert_eq!(send(mx1, "bob@grey.test").await, 450);
    let all = http
        .change(reqwest::Method::POST, "/api/v1/reset", None, 200)
        .await;
    assert_eq!(
        all["reset"],
        json!({ "policy": true, "journal": true, "messages": true })
    );
    let nothing = http
        .change(reqwest::Method::POST, "/api/v1/reset", Some(json!({})), 422)
        .await;
    assert!(nothing["help"].as_str().expect("help").contains("no body"));
    http.change(
        reqwest::Method::POST,
        "/api/v1/reset",
        Some(json!({ "everything": true })),
        400,
    )
    .await;
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn messages_are_listed_read_whole_and_cleared() {
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
    assert_eq!(send(farm.addr("mx1"), "bob@plain.test").await, 250);

    let list = http.get("/api/v1/messages").await;
    assert_eq!(list[0]["id"], 1, "{list}");
    assert_eq!(list[0]["sender"], "alice@sender.test");
    assert_eq!(list[0]["recipients"], json!(["bob@plain.test"]));
    assert_eq!(list[0]["subject"], "hello bob@plain.test");

    let one = http.get("/api/v1/messages/1").await;
    assert_eq!(
        one["headers"][0],
        json!(["Subject", "hello bob@plain.test"]),
        "{one}"
    );
    assert_eq!(one["delivered"][0]["recipient"], "bob@plain.test");
    assert_eq!(one["delivered"][0]["attempt"], 1);
    assert_eq!(one["delivered"][0]["host"], "mx1");

    let raw = http
        .client
        .get(http.url("/api/v1/messages/1/raw"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        raw.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("message/rfc822")
    );
    let bytes = raw.bytes().await.expect("bytes");
    assert_eq!(&bytes[..], &farm.messages()[0].data[..]);
    assert!(bytes.starts_with(b"Subject: hello bob@plain.test\r\n"));

    let missing = http.get_text("/api/v1/messages/99", 404).await;
    assert!(missing.contains("keeps no message 99"), "{missing}");
    let bad = http.get_text("/api/v1/messages/first", 400).await;
    assert!(bad.contains("not a message number"), "{bad}");

    let cleared = http
        .change(reqwest::Method::DELETE, "/api/v1/messages", None, 200)
        .await;
    assert_eq!(cleared["cleared"], 1);
    assert_eq!(http.get("/api/v1/messages").await, json!([]));
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn hosts_scenario_health_and_metrics_describe_the_running_farm() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    assert_eq!(send(farm.addr("mx1"), "bob@grey.test").await, 450);

    let hosts = http.get("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"][0]["name"], "mx1", "{hosts}");
    assert_eq!(hosts["hosts"][0]["addr"], farm.addr("mx1").to_string());
    assert_eq!(hosts["hosts"][0]["connections"], 1);
    assert_eq!(hosts["hosts"][0]["open_connections"], 0);
    assert_eq!(hosts["hosts"][0]["replies"]["4xx"], 1);

    let scenario = http.get("/api/v1/scenario").await;
    assert_eq!(scenario["name"], "grey");
    assert_eq!(scenario["toml"], GREYLIST);
    assert_eq!(
        scenario["json"]["host"][0]["rule"][0]["then"]["greylist"]["delay"],
        "5m"
    );

    assert_eq!(http.get("/livez").await["live"], true);
    let ready = http.get("/readyz").await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["api"], http.api.addr().to_string());

    let metrics = http.get_text("/metrics", 200).await;
    for line in [
        "mxfarm_connections_total{host=\"mx1\"} 1",
        "mxfarm_replies_total{host=\"mx1\",class=\"4xx\"} 1",
        "mxfarm_deliveries{outcome=\"deferred\"} 1",
        "mxfarm_deliveries{outcome=\"delivered\"} 0",
        "mxfarm_greylist_entries 1",
        "mxfarm_journal_dropped_events_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    let unknown = http.get_text("/api/v1/nothing", 404).await;
    assert!(unknown.contains("openapi.json"), "{unknown}");
    let bad = http.get_text("/api/v1/journal?after=first", 400).await;
    assert!(bad.contains("help"), "{bad}");
    let bad = http.get_text("/api/v1/journal?limit=0", 400).await;
    assert!(bad.contains("1 to 10000"), "{bad}");
    let bad = http
        .get_text("/api/v1/transcript?granularity=hours", 400)
        .await;
    assert!(bad.contains("exact, seconds, minutes, none"), "{bad}");

    // After the farm's shutdown has begun, it is no longer ready.
    let api = http.api;
    farm.shutdown().await;
    let response = http
        .client
        .get(format!("{}/readyz", api.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 503);
    api.shutdown().await;
}

#[tokio::test]
async fn the_journal_is_paged_by_sequence_number() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    for _ in 0..3 {
        send(farm.addr("mx1"), "bob@grey.test").await;
    }
    let all = farm.journal();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = http
            .get(&format!("/api/v1/journal?after={after}&limit=7"))
            .await;
        let events = page["events"].as_array().expect("events");
        assert!(events.len() <= 7);
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().expect("seq")));
        assert_eq!(page["missed"], 0);
        after = page["next_after"].as_u64().expect("next");
        if page["more"] == false {
            break;
        }
        assert!(seqs.len() <= all.len(), "paging never ends");
    }
    let expected: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, expected);
    http.api.shutdown().await;
    farm.shutdown().await;
}

/// A real-time sender deferred once, and the farm's clock moved two days by hand: the
/// sender has had seconds, not days, to retry. The report must not say it never will.
#[tokio::test]
async fn time_jumped_by_hand_is_no_silence_of_the_sender() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    assert_eq!(send(farm.addr("mx1"), "bob@grey.test").await, 450);
    http.post("/api/v1/clock/advance", json!({ "by": "2d" }))
        .await;
    let report = farm.report();
    assert!(report.problems().is_empty(), "{}", report.render());
    let text = http.get_text("/api/v1/report?format=text", 200).await;
    assert!(
        text.contains("no retry yet: #1 was deferred")
            && text.contains("2d00h00m00s of that is the farm's clock advanced by hand"),
        "{text}"
    );
    let response = http
        .client
        .get(http.url("/api/v1/report"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response
            .headers()
            .get("x-mxfarm-problems")
            .and_then(|v| v.to_str().ok()),
        Some("0")
    );
    http.api.shutdown().await;
    farm.shutdown().await;
}
