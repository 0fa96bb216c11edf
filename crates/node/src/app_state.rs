//! The state every HTTP handler (and the metrics scrape) is given:
//! [`AppState`], passed explicitly, never through globals.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use storage::{NodeId, Raft, StateMachineStore};

use crate::config::Limits;
use crate::decisions::RecentDecisions;
use crate::node_reads::NodeReads;
use crate::proposer::Proposer;
use crate::reads::ReadBarrier;

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub node_id: NodeId,
    pub cluster: String,
    pub admin_token: String,
    pub gateway_token: Option<String>,
    /// A peer token is configured: without one the node accepts no Raft
    /// RPC, so it refuses to add members.
    pub peer_auth: bool,
    pub raft: Raft,
    pub sm: StateMachineStore,
    /// What this replica applied lately, for the console.
    pub decisions: RecentDecisions,
    pub proposer: Proposer,
    pub reads: ReadBarrier,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Reads of this node's applied state (see [`NodeReads`]).
    pub fn local(&self) -> NodeReads<'_> {
        NodeReads::new(&self.sm)
    }
}
