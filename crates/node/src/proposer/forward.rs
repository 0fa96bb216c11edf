//! [`LeaderLink`]: where a batch gets decided. It finds the leader,
//! proposes the batch as one entry when this node leads, forwards it to the
//! leader's `/raft/propose` otherwise, and re-routes while nothing can have
//! been applied.
//!
//! What a failure means is tracked precisely: "not the leader" before
//! anything was appended means nothing happened (safe to re-route); a lost
//! answer after sending means the outcome is unknown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::Command;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use storage::{NodeId, Raft};

use super::outcome::{Decided, ProposeError};
use super::stamp::Stamper;
use crate::peer::{Network, PeerError, PATH_PROPOSE};

/// A forwarded batch, and the leader's answer.
#[derive(Serialize, Deserialize)]
pub struct ProposeRequest {
    pub commands: Vec<Command>,
}

#[derive(Serialize, Deserialize)]
pub enum ProposeAnswer {
    Decided(Vec<Decided>),
    /// The receiver is not the leader; nothing was appended.
    NotLeader,
    Failed(ProposeError),
}

/// Why proposing on this node failed.
#[derive(Debug)]
enum LocalError {
    /// Not the leader; nothing was (or will be) committed.
    NotLeader,
    Unknown(String),
    /// The Raft core stopped; the outcome is unknown.
    Failed(String),
}

/// The leader lookup and forwarding: gets a batch decided as one entry,
/// here if this node leads, else at the leader. Also what reads use to find
/// the leader. Only the proposer's batch loop proposes through it, so that
/// every write shares one queue and one batcher.
pub struct LeaderLink {
    raft: Raft,
    network: Network,
    node_id: NodeId,
    route_attempts_max: u32,
    stamper: Arc<Stamper>,
}

impl LeaderLink {
    pub fn new(
        raft: Raft,
        network: Network,
        node_id: NodeId,
        route_attempts_max: u32,
        stamper: Arc<Stamper>,
    ) -> LeaderLink {
        LeaderLink {
            raft,
            network,
            node_id,
            route_attempts_max,
            stamper,
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The leader's clock, as this node would stamp an entry.
    pub fn stamper(&self) -> &Stamper {
        &self.stamper
    }

    /// The current leader and its Raft address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.raft.clone()))
    }

    /// Whether this node believes it leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Proposes `commands` as one entry here, if this node is the leader.
    async fn propose_here(&self, commands: Vec<Command>) -> Result<Vec<Decided>, LocalError> {
        let count = commands.len();
        let started = Instant::now();
        let entry = ledger::Entry {
            time_ms: self.stamper.stamp_entry(),
            commands,
        };
        match self.raft.client_write(entry).await {
            Ok(resp) => {
                metrics::histogram!(api::metrics::COMMIT_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
                let index = resp.log_id.index;
                let time_ms = resp.data.time_ms;
                let outcomes = resp.data.outcomes;
                if outcomes.len() != count {
                    // One outcome per command is the state machine's contract.
                    return Err(LocalError::Unknown(format!(
                        "applied {count} commands but got {} outcomes",
                        outcomes.len()
                    )));
                }
                Ok(outcomes
                    .into_iter()
                    .enumerate()
                    .map(|(i, outcome)| Decided {
                        outcome,
                        log_index: index,
                        batch_position: i as u32,
                        time_ms,
                    })
                    .collect())
            }
            // openraft answers ForwardToLeader only when the entry was not
            // appended here, or was appended and then truncated by a newer
            // leader: either way it was never committed.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(LocalError::NotLeader),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(LocalError::Unknown(e.to_string()))
            }
            // The core stopped (storage error, panic, shutdown): the entry
            // may have been appended and replicated before it did.
            Err(RaftError::Fatal(e)) => Err(LocalError::Failed(e.to_string())),
        }
    }

    /// Waits (bounded) for a leader to be known.
    async fn wait_for_leader(&self, deadline: Instant) -> Option<(NodeId, String)> {
        let mut watch = self.raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            let remaining = deadline.checked_duration_since(Instant::now())?;
            if tokio::time::timeout(remaining.min(Duration::from_millis(100)), watch.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return None;
            }
        }
    }

    /// Gets `commands` decided as one entry: here if this node leads, else
    /// at the leader. Re-routes while nothing can have been applied. An
    /// empty batch (an expiry tick: an entry that only advances log time)
    /// is proposed only here, and only if this node leads: log time is the
    /// leader's to move.
    pub(super) async fn decide(&self, commands: Vec<Command>, deadline: Instant) -> Result<Vec<Decided>, ProposeError> {
        if let Some(why) = crate::health::failure(&self.raft) {
            // Nothing was sent: a failed node decides nothing.
            return Err(ProposeError::NodeFailed(why));
        }
        if commands.is_empty() {
            if !self.is_leader() {
                return Err(ProposeError::NoLeader);
            }
            return self
                .decide_here(commands, deadline)
                .await
                .unwrap_or(Err(ProposeError::NoLeader));
        }
        for _ in 0..self.route_attempts_max {
            let Some((leader, addr)) = self.wait_for_leader(deadline).await else {
                return Err(ProposeError::NoLeader);
            };
            if deadline.saturating_duration_since(Instant::now()).is_zero() {
                return Err(ProposeError::NoLeader);
            }
            let attempt = if leader == self.node_id {
                self.decide_here(commands.clone(), deadline).await
            } else {
                self.decide_at(leader, &addr, &commands, deadline).await
            };
            match attempt {
                Some(result) => return result,
                None => self.pause_before_reroute(deadline).await,
            }
        }
        Err(ProposeError::NoLeader)
    }

    /// One attempt here; `None`: this node no longer leads and nothing was
    /// appended (re-route).
    async fn decide_here(
        &self,
        commands: Vec<Command>,
        deadline: Instant,
    ) -> Option<Result<Vec<Decided>, ProposeError>> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, self.propose_here(commands)).await {
            Ok(Ok(decided)) => Some(Ok(decided)),
            Ok(Err(LocalError::NotLeader)) => None,
            Ok(Err(LocalError::Unknown(e))) => Some(Err(ProposeError::Unknown(e))),
            Ok(Err(LocalError::Failed(e))) => Some(Err(ProposeError::Unknown(format!(
                "this node failed while deciding: {e}"
            )))),
            Err(_) => Some(Err(ProposeError::Unknown(
                "no decision before the write timeout".into(),
            ))),
        }
    }

    /// One attempt at the leader `leader`; `None`: nothing was taken there
    /// (re-route).
    async fn decide_at(
        &self,
        leader: NodeId,
        addr: &str,
        commands: &[Command],
        deadline: Instant,
    ) -> Option<Result<Vec<Decided>, ProposeError>> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        metrics::counter!(api::metrics::FORWARDED_REQUESTS_TOTAL, "kind" => "write").increment(1);
        let client = self.network.client(leader, addr);
        let request = ProposeRequest {
            commands: commands.to_vec(),
        };
        match client.call::<_, ProposeAnswer>(PATH_PROPOSE, &request, remaining).await {
            Ok(ProposeAnswer::Decided(decided)) if decided.len() == commands.len() => Some(Ok(decided)),
            Ok(ProposeAnswer::Decided(_)) => Some(Err(ProposeError::Unknown(
                "the leader answered for a different batch".into(),
            ))),
            // Nothing was taken (not the leader, a failed leader, never
            // sent, refused before acting): re-route.
            Ok(ProposeAnswer::NotLeader)
            | Ok(ProposeAnswer::Failed(ProposeError::NodeFailed(_)))
            | Err(PeerError::NotSent(_))
            | Err(PeerError::Refused(_)) => None,
            Ok(ProposeAnswer::Failed(e)) => Some(Err(e)),
            Err(PeerError::MaybeSent(e)) => Some(Err(ProposeError::Unknown(e))),
        }
    }

    /// A short pause so a re-route sees the new leader rather than spinning.
    async fn pause_before_reroute(&self, deadline: Instant) {
        let pause = Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}
