//! spendcap's HTTP API, `/v1`: the JSON bodies the node accepts and returns.
//!
//! Money travels as decimal strings in the asset's unit (`"25.00"`), or as
//! integer strings of smallest units where a field says `_atomic`. Times are
//! Unix milliseconds of the cluster's log clock. Request bodies reject
//! unknown fields. Errors are `{code, message}` with one HTTP status per code.
//!
//! A decision (approved or denied) is a normal `200` answer; an error is
//! not a denial. `503 no_leader` means nothing was applied and the call may
//! be retried; `504 outcome_unknown` means the outcome is unknown: retry with
//! the same idempotency key.
//!
//! Why one file over ~600 lines: it is the API's whole wire vocabulary, every
//! request and answer body, side by side as the OpenAPI document
//! (`crates/node/src/http/openapi.json`) lists them, so a change to a body and
//! its neighbours (views that nest in one another, requests and their
//! answers) is read and reviewed in one place. The structs are declarations,
//! not logic; splitting them by endpoint would scatter the shared views
//! (`CapView`, `LogPosition`, `Page`) without making any part simpler.

pub mod metrics;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Error codes the client may branch on (the full list is in the OpenAPI
/// document).
pub mod codes {
    pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
    pub const NO_LEADER: &str = "no_leader";
    pub const OVERLOADED: &str = "overloaded";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const IDEMPOTENCY_CONFLICT: &str = "idempotency_conflict";
    pub const SHUTTING_DOWN: &str = "shutting_down";
}

/// Every session token starts with this.
pub const SESSION_TOKEN_PREFIX: &str = "sct_";
/// Shortest caller-chosen session token, after the prefix.
pub const SESSION_TOKEN_CHARS_MIN: usize = 32;
/// Longest caller-chosen session token, after the prefix.
pub const SESSION_TOKEN_CHARS_MAX: usize = 128;

/// Checks a caller-chosen session token: [`SESSION_TOKEN_PREFIX`], then
/// [`SESSION_TOKEN_CHARS_MIN`] to [`SESSION_TOKEN_CHARS_MAX`] characters of
/// `[A-Za-z0-9_-]`. The error says what is wrong.
pub fn check_session_token(token: &str) -> Result<(), String> {
    let Some(rest) = token.strip_prefix(SESSION_TOKEN_PREFIX) else {
        return Err(format!("must start with {SESSION_TOKEN_PREFIX}"));
    };
    if rest.len() < SESSION_TOKEN_CHARS_MIN || rest.len() > SESSION_TOKEN_CHARS_MAX {
        return Err(format!(
            "must have {SESSION_TOKEN_CHARS_MIN} to {SESSION_TOKEN_CHARS_MAX} characters after {SESSION_TOKEN_PREFIX}"
        ));
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!("may only contain A-Z a-z 0-9 _ - after {SESSION_TOKEN_PREFIX}"));
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBudgetRequest {
    /// `org:acme`, `team:research`, `user:alice`, ...
    pub id: String,
    pub cap: String,
    /// Asset code; default `USDC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// Decimals of the asset's smallest unit; default 6 for USDC, required
    /// for other assets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_caps: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Tools no session drawing on this budget (or a budget below it) may
    /// be authorized for; denied with `tool_blocked`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub blocked_tools: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBudgetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
    /// Replaces the whole per-tool cap table. A tool cap that is new counts
    /// spend from when it is added, plus every live hold it now covers (so
    /// it may not be set below them: `cap_below_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_caps: Option<BTreeMap<String, String>>,
    /// Replaces the blocked-tool list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_tools: Option<BTreeSet<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapView {
    pub cap: String,
    pub spent: String,
    pub held: String,
    pub remaining: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    pub id: String,
    pub asset: String,
    pub decimals: u8,
    pub cap: String,
    pub spent: String,
    pub held: String,
    pub remaining: String,
    pub tool_caps: BTreeMap<String, CapView>,
    pub parent: Option<String>,
    pub created_at_ms: u64,
    #[serde(default)]
    pub blocked_tools: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Chosen by the caller (a retry with the same id is idempotent) or
    /// generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub cap: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// Lifetime; default one hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_address: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_caps: BTreeMap<String, String>,
    /// The budget this session draws on (and through it, every ancestor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// The only tools the session may be authorized for (others are denied
    /// with `tool_not_allowed`); absent means any tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<BTreeSet<String>>,
    /// Most live (held) authorizations at once; default 1,000, at most
    /// 100,000. Beyond it authorizations are denied with `live_holds_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_holds_max: Option<u32>,
    /// The session's bearer token, chosen by the caller (`sct_` and 32 to
    /// 128 characters of `[A-Za-z0-9_-]`): a retried create with the same
    /// id, parameters and token answers `existed: true` and that token
    /// works; another token gets `409 already_exists`. It must be
    /// unguessable (the client and the CLI use 256 random bits). Without it
    /// the node generates one, and a retry after a lost answer cannot
    /// recover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub asset: String,
    pub decimals: u8,
    pub cap: String,
    pub spent: String,
    pub held: String,
    /// What the session's own cap leaves.
    pub remaining: String,
    /// What the session could authorize now, counting every budget above it.
    pub available: String,
    pub tool_caps: BTreeMap<String, CapView>,
    pub budget: Option<String>,
    /// The tool allowlist; `None` allows any tool.
    #[serde(default)]
    pub tools: Option<BTreeSet<String>>,
    /// Most live authorizations at once.
    #[serde(default)]
    pub live_holds_max: u32,
    /// Live authorizations now.
    #[serde(default)]
    pub live_holds: u32,
    pub agent_id: String,
    pub wallet_address: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    /// `active`, `expired` or `revoked`, by the log clock.
    pub status: String,
    /// The log index this view was read at (reads are linearizable).
    pub read_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSessionResponse {
    pub session: SessionView,
    /// The session's bearer token, shown once. On a retried create
    /// (`existed: true`, only possible when the request sent `token`) it is
    /// the token the request sent, which is the session's.
    pub session_token: Option<String>,
    pub existed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub session_id: String,
    pub session_token: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Decimal amount in the session's asset; or give `amount_atomic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Integer amount in smallest units (x402's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_atomic: Option<String>,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Hold lifetime; default 300, at most 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_only::optional"
    )]
    pub context: Option<DecisionContext>,
}

/// Where a decision sits in the replicated log: fault tests order
/// operations by it. A replayed answer (same idempotency key) carries the
/// first decision's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub log_index: u64,
    pub batch_position: u32,
    /// The log time (Unix ms) it was decided at.
    pub log_time_ms: u64,
}

/// The answer to an authorization: `approved` or `denied`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `approved` or `denied`.
    pub decision: String,
    pub session_id: String,
    /// Set when approved.
    pub authorization_id: Option<String>,
    pub amount: Option<String>,
    pub expires_at_ms: Option<u64>,
    /// Set when denied: `session_cap`, `tool_cap`, `budget_cap`,
    /// `session_expired`, `session_revoked`, `unknown_session`,
    /// `tool_not_allowed`, `tool_blocked`, `live_holds_max`.
    pub reason: Option<String>,
    /// The budget whose cap denied it (`budget_cap`, or a budget's
    /// `tool_cap`), or that blocks the tool (`tool_blocked`).
    pub budget_id: Option<String>,
    /// The tool whose cap denied it (`tool_cap`).
    pub tool: Option<String>,
    /// Approved: what the session has left. Denied: what the denying level
    /// has left (when it is a cap).
    pub remaining: Option<String>,
    pub message: Option<String>,
    /// True when an idempotency key returned the first result.
    pub replayed: bool,
    #[serde(flatten)]
    pub position: LogPosition,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// At most the held amount; absent captures all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_atomic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_only::optional"
    )]
    pub receipt: Option<ReceiptFields>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureResponse {
    pub authorization_id: String,
    pub receipt_id: String,
    pub captured: String,
    pub released: String,
    pub replayed: bool,
    #[serde(flatten)]
    pub position: LogPosition,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoidRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidResponse {
    pub authorization_id: String,
    pub released: String,
    pub replayed: bool,
    #[serde(flatten)]
    pub position: LogPosition,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationView {
    pub id: String,
    pub session_id: String,
    pub tool: String,
    pub amount: String,
    /// `held`, `captured`, `voided` or `expired`.
    pub status: String,
    pub captured: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    pub receipt_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub context: DecisionContext,
    /// Set while a payment against the hold may be in flight: the hold then
    /// waits for reconciliation (capture or void) instead of expiring.
    pub settling_since_ms: Option<u64>,
    pub settling_reference: Option<String>,
}

/// `POST /v1/authorizations/{id}/settling`: a payment against this hold is
/// about to be sent; keep the hold until it is captured or voided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkSettlingRequest {
    /// The payment's reference (e.g. its x402 nonce); a repeat with the same
    /// reference is idempotent.
    pub reference: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkSettlingResponse {
    pub authorization_id: String,
    pub already: bool,
    #[serde(flatten)]
    pub position: LogPosition,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptView {
    pub id: String,
    pub authorization_id: String,
    pub session_id: String,
    pub agent_id: String,
    pub tool: String,
    pub amount: String,
    pub amount_atomic: String,
    pub asset: String,
    pub decimals: u8,
    pub wallet_address: Option<String>,
    pub payment_request_id: Option<String>,
    pub signature: Option<String>,
    pub transaction_hash: Option<String>,
    pub network: Option<String>,
    pub resource_url: Option<String>,
    pub timestamp_ms: u64,
    pub context: DecisionContext,
    /// Hex SHA-256 of the audit chain before this receipt.
    pub previous_history_hash: String,
}

/// A page of a list; pass `next_after` as `after` for the next page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    pub cluster: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub members: Vec<Member>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Log clock of the state machine.
    pub ledger_time_ms: u64,
    pub budgets: u64,
    pub sessions: u64,
    pub live_holds: u64,
    pub idempotency_keys: u64,
}

/// A node's state digest at an applied index; equal digests at equal
/// indexes mean byte-identical state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestView {
    pub node_id: u64,
    pub applied_index: Option<u64>,
    pub digest: String,
    pub history_head: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearnerRequest {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeMembershipRequest {
    /// The complete new set of voters.
    pub voters: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipResponse {
    pub log_index: u64,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub applied_index: Option<u64>,
}

/// `GET /v1/receipts` filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Inclusive, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<u64>,
    /// Exclusive, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<u64>,
    /// A receipt id: start after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `GET /v1/budgets` and `GET /v1/sessions` paging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Most items in one page.
pub const PAGE_ITEMS_MAX: u32 = 1000;
/// Items in a page when the caller names no limit.
pub const PAGE_ITEMS_DEFAULT: u32 = 100;

/// Most authorizations in one `POST /v1/batch/authorize` request.
pub const BATCH_ITEMS_MAX: usize = 1000;

/// One authorization inside a batch (admin token only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchAuthorizeItem {
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_atomic: Option<String>,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_only::optional"
    )]
    pub context: Option<DecisionContext>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchAuthorizeRequest {
    pub items: Vec<BatchAuthorizeItem>,
}

/// One result per item, in order: a decision, or the error that item got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchItemResult {
    Decision(Decision),
    Error { error: ErrorBody },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAuthorizeResponse {
    pub results: Vec<BatchItemResult>,
}

/// Request fields that hold an object take a JSON object or null, never an
/// array: serde would otherwise read a struct from an array by position
/// (`"context": ["t", "c"]`), which the OpenAPI document does not allow.
mod object_only {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

    pub fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
        struct ObjectOrNull<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOrNull<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object or null")
            }

            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D2: Deserializer<'de>>(self, inner: D2) -> Result<Self::Value, D2::Error> {
                inner.deserialize_map(self)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Some)
            }
        }

        deserializer.deserialize_option(ObjectOrNull(PhantomData))
    }
}
