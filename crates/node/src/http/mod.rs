//! The client API: one function builds the app ([`app`]); state is passed
//! as [`AppState`], never through globals.

pub mod error;
pub mod extract;
mod handlers;
pub mod views;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use storage::{NodeId, Raft, StateMachineStore};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::config::Limits;
use crate::proposer::Proposer;
use crate::reads::ReadBarrier;
use error::ApiError;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub node_id: NodeId,
    pub cluster: String,
    pub admin_token: String,
    pub gateway_token: Option<String>,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub proposer: Proposer,
    pub reads: ReadBarrier,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }
}

/// Builds the whole API.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    let api = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/openapi.json", get(handlers::openapi))
        .route("/console", get(handlers::console))
        .route("/v1/budgets", post(handlers::create_budget).get(handlers::list_budgets))
        .route(
            "/v1/budgets/{id}",
            get(handlers::get_budget).patch(handlers::update_budget),
        )
        .route(
            "/v1/sessions",
            post(handlers::create_session).get(handlers::list_sessions),
        )
        .route("/v1/session", get(handlers::whoami))
        .route("/v1/sessions/{id}", get(handlers::get_session))
        .route("/v1/sessions/{id}/revoke", post(handlers::revoke_session))
        .route("/v1/sessions/{id}/token", post(handlers::rotate_token))
        .route("/v1/sessions/{id}/authorizations", post(handlers::authorize))
        .route(
            "/v1/batch/authorize",
            post(handlers::batch_authorize).layer(DefaultBodyLimit::max(limits.batch_request_body_bytes_max)),
        )
        .route("/v1/authorizations", get(handlers::list_settling))
        .route("/v1/authorizations/{id}", get(handlers::get_authorization))
        .route("/v1/authorizations/{id}/settling", post(handlers::mark_settling))
        .route("/v1/authorizations/{id}/capture", post(handlers::capture))
        .route("/v1/authorizations/{id}/void", post(handlers::void))
        .route("/v1/receipts", get(handlers::list_receipts))
        .route("/v1/receipts/export", get(handlers::export_receipts))
        .route("/v1/receipts/{id}", get(handlers::get_receipt))
        .route("/v1/decisions/recent", get(handlers::recent_decisions))
        .route("/v1/cluster/status", get(handlers::cluster_status))
        .route("/v1/cluster/digest", get(handlers::cluster_digest))
        .route("/v1/cluster/learners", post(handlers::add_learner))
        .route("/v1/cluster/membership", post(handlers::change_membership))
        .route("/v1/cluster/snapshot", post(handlers::trigger_snapshot))
        .route("/v1/cluster/backup", get(handlers::backup))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(limits.request_body_bytes_max))
        .with_state(state.clone());

    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(
                request_id.clone(),
                NodeRequestIds::new(state.node_id),
            ))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(middleware::from_fn(trace_request))
            .layer(HandleErrorLayer::new(overload_or_timeout))
            .load_shed()
            .concurrency_limit(limits.requests_in_flight_max)
            .timeout(limits.request_timeout),
    )
}

/// Request ids: `n<node>-<counter>` unless the caller sent one.
#[derive(Clone)]
struct NodeRequestIds {
    node_id: NodeId,
    next: Arc<AtomicU64>,
}

impl NodeRequestIds {
    fn new(node_id: NodeId) -> Self {
        NodeRequestIds {
            node_id,
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for NodeRequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("n{}-{n}", self.node_id))
            .ok()
            .map(RequestId::new)
    }
}

/// Runs the request inside a span that names its id, so every log line
/// for it carries the id.
async fn trace_request(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .chars()
        .take(64)
        .collect::<String>();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let started = Instant::now();
        let response = next.run(req).await;
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "served"
        );
        response
    }
    .instrument(span)
    .await
}

/// Requests and latency by matched route (never the raw path).
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(api::metrics::HTTP_REQUESTS_TOTAL, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(api::metrics::HTTP_REQUEST_DURATION_SECONDS, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn overload_or_timeout(err: BoxError) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded.into_response()
    } else if err.is::<tower::timeout::error::Elapsed>() {
        metrics::counter!(api::metrics::OUTCOMES_UNKNOWN_TOTAL).increment(1);
        ApiError::OutcomeUnknown("the request took longer than the request timeout".into()).into_response()
    } else {
        ApiError::Internal(err.to_string()).into_response()
    }
}

/// Waits until this node has applied `index` (after a write decided at the
/// leader), so a view read here reflects it.
pub(crate) async fn await_applied(state: &State<AppState>, index: u64, timeout: Duration) -> Result<(), ApiError> {
    state
        .raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), "read your write")
        .await
        .map(|_| ())
        .map_err(|_| ApiError::NoLeader)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The routes `app` registers, read from this file's source.
    fn routes_in_source() -> BTreeSet<String> {
        let source = include_str!("mod.rs");
        let app_source = source.split("#[cfg(test)]").next().unwrap_or(source);
        app_source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    /// The (method, route) pairs `app` registers, read from this file's
    /// source: every `get(handlers::…)`, `post(handlers::…)`, … inside a
    /// `.route(…)` call.
    fn operations_in_source() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let app_source = source.split("#[cfg(test)]").next().unwrap_or(source);
        let mut operations = BTreeSet::new();
        for chunk in app_source.split(".route(").skip(1) {
            let Some(path) = chunk.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) else {
                continue;
            };
            let chunk = chunk.split(".fallback(").next().unwrap_or(chunk);
            for method in ["get", "post", "patch", "put", "delete"] {
                let call = format!("{method}(handlers::");
                if chunk.match_indices(&call).any(|(at, _)| {
                    at == 0 || !chunk.as_bytes()[at - 1].is_ascii_alphanumeric() && chunk.as_bytes()[at - 1] != b'_'
                }) {
                    operations.insert((method.to_string(), path.to_string()));
                }
            }
        }
        operations
    }

    #[test]
    fn openapi_documents_every_operation_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                    documented.insert((method.clone(), path.clone()));
                }
            }
        }
        let served = operations_in_source();
        assert!(served.len() > 30, "found the operations: {served:?}");
        assert_eq!(documented, served);
    }

    /// Every OpenAPI link names an operation the document has, and a
    /// parameter that operation takes.
    #[test]
    fn openapi_links_point_at_documented_operations() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let mut links = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("path item").values() {
                let Some(responses) = operation["responses"].as_object() else {
                    continue;
                };
                for response in responses.values() {
                    let Some(found) = response["links"].as_object() else {
                        continue;
                    };
                    for (name, link) in found {
                        links += 1;
                        let reference = link["operationRef"].as_str().expect("operationRef");
                        let pointer = reference.strip_prefix('#').expect("a local reference");
                        let target = doc
                            .pointer(pointer)
                            .unwrap_or_else(|| panic!("link {name}: no {reference}"));
                        let names: BTreeSet<&str> = target["parameters"]
                            .as_array()
                            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                            .unwrap_or_default();
                        for parameter in link["parameters"].as_object().expect("parameters").keys() {
                            assert!(
                                names.contains(parameter.as_str()),
                                "link {name}: {reference} has no {parameter}"
                            );
                        }
                    }
                }
            }
        }
        assert!(links >= 10, "{links} links");
    }

    #[test]
    fn openapi_documents_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let documented: BTreeSet<String> = doc["paths"].as_object().expect("paths").keys().cloned().collect();
        let routes = routes_in_source();
        assert!(routes.len() > 20, "found the routes: {routes:?}");
        assert_eq!(documented, routes);
    }
}
