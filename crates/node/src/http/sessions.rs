//! `/v1/sessions` and `/v1/session`: create, read, list, revoke sessions
//! and rotate their tokens.

use api::{CreateSessionRequest, CreateSessionResponse, ListQuery, Page, SessionView, TokenResponse};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::{Command, CreateSession, Outcome, Refusal, SessionId};

use super::calls::{await_applied, barrier, decide, require_budget};
use super::error::{refusal, ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, Principal};
use super::inputs::{
    asset_input, budget_id_field, cap_input, page_limit, session_id, session_id_field, tool_caps_input, tool_set_input,
};
use super::views::{page, session_view};
use crate::app_state::AppState;
use crate::tokens::{hash_token, new_session_id, new_session_token};

/// Session lifetime when the request names none.
const SESSION_TTL_DEFAULT_SECONDS: u64 = 3600;

pub async fn create_session(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> ApiResult<Response> {
    principal.require_admin()?;
    let asset = asset_input(req.asset, req.decimals)?;
    let id = session_id_field("id", req.id.unwrap_or_else(new_session_id))?;
    let ttl_seconds = req.expires_in_seconds.unwrap_or(SESSION_TTL_DEFAULT_SECONDS);
    let budget = req.budget.map(|b| budget_id_field("budget", b)).transpose()?;
    if let Some(b) = &budget {
        require_budget(&s, b).await?;
    }
    // A caller-chosen token makes the create retry-safe: the ledger treats
    // the same id, parameters and token as a replay. A generated one is
    // new on every attempt, so a retry of a create whose answer was lost
    // gets 409 (the first token is unknowable).
    let token = match req.token {
        Some(t) => {
            api::check_session_token(&t).map_err(|e| ApiError::field("token", e))?;
            t
        }
        None => new_session_token(),
    };
    let tools = req.tools.map(|t| tool_set_input("tools", t)).transpose()?;
    let command = Command::CreateSession(CreateSession {
        id: id.clone(),
        token_hash: hash_token(&token),
        cap: cap_input("cap", &req.cap, &asset)?,
        tool_caps: tool_caps_input(req.tool_caps, &asset)?,
        asset,
        ttl_ms: ttl_seconds.saturating_mul(1000),
        agent_id: req.agent_id,
        wallet_address: req.wallet_address,
        budget,
        tools,
        live_holds_max: req.live_holds_max,
    });
    let d = decide(&s, command).await?;
    let (status, existed) = match d.outcome {
        Outcome::SessionCreated { existed: false, .. } => (StatusCode::CREATED, false),
        Outcome::SessionCreated { existed: true, .. } => (StatusCode::OK, true),
        Outcome::Refused(Refusal::AlreadyExists) => {
            return Err(ApiError::Conflict {
                code: Refusal::AlreadyExists.code(),
                message: "a session with this id exists with other parameters or another token \
                          (or the token belongs to another session): a retried create must send the same \
                          token (and parameters) as the first; a create without a token cannot be retried"
                    .into(),
            })
        }
        Outcome::Refused(r) => return Err(refusal(r, None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    };
    await_applied(&s, d.log_index).await?;
    let session = s
        .local()
        .session(&id)
        .map(|x| session_view(&x, d.log_index))
        .ok_or_else(|| ApiError::Internal("session missing after creation".into()))?;
    // On a replay the ledger compared the token's hash: the token we
    // answer with is the session's.
    let body = CreateSessionResponse {
        session,
        session_token: Some(token),
        existed,
    };
    Ok((status, Json(body)).into_response())
}

pub async fn get_session(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let id = session_id(&id)?;
    principal.require_session_read(&id)?;
    barrier(&s).await?;
    let view = s.local().session(&id).map(|x| session_view(&x, x.applied_index));
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_session", format!("no session {id}")))
}

/// The caller's own session (a session token's "who am I").
pub async fn whoami(State(s): State<AppState>, principal: Principal) -> ApiResult<Json<SessionView>> {
    let Principal::Session(id, _) = principal else {
        return Err(ApiError::not_found(
            "unknown_session",
            "the admin and gateway tokens belong to no session",
        ));
    };
    barrier(&s).await?;
    let view = s.local().session(&id).map(|x| session_view(&x, x.applied_index));
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_session", format!("no session {id}")))
}

pub async fn list_sessions(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<SessionView>>> {
    principal.require_admin()?;
    let limit = page_limit(q.limit)?;
    let after: Option<SessionId> = q.after.map(|a| session_id_field("after", a)).transpose()?;
    barrier(&s).await?;
    let items: Vec<SessionView> = s
        .local()
        .sessions(after.as_ref(), limit)
        .iter()
        .map(|x| session_view(x, x.applied_index))
        .collect();
    Ok(Json(page(items, limit, |x| x.id.clone())))
}

pub async fn revoke_session(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    principal.require_admin()?;
    let id = session_id(&id)?;
    let d = decide(&s, Command::RevokeSession { session_id: id.clone() }).await?;
    match d.outcome {
        Outcome::SessionRevoked { .. } => {}
        Outcome::Refused(r) => return Err(refusal(r, None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    await_applied(&s, d.log_index).await?;
    let view = s.local().session(&id).map(|x| session_view(&x, d.log_index));
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_session", "session gone"))
}

pub async fn rotate_token(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenResponse>> {
    principal.require_admin()?;
    let id = session_id(&id)?;
    let token = new_session_token();
    let d = decide(
        &s,
        Command::RotateSessionToken {
            session_id: id.clone(),
            token_hash: hash_token(&token),
        },
    )
    .await?;
    match d.outcome {
        Outcome::TokenRotated => Ok(Json(TokenResponse {
            session_id: id.to_string(),
            session_token: token,
        })),
        Outcome::Refused(r) => Err(refusal(r, None)),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}
