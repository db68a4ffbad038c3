//! Who may do what. Reads are open; every request that changes something (POST, PUT,
//! DELETE) carries the token header, so a page on another origin cannot make one: a
//! browser sends a custom header cross-origin only after a CORS preflight, which the API
//! never allows. With `--api-token`, the header must hold that token; without one (on
//! loopback only), any value will do. On loopback, the Host header must name this
//! machine, so a page that rebinds its own name to 127.0.0.1 cannot read the API either.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Api;
use super::problem::Problem;

/// The header that carries the token (or `Authorization: Bearer TOKEN`).
pub(super) const TOKEN_HEADER: &str = "x-mxfarm-token";

pub(super) async fn guard(State(api): State<Api>, request: Request, next: Next) -> Response {
    if api.loopback
        && let Some(host) = foreign_host(request.headers(), &api)
    {
        return Problem::forbidden(
            format!("the Host header names {host:?}, not this machine"),
            "this API listens on loopback and answers only requests for localhost, \
             127.0.0.1 or [::1]; a page elsewhere cannot use it",
        )
        .into_response();
    }
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes && let Err(problem) = authorised(request.headers(), &api) {
        return problem.into_response();
    }
    next.run(request).await
}

/// The token the request carries, from either header.
fn carried(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(TOKEN_HEADER) {
        return value.to_str().ok();
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

fn authorised(headers: &HeaderMap, api: &Api) -> Result<(), Problem> {
    let Some(carried) = carried(headers) else {
        let help = match api.token {
            Some(_) => format!(
                "send the farm's token in an {TOKEN_HEADER} header (or Authorization: Bearer TOKEN)"
            ),
            None => format!(
                "send an {TOKEN_HEADER} header with any value (this farm has no token): \
                 e.g. curl -H '{TOKEN_HEADER}: 1' -X POST ...; `mxfarm ctl` does it for you"
            ),
        };
        return Err(Problem::unauthorized(
            "a request that changes something needs the token header",
            help,
        ));
    };
    match &api.token {
        Some(token) if !same(carried.as_bytes(), token.as_bytes()) => Err(Problem::unauthorized(
            "the token is not this farm's",
            "use the token given with --api-token (or MXFARM_API_TOKEN)",
        )),
        _ => Ok(()),
    }
}

/// Compares in time that depends only on the lengths, so the token cannot be guessed
/// byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Host header's host, when it names something other than this machine.
fn foreign_host(headers: &HeaderMap, api: &Api) -> Option<String> {
    let value = headers.get(header::HOST)?;
    let Ok(text) = value.to_str() else {
        return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
    };
    let host = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => text.rsplit_once(':').map_or(text, |(host, _)| host),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let local = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip == api.addr.ip());
    (!local).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
