//! The replicated state and the one function that changes it: [`Ledger::apply`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::amount::Amount;
use crate::command::*;
use crate::ids::*;
use crate::records::{HistoryRecord, RecordKey};

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
    fn fits(&self, cap: Amount, amount: Amount) -> bool {
        self.committed().checked_add(amount).is_some_and(|total| total <= cap)
    }

    /// This usage with `amount` more held, if it does not overflow.
    fn with_hold(self, amount: Amount) -> Option<Usage> {
        Some(Usage {
            spent: self.spent,
            held: self.held.checked_add(amount)?,
        })
    }

    /// This usage after a hold of `held` ends with `captured` of it spent, if
    /// the level holds at least `held` and nothing overflows.
    fn settled(self, held: Amount, captured: Amount) -> Option<Usage> {
        Some(Usage {
            held: self.held.checked_sub(held)?,
            spent: self.spent.checked_add(captured)?,
        })
    }

    /// [`Self::settled`] that saturates instead of failing: used only where
    /// no command can be refused (expiry), see [`Ledger::expire_hold`].
    fn settled_saturating(self, held: Amount, captured: Amount) -> Usage {
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
    fn new(cap: Amount) -> Self {
        CapUsage {
            cap,
            usage: Usage::default(),
        }
    }

    pub fn remaining(&self) -> Amount {
        self.usage.remaining(self.cap)
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

/// What applying changed: records to write (or delete, when the state no
/// longer has them) and history records to append. The node writes these in
/// the same atomic batch as the applied log id.
#[derive(Debug, Default)]
pub struct Changes {
    pub dirty: BTreeSet<RecordKey>,
    pub history: Vec<HistoryRecord>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.history.is_empty()
    }
}

/// The whole decision state. Same entries in, byte-identical state out.
#[derive(Debug, Default)]
pub struct Ledger {
    pub(crate) meta: Meta,
    pub(crate) budgets: BTreeMap<BudgetId, Budget>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    /// Live holds only; resolved ones move to history.
    pub(crate) holds: BTreeMap<HoldId, Hold>,
    pub(crate) idempotency: BTreeMap<ScopedKey, IdempotencyRecord>,
    // Indexes derived from the above; not part of the digest.
    pub(crate) by_token: BTreeMap<TokenHash, SessionId>,
    pub(crate) hold_deadlines: BTreeSet<(u64, HoldId)>,
    pub(crate) key_deadlines: BTreeSet<(u64, ScopedKey)>,
    /// Live holds per session (sessions with none are absent).
    pub(crate) live_per_session: BTreeMap<SessionId, u32>,
    pub(crate) changes: Changes,
    /// The command being applied (not state: set by `apply`).
    pub(crate) position: Position,
}

fn fingerprint<T: Serialize>(value: &T) -> [u8; 16] {
    // Encoding plain data into a Vec cannot fail; were it ever to, every
    // replica would hash the same empty input, which is still deterministic.
    let bytes = postcard::to_allocvec(value).unwrap_or_default();
    let hash = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    for (o, h) in out.iter_mut().zip(hash.iter()) {
        *o = *h;
    }
    out
}

/// One cap a hold counts against: the session's, a tool cap on the session,
/// a budget's, or a tool cap on a budget.
#[derive(Clone, Debug)]
enum Level {
    Session,
    SessionTool,
    Budget(BudgetId),
    BudgetTool(BudgetId),
}

/// New usages for every level a hold touches, computed (with checked
/// arithmetic) before anything changes.
type Plan = Vec<(Level, Usage)>;

fn inconsistent(detail: impl Into<String>) -> Outcome {
    Outcome::Refused(Refusal::Inconsistent { detail: detail.into() })
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Applies one log entry: first time moves forward (expiring holds and
    /// idempotency keys whose time has come), then each command in order.
    /// Returns exactly one outcome per command.
    ///
    /// An entry with more than [`ENTRY_COMMANDS_MAX`] commands (no node
    /// proposes one) is refused whole: every command is answered
    /// `Refused(Invalid)` and nothing but the entry counter changes, not even
    /// the clock.
    pub fn apply(&mut self, log_index: u64, entry: &Entry) -> Vec<Outcome> {
        let outcomes = if entry.commands.len() > ENTRY_COMMANDS_MAX {
            let refusal = Refusal::Invalid(InvalidCommand::new(
                "commands",
                format!("an entry carries at most {ENTRY_COMMANDS_MAX} commands"),
            ));
            vec![Outcome::Refused(refusal); entry.commands.len()]
        } else {
            self.advance_time(entry.time_ms);
            let mut outcomes = Vec::with_capacity(entry.commands.len());
            for (i, command) in entry.commands.iter().enumerate() {
                self.position = Position {
                    log_index,
                    batch_position: u32::try_from(i).unwrap_or(u32::MAX),
                    time_ms: self.meta.now_ms,
                };
                outcomes.push(self.apply_command(command));
            }
            outcomes
        };
        self.meta.entries_applied = self.meta.entries_applied.saturating_add(1);
        self.changes.dirty.insert(RecordKey::Meta);
        #[cfg(debug_assertions)]
        self.check_touched();
        outcomes
    }

    /// Takes what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    fn advance_time(&mut self, time_ms: u64) {
        if time_ms <= self.meta.now_ms {
            return;
        }
        self.meta.now_ms = time_ms;
        let now = self.meta.now_ms;
        while let Some(&(deadline, id)) = self.hold_deadlines.first() {
            if deadline > now {
                break;
            }
            // Popped first, so the loop ends even if the hold were missing.
            self.hold_deadlines.pop_first();
            self.expire_hold(id);
        }
        while let Some((deadline, _)) = self.key_deadlines.first() {
            if *deadline > now {
                break;
            }
            if let Some((_, key)) = self.key_deadlines.pop_first() {
                self.idempotency.remove(&key);
                self.changes.dirty.insert(RecordKey::Idempotency(key));
            }
        }
    }

    fn apply_command(&mut self, command: &Command) -> Outcome {
        if let Err(e) = command.validate() {
            return Outcome::Refused(Refusal::Invalid(e));
        }
        match command {
            Command::CreateBudget(c) => self.create_budget(c),
            Command::UpdateBudget(c) => self.update_budget(c),
            Command::CreateSession(c) => self.create_session(c),
            Command::RevokeSession { session_id } => self.revoke_session(session_id),
            Command::RotateSessionToken { session_id, token_hash } => self.rotate_token(session_id, *token_hash),
            Command::Authorize(c) => self.authorize(c),
            Command::Capture(c) => self.capture(c),
            Command::Void(c) => self.void(c),
            Command::MarkSettling(c) => self.mark_settling(c),
        }
    }

    /// Pins a hold while a payment may be in flight: it stops expiring.
    fn mark_settling(&mut self, c: &MarkSettling) -> Outcome {
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

    fn create_budget(&mut self, c: &CreateBudget) -> Outcome {
        if let Some(existing) = self.budgets.get(&c.id) {
            let same = existing.asset == c.asset
                && existing.limit.cap == c.cap
                && existing.parent == c.parent
                && existing.tool_caps.len() == c.tool_caps.len()
                && existing
                    .tool_caps
                    .iter()
                    .all(|(t, u)| c.tool_caps.get(t) == Some(&u.cap))
                && existing.blocked_tools == c.blocked_tools;
            return if same {
                Outcome::BudgetCreated { existed: true }
            } else {
                Outcome::Refused(Refusal::AlreadyExists)
            };
        }
        let depth = match &c.parent {
            None => 1,
            Some(parent_id) => match self.budgets.get(parent_id) {
                None => {
                    return Outcome::Refused(Refusal::UnknownBudget {
                        budget_id: parent_id.clone(),
                    })
                }
                Some(parent) if parent.asset != c.asset => {
                    return Outcome::Refused(Refusal::AssetMismatch {
                        expected: parent.asset.code.to_string(),
                        found: c.asset.code.to_string(),
                    })
                }
                Some(parent) if parent.depth >= BUDGET_DEPTH_MAX => {
                    return Outcome::Refused(Refusal::BudgetDepthExceeded)
                }
                Some(parent) => parent.depth.saturating_add(1),
            },
        };
        let budget = Budget {
            id: c.id.clone(),
            asset: c.asset.clone(),
            limit: CapUsage::new(c.cap),
            tool_caps: c
                .tool_caps
                .iter()
                .map(|(t, cap)| (t.clone(), CapUsage::new(*cap)))
                .collect(),
            parent: c.parent.clone(),
            depth,
            created_at_ms: self.meta.now_ms,
            blocked_tools: c.blocked_tools.clone(),
        };
        self.budgets.insert(c.id.clone(), budget);
        self.changes.dirty.insert(RecordKey::Budget(c.id.clone()));
        Outcome::BudgetCreated { existed: false }
    }

    fn update_budget(&mut self, c: &UpdateBudget) -> Outcome {
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
    fn live_held_under(&self, budget: &BudgetId, tool: &Tool) -> Option<Amount> {
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

    fn create_session(&mut self, c: &CreateSession) -> Outcome {
        if let Some(existing) = self.sessions.get(&c.id) {
            // A retry of the same creation, with the same token: report the
            // session as it is (the caller's token works). The same id with
            // another token is a different creation: refused, so no caller
            // is ever told "created" while holding a token that does not
            // work.
            let same = existing.token_hash == c.token_hash
                && existing.asset == c.asset
                && existing.limit.cap == c.cap
                && existing.budget == c.budget
                && existing.agent_id == c.agent_id
                && existing.wallet_address == c.wallet_address
                && existing.tool_caps.len() == c.tool_caps.len()
                && existing
                    .tool_caps
                    .iter()
                    .all(|(t, u)| c.tool_caps.get(t) == Some(&u.cap))
                && existing.tools == c.tools
                && existing.live_holds_max == c.live_holds_limit();
            return if same {
                Outcome::SessionCreated {
                    existed: true,
                    expires_at_ms: existing.expires_at_ms,
                }
            } else {
                Outcome::Refused(Refusal::AlreadyExists)
            };
        }
        if self.by_token.contains_key(&c.token_hash) {
            // Tokens are 256-bit random; a repeat means a broken generator.
            return Outcome::Refused(Refusal::AlreadyExists);
        }
        if let Some(budget_id) = &c.budget {
            match self.budgets.get(budget_id) {
                None => {
                    return Outcome::Refused(Refusal::UnknownBudget {
                        budget_id: budget_id.clone(),
                    })
                }
                Some(b) if b.asset != c.asset => {
                    return Outcome::Refused(Refusal::AssetMismatch {
                        expected: b.asset.code.to_string(),
                        found: c.asset.code.to_string(),
                    })
                }
                Some(_) => {}
            }
        }
        let now = self.meta.now_ms;
        let expires_at_ms = now.saturating_add(c.ttl_ms);
        let session = Session {
            id: c.id.clone(),
            token_hash: c.token_hash,
            asset: c.asset.clone(),
            limit: CapUsage::new(c.cap),
            tool_caps: c
                .tool_caps
                .iter()
                .map(|(t, cap)| (t.clone(), CapUsage::new(*cap)))
                .collect(),
            budget: c.budget.clone(),
            agent_id: c.agent_id.clone(),
            wallet_address: c.wallet_address.clone(),
            created_at_ms: now,
            expires_at_ms,
            revoked: false,
            tools: c.tools.clone(),
            live_holds_max: c.live_holds_limit(),
        };
        self.by_token.insert(c.token_hash, c.id.clone());
        self.sessions.insert(c.id.clone(), session);
        self.changes.dirty.insert(RecordKey::Session(c.id.clone()));
        Outcome::SessionCreated {
            existed: false,
            expires_at_ms,
        }
    }

    fn revoke_session(&mut self, id: &SessionId) -> Outcome {
        let Some(session) = self.sessions.get_mut(id) else {
            return Outcome::Refused(Refusal::UnknownSession);
        };
        let already = session.revoked;
        session.revoked = true;
        self.changes.dirty.insert(RecordKey::Session(id.clone()));
        Outcome::SessionRevoked { already }
    }

    fn rotate_token(&mut self, id: &SessionId, token_hash: TokenHash) -> Outcome {
        if self.by_token.contains_key(&token_hash) {
            return Outcome::Refused(Refusal::AlreadyExists);
        }
        let Some(session) = self.sessions.get_mut(id) else {
            return Outcome::Refused(Refusal::UnknownSession);
        };
        self.by_token.remove(&session.token_hash);
        session.token_hash = token_hash;
        self.by_token.insert(token_hash, id.clone());
        self.changes.dirty.insert(RecordKey::Session(id.clone()));
        Outcome::TokenRotated
    }

    /// Looks up an idempotency key: `Some(outcome)` ends the command (the
    /// first result again, or a conflict).
    fn replay(&self, key: &Option<ScopedKey>, fingerprint: &[u8; 16]) -> Option<Outcome> {
        let record = self.idempotency.get(key.as_ref()?)?;
        Some(if &record.fingerprint == fingerprint {
            record.outcome.as_replay()
        } else {
            Outcome::Refused(Refusal::IdempotencyConflict)
        })
    }

    fn remember(&mut self, key: Option<ScopedKey>, owner: Option<SessionId>, fingerprint: [u8; 16], outcome: &Outcome) {
        let Some(key) = key else { return };
        let expires_at_ms = self.meta.now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS);
        self.key_deadlines.insert((expires_at_ms, key.clone()));
        self.idempotency.insert(
            key.clone(),
            IdempotencyRecord {
                owner,
                fingerprint,
                outcome: outcome.clone(),
                expires_at_ms,
            },
        );
        self.changes.dirty.insert(RecordKey::Idempotency(key));
    }

    /// The budgets a session draws on, nearest first. At most
    /// [`BUDGET_DEPTH_MAX`] long, so even a corrupt parent cycle cannot loop.
    fn budget_chain(&self, session: &Session) -> Vec<BudgetId> {
        let mut chain = Vec::new();
        let mut next = session.budget.clone();
        while let Some(id) = next {
            if chain.len() >= usize::from(BUDGET_DEPTH_MAX) {
                break;
            }
            let Some(b) = self.budgets.get(&id) else { break };
            next = b.parent.clone();
            chain.push(id);
        }
        chain
    }

    fn authorize(&mut self, c: &Authorize) -> Outcome {
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

    /// The new usage `change` gives every level a hold for `tool` by
    /// `session` counts against (the session, its tool cap, each budget in
    /// `chain` and its tool cap), or `None` if any of them fails. Touches
    /// nothing.
    fn plan(
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
    fn write_plan(&mut self, session_id: &SessionId, tool: &Tool, plan: Plan) {
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

    /// Every check of an authorization, touching nothing: the amount in the
    /// session's asset and the budgets it draws on, or the denial (or
    /// refusal) to answer.
    fn authorize_checks(&self, session: &Session, c: &Authorize, now: u64) -> Result<(Amount, Vec<BudgetId>), Outcome> {
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

    /// Finds a live hold the caller may resolve, or the refusal. A retried
    /// capture or void whose key is remembered gets its first result back,
    /// also after the hold left memory.
    fn resolvable(
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

    fn capture(&mut self, c: &Capture) -> Outcome {
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

    fn void(&mut self, c: &Void) -> Outcome {
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
    fn resolve_hold(
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
    fn expire_hold(&mut self, hold_id: HoldId) {
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
    fn finish_hold(
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

    fn push_history(&mut self, record: HistoryRecord) {
        let bytes = record.encode();
        let mut hasher = Sha256::new();
        hasher.update(self.meta.history_head);
        hasher.update(&bytes);
        self.meta.history_head = hasher.finalize().into();
        self.changes.history.push(record);
    }
}

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
