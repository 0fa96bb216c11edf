//! The Prometheus exporter and the gauges refreshed on each scrape. Metric
//! names are constants in `api::metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use api::metrics::*;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use openraft::ServerState;
use storage::Raft;

use crate::app_state::AppState;

const SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// Labelled gauges not refreshed for this long are dropped (a budget that
/// left the top list).
const GAUGE_IDLE: Duration = Duration::from_secs(30);

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

/// Creates every fixed counter series at zero, so the first event shows
/// up in `rate()` and `increase()`.
pub fn register_zeros() {
    metrics::counter!(DECISIONS_TOTAL, "outcome" => "approved", "reason" => "none").increment(0);
    for reason in [
        "session_cap",
        "tool_cap",
        "budget_cap",
        "session_expired",
        "session_revoked",
        "unknown_session",
    ] {
        metrics::counter!(DECISIONS_TOTAL, "outcome" => "denied", "reason" => reason).increment(0);
    }
    for name in [
        CAPTURES_TOTAL,
        VOIDS_TOTAL,
        OUTCOMES_UNKNOWN_TOTAL,
        HOLD_EXPIRIES_TOTAL,
        APPLIED_COMMANDS_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
    for kind in ["read", "write"] {
        metrics::counter!(FORWARDED_REQUESTS_TOTAL, "kind" => kind).increment(0);
    }
    for kind in ["build", "install"] {
        metrics::counter!(RAFT_SNAPSHOTS_TOTAL, "kind" => kind).increment(0);
    }
    for name in [RAFT_PURGES_TOTAL, RAFT_ELECTIONS_TOTAL, RAFT_LEADER_CHANGES_TOTAL] {
        metrics::counter!(name).increment(0);
    }
    for rpc in ["append", "vote", "snapshot", "propose", "read-index"] {
        metrics::counter!(RAFT_RPC_ERRORS_TOTAL, "rpc" => rpc).increment(0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!(NODE_FAILED).set(0.0);
}

/// How full a cap is, in parts per million (a zero cap with anything
/// committed counts as full).
fn fullness(committed: ledger::Amount, cap: ledger::Amount) -> u128 {
    if cap.is_zero() {
        return if committed.is_zero() { 0 } else { 1_000_000 };
    }
    committed.units().saturating_mul(1_000_000) / cap.units()
}

/// The `n` largest items by `key`, in descending order, without sorting
/// everything.
fn top_by<T, K: Ord + Copy>(mut items: Vec<T>, n: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    if items.len() > n && n > 0 {
        items.select_nth_unstable_by(n - 1, |a, b| key(b).cmp(&key(a)));
        items.truncate(n);
    } else if n == 0 {
        items.clear();
    }
    items.sort_by(|a, b| key(b).cmp(&key(a)));
    items
}

/// One labelled cap gauge set, copied out of the state.
struct CapRow {
    id: String,
    asset: String,
    fullness: u128,
    committed: ledger::Amount,
    cap: ledger::Amount,
    spent: ledger::Amount,
    held: ledger::Amount,
}

impl CapRow {
    fn new(id: String, asset: &ledger::Asset, limit: &ledger::CapUsage) -> CapRow {
        let committed = limit.usage.committed();
        CapRow {
            id,
            asset: asset.code.to_string(),
            fullness: fullness(committed, limit.cap),
            committed,
            cap: limit.cap,
            spent: limit.usage.spent,
            held: limit.usage.held,
        }
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one gauge family in the Prometheus text format.
fn family(out: &mut String, name: &str, help: &str, key: &str, rows: &[CapRow], value: impl Fn(&CapRow) -> u128) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for r in rows {
        let _ = writeln!(
            out,
            "{name}{{{key}=\"{}\",asset=\"{}\"}} {}",
            label(&r.id),
            label(&r.asset),
            value(r)
        );
    }
}

/// Sets the gauges that describe current state; called on each scrape.
/// `committed` is the committed log index (read from Raft by the caller).
/// Returns the per-budget and per-session series as Prometheus text: they
/// are computed for this scrape only, so a budget that left the top list
/// is gone at once.
pub fn refresh(s: &AppState, committed: Option<u64>) -> String {
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
    metrics::gauge!(PROPOSALS_QUEUED).set(s.proposer.queued() as f64);
    let failed = crate::health::failure(&s.raft).is_some();
    metrics::gauge!(NODE_FAILED).set(if failed { 1.0 } else { 0.0 });
    // Only the leader knows the lag; a former leader's series go stale and
    // are dropped after the idle timeout.
    if let (Some(replication), ServerState::Leader) = (&m.replication, m.state) {
        let last = m.last_log_index.unwrap_or(0);
        for (follower, matched) in replication.iter().filter(|(id, _)| **id != m.id) {
            let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
            metrics::gauge!(RAFT_REPLICATION_LAG_ENTRIES, "follower" => follower.to_string()).set(lag as f64);
        }
    }
    metrics::gauge!(STORAGE_ROCKSDB_SIZE_BYTES).set(s.sm.store().size_bytes() as f64);

    // Copy the few numbers needed out of the state, then set gauges
    // without holding the lock.
    let (counts, budgets, sessions) = {
        let state = s.sm.read();
        let ledger = &state.ledger;
        let budgets: Vec<CapRow> = ledger
            .budgets(None, usize::MAX)
            .into_iter()
            .map(|b| CapRow::new(b.id.to_string(), &b.asset, &b.limit))
            .collect();
        // Sessions can be many: rank references, copy only the top.
        let ranked = top_by(ledger.sessions(None, usize::MAX), s.limits.metrics_sessions_max, |x| {
            (
                fullness(x.limit.usage.committed(), x.limit.cap),
                x.limit.usage.committed(),
            )
        });
        let sessions: Vec<CapRow> = ranked
            .into_iter()
            .map(|x| CapRow::new(x.id.to_string(), &x.asset, &x.limit))
            .collect();
        (ledger.counts(), budgets, sessions)
    };
    let (budget_count, session_count, holds, keys) = counts;
    metrics::gauge!(LEDGER_BUDGETS).set(budget_count as f64);
    metrics::gauge!(LEDGER_SESSIONS).set(session_count as f64);
    metrics::gauge!(LEDGER_LIVE_HOLDS).set(holds as f64);
    metrics::gauge!(LEDGER_IDEMPOTENCY_KEYS).set(keys as f64);

    // The fullest budgets and sessions (by share of cap used, then by
    // amount), at most the configured number of each.
    let budgets = top_by(budgets, s.limits.metrics_budgets_max, |r| (r.fullness, r.committed));
    let mut out = String::new();
    family(
        &mut out,
        BUDGET_CAP_UNITS,
        "A budget's cap, smallest units.",
        "budget",
        &budgets,
        |r| r.cap.units(),
    );
    family(
        &mut out,
        BUDGET_SPENT_UNITS,
        "What a budget has spent, smallest units.",
        "budget",
        &budgets,
        |r| r.spent.units(),
    );
    family(
        &mut out,
        BUDGET_HELD_UNITS,
        "What a budget holds, smallest units.",
        "budget",
        &budgets,
        |r| r.held.units(),
    );
    family(
        &mut out,
        SESSION_CAP_UNITS,
        "A session's cap, smallest units.",
        "session",
        &sessions,
        |r| r.cap.units(),
    );
    family(
        &mut out,
        SESSION_SPENT_UNITS,
        "What a session has spent, smallest units.",
        "session",
        &sessions,
        |r| r.spent.units(),
    );
    family(
        &mut out,
        SESSION_HELD_UNITS,
        "What a session holds, smallest units.",
        "session",
        &sessions,
        |r| r.held.units(),
    );
    out
}

/// Counts elections (term changes) and leader changes as they happen.
pub fn watch_raft(raft: Raft) {
    tokio::spawn(async move {
        let mut rx = raft.metrics();
        let (mut term, mut leader) = {
            let m = rx.borrow();
            (m.current_term, m.current_leader)
        };
        let mut failed = false;
        while rx.changed().await.is_ok() {
            let m = rx.borrow().clone();
            if let (Err(fatal), false) = (&m.running_state, failed) {
                failed = true;
                metrics::gauge!(NODE_FAILED).set(1.0);
                tracing::error!(error = %fatal, "the Raft core stopped: this node answers 503 node_failed from now on");
            }
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
