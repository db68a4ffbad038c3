//! The captured messages over HTTP: the list, one with its headers and the attempt that
//! delivered it, its raw bytes (message/rfc822), and clearing them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Api;
use super::problem::Problem;
use crate::capture::Message;
use crate::farm::ResetScope;

pub(super) async fn list(State(api): State<Api>) -> Result<Json<Vec<Message>>, Problem> {
    // Off the runtime: a thousand kept messages take a while to copy.
    api.off_the_runtime(|farm| Json(farm.messages())).await
}

/// One message as `GET /messages/{id}` gives it.
#[derive(Debug, Serialize)]
pub(super) struct Detail {
    #[serde(flatten)]
    message: Message,
    /// Its header fields in order, unfolded, as sent.
    headers: Vec<(String, String)>,
    /// Per recipient, the delivery attempt that handed this message over.
    delivered: Vec<Delivered>,
}

#[derive(Debug, Serialize)]
struct Delivered {
    recipient: Option<String>,
    /// The attempt's number in its delivery's story, from 1.
    attempt: usize,
    /// Of how many attempts so far.
    attempts: usize,
    host: String,
    conn: u64,
    #[serde(rename = "ms", serialize_with = "crate::millis::serialize")]
    at: std::time::Duration,
}

fn id_of(text: &str) -> Result<u64, Problem> {
    text.parse().map_err(|_| {
        Problem::bad_request(
            format!("{text:?} is not a message number"),
            "messages are numbered from 1, as in the `queued as N` reply; GET /api/v1/messages lists them",
        )
    })
}

fn find(api: &Api, id: &str) -> Result<Message, Problem> {
    let id = id_of(id)?;
    api.farm.message(id).ok_or_else(|| {
        Problem::not_found_what(
            format!("the farm keeps no message {id}"),
            "it may never have been accepted, or was dropped to stay within [capture] limits, \
             or cleared; GET /api/v1/messages lists those kept",
        )
    })
}

pub(super) async fn one(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Detail>, Problem> {
    let message = find(&api, &id)?;
    let deliveries = api.off_the_runtime(|farm| farm.deliveries()).await?;
    let delivered = deliveries
        .list
        .iter()
        .filter_map(|d| {
            let at = d.attempts.iter().position(|a| a.kept == Some(message.id))?;
            let attempt = &d.attempts[at];
            Some(Delivered {
                recipient: d.recipient.clone(),
                attempt: at + 1,
                attempts: d.attempts.len(),
                host: attempt.host.clone(),
                conn: attempt.conn,
                at: attempt.at,
            })
        })
        .collect();
    Ok(Json(Detail {
        headers: headers(&message.data),
        delivered,
        message,
    }))
}

pub(super) async fn raw(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let message = find(&api, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "message/rfc822")],
        axum::body::Bytes::copy_from_slice(&message.data),
    )
        .into_response())
}

pub(super) async fn clear(State(api): State<Api>) -> Json<serde_json::Value> {
    let before = api.farm.messages().len();
    let seq = api.farm.reset(ResetScope {
        messages: true,
        ..ResetScope::default()
    });
    Json(serde_json::json!({ "cleared": before, "seq": seq }))
}

/// The header fields of a raw message, unfolded; the header ends at the first empty line.
fn headers(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => fields.push((name.to_string(), value.trim().to_string())),
            // Not a header field: the header is over (a message without one).
            None => break,
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::headers;

    #[test]
    fn headers_are_unfolded_and_end_at_the_empty_line() {
        let raw = b"Subject: a\r\n long one\r\nFrom: x@y.test\r\n\r\nBody: no\r\n";
        assert_eq!(
            headers(raw),
            vec![
                ("Subject".to_string(), "a long one".to_string()),
                ("From".to_string(), "x@y.test".to_string())
            ]
        );
        assert!(headers(b"no header here\r\n").is_empty());
    }
}
