//! The Raft log and vote.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::db::{decode, encode, index_key, key_index, Store, StoreError, CF_LOG, CF_RAFT};
use crate::types::{LogId, NodeId, StorageError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type Entry = openraft::Entry<TypeConfig>;

fn read_err(e: impl Into<StoreError>) -> StorageError {
    StorageIOError::read_logs(&e.into()).into()
}

fn write_err(e: impl Into<StoreError>) -> StorageError {
    StorageIOError::write_logs(&e.into()).into()
}

/// The Raft metadata of a node restored from a backup at `last`: the log is
/// empty and purged up to `last`, committed there, and the vote is in
/// `last`'s term so new elections go above it.
pub(crate) fn restored_log_state(store: &Store, batch: &mut WriteBatch, last: LogId, node_id: NodeId) {
    let raft = store.cf(CF_RAFT);
    batch.put_cf(raft, KEY_LAST_PURGED, encode(&last));
    batch.put_cf(raft, KEY_COMMITTED, encode(&Some(last)));
    batch.put_cf(raft, KEY_VOTE, encode(&Vote::new(last.leader_id.term, node_id)));
}

/// The log half of the store. Clones share the database.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    pub fn new(store: Store) -> Self {
        LogStore { store }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.store.db().get_cf(self.store.cf(CF_RAFT), key)? {
            None => Ok(None),
            Some(bytes) => decode(std::str::from_utf8(key).unwrap_or("raft meta"), &bytes).map(Some),
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.get_meta(KEY_LAST_PURGED)
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let from = index_key(start);
        let iter = self
            .store
            .db()
            .iterator_cf(self.store.cf(CF_LOG), IteratorMode::From(&from, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            let index = key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode("log entry", &value)?;
            if entry.log_id.index != index {
                return Err(StoreError::Corrupt(format!(
                    "log key {index} holds entry {}",
                    entry.log_id.index
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let mut iter = self.store.db().iterator_cf(self.store.cf(CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item?;
                let entry: Entry = decode("log entry", &value)?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Runs blocking RocksDB work off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged().map_err(read_err)?;
        let last_log_id = self.last_entry_log_id().map_err(read_err)?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let value = encode(vote);
        self.blocking(move |store| {
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_RAFT), KEY_VOTE, value);
            Ok(store.write_synced(batch)?)
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: losing it only means re-applying from last-applied,
        // which the atomic apply batch makes safe.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_RAFT), KEY_COMMITTED, encode(&committed));
        self.store.write_unsynced(batch).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = self.get_meta(KEY_COMMITTED).map_err(read_err)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.store.cf(CF_LOG);
        let mut bytes = 0u64;
        for entry in entries {
            let value = encode(&entry);
            bytes += value.len() as u64;
            batch.put_cf(cf, index_key(entry.log_id.index), value);
        }
        self.store.count_log_bytes(bytes);
        // The entries must be readable when append returns, and durable
        // before the callback: one synced write does both.
        let result = self.blocking(move |store| Ok(store.write_synced(batch)?)).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                callback.log_io_completed(Err(io));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = index_key(log_id.index);
        let to = index_key(u64::MAX);
        self.blocking(move |store| {
            let mut batch = WriteBatch::default();
            let cf = store.cf(CF_LOG);
            batch.delete_range_cf(cf, from, to);
            batch.delete_cf(cf, to);
            Ok(store.write_synced(batch)?)
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let value = encode(&log_id);
        let to = index_key(log_id.index.saturating_add(1));
        self.blocking(move |store| {
            // Record what is purged before deleting it.
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_RAFT), KEY_LAST_PURGED, value);
            batch.delete_range_cf(store.cf(CF_LOG), index_key(0), to);
            Ok(store.write_synced(batch)?)
        })
        .await
        .map_err(write_err)?;
        metrics::counter!(metric_names::RAFT_PURGES_TOTAL).increment(1);
        Ok(())
    }
}
