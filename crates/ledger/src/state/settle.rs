//! Ending holds: capture, void, expiry, and pinning a hold while a payment
//! is in flight.

use crate::amount::Amount;
use crate::command::*;
use crate::ids::*;
use crate::model::*;
use crate::outcome::*;
use crate::records::{HistoryRecord, RecordKey};

use super::plan::Plan;
use super::{fingerprint, inconsistent, Ledger};

impl Ledger {
    /// Pins a hold while a payment may be in flight: it stops expiring.
    pub(super) fn mark_settling(&mut self, c: &MarkSettling) -> Outcome {
        let hold = match self.holds.get(&c.hold_id) {
            Some(hold) => hold,
            None if c.hold_id.0 < self.meta.next_hold_id => {
                return Outcome::Refused(Refusal::AuthorizationNotActive {
                    status: HoldStatus::Expired,
                })
            }
            None => return Outcome::Refused(Refusal::UnknownAuthorization),
        };
        // Pinning is the gateway's (or the admin's) act: a session has no
        // reason to pin, and must never own a pinned hold's fate.
        if let Caller::Session(_) = &c.caller {
            return Outcome::Refused(Refusal::Forbidden);
        }
        if let Some(existing) = &hold.settling {
            return if existing.reference == c.reference {
                Outcome::SettlingMarked {
                    hold_id: c.hold_id,
                    already: true,
                }
            } else {
                Outcome::Refused(Refusal::AlreadyExists)
            };
        }
        let deadline = (hold.expires_at_ms, c.hold_id);
        self.hold_deadlines.remove(&deadline);
        let now = self.meta.now_ms;
        if let Some(hold) = self.holds.get_mut(&c.hold_id) {
            hold.settling = Some(Settling {
                since_ms: now,
                reference: c.reference.clone(),
            });
        }
        self.changes.dirty.insert(RecordKey::Hold(c.hold_id));
        Outcome::SettlingMarked {
            hold_id: c.hold_id,
            already: false,
        }
    }

    /// Finds a live hold the caller may resolve, or the refusal. A retried
    /// capture or void whose key is remembered gets its first result back,
    /// also after the hold left memory.
    pub(super) fn resolvable(
        &self,
        hold_id: HoldId,
        caller: &Caller,
        credential: Option<TokenHash>,
        key: &Option<ScopedKey>,
        fp: &[u8; 16],
    ) -> Result<&Hold, Outcome> {
        if let (Caller::Session(s), Some(h)) = (caller, credential) {
            if self.sessions.get(s).is_none_or(|x| x.token_hash != h) {
                return Err(Outcome::Refused(Refusal::TokenSuperseded));
            }
        }
        if let Some(record) = key.as_ref().and_then(|k| self.idempotency.get(k)) {
            if let Caller::Session(s) = caller {
                if record.owner.as_ref() != Some(s) {
                    return Err(Outcome::Refused(Refusal::Forbidden));
                }
            }
            return Err(if &record.fingerprint == fp {
                record.outcome.as_replay()
            } else {
                Outcome::Refused(Refusal::IdempotencyConflict)
            });
        }
        match self.holds.get(&hold_id) {
            Some(hold) => match caller {
                Caller::Session(s) if s != &hold.session_id => Err(Outcome::Refused(Refusal::Forbidden)),
                // A pinned hold may have a signed payment in flight: the
                // agent must not be able to release it (its spend would
                // escape the cap); only the gateway or the admin resolves it.
                Caller::Session(_) if hold.settling.is_some() => Err(Outcome::Refused(Refusal::HoldSettling)),
                _ => Ok(hold),
            },
            // Ids are handed out in order: a smaller one existed and is
            // resolved. How it ended is in history, which the node reads.
            None if hold_id.0 < self.meta.next_hold_id => Err(Outcome::Refused(Refusal::AuthorizationNotActive {
                status: HoldStatus::Expired,
            })),
            None => Err(Outcome::Refused(Refusal::UnknownAuthorization)),
        }
    }

    pub(super) fn capture(&mut self, c: &Capture) -> Outcome {
        let key = c.idempotency_key.clone().map(|key| ScopedKey {
            scope: KeyScope::Hold(c.hold_id),
            key,
        });
        let fp = fingerprint(&("capture", &c.amount, &c.receipt));
        let hold = match self.resolvable(c.hold_id, &c.caller, c.credential, &key, &fp) {
            Ok(hold) => hold.clone(),
            Err(outcome) => return outcome,
        };
        let Some(session) = self.sessions.get(&hold.session_id) else {
            return Outcome::Refused(Refusal::UnknownSession);
        };
        let captured = match &c.amount {
            None => hold.amount,
            Some(input) => match input.resolve(session.asset.decimals) {
                Ok(a) => a,
                Err(e) => return Outcome::Refused(Refusal::InvalidAmount { message: e.to_string() }),
            },
        };
        let Some(released) = hold.amount.checked_sub(captured) else {
            return Outcome::Refused(Refusal::AmountExceedsHold { held: hold.amount });
        };
        let Some(next_receipt_id) = self.meta.next_receipt_id.checked_add(1) else {
            return inconsistent("receipt ids are exhausted");
        };
        let owner = session.id.clone();
        let asset = session.asset.clone();
        let receipt_id = ReceiptId(self.meta.next_receipt_id);
        let receipt = Receipt {
            id: receipt_id,
            hold_id: c.hold_id,
            session_id: session.id.clone(),
            agent_id: session.agent_id.clone(),
            tool: hold.tool.clone(),
            amount: captured,
            asset: session.asset.clone(),
            wallet_address: c
                .receipt
                .wallet_address
                .clone()
                .or_else(|| session.wallet_address.clone()),
            payment_request_id: c.receipt.payment_request_id.clone(),
            signature: c.receipt.signature.clone(),
            transaction_hash: c.receipt.transaction_hash.clone(),
            network: c.receipt.network.clone(),
            resource_url: c.receipt.resource_url.clone(),
            timestamp_ms: self.meta.now_ms,
            context: hold.context.clone(),
            previous_history_hash: [0; 32],
        };
        if let Err(outcome) = self.resolve_hold(c.hold_id, HoldStatus::Captured, captured, Some(receipt)) {
            return outcome;
        }
        self.meta.next_receipt_id = next_receipt_id;
        let outcome = Outcome::Captured {
            captured: Captured {
                at: self.position,
                hold_id: c.hold_id,
                receipt_id,
                captured,
                asset,
                released,
            },
            replayed: false,
        };
        self.remember(key, Some(owner), fp, &outcome);
        outcome
    }

    pub(super) fn void(&mut self, c: &Void) -> Outcome {
        let key = c.idempotency_key.clone().map(|key| ScopedKey {
            scope: KeyScope::Hold(c.hold_id),
            key,
        });
        let fp = fingerprint(&("void",));
        let hold = match self.resolvable(c.hold_id, &c.caller, c.credential, &key, &fp) {
            Ok(hold) => hold,
            Err(outcome) => return outcome,
        };
        let released = hold.amount;
        let owner = hold.session_id.clone();
        // Sessions are never removed: a live hold's session exists.
        let Some(asset) = self.sessions.get(&owner).map(|s| s.asset.clone()) else {
            return inconsistent("a live hold's session is missing");
        };
        if let Err(outcome) = self.resolve_hold(c.hold_id, HoldStatus::Voided, Amount::ZERO, None) {
            return outcome;
        }
        let outcome = Outcome::Voided {
            at: self.position,
            hold_id: c.hold_id,
            released,
            asset,
            replayed: false,
        };
        self.remember(key, Some(owner), fp, &outcome);
        outcome
    }

    /// Ends a hold on a command's behalf: releases it at every level, counts
    /// `captured` as spent, and moves it (and its receipt) to history. Every
    /// level's new usage is computed first; if any would underflow or
    /// overflow (the invariants rule it out) the command is refused and
    /// nothing changes.
    pub(super) fn resolve_hold(
        &mut self,
        hold_id: HoldId,
        status: HoldStatus,
        captured: Amount,
        receipt: Option<Receipt>,
    ) -> Result<(), Outcome> {
        let Some(hold) = self.holds.get(&hold_id) else {
            return Err(Outcome::Refused(Refusal::UnknownAuthorization));
        };
        let plan = match self.sessions.get(&hold.session_id) {
            Some(session) => {
                let chain = self.budget_chain(session);
                let (amount, tool) = (hold.amount, &hold.tool);
                match self.plan(session, tool, &chain, |u| u.settled(amount, captured)) {
                    Some(plan) => Some(plan),
                    None => return Err(inconsistent("a level holds less than the hold being resolved")),
                }
            }
            None => None,
        };
        self.finish_hold(hold_id, plan, status, captured, receipt);
        Ok(())
    }

    /// Ends a hold whose time has come. There is no command to refuse here,
    /// so where the checked release fails (a level holding less than the
    /// hold, which the invariants rule out) the release saturates at zero:
    /// deterministic on every replica, never a panic, and the hold still
    /// leaves the live state and its deadline index.
    pub(super) fn expire_hold(&mut self, hold_id: HoldId) {
        let Some(hold) = self.holds.get(&hold_id) else {
            return;
        };
        let plan = self.sessions.get(&hold.session_id).map(|session| {
            let chain = self.budget_chain(session);
            let amount = hold.amount;
            self.plan(session, &hold.tool, &chain, |u| u.settled(amount, Amount::ZERO))
                .or_else(|| {
                    self.plan(session, &hold.tool, &chain, |u| {
                        Some(u.settled_saturating(amount, Amount::ZERO))
                    })
                })
                .unwrap_or_default()
        });
        self.finish_hold(hold_id, plan, HoldStatus::Expired, Amount::ZERO, None);
    }

    /// Writes a resolution planned by [`Self::resolve_hold`] or
    /// [`Self::expire_hold`]: the usages, the hold's move to history, the
    /// indexes. Cannot fail.
    pub(super) fn finish_hold(
        &mut self,
        hold_id: HoldId,
        plan: Option<Plan>,
        status: HoldStatus,
        captured: Amount,
        receipt: Option<Receipt>,
    ) {
        let Some(mut hold) = self.holds.remove(&hold_id) else {
            return;
        };
        self.hold_deadlines.remove(&(hold.expires_at_ms, hold_id));
        self.changes.dirty.insert(RecordKey::Hold(hold_id));
        if let Some(plan) = plan {
            self.write_plan(&hold.session_id, &hold.tool, plan);
        }
        match self.live_per_session.get(&hold.session_id).copied() {
            Some(n) if n > 1 => {
                self.live_per_session
                    .insert(hold.session_id.clone(), n.saturating_sub(1));
            }
            _ => {
                self.live_per_session.remove(&hold.session_id);
            }
        }
        hold.status = status;
        hold.captured = captured;
        hold.resolved_at_ms = Some(self.meta.now_ms);
        if let Some(mut receipt) = receipt {
            hold.receipt_id = Some(receipt.id);
            receipt.previous_history_hash = self.meta.history_head;
            self.push_history(HistoryRecord::Receipt(receipt));
        }
        self.push_history(HistoryRecord::Hold(hold));
    }
}
