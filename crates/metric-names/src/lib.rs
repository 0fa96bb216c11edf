//! Prometheus metric names: part of the public interface (dashboards and
//! alerts depend on them), so they live here, in one place. Units are in the
//! names; counters end in `_total`; amounts are in the asset's smallest unit.

// HTTP
pub const HTTP_REQUESTS_TOTAL: &str = "spendcap_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "spendcap_http_request_duration_seconds";

// Decisions (at the node that took the request)
pub const DECISIONS_TOTAL: &str = "spendcap_decisions_total";
pub const CAPTURES_TOTAL: &str = "spendcap_captures_total";
pub const VOIDS_TOTAL: &str = "spendcap_voids_total";
pub const AUTHORIZED_UNITS_TOTAL: &str = "spendcap_authorized_units_total";
pub const CAPTURED_UNITS_TOTAL: &str = "spendcap_captured_units_total";
pub const AUTHORIZE_DURATION_SECONDS: &str = "spendcap_authorize_duration_seconds";
pub const OUTCOMES_UNKNOWN_TOTAL: &str = "spendcap_outcomes_unknown_total";
pub const FORWARDED_REQUESTS_TOTAL: &str = "spendcap_forwarded_requests_total";

// Proposals at the leader
pub const COMMIT_DURATION_SECONDS: &str = "spendcap_commit_duration_seconds";
pub const BATCH_COMMANDS: &str = "spendcap_batch_commands";
pub const PROPOSALS_QUEUED: &str = "spendcap_proposals_queued";
/// Entries whose stamp the leader bounded because its wall clock was ahead
/// of the real time it can vouch for (docs/ARCHITECTURE.md, "Time").
pub const CLOCK_CLAMPED_TOTAL: &str = "spendcap_clock_clamped_total";
/// At the last stamp: how far the leader's wall clock was ahead of the
/// allowed stamp (0 when not clamped).
pub const CLOCK_WALL_AHEAD_SECONDS: &str = "spendcap_clock_wall_ahead_seconds";
/// Every node: log time minus this node's wall clock when it last saw log
/// time advance (positive: log time ahead of this node's clock).
pub const CLOCK_LOG_SKEW_SECONDS: &str = "spendcap_clock_log_skew_seconds";

// State machine (every replica)
pub const HOLD_EXPIRIES_TOTAL: &str = "spendcap_hold_expiries_total";
pub const APPLIED_COMMANDS_TOTAL: &str = "spendcap_applied_commands_total";
pub const LEDGER_SESSIONS: &str = "spendcap_ledger_sessions";
pub const LEDGER_BUDGETS: &str = "spendcap_ledger_budgets";
pub const LEDGER_LIVE_HOLDS: &str = "spendcap_ledger_live_holds";
pub const LEDGER_IDEMPOTENCY_KEYS: &str = "spendcap_ledger_idempotency_keys";

// Budgets and top sessions (label cardinality bounded by configuration)
pub const BUDGET_CAP_UNITS: &str = "spendcap_budget_cap_units";
pub const BUDGET_SPENT_UNITS: &str = "spendcap_budget_spent_units";
pub const BUDGET_HELD_UNITS: &str = "spendcap_budget_held_units";
pub const SESSION_CAP_UNITS: &str = "spendcap_session_cap_units";
pub const SESSION_SPENT_UNITS: &str = "spendcap_session_spent_units";
pub const SESSION_HELD_UNITS: &str = "spendcap_session_held_units";

// Raft
pub const RAFT_TERM: &str = "spendcap_raft_term";
pub const RAFT_LEADER_ID: &str = "spendcap_raft_leader_id";
pub const RAFT_IS_LEADER: &str = "spendcap_raft_is_leader";
pub const RAFT_LAST_LOG_INDEX: &str = "spendcap_raft_last_log_index";
pub const RAFT_COMMITTED_INDEX: &str = "spendcap_raft_committed_index";
pub const RAFT_APPLIED_INDEX: &str = "spendcap_raft_applied_index";
pub const RAFT_REPLICATION_LAG_ENTRIES: &str = "spendcap_raft_replication_lag_entries";
pub const RAFT_SNAPSHOTS_TOTAL: &str = "spendcap_raft_snapshots_total";
pub const RAFT_PURGES_TOTAL: &str = "spendcap_raft_purges_total";
pub const RAFT_ELECTIONS_TOTAL: &str = "spendcap_raft_elections_total";
pub const RAFT_LEADER_CHANGES_TOTAL: &str = "spendcap_raft_leader_changes_total";
pub const RAFT_RPC_DURATION_SECONDS: &str = "spendcap_raft_rpc_duration_seconds";
pub const RAFT_RPC_ERRORS_TOTAL: &str = "spendcap_raft_rpc_errors_total";
/// 1 when this node's Raft core has stopped (an openraft `Fatal` error: a
/// storage error while appending or applying, a panic, or an unrequested
/// shutdown), else 0. A failed node answers `503 node_failed` on every
/// route but `/metrics`; replace or restart it.
pub const NODE_FAILED: &str = "spendcap_node_failed";

// Build
pub const BUILD_INFO: &str = "spendcap_build_info";

// Storage
pub const STORAGE_FSYNC_DURATION_SECONDS: &str = "spendcap_storage_fsync_duration_seconds";
pub const STORAGE_APPLY_DURATION_SECONDS: &str = "spendcap_storage_apply_duration_seconds";
pub const STORAGE_ROCKSDB_SIZE_BYTES: &str = "spendcap_storage_rocksdb_size_bytes";
