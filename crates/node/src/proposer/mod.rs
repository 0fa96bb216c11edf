//! Getting commands decided: every write goes through one queue and one
//! batcher.
//!
//! openraft 0.9 writes one entry per `client_write` and syncs it before the
//! next, so throughput comes from putting many commands in one entry. Every
//! write on a node — a handler's command, the batch endpoint's group, a
//! follower's forwarded batch, the leader's expiry tick — is a *group* of
//! commands queued on [`Proposer`]. The batch loop packs whole groups into
//! batches ([`batch`], a pure policy) and hands each batch to the
//! [`LeaderLink`] ([`forward`]), which proposes it as one entry here if this
//! node leads, or forwards it to the leader, where it joins the leader's
//! queue as one group. Each caller gets its own outcomes, in order, with
//! the entry's log index and their positions in it. The leader stamps each
//! entry with its clock ([`stamp`]).

pub mod batch;
pub mod forward;
pub mod outcome;
pub mod stamp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::Command;
use storage::{NodeId, Raft};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use self::batch::{BatchPolicy, Batcher, Step};
pub use self::forward::{LeaderLink, ProposeAnswer, ProposeRequest};
pub use self::outcome::{Decided, ProposeError};
pub use self::stamp::{now_ms, Stamper};
use crate::peer::Network;

#[derive(Clone)]
pub struct ProposerConfig {
    pub node_id: NodeId,
    /// Commands waiting for a batch (a group larger than this is refused).
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

type Reply = oneshot::Sender<Result<Vec<Decided>, ProposeError>>;

/// One caller's commands, decided together in one entry, in order.
struct Group {
    commands: Vec<Command>,
    deadline: Instant,
    reply: Reply,
}

/// A queued group and its share of the queue (released when the batch loop
/// takes the group).
type Queued = (Group, OwnedSemaphorePermit);

/// The handle every writer uses.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Queued>,
    /// One permit per command the queue may hold.
    room: Arc<Semaphore>,
    queue_max: usize,
    link: Arc<LeaderLink>,
}

impl Proposer {
    pub fn start(raft: Raft, network: Network, config: ProposerConfig) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        let stamper = Arc::new(Stamper::start(config.clock_skew_max_ms, config.log_time_at_start_ms));
        let link = Arc::new(LeaderLink::new(
            raft,
            network,
            config.node_id,
            config.route_attempts_max,
            stamper,
        ));
        let policy = BatchPolicy {
            commands_max: config.batch_commands_max,
            linger: config.batch_linger,
            in_flight_max: config.batches_in_flight_max,
        };
        tokio::spawn(batch_loop(rx, link.clone(), policy));
        Proposer {
            tx,
            room: Arc::new(Semaphore::new(config.queue_max)),
            queue_max: config.queue_max,
            link,
        }
    }

    /// Commands waiting for a batch.
    pub fn queued(&self) -> usize {
        self.queue_max.saturating_sub(self.room.available_permits())
    }

    /// Decides one command, batched with whatever else is waiting.
    pub async fn propose(&self, command: Command, timeout: Duration) -> Result<Decided, ProposeError> {
        let mut decided = self.submit(vec![command], timeout).await?;
        match decided.pop() {
            Some(d) if decided.is_empty() => Ok(d),
            _ => Err(ProposeError::Unknown(
                "the batch answered for a different command count".into(),
            )),
        }
    }

    /// Decides `commands` together, in one entry and in order (the batch
    /// endpoint): one outcome per command, in order. If the group cannot be
    /// queued whole, nothing was queued (`Overloaded`, nothing applied).
    pub async fn propose_many(&self, commands: Vec<Command>, timeout: Duration) -> Result<Vec<Decided>, ProposeError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(commands, timeout).await
    }

    /// A follower's batch, forwarded to this leader: it joins this node's
    /// queue as one group, so the leader proposes one entry for its own
    /// commands and every follower's.
    pub async fn propose_forwarded(
        &self,
        commands: Vec<Command>,
        timeout: Duration,
    ) -> Result<Vec<Decided>, ProposeError> {
        self.propose_many(commands, timeout).await
    }

    /// Gets an entry stamped now onto the log, if this node leads: applying
    /// it advances log time and expires what is due. It rides along with
    /// whatever else is being batched; alone, it is an empty entry, proposed
    /// only by the leader (never forwarded).
    pub async fn propose_tick(&self, timeout: Duration) -> Result<(), ProposeError> {
        self.submit(Vec::new(), timeout).await.map(|_| ())
    }

    /// Queues `commands` as one group (whole, or not at all) and waits for
    /// their outcomes.
    async fn submit(&self, commands: Vec<Command>, timeout: Duration) -> Result<Vec<Decided>, ProposeError> {
        let count = commands.len();
        let deadline = Instant::now() + timeout;
        let permit = u32::try_from(count)
            .ok()
            .and_then(|n| self.room.clone().try_acquire_many_owned(n).ok())
            .ok_or(ProposeError::Overloaded)?;
        let (reply, rx) = oneshot::channel();
        let group = Group {
            commands,
            deadline,
            reply,
        };
        if self.tx.send((group, permit)).is_err() {
            return Err(ProposeError::ShuttingDown);
        }
        let decided = wait_reply(rx, deadline).await?;
        if decided.len() != count {
            return Err(ProposeError::Unknown(format!(
                "{count} commands were proposed but {} outcomes came back",
                decided.len()
            )));
        }
        Ok(decided)
    }

    /// The leader lookup and forwarding (reads use it to find the leader).
    pub fn leader_link(&self) -> &Arc<LeaderLink> {
        &self.link
    }
}

/// The outcome of a queued group, or "unknown" when none came in time.
async fn wait_reply(
    rx: oneshot::Receiver<Result<Vec<Decided>, ProposeError>>,
    deadline: Instant,
) -> Result<Vec<Decided>, ProposeError> {
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => result,
        // The batch task ended without answering: the node is stopping and
        // the command may have been proposed.
        Ok(Err(_)) => Err(ProposeError::Unknown("the node stopped while deciding".into())),
        Err(_) => Err(ProposeError::Unknown("no decision before the write timeout".into())),
    }
}

/// Does what the [`Batcher`] says: receives groups, waits for a slot, and
/// proposes batches, each in its own task.
async fn batch_loop(mut rx: mpsc::UnboundedReceiver<Queued>, link: Arc<LeaderLink>, policy: BatchPolicy) {
    let mut batcher: Batcher<Group> = Batcher::new(policy);
    let mut deciding = JoinSet::new();
    loop {
        while deciding.try_join_next().is_some() {
            batcher.finished();
        }
        match batcher.step(Instant::now()) {
            Step::Propose(groups) => {
                let link = link.clone();
                deciding.spawn(async move { decide_batch(&link, groups).await });
            }
            Step::AwaitDecided => {
                // `None` (nothing in flight after all) frees the slot too,
                // rather than waiting forever.
                let _ = deciding.join_next().await;
                batcher.finished();
            }
            Step::Receive => match rx.recv().await {
                Some((group, permit)) => {
                    drop(permit);
                    let n = group.commands.len();
                    batcher.offer(group, n, Instant::now());
                }
                // Every handle is gone: nothing more will come.
                None => break,
            },
            Step::Take { until } => {
                // `Err(closed)`: nothing queued (before `until`, or ever
                // again if the queue is closed).
                let next = match rx.try_recv() {
                    Ok(queued) => Ok(queued),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(until.into(), rx.recv()).await {
                            Ok(Some(queued)) => Ok(queued),
                            Ok(None) => Err(true),
                            Err(_) => Err(false),
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => Err(true),
                };
                let now = Instant::now();
                match next {
                    Ok((group, permit)) => {
                        drop(permit);
                        let n = group.commands.len();
                        batcher.offer(group, n, now);
                    }
                    // Closed: propose what is open without lingering.
                    Err(true) => batcher.ran_dry(now.max(until)),
                    Err(false) => batcher.ran_dry(now),
                }
            }
        }
    }
    // Let batches being decided answer their callers.
    while deciding.join_next().await.is_some() {}
}

/// Proposes one batch and hands each group its outcomes.
async fn decide_batch(link: &LeaderLink, groups: Vec<Group>) {
    let now = Instant::now();
    // A caller whose deadline passed while queued has already been told
    // "unknown"; drop it rather than propose something nobody waits for.
    let live: Vec<Group> = groups.into_iter().filter(|g| g.deadline > now).collect();
    if live.is_empty() {
        return;
    }
    let deadline = live.iter().map(|g| g.deadline).max().unwrap_or(now);
    let mut commands = Vec::with_capacity(live.iter().map(|g| g.commands.len()).sum());
    let mut answers = Vec::with_capacity(live.len());
    for group in live {
        answers.push((group.commands.len(), group.reply));
        commands.extend(group.commands);
    }
    if !commands.is_empty() {
        metrics::histogram!(api::metrics::BATCH_COMMANDS).record(commands.len() as f64);
    }
    match link.decide(commands, deadline).await {
        Ok(decided) => {
            let mut decided = decided.into_iter();
            for (count, reply) in answers {
                let _ = reply.send(Ok(decided.by_ref().take(count).collect()));
            }
        }
        Err(e) => {
            for (_, reply) in answers {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
