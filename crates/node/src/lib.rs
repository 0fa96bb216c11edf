//! A spendcap node: the imperative shell around the pure ledger.
//!
//! - [`proposer`]: the one way into Raft. Every write is queued there and
//!   batched into one entry (a pure policy, `proposer::batch`), proposed by
//!   the leader or forwarded to it (`proposer::forward::LeaderLink`), and
//!   stamped with the leader's clock (`proposer::stamp`, bounded by
//!   [`clock`]); it knows whether a failure means "not applied" or
//!   "unknown".
//! - [`reads`]: linearizable reads on every node (read index + wait).
//! - [`peer`] and [`raft_server`]: Raft RPCs over HTTP with postcard bodies,
//!   addressed to a node id and cluster.
//! - [`http`]: the JSON API (axum); [`app_state`] is what its handlers are
//!   given, [`node_reads`] what they may read of the applied state.
//! - [`decisions`]: the console's recent decisions, fed by the state
//!   machine on every replica.
//! - [`node`]: startup, bootstrap, shutdown, background tasks.

pub mod app_state;
pub mod clock;
pub mod config;
pub mod decisions;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod health;
pub mod http;
pub mod metrics;
pub mod node;
pub mod node_reads;
pub mod peer;
pub mod proposer;
pub mod raft_server;
pub mod reads;
pub mod tokens;

pub use config::{parse_members, Limits, NodeConfig, RaftTuning};
pub use node::{Node, NodeError};
