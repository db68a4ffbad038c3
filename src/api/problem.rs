//! Errors as the API gives them: a status, and JSON that says what went wrong and what
//! to do (`{"error": "...", "help": "..."}`), like the command line's errors.

use axum::Json;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One error response.
#[derive(Debug, Serialize)]
pub(super) struct Problem {
    #[serde(skip)]
    status: StatusCode,
    error: String,
    help: String,
    /// More about it: the scenario's problems for a 422, say.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    pub(super) fn new(
        status: StatusCode,
        error: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error: error.into(),
            help: help.into(),
            details: None,
            retry_after: None,
        }
    }

    pub(super) fn bad_request(error: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, help)
    }

    pub(super) fn not_found_what(error: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, help)
    }

    pub(super) fn unauthorized(error: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error, help)
    }

    pub(super) fn forbidden(error: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error, help)
    }

    pub(super) fn unprocessable(error: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error, help)
    }

    /// 503 with a `Retry-After` of `seconds`.
    pub(super) fn unavailable(
        error: impl Into<String>,
        help: impl Into<String>,
        seconds: u64,
    ) -> Self {
        let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE, error, help);
        problem.retry_after = Some(seconds);
        problem
    }
}

impl Problem {
    /// With more about it, as `details`.
    pub(super) fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        if let Some(seconds) = retry_after
            && let Ok(value) = seconds.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// What the API answers for a path it does not have.
pub(super) async fn not_found(uri: Uri) -> Problem {
    Problem::not_found_what(
        format!("no such path: {}", uri.path()),
        "the API's paths are under /api/v1 (see /api/v1/openapi.json); the timeline is at /",
    )
}
