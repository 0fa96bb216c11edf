//! `spendcap serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use node::tokens::AdminToken;
use node::{parse_members, Limits, Node, NodeConfig, RaftTuning};

use crate::process::{init_logs, shutdown_signal, LogFormat};

#[derive(Args)]
pub struct ServeArgs {
    /// This node's id (unique in the cluster; never reused).
    #[arg(long, env = "SPENDCAP_ID", default_value_t = 1)]
    id: u64,
    /// Cluster name; nodes refuse Raft RPCs from other clusters.
    #[arg(long, env = "SPENDCAP_CLUSTER", default_value = "spendcap")]
    cluster: String,
    #[arg(long, env = "SPENDCAP_DATA_DIR", default_value = "./spendcap-data")]
    data_dir: PathBuf,
    /// Client API listen address.
    #[arg(long, env = "SPENDCAP_API_LISTEN", default_value = "127.0.0.1:7700")]
    api_listen: SocketAddr,
    /// Raft RPC listen address (keep it off public networks).
    #[arg(long, env = "SPENDCAP_RAFT_LISTEN", default_value = "127.0.0.1:7701")]
    raft_listen: SocketAddr,
    /// How others reach the API (host:port); default: the listen address.
    #[arg(long, env = "SPENDCAP_API_ADVERTISE")]
    api_advertise: Option<String>,
    /// How peers reach the Raft port (host:port); default: the listen address.
    #[arg(long, env = "SPENDCAP_RAFT_ADVERTISE")]
    raft_advertise: Option<String>,
    /// Members to initialize with, identical on every node:
    /// `1=node1:7701/node1:7700,2=...`. Safe on every start.
    #[arg(long, env = "SPENDCAP_INITIAL_MEMBERS", default_value = "")]
    initial_members: String,
    /// Do not initialize; wait to be added as a learner.
    #[arg(long, env = "SPENDCAP_JOIN")]
    join: bool,
    /// Admin bearer token; generated into the data dir when absent.
    #[arg(long, env = "SPENDCAP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Shared secret required on Raft RPCs: mandatory when the node has
    /// peers (initial members other than itself, or --join); the same on
    /// every node. A single node without one accepts no Raft RPC.
    #[arg(long, env = "SPENDCAP_PEER_TOKEN", hide_env_values = true)]
    peer_token: Option<String>,
    /// Bearer token of the x402 gateway (`spendcap gateway --gateway-token`):
    /// the only credential besides the admin token that may pin holds as
    /// settling and capture or void pinned holds. Unset: no gateway.
    #[arg(long, env = "SPENDCAP_GATEWAY_TOKEN", hide_env_values = true)]
    gateway_token: Option<String>,
    #[arg(long, env = "SPENDCAP_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    #[arg(long, env = "SPENDCAP_HEARTBEAT_MS", default_value_t = 100)]
    heartbeat_ms: u64,
    #[arg(long, env = "SPENDCAP_ELECTION_TIMEOUT_MIN_MS", default_value_t = 1000)]
    election_timeout_min_ms: u64,
    #[arg(long, env = "SPENDCAP_ELECTION_TIMEOUT_MAX_MS", default_value_t = 2000)]
    election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries...
    #[arg(long, env = "SPENDCAP_SNAPSHOT_LOGS", default_value_t = 100_000)]
    snapshot_logs: u64,
    /// ...or once the log since the last snapshot holds this many bytes and
    /// at least the last snapshot's size.
    #[arg(long, env = "SPENDCAP_SNAPSHOT_LOG_BYTES_MIN", default_value_t = 64 * 1024 * 1024)]
    snapshot_log_bytes_min: u64,
    /// Entries kept behind a snapshot for slow followers.
    #[arg(long, env = "SPENDCAP_LOGS_TO_KEEP", default_value_t = 1_000)]
    logs_to_keep: u64,
    /// Commands in one Raft entry, at most 4,096 (the ledger's entry limit).
    #[arg(long, env = "SPENDCAP_BATCH_COMMANDS_MAX", default_value_t = Limits::default().batch_commands_max)]
    batch_commands_max: usize,
    #[arg(long, env = "SPENDCAP_BATCH_LINGER_US", default_value_t = 0)]
    batch_linger_us: u64,
    #[arg(long, env = "SPENDCAP_BATCHES_IN_FLIGHT_MAX", default_value_t = 2)]
    batches_in_flight_max: usize,
    /// How long a write waits before answering `outcome_unknown`.
    #[arg(long, env = "SPENDCAP_WRITE_TIMEOUT_MS", default_value_t = 5000)]
    write_timeout_ms: u64,
    #[arg(long, env = "SPENDCAP_REQUEST_BODY_BYTES_MAX", default_value_t = 64 * 1024)]
    request_body_bytes_max: usize,
    /// Largest body of the batch endpoint (up to 1,000 authorizations).
    #[arg(long, env = "SPENDCAP_BATCH_REQUEST_BODY_BYTES_MAX", default_value_t = 2 * 1024 * 1024)]
    batch_request_body_bytes_max: usize,
    #[arg(long, env = "SPENDCAP_REQUESTS_IN_FLIGHT_MAX", default_value_t = 4096)]
    requests_in_flight_max: usize,
    /// Budgets exported as labelled gauges (the fullest first).
    #[arg(long, env = "SPENDCAP_METRICS_BUDGETS_MAX", default_value_t = 50)]
    metrics_budgets_max: usize,
    /// Sessions exported as labelled gauges (the fullest first).
    #[arg(long, env = "SPENDCAP_METRICS_SESSIONS_MAX", default_value_t = 50)]
    metrics_sessions_max: usize,
    /// How far ahead of real time (as the node's monotonic clock measures it
    /// since a known log time) a leader may stamp log time: a wall clock that
    /// jumps ahead cannot expire holds, sessions or keys early by more.
    #[arg(long, env = "SPENDCAP_CLOCK_SKEW_MAX_MS", default_value_t = 2000)]
    clock_skew_max_ms: u64,
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    init_logs(a.log_format, "info,openraft=warn");
    let limits = Limits {
        request_body_bytes_max: a.request_body_bytes_max,
        batch_request_body_bytes_max: a.batch_request_body_bytes_max,
        requests_in_flight_max: a.requests_in_flight_max,
        write_timeout: Duration::from_millis(a.write_timeout_ms),
        batch_commands_max: a.batch_commands_max,
        batch_linger: Duration::from_micros(a.batch_linger_us),
        batches_in_flight_max: a.batches_in_flight_max,
        metrics_budgets_max: a.metrics_budgets_max,
        metrics_sessions_max: a.metrics_sessions_max,
        clock_skew_max: Duration::from_millis(a.clock_skew_max_ms),
        ..Limits::default()
    };
    let raft = RaftTuning {
        heartbeat: Duration::from_millis(a.heartbeat_ms),
        election_timeout_min: Duration::from_millis(a.election_timeout_min_ms),
        election_timeout_max: Duration::from_millis(a.election_timeout_max_ms),
        snapshot_logs_since_last: a.snapshot_logs,
        snapshot_log_bytes_min: a.snapshot_log_bytes_min,
        logs_to_keep_after_snapshot: a.logs_to_keep,
        ..RaftTuning::default()
    };
    let config = NodeConfig {
        node_id: a.id,
        cluster: a.cluster,
        data_dir: a.data_dir.clone(),
        api_advertise: a.api_advertise.unwrap_or_else(|| a.api_listen.to_string()),
        raft_advertise: a.raft_advertise.unwrap_or_else(|| a.raft_listen.to_string()),
        api_listen: a.api_listen,
        raft_listen: a.raft_listen,
        initial_members: parse_members(&a.initial_members).context("--initial-members")?,
        join: a.join,
        admin_token: a.admin_token,
        peer_token: a.peer_token,
        gateway_token: a.gateway_token,
        limits,
        raft,
    };
    let node = Node::start(config).await.context("starting the node")?;
    if let AdminToken::Generated(_) = &node.admin_token {
        // Never the token itself: stderr ends up in log collectors. Only
        // the path of the file (mode 0600) that holds it.
        eprintln!(
            "spendcap: generated an admin token; read it from {} (mode 0600)",
            a.data_dir.join("admin-token").display()
        );
    }
    eprintln!(
        "spendcap: node {} serving the API on http://{}",
        node.node_id, node.api_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
