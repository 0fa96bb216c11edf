//! The state machine half: applies committed entries to the ledger and
//! persists what changed, atomically with the applied log id; builds and
//! installs snapshots.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ledger::{HistoryRecord, HoldStatus, Ledger, Outcome};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::db::{decode, encode, Store, StoreError, CF_APPLIED, CF_HISTORY, CF_RAFT, CF_STATE};
use crate::history;
use crate::snapshot::{SnapshotHeader, SnapshotReader, SnapshotWriter, TAG_HISTORY, TAG_STATE};
use crate::types::{ApplyResult, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const KEY_APPLIED: &[u8] = b"applied";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";

type Entry = openraft::Entry<TypeConfig>;

/// Last applied log id and membership: written in the same batch as the
/// state they describe.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The in-memory state readers see: the ledger and where it stands.
pub struct SmState {
    pub ledger: Ledger,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Told of every normal entry this replica applies, in log order, with one
/// outcome per command: how the node learns what was decided on every
/// replica (its console's recent decisions), not only where a request came
/// in. Called while apply holds the state lock: keep it short, never block.
pub trait ApplyObserver: Send + Sync {
    fn applied(&self, log_index: u64, entry: &ledger::Entry, outcomes: &[Outcome]);
}

/// The state machine store. Clones share everything.
#[derive(Clone)]
pub struct StateMachineStore {
    store: Store,
    state: Arc<RwLock<SmState>>,
    observer: Arc<RwLock<Option<Arc<dyn ApplyObserver>>>>,
    /// The file `begin_receiving_snapshot` handed out last.
    receiving: Arc<Mutex<Option<PathBuf>>>,
}

fn sm_write<E: Into<StoreError>>(e: E) -> StorageError {
    StorageIOError::write_state_machine(&e.into()).into()
}

fn snap_write<E: Into<StoreError>>(e: E) -> StorageError {
    StorageIOError::write_snapshot(None, &e.into()).into()
}

fn snap_read<E: Into<StoreError>>(e: E) -> StorageError {
    StorageIOError::read_snapshot(None, &e.into()).into()
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl StateMachineStore {
    /// Loads the ledger from its records; refuses a state that does not
    /// decode or breaks an invariant.
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let db = store.db();
        let applied: Applied = match db.get_cf(store.cf(CF_APPLIED), KEY_APPLIED)? {
            Some(bytes) => decode("applied state", &bytes)?,
            None => Applied::default(),
        };
        let mut records = Vec::new();
        for item in db.iterator_cf(store.cf(CF_STATE), IteratorMode::Start) {
            records.push(item?);
        }
        let ledger = Ledger::from_records(records)?;
        // Leftovers of snapshots that were being received when we stopped.
        if let Ok(dir) = fs::read_dir(store.snapshot_dir()) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with("incoming-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(StateMachineStore {
            store,
            state: Arc::new(RwLock::new(SmState {
                ledger,
                last_applied: applied.last_applied,
                membership: applied.membership,
            })),
            observer: Arc::new(RwLock::new(None)),
            receiving: Arc::new(Mutex::new(None)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Read access to the in-memory state. Hold it briefly: apply waits.
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        // A poisoned lock means apply panicked mid-way: the state cannot be
        // trusted, so stop.
        self.state.read().expect("state lock poisoned: apply panicked")
    }

    /// Installs the observer told of every entry applied from now on
    /// (replacing any before). Install it before Raft starts applying.
    pub fn set_apply_observer(&self, observer: Arc<dyn ApplyObserver>) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = Some(observer);
        }
    }

    /// The state digest and history head at the applied log id.
    pub fn digest(&self) -> (Option<LogId>, [u8; 32], [u8; 32]) {
        let s = self.read();
        (s.last_applied, s.ledger.digest(), s.ledger.meta().history_head)
    }

    fn current_snapshot_meta(&self) -> Result<Option<SnapshotMeta>, StoreError> {
        match self.store.db().get_cf(self.store.cf(CF_RAFT), KEY_SNAPSHOT_META)? {
            None => Ok(None),
            Some(bytes) => decode("snapshot meta", &bytes).map(Some),
        }
    }

    fn snapshot_path(&self, snapshot_id: &str) -> PathBuf {
        self.store.snapshot_dir().join(format!("{snapshot_id}.snap"))
    }

    /// Writes a snapshot of the state, from a point-in-time view of the
    /// database, to `path` (synced); returns what it describes.
    pub(crate) fn write_snapshot_to(store: &Store, path: &Path) -> Result<SnapshotMeta, StoreError> {
        // Make every state write so far durable before the log can be purged
        // up to this snapshot.
        store.sync_wal()?;
        let db = store.db();
        let view = db.snapshot();
        let applied: Applied = match view.get_cf(store.cf(CF_APPLIED), KEY_APPLIED)? {
            Some(bytes) => decode("applied state", &bytes)?,
            None => Applied::default(),
        };
        let snapshot_id = match &applied.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, unix_nanos()),
            None => format!("0-0-{}", unix_nanos()),
        };
        let header = SnapshotHeader {
            snapshot_id: snapshot_id.clone(),
            last_log_id: applied.last_applied,
            membership: applied.membership.clone(),
        };
        let file = fs::File::create(path)?;
        let mut w = SnapshotWriter::new(file, &header)?;
        for (cf, tag) in [(CF_STATE, TAG_STATE), (CF_HISTORY, TAG_HISTORY)] {
            for item in view.iterator_cf(store.cf(cf), IteratorMode::Start) {
                let (k, v) = item?;
                w.frame(tag, &k, &v)?;
            }
        }
        let file = w.finish()?;
        file.sync_all()?;
        Ok(SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        })
    }

    /// Builds a snapshot file in the snapshot directory.
    fn build_snapshot_file(store: &Store) -> Result<(SnapshotMeta, PathBuf), StoreError> {
        let tmp = store.snapshot_dir().join(format!("building-{}", unix_nanos()));
        let meta = Self::write_snapshot_to(store, &tmp)?;
        let path = store.snapshot_dir().join(format!("{}.snap", meta.snapshot_id));
        fs::rename(&tmp, &path)?;
        sync_dir(&store.snapshot_dir())?;
        Ok((meta, path))
    }

    /// Writes a backup: a snapshot file of this node's state, not kept as
    /// its Raft snapshot.
    pub fn backup_to(&self, path: &Path) -> Result<SnapshotMeta, StoreError> {
        Self::write_snapshot_to(&self.store, path)
    }

    /// Records `meta` as the current snapshot and deletes older files.
    fn set_current_snapshot(store: &Store, meta: &SnapshotMeta, keep: &Path) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(CF_RAFT), KEY_SNAPSHOT_META, encode(meta));
        store.write_synced(batch)?;
        for entry in fs::read_dir(store.snapshot_dir())?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path != keep && name.ends_with(".snap") {
                let _ = fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Replaces the whole state with a verified snapshot file's contents.
    fn install_file(&self, file: &mut fs::File, meta: &SnapshotMeta) -> Result<(), StoreError> {
        file.seek(SeekFrom::Start(0))?;
        let (reader, _) = SnapshotReader::new(&mut *file)?;
        reader.verify()?;
        file.seek(SeekFrom::Start(0))?;
        let (mut reader, header) = SnapshotReader::new(&mut *file)?;
        if header.last_log_id != meta.last_log_id {
            return Err(StoreError::Corrupt(format!(
                "snapshot file is at {:?}, Raft says {:?}",
                header.last_log_id, meta.last_log_id
            )));
        }
        let store = &self.store;
        let mut batch = WriteBatch::default();
        for cf in [CF_STATE, CF_HISTORY] {
            batch.delete_range_cf(store.cf(cf), Vec::<u8>::new(), vec![0xffu8; 256]);
        }
        let mut state_records = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            match frame.tag {
                TAG_STATE => {
                    batch.put_cf(store.cf(CF_STATE), &frame.key, &frame.value);
                    state_records.push((frame.key, frame.value));
                }
                TAG_HISTORY => batch.put_cf(store.cf(CF_HISTORY), &frame.key, &frame.value),
                other => return Err(StoreError::Corrupt(format!("unexpected snapshot frame tag {other}"))),
            }
        }
        let ledger = Ledger::from_records(state_records)?;
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        batch.put_cf(store.cf(CF_APPLIED), KEY_APPLIED, encode(&applied));
        let mut state = self.state.write().expect("state lock poisoned: apply panicked");
        store.write_synced(batch)?;
        *state = SmState {
            ledger,
            last_applied: applied.last_applied,
            membership: applied.membership,
        };
        Ok(())
    }
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let store = self.store.clone();
        let (meta, path) = tokio::task::spawn_blocking(move || {
            let (meta, path) = Self::build_snapshot_file(&store)?;
            Self::set_current_snapshot(&store, &meta, &path)?;
            store.snapshot_built(fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
            Ok::<_, StoreError>((meta, path))
        })
        .await
        .map_err(|e| snap_write(StoreError::Io(std::io::Error::other(e))))?
        .map_err(snap_write)?;
        metrics::counter!(metric_names::RAFT_SNAPSHOTS_TOTAL, "kind" => "build").increment(1);
        let file = tokio::fs::File::open(&path).await.map_err(snap_read)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut results = Vec::new();
        let mut state = self.state.write().expect("state lock poisoned: apply panicked");
        let mut commands_applied = 0u64;
        let observer = self.observer.read().ok().and_then(|o| o.clone());
        for entry in entries {
            let result = match &entry.payload {
                EntryPayload::Blank => ApplyResult::default(),
                EntryPayload::Normal(batch) => {
                    let outcomes = state.ledger.apply(entry.log_id.index, batch);
                    commands_applied += outcomes.len() as u64;
                    if let Some(observer) = &observer {
                        observer.applied(entry.log_id.index, batch, &outcomes);
                    }
                    ApplyResult {
                        outcomes,
                        time_ms: state.ledger.now_ms(),
                    }
                }
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    ApplyResult::default()
                }
            };
            state.last_applied = Some(entry.log_id);
            results.push(result);
        }
        let changes = state.ledger.take_changes();
        let store = &self.store;
        let mut batch = WriteBatch::default();
        for key in &changes.dirty {
            let k = key.encode();
            match state.ledger.encode_record(key) {
                Some(v) => batch.put_cf(store.cf(CF_STATE), k, v),
                None => batch.delete_cf(store.cf(CF_STATE), k),
            }
        }
        let mut expiries = 0u64;
        for record in &changes.history {
            if matches!(record, HistoryRecord::Hold(h) if h.status == HoldStatus::Expired) {
                expiries += 1;
            }
            history::put(&mut batch, store, record);
        }
        let applied = Applied {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
        };
        batch.put_cf(store.cf(CF_APPLIED), KEY_APPLIED, encode(&applied));
        // Durable with the next synced log write; a crash before that loses
        // this batch and its applied log id together, and the entries are
        // applied again from the log.
        store.write_unsynced(batch).map_err(sm_write)?;
        drop(state);
        metrics::counter!(metric_names::HOLD_EXPIRIES_TOTAL).increment(expiries);
        metrics::counter!(metric_names::APPLIED_COMMANDS_TOTAL).increment(commands_applied);
        metrics::histogram!(metric_names::STORAGE_APPLY_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.store.snapshot_dir().join(format!("incoming-{}", unix_nanos()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snap_write)?;
        if let Ok(mut r) = self.receiving.lock() {
            if let Some(old) = r.replace(path) {
                let _ = fs::remove_file(old);
            }
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let incoming = self.receiving.lock().ok().and_then(|mut r| r.take());
        let mut file = snapshot.into_std().await;
        let this = self.clone();
        let meta_owned = meta.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            this.install_file(&mut file, &meta_owned)?;
            drop(file);
            let path = this.snapshot_path(&meta_owned.snapshot_id);
            match &incoming {
                Some(incoming) => fs::rename(incoming, &path)?,
                None => {
                    return Err(StoreError::Corrupt(
                        "installed a snapshot that was not being received".into(),
                    ));
                }
            }
            sync_dir(&this.store.snapshot_dir())?;
            Self::set_current_snapshot(&this.store, &meta_owned, &path)
        })
        .await
        .map_err(|e| snap_write(StoreError::Io(std::io::Error::other(e))))?
        .map_err(snap_write)?;
        metrics::counter!(metric_names::RAFT_SNAPSHOTS_TOTAL, "kind" => "install").increment(1);
        tracing::info!(snapshot = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(meta) = self.current_snapshot_meta().map_err(snap_read)? else {
            return Ok(None);
        };
        let path = self.snapshot_path(&meta.snapshot_id);
        let file = tokio::fs::File::open(&path).await.map_err(snap_read)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// What a backup holds, after its checksum was verified.
#[derive(Clone, Debug)]
pub struct BackupSummary {
    pub snapshot_id: String,
    pub last_log_id: Option<LogId>,
    pub state_records: u64,
    pub history_records: u64,
    /// The ledger's state digest (what `/v1/cluster/digest` reports).
    pub digest: [u8; 32],
}

/// Verifies a backup file and summarizes it.
pub fn inspect_backup(path: &Path) -> Result<BackupSummary, StoreError> {
    let (reader, _) = SnapshotReader::new(fs::File::open(path)?)?;
    reader.verify()?;
    let (mut reader, header) = SnapshotReader::new(fs::File::open(path)?)?;
    let mut state = Vec::new();
    let mut history_records = 0;
    while let Some(frame) = reader.next_frame()? {
        match frame.tag {
            TAG_STATE => state.push((frame.key, frame.value)),
            TAG_HISTORY => history_records += 1,
            other => return Err(StoreError::Corrupt(format!("unexpected snapshot frame tag {other}"))),
        }
    }
    let state_records = state.len() as u64;
    let ledger = Ledger::from_records(state)?;
    Ok(BackupSummary {
        snapshot_id: header.snapshot_id,
        last_log_id: header.last_log_id,
        state_records,
        history_records,
        digest: ledger.digest(),
    })
}

/// Builds a new node's data directory from a backup: the state and history
/// at the backup's log id, a snapshot there with the *new* cluster's
/// membership, the log purged up to it, and a vote in the backup's last
/// term so the new cluster's terms continue above it. Start every node of
/// the new cluster from the same backup with the same members.
pub fn restore_backup(
    backup: &Path,
    data_dir: &Path,
    node_id: crate::types::NodeId,
    members: std::collections::BTreeMap<crate::types::NodeId, crate::types::NodeAddr>,
) -> Result<BackupSummary, StoreError> {
    if data_dir.join("db").exists() {
        return Err(StoreError::Corrupt(format!(
            "{} already holds a database; restore into an empty directory",
            data_dir.display()
        )));
    }
    if !members.contains_key(&node_id) {
        return Err(StoreError::Corrupt(format!(
            "node {node_id} is not among the new members"
        )));
    }
    let summary = inspect_backup(backup)?;
    let last = summary
        .last_log_id
        .ok_or_else(|| StoreError::Corrupt("the backup holds no applied entries".into()))?;
    let store = crate::db::open(data_dir)?;
    let (mut reader, _) = SnapshotReader::new(fs::File::open(backup)?)?;
    let mut batch = WriteBatch::default();
    while let Some(frame) = reader.next_frame()? {
        let cf = if frame.tag == TAG_STATE { CF_STATE } else { CF_HISTORY };
        batch.put_cf(store.cf(cf), &frame.key, &frame.value);
    }
    let voters: std::collections::BTreeSet<crate::types::NodeId> = members.keys().copied().collect();
    let membership = openraft::Membership::new(vec![voters], members);
    let applied = Applied {
        last_applied: Some(last),
        membership: StoredMembership::new(Some(last), membership),
    };
    batch.put_cf(store.cf(CF_APPLIED), KEY_APPLIED, encode(&applied));
    crate::log_store::restored_log_state(&store, &mut batch, last, node_id);
    store.write_synced(batch)?;
    // A snapshot at the restored point, with the new membership, so nodes
    // that join the new cluster later can be caught up.
    let (meta, path) = StateMachineStore::build_snapshot_file(&store)?;
    StateMachineStore::set_current_snapshot(&store, &meta, &path)?;
    let restored = StateMachineStore::load(store)?;
    let digest = restored.digest().1;
    if digest != summary.digest {
        return Err(StoreError::Corrupt(
            "the restored state's digest differs from the backup's".into(),
        ));
    }
    Ok(summary)
}
