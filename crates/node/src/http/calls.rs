//! The steps handlers share that reach the node: propose a command, pass
//! the read barrier, wait until a decided entry is applied here, and the
//! checks that refuse a request before anything is proposed.

use ledger::{BudgetId, Command, HoldId};

use super::error::{ApiError, ApiResult, SESSION_EXPIRED, SESSION_REVOKED};
use super::extract::Principal;
use crate::app_state::AppState;
use crate::node_reads::SessionStatus;
use crate::proposer::Decided;

/// Checks a command and proposes it; the answer is its decided outcome.
pub async fn decide(s: &AppState, command: Command) -> ApiResult<Decided> {
    command.validate().map_err(|e| ApiError::field(e.field, e.message))?;
    Ok(s.proposer.propose(command, s.limits.write_timeout).await?)
}

/// Waits until this node has applied everything committed before the call
/// (a linearizable read follows); returns the applied index.
pub async fn barrier(s: &AppState) -> ApiResult<u64> {
    Ok(s.reads.wait().await?.unwrap_or(0))
}

/// Waits until this node has applied `index` (after a write decided at the
/// leader), so a view read here reflects it. The command is decided: if
/// this node does not get there in time, the answer is `outcome_unknown`
/// (a retry with the same key returns the decision), never a code saying
/// nothing was applied.
pub async fn await_applied(s: &AppState, index: u64) -> ApiResult<()> {
    s.raft
        .wait(Some(s.limits.read_timeout))
        .applied_index_at_least(Some(index), "read your write")
        .await
        .map(|_| ())
        .map_err(|_| ApiError::decided_not_readable(index))
}

/// Refuses, without a trip through the log, a reference to a budget that
/// does not exist (checked after catching up with the leader, so a budget
/// created a moment ago elsewhere is seen).
pub async fn require_budget(s: &AppState, id: &BudgetId) -> ApiResult<()> {
    if s.local().budget_exists(id) {
        return Ok(());
    }
    barrier(s).await?;
    if s.local().budget_exists(id) {
        Ok(())
    } else {
        Err(ApiError::not_found("unknown_budget", format!("no budget {id}")))
    }
}

/// The same for an authorization id that was never handed out.
pub async fn require_issued(s: &AppState, id: HoldId) -> ApiResult<()> {
    if s.local().hold_id_issued(id) {
        return Ok(());
    }
    barrier(s).await?;
    if s.local().hold_id_issued(id) {
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
pub fn require_live_session(s: &AppState, principal: &Principal) -> ApiResult<()> {
    let Principal::Session(id, _) = principal else {
        return Ok(());
    };
    match s.local().session_status(id) {
        None | Some(SessionStatus::Active) => Ok(()),
        Some(SessionStatus::Revoked) => Err(ApiError::DeadSession {
            code: SESSION_REVOKED,
            message: "this session was revoked: its token may read, not write".into(),
        }),
        Some(SessionStatus::Expired) => Err(ApiError::DeadSession {
            code: SESSION_EXPIRED,
            message: "this session has expired: its token may read, not write".into(),
        }),
    }
}
