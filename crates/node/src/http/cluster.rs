//! `/v1/cluster/*`: status, digest, membership changes, snapshots and
//! backups (admin).

use std::collections::BTreeSet;

use api::{AddLearnerRequest, ChangeMembershipRequest, ClusterStatus, DigestView, Member, MembershipResponse};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use storage::{NodeAddr, NodeId};

use super::calls::barrier;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Principal};
use crate::app_state::AppState;

fn members(s: &AppState) -> Vec<Member> {
    let m = s.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            raft_addr: node.raft.clone(),
            api_addr: node.api.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

pub async fn cluster_status(State(s): State<AppState>, principal: Principal) -> ApiResult<Json<ClusterStatus>> {
    principal.require_admin()?;
    let m = s.raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let committed = s
        .raft
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    let counts = s.local().counts();
    Ok(Json(ClusterStatus {
        node_id: s.node_id,
        cluster: s.cluster.clone(),
        role: role.into(),
        leader_id: m.current_leader,
        term: m.current_term,
        members: members(&s),
        last_log_index: m.last_log_index,
        committed_index: committed,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        ledger_time_ms: counts.now_ms,
        budgets: counts.budgets as u64,
        sessions: counts.sessions as u64,
        live_holds: counts.live_holds as u64,
        idempotency_keys: counts.idempotency_keys as u64,
    }))
}

pub async fn cluster_digest(State(s): State<AppState>, principal: Principal) -> ApiResult<Json<DigestView>> {
    principal.require_admin()?;
    let d = s.local().digest();
    Ok(Json(DigestView {
        node_id: s.node_id,
        applied_index: d.applied.map(|l| l.index),
        digest: hex::encode(d.digest),
        history_head: hex::encode(d.history_head),
    }))
}

fn not_leader(s: &AppState) -> ApiError {
    let leader = s
        .raft
        .metrics()
        .borrow()
        .current_leader
        .and_then(|l| members(s).into_iter().find(|m| m.id == l));
    ApiError::Conflict {
        code: "not_leader",
        message: match leader {
            Some(m) => format!("membership changes go to the leader: node {} at {}", m.id, m.api_addr),
            None => "membership changes go to the leader, and none is known now".into(),
        },
    }
}

pub async fn add_learner(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<AddLearnerRequest>,
) -> ApiResult<Json<MembershipResponse>> {
    principal.require_admin()?;
    if !req.raft_addr.contains(':') || !req.api_addr.contains(':') {
        return Err(ApiError::field("raft_addr", "addresses are host:port"));
    }
    if !s.peer_auth {
        return Err(ApiError::Conflict {
            code: "peer_token_required",
            message: "this node runs without a peer token, so it accepts no Raft RPC and can have no peers: \
                      restart every node with the same --peer-token first"
                .into(),
        });
    }
    let node = NodeAddr {
        raft: req.raft_addr,
        api: req.api_addr,
    };
    let answer = s.raft.add_learner(req.id, node, true).await;
    membership_answer(&s, answer.map(|resp| resp.log_id.index))
}

/// The answer to a membership change: the log index it was committed at and
/// the members now, or not-leader, or why it failed.
fn membership_answer(
    s: &AppState,
    answer: Result<u64, RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>>,
) -> ApiResult<Json<MembershipResponse>> {
    match answer {
        Ok(log_index) => Ok(Json(MembershipResponse {
            log_index,
            members: members(s),
        })),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(not_leader(s)),
        Err(e) => Err(ApiError::Unprocessable {
            code: "membership_change_failed",
            message: e.to_string(),
        }),
    }
}

pub async fn change_membership(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<ChangeMembershipRequest>,
) -> ApiResult<Json<MembershipResponse>> {
    principal.require_admin()?;
    if req.voters.is_empty() {
        return Err(ApiError::field("voters", "at least one voter"));
    }
    let voters: BTreeSet<u64> = req.voters.into_iter().collect();
    let answer = s.raft.change_membership(voters, false).await;
    membership_answer(&s, answer.map(|resp| resp.log_id.index))
}

pub async fn trigger_snapshot(State(s): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require_admin()?;
    s.raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A consistent, checksummed backup of this node's state (the snapshot
/// file format), after catching up with the leader. Streamed; the file is
/// unlinked as soon as it is open.
pub async fn backup(State(s): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require_admin()?;
    barrier(&s).await?;
    let name = format!("backup-{}-{}", s.node_id, crate::proposer::now_ms());
    let state = s.clone();
    let (meta, file, len) = tokio::task::spawn_blocking(move || state.local().backup(&name))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let stream = tokio_util_stream(tokio::fs::File::from_std(file));
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    if let Ok(v) = header::HeaderValue::from_str(&meta.snapshot_id) {
        headers.insert("x-spendcap-snapshot-id", v);
    }
    Ok(response)
}

/// Reads a file as a stream of chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    /// Bytes read from the backup file per chunk.
    const CHUNK_BYTES: usize = 256 << 10;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
