//! What proposing answers: a command's decision with its place in the log,
//! or why there is none (and whether anything may have been applied).

use ledger::Outcome;
use serde::{Deserialize, Serialize};

/// A command's decision and where it sits in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub outcome: Outcome,
    pub log_index: u64,
    pub batch_position: u32,
    /// The entry's log time.
    pub time_ms: u64,
}

impl Decided {
    /// Where the command's effect was first decided: for an approval,
    /// capture or void (also when replayed) the original position, else
    /// this entry's.
    pub fn position(&self) -> ledger::Position {
        match &self.outcome {
            Outcome::Approved { approval, .. } => approval.at,
            Outcome::Captured { captured, .. } => captured.at,
            Outcome::Voided { at, .. } => *at,
            _ => ledger::Position {
                log_index: self.log_index,
                batch_position: self.batch_position,
                time_ms: self.time_ms,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// Nothing was applied; retrying is safe.
    #[error("no leader is available; nothing was applied")]
    NoLeader,
    /// The command may or may not have been applied.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    /// The proposal queue is full; nothing was applied.
    #[error("the node is overloaded")]
    Overloaded,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node's Raft core has failed (an openraft `Fatal` error, see
    /// `crate::health`): it decides nothing more, and nothing was sent.
    /// (A failure while a command was being decided is `Unknown`.)
    #[error("the node failed: {0}")]
    NodeFailed(String),
}
