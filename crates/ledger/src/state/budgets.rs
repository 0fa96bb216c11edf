//! Applying budget commands: create and update.

use std::collections::BTreeMap;

use crate::amount::Amount;
use crate::command::*;
use crate::ids::*;
use crate::model::*;
use crate::outcome::*;
use crate::records::RecordKey;

use super::{inconsistent, Ledger};

impl Ledger {
    /// The budget `id`, if it exists and counts in `asset`; otherwise the
    /// refusal to answer (unknown budget, or the asset mismatch).
    pub(super) fn budget_in(&self, id: &BudgetId, asset: &Asset) -> Result<&Budget, Outcome> {
        match self.budgets.get(id) {
            None => Err(Outcome::Refused(Refusal::UnknownBudget { budget_id: id.clone() })),
            Some(b) if b.asset != *asset => Err(Outcome::Refused(Refusal::AssetMismatch {
                expected: b.asset.code.to_string(),
                found: asset.code.to_string(),
            })),
            Some(b) => Ok(b),
        }
    }

    pub(super) fn create_budget(&mut self, c: &CreateBudget) -> Outcome {
        if let Some(existing) = self.budgets.get(&c.id) {
            let same = existing.asset == c.asset
                && existing.limit.cap == c.cap
                && existing.parent == c.parent
                && CapUsage::same_caps(&existing.tool_caps, &c.tool_caps)
                && existing.blocked_tools == c.blocked_tools;
            return if same {
                Outcome::BudgetCreated { existed: true }
            } else {
                Outcome::Refused(Refusal::AlreadyExists)
            };
        }
        let depth = match &c.parent {
            None => 1,
            Some(parent_id) => match self.budget_in(parent_id, &c.asset) {
                Err(refused) => return refused,
                Ok(parent) if parent.depth >= BUDGET_DEPTH_MAX => {
                    return Outcome::Refused(Refusal::BudgetDepthExceeded)
                }
                Ok(parent) => parent.depth.saturating_add(1),
            },
        };
        let budget = Budget {
            id: c.id.clone(),
            asset: c.asset.clone(),
            limit: CapUsage::new(c.cap),
            tool_caps: CapUsage::per_tool(&c.tool_caps),
            parent: c.parent.clone(),
            depth,
            created_at_ms: self.meta.now_ms,
            blocked_tools: c.blocked_tools.clone(),
        };
        self.budgets.insert(c.id.clone(), budget);
        self.changes.dirty.insert(RecordKey::Budget(c.id.clone()));
        Outcome::BudgetCreated { existed: false }
    }

    pub(super) fn update_budget(&mut self, c: &UpdateBudget) -> Outcome {
        let Some(budget) = self.budgets.get(&c.id) else {
            return Outcome::Refused(Refusal::UnknownBudget {
                budget_id: c.id.clone(),
            });
        };
        if let Some(cap) = c.cap {
            let committed = budget.limit.usage.committed();
            if cap < committed {
                return Outcome::Refused(Refusal::CapBelowUsage { committed });
            }
        }
        // A tool cap that stays keeps its usage. A tool cap that is new
        // counts spend from now on, and starts out holding every live hold
        // for the tool under this budget: those holds will be released
        // through it, so it must count them (else releasing one would take
        // more from the cap than it ever held). It may not be set below them.
        let mut new_tool_caps = BTreeMap::new();
        if let Some(caps) = &c.tool_caps {
            for (tool, cap) in caps {
                let usage = match budget.tool_caps.get(tool) {
                    Some(existing) => existing.usage,
                    None => match self.live_held_under(&c.id, tool) {
                        Some(held) => Usage {
                            spent: Amount::ZERO,
                            held,
                        },
                        None => return inconsistent("live holds for the tool overflow"),
                    },
                };
                if *cap < usage.committed() {
                    return Outcome::Refused(Refusal::CapBelowUsage {
                        committed: usage.committed(),
                    });
                }
                new_tool_caps.insert(tool.clone(), CapUsage { cap: *cap, usage });
            }
        }
        let Some(budget) = self.budgets.get_mut(&c.id) else {
            return Outcome::Refused(Refusal::UnknownBudget {
                budget_id: c.id.clone(),
            });
        };
        if let Some(cap) = c.cap {
            budget.limit.cap = cap;
        }
        if c.tool_caps.is_some() {
            budget.tool_caps = new_tool_caps;
        }
        if let Some(blocked) = &c.blocked_tools {
            budget.blocked_tools = blocked.clone();
        }
        self.changes.dirty.insert(RecordKey::Budget(c.id.clone()));
        Outcome::BudgetUpdated
    }

    /// The sum of the live holds for `tool` by sessions drawing on `budget`
    /// (directly or through a budget below it); `None` on overflow.
    pub(super) fn live_held_under(&self, budget: &BudgetId, tool: &Tool) -> Option<Amount> {
        let mut total = Amount::ZERO;
        for hold in self.holds.values().filter(|h| &h.tool == tool) {
            let Some(session) = self.sessions.get(&hold.session_id) else {
                continue;
            };
            if self.budget_chain(session).contains(budget) {
                total = total.checked_add(hold.amount)?;
            }
        }
        Some(total)
    }
}
