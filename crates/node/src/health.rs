//! Whether this node can still serve: a node whose Raft core stopped (an
//! openraft `Fatal` error: a storage error while appending or applying, a
//! panic in the core, or a shutdown nobody asked for) must stop answering
//! from state that no longer advances. The API answers `503 node_failed`
//! on every route but `/metrics`, the probes fail, and the gauge
//! `spendcap_node_failed` is 1.

use openraft::ServerState;
use storage::Raft;

/// Why this node has failed, or `None` while its Raft core runs.
///
/// openraft reports a stopped core through its metrics: `running_state`
/// holds the `Fatal` error (`Stopped` after a shutdown) and `state` is
/// `Shutdown`. A node shutting down cleanly stops its listeners before it
/// stops Raft, so a request that sees either has met a failed node.
pub fn failure(raft: &Raft) -> Option<String> {
    let rx = raft.metrics();
    let m = rx.borrow();
    match &m.running_state {
        Err(fatal) => Some(format!("the Raft core stopped: {fatal}")),
        Ok(()) if m.state == ServerState::Shutdown => Some("the Raft core has shut down".into()),
        Ok(()) => None,
    }
}
