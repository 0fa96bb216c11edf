//! Applying an authorization: every check, then the hold and its reservation.

use crate::amount::Amount;
use crate::command::*;
use crate::ids::*;
use crate::model::*;
use crate::outcome::*;
use crate::records::RecordKey;

use super::plan::Level;
use super::{fingerprint, inconsistent, Ledger};

impl Ledger {
    pub(super) fn authorize(&mut self, c: &Authorize) -> Outcome {
        let Some(session) = self.sessions.get(&c.session_id) else {
            return Outcome::Denied(DenyReason::UnknownSession);
        };
        if c.credential.is_some_and(|h| h != session.token_hash) {
            return Outcome::Refused(Refusal::TokenSuperseded);
        }
        let key = c.idempotency_key.clone().map(|key| ScopedKey {
            scope: KeyScope::Session(c.session_id.clone()),
            key,
        });
        let fp = fingerprint(&("authorize", &c.amount, &c.tool, &c.hold_ttl_ms, &c.context));
        if let Some(outcome) = self.replay(&key, &fp) {
            return outcome;
        }
        let now = self.meta.now_ms;
        let (amount, chain) = match self.authorize_checks(session, c, now) {
            Ok(checked) => checked,
            Err(Outcome::Denied(reason)) => {
                // A denial moves no money, but its key remembers it: a
                // retry, or a late copy of the first attempt still in
                // flight, gets this denial again and can never turn into an
                // approval after the caller was told "denied".
                let outcome = Outcome::Denied(reason);
                self.remember(key, Some(c.session_id.clone()), fp, &outcome);
                return outcome;
            }
            Err(other) => return other,
        };

        // Plan everything with checked arithmetic, then change the state.
        let Some(plan) = self.plan(session, &c.tool, &chain, |u| u.with_hold(amount)) else {
            return inconsistent("reserving the hold overflows a level");
        };
        let Some(next_hold_id) = self.meta.next_hold_id.checked_add(1) else {
            return inconsistent("hold ids are exhausted");
        };
        let live = self.live_per_session.get(&c.session_id).copied().unwrap_or(0);
        let Some(live) = live.checked_add(1) else {
            return inconsistent("live hold count overflows");
        };
        let session_remaining = plan
            .iter()
            .find(|(l, _)| matches!(l, Level::Session))
            .map(|(_, u)| u.remaining(session.limit.cap))
            .unwrap_or_default();
        let asset = session.asset.clone();
        self.write_plan(&c.session_id, &c.tool, plan);

        let hold_id = HoldId(self.meta.next_hold_id);
        self.meta.next_hold_id = next_hold_id;
        self.live_per_session.insert(c.session_id.clone(), live);
        let expires_at_ms = now.saturating_add(c.hold_ttl_ms.unwrap_or(HOLD_TTL_DEFAULT_MS));
        self.holds.insert(
            hold_id,
            Hold {
                id: hold_id,
                session_id: c.session_id.clone(),
                tool: c.tool.clone(),
                amount,
                created_at_ms: now,
                expires_at_ms,
                idempotency_key: c.idempotency_key.clone(),
                context: c.context.clone(),
                status: HoldStatus::Held,
                captured: Amount::ZERO,
                resolved_at_ms: None,
                receipt_id: None,
                settling: None,
            },
        );
        self.hold_deadlines.insert((expires_at_ms, hold_id));
        self.changes.dirty.insert(RecordKey::Hold(hold_id));

        let outcome = Outcome::Approved {
            approval: Approval {
                at: self.position,
                hold_id,
                amount,
                asset,
                session_remaining,
                expires_at_ms,
            },
            replayed: false,
        };
        self.remember(key, Some(c.session_id.clone()), fp, &outcome);
        outcome
    }

    /// Every check of an authorization, touching nothing: the amount in the
    /// session's asset and the budgets it draws on, or the denial (or
    /// refusal) to answer.
    pub(super) fn authorize_checks(
        &self,
        session: &Session,
        c: &Authorize,
        now: u64,
    ) -> Result<(Amount, Vec<BudgetId>), Outcome> {
        if session.revoked {
            return Err(Outcome::Denied(DenyReason::SessionRevoked));
        }
        if now >= session.expires_at_ms {
            return Err(Outcome::Denied(DenyReason::SessionExpired));
        }
        let amount = c
            .amount
            .resolve(session.asset.decimals)
            .map_err(|e| Outcome::Refused(Refusal::InvalidAmount { message: e.to_string() }))?;
        if let Some(tools) = &session.tools {
            if !tools.contains(&c.tool) {
                return Err(Outcome::Denied(DenyReason::ToolNotAllowed));
            }
        }
        let chain = self.budget_chain(session);
        for budget_id in &chain {
            if self
                .budgets
                .get(budget_id)
                .is_some_and(|b| b.blocked_tools.contains(&c.tool))
            {
                return Err(Outcome::Denied(DenyReason::ToolBlocked {
                    budget_id: budget_id.clone(),
                }));
            }
        }
        let live = self.live_per_session.get(&session.id).copied().unwrap_or(0);
        if live >= session.live_holds_max {
            return Err(Outcome::Denied(DenyReason::TooManyHolds {
                limit: session.live_holds_max,
            }));
        }
        if let Some(tc) = session.tool_caps.get(&c.tool) {
            if !tc.usage.fits(tc.cap, amount) {
                return Err(Outcome::Denied(DenyReason::ToolCap {
                    tool: c.tool.clone(),
                    budget_id: None,
                    remaining: tc.remaining(),
                    asset: session.asset.clone(),
                }));
            }
        }
        if !session.limit.usage.fits(session.limit.cap, amount) {
            return Err(Outcome::Denied(DenyReason::SessionCap {
                remaining: session.limit.remaining(),
                asset: session.asset.clone(),
            }));
        }
        for budget_id in &chain {
            let Some(b) = self.budgets.get(budget_id) else { continue };
            if let Some(tc) = b.tool_caps.get(&c.tool) {
                if !tc.usage.fits(tc.cap, amount) {
                    return Err(Outcome::Denied(DenyReason::ToolCap {
                        tool: c.tool.clone(),
                        budget_id: Some(budget_id.clone()),
                        remaining: tc.remaining(),
                        asset: session.asset.clone(),
                    }));
                }
            }
            if !b.limit.usage.fits(b.limit.cap, amount) {
                return Err(Outcome::Denied(DenyReason::BudgetCap {
                    budget_id: budget_id.clone(),
                    remaining: b.limit.remaining(),
                    asset: session.asset.clone(),
                }));
            }
        }
        Ok((amount, chain))
    }
}
