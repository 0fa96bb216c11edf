//! What the final read phase saw on each node after healing: every hold
//! (enumerated `au_0`, `au_1`, ...), every session and budget of the run,
//! and each node's state digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldFinal {
    pub session: String,
    pub tool: String,
    pub amount: u64,
    /// `held`, `captured`, `voided` or `expired`.
    pub status: String,
    pub captured: u64,
    pub key: Option<String>,
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapFinal {
    pub cap: u64,
    pub spent: u64,
    pub held: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelFinal {
    pub limit: CapFinal,
    pub remaining: u64,
    pub tool_caps: BTreeMap<String, CapFinal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestFinal {
    pub applied_index: Option<u64>,
    pub digest: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFinal {
    pub node: u8,
    pub holds: BTreeMap<String, HoldFinal>,
    pub sessions: BTreeMap<String, LevelFinal>,
    pub budgets: BTreeMap<String, LevelFinal>,
    /// Reads that failed (after bounded retries).
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Unix ms around the final reads.
    pub read_start_wall_ms: u64,
    pub read_end_wall_ms: u64,
    pub nodes: Vec<NodeFinal>,
    /// The digests at the one applied index all nodes reached together, or
    /// the last ones seen when they never lined up.
    pub digests: BTreeMap<u8, DigestFinal>,
    /// True when all nodes reported the same applied index together.
    pub digests_aligned: bool,
}
