//! Reads of the state, for the node's queries.

use crate::amount::Amount;
use crate::command::TokenHash;
use crate::ids::*;
use crate::model::*;

use super::Ledger;

// Reads.
impl Ledger {
    pub fn now_ms(&self) -> u64 {
        self.meta.now_ms
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn budget(&self, id: &BudgetId) -> Option<&Budget> {
        self.budgets.get(id)
    }

    pub fn session(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id)
    }

    pub fn session_by_token(&self, token_hash: &TokenHash) -> Option<&Session> {
        self.by_token.get(token_hash).and_then(|id| self.sessions.get(id))
    }

    /// A live hold; resolved holds are in history.
    pub fn live_hold(&self, id: HoldId) -> Option<&Hold> {
        self.holds.get(&id)
    }

    /// How many live holds a session has.
    pub fn live_holds_of(&self, id: &SessionId) -> u32 {
        self.live_per_session.get(id).copied().unwrap_or(0)
    }

    /// True when the id was handed out (live or resolved).
    pub fn hold_id_issued(&self, id: HoldId) -> bool {
        id.0 < self.meta.next_hold_id
    }

    pub fn budgets(&self, after: Option<&BudgetId>, limit: usize) -> Vec<&Budget> {
        match after {
            None => self.budgets.values().take(limit).collect(),
            Some(a) => self
                .budgets
                .range::<BudgetId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .map(|(_, b)| b)
                .take(limit)
                .collect(),
        }
    }

    pub fn sessions(&self, after: Option<&SessionId>, limit: usize) -> Vec<&Session> {
        match after {
            None => self.sessions.values().take(limit).collect(),
            Some(a) => self
                .sessions
                .range::<SessionId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .map(|(_, s)| s)
                .take(limit)
                .collect(),
        }
    }

    pub fn live_holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// Holds with a payment possibly in flight: what reconciliation works on.
    pub fn settling_holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values().filter(|h| h.settling.is_some())
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.budgets.len(),
            self.sessions.len(),
            self.holds.len(),
            self.idempotency.len(),
        )
    }

    /// The earliest time at which something expires on its own (a hold or an
    /// idempotency key): the leader proposes an empty entry then, so expiry
    /// happens even without traffic.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let hold = self.hold_deadlines.first().map(|(d, _)| *d);
        let key = self.key_deadlines.first().map(|(d, _)| *d);
        match (hold, key) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How much more a session can authorize for a tool right now, counting
    /// the session, its tool cap and every budget above it.
    pub fn available(&self, session: &Session, tool: Option<&Tool>) -> Amount {
        let mut available = session.limit.remaining();
        if let Some(tc) = tool.and_then(|t| session.tool_caps.get(t)) {
            available = available.min(tc.remaining());
        }
        for budget_id in self.budget_chain(session) {
            let Some(b) = self.budgets.get(&budget_id) else {
                continue;
            };
            available = available.min(b.limit.remaining());
            if let Some(tc) = tool.and_then(|t| b.tool_caps.get(t)) {
                available = available.min(tc.remaining());
            }
        }
        available
    }
}
