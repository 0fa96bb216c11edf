//! What comes out of applying a command: the outcome (approved, denied,
//! refused, ...) and the parts it is made of.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::command::InvalidCommand;
use crate::ids::{Asset, BudgetId, HoldId, ReceiptId, Tool};

/// The state of a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HoldStatus {
    Held,
    Captured,
    Voided,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Captured => "captured",
            HoldStatus::Voided => "voided",
            HoldStatus::Expired => "expired",
        }
    }
}

/// Why an authorization was denied. A denial moves no money; its idempotency
/// key (if any) remembers it, so a retry gets the same denial. A reason that
/// names an amount carries the session's asset, so the answer can be
/// formatted from the outcome alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    UnknownSession,
    SessionRevoked,
    SessionExpired,
    /// The session's own cap; `remaining` is what it has left, in `asset`
    /// (the session's).
    SessionCap {
        remaining: Amount,
        asset: Asset,
    },
    /// A per-tool cap on the session (`budget_id: None`) or on a budget.
    ToolCap {
        tool: Tool,
        budget_id: Option<BudgetId>,
        remaining: Amount,
        asset: Asset,
    },
    /// A budget the session draws from, directly or through its ancestors.
    BudgetCap {
        budget_id: BudgetId,
        remaining: Amount,
        asset: Asset,
    },
    /// The session has a tool allowlist and the tool is not on it.
    ToolNotAllowed,
    /// A budget the session draws on (directly or through its ancestors)
    /// blocks the tool.
    ToolBlocked {
        budget_id: BudgetId,
    },
    /// The session already has `limit` live holds (its `live_holds_max`).
    TooManyHolds {
        limit: u32,
    },
}

impl DenyReason {
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::UnknownSession => "unknown_session",
            DenyReason::SessionRevoked => "session_revoked",
            DenyReason::SessionExpired => "session_expired",
            DenyReason::SessionCap { .. } => "session_cap",
            DenyReason::ToolCap { .. } => "tool_cap",
            DenyReason::BudgetCap { .. } => "budget_cap",
            DenyReason::ToolNotAllowed => "tool_not_allowed",
            DenyReason::ToolBlocked { .. } => "tool_blocked",
            DenyReason::TooManyHolds { .. } => "live_holds_max",
        }
    }
}

/// A command that could not take effect. Like a denial, it changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Invalid(InvalidCommand),
    /// The amount does not fit the session's asset (too many decimals).
    InvalidAmount {
        message: String,
    },
    /// An id is taken by something with different parameters.
    AlreadyExists,
    UnknownBudget {
        budget_id: BudgetId,
    },
    AssetMismatch {
        expected: String,
        found: String,
    },
    BudgetDepthExceeded,
    CapBelowUsage {
        committed: Amount,
    },
    UnknownSession,
    UnknownAuthorization,
    AuthorizationNotActive {
        status: HoldStatus,
    },
    AmountExceedsHold {
        held: Amount,
    },
    /// The caller's session does not own the hold.
    Forbidden,
    /// The idempotency key was used before with different parameters.
    IdempotencyConflict,
    /// The hold is pinned as settling (a signed payment may be in flight):
    /// only the gateway or the admin may resolve it, never the session.
    HoldSettling,
    /// The session token the request came with is no longer the session's
    /// (it was rotated): nothing was done.
    TokenSuperseded,
    /// Applying the command would break the state's own bookkeeping (an
    /// arithmetic overflow or a count that disagrees with the records). The
    /// invariants rule this out; apply refuses rather than panic, and the
    /// command changes nothing.
    Inconsistent {
        detail: String,
    },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid_command",
            Refusal::InvalidAmount { .. } => "invalid_amount",
            Refusal::AlreadyExists => "already_exists",
            Refusal::UnknownBudget { .. } => "unknown_budget",
            Refusal::AssetMismatch { .. } => "asset_mismatch",
            Refusal::BudgetDepthExceeded => "budget_depth_exceeded",
            Refusal::CapBelowUsage { .. } => "cap_below_usage",
            Refusal::UnknownSession => "unknown_session",
            Refusal::UnknownAuthorization => "unknown_authorization",
            Refusal::AuthorizationNotActive {
                status: HoldStatus::Captured,
            } => "already_captured",
            Refusal::AuthorizationNotActive {
                status: HoldStatus::Voided,
            } => "already_voided",
            Refusal::AuthorizationNotActive {
                status: HoldStatus::Expired,
            } => "authorization_expired",
            Refusal::AuthorizationNotActive {
                status: HoldStatus::Held,
            } => "authorization_active",
            Refusal::AmountExceedsHold { .. } => "amount_exceeds_hold",
            Refusal::Forbidden => "forbidden",
            Refusal::IdempotencyConflict => "idempotency_conflict",
            Refusal::HoldSettling => "hold_settling",
            Refusal::TokenSuperseded => "token_superseded",
            Refusal::Inconsistent { .. } => "state_inconsistent",
        }
    }
}

/// Where a command was first decided: its log entry and its place in the
/// entry's batch. A replayed answer keeps the first decision's position, so
/// a checker can order every acknowledged effect by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub log_index: u64,
    pub batch_position: u32,
    /// The log time it was decided at.
    pub time_ms: u64,
}

/// An approved authorization: the amount is reserved at every level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub at: Position,
    pub hold_id: HoldId,
    pub amount: Amount,
    /// The session's asset: the unit of the amounts here.
    pub asset: Asset,
    /// What the session has left after this hold.
    pub session_remaining: Amount,
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub at: Position,
    pub hold_id: HoldId,
    pub receipt_id: ReceiptId,
    pub captured: Amount,
    /// The session's asset: the unit of the amounts here.
    pub asset: Asset,
    /// The part of the hold given back.
    pub released: Amount,
}

/// The result of one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    BudgetCreated {
        existed: bool,
    },
    BudgetUpdated,
    SessionCreated {
        existed: bool,
        expires_at_ms: u64,
    },
    SessionRevoked {
        already: bool,
    },
    TokenRotated,
    /// `replayed` is true when an idempotency key returned the first result.
    Approved {
        approval: Approval,
        replayed: bool,
    },
    Denied(DenyReason),
    Captured {
        captured: Captured,
        replayed: bool,
    },
    Voided {
        at: Position,
        hold_id: HoldId,
        released: Amount,
        /// The session's asset: the unit of `released`.
        asset: Asset,
        replayed: bool,
    },
    SettlingMarked {
        hold_id: HoldId,
        already: bool,
    },
    Refused(Refusal),
}

impl Outcome {
    /// Marks a stored result as returned again for a retried key.
    pub(crate) fn as_replay(&self) -> Outcome {
        let mut o = self.clone();
        match &mut o {
            Outcome::Approved { replayed, .. }
            | Outcome::Captured { replayed, .. }
            | Outcome::Voided { replayed, .. } => *replayed = true,
            _ => {}
        }
        o
    }
}
