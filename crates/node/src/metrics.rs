//! The Prometheus exporter and the gauges refreshed on each scrape. Metric
//! names are constants in `api::metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use api::metrics::*;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::ServerState;
use storage::Raft;

use crate::http::AppState;

const SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// Labelled gauges not refreshed for this long are dropped (a budget that
/// left the top list).
const GAUGE_IDLE: Duration = Duration::from_secs(300);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_COMMANDS.to_string()), BATCH_BUCKETS))
                .map(|b| b.idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(GAUGE_IDLE)));
            match builder.and_then(|b| b.install_recorder().map_err(Into::into)) {
                Ok(handle) => handle,
                // Another recorder is already installed (an embedding
                // program's): render from a private one instead.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Sets the gauges that describe current state; called on each scrape.
/// `committed` is the committed log index (read from Raft by the caller).
pub fn refresh(s: &AppState, committed: Option<u64>) {
    let process = PROCESS.get_or_init(|| {
        let c = metrics_process::Collector::default();
        c.describe();
        c
    });
    process.collect();
    metrics::gauge!(RAFT_COMMITTED_INDEX).set(committed.unwrap_or(0) as f64);
    let m = s.raft.metrics().borrow().clone();
    metrics::gauge!(RAFT_TERM).set(m.current_term as f64);
    metrics::gauge!(RAFT_LEADER_ID).set(m.current_leader.map(|l| l as f64).unwrap_or(-1.0));
    metrics::gauge!(RAFT_IS_LEADER).set(if m.state == ServerState::Leader { 1.0 } else { 0.0 });
    metrics::gauge!(RAFT_LAST_LOG_INDEX).set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!(RAFT_APPLIED_INDEX).set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
    if let Some(replication) = &m.replication {
        let last = m.last_log_index.unwrap_or(0);
        for (follower, matched) in replication {
            let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
            metrics::gauge!(RAFT_REPLICATION_LAG_ENTRIES, "follower" => follower.to_string()).set(lag as f64);
        }
    }
    metrics::gauge!(STORAGE_ROCKSDB_SIZE_BYTES).set(s.sm.store().size_bytes() as f64);

    let state = s.sm.read();
    let ledger = &state.ledger;
    let (budgets, sessions, holds, keys) = ledger.counts();
    metrics::gauge!(LEDGER_BUDGETS).set(budgets as f64);
    metrics::gauge!(LEDGER_SESSIONS).set(sessions as f64);
    metrics::gauge!(LEDGER_LIVE_HOLDS).set(holds as f64);
    metrics::gauge!(LEDGER_IDEMPOTENCY_KEYS).set(keys as f64);

    // Top budgets and sessions by what they have committed, bounded.
    let mut top_budgets: Vec<_> = ledger.budgets(None, usize::MAX);
    top_budgets.sort_by_key(|b| std::cmp::Reverse(b.limit.usage.committed()));
    for b in top_budgets.into_iter().take(s.limits.metrics_budgets_max) {
        let labels = [("budget", b.id.to_string()), ("asset", b.asset.code.to_string())];
        metrics::gauge!(BUDGET_CAP_UNITS, &labels).set(b.limit.cap.units() as f64);
        metrics::gauge!(BUDGET_SPENT_UNITS, &labels).set(b.limit.usage.spent.units() as f64);
        metrics::gauge!(BUDGET_HELD_UNITS, &labels).set(b.limit.usage.held.units() as f64);
    }
    let mut top_sessions: Vec<_> = ledger.sessions(None, usize::MAX);
    top_sessions.sort_by_key(|x| std::cmp::Reverse(x.limit.usage.committed()));
    for x in top_sessions.into_iter().take(s.limits.metrics_sessions_max) {
        let labels = [("session", x.id.to_string()), ("asset", x.asset.code.to_string())];
        metrics::gauge!(SESSION_CAP_UNITS, &labels).set(x.limit.cap.units() as f64);
        metrics::gauge!(SESSION_SPENT_UNITS, &labels).set(x.limit.usage.spent.units() as f64);
        metrics::gauge!(SESSION_HELD_UNITS, &labels).set(x.limit.usage.held.units() as f64);
    }
}

/// Counts elections (term changes) and leader changes as they happen.
pub fn watch_raft(raft: Raft) {
    tokio::spawn(async move {
        let mut rx = raft.metrics();
        let (mut term, mut leader) = {
            let m = rx.borrow();
            (m.current_term, m.current_leader)
        };
        while rx.changed().await.is_ok() {
            let m = rx.borrow().clone();
            if m.current_term > term {
                metrics::counter!(RAFT_ELECTIONS_TOTAL).increment(m.current_term - term);
                term = m.current_term;
            }
            if m.current_leader != leader {
                if m.current_leader.is_some() {
                    metrics::counter!(RAFT_LEADER_CHANGES_TOTAL).increment(1);
                }
                tracing::info!(term = m.current_term, leader = ?m.current_leader, "leader changed");
                leader = m.current_leader;
            }
        }
    });
}
