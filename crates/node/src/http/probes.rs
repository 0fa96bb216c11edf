//! The probes (`/healthz`, `/readyz`), the metrics scrape, the OpenAPI
//! document, the console page, and the fallbacks for unknown routes.

use api::Health;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ApiResult};
use crate::app_state::AppState;

const OPENAPI: &str = include_str!("openapi.json");

/// Live while the Raft core runs; a failed node (see `crate::health`)
/// answers `503 node_failed` with the reason.
pub async fn healthz(State(s): State<AppState>) -> ApiResult<Json<Health>> {
    if let Some(why) = crate::health::failure(&s.raft) {
        return Err(ApiError::node_failed(&why));
    }
    let m = s.raft.metrics().borrow().clone();
    Ok(Json(Health {
        status: "ok".into(),
        node_id: s.node_id,
        leader_id: m.current_leader,
        applied_index: m.last_applied.map(|l| l.index),
    }))
}

/// Ready when a leader is known and this node has applied at least one
/// entry of the current log.
pub async fn readyz(State(s): State<AppState>) -> ApiResult<Json<Health>> {
    if let Some(why) = crate::health::failure(&s.raft) {
        return Err(ApiError::node_failed(&why));
    }
    let m = s.raft.metrics().borrow().clone();
    if m.current_leader.is_none() || m.last_applied.is_none() {
        return Err(ApiError::NoLeader);
    }
    Ok(Json(Health {
        status: "ready".into(),
        node_id: s.node_id,
        leader_id: m.current_leader,
        applied_index: m.last_applied.map(|l| l.index),
    }))
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    let committed = s
        .raft
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
        .ok()
        .flatten();
    let state_series = crate::metrics::refresh(&s, committed);
    let mut text = s.metrics.render();
    text.push_str(&state_series);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

const CONSOLE: &str = include_str!("console.html");

/// The read-only console: a self-contained page that asks for the admin
/// token and reads the JSON API with it. The page itself holds no data.
pub async fn console() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        CONSOLE,
    )
        .into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
