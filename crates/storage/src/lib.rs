//! spendcap's durable storage for openraft 0.9 (storage v2): the Raft log and
//! vote, the ledger's state machine, its history (resolved holds, receipts)
//! and snapshots, all in one RocksDB.
//!
//! Durability rules (see docs/ARCHITECTURE.md):
//! - a log append is acknowledged to Raft only after a synced write;
//! - the vote is written synced before `save_vote` returns;
//! - applying writes the changed ledger records, history, last-applied log id
//!   and membership in one atomic WriteBatch, so a crash never re-executes
//!   an applied entry and never loses one without its log id;
//! - snapshots are built from a RocksDB point-in-time view, written to a
//!   checksummed file, and installed atomically.
//!
//! Any storage error is fatal to the node: it stops rather than answer from a
//! state it cannot trust.

mod db;
mod history;
mod log_store;
mod snapshot;
mod state_machine;
mod types;

use std::path::Path;

pub use db::{open, Store, StoreError};
pub use history::{ReceiptFilter, RECEIPTS_PAGE_MAX};
pub use log_store::LogStore;
pub use snapshot::{SnapshotError, SNAPSHOT_MAGIC};
pub use state_machine::{inspect_backup, restore_backup, ApplyObserver, BackupSummary, StateMachineStore};
pub use types::{ApplyResult, LogId, NodeAddr, NodeId, Raft, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// Opens the store in `dir` and returns the two halves openraft wants.
pub fn open_raft_storage(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let store = open(dir)?;
    let sm = StateMachineStore::load(store.clone())?;
    Ok((LogStore::new(store), sm))
}
