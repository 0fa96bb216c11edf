//! Talking to other nodes over the Raft port: HTTP with postcard bodies.
//!
//! Every request names the cluster and the node it is meant for (and carries
//! the peer token when one is configured); the receiver refuses anything
//! else, so a misrouted RPC can never touch the wrong node's log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use storage::{NodeAddr, NodeId, TypeConfig};

pub const HEADER_CLUSTER: &str = "x-spendcap-cluster";
pub const HEADER_TARGET: &str = "x-spendcap-target";
pub const HEADER_PEER_TOKEN: &str = "x-spendcap-peer-token";

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub const PATH_PROPOSE: &str = "/raft/propose";
pub const PATH_READ_INDEX: &str = "/raft/read-index";

/// How long a peer connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle pooled connections kept per peer.
const POOL_IDLE_PER_PEER_MAX: usize = 8;

/// Why a call to a peer failed, split by whether the request may have been
/// acted on.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The request never left (connection refused, DNS): nothing happened.
    #[error("peer unreachable: {0}")]
    NotSent(String),
    /// The request may have arrived; its effect is unknown.
    #[error("peer call failed after sending: {0}")]
    MaybeSent(String),
    /// The peer refused the request (4xx) before acting on it.
    #[error("peer refused the request: {0}")]
    Refused(String),
}

/// What nodes share to talk to each other.
#[derive(Clone)]
pub struct PeerIdentity {
    pub cluster: String,
    pub peer_token: Option<String>,
}

/// A pooled HTTP client for one peer.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    base: String,
    target: NodeId,
    identity: PeerIdentity,
}

impl PeerClient {
    pub fn new(target: NodeId, raft_addr: &str, identity: PeerIdentity) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(POOL_IDLE_PER_PEER_MAX)
            .tcp_nodelay(true)
            .build()
            // Only fails if the TLS backend cannot initialize; we use none.
            .expect("an HTTP client without TLS always builds");
        PeerClient {
            http,
            base: format!("http://{raft_addr}"),
            target,
            identity,
        }
    }

    /// POSTs a postcard body and decodes a postcard answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let started = Instant::now();
        let bytes = postcard::to_allocvec(body).map_err(|e| PeerError::NotSent(e.to_string()))?;
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(timeout)
            .header(HEADER_CLUSTER, &self.identity.cluster)
            .header(HEADER_TARGET, self.target.to_string())
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        if let Some(token) = &self.identity.peer_token {
            request = request.header(HEADER_PEER_TOKEN, token);
        }
        let result = async {
            let response = request.send().await.map_err(|e| {
                if e.is_connect() || e.is_builder() {
                    PeerError::NotSent(e.to_string())
                } else {
                    PeerError::MaybeSent(e.to_string())
                }
            })?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| PeerError::MaybeSent(e.to_string()))?;
            // A 4xx is the receiver refusing the request before acting on it
            // (wrong peer token, cluster or node, undecodable body); a 5xx
            // may come after it acted, so its effect is unknown.
            if status.is_client_error() {
                return Err(PeerError::Refused(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            if !status.is_success() {
                return Err(PeerError::MaybeSent(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            postcard::from_bytes(&body).map_err(|e| PeerError::MaybeSent(format!("undecodable answer: {e}")))
        }
        .await;
        let route = path.trim_start_matches("/raft/");
        metrics::histogram!(api::metrics::RAFT_RPC_DURATION_SECONDS, "rpc" => route.to_string())
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(api::metrics::RAFT_RPC_ERRORS_TOTAL, "rpc" => route.to_string()).increment(1);
        }
        result
    }
}

/// Hands openraft one cached client per peer.
#[derive(Clone)]
pub struct Network {
    identity: PeerIdentity,
    clients: Arc<Mutex<HashMap<NodeId, (String, PeerClient)>>>,
}

impl Network {
    pub fn new(identity: PeerIdentity) -> Self {
        Network {
            identity,
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The client for `target` at `raft_addr`, reusing its connection pool.
    pub fn client(&self, target: NodeId, raft_addr: &str) -> PeerClient {
        let Ok(mut clients) = self.clients.lock() else {
            return PeerClient::new(target, raft_addr, self.identity.clone());
        };
        match clients.get(&target) {
            Some((addr, client)) if addr == raft_addr => client.clone(),
            _ => {
                let client = PeerClient::new(target, raft_addr, self.identity.clone());
                clients.insert(target, (raft_addr.to_string(), client.clone()));
                client
            }
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> RaftPeer {
        // No connection is opened here: the first RPC does it.
        RaftPeer {
            client: self.client(target, &node.raft),
            target,
        }
    }
}

/// openraft's view of one peer.
pub struct RaftPeer {
    client: PeerClient,
    target: NodeId,
}

/// The answer body of the Raft RPC endpoints.
#[derive(Serialize, Deserialize)]
pub enum RpcResult<T, E> {
    Ok(T),
    Err(E),
}

impl RaftPeer {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self
            .client
            .call::<Req, RpcResult<Resp, RaftError<NodeId, E>>>(path, req, option.hard_ttl())
            .await
        {
            Ok(RpcResult::Ok(resp)) => Ok(resp),
            Ok(RpcResult::Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ (PeerError::NotSent(_) | PeerError::Refused(_))) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ PeerError::MaybeSent(_)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.rpc(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.rpc(PATH_VOTE, &rpc, &option).await
    }
}
