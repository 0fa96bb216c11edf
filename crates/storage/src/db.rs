//! The RocksDB instance and its column families.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

/// Raft log entries: key = index (u64 big-endian), value = versioned postcard.
pub(crate) const CF_LOG: &str = "log";
/// Raft metadata: vote, committed log id, last purged log id, snapshot meta.
pub(crate) const CF_RAFT: &str = "raft";
/// The ledger's live state records (see `ledger::records`).
pub(crate) const CF_STATE: &str = "state";
/// Last applied log id and membership, written with the state.
pub(crate) const CF_APPLIED: &str = "applied";
/// Resolved holds, receipts and their indexes.
pub(crate) const CF_HISTORY: &str = "history";

pub(crate) const COLUMN_FAMILIES: [&str; 5] = [CF_LOG, CF_RAFT, CF_STATE, CF_APPLIED, CF_HISTORY];

/// All memtables together, at most (RocksDB flushes the largest beyond it).
const DB_WRITE_BUFFER_BYTES_MAX: usize = 64 << 20;

/// Version byte in front of every value this crate writes (the ledger's own
/// records carry their own). 2: commands carry tool allowlists, blocked
/// tools, live-hold limits and the caller's credential; a data directory
/// written by version 1 is refused with an error rather than misread.
pub(crate) const VALUE_FORMAT_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("ledger records: {0}")]
    Records(#[from] ledger::RecordError),
}

struct Inner {
    db: DB,
    dir: PathBuf,
    /// Bytes of log entries appended since this process started.
    log_bytes_appended: AtomicU64,
    /// `log_bytes_appended` when the last snapshot was built, and its size.
    log_bytes_at_snapshot: AtomicU64,
    snapshot_bytes: AtomicU64,
}

/// A handle on the node's RocksDB; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Opens (or creates) the database in `dir/db`, with snapshots in
/// `dir/snapshots`.
pub fn open(dir: &Path) -> Result<Store, StoreError> {
    std::fs::create_dir_all(dir.join("snapshots"))?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // One WAL for all column families: a synced log append also makes every
    // earlier (unsynced) state write durable, in order.
    options.set_max_total_wal_size(256 << 20);
    options.set_keep_log_file_num(4);
    options.set_max_background_jobs(2);
    // The state column family takes most writes (every hold and idempotency
    // record an entry touches) and is only ever read whole (at start and for
    // snapshots), never by key: an unsorted vector memtable makes its
    // inserts O(1) instead of a skip-list search. Vector memtables need
    // writes to one memtable at a time.
    options.set_allow_concurrent_memtable_write(false);
    // Memtables are bounded in total: the state lives in the ledger's own
    // memory already, RocksDB only needs to buffer what it writes.
    options.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES_MAX);
    let cfs = COLUMN_FAMILIES.iter().map(|name| {
        let mut cf = Options::default();
        cf.set_write_buffer_size(if *name == CF_LOG { 16 << 20 } else { 8 << 20 });
        if *name == CF_STATE {
            cf.set_memtable_factory(rocksdb::MemtableFactory::Vector);
        }
        ColumnFamilyDescriptor::new(*name, cf)
    });
    let db = DB::open_cf_descriptors(&options, dir.join("db"), cfs)?;
    Ok(Store {
        inner: Arc::new(Inner {
            db,
            dir: dir.to_path_buf(),
            log_bytes_appended: AtomicU64::new(0),
            log_bytes_at_snapshot: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
        }),
    })
}

impl Store {
    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.inner.dir.join("snapshots")
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The column families are created at open; a missing one is a bug.
        self.inner.db.cf_handle(name).expect("column family created at open")
    }

    /// Writes a batch and waits until it is on disk.
    pub(crate) fn write_synced(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        let started = Instant::now();
        let result = self.inner.db.write_opt(batch, &options);
        metrics::histogram!(metric_names::STORAGE_FSYNC_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    /// Writes a batch without waiting for the disk; the next synced write
    /// (they share one WAL) makes it durable.
    pub(crate) fn write_unsynced(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.inner.db.write_opt(batch, &options)
    }

    /// Forces everything written so far onto disk.
    pub(crate) fn sync_wal(&self) -> Result<(), rocksdb::Error> {
        let started = Instant::now();
        let result = self.inner.db.flush_wal(true);
        metrics::histogram!(metric_names::STORAGE_FSYNC_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    pub(crate) fn count_log_bytes(&self, bytes: u64) {
        self.inner.log_bytes_appended.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn snapshot_built(&self, bytes: u64) {
        let appended = self.inner.log_bytes_appended.load(Ordering::Relaxed);
        self.inner.log_bytes_at_snapshot.store(appended, Ordering::Relaxed);
        self.inner.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Log bytes appended since the last snapshot this process built, and
    /// that snapshot's size (0 when none yet): a snapshot is worth building
    /// once the log since the last one is about as big as the state.
    pub fn log_growth_since_snapshot(&self) -> (u64, u64) {
        let appended = self.inner.log_bytes_appended.load(Ordering::Relaxed);
        let at = self.inner.log_bytes_at_snapshot.load(Ordering::Relaxed);
        (
            appended.saturating_sub(at),
            self.inner.snapshot_bytes.load(Ordering::Relaxed),
        )
    }

    /// Approximate bytes on disk (SST files and memtables).
    pub fn size_bytes(&self) -> u64 {
        let db = self.db();
        COLUMN_FAMILIES
            .iter()
            .filter_map(|name| {
                let cf = db.cf_handle(name)?;
                let sst = db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()?;
                let mem = db
                    .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                Some(sst + mem)
            })
            .sum()
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_FORMAT_VERSION];
    // postcard encodes plain data into a Vec without failing.
    out.extend(postcard::to_allocvec(value).expect("postcard encodes plain data"));
    out
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!("{what}: unknown format version {v}"))),
        None => Err(StoreError::Corrupt(format!("{what}: empty value"))),
    }
}

pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}
