//! openraft's type configuration for spendcap and the types it names: node
//! ids and addresses, what applying an entry returns, and the aliases the
//! other modules (and the node) use.

use std::fmt;

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// Where a node listens: its Raft RPC address and its client API address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub raft: String,
    pub api: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft, self.api)
    }
}

/// The result of applying one log entry: one outcome per command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub outcomes: Vec<ledger::Outcome>,
    /// The log time the entry was applied at.
    pub time_ms: u64,
}

openraft::declare_raft_types!(
    /// spendcap's Raft types: entries carry a batch of ledger commands stamped
    /// with the leader's clock.
    pub TypeConfig:
        D = ledger::Entry,
        R = ApplyResult,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
