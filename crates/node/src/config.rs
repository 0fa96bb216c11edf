//! A node's configuration, with every limit named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use storage::{NodeAddr, NodeId};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Raft RPCs carry it; a node refuses RPCs for another cluster.
    pub cluster: String,
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub raft_listen: SocketAddr,
    /// How peers and clients reach this node (host:port).
    pub api_advertise: String,
    pub raft_advertise: String,
    /// Members to initialize the cluster with on first start (identical on
    /// every node); empty means a single-node cluster of this node.
    pub initial_members: BTreeMap<NodeId, NodeAddr>,
    /// Skip initialization entirely (a node that will be added as a learner).
    pub join: bool,
    /// Admin bearer token; generated and kept in the data dir when absent.
    pub admin_token: Option<String>,
    /// Shared secret for Raft RPCs between nodes; optional.
    pub peer_token: Option<String>,
    /// The x402 gateway's bearer token (see `Principal::Gateway`): the only
    /// credential besides the admin's that may pin holds as settling and
    /// resolve pinned holds. `None`: no gateway may connect.
    pub gateway_token: Option<String>,
    pub limits: Limits,
    pub raft: RaftTuning,
}

/// Default of [`Limits::batch_commands_max`].
pub const BATCH_COMMANDS_MAX_DEFAULT: usize = 1024;
/// Default of [`Limits::proposal_queue_max`].
pub const PROPOSAL_QUEUE_MAX_DEFAULT: usize = 65_536;

// Limits that relate, checked when the crate compiles (configurable ones
// again in `Limits::validate`).
const _: () = assert!(
    api::BATCH_ITEMS_MAX <= ledger::ENTRY_COMMANDS_MAX,
    "the batch endpoint's items are decided in one entry"
);
const _: () = assert!(
    BATCH_COMMANDS_MAX_DEFAULT >= 1 && BATCH_COMMANDS_MAX_DEFAULT <= ledger::ENTRY_COMMANDS_MAX,
    "a batch is one entry"
);
const _: () = assert!(
    PROPOSAL_QUEUE_MAX_DEFAULT >= api::BATCH_ITEMS_MAX && PROPOSAL_QUEUE_MAX_DEFAULT >= BATCH_COMMANDS_MAX_DEFAULT,
    "the queue must hold a whole batch request and a follower's whole batch"
);

/// A configured limit the node cannot work with.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error(
        "batch_commands_max (--batch-commands-max) is {0}: it must be between 1 and {max}, the most commands \
         one log entry may carry (ledger::ENTRY_COMMANDS_MAX)",
        max = ledger::ENTRY_COMMANDS_MAX
    )]
    BatchCommands(usize),
    #[error("batches_in_flight_max (--batches-in-flight-max) is 0: at least one batch must be allowed in flight")]
    BatchesInFlight,
    #[error(
        "proposal_queue_max is {queue}: it must hold at least a whole batch request ({items} items) and a whole \
         batch ({batch} commands)",
        items = api::BATCH_ITEMS_MAX
    )]
    ProposalQueue { queue: usize, batch: usize },
    #[error("route_attempts_max is 0: a write must be tried at least once")]
    RouteAttempts,
}

/// Named limits for every queue, batch, body and wait.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body the API reads.
    pub request_body_bytes_max: usize,
    /// Largest body of `POST /v1/batch/authorize` (up to 1,000 items).
    pub batch_request_body_bytes_max: usize,
    /// Requests handled at once before the node sheds load (503).
    pub requests_in_flight_max: usize,
    /// Whole-request deadline (a safety net above the write deadline).
    pub request_timeout: Duration,
    /// How long a write waits for its decision before answering
    /// `outcome_unknown`.
    pub write_timeout: Duration,
    /// How long a read waits for its linearizable barrier.
    pub read_timeout: Duration,
    /// Commands waiting for a batch.
    pub proposal_queue_max: usize,
    /// Commands in one Raft entry.
    pub batch_commands_max: usize,
    /// How long the batcher waits for more commands once it has one.
    pub batch_linger: Duration,
    /// Batches proposed and not yet decided.
    pub batches_in_flight_max: usize,
    /// Times a batch is re-routed after "not the leader" before giving up.
    pub route_attempts_max: u32,
    /// Budgets and sessions exported as labelled gauges (top by spend).
    pub metrics_budgets_max: usize,
    pub metrics_sessions_max: usize,
    /// How far ahead of the real time it can vouch for (its monotonic clock
    /// since a known log time) a leader may stamp an entry: log time never
    /// moves faster than real time plus this, whatever the wall clock does
    /// (`clock.rs`).
    pub clock_skew_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_body_bytes_max: 64 << 10,
            batch_request_body_bytes_max: 2 << 20,
            requests_in_flight_max: 4096,
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            proposal_queue_max: PROPOSAL_QUEUE_MAX_DEFAULT,
            batch_commands_max: BATCH_COMMANDS_MAX_DEFAULT,
            batch_linger: Duration::from_micros(0),
            batches_in_flight_max: 2,
            route_attempts_max: 20,
            metrics_budgets_max: 50,
            metrics_sessions_max: 50,
            clock_skew_max: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// Refuses limits that relate wrongly (what the constants' compile-time
    /// checks above say for the defaults).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.batch_commands_max == 0 || self.batch_commands_max > ledger::ENTRY_COMMANDS_MAX {
            return Err(LimitsError::BatchCommands(self.batch_commands_max));
        }
        if self.batches_in_flight_max == 0 {
            return Err(LimitsError::BatchesInFlight);
        }
        if self.proposal_queue_max < api::BATCH_ITEMS_MAX.max(self.batch_commands_max) {
            return Err(LimitsError::ProposalQueue {
                queue: self.proposal_queue_max,
                batch: self.batch_commands_max,
            });
        }
        if self.route_attempts_max == 0 {
            return Err(LimitsError::RouteAttempts);
        }
        Ok(())
    }
}

/// openraft timing; see docs/operations.md for the trade-offs.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Also build one when the log since the last snapshot holds at least
    /// this many bytes and at least the last snapshot's size.
    pub snapshot_log_bytes_min: u64,
    /// Entries kept in the log behind the snapshot (for slow followers).
    pub logs_to_keep_after_snapshot: u64,
    pub install_snapshot_timeout: Duration,
    pub payload_entries_max: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_logs_since_last: 100_000,
            snapshot_log_bytes_min: 64 << 20,
            logs_to_keep_after_snapshot: 1_000,
            install_snapshot_timeout: Duration::from_secs(30),
            payload_entries_max: 300,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("member {0:?} is not of the form ID=RAFT_HOST:PORT/API_HOST:PORT")]
    Malformed(String),
    #[error("member id {0:?} is not a number")]
    BadId(String),
    #[error("member id {0} appears twice")]
    Duplicate(NodeId),
}

/// Parses `1=node1:7701/node1:7700,2=node2:7701/node2:7700`.
pub fn parse_members(text: &str) -> Result<BTreeMap<NodeId, NodeAddr>, MembersError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addrs) = part
            .split_once('=')
            .ok_or_else(|| MembersError::Malformed(part.into()))?;
        let (raft, api) = addrs
            .split_once('/')
            .ok_or_else(|| MembersError::Malformed(part.into()))?;
        if raft.is_empty() || api.is_empty() || !raft.contains(':') || !api.contains(':') {
            return Err(MembersError::Malformed(part.into()));
        }
        let id: NodeId = id.trim().parse().map_err(|_| MembersError::BadId(id.into()))?;
        let addr = NodeAddr {
            raft: raft.trim().to_string(),
            api: api.trim().to_string(),
        };
        if out.insert(id, addr).is_some() {
            return Err(MembersError::Duplicate(id));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limits_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn limits_that_relate_wrongly_are_refused() {
        let with = |f: fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            l.validate()
        };
        assert_eq!(
            with(|l| l.batch_commands_max = ledger::ENTRY_COMMANDS_MAX + 1),
            Err(LimitsError::BatchCommands(ledger::ENTRY_COMMANDS_MAX + 1))
        );
        assert_eq!(with(|l| l.batch_commands_max = ledger::ENTRY_COMMANDS_MAX), Ok(()));
        assert_eq!(with(|l| l.batch_commands_max = 0), Err(LimitsError::BatchCommands(0)));
        assert_eq!(with(|l| l.batches_in_flight_max = 0), Err(LimitsError::BatchesInFlight));
        assert!(matches!(
            with(|l| l.proposal_queue_max = api::BATCH_ITEMS_MAX - 1),
            Err(LimitsError::ProposalQueue { .. })
        ));
        assert_eq!(with(|l| l.route_attempts_max = 0), Err(LimitsError::RouteAttempts));
        let message = with(|l| l.batch_commands_max = 5000).unwrap_err().to_string();
        assert!(
            message.contains("--batch-commands-max") && message.contains("4096"),
            "{message}"
        );
    }

    #[test]
    fn members_parse() {
        let m = parse_members("1=a:1/a:2, 2=b:1/b:2").unwrap();
        assert_eq!(m[&2].api, "b:2");
        assert!(parse_members("1=a:1").is_err());
        assert!(parse_members("x=a:1/a:2").is_err());
        assert!(parse_members("1=a:1/a:2,1=b:1/b:2").is_err());
        assert!(parse_members("").unwrap().is_empty());
    }
}
