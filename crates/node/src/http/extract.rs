//! Extractors that turn every rejection into an [`ApiError`], and the
//! caller's identity.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use ledger::{SessionId, TokenHash};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app_state::AppState;
use crate::tokens::{constant_time_eq, hash_token, SESSION_TOKEN_PREFIX, TOKEN_BYTES_MAX};

/// A JSON body; rejections become `invalid_json`, `body_too_large` or
/// `unsupported_media_type`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge)
            }
            Err(e) => Err(ApiError::InvalidJson(e.body_text())),
        }
    }
}

/// Query parameters; rejections become `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(ApiError::field("query", e.body_text())),
            Err(e) => Err(ApiError::field("query", e.body_text())),
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// A session, and the hash of the token it came with: commands carry
    /// the hash so the ledger can refuse a token superseded by a rotation
    /// that this node has not applied yet.
    Session(SessionId, TokenHash),
    /// The x402 gateway's own credential: it may read sessions and
    /// authorizations, pin holds as settling, and capture or void any hold
    /// (pinned ones included); it may not authorize, administer budgets or
    /// sessions, or read receipts and cluster state.
    Gateway,
}

impl Principal {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Session(..) | Principal::Gateway => {
                Err(ApiError::Forbidden("this needs the admin token".into()))
            }
        }
    }

    /// The admin or the gateway (reconciliation of settling holds).
    pub fn require_admin_or_gateway(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin | Principal::Gateway => Ok(()),
            Principal::Session(..) => Err(ApiError::Forbidden(
                "this needs the admin token or the gateway token".into(),
            )),
        }
    }

    /// Admin, or the session itself: acting as the session (authorizing).
    pub fn require_session(&self, id: &SessionId) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Session(s, _) if s == id => Ok(()),
            Principal::Session(..) => Err(ApiError::Forbidden(
                "a session token may act only on its own session".into(),
            )),
            Principal::Gateway => Err(ApiError::Forbidden(
                "the gateway token cannot act as a session; use the session's token".into(),
            )),
        }
    }

    /// Admin, the gateway, or the session itself: reading a session or one
    /// of its authorizations.
    pub fn require_session_read(&self, id: &SessionId) -> Result<(), ApiError> {
        match self {
            Principal::Gateway => Ok(()),
            other => other.require_session(id),
        }
    }

    pub fn caller(&self) -> ledger::Caller {
        match self {
            Principal::Admin => ledger::Caller::Admin,
            Principal::Session(s, _) => ledger::Caller::Session(s.clone()),
            Principal::Gateway => ledger::Caller::Gateway,
        }
    }

    /// The hash of the session token the request came with (see
    /// `ledger::Authorize::credential`); `None` for the admin and gateway.
    pub fn credential(&self) -> Option<TokenHash> {
        match self {
            Principal::Session(_, hash) => Some(*hash),
            Principal::Admin | Principal::Gateway => None,
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= TOKEN_BYTES_MAX)
            .ok_or(ApiError::Unauthorized)?;
        if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
            return Ok(Principal::Admin);
        }
        if let Some(gateway) = &state.gateway_token {
            if constant_time_eq(token.as_bytes(), gateway.as_bytes()) {
                return Ok(Principal::Gateway);
            }
        }
        if !token.starts_with(SESSION_TOKEN_PREFIX) {
            return Err(ApiError::Unauthorized);
        }
        let hash = hash_token(token);
        let lookup = || state.local().session_by_token(&hash);
        if let Some(id) = lookup() {
            return Ok(Principal::Session(id, hash));
        }
        // Perhaps created a moment ago and not applied here yet: catch up
        // with the leader before refusing.
        state.reads.wait().await?;
        lookup()
            .map(|id| Principal::Session(id, hash))
            .ok_or(ApiError::Unauthorized)
    }
}
