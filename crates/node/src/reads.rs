//! Linearizable reads on every node.
//!
//! A read first learns a "read index" from the leader (which confirms its
//! leadership with a heartbeat round, `get_read_log_id`), then waits until
//! this node has applied that far, then reads local state. Concurrent reads
//! share one barrier: a barrier started after a read arrived serves it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::peer::{PeerError, PATH_READ_INDEX};
use crate::proposer::LeaderLink;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is available to confirm the read")]
    NoLeader,
    #[error("the read barrier did not complete in time")]
    Timeout,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node's Raft core stopped (see `crate::health`).
    #[error("the node failed: {0}")]
    NodeFailed(String),
}

/// The leader's answer to a follower's read-index request.
#[derive(Serialize, Deserialize)]
pub enum ReadIndexAnswer {
    Index(Option<u64>),
    NotLeader,
}

/// Reads waiting for a barrier.
const READS_WAITING_MAX: usize = 65_536;

type Waiter = oneshot::Sender<Result<Option<u64>, ReadError>>;

#[derive(Clone)]
pub struct ReadBarrier {
    tx: mpsc::Sender<Waiter>,
    timeout: Duration,
}

impl ReadBarrier {
    pub fn start(link: Arc<LeaderLink>, timeout: Duration) -> ReadBarrier {
        let (tx, rx) = mpsc::channel(READS_WAITING_MAX);
        tokio::spawn(barrier_loop(rx, link, timeout));
        ReadBarrier { tx, timeout }
    }

    /// Waits until this node has applied everything committed before the
    /// call; returns the applied index the read may use.
    pub async fn wait(&self) -> Result<Option<u64>, ReadError> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(tx).map_err(|_| ReadError::ShuttingDown)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ReadError::ShuttingDown),
            Err(_) => Err(ReadError::Timeout),
        }
    }
}

async fn barrier_loop(mut rx: mpsc::Receiver<Waiter>, link: Arc<LeaderLink>, timeout: Duration) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result = barrier(&link, Instant::now() + timeout).await;
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// One read barrier.
async fn barrier(link: &LeaderLink, deadline: Instant) -> Result<Option<u64>, ReadError> {
    let raft = link.raft();
    let remaining = || deadline.saturating_duration_since(Instant::now());
    if let Some(why) = crate::health::failure(raft) {
        return Err(ReadError::NodeFailed(why));
    }
    let read_index = loop {
        let Some((leader, addr)) = link.leader() else {
            if remaining().is_zero() {
                return Err(ReadError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(20).min(remaining())).await;
            continue;
        };
        if leader == link.node_id() {
            match tokio::time::timeout(remaining(), raft.get_read_log_id()).await {
                Ok(Ok((read_log_id, _))) => break read_log_id.map(|l| l.index),
                Ok(Err(openraft::error::RaftError::Fatal(e))) => return Err(ReadError::NodeFailed(e.to_string())),
                Ok(Err(_)) => return Err(ReadError::NoLeader),
                Err(_) => return Err(ReadError::Timeout),
            }
        }
        metrics::counter!(api::metrics::FORWARDED_REQUESTS_TOTAL, "kind" => "read").increment(1);
        let client = link.network().client(leader, &addr);
        match client
            .call::<_, ReadIndexAnswer>(PATH_READ_INDEX, &(), remaining())
            .await
        {
            Ok(ReadIndexAnswer::Index(i)) => break i,
            Ok(ReadIndexAnswer::NotLeader) | Err(PeerError::NotSent(_)) | Err(PeerError::Refused(_)) => {
                if remaining().is_zero() {
                    return Err(ReadError::NoLeader);
                }
                tokio::time::sleep(Duration::from_millis(20).min(remaining())).await;
            }
            Err(PeerError::MaybeSent(_)) => return Err(ReadError::Timeout),
        }
    };
    let applied = raft
        .wait(Some(remaining()))
        .applied_index_at_least(read_index, "read barrier")
        .await
        .map_err(|_| ReadError::Timeout)?;
    Ok(applied.last_applied.map(|l| l.index))
}
