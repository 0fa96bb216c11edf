//! The client API: one function builds the app ([`app`]); state is passed
//! as [`AppState`], never through globals.

pub mod error;
pub mod extract;
mod handlers;
pub mod views;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, MethodRouter};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use storage::{NodeId, Raft, StateMachineStore};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::config::Limits;
use crate::decisions::RecentDecisions;
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
    /// A peer token is configured: without one the node accepts no Raft
    /// RPC, so it refuses to add members.
    pub peer_auth: bool,
    pub raft: Raft,
    pub sm: StateMachineStore,
    /// What this replica applied lately, for the console.
    pub decisions: RecentDecisions,
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

/// Builds a route's method router (given the node's limits).
type MakeRoute = fn(&Limits) -> MethodRouter<AppState>;

/// Every route of the API, once: (method, path, handler). [`app`] builds
/// the router from this table and nothing else, so the table is the list
/// of what the API serves; [`route_table`] exports it (the OpenAPI test
/// and the authorization matrix test iterate it).
const ROUTES: &[(&str, &str, MakeRoute)] = &[
    ("GET", "/healthz", |_| get(handlers::healthz)),
    ("GET", "/readyz", |_| get(handlers::readyz)),
    ("GET", "/metrics", |_| get(handlers::metrics)),
    ("GET", "/v1/openapi.json", |_| get(handlers::openapi)),
    ("GET", "/console", |_| get(handlers::console)),
    ("POST", "/v1/budgets", |_| post(handlers::create_budget)),
    ("GET", "/v1/budgets", |_| get(handlers::list_budgets)),
    ("GET", "/v1/budgets/{id}", |_| get(handlers::get_budget)),
    ("PATCH", "/v1/budgets/{id}", |_| patch(handlers::update_budget)),
    ("POST", "/v1/sessions", |_| post(handlers::create_session)),
    ("GET", "/v1/sessions", |_| get(handlers::list_sessions)),
    ("GET", "/v1/session", |_| get(handlers::whoami)),
    ("GET", "/v1/sessions/{id}", |_| get(handlers::get_session)),
    ("POST", "/v1/sessions/{id}/revoke", |_| post(handlers::revoke_session)),
    ("POST", "/v1/sessions/{id}/token", |_| post(handlers::rotate_token)),
    ("POST", "/v1/sessions/{id}/authorizations", |_| {
        post(handlers::authorize)
    }),
    ("POST", "/v1/batch/authorize", |l| {
        post(handlers::batch_authorize).layer(DefaultBodyLimit::max(l.batch_request_body_bytes_max))
    }),
    ("GET", "/v1/authorizations", |_| get(handlers::list_settling)),
    ("GET", "/v1/authorizations/{id}", |_| get(handlers::get_authorization)),
    ("POST", "/v1/authorizations/{id}/settling", |_| {
        post(handlers::mark_settling)
    }),
    ("POST", "/v1/authorizations/{id}/capture", |_| post(handlers::capture)),
    ("POST", "/v1/authorizations/{id}/void", |_| post(handlers::void)),
    ("GET", "/v1/receipts", |_| get(handlers::list_receipts)),
    ("GET", "/v1/receipts/export", |_| get(handlers::export_receipts)),
    ("GET", "/v1/receipts/{id}", |_| get(handlers::get_receipt)),
    ("GET", "/v1/decisions/recent", |_| get(handlers::recent_decisions)),
    ("GET", "/v1/cluster/status", |_| get(handlers::cluster_status)),
    ("GET", "/v1/cluster/digest", |_| get(handlers::cluster_digest)),
    ("POST", "/v1/cluster/learners", |_| post(handlers::add_learner)),
    ("POST", "/v1/cluster/membership", |_| post(handlers::change_membership)),
    ("POST", "/v1/cluster/snapshot", |_| post(handlers::trigger_snapshot)),
    ("GET", "/v1/cluster/backup", |_| get(handlers::backup)),
];

/// Every (method, path) the API serves, as [`app`] registers them.
pub fn route_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|(method, path, _)| (*method, *path))
}

/// Routes a failed node still answers: the probes (which report the
/// failure) and the metrics (which carry `spendcap_node_failed`).
const ROUTES_SERVED_WHEN_FAILED: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Builds the whole API.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for (_, path, make) in ROUTES {
        let route = make(&limits);
        let merged = match by_path.remove(path) {
            Some(earlier) => earlier.merge(route),
            None => route,
        };
        by_path.insert(*path, merged);
    }
    let mut api = Router::new();
    for (path, route) in by_path {
        api = api.route(path, route);
    }
    let api = api
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), refuse_when_failed))
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

/// A failed node (see [`crate::health`]) answers `503 node_failed` on
/// every route but the probes and the metrics, rather than serving state
/// that no longer advances.
async fn refuse_when_failed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !ROUTES_SERVED_WHEN_FAILED.contains(&req.uri().path()) {
        if let Some(why) = crate::health::failure(&state.raft) {
            return ApiError::node_failed(&why).into_response();
        }
    }
    next.run(req).await
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
/// leader), so a view read here reflects it. The command is decided: if
/// this node does not get there in time, the answer is `outcome_unknown`
/// (a retry with the same key returns the decision), never a code saying
/// nothing was applied.
pub(crate) async fn await_applied(state: &State<AppState>, index: u64, timeout: Duration) -> Result<(), ApiError> {
    state
        .raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), "read your write")
        .await
        .map(|_| ())
        .map_err(|_| ApiError::decided_not_readable(index))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The (method, path) pairs the OpenAPI document describes.
    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
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
        let routes: BTreeSet<(String, String)> = route_table().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert!(routes.len() > 25, "found the routes: {routes:?}");
        assert_eq!(routes.len(), ROUTES.len(), "a (method, path) appears twice in ROUTES");
        assert_eq!(documented(), routes);
    }

    #[test]
    fn await_applied_timeout_is_outcome_unknown_never_not_applied() {
        let e = ApiError::decided_not_readable(42);
        assert_eq!(e.status(), axum::http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.code(), api::codes::OUTCOME_UNKNOWN);
        assert!(e.to_string().contains("42"), "{e}");
        assert!(!e.to_string().contains("nothing was applied"), "{e}");
    }
}
