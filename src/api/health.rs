//! Health and description: `/livez` (the API answers), `/readyz` (every listener, the
//! DNS and the API are bound, and the farm has not begun to shut down), `/metrics`
//! (Prometheus text), and the OpenAPI document of every route.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Api;

/// The OpenAPI 3.0 document of the API, checked against [`super::ROUTES`] by a test.
pub const OPENAPI: &str = include_str!("openapi.json");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn livez() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

/// The farm binds every host's listener and its DNS before it starts, and the API binds
/// before it answers: so once this answers, all are bound, until the shutdown begins.
pub(super) async fn readyz(State(api): State<Api>) -> Response {
    let ready = api.farm.is_accepting();
    let body = Json(json!({
        "ready": ready,
        "hosts": api.farm.hosts().iter().map(|h| json!({ "name": h.name, "addr": h.addr })).collect::<Vec<_>>(),
        "dns": api.farm.dns_addr(),
        "api": api.addr,
    }));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

pub(super) async fn metrics(State(api): State<Api>) -> Response {
    let metrics = api.metrics.clone();
    let rendered = api.off_the_runtime(move |farm| metrics.render(farm)).await;
    let rendered = match rendered {
        Ok(rendered) => rendered,
        Err(problem) => return problem.into_response(),
    };
    match rendered {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
