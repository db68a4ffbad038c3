//! Changing and inspecting a running farm over HTTP: its scenario, its hosts, its
//! greylists, its clock, and resets. Each handler is one call of the public `Farm` API.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Api;
use super::journal::bad_query;
use super::problem::Problem;
use crate::farm::{FarmError, Replaced, ResetScope, StateOnReplace};
use crate::render::{Granularity, span};
use crate::scenario::duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplaceQuery {
    state: Option<StateOnReplace>,
}

/// A scenario sent as JSON: its TOML text, and what becomes of the state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Replacement {
    toml: String,
    state: Option<StateOnReplace>,
}

/// `PUT /scenario`: the body is the scenario's TOML (or JSON `{"toml": ..., "state":
/// ...}`); `?state=keep` (the default) or `reset`. A scenario with problems gets a 422
/// with every problem `mxfarm check` would report, placed by line and column.
pub(super) async fn replace_scenario(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<ReplaceQuery>, QueryRejection>,
    bytes: Bytes,
) -> Result<Json<Replaced>, Problem> {
    let Query(query) = query.map_err(bad_query)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (text, state) = if json {
        let replacement: Replacement =
            body(&bytes, r#"{"toml": "name = \"x\"\n...", "state": "keep"}"#)?;
        (replacement.toml, replacement.state.or(query.state))
    } else {
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            Problem::bad_request(
                "the scenario is not UTF-8 text",
                "send the scenario file as it is: curl -X PUT --data-binary @my.toml ...",
            )
        })?;
        (text, query.state)
    };
    let scenario = crate::scenario::Scenario::from_toml("scenario", &text).map_err(|error| {
        let problems: Vec<Value> = error
            .problems()
            .iter()
            .map(|p| json!({ "line": p.line, "column": p.column, "message": p.message, "hint": p.hint }))
            .collect();
        let count = problems.len();
        Problem::unprocessable(
            format!(
                "the scenario has {count} problem{}; the farm goes on with the one it plays",
                if count == 1 { "" } else { "s" }
            ),
            "fix each problem at its line and column (`mxfarm check FILE` shows the same), then PUT it again",
        )
        .with_details(json!({ "problems": problems, "text": error.to_string() }))
    })?;
    let state = state.unwrap_or_default();
    api.farm
        .replace_scenario(scenario, state)
        .await
        .map(Json)
        .map_err(|error| match error {
            FarmError::ShuttingDown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the farm is shutting down",
                "the farm stops and plays no other scenario; start it again with the new one",
            ),
            FarmError::Bind { .. } | FarmError::DnsBind { .. } => Problem::new(
                StatusCode::CONFLICT,
                error.to_string(),
                "the farm goes on with the scenario it plays",
            ),
            other => Problem::unprocessable(
                other.to_string(),
                "the farm goes on with the scenario it plays",
            ),
        })
}

/// The running scenario as written (TOML) and the same document as JSON.
pub(super) async fn scenario(State(api): State<Api>) -> Json<Value> {
    let scenario = api.farm.scenario();
    let text = &*scenario.source_text;
    let as_json = toml::from_str::<Value>(text).unwrap_or(Value::Null);
    Json(json!({
        "name": scenario.name,
        "description": scenario.description,
        "toml": text,
        "json": as_json,
    }))
}

pub(super) async fn hosts(State(api): State<Api>) -> Result<Json<Value>, Problem> {
    let hosts = api.off_the_runtime(|farm| farm.host_status()).await?;
    Ok(Json(json!({
        "hosts": hosts,
        "dns": api.farm.dns_addr(),
    })))
}

pub(super) async fn greylist(State(api): State<Api>) -> Result<Json<Value>, Problem> {
    // Off the runtime: a greylist of a million triplets takes a while to list.
    api.off_the_runtime(|farm| {
        Json(json!({
            "now_ms": millis(farm.now()),
            "entries": farm.greylist(),
            "whitelist": farm.greylist_whitelist(),
        }))
    })
    .await
}

pub(super) async fn forget_greylisted(
    State(api): State<Api>,
    Path(entry): Path<String>,
) -> Result<Json<Value>, Problem> {
    if api.farm.forget_greylisted(&entry) {
        Ok(Json(json!({ "forgotten": entry })))
    } else {
        Err(Problem::not_found_what(
            format!("no greylist holds an entry {entry:?}"),
            "GET /api/v1/greylist lists the entries with their ids; an entry may have expired",
        ))
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::bad_request(
            format!("the request body is not what this path takes: {e}"),
            format!("send JSON like {example} with Content-Type: application/json"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Whitelist {
    client: IpAddr,
}

pub(super) async fn whitelist(
    State(api): State<Api>,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    let Whitelist { client } = body(&bytes, r#"{"client": "192.0.2.1"}"#)?;
    let greylists = api.farm.whitelist(client);
    if greylists == 0 {
        return Err(Problem::unprocessable(
            "the farm has no greylist yet",
            "a greylist exists once a greylist rule has seen its first attempt; \
             whitelist the client after that, or give the rule whitelist-after",
        ));
    }
    Ok(Json(json!({ "client": client, "greylists": greylists })))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) async fn clock(State(api): State<Api>) -> Json<Value> {
    let now = api.farm.now();
    Json(json!({
        "now_ms": millis(now),
        "now": span(now, Granularity::Exact),
        "max_advance_ms": millis(crate::clock::Clock::MAX_OFFSET),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    by: Option<String>,
    by_ms: Option<u64>,
}

pub(super) async fn advance(State(api): State<Api>, bytes: Bytes) -> Result<Json<Value>, Problem> {
    let example = r#"{"by": "5m"} or {"by_ms": 300000}"#;
    let advance: Advance = body(&bytes, example)?;
    let by = match (advance.by, advance.by_ms) {
        (Some(text), None) => duration::parse(&text).map_err(|why| {
            Problem::bad_request(
                format!("by = {text:?}: {why}"),
                "write a duration as scenarios do: \"30s\", \"5m\", \"1h30m\", \"2d\"",
            )
        })?,
        (None, Some(ms)) if Duration::from_millis(ms) <= duration::MAX => Duration::from_millis(ms),
        (None, Some(ms)) => {
            return Err(Problem::bad_request(
                format!("by_ms = {ms} is more than a year"),
                "advance by at most a year (31536000000 ms) at a time",
            ));
        }
        _ => {
            return Err(Problem::bad_request(
                "say how far to advance, once",
                format!("send {example}"),
            ));
        }
    };
    api.farm
        .try_advance(by)
        .map_err(|too_far| Problem::unprocessable(too_far.to_string(), "advance by less"))?;
    let now = api.farm.now();
    Ok(Json(json!({
        "advanced_ms": millis(by),
        "now_ms": millis(now),
        "now": span(now, Granularity::Exact),
    })))
}

pub(super) async fn reset(State(api): State<Api>, bytes: Bytes) -> Result<Json<Value>, Problem> {
    let example = r#"{"policy": true, "journal": true, "messages": true}"#;
    let scope = if bytes.iter().all(u8::is_ascii_whitespace) {
        ResetScope::ALL
    } else {
        body::<ResetScope>(&bytes, example)?
    };
    if scope == ResetScope::default() {
        return Err(Problem::unprocessable(
            "the request resets nothing",
            format!("name what to reset, {example}, or send no body to reset everything"),
        ));
    }
    let seq = api.farm.reset(scope);
    Ok(Json(json!({ "reset": scope, "seq": seq })))
}
