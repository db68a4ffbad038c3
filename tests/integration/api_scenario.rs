//! `PUT /api/v1/scenario`: replacing a running farm's scenario over HTTP, keeping or
//! resetting what its rules learnt, rebinding only hosts whose address changed, with the
//! loader's own errors for a broken scenario, and the farm's DNS following.

use std::net::SocketAddr;

use hickory_resolver::proto::rr::RecordType;
use mxfarm::api::ApiOptions;
use mxfarm::{Farm, FarmOptions, Scenario};
use serde_json::{Value, json};

use crate::api::{GREYLIST, Http, send};
use crate::dns::{records, udp};
use crate::support::farm;

/// PUT `toml` with `query`, expecting `status`.
async fn put(http: &Http, query: &str, toml: &str, status: u16) -> Value {
    let response = http
        .client
        .put(http.url(&format!("/api/v1/scenario{query}")))
        .header("x-mxfarm-token", "1")
        .header("content-type", "application/toml")
        .body(toml.to_string())
        .send()
        .await
        .expect("PUT");
    let got = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("JSON")
}

/// The greylist scenario with a second host, mx2, that accepts everything.
fn with_mx2(name: &str) -> String {
    format!(
        "{}\n[[host]]\nname = \"mx2\"\nlisten = \"127.0.0.1:0\"\n",
        GREYLIST.replace("name = \"grey\"", &format!("name = \"{name}\""))
    )
}

#[tokio::test]
async fn a_replaced_scenario_keeps_what_the_greylist_learnt_or_starts_afresh() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let mx1 = farm.addr("mx1");
    assert_eq!(send(mx1, "bob@grey.test").await, 450);

    let replaced = put(&http, "", &with_mx2("grey, two hosts"), 200).await;
    assert_eq!(replaced["scenario"], "grey, two hosts");
    assert_eq!(replaced["kept"], json!(["mx1"]), "{replaced}");
    assert_eq!(replaced["bound"][0][0], "mx2");
    assert_eq!(replaced["state"], "keep");
    assert_eq!(farm.addr("mx1"), mx1, "mx1 kept its listener");
    assert_eq!(
        send(farm.addr("mx2"), "carol@grey.test").await,
        250,
        "mx2 is up"
    );
    assert_eq!(
        http.get("/api/v1/scenario").await["name"],
        "grey, two hosts"
    );

    // The triplet seen before the replacement passes once its delay is over.
    http.post("/api/v1/clock/advance", json!({ "by": "6m" }))
        .await;
    assert_eq!(send(mx1, "bob@grey.test").await, 250);

    // Reset: the same triplet is new again. As JSON, naming the state in the body.
    let response = http
        .client
        .put(http.url("/api/v1/scenario"))
        .header("x-mxfarm-token", "1")
        .json(&json!({ "toml": with_mx2("grey again"), "state": "reset" }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status().as_u16(), 200);
    let replaced: Value = response.json().await.expect("JSON");
    assert_eq!(replaced["kept"], json!(["mx1", "mx2"]), "{replaced}");
    assert_eq!(replaced["state"], "reset");
    assert_eq!(send(mx1, "bob@grey.test").await, 450);

    // The journal says what happened, and the transcript reads on.
    let events = farm.journal();
    let replacements: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            mxfarm::EventKind::ScenarioReplaced {
                scenario,
                state_kept,
                ..
            } => Some((scenario.clone(), *state_kept)),
            _ => None,
        })
        .collect();
    assert_eq!(
        replacements,
        [
            ("grey, two hosts".to_string(), true),
            ("grey again".to_string(), false)
        ]
    );
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn a_broken_scenario_gets_every_problem_placed_and_the_farm_goes_on() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let broken = "name = \"broken\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\nmax-connectoins = 5\n[[host.rule]]\nstage = \"rcpt-to\"\nthen = { reply = \"250 fine\" }\n";
    let problem = put(&http, "", broken, 422).await;
    assert!(
        problem["error"]
            .as_str()
            .expect("error")
            .contains("2 problems"),
        "{problem}"
    );
    let problems = problem["details"]["problems"].as_array().expect("problems");
    assert_eq!(problems[0]["line"], 5, "{problem}");
    assert_eq!(problems[0]["column"], 1);
    assert!(
        problems[0]["message"]
            .as_str()
            .expect("message")
            .contains("max-connectoins")
    );
    assert!(
        problems[0]["hint"]
            .as_str()
            .expect("hint")
            .contains("limits"),
        "{problem}"
    );
    assert_eq!(problems[1]["line"], 7, "{problem}");
    // Exactly what `mxfarm check` says of the same text.
    let expected = Scenario::from_toml("scenario", broken)
        .expect_err("broken")
        .to_string();
    assert_eq!(problem["details"]["text"], expected);
    assert!(
        !expected.contains(".toml"),
        "no file in the positions: {expected}"
    );

    assert_eq!(http.get("/api/v1/scenario").await["name"], "grey");
    assert_eq!(
        send(farm.addr("mx1"), "bob@grey.test").await,
        450,
        "still greylisting"
    );
    put(&http, "?state=later", GREYLIST, 400).await;
    http.api.shutdown().await;
    farm.shutdown().await;
}

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    socket.local_addr().expect("its address")
}

#[tokio::test]
async fn only_hosts_whose_address_changed_are_bound_again_and_the_dns_follows() {
    let (a, b) = (free_port(), free_port());
    let text = |mx1: SocketAddr, domain: &str| {
        format!(
            "name = \"moving\"\n[[domain]]\nname = \"{domain}\"\nmx = [{{ host = \"mx1\", preference = 10 }}]\n[[host]]\nname = \"mx1\"\nlisten = \"{mx1}\"\n[[host]]\nname = \"mx2\"\nlisten = \"127.0.0.1:0\"\n"
        )
    };
    let scenario = Scenario::from_toml("moving.toml", &text(a, "one.test")).expect("valid");
    let options = FarmOptions::default()
        .bind("mx2", "127.0.0.1:0".parse().expect("addr"))
        .dns("127.0.0.1:0".parse().expect("addr"));
    let farm = Farm::start_with(scenario, options).await.expect("starts");
    let http = Http::with(&farm, ApiOptions::ephemeral()).await;
    let dns = udp(farm.dns_addr().expect("DNS"));
    assert_eq!(
        records(&dns, "one.test", RecordType::MX).await.expect("MX"),
        ["10 mx1.mxfarm.test."]
    );
    let mx2 = farm.addr("mx2");

    let replaced = put(&http, "", &text(b, "two.test"), 200).await;
    assert_eq!(replaced["kept"], json!(["mx2"]), "{replaced}");
    assert_eq!(replaced["bound"], json!([["mx1", b.to_string()]]));
    assert_eq!(farm.addr("mx1"), b);
    assert_eq!(farm.addr("mx2"), mx2);
    assert_eq!(send(b, "x@two.test").await, 250);
    assert_eq!(send(mx2, "x@two.test").await, 250);
    // The DNS serves the new zone, with mx1 at its new address.
    assert_eq!(
        records(&dns, "two.test", RecordType::MX).await.expect("MX"),
        ["10 mx1.mxfarm.test."]
    );
    assert_eq!(
        records(&dns, "mx1.mxfarm.test", RecordType::A)
            .await
            .expect("A"),
        ["127.0.0.1"]
    );
    assert!(
        records(&dns, "one.test", RecordType::MX).await.is_err(),
        "the old zone is gone"
    );
    // The old address takes no connection once its listener has gone.
    let mut refused = false;
    for _ in 0..10_000 {
        if tokio::net::TcpStream::connect(a).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "{a} still accepts connections");

    // An address another program holds: refused whole, the farm as it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let busy = taken.local_addr().expect("addr");
    let conflict = put(&http, "", &text(busy, "three.test"), 409).await;
    assert!(
        conflict["error"]
            .as_str()
            .expect("error")
            .contains(&busy.to_string()),
        "{conflict}"
    );
    assert_eq!(farm.addr("mx1"), b);
    assert_eq!(
        http.get("/api/v1/scenario").await["toml"],
        text(b, "two.test")
    );
    http.api.shutdown().await;
    farm.shutdown().await;
}

#[tokio::test]
async fn two_hosts_may_swap_their_addresses() {
    let (a, b) = (free_port(), free_port());
    let text = |mx1: SocketAddr, mx2: SocketAddr| {
        format!(
            "name = \"swap\"\n[[host]]\nname = \"mx1\"\nlisten = \"{mx1}\"\n[[host]]\nname = \"mx2\"\nlisten = \"{mx2}\"\n"
        )
    };
    let scenario = Scenario::from_toml("swap.toml", &text(a, b)).expect("valid");
    let farm = Farm::start(scenario).await.expect("starts");
    let http = Http::start(&farm).await;
    let replaced = put(&http, "", &text(b, a), 200).await;
    assert_eq!(replaced["kept"], json!(["mx1", "mx2"]), "{replaced}");
    assert_eq!((farm.addr("mx1"), farm.addr("mx2")), (b, a));
    assert_eq!(send(b, "x@swap.test").await, 250);
    let hosts = http.get("/api/v1/hosts").await;
    assert_eq!(hosts["hosts"][0]["addr"], b.to_string(), "{hosts}");
    http.api.shutdown().await;
    farm.shutdown().await;
}

/// The sessions open on a kept listener still count towards its limits after the
/// replacement: the new configuration does not start from zero connections.
#[tokio::test]
async fn open_connections_count_across_a_replacement() {
    let text = "name = \"one at a time\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:0\"\n[host.limits]\nmax-connections = 1\n";
    let farm = farm(text).await;
    let http = Http::start(&farm).await;
    let mut first = crate::support::greeted(farm.addr("mx1")).await;
    put(&http, "", text, 200).await;
    assert_eq!(
        http.get("/api/v1/hosts").await["hosts"][0]["open_connections"],
        1
    );
    let mut second = mxfarm::testing::SmtpClient::connect(farm.addr("mx1")).await;
    second.expect_code(421).await;
    first.quit().await;
    http.api.shutdown().await;
    farm.shutdown().await;
}
