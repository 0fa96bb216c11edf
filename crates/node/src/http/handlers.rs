//! The API's handlers. Writes go through the proposer (one Raft entry per
//! batch); reads pass a linearizable barrier first.

use std::time::Instant;

use api::*;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::{
    Authorize, BudgetId, Capture, Command, CreateBudget, CreateSession, DenyReason, HoldId, HoldStatus, IdempotencyKey,
    Outcome, ReceiptId, ReceiptInput, Refusal, SessionId, Tool, UpdateBudget, Void,
};
use openraft::ServerState;
use storage::{NodeAddr, ReceiptFilter};

use super::error::{refusal, ApiError};
use super::extract::{ApiJson, ApiQuery, Principal};
use super::views::*;
use super::{await_applied, AppState};
use crate::proposer::Decided;
use crate::tokens::{hash_token, new_session_id, new_session_token};

type ApiResult<T> = Result<T, ApiError>;

const OPENAPI: &str = include_str!("openapi.json");
/// Session lifetime when the request names none.
const SESSION_TTL_DEFAULT_SECONDS: u64 = 3600;

// ---- probes -------------------------------------------------------------

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

// ---- helpers --------------------------------------------------------------

async fn decide(s: &AppState, command: Command) -> ApiResult<Decided> {
    command.validate().map_err(|e| ApiError::field(e.field, e.message))?;
    Ok(s.proposer.propose(command, s.limits.write_timeout).await?)
}

async fn barrier(s: &AppState) -> ApiResult<u64> {
    Ok(s.reads.wait().await?.unwrap_or(0))
}

fn budget_id(text: &str) -> ApiResult<BudgetId> {
    BudgetId::new(text).map_err(|_| ApiError::not_found("unknown_budget", format!("no budget {text:?}")))
}

fn session_id(text: &str) -> ApiResult<SessionId> {
    SessionId::new(text).map_err(|_| ApiError::not_found("unknown_session", format!("no session {text:?}")))
}

fn hold_id(text: &str) -> ApiResult<HoldId> {
    text.parse()
        .map_err(|_| ApiError::not_found("unknown_authorization", format!("no authorization {text:?}")))
}

fn idempotency_key(key: Option<String>) -> ApiResult<Option<IdempotencyKey>> {
    key.map(|k| IdempotencyKey::new(k).map_err(|e| ApiError::field("idempotency_key", e)))
        .transpose()
}

fn position(d: &Decided) -> LogPosition {
    let p = d.position();
    LogPosition {
        log_index: p.log_index,
        batch_position: p.batch_position,
        log_time_ms: p.time_ms,
    }
}

/// The asset of a session as of a decided entry: from local state, after
/// catching up to that entry if this node lags (never guessing).
async fn session_asset(s: &AppState, session: &SessionId, log_index: u64) -> ApiResult<ledger::Asset> {
    let lookup = || s.sm.read().ledger.session(session).map(|x| x.asset.clone());
    if let Some(asset) = lookup() {
        return Ok(asset);
    }
    await_applied(&State(s.clone()), log_index, s.limits.read_timeout).await?;
    lookup().ok_or_else(|| ApiError::Internal(format!("session {session} missing at index {log_index}")))
}

/// The session that owns a hold, live or resolved, as of a decided entry.
async fn hold_session(s: &AppState, hold: HoldId, log_index: u64) -> ApiResult<SessionId> {
    let lookup = || -> ApiResult<Option<SessionId>> {
        if let Some(h) = s.sm.read().ledger.live_hold(hold) {
            return Ok(Some(h.session_id.clone()));
        }
        Ok(s.sm.store().resolved_hold(hold)?.map(|h| h.session_id))
    };
    if let Some(id) = lookup()? {
        return Ok(id);
    }
    await_applied(&State(s.clone()), log_index, s.limits.read_timeout).await?;
    lookup()?.ok_or_else(|| ApiError::Internal(format!("authorization {hold} missing at index {log_index}")))
}

fn page_limit(limit: Option<u32>) -> ApiResult<usize> {
    match limit {
        None => Ok(PAGE_ITEMS_DEFAULT as usize),
        Some(0) => Err(ApiError::field("limit", "must be at least 1")),
        Some(n) if n > PAGE_ITEMS_MAX => Err(ApiError::field("limit", format!("at most {PAGE_ITEMS_MAX}"))),
        Some(n) => Ok(n as usize),
    }
}

/// Refuses, without a trip through the log, a reference to a budget that
/// does not exist (checked after catching up with the leader, so a budget
/// created a moment ago elsewhere is seen).
async fn require_budget(s: &AppState, id: &BudgetId) -> ApiResult<()> {
    if s.sm.read().ledger.budget(id).is_some() {
        return Ok(());
    }
    barrier(s).await?;
    if s.sm.read().ledger.budget(id).is_some() {
        Ok(())
    } else {
        Err(ApiError::not_found("unknown_budget", format!("no budget {id}")))
    }
}

/// The same for an authorization id that was never handed out.
async fn require_issued(s: &AppState, id: HoldId) -> ApiResult<()> {
    if s.sm.read().ledger.hold_id_issued(id) {
        return Ok(());
    }
    barrier(s).await?;
    if s.sm.read().ledger.hold_id_issued(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "unknown_authorization",
            format!("no authorization {id}"),
        ))
    }
}

/// A session token whose session is revoked, or expired by log time as of
/// this node's state, may still read but may not write (authorize, pin,
/// capture, void): refused here, before anything is proposed, with
/// `403 session_revoked` / `403 session_expired`, so a dead token cannot
/// add records. Revocation is permanent and log time only moves forward,
/// so what this node has applied is enough to refuse; a session still live
/// here but already dead at the leader is denied by the ledger itself.
/// The admin and the gateway are not sessions and pass.
fn require_live_session(s: &AppState, principal: &Principal) -> ApiResult<()> {
    let Principal::Session(id, _) = principal else {
        return Ok(());
    };
    let state = s.sm.read();
    let Some(session) = state.ledger.session(id) else {
        return Ok(());
    };
    if session.revoked {
        return Err(ApiError::DeadSession {
            code: super::error::SESSION_REVOKED,
            message: "this session was revoked: its token may read, not write".into(),
        });
    }
    if state.ledger.now_ms() >= session.expires_at_ms {
        return Err(ApiError::DeadSession {
            code: super::error::SESSION_EXPIRED,
            message: "this session has expired: its token may read, not write".into(),
        });
    }
    Ok(())
}

/// How a resolved hold ended, from history (for a precise error code).
fn resolved_status(s: &AppState, id: HoldId) -> Option<HoldStatus> {
    s.sm.store().resolved_hold(id).ok().flatten().map(|h| h.status)
}

// ---- budgets ------------------------------------------------------------

pub async fn create_budget(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateBudgetRequest>,
) -> ApiResult<Response> {
    principal.require_admin()?;
    let asset = asset_input(req.asset, req.decimals)?;
    let id = BudgetId::new(req.id).map_err(|e| ApiError::field("id", e))?;
    let parent = req
        .parent
        .map(|p| BudgetId::new(p).map_err(|e| ApiError::field("parent", e)))
        .transpose()?;
    if let Some(p) = &parent {
        require_budget(&s, p).await?;
    }
    let command = Command::CreateBudget(CreateBudget {
        cap: cap_input("cap", &req.cap, &asset)?,
        tool_caps: tool_caps_input(req.tool_caps, &asset)?,
        id: id.clone(),
        asset,
        parent,
        blocked_tools: tool_set_input("blocked_tools", req.blocked_tools)?,
    });
    let d = decide(&s, command).await?;
    let status = match d.outcome {
        Outcome::BudgetCreated { existed: false } => StatusCode::CREATED,
        Outcome::BudgetCreated { existed: true } => StatusCode::OK,
        Outcome::Refused(r) => return Err(refusal(r, None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    };
    await_applied(&State(s.clone()), d.log_index, s.limits.read_timeout).await?;
    let view = s.sm.read().ledger.budget(&id).map(budget_view);
    let view = view.ok_or_else(|| ApiError::Internal("budget missing after creation".into()))?;
    Ok((status, Json(view)).into_response())
}

pub async fn update_budget(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateBudgetRequest>,
) -> ApiResult<Json<BudgetView>> {
    principal.require_admin()?;
    let id = budget_id(&id)?;
    barrier(&s).await?;
    let asset =
        s.sm.read()
            .ledger
            .budget(&id)
            .map(|b| b.asset.clone())
            .ok_or_else(|| ApiError::not_found("unknown_budget", format!("no budget {id}")))?;
    let command = Command::UpdateBudget(UpdateBudget {
        id: id.clone(),
        cap: req.cap.map(|c| cap_input("cap", &c, &asset)).transpose()?,
        tool_caps: req.tool_caps.map(|t| tool_caps_input(t, &asset)).transpose()?,
        blocked_tools: req
            .blocked_tools
            .map(|b| tool_set_input("blocked_tools", b))
            .transpose()?,
    });
    let d = decide(&s, command).await?;
    match d.outcome {
        Outcome::BudgetUpdated => {}
        Outcome::Refused(r) => return Err(refusal(r, None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    await_applied(&State(s.clone()), d.log_index, s.limits.read_timeout).await?;
    let view = s.sm.read().ledger.budget(&id).map(budget_view);
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_budget", "budget gone"))
}

pub async fn get_budget(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetView>> {
    principal.require_admin()?;
    let id = budget_id(&id)?;
    barrier(&s).await?;
    let view = s.sm.read().ledger.budget(&id).map(budget_view);
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_budget", format!("no budget {id}")))
}

pub async fn list_budgets(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<BudgetView>>> {
    principal.require_admin()?;
    let limit = page_limit(q.limit)?;
    let after = q
        .after
        .map(|a| BudgetId::new(a).map_err(|e| ApiError::field("after", e)))
        .transpose()?;
    barrier(&s).await?;
    let state = s.sm.read();
    let items: Vec<BudgetView> = state
        .ledger
        .budgets(after.as_ref(), limit)
        .into_iter()
        .map(budget_view)
        .collect();
    let next_after = (items.len() == limit)
        .then(|| items.last().map(|b| b.id.clone()))
        .flatten();
    Ok(Json(Page { items, next_after }))
}

// ---- sessions -----------------------------------------------------------

pub async fn create_session(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> ApiResult<Response> {
    principal.require_admin()?;
    let asset = asset_input(req.asset, req.decimals)?;
    let id = SessionId::new(req.id.unwrap_or_else(new_session_id)).map_err(|e| ApiError::field("id", e))?;
    let ttl_seconds = req.expires_in_seconds.unwrap_or(SESSION_TTL_DEFAULT_SECONDS);
    let budget = req
        .budget
        .map(|b| BudgetId::new(b).map_err(|e| ApiError::field("budget", e)))
        .transpose()?;
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
    await_applied(&State(s.clone()), d.log_index, s.limits.read_timeout).await?;
    let state = s.sm.read();
    let session = state
        .ledger
        .session(&id)
        .map(|x| session_view(&state.ledger, x, d.log_index))
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
    let state = s.sm.read();
    let read_index = state.last_applied.map(|l| l.index).unwrap_or(0);
    let view = state
        .ledger
        .session(&id)
        .map(|x| session_view(&state.ledger, x, read_index));
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
    let state = s.sm.read();
    let read_index = state.last_applied.map(|l| l.index).unwrap_or(0);
    let view = state
        .ledger
        .session(&id)
        .map(|x| session_view(&state.ledger, x, read_index));
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
    let after = q
        .after
        .map(|a| SessionId::new(a).map_err(|e| ApiError::field("after", e)))
        .transpose()?;
    barrier(&s).await?;
    let state = s.sm.read();
    let read_index = state.last_applied.map(|l| l.index).unwrap_or(0);
    let items: Vec<SessionView> = state
        .ledger
        .sessions(after.as_ref(), limit)
        .into_iter()
        .map(|x| session_view(&state.ledger, x, read_index))
        .collect();
    let next_after = (items.len() == limit)
        .then(|| items.last().map(|x| x.id.clone()))
        .flatten();
    Ok(Json(Page { items, next_after }))
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
    await_applied(&State(s.clone()), d.log_index, s.limits.read_timeout).await?;
    let state = s.sm.read();
    let view = state
        .ledger
        .session(&id)
        .map(|x| session_view(&state.ledger, x, d.log_index));
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

// ---- authorizations -----------------------------------------------------

/// Builds an authorize command from request fields.
fn authorize_command(
    s: &AppState,
    session: SessionId,
    amount: Option<String>,
    amount_atomic: Option<String>,
    tool: String,
    key: Option<String>,
    hold_seconds: Option<u64>,
    context: Option<api::DecisionContext>,
    credential: Option<ledger::TokenHash>,
) -> ApiResult<Command> {
    let amount = amount_input(amount, amount_atomic)?
        .ok_or_else(|| ApiError::field("amount", "amount or amount_atomic is required"))?;
    // A known session's asset lets us refuse a too-precise amount here,
    // without a trip through the log.
    if let Some(asset) = s.sm.read().ledger.session(&session).map(|x| x.asset.clone()) {
        check_against(&amount, &asset)?;
    }
    let command = Command::Authorize(Authorize {
        session_id: session,
        amount,
        tool: Tool::new(tool).map_err(|e| ApiError::field("tool", e))?,
        idempotency_key: idempotency_key(key)?,
        hold_ttl_ms: hold_seconds.map(|h| h.saturating_mul(1000)),
        context: context_input(context),
        credential,
    });
    command.validate().map_err(|e| ApiError::field(e.field, e.message))?;
    Ok(command)
}

/// A decision as the API shows it; errors for refusals.
async fn decision(s: &AppState, session: &SessionId, d: &Decided) -> ApiResult<Decision> {
    let asset = match &d.outcome {
        Outcome::Approved { .. } | Outcome::Denied(_) => match session_asset(s, session, d.log_index).await {
            Ok(asset) => Some(asset),
            // Denied for an unknown session: there is no asset to format with,
            // and no amount to show.
            Err(_) if matches!(d.outcome, Outcome::Denied(DenyReason::UnknownSession)) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    let fmt = |a: ledger::Amount| match &asset {
        Some(asset) => money(a, asset),
        None => a.to_string(),
    };
    let mut out = Decision {
        decision: String::new(),
        session_id: session.to_string(),
        authorization_id: None,
        amount: None,
        expires_at_ms: None,
        reason: None,
        budget_id: None,
        tool: None,
        remaining: None,
        message: None,
        replayed: false,
        position: position(d),
    };
    match &d.outcome {
        Outcome::Approved { approval, replayed } => {
            out.decision = "approved".into();
            out.authorization_id = Some(approval.hold_id.to_string());
            out.amount = Some(fmt(approval.amount));
            out.expires_at_ms = Some(approval.expires_at_ms);
            out.remaining = Some(fmt(approval.session_remaining));
            out.replayed = *replayed;
            ::metrics::counter!(api::metrics::DECISIONS_TOTAL, "outcome" => "approved", "reason" => "none")
                .increment(1);
            if let (Some(asset), false) = (&asset, *replayed) {
                ::metrics::counter!(api::metrics::AUTHORIZED_UNITS_TOTAL, "asset" => asset.code.to_string())
                    .increment(u64::try_from(approval.amount.units()).unwrap_or(u64::MAX));
            }
        }
        Outcome::Denied(reason) => {
            out.decision = "denied".into();
            out.reason = Some(reason.code().into());
            let (remaining, message) = match reason {
                DenyReason::SessionCap { remaining } => {
                    (Some(*remaining), "the session's cap would be exceeded".to_string())
                }
                DenyReason::ToolCap {
                    tool,
                    budget_id,
                    remaining,
                } => {
                    out.tool = Some(tool.to_string());
                    out.budget_id = budget_id.as_ref().map(|b| b.to_string());
                    (Some(*remaining), format!("the cap on tool {tool} would be exceeded"))
                }
                DenyReason::BudgetCap { budget_id, remaining } => {
                    out.budget_id = Some(budget_id.to_string());
                    (Some(*remaining), format!("budget {budget_id} would be exceeded"))
                }
                DenyReason::SessionExpired => (None, "the session has expired".into()),
                DenyReason::SessionRevoked => (None, "the session was revoked".into()),
                DenyReason::UnknownSession => (None, "no such session".into()),
                DenyReason::ToolNotAllowed => (None, "the session's tool allowlist does not include this tool".into()),
                DenyReason::ToolBlocked { budget_id } => {
                    out.budget_id = Some(budget_id.to_string());
                    (None, format!("budget {budget_id} blocks this tool"))
                }
                DenyReason::TooManyHolds { limit } => (
                    None,
                    format!("the session has {limit} live authorizations, its limit: capture or void some first"),
                ),
            };
            out.remaining = remaining.map(fmt);
            out.message = Some(message);
            ::metrics::counter!(api::metrics::DECISIONS_TOTAL, "outcome" => "denied", "reason" => reason.code())
                .increment(1);
        }
        Outcome::Refused(r) => return Err(refusal(r.clone(), None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    Ok(out)
}

pub async fn authorize(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AuthorizeRequest>,
) -> ApiResult<Json<Decision>> {
    let started = Instant::now();
    let result = authorize_inner(s, principal, id, req).await;
    let outcome = match &result {
        Ok(d) if d.decision == "approved" => "approved",
        Ok(_) => "denied",
        Err(_) => "error",
    };
    ::metrics::histogram!(api::metrics::AUTHORIZE_DURATION_SECONDS, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result.map(Json)
}

async fn authorize_inner(s: AppState, principal: Principal, id: String, req: AuthorizeRequest) -> ApiResult<Decision> {
    let session = session_id(&id)?;
    principal.require_session(&session)?;
    require_live_session(&s, &principal)?;
    let command = authorize_command(
        &s,
        session.clone(),
        req.amount,
        req.amount_atomic,
        req.tool,
        req.idempotency_key,
        req.hold_seconds,
        req.context,
        principal.credential(),
    )?;
    #[cfg(feature = "fault-injection")]
    if crate::fault::local_decide_enabled() {
        if let Some(d) = crate::fault::local_decide(&s, &command) {
            return decision(&s, &session, &d).await;
        }
    }
    let d = s.proposer.propose(command, s.limits.write_timeout).await?;
    decision(&s, &session, &d).await
}

pub async fn batch_authorize(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<BatchAuthorizeRequest>,
) -> ApiResult<Json<BatchAuthorizeResponse>> {
    principal.require_admin()?;
    if req.items.is_empty() || req.items.len() > BATCH_ITEMS_MAX {
        return Err(ApiError::field(
            "items",
            format!("between 1 and {BATCH_ITEMS_MAX} items"),
        ));
    }
    // Invalid items get their error; the valid ones go into one entry.
    let mut slots: Vec<Result<(SessionId, usize), ApiError>> = Vec::with_capacity(req.items.len());
    let mut commands = Vec::new();
    for item in req.items {
        let built = session_id(&item.session_id).and_then(|sid| {
            authorize_command(
                &s,
                sid.clone(),
                item.amount,
                item.amount_atomic,
                item.tool,
                item.idempotency_key,
                item.hold_seconds,
                item.context,
                // The batch endpoint is the admin's: no session credential.
                None,
            )
            .map(|c| (sid, c))
        });
        match built {
            Ok((sid, command)) => {
                slots.push(Ok((sid, commands.len())));
                commands.push(command);
            }
            Err(e) => slots.push(Err(e)),
        }
    }
    let decided = if commands.is_empty() {
        Vec::new()
    } else {
        s.proposer.propose_many(commands, s.limits.write_timeout).await?
    };
    let mut results = Vec::with_capacity(slots.len());
    for slot in slots {
        let r = match slot {
            Ok((sid, i)) => decision(&s, &sid, &decided[i]).await,
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(d) => BatchItemResult::Decision(d),
            Err(e) => BatchItemResult::Error { error: e.body() },
        });
    }
    Ok(Json(BatchAuthorizeResponse { results }))
}

pub async fn capture(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CaptureRequest>,
) -> ApiResult<Json<CaptureResponse>> {
    let hold = hold_id(&id)?;
    require_live_session(&s, &principal)?;
    require_issued(&s, hold).await?;
    let receipt = req.receipt.unwrap_or_default();
    let command = Command::Capture(Capture {
        hold_id: hold,
        caller: principal.caller(),
        amount: amount_input(req.amount, req.amount_atomic)?,
        receipt: ReceiptInput {
            payment_request_id: receipt.payment_request_id,
            signature: receipt.signature,
            transaction_hash: receipt.transaction_hash,
            wallet_address: receipt.wallet_address,
            network: receipt.network,
            resource_url: receipt.resource_url,
        },
        idempotency_key: idempotency_key(req.idempotency_key)?,
        credential: principal.credential(),
    });
    let d = decide(&s, command).await?;
    match d.outcome {
        Outcome::Captured { ref captured, replayed } => {
            ::metrics::counter!(api::metrics::CAPTURES_TOTAL).increment(1);
            // The session's asset formats the amounts.
            let session = hold_session(&s, hold, d.log_index).await?;
            let asset = session_asset(&s, &session, d.log_index).await?;
            let fmt = |a: ledger::Amount| money(a, &asset);
            if !replayed {
                ::metrics::counter!(api::metrics::CAPTURED_UNITS_TOTAL, "asset" => asset.code.to_string())
                    .increment(u64::try_from(captured.captured.units()).unwrap_or(u64::MAX));
            }
            Ok(Json(CaptureResponse {
                authorization_id: hold.to_string(),
                receipt_id: captured.receipt_id.to_string(),
                captured: fmt(captured.captured),
                released: fmt(captured.released),
                replayed,
                position: position(&d),
            }))
        }
        Outcome::Refused(r @ Refusal::AuthorizationNotActive { .. }) => Err(refusal(r, resolved_status(&s, hold))),
        Outcome::Refused(r) => Err(refusal(r, None)),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

pub async fn void(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<VoidResponse>> {
    let hold = hold_id(&id)?;
    // The body is optional here: empty means no idempotency key.
    let req: VoidRequest = if body.iter().all(u8::is_ascii_whitespace) {
        VoidRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidJson(format!("Failed to deserialize the JSON body: {e}")))?
    };
    require_live_session(&s, &principal)?;
    require_issued(&s, hold).await?;
    let command = Command::Void(Void {
        hold_id: hold,
        caller: principal.caller(),
        idempotency_key: idempotency_key(req.idempotency_key)?,
        credential: principal.credential(),
    });
    let d = decide(&s, command).await?;
    match d.outcome {
        Outcome::Voided { released, replayed, .. } => {
            ::metrics::counter!(api::metrics::VOIDS_TOTAL).increment(1);
            let session = hold_session(&s, hold, d.log_index).await?;
            let asset = session_asset(&s, &session, d.log_index).await?;
            Ok(Json(VoidResponse {
                authorization_id: hold.to_string(),
                released: money(released, &asset),
                replayed,
                position: position(&d),
            }))
        }
        Outcome::Refused(r @ Refusal::AuthorizationNotActive { .. }) => Err(refusal(r, resolved_status(&s, hold))),
        Outcome::Refused(r) => Err(refusal(r, None)),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

pub async fn get_authorization(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<AuthorizationView>> {
    let hold = hold_id(&id)?;
    barrier(&s).await?;
    let live = {
        let state = s.sm.read();
        state.ledger.live_hold(hold).map(|h| {
            let asset = state.ledger.session(&h.session_id).map(|x| x.asset.clone());
            (h.clone(), asset)
        })
    };
    let (h, asset) = match live {
        Some(found) => found,
        None => {
            let h =
                s.sm.store()
                    .resolved_hold(hold)?
                    .ok_or_else(|| ApiError::not_found("unknown_authorization", format!("no authorization {hold}")))?;
            let asset = s.sm.read().ledger.session(&h.session_id).map(|x| x.asset.clone());
            (h, asset)
        }
    };
    principal.require_session_read(&h.session_id)?;
    let asset = asset.ok_or_else(|| ApiError::Internal(format!("the session of {hold} is missing")))?;
    Ok(Json(hold_view(&h, &asset)))
}

pub async fn mark_settling(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MarkSettlingRequest>,
) -> ApiResult<Json<MarkSettlingResponse>> {
    let hold = hold_id(&id)?;
    require_live_session(&s, &principal)?;
    require_issued(&s, hold).await?;
    let command = Command::MarkSettling(ledger::MarkSettling {
        hold_id: hold,
        caller: principal.caller(),
        reference: req.reference,
    });
    let d = decide(&s, command).await?;
    match d.outcome {
        Outcome::SettlingMarked { already, .. } => Ok(Json(MarkSettlingResponse {
            authorization_id: hold.to_string(),
            already,
            position: position(&d),
        })),
        Outcome::Refused(r @ Refusal::AuthorizationNotActive { .. }) => Err(refusal(r, resolved_status(&s, hold))),
        Outcome::Refused(r) => Err(refusal(r, None)),
        other => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
}

/// `GET /v1/authorizations?status=settling`: holds with a payment possibly
/// in flight, for reconciliation (admin).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationQuery {
    status: String,
    /// An authorization id: start after it.
    after: Option<String>,
    limit: Option<u32>,
}

pub async fn list_settling(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AuthorizationQuery>,
) -> ApiResult<Json<Page<AuthorizationView>>> {
    principal.require_admin_or_gateway()?;
    if q.status != "settling" {
        return Err(ApiError::field("status", "only status=settling can be listed"));
    }
    let limit = page_limit(q.limit)?;
    let after = q
        .after
        .map(|a| a.parse::<HoldId>().map_err(|e| ApiError::field("after", e)))
        .transpose()?;
    barrier(&s).await?;
    let state = s.sm.read();
    // A live hold's session always exists (sessions are never deleted).
    let items: Vec<AuthorizationView> = state
        .ledger
        .settling_holds()
        .filter(|h| after.is_none_or(|a| h.id > a))
        .take(limit)
        .filter_map(|h| state.ledger.session(&h.session_id).map(|x| hold_view(h, &x.asset)))
        .collect();
    let next_after = (items.len() == limit)
        .then(|| items.last().map(|h| h.id.clone()))
        .flatten();
    Ok(Json(Page { items, next_after }))
}

// ---- receipts -----------------------------------------------------------

fn receipt_filter(principal: &Principal, q: ReceiptQuery) -> ApiResult<ReceiptFilter> {
    let session_id = match principal {
        Principal::Admin => q.session_id,
        Principal::Session(own, _) => match q.session_id {
            Some(other) if other != own.as_str() => {
                return Err(ApiError::Forbidden(
                    "a session token may read only its own receipts".into(),
                ))
            }
            _ => Some(own.to_string()),
        },
        Principal::Gateway => return Err(ApiError::Forbidden("the gateway token cannot read receipts".into())),
    };
    let after = q
        .after
        .map(|a| a.parse::<ReceiptId>().map_err(|e| ApiError::field("after", e)))
        .transpose()?;
    Ok(ReceiptFilter {
        session_id,
        agent_id: q.agent_id,
        tool: q.tool,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        after,
        limit: page_limit(q.limit)?,
    })
}

pub async fn list_receipts(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> ApiResult<Json<Page<ReceiptView>>> {
    let filter = receipt_filter(&principal, q)?;
    barrier(&s).await?;
    let receipts = s.sm.store().receipts(&filter)?;
    let next_after = (receipts.len() == filter.limit)
        .then(|| receipts.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: receipts.iter().map(receipt_view).collect(),
        next_after,
    }))
}

/// Receipts exported in one JSONL response, at most.
const EXPORT_RECEIPTS_MAX: usize = 10_000_000;

/// All matching receipts as JSON Lines, streamed page by page.
pub async fn export_receipts(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> ApiResult<Response> {
    let mut filter = receipt_filter(&principal, ReceiptQuery { limit: None, ..q })?;
    filter.limit = PAGE_ITEMS_MAX as usize;
    barrier(&s).await?;
    let store = s.sm.store().clone();
    let stream = futures::stream::unfold((filter, 0usize, false), move |(mut filter, sent, done)| {
        let store = store.clone();
        async move {
            if done || sent >= EXPORT_RECEIPTS_MAX {
                return None;
            }
            let page = tokio::task::spawn_blocking({
                let filter = filter.clone();
                move || store.receipts(&filter)
            })
            .await;
            let page = match page {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Some((Err(std::io::Error::other(e.to_string())), (filter, sent, true))),
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), (filter, sent, true))),
            };
            let last = page.len() < filter.limit;
            filter.after = page.last().map(|r| r.id).or(filter.after);
            let mut chunk = Vec::new();
            for r in &page {
                if serde_json::to_writer(&mut chunk, &receipt_view(r)).is_err() {
                    return Some((
                        Err(std::io::Error::other("receipt encoding failed")),
                        (filter, sent, true),
                    ));
                }
                chunk.push(b'\n');
            }
            Some((Ok::<_, std::io::Error>(chunk), (filter, sent + page.len(), last)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

pub async fn get_receipt(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ReceiptView>> {
    let rid: ReceiptId = id
        .parse()
        .map_err(|_| ApiError::not_found("unknown_receipt", format!("no receipt {id:?}")))?;
    barrier(&s).await?;
    let r =
        s.sm.store()
            .receipt(rid)?
            .ok_or_else(|| ApiError::not_found("unknown_receipt", format!("no receipt {rid}")))?;
    principal.require_session(&r.session_id)?;
    Ok(Json(receipt_view(&r)))
}

pub async fn recent_decisions(State(s): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require_admin()?;
    Ok(Json(s.decisions.recent()).into_response())
}

// ---- cluster ------------------------------------------------------------

fn members(s: &AppState) -> Vec<Member> {
    let m = s.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            raft_addr: node.raft.clone(),
            api_addr: node.api.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

pub async fn cluster_status(State(s): State<AppState>, principal: Principal) -> ApiResult<Json<ClusterStatus>> {
    principal.require_admin()?;
    let m = s.raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let committed = s
        .raft
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    let (budgets, sessions, live_holds, keys, now) = {
        let state = s.sm.read();
        let (b, se, h, k) = state.ledger.counts();
        (b, se, h, k, state.ledger.now_ms())
    };
    Ok(Json(ClusterStatus {
        node_id: s.node_id,
        cluster: s.cluster.clone(),
        role: role.into(),
        leader_id: m.current_leader,
        term: m.current_term,
        members: members(&s),
        last_log_index: m.last_log_index,
        committed_index: committed,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        ledger_time_ms: now,
        budgets: budgets as u64,
        sessions: sessions as u64,
        live_holds: live_holds as u64,
        idempotency_keys: keys as u64,
    }))
}

pub async fn cluster_digest(State(s): State<AppState>, principal: Principal) -> ApiResult<Json<DigestView>> {
    principal.require_admin()?;
    let (applied, digest, head) = s.sm.digest();
    Ok(Json(DigestView {
        node_id: s.node_id,
        applied_index: applied.map(|l| l.index),
        digest: hex::encode(digest),
        history_head: hex::encode(head),
    }))
}

fn not_leader(s: &AppState) -> ApiError {
    let leader = s
        .raft
        .metrics()
        .borrow()
        .current_leader
        .and_then(|l| members(s).into_iter().find(|m| m.id == l));
    ApiError::Conflict {
        code: "not_leader",
        message: match leader {
            Some(m) => format!("membership changes go to the leader: node {} at {}", m.id, m.api_addr),
            None => "membership changes go to the leader, and none is known now".into(),
        },
    }
}

pub async fn add_learner(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<AddLearnerRequest>,
) -> ApiResult<Json<MembershipResponse>> {
    principal.require_admin()?;
    if !req.raft_addr.contains(':') || !req.api_addr.contains(':') {
        return Err(ApiError::field("raft_addr", "addresses are host:port"));
    }
    if !s.peer_auth {
        return Err(ApiError::Conflict {
            code: "peer_token_required",
            message: "this node runs without a peer token, so it accepts no Raft RPC and can have no peers: \
                      restart every node with the same --peer-token first"
                .into(),
        });
    }
    let node = NodeAddr {
        raft: req.raft_addr,
        api: req.api_addr,
    };
    match s.raft.add_learner(req.id, node, true).await {
        Ok(resp) => Ok(Json(MembershipResponse {
            log_index: resp.log_id.index,
            members: members(&s),
        })),
        Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_))) => {
            Err(not_leader(&s))
        }
        Err(e) => Err(ApiError::Unprocessable {
            code: "membership_change_failed",
            message: e.to_string(),
        }),
    }
}

pub async fn change_membership(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<ChangeMembershipRequest>,
) -> ApiResult<Json<MembershipResponse>> {
    principal.require_admin()?;
    if req.voters.is_empty() {
        return Err(ApiError::field("voters", "at least one voter"));
    }
    let voters: std::collections::BTreeSet<u64> = req.voters.into_iter().collect();
    match s.raft.change_membership(voters, false).await {
        Ok(resp) => Ok(Json(MembershipResponse {
            log_index: resp.log_id.index,
            members: members(&s),
        })),
        Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_))) => {
            Err(not_leader(&s))
        }
        Err(e) => Err(ApiError::Unprocessable {
            code: "membership_change_failed",
            message: e.to_string(),
        }),
    }
}

pub async fn trigger_snapshot(State(s): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require_admin()?;
    s.raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A consistent, checksummed backup of this node's state (the snapshot
/// file format), after catching up with the leader. Streamed; the file is
/// unlinked as soon as it is open.
pub async fn backup(State(s): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require_admin()?;
    barrier(&s).await?;
    let sm = s.sm.clone();
    let dir = sm.store().dir().join("backups");
    let path = dir.join(format!("backup-{}-{}", s.node_id, crate::proposer::now_ms()));
    let (meta, file, len) = tokio::task::spawn_blocking(move || -> Result<_, storage::StoreError> {
        std::fs::create_dir_all(&dir)?;
        let meta = sm.backup_to(&path)?;
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        std::fs::remove_file(&path)?;
        Ok((meta, file, len))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let stream = tokio_util_stream(tokio::fs::File::from_std(file));
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    if let Ok(v) = header::HeaderValue::from_str(&meta.snapshot_id) {
        headers.insert("x-spendcap-snapshot-id", v);
    }
    Ok(response)
}

/// Reads a file as a stream of chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    /// Bytes read from the backup file per chunk.
    const CHUNK_BYTES: usize = 256 << 10;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
