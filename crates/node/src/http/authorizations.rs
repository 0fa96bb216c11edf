//! Authorizations: authorize (one, or a batch), capture, void, pin as
//! settling, read one, and list the settling ones. Every answer is
//! formatted from the decided outcome alone (it carries the session's
//! asset), so nothing waits for this node to catch up after a decision —
//! except a capture, void or pin refused because the hold already ended,
//! whose code (captured, voided, expired) comes from this node's history
//! once it has applied the refusing entry (`resolve_refusal`).

use std::time::Instant;

use api::{
    AuthorizationView, AuthorizeRequest, BatchAuthorizeRequest, BatchAuthorizeResponse, BatchItemResult,
    CaptureRequest, CaptureResponse, Decision, MarkSettlingRequest, MarkSettlingResponse, Page, VoidRequest,
    VoidResponse, BATCH_ITEMS_MAX,
};
use axum::extract::{Path, State};
use axum::Json;
use ledger::{Capture, Command, HoldId, Outcome, ReceiptInput, Refusal, SessionId, Void};

use super::calls::{await_applied, barrier, decide, require_issued, require_live_session};
use super::error::{refusal, ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, Principal};
use super::inputs::{
    amount_input, authorize_command, hold_id, idempotency_key, page_limit, session_id, AuthorizationQuery,
    AuthorizeFields,
};
use super::views::{decision_view, hold_view, money, page, position};
use crate::app_state::AppState;
use crate::proposer::Decided;

/// Counts a decision in the metrics (refusals are not decisions).
fn count_decision(outcome: &Outcome) {
    match outcome {
        Outcome::Approved { approval, replayed } => {
            metrics::counter!(api::metrics::DECISIONS_TOTAL, "outcome" => "approved", "reason" => "none").increment(1);
            if !replayed {
                metrics::counter!(api::metrics::AUTHORIZED_UNITS_TOTAL, "asset" => approval.asset.code.to_string())
                    .increment(u64::try_from(approval.amount.units()).unwrap_or(u64::MAX));
            }
        }
        Outcome::Denied(reason) => {
            metrics::counter!(api::metrics::DECISIONS_TOTAL, "outcome" => "denied", "reason" => reason.code())
                .increment(1);
        }
        _ => {}
    }
}

/// A decision as the API shows it, counted; an error for a refusal.
fn decision(session: &SessionId, d: &Decided) -> ApiResult<Decision> {
    let view = decision_view(session, d)?;
    count_decision(&d.outcome);
    Ok(view)
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
    metrics::histogram!(api::metrics::AUTHORIZE_DURATION_SECONDS, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result.map(Json)
}

async fn authorize_inner(s: AppState, principal: Principal, id: String, req: AuthorizeRequest) -> ApiResult<Decision> {
    let session = session_id(&id)?;
    principal.require_session(&session)?;
    require_live_session(&s, &principal)?;
    let asset = s.local().session_asset(&session);
    let command = authorize_command(session.clone(), req.into(), asset.as_ref(), principal.credential())?;
    #[cfg(feature = "fault-injection")]
    if crate::fault::local_decide_enabled() {
        if let Some(d) = local_decide(&s, &command) {
            return decision(&session, &d);
        }
    }
    let d = s.proposer.propose(command, s.limits.write_timeout).await?;
    decision(&session, &d)
}

/// The deliberately unsafe `local-decide` fault (see `crate::fault`): an
/// approval made up from local state, answered at once, while the real
/// command is proposed in the background.
#[cfg(feature = "fault-injection")]
fn local_decide(s: &AppState, command: &Command) -> Option<Decided> {
    let outcome = crate::fault::local_approval(&s.local(), command)?;
    let at = match &outcome {
        Outcome::Approved { approval, .. } => approval.at,
        _ => return None,
    };
    let proposer = s.proposer.clone();
    let timeout = s.limits.write_timeout;
    let background = command.clone();
    tokio::spawn(async move {
        let _ = proposer.propose(background, timeout).await;
    });
    Some(Decided {
        outcome,
        log_index: at.log_index,
        batch_position: at.batch_position,
        time_ms: at.time_ms,
    })
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
        let (sid, fields) = AuthorizeFields::from_batch_item(item);
        let built = session_id(&sid).and_then(|sid| {
            let asset = s.local().session_asset(&sid);
            // The batch endpoint is the admin's: no session credential.
            authorize_command(sid.clone(), fields, asset.as_ref(), None).map(|c| (sid, c))
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
    let results = slots
        .into_iter()
        .map(|slot| {
            let r = slot.and_then(|(sid, i)| match decided.get(i) {
                Some(d) => decision(&sid, d),
                None => Err(ApiError::Internal(format!("no outcome for batch item {i}"))),
            });
            match r {
                Ok(d) => BatchItemResult::Decision(d),
                Err(e) => BatchItemResult::Error { error: e.body() },
            }
        })
        .collect();
    Ok(Json(BatchAuthorizeResponse { results }))
}

/// The error for a decision that is not the resolution asked for: its
/// refusal explained, or an internal error for any other outcome.
async fn not_resolved(s: &AppState, hold: HoldId, d: &Decided) -> ApiError {
    match &d.outcome {
        Outcome::Refused(r) => resolve_refusal(s, hold, r.clone(), d.log_index).await,
        other => ApiError::Internal(format!("unexpected outcome {other:?}")),
    }
}

/// The answer to a refused capture, void or pin. For a hold no longer live,
/// the code says how it ended (captured, voided, expired); the ledger keeps
/// no resolved holds in memory, so that comes from this node's history —
/// read only after this node has applied the refusing entry: a follower
/// that lags would not yet have the void that came first and would wrongly
/// answer `authorization_expired`. If this node cannot catch up in time the
/// answer is `outcome_unknown` (a retry tells), never a wrong code.
async fn resolve_refusal(s: &AppState, hold: HoldId, r: Refusal, log_index: u64) -> ApiError {
    match r {
        Refusal::AuthorizationNotActive { .. } => {
            if let Err(e) = await_applied(s, log_index).await {
                return e;
            }
            match s.local().resolved_hold(hold) {
                Ok(Some(h)) => refusal(r, Some(h.status)),
                Ok(None) => ApiError::Internal(format!(
                    "authorization {hold} is neither live nor in history at index {log_index}"
                )),
                // A history read that failed is a storage error, not a
                // missing record.
                Err(e) => e.into(),
            }
        }
        r => refusal(r, None),
    }
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
    match &d.outcome {
        Outcome::Captured { captured, replayed } => {
            metrics::counter!(api::metrics::CAPTURES_TOTAL).increment(1);
            if !replayed {
                metrics::counter!(api::metrics::CAPTURED_UNITS_TOTAL, "asset" => captured.asset.code.to_string())
                    .increment(u64::try_from(captured.captured.units()).unwrap_or(u64::MAX));
            }
            Ok(Json(CaptureResponse {
                authorization_id: hold.to_string(),
                receipt_id: captured.receipt_id.to_string(),
                captured: money(captured.captured, &captured.asset),
                released: money(captured.released, &captured.asset),
                replayed: *replayed,
                position: position(&d),
            }))
        }
        _ => Err(not_resolved(&s, hold, &d).await),
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
    match &d.outcome {
        Outcome::Voided {
            released,
            asset,
            replayed,
            ..
        } => {
            metrics::counter!(api::metrics::VOIDS_TOTAL).increment(1);
            Ok(Json(VoidResponse {
                authorization_id: hold.to_string(),
                released: money(*released, asset),
                replayed: *replayed,
                position: position(&d),
            }))
        }
        _ => Err(not_resolved(&s, hold, &d).await),
    }
}

pub async fn get_authorization(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<AuthorizationView>> {
    let hold = hold_id(&id)?;
    barrier(&s).await?;
    let found = s
        .local()
        .hold(hold)?
        .ok_or_else(|| ApiError::not_found("unknown_authorization", format!("no authorization {hold}")))?;
    principal.require_session_read(&found.hold.session_id)?;
    let asset = found
        .asset
        .ok_or_else(|| ApiError::Internal(format!("the session of {hold} is missing")))?;
    Ok(Json(hold_view(&found.hold, &asset)))
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
    match &d.outcome {
        Outcome::SettlingMarked { already, .. } => Ok(Json(MarkSettlingResponse {
            authorization_id: hold.to_string(),
            already: *already,
            position: position(&d),
        })),
        _ => Err(not_resolved(&s, hold, &d).await),
    }
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
    // A live hold's session always exists (sessions are never deleted).
    let items: Vec<AuthorizationView> = s
        .local()
        .settling_holds(after, limit)
        .iter()
        .filter_map(|h| h.asset.as_ref().map(|asset| hold_view(&h.hold, asset)))
        .collect();
    Ok(Json(page(items, limit, |h| h.id.clone())))
}
