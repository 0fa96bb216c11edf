//! Starting and stopping a node: storage, Raft, the two listeners, the
//! bootstrap, and the background tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use storage::{NodeAddr, NodeId, Raft, StateMachineStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app_state::{AppInner, AppState};
use crate::config::NodeConfig;
use crate::decisions::RecentDecisions;
use crate::http;
use crate::peer::{Network, PeerIdentity};
use crate::proposer::{now_ms, Proposer, ProposerConfig};
use crate::reads::ReadBarrier;
use crate::tokens::{load_admin_token, AdminToken};

/// How often a follower whose clock and log time disagree says so, at most.
const CLOCK_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// How often the leader checks whether a hold or key is due to expire.
const EXPIRY_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] storage::StoreError),
    #[error("admin token: {0}")]
    AdminToken(#[from] crate::tokens::AdminTokenError),
    #[error("limits: {0}")]
    Limits(#[from] crate::config::LimitsError),
    #[error("raft configuration: {0}")]
    RaftConfig(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("initial members {0:?} do not include this node")]
    NotAMember(Vec<NodeId>),
    #[error(
        "this node has peers ({0}) but no peer token: set --peer-token or SPENDCAP_PEER_TOKEN to the same long \
         random secret on every node (e.g. `openssl rand -hex 32`; cluster/make-env.sh generates one for compose)"
    )]
    PeerTokenRequired(&'static str),
}

/// Peer authentication is mandatory for a node that has, or may get,
/// peers: initial members other than itself, or `--join`. A single node may
/// run without a peer token; it then accepts no Raft RPC at all.
fn check_peer_auth(config: &NodeConfig, admin_token: &str) -> Result<(), NodeError> {
    let Some(peer) = &config.peer_token else {
        if config.join {
            return Err(NodeError::PeerTokenRequired("--join"));
        }
        if config.initial_members.keys().any(|id| *id != config.node_id) {
            return Err(NodeError::PeerTokenRequired("initial members other than itself"));
        }
        return Ok(());
    };
    crate::tokens::check_peer_token(peer, admin_token, config.gateway_token.as_deref())?;
    Ok(())
}

/// A running node.
pub struct Node {
    pub node_id: NodeId,
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub api_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub admin_token: AdminToken,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn raft_config(c: &NodeConfig) -> Result<Config, NodeError> {
    let config = Config {
        cluster_name: c.cluster.clone(),
        heartbeat_interval: c.raft.heartbeat.as_millis() as u64,
        election_timeout_min: c.raft.election_timeout_min.as_millis() as u64,
        election_timeout_max: c.raft.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: c.raft.install_snapshot_timeout.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(c.raft.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: c.raft.logs_to_keep_after_snapshot,
        max_payload_entries: c.raft.payload_entries_max,
        ..Config::default()
    };
    config.validate().map_err(|e| NodeError::RaftConfig(e.to_string()))
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen { addr, source })
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(storage::StoreError::from)?;
        let admin_token = load_admin_token(config.admin_token.as_deref(), &config.data_dir)?;
        if let Some(g) = &config.gateway_token {
            crate::tokens::check_gateway_token(g, admin_token.value())?;
        }
        check_peer_auth(&config, admin_token.value())?;
        config.limits.validate()?;
        #[cfg(feature = "fault-injection")]
        crate::fault::init_clock(&config.data_dir);
        let (log_store, sm) = storage::open_raft_storage(&config.data_dir)?;
        // Before Raft starts applying, so the ring sees every entry.
        let decisions = RecentDecisions::new();
        sm.set_apply_observer(Arc::new(decisions.clone()));
        let log_time_at_start_ms = sm.read().ledger.now_ms();

        let identity = PeerIdentity {
            cluster: config.cluster.clone(),
            peer_token: config.peer_token.clone(),
        };
        let network = Network::new(identity.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config(&config)?),
            network.clone(),
            log_store,
            sm.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        crate::metrics::watch_raft(raft.clone());
        crate::metrics::register_zeros();

        let raft_listener = listen(config.raft_listen).await?;
        let api_listener = listen(config.api_listen).await?;
        let raft_addr = raft_listener.local_addr().map_err(|source| NodeError::Listen {
            addr: config.raft_listen,
            source,
        })?;
        let api_addr = api_listener.local_addr().map_err(|source| NodeError::Listen {
            addr: config.api_listen,
            source,
        })?;

        let limits = config.limits.clone();
        let limits_write_timeout = limits.write_timeout;
        let proposer = Proposer::start(
            raft.clone(),
            network,
            ProposerConfig {
                node_id: config.node_id,
                queue_max: limits.proposal_queue_max,
                batch_commands_max: limits.batch_commands_max,
                batch_linger: limits.batch_linger,
                batches_in_flight_max: limits.batches_in_flight_max,
                route_attempts_max: limits.route_attempts_max,
                clock_skew_max_ms: u64::try_from(limits.clock_skew_max.as_millis()).unwrap_or(u64::MAX),
                log_time_at_start_ms,
            },
        );
        let reads = ReadBarrier::start(proposer.leader_link().clone(), limits.read_timeout);
        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();

        let raft_app = crate::raft_server::app(config.node_id, identity, proposer.clone(), limits.write_timeout);
        tasks.push(serve(raft_listener, raft_app, shutdown.subscribe()));

        let state = AppState::new(AppInner {
            node_id: config.node_id,
            cluster: config.cluster.clone(),
            admin_token: admin_token.value().to_string(),
            gateway_token: config.gateway_token.clone(),
            peer_auth: config.peer_token.is_some(),
            raft: raft.clone(),
            sm: sm.clone(),
            decisions,
            proposer: proposer.clone(),
            reads,
            limits,
            metrics: crate::metrics::install(),
        });
        tasks.push(serve(api_listener, http::app(state), shutdown.subscribe()));
        tasks.push(tokio::spawn(expiry_ticks(
            proposer,
            sm.clone(),
            limits_write_timeout,
            shutdown.subscribe(),
        )));
        tasks.push(tokio::spawn(snapshot_ticks(
            raft.clone(),
            sm.clone(),
            config.raft.snapshot_log_bytes_min,
            shutdown.subscribe(),
        )));

        if !config.join {
            bootstrap(&raft, &config).await?;
        }
        tracing::info!(node = config.node_id, %api_addr, %raft_addr, "node started");
        Ok(Node {
            node_id: config.node_id,
            raft,
            sm,
            api_addr,
            raft_addr,
            admin_token,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting requests, lets in-flight ones finish, stops Raft.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = self.raft.shutdown().await;
        tracing::info!(node = self.node_id, "node stopped");
    }
}

fn serve(listener: TcpListener, app: axum::Router, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
            tracing::error!(error = %e, "server stopped with an error");
        }
    })
}

/// Initializes the cluster with the configured members. Safe on every node
/// and every restart: openraft refuses (harmlessly) once initialized, and
/// identical memberships on several nodes elect one leader.
async fn bootstrap(raft: &Raft, config: &NodeConfig) -> Result<(), NodeError> {
    let members: BTreeMap<NodeId, NodeAddr> = if config.initial_members.is_empty() {
        BTreeMap::from([(
            config.node_id,
            NodeAddr {
                raft: config.raft_advertise.clone(),
                api: config.api_advertise.clone(),
            },
        )])
    } else {
        config.initial_members.clone()
    };
    if !members.contains_key(&config.node_id) {
        return Err(NodeError::NotAMember(members.keys().copied().collect()));
    }
    if raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?
    {
        tracing::info!("already initialized; bootstrap is a no-op");
        return Ok(());
    }
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!("initialized the cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(NodeError::Raft(e.to_string())),
    }
}

/// How often a node checks whether its log has grown enough for a snapshot.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(2);

/// Builds a snapshot once the log written since the last one is at least as
/// big as the last snapshot (and at least `log_bytes_min`): the cost of a
/// snapshot (writing the whole state) is then paid once per state's worth
/// of log, whatever the entry sizes. openraft's own entry-count policy stays
/// as a bound.
async fn snapshot_ticks(raft: Raft, sm: StateMachineStore, log_bytes_min: u64, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(SNAPSHOT_CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (grown, snapshot_bytes) = sm.store().log_growth_since_snapshot();
        if grown >= log_bytes_min.max(snapshot_bytes) {
            // The counter resets when the snapshot is built.
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "snapshot not triggered");
            }
        }
    }
}

/// On the leader, gets an entry stamped now onto the log (through the
/// proposer's queue: alone it is an empty entry) when a hold or idempotency
/// key is due, so expiry happens by log time even without traffic. On a follower,
/// notes log time for the clock policy, and compares it with this node's
/// clock (metric; a warning when log time runs ahead of it by more than the
/// allowed skew).
async fn expiry_ticks(proposer: Proposer, sm: StateMachineStore, timeout: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(EXPIRY_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log_ms = 0u64;
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let link = proposer.leader_link();
        let leading = link.is_leader();
        let log_ms = sm.read().ledger.now_ms();
        if log_ms > last_log_ms {
            last_log_ms = log_ms;
            let skew_ms = i128::from(log_ms) - i128::from(now_ms());
            metrics::gauge!(api::metrics::CLOCK_LOG_SKEW_SECONDS).set(skew_ms as f64 / 1000.0);
            if !leading {
                link.stamper().observe_log_time(log_ms);
                let allowed = i128::from(link.stamper().skew_max_ms());
                let quiet = last_warning.is_some_and(|t| t.elapsed() < CLOCK_WARNING_INTERVAL);
                if skew_ms.abs() > allowed && !quiet {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(
                        skew_ms = skew_ms as i64,
                        "log time and this node's wall clock disagree by more than the allowed skew; \
                         one of the clocks is wrong (check NTP)"
                    );
                }
            }
        }
        if !leading {
            continue;
        }
        let stamp = link.stamper().stamp_now().time_ms;
        let due = sm.read().ledger.next_deadline_ms().is_some_and(|d| d <= stamp);
        if due {
            if let Err(e) = proposer.propose_tick(timeout).await {
                tracing::debug!(?e, "expiry tick not proposed");
            }
        }
    }
}
