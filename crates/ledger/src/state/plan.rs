//! The levels a hold counts against and the plan of new usages for them:
//! computed with checked arithmetic first, written only when all fit.

use crate::ids::*;
use crate::model::*;
use crate::records::RecordKey;

use super::Ledger;

/// One cap a hold counts against: the session's, a tool cap on the session,
/// a budget's, or a tool cap on a budget.
#[derive(Clone, Debug)]
pub(super) enum Level {
    Session,
    SessionTool,
    Budget(BudgetId),
    BudgetTool(BudgetId),
}

/// New usages for every level a hold touches, computed (with checked
/// arithmetic) before anything changes.
pub(super) type Plan = Vec<(Level, Usage)>;

impl Ledger {
    /// The new usage `change` gives every level a hold for `tool` by
    /// `session` counts against (the session, its tool cap, each budget in
    /// `chain` and its tool cap), or `None` if any of them fails. Touches
    /// nothing.
    pub(super) fn plan(
        &self,
        session: &Session,
        tool: &Tool,
        chain: &[BudgetId],
        change: impl Fn(Usage) -> Option<Usage>,
    ) -> Option<Plan> {
        let mut plan = vec![(Level::Session, change(session.limit.usage)?)];
        if let Some(tc) = session.tool_caps.get(tool) {
            plan.push((Level::SessionTool, change(tc.usage)?));
        }
        for budget_id in chain {
            let Some(b) = self.budgets.get(budget_id) else { continue };
            plan.push((Level::Budget(budget_id.clone()), change(b.limit.usage)?));
            if let Some(tc) = b.tool_caps.get(tool) {
                plan.push((Level::BudgetTool(budget_id.clone()), change(tc.usage)?));
            }
        }
        Some(plan)
    }

    /// Writes a plan's usages (every level it names exists: the plan was
    /// made from the same state, with nothing changed in between).
    pub(super) fn write_plan(&mut self, session_id: &SessionId, tool: &Tool, plan: Plan) {
        for (level, usage) in plan {
            let slot = match &level {
                Level::Session => self.sessions.get_mut(session_id).map(|s| &mut s.limit),
                Level::SessionTool => self
                    .sessions
                    .get_mut(session_id)
                    .and_then(|s| s.tool_caps.get_mut(tool)),
                Level::Budget(id) => self.budgets.get_mut(id).map(|b| &mut b.limit),
                Level::BudgetTool(id) => self.budgets.get_mut(id).and_then(|b| b.tool_caps.get_mut(tool)),
            };
            if let Some(slot) = slot {
                slot.usage = usage;
            }
            match level {
                Level::Session | Level::SessionTool => {
                    self.changes.dirty.insert(RecordKey::Session(session_id.clone()));
                }
                Level::Budget(id) | Level::BudgetTool(id) => {
                    self.changes.dirty.insert(RecordKey::Budget(id));
                }
            }
        }
    }
}
