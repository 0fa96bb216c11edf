//! openraft's storage conformance suite against the RocksDB store.

use openraft::testing::{StoreBuilder, Suite};
use storage::{open_raft_storage, LogStore, StateMachineStore, StorageError, TypeConfig};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = open_raft_storage(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(RocksBuilder).expect("the store conforms to openraft's storage contract");
}
