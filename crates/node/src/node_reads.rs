//! What the HTTP layer may read of this node's applied state: owned copies,
//! taken under the state machine's lock for as short as possible, so no
//! caller holds the lock (or knows there is one). A read that must be
//! linearizable passes the read barrier (`crate::reads`) first; these
//! methods read whatever this node has applied when called.

use ledger::{Amount, Asset, Budget, BudgetId, Hold, HoldId, Receipt, ReceiptId, Session, SessionId};
use storage::{LogId, ReceiptFilter, SnapshotMeta, StateMachineStore, StoreError};

/// Reads of one node's applied state.
#[derive(Clone, Copy)]
pub struct NodeReads<'a> {
    sm: &'a StateMachineStore,
}

/// Whether a session may still act, by this node's log time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    Active,
    Revoked,
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Revoked => "revoked",
            SessionStatus::Expired => "expired",
        }
    }

    fn of(session: &Session, now_ms: u64) -> SessionStatus {
        if session.revoked {
            SessionStatus::Revoked
        } else if now_ms >= session.expires_at_ms {
            SessionStatus::Expired
        } else {
            SessionStatus::Active
        }
    }
}

/// A session and what is derived from the rest of the state, as of one
/// applied index.
#[derive(Clone, Debug)]
pub struct SessionRead {
    pub session: Session,
    pub status: SessionStatus,
    /// What it may still authorize, counting every budget above it.
    pub available: Amount,
    pub live_holds: u32,
    /// The index this was read at.
    pub applied_index: u64,
}

/// A hold (live or resolved) and its session's asset, the unit of its
/// amounts (`None` only if the session is missing, which the ledger's
/// invariants rule out).
#[derive(Clone, Debug)]
pub struct HoldRead {
    pub hold: Hold,
    pub asset: Option<Asset>,
}

/// The sizes of the ledger, and its log time.
#[derive(Clone, Copy, Debug)]
pub struct LedgerCounts {
    pub budgets: usize,
    pub sessions: usize,
    pub live_holds: usize,
    pub idempotency_keys: usize,
    pub now_ms: u64,
}

/// The state digest and the history head at the applied log id.
pub struct DigestRead {
    pub applied: Option<LogId>,
    pub digest: [u8; 32],
    pub history_head: [u8; 32],
}

impl<'a> NodeReads<'a> {
    pub fn new(sm: &'a StateMachineStore) -> Self {
        NodeReads { sm }
    }

    /// The log time this node has applied up to.
    pub fn now_ms(&self) -> u64 {
        self.sm.read().ledger.now_ms()
    }

    pub fn budget(&self, id: &BudgetId) -> Option<Budget> {
        self.sm.read().ledger.budget(id).cloned()
    }

    pub fn budget_exists(&self, id: &BudgetId) -> bool {
        self.sm.read().ledger.budget(id).is_some()
    }

    pub fn budget_asset(&self, id: &BudgetId) -> Option<Asset> {
        self.sm.read().ledger.budget(id).map(|b| b.asset.clone())
    }

    /// At most `limit` budgets in id order, after `after`.
    pub fn budgets(&self, after: Option<&BudgetId>, limit: usize) -> Vec<Budget> {
        self.sm
            .read()
            .ledger
            .budgets(after, limit)
            .into_iter()
            .cloned()
            .collect()
    }

    pub fn session(&self, id: &SessionId) -> Option<SessionRead> {
        let state = self.sm.read();
        let applied_index = state.last_applied.map(|l| l.index).unwrap_or(0);
        state
            .ledger
            .session(id)
            .map(|s| session_read(&state.ledger, s, applied_index))
    }

    /// At most `limit` sessions in id order, after `after`.
    pub fn sessions(&self, after: Option<&SessionId>, limit: usize) -> Vec<SessionRead> {
        let state = self.sm.read();
        let applied_index = state.last_applied.map(|l| l.index).unwrap_or(0);
        state
            .ledger
            .sessions(after, limit)
            .into_iter()
            .map(|s| session_read(&state.ledger, s, applied_index))
            .collect()
    }

    pub fn session_asset(&self, id: &SessionId) -> Option<Asset> {
        self.sm.read().ledger.session(id).map(|s| s.asset.clone())
    }

    pub fn session_status(&self, id: &SessionId) -> Option<SessionStatus> {
        let state = self.sm.read();
        let now_ms = state.ledger.now_ms();
        state.ledger.session(id).map(|s| SessionStatus::of(s, now_ms))
    }

    /// The session whose current token has this hash.
    pub fn session_by_token(&self, token_hash: &ledger::TokenHash) -> Option<SessionId> {
        self.sm.read().ledger.session_by_token(token_hash).map(|s| s.id.clone())
    }

    /// True when the authorization id was handed out (live or resolved).
    pub fn hold_id_issued(&self, id: HoldId) -> bool {
        self.sm.read().ledger.hold_id_issued(id)
    }

    pub fn live_hold(&self, id: HoldId) -> Option<Hold> {
        self.sm.read().ledger.live_hold(id).cloned()
    }

    /// A hold that ended, from history.
    pub fn resolved_hold(&self, id: HoldId) -> Result<Option<Hold>, StoreError> {
        self.sm.store().resolved_hold(id)
    }

    /// A hold, live or resolved, with its session's asset.
    pub fn hold(&self, id: HoldId) -> Result<Option<HoldRead>, StoreError> {
        let live = {
            let state = self.sm.read();
            state.ledger.live_hold(id).map(|h| HoldRead {
                hold: h.clone(),
                asset: state.ledger.session(&h.session_id).map(|s| s.asset.clone()),
            })
        };
        if live.is_some() {
            return Ok(live);
        }
        Ok(self.resolved_hold(id)?.map(|hold| HoldRead {
            asset: self.session_asset(&hold.session_id),
            hold,
        }))
    }

    /// At most `limit` holds pinned as settling, in id order, after `after`.
    pub fn settling_holds(&self, after: Option<HoldId>, limit: usize) -> Vec<HoldRead> {
        let state = self.sm.read();
        state
            .ledger
            .settling_holds()
            .filter(|h| after.is_none_or(|a| h.id > a))
            .take(limit)
            .map(|h| HoldRead {
                hold: h.clone(),
                asset: state.ledger.session(&h.session_id).map(|s| s.asset.clone()),
            })
            .collect()
    }

    pub fn receipts(&self, filter: &ReceiptFilter) -> Result<Vec<Receipt>, StoreError> {
        self.sm.store().receipts(filter)
    }

    pub fn receipt(&self, id: ReceiptId) -> Result<Option<Receipt>, StoreError> {
        self.sm.store().receipt(id)
    }

    pub fn counts(&self) -> LedgerCounts {
        let state = self.sm.read();
        let (budgets, sessions, live_holds, idempotency_keys) = state.ledger.counts();
        LedgerCounts {
            budgets,
            sessions,
            live_holds,
            idempotency_keys,
            now_ms: state.ledger.now_ms(),
        }
    }

    /// A consistent, checksummed backup of the applied state (the snapshot
    /// file format), written as `name` under the data directory's
    /// `backups/` and handed back open, with its length, already unlinked.
    /// Blocking: call it off the async runtime.
    pub fn backup(&self, name: &str) -> Result<(SnapshotMeta, std::fs::File, u64), StoreError> {
        let dir = self.sm.store().dir().join("backups");
        let path = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let meta = self.sm.backup_to(&path)?;
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        std::fs::remove_file(&path)?;
        Ok((meta, file, len))
    }

    pub fn digest(&self) -> DigestRead {
        let (applied, digest, history_head) = self.sm.digest();
        DigestRead {
            applied,
            digest,
            history_head,
        }
    }
}

fn session_read(ledger: &ledger::Ledger, s: &Session, applied_index: u64) -> SessionRead {
    SessionRead {
        status: SessionStatus::of(s, ledger.now_ms()),
        available: ledger.available(s, None),
        live_holds: ledger.live_holds_of(&s.id),
        session: s.clone(),
        applied_index,
    }
}
