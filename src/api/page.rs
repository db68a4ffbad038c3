//! The web page: one row per delivery, each attempt a mark on a shared time axis, live
//! from `/api/v1/events`. Everything it needs ships in the binary (`include_str!`): no
//! CDN, no build step, so it works offline and a page of one version never talks to an
//! API of another.
//!
//! The page only reads the API (GETs); its Content-Security-Policy lets it load and fetch
//! from this origin alone, so even a bug in it cannot reach another host.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Scripts, styles, fetches and the event stream from this origin only; inline styles
/// are allowed because the rows are positioned with a `style` attribute. No framing.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'none'";

/// One of the page's files, with its type. `no-cache`: a browser asks again (cheaply)
/// after the farm's binary changed, instead of running an old script against a new API.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", include_str!("page/index.html"))
}

/// The page's script, written in three files (what marks mean and how times read; the
/// rows and details as text; state, loading and interaction) and served as one.
const SCRIPT: &str = concat!(
    include_str!("page/format.js"),
    "\n",
    include_str!("page/draw.js"),
    "\n",
    include_str!("page/timeline.js"),
);

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("page/timeline.css"))
}
