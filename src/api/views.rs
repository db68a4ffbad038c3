//! The journal's views over HTTP: deliveries (JSON), the transcript (text or JSON, at a
//! granularity) and the report (JSON or text), as the library and `mxfarm transcript` /
//! `mxfarm report` give them.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Api;
use super::journal::bad_query;
use super::problem::Problem;
use crate::render::Granularity;

/// A view's two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Format {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ViewQuery {
    format: Option<Format>,
    granularity: Option<String>,
}

/// The form asked for: `?format=`, else the Accept header, else `default`.
fn format(query: &ViewQuery, headers: &HeaderMap, default: Format) -> Format {
    if let Some(format) = query.format {
        return format;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/json") {
        Format::Json
    } else if accept.contains("text/plain") {
        Format::Text
    } else {
        default
    }
}

/// The number of findings that are problems, on every `/report` response.
pub(super) const PROBLEMS_HEADER: &str = "x-mxfarm-problems";

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) async fn deliveries(
    State(api): State<Api>,
) -> Result<Json<crate::deliveries::Deliveries>, Problem> {
    api.off_the_runtime(|farm| Json(farm.deliveries())).await
}

pub(super) async fn transcript(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(bad_query)?;
    let granularity = match &query.granularity {
        None => Granularity::default(),
        Some(name) => Granularity::named(name).ok_or_else(|| {
            let names: Vec<&str> = Granularity::NAMES.iter().map(|(n, _)| *n).collect();
            Problem::bad_request(
                format!("granularity={name} is not a granularity"),
                format!("use one of: {}", names.join(", ")),
            )
        })?,
    };
    let format = format(&query, &headers, Format::Text);
    api.off_the_runtime(move |farm| {
        let transcript = farm.transcript();
        match format {
            Format::Text => text(transcript.render(granularity)),
            // Compact: the page reads it on every refresh.
            Format::Json => json(serde_json::to_string(&transcript).unwrap_or_default()),
        }
    })
    .await
}

pub(super) async fn report(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(bad_query)?;
    if query.granularity.is_some() {
        return Err(Problem::bad_request(
            "the report has no granularity",
            "granularity applies to /api/v1/transcript; ask /api/v1/report?format=text or json",
        ));
    }
    let format = format(&query, &headers, Format::Json);
    let (problems, mut response) = api
        .off_the_runtime(move |farm| {
            let report = farm.report();
            let response = match format {
                Format::Text => text(report.render()),
                Format::Json => json(serde_json::to_string(&report).unwrap_or_default()),
            };
            (report.problems().len(), response)
        })
        .await?;
    // What a shell script needs to fail a job, without reading the body.
    response
        .headers_mut()
        .insert(PROBLEMS_HEADER, axum::http::HeaderValue::from(problems));
    Ok(response)
}
