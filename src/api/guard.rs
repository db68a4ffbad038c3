//! Who may do what. Reads are open; every request that changes something (POST, PUT,
//! DELETE) carries the token header, so a page on another origin cannot make one: a
//! browser sends a custom header cross-origin only after a CORS preflight, which the API
//! never allows. With `--api-token`, the header must hold that token; without one (on
//! loopback only), any value will do. The Host header must name the farm as a user
//! would (on loopback: this machine; elsewhere: an address, a name without a dot such as
//! a compose service, a `.localhost`, `.test`, `.internal` or `.local` name, or one
//! given with `--api-allow-host`), so a web page that rebinds its own name to the farm's
//! address cannot read the API either: its Host header names the page's domain.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Api;
use super::problem::Problem;

/// The header that carries the token (or `Authorization: Bearer TOKEN`).
pub(super) const TOKEN_HEADER: &str = "x-mxfarm-token";

pub(super) async fn guard(State(api): State<Api>, request: Request, next: Next) -> Response {
    if let Some(host) = foreign_host(request.headers(), &api) {
        let help = if api.loopback {
            "this API listens on loopback and answers only requests for localhost, \
             127.0.0.1 or [::1]; a page elsewhere cannot use it"
                .to_string()
        } else {
            format!(
                "the API answers requests for an address, a name without a dot (a compose \
                 service), or a .localhost, .test, .internal or .local name; to use {host:?}, \
                 start the farm with --api-allow-host {}",
                host.rsplit_once(':')
                    .map_or(host.as_str(), |(name, _)| name)
            )
        };
        return Problem::forbidden(
            format!("the Host header names {host:?}, not this farm"),
            help,
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
    let address = host.parse::<std::net::IpAddr>().ok();
    let named = api
        .allowed_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&host));
    let ours = if api.loopback {
        host == "localhost"
            || host.ends_with(".localhost")
            || address.is_some_and(|ip| ip.is_loopback() || ip == api.addr.ip())
    } else {
        // A rebinding page's Host is a name in a public domain; an address or a local
        // name is what a user types.
        address.is_some()
            || !host.contains('.')
            || [".localhost", ".test", ".internal", ".local"]
                .iter()
                .any(|suffix| host.ends_with(suffix))
    };
    (!(ours || named)).then(|| text.to_string())
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
