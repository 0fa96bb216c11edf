//! A spendcap node: the imperative shell around the pure ledger.
//!
//! - [`proposer`]: batches concurrent commands into one Raft entry at the
//!   leader (followers forward), and knows whether a failure means "not
//!   applied" or "unknown".
//! - [`reads`]: linearizable reads on every node (read index + wait).
//! - [`peer`] and [`raft_server`]: Raft RPCs over HTTP with postcard bodies,
//!   addressed to a node id and cluster.
//! - [`http`]: the JSON API (axum); [`decisions`]: the console's recent
//!   decisions, fed by the state machine on every replica.
//! - [`node`]: startup, bootstrap, shutdown, background tasks.

pub mod clock;
pub mod config;
pub mod decisions;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod health;
pub mod http;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod proposer;
pub mod raft_server;
pub mod reads;
pub mod tokens;

pub use config::{parse_members, Limits, NodeConfig, RaftTuning};
pub use node::{Node, NodeError};
