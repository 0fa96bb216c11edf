//! Getting commands decided: the batcher and the router.
//!
//! openraft 0.9 writes one entry per `client_write` and syncs it before the
//! next, so throughput comes from putting many commands in one entry. Every
//! node gathers concurrent commands (bounded by count, with an optional
//! linger) into one batch; the leader proposes the batch as one entry, a
//! follower forwards it to the leader. Each caller gets its own outcome with
//! the entry's log index and its position in the batch.
//!
//! What a failure means is tracked precisely: "not the leader" before
//! anything was appended means nothing happened (safe to re-route); a lost
//! answer after sending means the outcome is unknown.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger::{Command, Outcome};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use storage::{NodeId, Raft};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::clock::{ClockPolicy, Stamp};
use crate::peer::{Network, PeerError, PATH_PROPOSE};

/// A command's decision and where it sits in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub outcome: Outcome,
    pub log_index: u64,
    pub batch_position: u32,
    /// The entry's log time.
    pub time_ms: u64,
}

impl Decided {
    /// Where the command's effect was first decided: for an approval,
    /// capture or void (also when replayed) the original position, else
    /// this entry's.
    pub fn position(&self) -> ledger::Position {
        match &self.outcome {
            Outcome::Approved { approval, .. } => approval.at,
            Outcome::Captured { captured, .. } => captured.at,
            Outcome::Voided { at, .. } => *at,
            _ => ledger::Position {
                log_index: self.log_index,
                batch_position: self.batch_position,
                time_ms: self.time_ms,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// Nothing was applied; retrying is safe.
    #[error("no leader is available; nothing was applied")]
    NoLeader,
    /// The command may or may not have been applied.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    /// The proposal queue is full; nothing was applied.
    #[error("the node is overloaded")]
    Overloaded,
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node's Raft core has failed (an openraft `Fatal` error, see
    /// `crate::health`): it decides nothing more, and nothing was sent.
    /// (A failure while a command was being decided is `Unknown`.)
    #[error("the node failed: {0}")]
    NodeFailed(String),
}

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

struct Pending {
    command: Command,
    deadline: Instant,
    reply: oneshot::Sender<Result<Decided, ProposeError>>,
}

/// This node's wall clock, Unix milliseconds. The leader stamps entries with
/// it as far as the clock policy allows ([`Router::stamp_now`]). Apply never
/// reads a clock; the ledger keeps time monotonic even if this one jumps
/// back.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    #[cfg(feature = "fault-injection")]
    let wall = wall.saturating_add_signed(crate::fault::clock_offset_ms());
    wall
}

#[derive(Clone)]
pub struct ProposerConfig {
    pub node_id: NodeId,
    pub queue_max: usize,
    pub batch_commands_max: usize,
    pub batch_linger: Duration,
    pub batches_in_flight_max: usize,
    pub route_attempts_max: u32,
    /// How far ahead of the real time this node can vouch for a leader may
    /// stamp an entry (see `clock.rs`).
    pub clock_skew_max_ms: u64,
    /// Log time of the state loaded at start.
    pub log_time_at_start_ms: u64,
}

/// The handle request handlers use.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    router: Arc<Router>,
}

/// Sends batches where they can be decided.
pub struct Router {
    raft: Raft,
    network: Network,
    config: ProposerConfig,
    clock: std::sync::Mutex<ClockPolicy>,
    /// Monotonic zero of the clock policy.
    clock_start: Instant,
    /// Whether the last stamp was clamped (to log the change once).
    clamping: std::sync::atomic::AtomicBool,
}

impl Proposer {
    pub fn start(raft: Raft, network: Network, config: ProposerConfig) -> Proposer {
        let (tx, rx) = mpsc::channel(config.queue_max);
        let clock = ClockPolicy::new(config.clock_skew_max_ms, now_ms(), config.log_time_at_start_ms);
        let router = Arc::new(Router {
            raft,
            network,
            config,
            clock: std::sync::Mutex::new(clock),
            clock_start: Instant::now(),
            clamping: std::sync::atomic::AtomicBool::new(false),
        });
        metrics::counter!(api::metrics::CLOCK_CLAMPED_TOTAL).increment(0);
        metrics::gauge!(api::metrics::CLOCK_WALL_AHEAD_SECONDS).set(0.0);
        tokio::spawn(batch_loop(rx, router.clone()));
        Proposer { tx, router }
    }

    /// Commands waiting for a batch.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Decides one command, batched with whatever else is waiting.
    pub async fn propose(&self, command: Command, timeout: Duration) -> Result<Decided, ProposeError> {
        let deadline = Instant::now() + timeout;
        let rx = match self.enqueue(command, deadline) {
            Ok(rx) => rx,
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ProposeError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ProposeError::ShuttingDown),
        };
        wait_reply(rx, deadline).await
    }

    /// Queues commands forwarded by a follower with this node's own, so the
    /// leader proposes one entry for all of them; each gets its own outcome.
    pub async fn propose_forwarded(
        &self,
        commands: Vec<Command>,
        timeout: Duration,
    ) -> Result<Vec<Decided>, ProposeError> {
        let deadline = Instant::now() + timeout;
        let mut receivers = Vec::with_capacity(commands.len());
        for command in commands {
            match self.enqueue(command, deadline) {
                Ok(rx) => receivers.push(rx),
                // Earlier commands of this batch may be queued: their
                // outcome is no longer known to the follower.
                Err(_) if !receivers.is_empty() => {
                    return Err(ProposeError::Unknown("the leader's queue filled mid-batch".into()))
                }
                Err(mpsc::error::TrySendError::Full(_)) => return Err(ProposeError::Overloaded),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(ProposeError::ShuttingDown),
            }
        }
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(wait_reply(rx, deadline).await?);
        }
        Ok(out)
    }

    fn enqueue(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<Decided, ProposeError>>, mpsc::error::TrySendError<Pending>> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Pending {
            command,
            deadline,
            reply,
        })?;
        Ok(rx)
    }

    /// Decides a whole batch of commands as given (used by the batch
    /// endpoint), without waiting in the shared queue.
    pub async fn propose_many(&self, commands: Vec<Command>, timeout: Duration) -> Result<Vec<Decided>, ProposeError> {
        self.router.route(commands, Instant::now() + timeout).await
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }
}

/// The outcome of a queued command, or "unknown" when none came in time.
async fn wait_reply(
    rx: oneshot::Receiver<Result<Decided, ProposeError>>,
    deadline: Instant,
) -> Result<Decided, ProposeError> {
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => result,
        // The batch task ended without answering: the node is stopping and
        // the command may have been proposed.
        Ok(Err(_)) => Err(ProposeError::Unknown("the node stopped while deciding".into())),
        Err(_) => Err(ProposeError::Unknown("no decision before the write timeout".into())),
    }
}

async fn batch_loop(mut rx: mpsc::Receiver<Pending>, router: Arc<Router>) {
    let in_flight = Arc::new(Semaphore::new(router.config.batches_in_flight_max));
    let max = router.config.batch_commands_max;
    while let Some(first) = rx.recv().await {
        // Wait for room first: while earlier batches are being decided,
        // commands keep arriving and join this one. An idle node proposes at
        // once; a busy one proposes bigger batches (one fsync and one
        // replication round each).
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if !router.config.batch_linger.is_zero() && batch.len() < max {
            let until = tokio::time::Instant::now() + router.config.batch_linger;
            while batch.len() < max {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    _ => break,
                }
            }
        }
        let router = router.clone();
        tokio::spawn(async move {
            decide_batch(&router, batch).await;
            drop(permit);
        });
    }
}

async fn decide_batch(router: &Router, batch: Vec<Pending>) {
    let now = Instant::now();
    // A caller whose deadline passed while queued has already been told
    // "unknown"; drop it rather than propose something nobody waits for.
    let (live, expired): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.deadline > now);
    drop(expired);
    if live.is_empty() {
        return;
    }
    let deadline = live.iter().map(|p| p.deadline).max().unwrap_or(now);
    let commands: Vec<Command> = live.iter().map(|p| p.command.clone()).collect();
    metrics::histogram!(api::metrics::BATCH_COMMANDS).record(commands.len() as f64);
    match router.route(commands, deadline).await {
        Ok(decided) => {
            for (p, d) in live.into_iter().zip(decided) {
                let _ = p.reply.send(Ok(d));
            }
        }
        Err(e) => {
            for p in live {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

impl Router {
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn clock_skew_max_ms(&self) -> u64 {
        self.config.clock_skew_max_ms
    }

    fn clock_mono_ms(&self) -> u64 {
        u64::try_from(self.clock_start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The time an entry proposed now would carry: the wall clock, bounded
    /// by the clock policy. Reads the clocks, records nothing.
    pub fn stamp_now(&self) -> Stamp {
        let wall = now_ms();
        #[cfg(feature = "fault-injection")]
        if crate::fault::clock_unbounded() {
            return Stamp {
                time_ms: wall,
                clamped_by_ms: 0,
            };
        }
        let mono = self.clock_mono_ms();
        self.clock.lock().unwrap_or_else(|e| e.into_inner()).stamp(wall, mono)
    }

    /// Stamps an entry about to be proposed here, with metrics.
    fn stamp_entry(&self) -> u64 {
        let stamp = self.stamp_now();
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stamped(stamp.time_ms);
        metrics::gauge!(api::metrics::CLOCK_WALL_AHEAD_SECONDS).set(stamp.clamped_by_ms as f64 / 1000.0);
        let clamped = stamp.clamped_by_ms > 0;
        if clamped {
            metrics::counter!(api::metrics::CLOCK_CLAMPED_TOTAL).increment(1);
        }
        let was = self.clamping.swap(clamped, std::sync::atomic::Ordering::Relaxed);
        if clamped && !was {
            tracing::warn!(
                ahead_ms = stamp.clamped_by_ms,
                skew_max_ms = self.config.clock_skew_max_ms,
                "this leader's wall clock is ahead of real time as it can vouch for it; \
                 log time is bounded (check NTP)"
            );
        } else if was && !clamped {
            tracing::info!("this leader's wall clock is within the allowed skew again");
        }
        stamp.time_ms
    }

    /// A follower saw log time `log_ms` (the ledger's time now).
    pub fn observe_log_time(&self, log_ms: u64) {
        let mono = self.clock_mono_ms();
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(log_ms, mono);
    }

    /// Proposes `commands` as one entry here, if this node is the leader.
    pub async fn propose_here(&self, commands: Vec<Command>) -> Result<Vec<Decided>, LocalError> {
        let count = commands.len();
        let started = Instant::now();
        let entry = ledger::Entry {
            time_ms: self.stamp_entry(),
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

    /// The current leader and its Raft address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.raft.clone()))
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
    /// at the leader. Re-routes while nothing can have been applied.
    pub async fn route(&self, commands: Vec<Command>, deadline: Instant) -> Result<Vec<Decided>, ProposeError> {
        let me = self.config.node_id;
        if let Some(why) = crate::health::failure(&self.raft) {
            // Nothing was sent: a failed node decides nothing.
            return Err(ProposeError::NodeFailed(why));
        }
        for _ in 0..self.config.route_attempts_max {
            let Some((leader, addr)) = self.wait_for_leader(deadline).await else {
                return Err(ProposeError::NoLeader);
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::NoLeader);
            }
            if leader == me {
                match tokio::time::timeout(remaining, self.propose_here(commands.clone())).await {
                    Ok(Ok(decided)) => return Ok(decided),
                    Ok(Err(LocalError::NotLeader)) => {
                        self.pause_before_reroute(deadline).await;
                        continue;
                    }
                    Ok(Err(LocalError::Unknown(e))) => return Err(ProposeError::Unknown(e)),
                    Ok(Err(LocalError::Failed(e))) => {
                        return Err(ProposeError::Unknown(format!("this node failed while deciding: {e}")))
                    }
                    Err(_) => return Err(ProposeError::Unknown("no decision before the write timeout".into())),
                }
            }
            metrics::counter!(api::metrics::FORWARDED_REQUESTS_TOTAL, "kind" => "write").increment(1);
            let client = self.network.client(leader, &addr);
            let request = ProposeRequest {
                commands: commands.clone(),
            };
            match client.call::<_, ProposeAnswer>(PATH_PROPOSE, &request, remaining).await {
                Ok(ProposeAnswer::Decided(decided)) if decided.len() == commands.len() => return Ok(decided),
                Ok(ProposeAnswer::Decided(_)) => {
                    return Err(ProposeError::Unknown(
                        "the leader answered for a different batch".into(),
                    ))
                }
                // Nothing was taken (not the leader, a failed leader, never
                // sent, refused before acting): re-route.
                Ok(ProposeAnswer::NotLeader)
                | Ok(ProposeAnswer::Failed(ProposeError::NodeFailed(_)))
                | Err(PeerError::NotSent(_))
                | Err(PeerError::Refused(_)) => {
                    self.pause_before_reroute(deadline).await;
                    continue;
                }
                Ok(ProposeAnswer::Failed(e)) => return Err(e),
                Err(PeerError::MaybeSent(e)) => return Err(ProposeError::Unknown(e)),
            }
        }
        Err(ProposeError::NoLeader)
    }

    /// A short pause so a re-route sees the new leader rather than spinning.
    async fn pause_before_reroute(&self, deadline: Instant) {
        let pause = Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

/// Why proposing on this node failed.
#[derive(Debug)]
pub enum LocalError {
    /// Not the leader; nothing was (or will be) committed.
    NotLeader,
    Unknown(String),
    /// The Raft core stopped; the outcome is unknown.
    Failed(String),
}
