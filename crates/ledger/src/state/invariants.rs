//! The ledger's invariants, checked in full by tests and on load, and for the
//! records an entry touched after every apply in debug builds.

use std::collections::BTreeMap;

use crate::amount::Amount;
use crate::ids::BudgetId;
#[cfg(debug_assertions)]
use crate::ids::{SessionId, Tool};
use crate::model::CapUsage;
#[cfg(debug_assertions)]
use crate::model::Usage;
use crate::outcome::HoldStatus;
#[cfg(debug_assertions)]
use crate::records::RecordKey;

use super::Ledger;

fn within(what: &str, cap: &CapUsage) -> Result<(), String> {
    let total = cap.usage.spent.checked_add(cap.usage.held);
    match total {
        Some(t) if t <= cap.cap => Ok(()),
        _ => Err(format!(
            "{what}: spent {} + held {} exceeds cap {}",
            cap.usage.spent, cap.usage.held, cap.cap
        )),
    }
}

fn add(map: &mut BTreeMap<String, Amount>, key: String, amount: Amount) -> Result<(), String> {
    let slot = map.entry(key).or_default();
    *slot = slot.checked_add(amount).ok_or("sum of holds overflows")?;
    Ok(())
}

impl Ledger {
    /// Every invariant over the whole state:
    /// - for every session, budget and tool cap: spent + held <= cap;
    /// - what each level holds equals the sum of the live holds under it;
    /// - what each budget has spent equals what the sessions under it spent;
    /// - the derived indexes match the records.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held: BTreeMap<String, Amount> = BTreeMap::new();
        for hold in self.holds.values() {
            if hold.status != HoldStatus::Held {
                return Err(format!("live hold {} has status {:?}", hold.id, hold.status));
            }
            if hold.id.0 >= self.meta.next_hold_id {
                return Err(format!("hold {} is beyond the id counter", hold.id));
            }
            let session = self
                .sessions
                .get(&hold.session_id)
                .ok_or_else(|| format!("hold {} names unknown session {}", hold.id, hold.session_id))?;
            add(&mut held, format!("s/{}", session.id), hold.amount)?;
            add(&mut held, format!("s/{}/{}", session.id, hold.tool), hold.amount)?;
            for b in self.chain_of(&session.budget) {
                add(&mut held, format!("b/{b}"), hold.amount)?;
                add(&mut held, format!("b/{b}/{}", hold.tool), hold.amount)?;
            }
            let indexed = self.hold_deadlines.contains(&(hold.expires_at_ms, hold.id));
            if indexed == hold.settling.is_some() {
                return Err(format!(
                    "hold {} deadline index disagrees with its settling state",
                    hold.id
                ));
            }
            if hold.settling.is_none() && hold.expires_at_ms <= self.meta.now_ms {
                return Err(format!("hold {} outlived its deadline", hold.id));
            }
        }
        if self.hold_deadlines.len() != self.holds.values().filter(|h| h.settling.is_none()).count() {
            return Err("deadline index has entries for holds that are gone".into());
        }
        let mut live: BTreeMap<&crate::ids::SessionId, u32> = BTreeMap::new();
        for hold in self.holds.values() {
            let n = live.entry(&hold.session_id).or_default();
            *n = n.checked_add(1).ok_or("live hold count overflows")?;
        }
        if live.len() != self.live_per_session.len()
            || live.iter().any(|(id, n)| self.live_per_session.get(*id) != Some(n))
        {
            return Err("live-holds-per-session index disagrees with the holds".into());
        }
        let held_of = |key: String| held.get(&key).copied().unwrap_or_default();
        // Each per-tool cap of `owner` (whose held-sum keys start with
        // `key`) is within its cap and holds what its live holds sum to.
        let tool_caps_hold_their_holds = |owner: &str, key: &str, tool_caps: &BTreeMap<_, CapUsage>| {
            for (tool, tc) in tool_caps {
                within(&format!("{owner} tool {tool}"), tc)?;
                if tc.usage.held != held_of(format!("{key}/{tool}")) {
                    return Err(format!("{owner} tool {tool} held amount disagrees with its holds"));
                }
            }
            Ok::<(), String>(())
        };

        let mut spent: BTreeMap<String, Amount> = BTreeMap::new();
        for session in self.sessions.values() {
            within(&format!("session {}", session.id), &session.limit)?;
            if session.limit.usage.held != held_of(format!("s/{}", session.id)) {
                return Err(format!(
                    "session {} holds {} but its live holds sum differently",
                    session.id, session.limit.usage.held
                ));
            }
            tool_caps_hold_their_holds(
                &format!("session {}", session.id),
                &format!("s/{}", session.id),
                &session.tool_caps,
            )?;
            // The limit is fixed at creation and checked before every new
            // hold, so a session never has more live holds than it allows.
            if self.live_per_session.get(&session.id).copied().unwrap_or(0) > session.live_holds_max {
                return Err(format!("session {} has more live holds than its limit", session.id));
            }
            if self.by_token.get(&session.token_hash) != Some(&session.id) {
                return Err(format!("token index misses session {}", session.id));
            }
            for b in self.chain_of(&session.budget) {
                add(&mut spent, b.to_string(), session.limit.usage.spent)?;
            }
        }
        if self.by_token.len() != self.sessions.len() {
            return Err("token index has stale entries".into());
        }
        for budget in self.budgets.values() {
            within(&format!("budget {}", budget.id), &budget.limit)?;
            if budget.limit.usage.held != held_of(format!("b/{}", budget.id)) {
                return Err(format!("budget {} held amount disagrees with its holds", budget.id));
            }
            if budget.limit.usage.spent != spent.get(budget.id.as_str()).copied().unwrap_or_default() {
                return Err(format!("budget {} spent amount disagrees with its sessions", budget.id));
            }
            tool_caps_hold_their_holds(
                &format!("budget {}", budget.id),
                &format!("b/{}", budget.id),
                &budget.tool_caps,
            )?;
        }
        for (key, record) in &self.idempotency {
            if !self.key_deadlines.contains(&(record.expires_at_ms, key.clone())) {
                return Err("idempotency deadline index misses a key".into());
            }
        }
        if self.key_deadlines.len() != self.idempotency.len() {
            return Err("idempotency deadline index has stale entries".into());
        }
        Ok(())
    }

    fn chain_of(&self, start: &Option<BudgetId>) -> Vec<BudgetId> {
        let mut out = Vec::new();
        let mut next = start.clone();
        while let Some(id) = next {
            if out.len() >= usize::from(crate::command::BUDGET_DEPTH_MAX) {
                break;
            }
            next = self.budgets.get(&id).and_then(|b| b.parent.clone());
            out.push(id);
        }
        out
    }

    /// The cap invariant for the sessions and budgets the last entry touched;
    /// cheap enough to run after every apply in debug builds.
    #[cfg(debug_assertions)]
    pub(crate) fn check_touched(&self) {
        for key in &self.changes.dirty {
            match key {
                RecordKey::Session(id) => {
                    if let Some(s) = self.sessions.get(id) {
                        assert_cap(&s.id, None, &s.limit);
                        for (tool, tc) in &s.tool_caps {
                            assert_cap(&s.id, Some(tool), tc);
                        }
                    }
                }
                RecordKey::Budget(id) => {
                    if let Some(b) = self.budgets.get(id) {
                        assert_budget(&b.id, None, &b.limit);
                        for (tool, tc) in &b.tool_caps {
                            assert_budget(&b.id, Some(tool), tc);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(debug_assertions)]
fn assert_cap(id: &SessionId, tool: Option<&Tool>, cap: &CapUsage) {
    assert!(
        fits(&cap.usage, cap.cap),
        "session {id} tool {tool:?} over its cap: {cap:?}"
    );
}

#[cfg(debug_assertions)]
fn assert_budget(id: &BudgetId, tool: Option<&Tool>, cap: &CapUsage) {
    assert!(
        fits(&cap.usage, cap.cap),
        "budget {id} tool {tool:?} over its cap: {cap:?}"
    );
}

#[cfg(debug_assertions)]
fn fits(usage: &Usage, cap: Amount) -> bool {
    usage.spent.checked_add(usage.held).is_some_and(|t| t <= cap)
}
