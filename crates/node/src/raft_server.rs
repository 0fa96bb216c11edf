//! The Raft port: RPCs from peers (append, vote, snapshot) and forwarded
//! proposals and read-index requests. Not for clients; keep it off public
//! networks.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use storage::{NodeId, Raft};

use crate::peer::{
    PeerIdentity, RpcResult, HEADER_CLUSTER, HEADER_PEER_TOKEN, HEADER_TARGET, PATH_APPEND, PATH_PROPOSE,
    PATH_READ_INDEX, PATH_SNAPSHOT, PATH_VOTE,
};
use crate::proposer::{LeaderLink, ProposeAnswer, ProposeRequest, Proposer};
use crate::reads::ReadIndexAnswer;
use crate::tokens::tokens_equal;

/// Largest Raft RPC body (an AppendEntries of `payload_entries_max` full
/// batches, or a snapshot chunk).
pub const RAFT_BODY_BYTES_MAX: usize = 256 << 20;

#[derive(Clone)]
struct RaftState {
    node_id: NodeId,
    identity: PeerIdentity,
    raft: Raft,
    link: Arc<LeaderLink>,
    proposer: Proposer,
    write_timeout: Duration,
}

pub fn app(node_id: NodeId, identity: PeerIdentity, proposer: Proposer, write_timeout: Duration) -> Router {
    let link = proposer.leader_link().clone();
    let state = RaftState {
        node_id,
        identity,
        raft: link.raft().clone(),
        link,
        proposer,
        write_timeout,
    };
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_PROPOSE, post(propose))
        .route(PATH_READ_INDEX, post(read_index))
        .layer(DefaultBodyLimit::max(RAFT_BODY_BYTES_MAX))
        // Outermost: the peer token is checked before any body is read.
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Every Raft RPC passes [`check`] before its handler runs.
async fn authenticate(State(s): State<RaftState>, req: Request, next: Next) -> Response {
    match check(&s, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// Refuses requests without the right peer token (first, so nothing about
/// the node is told to a caller without it), then requests meant for
/// another node or cluster. A node without a peer token has no peers (it
/// refuses to start with peers without one) and accepts no Raft RPC.
fn check(state: &RaftState, headers: &HeaderMap) -> Result<(), Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(expected) = &state.identity.peer_token else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "this node has no peer token, hence no peers: it accepts no Raft RPC",
        )
            .into_response());
    };
    let Some(given) = header(HEADER_PEER_TOKEN) else {
        return Err((StatusCode::UNAUTHORIZED, "peer token required").into_response());
    };
    if !tokens_equal(given, expected) {
        return Err((StatusCode::FORBIDDEN, "wrong peer token").into_response());
    }
    if header(HEADER_CLUSTER) != Some(state.identity.cluster.as_str()) {
        return Err((
            StatusCode::CONFLICT,
            format!("this node is in cluster {:?}", state.identity.cluster),
        )
            .into_response());
    }
    if header(HEADER_TARGET) != Some(state.node_id.to_string().as_str()) {
        return Err((StatusCode::CONFLICT, format!("this is node {}", state.node_id)).into_response());
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    postcard::from_bytes(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable body: {e}")).into_response())
}

fn encode<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => ([(http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("unencodable answer: {e}")).into_response(),
    }
}

fn result<T: Serialize, E: Serialize>(r: Result<T, E>) -> Response {
    encode(&match r {
        Ok(v) => RpcResult::Ok(v),
        Err(e) => RpcResult::Err(e),
    })
}

async fn append(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => result(s.raft.append_entries(req).await),
        Err(r) => r,
    }
}

async fn vote(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => result(s.raft.vote(req).await),
        Err(r) => r,
    }
}

async fn snapshot(State(s): State<RaftState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => result(s.raft.install_snapshot(req).await),
        Err(r) => r,
    }
}

/// A follower's batch: joins this leader's own batch queue, so one entry
/// carries commands from every node. Refused if this node does not lead.
async fn propose(State(s): State<RaftState>, body: Bytes) -> Response {
    let req: ProposeRequest = match decode(&body) {
        Ok(req) => req,
        Err(r) => return r,
    };
    if s.link.leader().map(|(id, _)| id) != Some(s.node_id) {
        return encode(&ProposeAnswer::NotLeader);
    }
    encode(
        &match s.proposer.propose_forwarded(req.commands, s.write_timeout).await {
            Ok(decided) => ProposeAnswer::Decided(decided),
            Err(e) => ProposeAnswer::Failed(e),
        },
    )
}

async fn read_index(State(s): State<RaftState>) -> Response {
    encode(&match s.raft.get_read_log_id().await {
        Ok((read_log_id, _)) => ReadIndexAnswer::Index(read_log_id.map(|l| l.index)),
        Err(_) => ReadIndexAnswer::NotLeader,
    })
}
