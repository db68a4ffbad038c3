//! The OpenAPI document the farm serves describes exactly the routes it has: every route
//! of `mxfarm::api::ROUTES` is in it with its method, nothing else is, and the routes
//! that change something ask for the token.

use std::collections::BTreeSet;

use mxfarm::api::{OPENAPI, ROUTES};
use serde_json::Value;

use crate::api::{GREYLIST, Http};
use crate::support::farm;

#[test]
fn the_document_lists_exactly_the_routes_and_which_need_the_token() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.0.3");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let method = method.to_ascii_uppercase();
            let secured = operation.get("security").is_some();
            documented.insert((method.clone(), path.clone(), secured));
            assert!(
                operation["responses"]["default"].is_object(),
                "{method} {path} documents its errors"
            );
        }
    }
    let routed: BTreeSet<(String, String, bool)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string(), r.changes))
        .collect();
    assert_eq!(documented, routed);
    // Every schema a path refers to exists.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for reference in OPENAPI.match_indices("#/components/schemas/") {
        let name: String = OPENAPI[reference.0 + reference.1.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(schemas.contains_key(&name), "no schema {name}");
    }
}

#[tokio::test]
async fn the_farm_serves_its_document() {
    let farm = farm(GREYLIST).await;
    let http = Http::start(&farm).await;
    let served = http.get_text("/api/v1/openapi.json", 200).await;
    assert_eq!(served, OPENAPI);
    http.api.shutdown().await;
    farm.shutdown().await;
}
