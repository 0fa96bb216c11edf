//! The axum server: paid routes and facilitator endpoints.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy_primitives::{keccak256, Address, B256};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use x402::codec::X402Message;
use x402::exact_evm::EXACT_SCHEME;
use x402::{
    headers, verify, ErrorReason, FacilitatorRequest, PaymentPayload, PaymentPayloadV1, PaymentPayloadV2,
    PaymentRequiredV1, PaymentRequiredV2, PaymentRequirements, PaymentRequirementsV1, PaymentRequirementsV2,
    ResourceInfo, SettlementResponse, SupportedKind, SupportedResponse, VerifiedPayment, VerifyResponse, X402Version,
};

use crate::config::{FailureMode, MerchantClock, MerchantConfig, RouteConfig};
use crate::state::{MerchantStats, SettledPayment};
use crate::{FACILITATOR_PREFIX, NONCE_REUSED_REASON};

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

#[derive(Default)]
struct Ledger {
    /// (payer, nonce) pairs consumed by settlement, as EIP-3009 tracks them.
    used_nonces: HashSet<(Address, B256)>,
    settled: Vec<SettledPayment>,
}

struct Shared {
    config: MerchantConfig,
    base_url: String,
    failure: Mutex<FailureMode>,
    ledger: Mutex<Ledger>,
    stats: watch::Sender<MerchantStats>,
    shutdown: watch::Receiver<bool>,
}

/// Locks a mutex, tolerating poisoning: every critical section here leaves the data
/// consistent (single inserts/pushes), so a panic elsewhere cannot corrupt it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum SettleOutcome {
    Settled(SettledPayment),
    NonceReused,
    Failed(String),
    LedgerFull,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    fn failure(&self) -> FailureMode {
        lock(&self.failure).clone()
    }

    fn bump(&self, update: impl FnOnce(&mut MerchantStats)) {
        self.stats.send_modify(update);
    }

    fn reject(&self, reason: &str) {
        self.bump(|s| {
            s.payments_rejected += 1;
            s.last_error_reason = Some(reason.to_owned());
        });
    }

    fn now(&self) -> u64 {
        self.config.clock.now_unix_secs()
    }

    fn extra(&self) -> serde_json::Value {
        json!({
            "name": self.config.asset_domain_name,
            "version": self.config.asset_domain_version,
        })
    }

    fn requirement_v1(&self, route: &RouteConfig, scheme: &str) -> PaymentRequirementsV1 {
        PaymentRequirementsV1 {
            scheme: scheme.to_owned(),
            network: self.config.network.v1_name().to_owned(),
            max_amount_required: route.price_atomic,
            resource: format!("{}{}", self.base_url, route.path),
            description: route.description.clone(),
            mime_type: Some("application/json".into()),
            output_schema: None,
            pay_to: self.config.pay_to.to_checksum(None),
            max_timeout_seconds: self.config.max_timeout_seconds,
            asset: self.config.asset.to_checksum(None),
            extra: Some(self.extra()),
            unknown_fields: Default::default(),
        }
    }

    fn requirement_v2(&self, route: &RouteConfig, scheme: &str) -> PaymentRequirementsV2 {
        PaymentRequirementsV2 {
            scheme: scheme.to_owned(),
            network: self.config.network.caip2().to_owned(),
            amount: route.price_atomic,
            asset: self.config.asset.to_checksum(None),
            pay_to: self.config.pay_to.to_checksum(None),
            max_timeout_seconds: self.config.max_timeout_seconds,
            extra: Some(self.extra()),
            unknown_fields: Default::default(),
        }
    }

    fn requirements(&self, route: &RouteConfig, scheme: &str) -> PaymentRequirements {
        match route.version {
            X402Version::V1 => PaymentRequirements::V1(self.requirement_v1(route, scheme)),
            X402Version::V2 => PaymentRequirements::V2(self.requirement_v2(route, scheme)),
        }
    }

    fn resource_info(&self, route: &RouteConfig) -> ResourceInfo {
        ResourceInfo {
            url: format!("{}{}", self.base_url, route.path),
            description: Some(route.description.clone()),
            mime_type: Some("application/json".into()),
            unknown_fields: Default::default(),
        }
    }

    /// Consumes the nonce and records the settlement, atomically with the reuse check.
    fn settle(&self, route: &str, verified: &VerifiedPayment, failure: &FailureMode) -> SettleOutcome {
        let outcome = {
            let mut ledger = self.ledger();
            let key = (verified.payer, verified.nonce);
            if ledger.used_nonces.contains(&key) {
                SettleOutcome::NonceReused
            } else if let FailureMode::SettlementFails { error_reason } = failure {
                SettleOutcome::Failed(error_reason.clone())
            } else if ledger.settled.len() >= self.config.settled_payments_max {
                SettleOutcome::LedgerFull
            } else {
                let record = SettledPayment {
                    route: route.to_owned(),
                    version: verified.version,
                    payer: verified.payer,
                    pay_to: verified.pay_to,
                    value: verified.value,
                    nonce: verified.nonce,
                    valid_before: verified.valid_before,
                    transaction: keccak256(verified.signature.as_bytes()),
                };
                ledger.used_nonces.insert(key);
                ledger.settled.push(record.clone());
                SettleOutcome::Settled(record)
            }
        };
        match &outcome {
            SettleOutcome::Settled(record) => {
                tracing::info!(payer = %record.payer, value = record.value, tx = %record.transaction, route, "x402 merchant settled");
                self.bump(|s| s.settlements_succeeded += 1);
            }
            SettleOutcome::NonceReused => self.reject(NONCE_REUSED_REASON),
            SettleOutcome::Failed(reason) => self.bump(|s| {
                s.settlements_failed += 1;
                s.last_error_reason = Some(reason.clone());
            }),
            SettleOutcome::LedgerFull => self.bump(|s| {
                s.settlements_failed += 1;
                s.last_error_reason = Some(ErrorReason::UnexpectedSettleError.as_str().into());
            }),
        }
        outcome
    }

    /// Holds the request until shutdown.
    async fn hang(&self) -> Response {
        self.bump(|s| s.requests_hung += 1);
        let mut shutdown = self.shutdown.clone();
        // Err means the handle is gone: stop hanging either way.
        let _ = shutdown.wait_for(|stop| *stop).await;
        StatusCode::SERVICE_UNAVAILABLE.into_response()
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

/// Builds a JSON response with extra headers; 500 if a header cannot be represented (only
/// possible for a bug, since values are base64).
fn respond(status: StatusCode, extra_headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let map = response.headers_mut();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in extra_headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            (Ok(name), Ok(value)) => {
                map.insert(name, value);
            }
            _ => {
                tracing::error!(name, "x402 merchant built an unrepresentable header");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    response
}

fn json_body(value: &impl serde::Serialize) -> Vec<u8> {
    // Serializing our own types and `Value`s cannot fail (string keys only); an empty
    // body is the harmless fallback.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Encodes a header value; a failure is a bug (our own types always serialize), answered 500.
fn encode_header_or_500<T: X402Message>(message: &T) -> Result<String, StatusCode> {
    message.to_header().map_err(|error| {
        tracing::error!(%error, "x402 merchant cannot encode a header");
        StatusCode::INTERNAL_SERVER_ERROR
    })
}

/// 402 with the route's requirements; `error` is the human/reason text, and `settlement`
/// an optional failure settlement header.
fn payment_required(
    shared: &Shared,
    route: &RouteConfig,
    scheme: &str,
    error: String,
    settlement: Option<SettlementResponse>,
) -> Response {
    shared.bump(|s| s.payment_required_served += 1);
    let mut extra_headers = Vec::new();
    if let Some(settlement) = settlement {
        match encode_header_or_500(&settlement) {
            Ok(value) => extra_headers.push((headers::settlement_header(route.version), value)),
            Err(status) => return status.into_response(),
        }
    }
    match route.version {
        X402Version::V1 => {
            let body = PaymentRequiredV1 {
                x402_version: X402Version::V1,
                error: Some(error),
                accepts: vec![shared.requirement_v1(route, scheme)],
            };
            respond(StatusCode::PAYMENT_REQUIRED, extra_headers, json_body(&body))
        }
        X402Version::V2 => {
            let required = PaymentRequiredV2 {
                x402_version: X402Version::V2,
                error: Some(error),
                resource: shared.resource_info(route),
                accepts: vec![shared.requirement_v2(route, scheme)],
                extensions: None,
            };
            match encode_header_or_500(&required) {
                Ok(value) => extra_headers.push((headers::PAYMENT_REQUIRED, value)),
                Err(status) => return status.into_response(),
            }
            respond(StatusCode::PAYMENT_REQUIRED, extra_headers, b"{}".to_vec())
        }
    }
}

fn malformed_payment_required(shared: &Shared, route: &RouteConfig) -> Response {
    shared.bump(|s| s.payment_required_served += 1);
    match route.version {
        X402Version::V1 => {
            let body = json!({
                "x402Version": 1,
                "error": "X-PAYMENT header is required",
                "accepts": [{
                    "scheme": "exact",
                    "network": shared.config.network.v1_name(),
                    "maxAmountRequired": format!("-{}", route.price_atomic),
                    "resource": format!("{}{}", shared.base_url, route.path),
                    "description": route.description,
                    "maxTimeoutSeconds": shared.config.max_timeout_seconds,
                }],
            });
            respond(StatusCode::PAYMENT_REQUIRED, Vec::new(), json_body(&body))
        }
        X402Version::V2 => respond(
            StatusCode::PAYMENT_REQUIRED,
            vec![(headers::PAYMENT_REQUIRED, "%%% not base64 %%%".to_owned())],
            b"{}".to_vec(),
        ),
    }
}

fn bad_request(shared: &Shared, message: String) -> Response {
    let reason = ErrorReason::InvalidPayload.as_str();
    shared.reject(reason);
    respond(
        StatusCode::BAD_REQUEST,
        Vec::new(),
        json_body(&json!({ "error": reason, "message": message })),
    )
}

async fn paid(shared: Arc<Shared>, index: usize, request_headers: HeaderMap) -> Response {
    let Some(route) = shared.config.routes.get(index) else {
        // The router only registers indexes of configured routes.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let failure = shared.failure();
    let scheme = match &failure {
        FailureMode::UnknownScheme { scheme } => scheme.as_str(),
        _ => EXACT_SCHEME,
    };
    let header_name = headers::payment_header(route.version);
    let Some(raw) = request_headers.get(header_name) else {
        if failure == FailureMode::InvalidRequirements {
            return malformed_payment_required(&shared, route);
        }
        let error = format!("{header_name} header is required");
        return payment_required(&shared, route, scheme, error, None);
    };
    shared.bump(|s| s.payment_attempts += 1);
    if failure == FailureMode::InvalidRequirements {
        return malformed_payment_required(&shared, route);
    }
    let Ok(raw) = raw.to_str() else {
        return bad_request(&shared, format!("{header_name} is not visible ASCII"));
    };
    let decoded = match route.version {
        X402Version::V1 => PaymentPayloadV1::from_header(raw).map(PaymentPayload::V1),
        X402Version::V2 => PaymentPayloadV2::from_header(raw).map(PaymentPayload::V2),
    };
    let payload = match decoded {
        Ok(payload) => payload,
        Err(error) => return bad_request(&shared, format!("{header_name}: {error}")),
    };
    if failure == FailureMode::HangBeforeSettle {
        return shared.hang().await;
    }
    let requirements = shared.requirements(route, scheme);
    let verified = match verify(&payload, &requirements, shared.now()) {
        Ok(verified) => verified,
        Err(error) => {
            let reason = error.reason().as_str();
            tracing::info!(%error, reason, route = %route.path, "x402 merchant rejected a payment");
            shared.reject(reason);
            return payment_required(&shared, route, scheme, reason.to_owned(), None);
        }
    };
    if let FailureMode::AnswerAfterPayment { status, settle } = failure {
        let settled = settle
            && matches!(
                shared.settle(&route.path, &verified, &FailureMode::None),
                SettleOutcome::Settled(_)
            );
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        tracing::info!(%status, settled, route = %route.path, "x402 merchant answers without a settlement header");
        return respond(
            status,
            Vec::new(),
            json_body(&json!({ "error": "payment_not_accepted", "message": "try again later" })),
        );
    }
    let network = shared.config.network.wire_name(route.version).to_owned();
    match shared.settle(&route.path, &verified, &failure) {
        SettleOutcome::Settled(record) => {
            if failure == FailureMode::HangAfterSettle {
                return shared.hang().await;
            }
            let settlement = SettlementResponse {
                success: true,
                error_reason: None,
                transaction: record.transaction.to_string(),
                network,
                payer: Some(record.payer.to_checksum(None)),
                amount: match route.version {
                    X402Version::V1 => None,
                    X402Version::V2 => Some(record.value),
                },
                extensions: None,
            };
            match encode_header_or_500(&settlement) {
                Ok(value) => respond(
                    StatusCode::OK,
                    vec![(headers::settlement_header(route.version), value)],
                    json_body(&route.body),
                ),
                Err(status) => status.into_response(),
            }
        }
        SettleOutcome::NonceReused => payment_required(&shared, route, scheme, NONCE_REUSED_REASON.to_owned(), None),
        SettleOutcome::Failed(reason) => {
            let settlement = SettlementResponse {
                success: false,
                error_reason: Some(reason.clone()),
                transaction: String::new(),
                network,
                payer: Some(verified.payer.to_checksum(None)),
                amount: None,
                extensions: None,
            };
            payment_required(&shared, route, scheme, reason, Some(settlement))
        }
        SettleOutcome::LedgerFull => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            Vec::new(),
            json_body(&json!({
                "error": ErrorReason::UnexpectedSettleError.as_str(),
                "message": "settled_payments_max reached",
            })),
        ),
    }
}

/// Decodes a facilitator request body; on failure, the `400` answer to send.
fn facilitator_request(shared: &Shared, body: &[u8]) -> Result<FacilitatorRequest, VerifyResponse> {
    FacilitatorRequest::from_json_slice(body).map_err(|error| {
        let reason = ErrorReason::InvalidPayload.as_str();
        shared.reject(reason);
        tracing::info!(%error, "x402 facilitator got an undecodable request");
        VerifyResponse {
            is_valid: false,
            invalid_reason: Some(reason.to_owned()),
            payer: None,
        }
    })
}

fn facilitator_verify(shared: &Shared, body: &[u8]) -> Response {
    let request = match facilitator_request(shared, body) {
        Ok(request) => request,
        Err(answer) => return respond(StatusCode::BAD_REQUEST, Vec::new(), json_body(&answer)),
    };
    let answer = match verify(&request.payment_payload, &request.payment_requirements, shared.now()) {
        Ok(verified) => {
            let reused = shared.ledger().used_nonces.contains(&(verified.payer, verified.nonce));
            VerifyResponse {
                is_valid: !reused,
                invalid_reason: reused.then(|| NONCE_REUSED_REASON.to_owned()),
                payer: Some(verified.payer.to_checksum(None)),
            }
        }
        Err(error) => VerifyResponse {
            is_valid: false,
            invalid_reason: Some(error.reason().as_str().to_owned()),
            payer: Some(request.payment_payload.exact_evm().authorization.from.to_checksum(None)),
        },
    };
    respond(StatusCode::OK, Vec::new(), json_body(&answer))
}

fn facilitator_settle(shared: &Shared, body: &[u8]) -> Response {
    let request = match facilitator_request(shared, body) {
        Ok(request) => request,
        Err(answer) => return respond(StatusCode::BAD_REQUEST, Vec::new(), json_body(&answer)),
    };
    shared.bump(|s| s.payment_attempts += 1);
    let version = request.x402_version;
    let network = request.payment_payload.network().to_owned();
    let failed = |reason: &str, payer: Option<String>| SettlementResponse {
        success: false,
        error_reason: Some(reason.to_owned()),
        transaction: String::new(),
        network: network.clone(),
        payer,
        amount: None,
        extensions: None,
    };
    let answer = match verify(&request.payment_payload, &request.payment_requirements, shared.now()) {
        Err(error) => {
            let reason = error.reason().as_str();
            shared.reject(reason);
            let payer = request.payment_payload.exact_evm().authorization.from;
            failed(reason, Some(payer.to_checksum(None)))
        }
        Ok(verified) => {
            let payer = Some(verified.payer.to_checksum(None));
            let route = format!("{FACILITATOR_PREFIX}/settle");
            match shared.settle(&route, &verified, &shared.failure()) {
                SettleOutcome::Settled(record) => SettlementResponse {
                    success: true,
                    error_reason: None,
                    transaction: record.transaction.to_string(),
                    network: verified.network.wire_name(version).to_owned(),
                    payer,
                    amount: (version == X402Version::V2).then_some(record.value),
                    extensions: None,
                },
                SettleOutcome::NonceReused => failed(NONCE_REUSED_REASON, payer),
                SettleOutcome::Failed(reason) => failed(&reason, payer),
                SettleOutcome::LedgerFull => failed(ErrorReason::UnexpectedSettleError.as_str(), payer),
            }
        }
    };
    respond(StatusCode::OK, Vec::new(), json_body(&answer))
}

fn facilitator_supported(shared: &Shared) -> Response {
    let network = shared.config.network;
    let kinds = [X402Version::V1, X402Version::V2]
        .into_iter()
        .map(|version| SupportedKind {
            x402_version: version,
            scheme: EXACT_SCHEME.to_owned(),
            network: network.wire_name(version).to_owned(),
            extra: None,
        })
        .collect();
    let answer = SupportedResponse {
        kinds,
        extensions: Vec::new(),
        signers: Default::default(),
    };
    respond(StatusCode::OK, Vec::new(), json_body(&answer))
}
