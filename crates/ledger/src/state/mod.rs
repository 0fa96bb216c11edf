//! The replicated state and the one function that changes it: [`Ledger::apply`].
//!
//! This file holds the state and the dispatch; each command family is
//! applied in its own file below; the reads are in `queries`, the records
//! view in `persist`, the invariants in `invariants`.

mod authorize;
mod budgets;
mod invariants;
mod persist;
mod plan;
mod queries;
mod sessions;
mod settle;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::command::*;
use crate::ids::*;
use crate::model::*;
use crate::outcome::*;
use crate::records::{HistoryRecord, RecordKey};

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

    fn push_history(&mut self, record: HistoryRecord) {
        let bytes = record.encode();
        let mut hasher = Sha256::new();
        hasher.update(self.meta.history_head);
        hasher.update(&bytes);
        self.meta.history_head = hasher.finalize().into();
        self.changes.history.push(record);
    }
}
