//! Every error the API returns: one enum, one status per variant, a JSON
//! `{code, message}` body.

use api::ErrorBody;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::{HoldStatus, Refusal};

use crate::proposer::ProposeError;
use crate::reads::ReadError;

/// The code of [`ApiError::NodeFailed`].
pub const NODE_FAILED: &str = "node_failed";
/// The codes of [`ApiError::DeadSession`].
pub const SESSION_REVOKED: &str = "session_revoked";
pub const SESSION_EXPIRED: &str = "session_expired";

/// What a handler (and each step it takes) returns.
pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON or does not fit the request type.
    #[error("{0}")]
    InvalidJson(String),
    /// A field's value is not acceptable.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("{0}")]
    InvalidAmount(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is larger than this route accepts")]
    BodyTooLarge,
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Unauthorized, with a more precise code than `unauthorized`.
    #[error("{message}")]
    UnauthorizedBecause { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    /// Forbidden, with a more precise code than `forbidden`.
    #[error("{message}")]
    ForbiddenBecause { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well-formed, but cannot be done.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("the node is overloaded; nothing was applied")]
    Overloaded,
    #[error("no leader is available; nothing was applied; retry")]
    NoLeader,
    #[error("the outcome is unknown ({0}); retry with the same idempotency key")]
    OutcomeUnknown(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node's Raft core has stopped (see `crate::health`): it serves
    /// nothing more, and did nothing for this request. (A failure while a
    /// command was being decided answers `outcome_unknown`.)
    #[error("{0}")]
    NodeFailed(String),
    /// The session of the calling session token is revoked or expired (by
    /// log time): it may read, but not write. Nothing was proposed.
    #[error("{message}")]
    DeadSession { code: &'static str, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::InvalidField { .. } | ApiError::InvalidAmount(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::UnauthorizedBecause { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenBecause { .. } | ApiError::DeadSession { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded | ApiError::NoLeader | ApiError::ShuttingDown | ApiError::NodeFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidField { .. } => "invalid_request",
            ApiError::InvalidAmount(_) => "invalid_amount",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::Unauthorized => api::codes::UNAUTHORIZED,
            ApiError::UnauthorizedBecause { code, .. } => code,
            ApiError::Forbidden(_) => api::codes::FORBIDDEN,
            ApiError::ForbiddenBecause { code, .. } | ApiError::DeadSession { code, .. } => code,
            ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. } => code,
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Overloaded => api::codes::OVERLOADED,
            ApiError::NoLeader => api::codes::NO_LEADER,
            ApiError::OutcomeUnknown(_) => api::codes::OUTCOME_UNKNOWN,
            ApiError::ShuttingDown => api::codes::SHUTTING_DOWN,
            ApiError::NodeFailed(_) => NODE_FAILED,
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn field(field: impl Into<String>, message: impl ToString) -> ApiError {
        ApiError::InvalidField {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// This node has failed before doing anything for the request.
    pub fn node_failed(why: &str) -> ApiError {
        ApiError::NodeFailed(format!(
            "this node has failed and serves nothing ({why}); nothing was done for this request: use another node"
        ))
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// A decided command that this node cannot show yet (it has not
    /// applied the entry in time): the decision exists, so the answer is
    /// "unknown", never "nothing was applied".
    pub fn decided_not_readable(index: u64) -> ApiError {
        metrics::counter!(api::metrics::OUTCOMES_UNKNOWN_TOTAL).increment(1);
        ApiError::OutcomeUnknown(format!(
            "decided at log index {index}, but this node has not applied it in time; \
             a retry with the same idempotency key returns the decision"
        ))
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, ApiError::Internal(_)) {
            tracing::debug!(code = self.code(), "{self}");
        } else if matches!(self, ApiError::Internal(_)) {
            tracing::error!(code = self.code(), "{self}");
        }
        let mut response = (status, Json(self.body())).into_response();
        if matches!(
            self,
            ApiError::NoLeader | ApiError::Overloaded | ApiError::NodeFailed(_)
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NoLeader => ApiError::NoLeader,
            ProposeError::Overloaded => ApiError::Overloaded,
            ProposeError::ShuttingDown => ApiError::ShuttingDown,
            // Nothing was sent (a failure while deciding is `Unknown`).
            ProposeError::NodeFailed(why) => ApiError::node_failed(&why),
            ProposeError::Unknown(why) => {
                metrics::counter!(api::metrics::OUTCOMES_UNKNOWN_TOTAL).increment(1);
                ApiError::OutcomeUnknown(why)
            }
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            // A read barrier proposes nothing: "nothing was applied" is true.
            ReadError::NoLeader | ReadError::Timeout => ApiError::NoLeader,
            ReadError::ShuttingDown => ApiError::ShuttingDown,
            ReadError::NodeFailed(why) => ApiError::node_failed(&why),
        }
    }
}

impl From<storage::StoreError> for ApiError {
    fn from(e: storage::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// A ledger refusal as an API error. `resolved` is how a hold that left
/// memory actually ended (read from history), when known.
pub fn refusal(r: Refusal, resolved: Option<HoldStatus>) -> ApiError {
    let code = r.code();
    match r {
        Refusal::Invalid(e) => ApiError::InvalidField {
            field: e.field,
            message: e.message,
        },
        Refusal::InvalidAmount { message } => ApiError::InvalidAmount(message),
        Refusal::AlreadyExists => ApiError::Conflict {
            code,
            message: "an object with this id exists with different parameters".into(),
        },
        Refusal::UnknownBudget { budget_id } => ApiError::not_found(code, format!("no budget {budget_id}")),
        Refusal::AssetMismatch { expected, found } => ApiError::Unprocessable {
            code,
            message: format!("asset {found} does not match the budget's {expected}"),
        },
        Refusal::BudgetDepthExceeded => ApiError::Unprocessable {
            code,
            message: format!("budget trees are at most {} deep", ledger::BUDGET_DEPTH_MAX),
        },
        Refusal::CapBelowUsage { committed } => ApiError::Conflict {
            code,
            message: format!("the cap would be below what is already spent and held ({committed} units)"),
        },
        Refusal::UnknownSession => ApiError::not_found(code, "no such session"),
        Refusal::UnknownAuthorization => ApiError::not_found(code, "no such authorization"),
        Refusal::AuthorizationNotActive { status } => {
            let status = resolved.unwrap_or(status);
            let code = Refusal::AuthorizationNotActive { status }.code();
            ApiError::Conflict {
                code,
                message: format!("the authorization is already {}", status.as_str()),
            }
        }
        Refusal::AmountExceedsHold { held } => ApiError::Unprocessable {
            code,
            message: format!("the capture exceeds the held amount ({held} units)"),
        },
        Refusal::Forbidden => ApiError::Forbidden("this caller may not act on that authorization".into()),
        Refusal::TokenSuperseded => ApiError::UnauthorizedBecause {
            code,
            message: "this session token was replaced by a rotation; use the new token".into(),
        },
        Refusal::HoldSettling => ApiError::ForbiddenBecause {
            code,
            message: "the authorization is pinned as settling (a signed payment may be in flight): \
                      only the gateway's or the admin's token may capture or void it"
                .into(),
        },
        Refusal::IdempotencyConflict => ApiError::Conflict {
            code,
            message: "the idempotency key was used before with different parameters".into(),
        },
        // The ledger refused rather than break its own bookkeeping; nothing
        // was applied. Not reachable while the invariants hold.
        Refusal::Inconsistent { detail } => ApiError::Internal(format!(
            "{code}: the ledger refused the command, nothing was applied: {detail}"
        )),
    }
}
