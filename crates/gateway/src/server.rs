//! The gateway's HTTP API: one function builds the app ([`app`]); state is
//! passed as [`GatewayState`], never through globals.
//!
//! * `POST /v1/fetch` — fetch a URL for the agent, paying x402 402s within
//!   the session's caps (see [`crate::wire::FetchRequest`]);
//! * `GET /v1/stats` — counters;
//! * `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

use crate::config::{ConfigError, GatewayConfig};
use crate::error::{Code, GatewayError};
use crate::keys::KeyRing;
use crate::ledger::Ledger;
use crate::pay;
use crate::policy::Guard;
use crate::shared::{Shared, Stats};
use crate::wire::{FetchRequest, FetchResponse, StatsView};

#[derive(Clone)]
pub struct GatewayState(Arc<Shared>);

impl GatewayState {
    /// A state whose upstream guard knows the ledger nodes given by IP
    /// address (use [`Gateway::start`] to also resolve named ones and add
    /// the gateway's own listener).
    pub fn new(config: GatewayConfig, keys: KeyRing) -> Result<(GatewayState, watch::Sender<bool>), StartError> {
        let mut guard = Guard::new(config.upstreams.clone(), &config.limits);
        for url in &config.ledger_urls {
            if let Some(addr) = literal_socket(url) {
                guard.add_own(addr);
            }
        }
        GatewayState::with_guard(config, keys, guard)
    }

    fn with_guard(
        config: GatewayConfig,
        keys: KeyRing,
        guard: Guard,
    ) -> Result<(GatewayState, watch::Sender<bool>), StartError> {
        config.validate()?;
        let ledger = Ledger::new(&config.ledger_urls, &config.limits)?;
        let gateway_ledger = ledger.with_token(config.gateway_token.expose());
        let (abort, aborted) = watch::channel(false);
        let shared = Shared {
            config,
            ledger,
            gateway_ledger,
            guard,
            keys,
            stats: Stats::default(),
            aborted,
        };
        Ok((GatewayState(Arc::new(shared)), abort))
    }

    pub fn stats(&self) -> StatsView {
        self.0.stats.view()
    }
}

/// A ledger URL's socket when its host is an IP address.
fn literal_socket(url: &str) -> Option<SocketAddr> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, parsed.port_or_known_default()?))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Builds the whole API.
pub fn app(state: GatewayState) -> Router {
    let limits = state.0.config.limits.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/fetch", post(fetch))
        .route("/v1/stats", get(stats))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.request_body_bytes_max))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(trace_request))
                .layer(HandleErrorLayer::new(overload_or_timeout))
                .load_shed()
                .concurrency_limit(limits.requests_in_flight_max)
                .timeout(limits.request_timeout),
        )
}

async fn trace_request(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("gateway", method = %req.method(), path = %req.uri().path());
    async move {
        let response = next.run(req).await;
        tracing::debug!(status = response.status().as_u16(), "served");
        response
    }
    .instrument(span)
    .await
}

async fn overload_or_timeout(err: BoxError) -> GatewayError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        GatewayError::new(Code::Overloaded, "too many requests at once; retry")
    } else if err.is::<tower::timeout::error::Elapsed>() {
        GatewayError::new(
            Code::Timeout,
            "the request took longer than the gateway's deadline; a payment in flight goes on; \
             retry with the same idempotency_key to learn how it ended",
        )
    } else {
        GatewayError::new(Code::Internal, err.to_string())
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn stats(State(state): State<GatewayState>) -> Json<StatsView> {
    Json(state.stats())
}

async fn not_found() -> GatewayError {
    GatewayError::new(Code::NotFound, "no such route")
}

async fn method_not_allowed() -> GatewayError {
    GatewayError::new(Code::MethodNotAllowed, "method not allowed")
}

fn bearer(headers: &HeaderMap) -> Result<String, GatewayError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .map(str::to_string)
        .ok_or_else(|| {
            GatewayError::new(
                Code::Unauthorized,
                "a session token is required (Authorization: Bearer sct_...)",
            )
        })
}

fn json_rejection(r: JsonRejection, limit: usize) -> GatewayError {
    match r {
        JsonRejection::MissingJsonContentType(_) => GatewayError::new(
            Code::UnsupportedMediaType,
            "the body must be JSON (Content-Type: application/json)",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            GatewayError::new(Code::BodyTooLarge, format!("the body is larger than {limit} bytes"))
        }
        other => GatewayError::new(Code::InvalidJson, other.body_text()),
    }
}

/// Runs the fetch in its own task: an agent that hangs up (or the request
/// deadline) does not cut a payment off between its steps.
async fn fetch(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Json<FetchRequest>, JsonRejection>,
) -> Result<Json<FetchResponse>, GatewayError> {
    let token = bearer(&headers)?;
    let Json(request) = body.map_err(|r| json_rejection(r, state.0.config.limits.request_body_bytes_max))?;
    let shared = state.0.clone();
    let task = tokio::spawn(async move {
        let mut aborted = shared.aborted.clone();
        let abort = async move {
            if aborted.wait_for(|a| *a).await.is_err() {
                // The handle is gone without aborting: never fires.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            () = abort => Err(GatewayError::new(Code::Internal, "the gateway was stopped")),
            result = pay::fetch(&shared, &token, request) => result,
        }
    });
    match task.await {
        Ok(result) => result.map(Json),
        Err(e) => Err(GatewayError::new(Code::Internal, format!("the fetch task failed: {e}"))),
    }
}

/// Starts and stops a gateway.
pub struct Gateway;

impl Gateway {
    /// Binds `listen` and serves until the handle is shut down or dropped.
    /// The upstream guard refuses the ledger nodes' addresses (names are
    /// resolved now) and the gateway's own.
    pub async fn start(config: GatewayConfig, keys: KeyRing, listen: SocketAddr) -> Result<GatewayHandle, StartError> {
        config.validate()?;
        let mut guard = Guard::new(config.upstreams.clone(), &config.limits);
        for url in &config.ledger_urls {
            guard.add_ledger_url(url).await;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Listen { addr: listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Listen { addr: listen, source })?;
        guard.add_own(addr);
        if config.upstreams.refuses_everything() {
            tracing::warn!(
                "no upstream is allowed (empty allowlist): every fetch will be refused with upstream_not_allowed"
            );
        }
        let (state, abort) = GatewayState::with_guard(config, keys, guard)?;
        let (stop, mut stopped) = watch::channel(false);
        let router = app(state.clone());
        let server = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(signal).await {
                tracing::error!(error = %e, "gateway server stopped with an error");
            }
        });
        tracing::info!(%addr, "x402 gateway listening");
        Ok(GatewayHandle {
            addr,
            state,
            stop,
            abort,
            server: Some(server),
        })
    }
}

/// A running gateway. Dropping it shuts it down gracefully.
pub struct GatewayHandle {
    addr: SocketAddr,
    state: GatewayState,
    stop: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl GatewayHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> StatsView {
        self.state.stats()
    }

    /// Stops accepting requests and lets in-flight fetches finish.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stops at once, abandoning every fetch wherever it is, as a crash
    /// would: a payment between its steps stays as the ledger last saw it
    /// (a pinned hold is then reconciled, never guessed).
    pub fn abort(mut self) {
        self.abort.send_replace(true);
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
