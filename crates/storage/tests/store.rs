//! The store beyond openraft's suite: state survives a reopen, snapshots
//! move the whole state (history included) to an empty store, corrupt data
//! stops the node, and receipts can be queried.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ledger::*;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
use storage::{open_raft_storage, ApplyObserver, LogId, ReceiptFilter, TypeConfig};
use tempfile::TempDir;

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn entry(index: u64, time_ms: u64, commands: Vec<Command>) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Entry { time_ms, commands }),
    }
}

fn usd(d: u64) -> Amount {
    Amount(u128::from(d) * 1_000_000)
}

fn session(id: &str, token: u8) -> Command {
    Command::CreateSession(CreateSession {
        id: SessionId::new(id).unwrap(),
        token_hash: [token; 32],
        asset: Asset::usdc(),
        cap: usd(25),
        ttl_ms: 86_400_000,
        agent_id: format!("agent-{id}"),
        wallet_address: Some("0xwallet".into()),
        tool_caps: BTreeMap::new(),
        budget: None,
        tools: None,
        live_holds_max: None,
    })
}

fn authorize(id: &str, dollars: u64, tool: &str) -> Command {
    Command::Authorize(Authorize {
        session_id: SessionId::new(id).unwrap(),
        amount: AmountInput::Atomic(usd(dollars)),
        tool: Tool::new(tool).unwrap(),
        idempotency_key: Some(IdempotencyKey::new(format!("{id}-{dollars}-{tool}")).unwrap()),
        hold_ttl_ms: Some(60_000),
        context: DecisionContext::default(),
        credential: None,
    })
}

fn capture(hold: u64) -> Command {
    Command::Capture(Capture {
        hold_id: HoldId(hold),
        caller: Caller::Admin,
        amount: None,
        receipt: ReceiptInput {
            transaction_hash: Some(format!("0xtx{hold}")),
            ..ReceiptInput::default()
        },
        idempotency_key: None,
        credential: None,
    })
}

/// A short history: two sessions, holds, captures, an expiry.
fn history() -> Vec<openraft::Entry<TypeConfig>> {
    vec![
        entry(1, 1_000, vec![session("a", 1), session("b", 2)]),
        entry(
            2,
            1_001,
            vec![
                authorize("a", 10, "search"),
                authorize("b", 5, "gpu"),
                authorize("a", 20, "x"),
            ],
        ),
        entry(3, 1_002, vec![capture(0), capture(1)]),
        entry(4, 1_003, vec![authorize("a", 10, "gpu")]),
        // Far enough in log time for hold 2 to expire.
        entry(5, 100_000, vec![]),
    ]
}

/// Records what it is told: (log index, entry time, outcomes).
#[derive(Default)]
struct Seen(Mutex<Vec<(u64, u64, Vec<Outcome>)>>);

impl ApplyObserver for Seen {
    fn applied(&self, log_index: u64, entry: &Entry, outcomes: &[Outcome]) {
        self.0
            .lock()
            .unwrap()
            .push((log_index, entry.time_ms, outcomes.to_vec()));
    }
}

#[tokio::test]
async fn the_observer_sees_every_applied_entry_with_its_outcomes() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm) = open_raft_storage(dir.path()).unwrap();
    let seen = Arc::new(Seen::default());
    sm.set_apply_observer(seen.clone());
    let results = sm.apply(history()).await.unwrap();
    let seen = seen.0.lock().unwrap();
    let indexes: Vec<u64> = seen.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
    assert_eq!(seen[1].1, 1_001);
    for ((_, _, outcomes), result) in seen.iter().zip(&results) {
        assert_eq!(outcomes, &result.outcomes);
    }
    assert!(matches!(seen[1].2[0], Outcome::Approved { .. }));
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let digest = {
        let (mut log, mut sm) = open_raft_storage(dir.path()).unwrap();
        log.save_committed(Some(log_id(5))).await.unwrap();
        let results = sm.apply(history()).await.unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(results[1].outcomes.len(), 3);
        assert!(matches!(
            results[1].outcomes[2],
            Outcome::Denied(DenyReason::SessionCap { .. })
        ));
        sm.digest()
    };
    let (mut log, mut sm) = open_raft_storage(dir.path()).unwrap();
    assert_eq!(sm.digest(), digest);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(5)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(5)));
    let state = sm.read();
    assert_eq!(state.ledger.live_holds().count(), 0, "hold 2 expired by log time");
    let a = state.ledger.session(&SessionId::new("a").unwrap()).unwrap();
    assert_eq!(a.limit.usage.spent, usd(10));
}

#[tokio::test]
async fn snapshot_installs_on_an_empty_store() {
    let src = TempDir::new().unwrap();
    let dst = TempDir::new().unwrap();
    let (_, mut sm) = open_raft_storage(src.path()).unwrap();
    sm.apply(history()).await.unwrap();
    let mut builder = sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(5)));

    let (_, mut empty) = open_raft_storage(dst.path()).unwrap();
    let mut incoming = empty.begin_receiving_snapshot().await.unwrap();
    let mut from = snapshot.snapshot;
    tokio::io::copy(&mut from, &mut *incoming).await.unwrap();
    empty.install_snapshot(&snapshot.meta, incoming).await.unwrap();
    assert_eq!(empty.digest(), sm.digest());
    // History came along: receipts and resolved holds.
    let receipts = empty
        .store()
        .receipts(&ReceiptFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].transaction_hash.as_deref(), Some("0xtx0"));
    let expired = empty.store().resolved_hold(HoldId(2)).unwrap().unwrap();
    assert_eq!(expired.status, HoldStatus::Expired);
    // And it is the current snapshot after a reopen.
    drop(empty);
    let (_, mut reopened) = open_raft_storage(dst.path()).unwrap();
    let current = reopened.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, snapshot.meta.snapshot_id);
    assert_eq!(reopened.digest(), sm.digest());
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused() {
    let src = TempDir::new().unwrap();
    let dst = TempDir::new().unwrap();
    let (_, mut sm) = open_raft_storage(src.path()).unwrap();
    sm.apply(history()).await.unwrap();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut bytes = Vec::new();
    let mut from = snapshot.snapshot;
    tokio::io::AsyncReadExt::read_to_end(&mut from, &mut bytes)
        .await
        .unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;

    let (_, mut empty) = open_raft_storage(dst.path()).unwrap();
    let before = empty.digest();
    let mut incoming = empty.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *incoming, &bytes)
        .await
        .unwrap();
    assert!(empty.install_snapshot(&snapshot.meta, incoming).await.is_err());
    assert_eq!(empty.digest(), before, "nothing of a damaged snapshot is applied");
}

#[tokio::test]
async fn receipts_filter_by_session_tool_and_time() {
    let dir = TempDir::new().unwrap();
    let (_, mut sm) = open_raft_storage(dir.path()).unwrap();
    sm.apply(history()).await.unwrap();
    let store = sm.store();
    let q = |f: ReceiptFilter| store.receipts(&ReceiptFilter { limit: 100, ..f }).unwrap();
    assert_eq!(
        q(ReceiptFilter {
            session_id: Some("a".into()),
            ..Default::default()
        })
        .len(),
        1
    );
    assert_eq!(
        q(ReceiptFilter {
            tool: Some("gpu".into()),
            ..Default::default()
        })[0]
            .session_id
            .as_str(),
        "b"
    );
    assert_eq!(
        q(ReceiptFilter {
            agent_id: Some("agent-b".into()),
            ..Default::default()
        })
        .len(),
        1
    );
    assert_eq!(
        q(ReceiptFilter {
            from_ms: Some(1_003),
            ..Default::default()
        })
        .len(),
        0
    );
    assert_eq!(
        q(ReceiptFilter {
            to_ms: Some(1_002),
            ..Default::default()
        })
        .len(),
        0
    );
    assert_eq!(
        q(ReceiptFilter {
            from_ms: Some(1_002),
            to_ms: Some(1_003),
            ..Default::default()
        })
        .len(),
        2
    );
    let first = q(ReceiptFilter {
        limit: 1,
        ..Default::default()
    });
    let next = store
        .receipts(&ReceiptFilter {
            after: Some(first[0].id),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].id, first[0].id);
    // The audit chain: each receipt names the history head before it.
    assert_ne!(first[0].previous_history_hash, next[0].previous_history_hash);
}

#[tokio::test]
async fn corrupt_state_stops_the_node() {
    let dir = TempDir::new().unwrap();
    {
        let (_, mut sm) = open_raft_storage(dir.path()).unwrap();
        sm.apply(history()).await.unwrap();
    }
    // Damage one state record behind the store's back.
    {
        let db = rocksdb_raw(dir.path());
        let cf = db.cf_handle("state").unwrap();
        let key = {
            let mut it = db.iterator_cf(cf, rocksdb::IteratorMode::Start);
            it.find(|kv| kv.as_ref().unwrap().0[0] == b'S').unwrap().unwrap().0
        };
        db.put_cf(cf, key, [1u8, 0xff, 0xff]).unwrap();
    }
    assert!(
        open_raft_storage(dir.path()).is_err(),
        "a corrupt replica must refuse to start"
    );
}

fn rocksdb_raw(dir: &std::path::Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, dir.join("db")).unwrap();
    rocksdb::DB::open_cf(&opts, dir.join("db"), cfs).unwrap()
}
