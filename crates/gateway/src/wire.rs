//! The gateway's own API bodies: `POST /v1/fetch` and its answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/fetch`, sent with `Authorization: Bearer <session token>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The session the token belongs to (and whose cap pays).
    pub session_id: String,
    /// The target, `http://host[:port]/path?query`.
    pub url: String,
    /// `GET` (default), `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers to send upstream (not hop-by-hop ones, not payment headers:
    /// those are the gateway's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request body as text; or give `body_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Optional, checked only: the tool a payment is charged to is derived
    /// from the upstream (the gateway's tool map, else the target's
    /// `host[:port]`; see `gateway::tools`). When given, it must equal that
    /// tool, else the fetch is refused with `tool_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The agent's key for this logical request: a retry with the same key
    /// never pays twice (1 to 128 visible ASCII characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Refuse to pay more than this, in atomic units of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount_atomic: Option<String>,
    /// Kept with the ledger's decision and receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<api::DecisionContext>,
}

/// The upstream's answer, relayed (always HTTP 200 from the gateway when
/// the upstream answered and the gateway did its part).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// The upstream's status.
    pub status: u16,
    /// The upstream's headers (lowercase names; repeated ones joined with
    /// `, `), without hop-by-hop headers.
    pub headers: BTreeMap<String, String>,
    /// The body when it is UTF-8 ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// ... otherwise base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Set when the gateway paid (or may have paid) for this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentInfo>,
}

/// How a payment ended, from the agent's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// Settled (the merchant said so) and captured in the ledger.
    Paid,
    /// Settled, but the capture could not be recorded yet: the hold stays
    /// pinned for reconciliation (the budget stays reserved meanwhile).
    PaidCapturePending,
    /// The merchant answered 2xx without saying whether it settled: the hold
    /// stays pinned for reconciliation.
    Unsettled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    pub outcome: PaymentOutcome,
    pub authorization_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    pub x402_version: u8,
    /// CAIP-2, e.g. `eip155:84532`.
    pub network: String,
    /// The token contract.
    pub token: String,
    /// The ledger asset code (`USDC`).
    pub asset: String,
    pub amount_atomic: String,
    /// Decimal, in the asset's unit.
    pub amount: String,
    pub pay_to: String,
    pub wallet_address: String,
    /// The EIP-3009 nonce.
    pub nonce: String,
    /// The signed `validBefore` (Unix seconds): the payment cannot land
    /// after it.
    pub valid_before: u64,
}

/// `GET /v1/stats`: counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub fetches: u64,
    /// Upstream 402 answers seen.
    pub payment_required: u64,
    /// Authorizations the ledger denied.
    pub denials: u64,
    /// Payment signatures produced (one per payment sent).
    pub signatures: u64,
    /// Signed payments sent upstream.
    pub payments_sent: u64,
    pub captures: u64,
    pub voids: u64,
    /// Payments left pinned for reconciliation.
    pub unsettled: u64,
}
