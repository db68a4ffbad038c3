//! The web page at `/` over real HTTP: its three files are served with their types and a
//! same-origin-only policy, they name nothing outside the farm (the page works offline),
//! and every API path the script reads is a GET route the API has. What the page does
//! in a browser is checked in headless Chromium by `scripts/e2e-page.sh`.

use mxfarm::api::{ApiOptions, ApiServer, ROUTES};
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};

use crate::support::farm;

const SCENARIO: &str = r#"
name = "page"

[[host]]
name = "mx1"
listen = "127.0.0.1:0"
"#;

struct Served {
    content_type: String,
    policy: String,
    body: String,
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> Served {
    let response = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status(), 200, "GET {path}");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(CONTENT_TYPE);
    let policy = header(CONTENT_SECURITY_POLICY);
    let body = response.text().await.expect("a text body");
    Served {
        content_type,
        policy,
        body,
    }
}

/// The values of every `attr="..."` in an HTML text.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// The argument of every `getJson('...')` call in the script, without its query.
fn api_reads(script: &str) -> Vec<&str> {
    let needle = "getJson('";
    script
        .match_indices(needle)
        .filter_map(|(at, _)| {
            let rest = &script[at + needle.len()..];
            let path = &rest[..rest.find('\'')?];
            Some(path.split('?').next().unwrap_or(path))
        })
        .collect()
}

#[tokio::test]
async fn the_page_is_served_whole_from_the_farm_and_reads_only_get_routes() {
    let farm = farm(SCENARIO).await;
    let api = ApiServer::start(&farm, ApiOptions::ephemeral())
        .await
        .expect("the API starts");
    let base = api.url();
    let client = reqwest::Client::new();

    let index = get(&client, &base, "/").await;
    let script = get(&client, &base, "/timeline.js").await;
    let style = get(&client, &base, "/timeline.css").await;
    assert_eq!(index.content_type, "text/html; charset=utf-8");
    assert_eq!(script.content_type, "text/javascript; charset=utf-8");
    assert_eq!(style.content_type, "text/css; charset=utf-8");
    for served in [&index, &script, &style] {
        assert!(
            served.policy.contains("default-src 'self'")
                && served.policy.contains("script-src 'self'")
                && served.policy.contains("connect-src 'self'"),
            "same-origin only: {}",
            served.policy
        );
        // No CDN, no fonts, no links out: nothing names another host.
        for scheme in ["http://", "https://", "//cdn", "url(http"] {
            assert!(
                !served.body.contains(scheme),
                "{scheme} in a page file:\n{}",
                served.body
            );
        }
    }

    // What index.html loads is the farm's own, by absolute path on this origin.
    // (The icon is an empty `data:` URI, so the browser asks for no /favicon.ico.)
    let loads: Vec<&str> = attribute_values(&index.body, "src")
        .into_iter()
        .chain(attribute_values(&index.body, "href"))
        .filter(|v| *v != "data:,")
        .collect();
    assert_eq!(loads, ["/timeline.js", "/timeline.css"], "{}", index.body);
    for path in &loads {
        assert!(path.starts_with('/') && !path.starts_with("//"), "{path}");
        assert!(
            ROUTES
                .iter()
                .any(|r| r.method == "GET" && r.path == *path && !r.changes),
            "{path} is not a page route"
        );
    }
    // The stable hooks the README promises tests are in the script.
    for hook in [
        "data-delivery=",
        "data-recipient=",
        "data-attempt=",
        "data-kind=",
    ] {
        assert!(script.body.contains(hook), "{hook} missing from the script");
    }

    // Every path the script reads is a GET route that changes nothing; it sends no
    // other method (changes need the token, which the page never has).
    let reads = api_reads(&script.body);
    assert!(reads.len() >= 4, "the script's reads: {reads:?}");
    let mut paths: Vec<String> = reads.iter().map(|p| format!("/api/v1{p}")).collect();
    paths.push("/api/v1/events".to_string());
    assert!(
        script
            .body
            .contains("new EventSource(`${API}/events?after=")
    );
    for path in &paths {
        assert!(
            ROUTES
                .iter()
                .any(|r| r.method == "GET" && r.path == path && !r.changes),
            "the page reads {path}, which is no GET route of the API"
        );
        let response = client
            .get(format!("{base}{path}"))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("a read the page makes");
        let ok = response.status() == 200;
        let kind = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ok, "GET {path}: {}", response.status());
        if path != "/api/v1/events" {
            assert!(kind.starts_with("application/json"), "GET {path}: {kind}");
        }
    }
    for method in ["'POST'", "'PUT'", "'DELETE'", "method:"] {
        assert!(!script.body.contains(method), "the script sends {method}");
    }

    api.shutdown().await;
    farm.shutdown().await;
}
