//! The control plane of a running farm over HTTP: the journal (paged, and live as
//! Server-Sent Events), the views of it, the captured messages, the greylists, the
//! clock, resets, health and metrics, and a web page with the timeline of every
//! delivery. `mxfarm run --api ADDR` serves it; a Rust test starts it with
//! [`ApiServer::start`] beside its farm.
//!
//! Everything here goes through the public [`Farm`] API, over a shared handle: the API
//! can do nothing a Rust test cannot. Every route is listed once in [`ROUTES`], which the
//! router is built from and which a test checks against the OpenAPI document the farm
//! serves (`GET /api/v1/openapi.json`).
//!
//! - `guard`: who may do what (a token for changes, the Host header on loopback).
//! - `problem`: errors as JSON with a hint.
//! - `journal`: `/journal` pages and the `/events` stream.
//! - `views`: deliveries, transcript, report.
//! - `messages`, `control` (greylist, clock, reset, hosts, scenario), `health`
//!   (livez, readyz, metrics).

mod control;
mod guard;
mod health;

pub use health::OPENAPI;
pub use listener::MAX_CONNECTIONS;
mod journal;
mod listener;
mod messages;
mod metrics;
mod page;
mod problem;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post, put};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::farm::Farm;

/// Where the API listens and who may change things.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `127.0.0.1:8025` by default (`--api` without a value).
    pub addr: SocketAddr,
    /// The token every request that changes something must carry
    /// (`Authorization: Bearer TOKEN` or `X-Mxfarm-Token: TOKEN`). Required when `addr`
    /// is not a loopback address.
    pub token: Option<String>,
    /// How many `/events` streams may be open at once.
    pub max_subscribers: usize,
    /// Names the Host header may give besides those the API takes anyway
    /// (`--api-allow-host`): see the README's "Who may do what".
    pub allowed_hosts: Vec<String>,
}

impl ApiOptions {
    /// The default address, as `mxfarm run --api` uses it.
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8025);

    /// The API on `addr`, without a token (loopback only).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            token: None,
            max_subscribers: 64,
            allowed_hosts: Vec::new(),
        }
    }

    /// On `127.0.0.1` with a port the system picks, as tests want.
    pub fn ephemeral() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Requests that change something must carry `token`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// The largest request body taken: a scenario (4 MiB at most) with room for its JSON
/// wrapping.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the API cannot listen on {addr}: {source}\n  help: another program may use that port; pick another with --api 127.0.0.1:PORT"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the API on {addr} would be reachable from other machines without a token\n  help: give one with --api-token TOKEN (or MXFARM_API_TOKEN), or listen on loopback: --api 127.0.0.1:8025"
    )]
    NoToken { addr: SocketAddr },
    #[error(
        "the API token is empty\n  help: give a token of at least one character, e.g. --api-token \"$(openssl rand -hex 16)\""
    )]
    EmptyToken,
}

/// What every handler gets: the farm and the API's own state.
#[derive(Clone)]
struct Api {
    farm: Arc<Farm>,
    token: Option<Arc<str>>,
    /// Permits for `/events` streams.
    subscribers: Arc<Semaphore>,
    max_subscribers: usize,
    metrics: Arc<metrics::Metrics>,
    /// Cancelled when the API stops: open event streams end.
    stopping: CancellationToken,
    /// Whether the API listens on loopback: then only local Host headers are taken.
    loopback: bool,
    allowed_hosts: Arc<[String]>,
    addr: SocketAddr,
}

impl Api {
    /// Runs `view` on tokio's blocking pool: a view over a journal of many events takes a
    /// while, and SMTP sessions must not wait for it.
    async fn off_the_runtime<T: Send + 'static>(
        &self,
        view: impl FnOnce(&Farm) -> T + Send + 'static,
    ) -> Result<T, problem::Problem> {
        let farm = self.farm.clone();
        tokio::task::spawn_blocking(move || view(&farm))
            .await
            .map_err(|e| {
                problem::Problem::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the view failed: {e}"),
                    "this is a bug in mxfarm: please report it with the journal",
                )
            })
    }
}

/// A route: its method, its path (as the OpenAPI document writes it) and whether it
/// changes something (then it needs the token).
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub changes: bool,
}

macro_rules! routes {
    ($($method:literal $path:literal $changes:literal => $handler:expr;)*) => {
        /// Every route of the API, in the order the OpenAPI document lists them.
        pub const ROUTES: &[Route] = &[$(Route { method: $method, path: $path, changes: $changes },)*];

        fn router(api: Api) -> Router {
            let mut router = Router::new();
            $( router = router.route($path, method_router($method, $handler)); )*
            router
                .fallback(problem::not_found)
                .layer(axum::middleware::from_fn_with_state(api.clone(), guard::guard))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .with_state(api)
        }
    };
}

routes! {
    "GET" "/" false => get(page::index);
    "GET" "/timeline.js" false => get(page::script);
    "GET" "/timeline.css" false => get(page::style);
    "GET" "/api/v1/openapi.json" false => get(health::openapi);
    "GET" "/livez" false => get(health::livez);
    "GET" "/readyz" false => get(health::readyz);
    "GET" "/metrics" false => get(health::metrics);
    "GET" "/api/v1/scenario" false => get(control::scenario);
    "PUT" "/api/v1/scenario" true => put(control::replace_scenario);
    "GET" "/api/v1/hosts" false => get(control::hosts);
    "GET" "/api/v1/journal" false => get(journal::page);
    "GET" "/api/v1/events" false => get(journal::events);
    "GET" "/api/v1/deliveries" false => get(views::deliveries);
    "GET" "/api/v1/transcript" false => get(views::transcript);
    "GET" "/api/v1/report" false => get(views::report);
    "GET" "/api/v1/messages" false => get(messages::list);
    "DELETE" "/api/v1/messages" true => delete(messages::clear);
    "GET" "/api/v1/messages/{id}" false => get(messages::one);
    "GET" "/api/v1/messages/{id}/raw" false => get(messages::raw);
    "GET" "/api/v1/greylist" false => get(control::greylist);
    "DELETE" "/api/v1/greylist/{entry}" true => delete(control::forget_greylisted);
    "POST" "/api/v1/greylist/whitelist" true => post(control::whitelist);
    "GET" "/api/v1/clock" false => get(control::clock);
    "POST" "/api/v1/clock/advance" true => post(control::advance);
    "POST" "/api/v1/reset" true => post(control::reset);
}

/// The method router for one route; the method is named twice in the table (as text
/// for the document, as the router's function) and this checks that they agree.
fn method_router(method: &str, router: MethodRouter<Api>) -> MethodRouter<Api> {
    debug_assert!(["GET", "POST", "PUT", "DELETE"].contains(&method));
    router
}

/// The running API. Stop it with [`ApiServer::shutdown`]; dropping it stops it too,
/// without waiting.
pub struct ApiServer {
    addr: SocketAddr,
    stopping: CancellationToken,
    tasks: TaskTracker,
    /// The HTTP server itself, ended by force when its connections do not end in time.
    serving: tokio::task::JoinHandle<()>,
}

/// How long [`ApiServer::shutdown`] waits for open requests and streams to end: an event
/// stream whose client stopped reading never learns that the API stops.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Binds the API for `farm` and serves it until [`ApiServer::shutdown`]. The API
    /// holds its own handle on the farm: it goes on answering (reads) after the farm
    /// shut down, until it is stopped itself.
    pub async fn start(farm: &Farm, options: ApiOptions) -> Result<ApiServer, ApiError> {
        let loopback = options.addr.ip().is_loopback();
        let token = match options.token {
            Some(token) if token.is_empty() => return Err(ApiError::EmptyToken),
            Some(token) => Some(Arc::from(token)),
            None if !loopback => return Err(ApiError::NoToken { addr: options.addr }),
            None => None,
        };
        let listener = TcpListener::bind(options.addr)
            .await
            .and_then(|l| l.local_addr().map(|addr| (l, addr)))
            .map_err(|source| ApiError::Bind {
                addr: options.addr,
                source,
            });
        let (listener, addr) = listener?;
        let farm = Arc::new(farm.share());
        let stopping = CancellationToken::new();
        let tasks = TaskTracker::new();
        let metrics = Arc::new(metrics::Metrics::new(&farm));
        tasks.spawn(metrics::follow(
            metrics.clone(),
            farm.events_after(0),
            stopping.clone(),
        ));
        let api = Api {
            farm,
            token,
            subscribers: Arc::new(Semaphore::new(options.max_subscribers)),
            max_subscribers: options.max_subscribers,
            metrics,
            stopping: stopping.clone(),
            loopback,
            allowed_hosts: options.allowed_hosts.into(),
            addr,
        };
        let app = router(api);
        let stop = stopping.clone();
        let serving = tokio::spawn(async move {
            let served = axum::serve(listener::Capped::new(listener), app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the API stopped");
            }
        });
        tasks.close();
        Ok(ApiServer {
            addr,
            stopping,
            tasks,
            serving,
        })
    }

    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the API, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends every event stream, and waits until open requests are done,
    /// for [`SHUTDOWN_GRACE`] at most: then what is left is cut off.
    pub async fn shutdown(mut self) {
        self.stopping.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.serving)
            .await
            .is_err()
        {
            self.serving.abort();
        }
        self.tasks.wait().await;
    }
}

impl Drop for ApiServer {
    /// Stops accepting and ends every event stream; what is left is cut off.
    fn drop(&mut self) {
        self.stopping.cancel();
        self.serving.abort();
    }
}
