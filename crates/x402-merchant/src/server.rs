//! The merchant's start and stop ([`Merchant`], [`MerchantHandle`]) and its
//! router; the handlers are in `handlers`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use x402::exact_evm::EXACT_SCHEME;
use x402::PaymentRequirements;

use crate::config::{FailureMode, MerchantClock, MerchantConfig};
use crate::handlers::{facilitator_settle, facilitator_supported, facilitator_verify, paid};
use crate::protocol::FACILITATOR_PREFIX;
use crate::shared::{lock, Ledger, Shared};
use crate::state::{MerchantStats, SettledPayment};

/// Why the merchant could not start.
#[derive(Debug, Error)]
pub enum MerchantError {
    #[error("invalid merchant config: {0}")]
    InvalidConfig(String),
    #[error("cannot bind 127.0.0.1:0: {0}")]
    Bind(#[source] std::io::Error),
}

/// Entry point.
pub struct Merchant;

impl Merchant {
    /// Validates `config`, binds 127.0.0.1 on an ephemeral port and serves until the handle
    /// is shut down or dropped.
    pub async fn start(config: MerchantConfig) -> Result<MerchantHandle, MerchantError> {
        validate(&config)?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(MerchantError::Bind)?;
        let addr = listener.local_addr().map_err(MerchantError::Bind)?;
        let base_url = format!("http://{addr}");
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (stats, _) = watch::channel(MerchantStats::default());
        let shared = Arc::new(Shared {
            failure: Mutex::new(config.failure.clone()),
            config,
            base_url: base_url.clone(),
            ledger: Mutex::new(Ledger::default()),
            stats,
            shutdown: shutdown_rx.clone(),
        });
        let app = router(shared.clone());
        let mut signal = shutdown_rx;
        let server = tokio::spawn(async move {
            let shutdown = async move {
                // Err means the sender is gone, which also means stop.
                let _ = signal.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(%error, "x402 merchant server stopped with an error");
            }
        });
        tracing::info!(%addr, "x402 merchant listening");
        Ok(MerchantHandle {
            base_url,
            addr,
            shared,
            shutdown_tx,
            server: Some(server),
        })
    }
}

fn validate(config: &MerchantConfig) -> Result<(), MerchantError> {
    let invalid = |msg: String| Err(MerchantError::InvalidConfig(msg));
    if config.routes.is_empty() {
        return invalid("no routes".into());
    }
    if config.max_timeout_seconds == 0 {
        return invalid("max_timeout_seconds must be > 0".into());
    }
    if config.settled_payments_max == 0 {
        return invalid("settled_payments_max must be > 0".into());
    }
    let mut seen = HashSet::new();
    for route in &config.routes {
        let path = route.path.as_str();
        if !path.starts_with('/') {
            return invalid(format!("route path {path:?} must start with '/'"));
        }
        if path.contains(['{', '}', '*', ':']) {
            return invalid(format!("route path {path:?} must be literal (no '{{', '}}', '*', ':')"));
        }
        if path.starts_with(FACILITATOR_PREFIX) {
            return invalid(format!("route path {path:?} collides with the facilitator endpoints"));
        }
        if !seen.insert(path) {
            return invalid(format!("route path {path:?} is configured twice"));
        }
    }
    Ok(())
}

/// A running merchant. Dropping it stops the server (requests held by a hang switch are
/// released with 503).
pub struct MerchantHandle {
    base_url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MerchantHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl MerchantHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL joined with `path` (which should start with '/').
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> MerchantStats {
        self.shared.stats.borrow().clone()
    }

    /// Waits until the counters satisfy `condition` and returns that snapshot. Wrap in
    /// `tokio::time::timeout` in tests.
    pub async fn wait_for_stats(&self, mut condition: impl FnMut(&MerchantStats) -> bool) -> MerchantStats {
        let mut rx = self.shared.stats.subscribe();
        let snapshot = match rx.wait_for(|s| condition(s)).await {
            Ok(snapshot) => snapshot.clone(),
            // The sender lives in `shared`, which `self` keeps alive; kept for totality.
            Err(_) => self.stats(),
        };
        snapshot
    }

    /// Settled payments, oldest first.
    pub fn settled(&self) -> Vec<SettledPayment> {
        self.shared.ledger().settled.clone()
    }

    /// Changes the failure switch for subsequent requests.
    pub fn set_failure(&self, mode: FailureMode) {
        *lock(&self.shared.failure) = mode;
    }

    /// The merchant's clock (a manual clock can be moved from here).
    pub fn clock(&self) -> &MerchantClock {
        &self.shared.config.clock
    }

    /// The requirement the merchant offers on `path` in normal mode.
    pub fn requirements(&self, path: &str) -> Option<PaymentRequirements> {
        let route = self.shared.config.routes.iter().find(|r| r.path == path)?;
        Some(self.shared.requirements(route, EXACT_SCHEME))
    }

    /// Stops accepting connections, releases hung requests and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(server) = self.server.take() {
            if let Err(error) = server.await {
                tracing::warn!(%error, "x402 merchant server task failed");
            }
        }
    }
}

impl Drop for MerchantHandle {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for (index, route) in shared.config.routes.iter().enumerate() {
        let shared = shared.clone();
        router = router.route(
            &route.path,
            get(move |headers: HeaderMap| {
                let shared = shared.clone();
                async move { paid(shared, index, headers).await }
            }),
        );
    }
    let verify_state = shared.clone();
    let settle_state = shared.clone();
    let supported_state = shared.clone();
    router
        .route(
            &format!("{FACILITATOR_PREFIX}/verify"),
            post(move |body: Bytes| {
                let shared = verify_state.clone();
                async move { facilitator_verify(&shared, &body) }
            }),
        )
        .route(
            &format!("{FACILITATOR_PREFIX}/settle"),
            post(move |body: Bytes| {
                let shared = settle_state.clone();
                async move { facilitator_settle(&shared, &body) }
            }),
        )
        .route(
            &format!("{FACILITATOR_PREFIX}/supported"),
            get(move || {
                let shared = supported_state.clone();
                async move { facilitator_supported(&shared) }
            }),
        )
        .layer(DefaultBodyLimit::max(shared.config.request_body_bytes_max))
}
