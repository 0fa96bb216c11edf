//! The records the state is made of: plain data (budgets, sessions, holds,
//! receipts, idempotency records, counters) and the usage arithmetic on caps.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::command::*;
use crate::ids::*;
use crate::outcome::*;

/// Spent and held amounts against one cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub spent: Amount,
    pub held: Amount,
}

impl Usage {
    /// spent + held. The invariant `committed <= cap` keeps this in range;
    /// it saturates rather than panic, so a (never expected) overflow reads
    /// as "nothing fits".
    pub fn committed(&self) -> Amount {
        Amount(self.spent.0.saturating_add(self.held.0))
    }

    /// What is left under `cap`.
    pub fn remaining(&self, cap: Amount) -> Amount {
        cap.saturating_sub(self.committed())
    }

    /// True when `amount` more still fits under `cap`.
    pub(crate) fn fits(&self, cap: Amount, amount: Amount) -> bool {
        self.committed().checked_add(amount).is_some_and(|total| total <= cap)
    }

    /// This usage with `amount` more held, if it does not overflow.
    pub(crate) fn with_hold(self, amount: Amount) -> Option<Usage> {
        Some(Usage {
            spent: self.spent,
            held: self.held.checked_add(amount)?,
        })
    }

    /// This usage after a hold of `held` ends with `captured` of it spent, if
    /// the level holds at least `held` and nothing overflows.
    pub(crate) fn settled(self, held: Amount, captured: Amount) -> Option<Usage> {
        Some(Usage {
            held: self.held.checked_sub(held)?,
            spent: self.spent.checked_add(captured)?,
        })
    }

    /// [`Self::settled`] that saturates instead of failing: used only where
    /// no command can be refused (expiry), see [`Ledger::expire_hold`].
    pub(crate) fn settled_saturating(self, held: Amount, captured: Amount) -> Usage {
        Usage {
            held: self.held.saturating_sub(held),
            spent: Amount(self.spent.0.saturating_add(captured.0)),
        }
    }
}

/// A cap together with what counts against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapUsage {
    pub cap: Amount,
    pub usage: Usage,
}

impl CapUsage {
    pub(crate) fn new(cap: Amount) -> Self {
        CapUsage {
            cap,
            usage: Usage::default(),
        }
    }

    pub fn remaining(&self) -> Amount {
        self.usage.remaining(self.cap)
    }

    /// Fresh, unused per-tool caps, as a creation command asks for them.
    pub(crate) fn per_tool(caps: &BTreeMap<Tool, Amount>) -> BTreeMap<Tool, CapUsage> {
        caps.iter().map(|(t, cap)| (t.clone(), CapUsage::new(*cap))).collect()
    }

    /// True when `have` holds exactly the tools of `asked`, each with the cap
    /// asked (usage aside): the test a retried creation passes.
    pub(crate) fn same_caps(have: &BTreeMap<Tool, CapUsage>, asked: &BTreeMap<Tool, Amount>) -> bool {
        have.len() == asked.len() && have.iter().all(|(t, u)| asked.get(t) == Some(&u.cap))
    }
}

/// A named account with a cap; sessions draw on it and on all its ancestors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub id: BudgetId,
    pub asset: Asset,
    pub limit: CapUsage,
    pub tool_caps: BTreeMap<Tool, CapUsage>,
    pub parent: Option<BudgetId>,
    pub depth: u8,
    pub created_at_ms: u64,
    /// Tools no session under this budget may be authorized for.
    pub blocked_tools: BTreeSet<Tool>,
}

/// The seed's PaymentSession: a credential with a cap baked in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub token_hash: TokenHash,
    pub asset: Asset,
    pub limit: CapUsage,
    pub tool_caps: BTreeMap<Tool, CapUsage>,
    pub budget: Option<BudgetId>,
    pub agent_id: String,
    pub wallet_address: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub revoked: bool,
    /// The tools the session may be authorized for; `None` allows any.
    pub tools: Option<BTreeSet<Tool>>,
    /// Most live holds the session may have at once.
    pub live_holds_max: u32,
}

/// An authorization: money reserved until captured, voided or expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub session_id: SessionId,
    pub tool: Tool,
    pub amount: Amount,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub context: DecisionContext,
    pub status: HoldStatus,
    pub captured: Amount,
    pub resolved_at_ms: Option<u64>,
    pub receipt_id: Option<ReceiptId>,
    /// Set when a payment against the hold may be in flight (a signed
    /// payment was sent): the hold then never expires on its own; only a
    /// capture or a void (reconciliation) ends it.
    pub settling: Option<Settling>,
}

/// A payment in flight against a hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settling {
    pub since_ms: u64,
    /// The caller's reference for the payment (e.g. the x402 nonce).
    pub reference: String,
}

/// The audit record of a capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: ReceiptId,
    pub hold_id: HoldId,
    pub session_id: SessionId,
    pub agent_id: String,
    pub tool: Tool,
    pub amount: Amount,
    pub asset: Asset,
    pub wallet_address: Option<String>,
    pub payment_request_id: Option<String>,
    pub signature: Option<String>,
    pub transaction_hash: Option<String>,
    pub network: Option<String>,
    pub resource_url: Option<String>,
    pub timestamp_ms: u64,
    pub context: DecisionContext,
    /// SHA-256 chain over all history records before this one: the audit
    /// trail cannot be edited without breaking every later digest.
    pub previous_history_hash: [u8; 32],
}

/// Where an idempotency key lives: authorizations are keyed per session,
/// captures and voids per hold.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyScope {
    Session(SessionId),
    Hold(HoldId),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScopedKey {
    pub scope: KeyScope,
    pub key: IdempotencyKey,
}

/// The first result for an idempotency key, kept for [`IDEMPOTENCY_WINDOW_MS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The session whose command wrote it; only it (or the admin) may replay.
    pub owner: Option<SessionId>,
    pub fingerprint: [u8; 16],
    pub outcome: Outcome,
    pub expires_at_ms: u64,
}

/// Counters and clocks of the state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Log time: the largest entry stamp applied so far. Never runs backwards.
    pub now_ms: u64,
    pub next_hold_id: u64,
    pub next_receipt_id: u64,
    /// Head of the SHA-256 chain over every history record emitted.
    pub history_head: [u8; 32],
    pub entries_applied: u64,
}
