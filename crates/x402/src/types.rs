//! x402 wire types for protocol versions 1 and 2.
//!
//! Field names are camelCase as in the specifications. Amounts and times that the specs carry
//! as decimal strings are parsed into integers with checked parsing (see [`crate::amount`]);
//! JSON numbers are refused for them. Requirement objects keep fields this crate does not know
//! in `unknown_fields`, so a v2 client can echo the chosen requirement back unchanged.

use alloy_primitives::{Address, Bytes, B256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// x402 protocol version (the `x402Version` field), serialized as the integer 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum X402Version {
    V1,
    V2,
}

impl X402Version {
    pub const fn as_u8(self) -> u8 {
        match self {
            X402Version::V1 => 1,
            X402Version::V2 => 2,
        }
    }

    pub const fn from_u64(value: u64) -> Option<Self> {
        match value {
            1 => Some(X402Version::V1),
            2 => Some(X402Version::V2),
            _ => None,
        }
    }
}

impl std::fmt::Display for X402Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_u8())
    }
}

impl Serialize for X402Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.as_u8())
    }
}

impl<'de> Deserialize<'de> for X402Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = u64::deserialize(deserializer)?;
        X402Version::from_u64(raw).ok_or_else(|| serde::de::Error::custom(format!("unsupported x402Version {raw}")))
    }
}

/// v1 payment requirement (one element of `accepts` in the v1 402 body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    /// v1 network name, e.g. `base-sepolia`.
    pub network: String,
    /// Atomic units (`"10000"` = 0.01 USDC).
    #[serde(with = "crate::amount::u128_string")]
    pub max_amount_required: u128,
    /// URL of the paid resource.
    pub resource: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Recipient; an EVM address for EVM schemes, kept as text so other chains parse.
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    /// Token contract; an EVM address for EVM schemes, kept as text so other chains parse.
    pub asset: String,
    /// Scheme-specific data; for `exact` on EVM the EIP-712 domain `name` and `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    /// Fields not known to this crate, preserved as received.
    #[serde(flatten)]
    pub unknown_fields: Map<String, Value>,
}

/// v2 payment requirement (one element of `accepts`, and the `accepted` echo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV2 {
    pub scheme: String,
    /// CAIP-2 network id, e.g. `eip155:84532`.
    pub network: String,
    /// Atomic units; v2 requires the payment to match exactly.
    #[serde(with = "crate::amount::u128_string")]
    pub amount: u128,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    #[serde(flatten)]
    pub unknown_fields: Map<String, Value>,
}

/// v2 `ResourceInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(flatten)]
    pub unknown_fields: Map<String, Value>,
}

/// v1 402 response body: `{x402Version:1, error, accepts:[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: X402Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// v2 `PAYMENT-REQUIRED` header content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV2 {
    pub x402_version: X402Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirementsV2>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// EIP-3009 authorization parameters as carried in the `exact` EVM payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactEvmAuthorization {
    pub from: Address,
    pub to: Address,
    #[serde(with = "crate::amount::u128_string")]
    pub value: u128,
    /// Unix seconds; the transfer is valid strictly after this time.
    #[serde(with = "crate::amount::u64_string")]
    pub valid_after: u64,
    /// Unix seconds; the transfer is valid strictly before this time.
    #[serde(with = "crate::amount::u64_string")]
    pub valid_before: u64,
    /// 32 random bytes chosen by the payer; single use per payer on the token contract.
    pub nonce: B256,
}

/// The `payload` of an `exact` EVM payment: the signature and what it signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactEvmPayload {
    /// 65 bytes `r ‖ s ‖ v`, hex with `0x`. Length and form are checked at verification.
    pub signature: Bytes,
    pub authorization: ExactEvmAuthorization,
}

/// v1 `X-PAYMENT` header content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: X402Version,
    pub scheme: String,
    pub network: String,
    pub payload: ExactEvmPayload,
}

/// v2 `PAYMENT-SIGNATURE` header content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV2 {
    pub x402_version: X402Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The requirement the client chose, echoed back.
    pub accepted: PaymentRequirementsV2,
    pub payload: ExactEvmPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// Settlement result: v1 `X-PAYMENT-RESPONSE`, v2 `PAYMENT-RESPONSE`, and the facilitator's
/// `/settle` answer (same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Transaction hash; empty when settlement failed (and tolerated as absent then).
    #[serde(default)]
    pub transaction: String,
    /// Network as written for the protocol version (v1 name or CAIP-2).
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// v2 only: atomic units settled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::amount::opt_u128_string"
    )]
    pub amount: Option<u128>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// Facilitator `POST /settle` response (same shape as [`SettlementResponse`]).
pub type SettleResponse = SettlementResponse;

/// Facilitator `POST /verify` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// Facilitator `GET /supported` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: X402Version,
    pub scheme: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// Facilitator `GET /supported` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub signers: Map<String, Value>,
}

/// A payment requirement of either version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PaymentRequirements {
    V1(PaymentRequirementsV1),
    V2(PaymentRequirementsV2),
}

impl PaymentRequirements {
    pub fn version(&self) -> X402Version {
        match self {
            PaymentRequirements::V1(_) => X402Version::V1,
            PaymentRequirements::V2(_) => X402Version::V2,
        }
    }

    /// Parses a requirement of the given version from JSON.
    pub fn from_value(value: Value, version: X402Version) -> Result<Self, serde_json::Error> {
        Ok(match version {
            X402Version::V1 => PaymentRequirements::V1(serde_json::from_value(value)?),
            X402Version::V2 => PaymentRequirements::V2(serde_json::from_value(value)?),
        })
    }
}

impl<'de> Deserialize<'de> for PaymentRequirements {
    /// The version is told by which amount field is present (`maxAmountRequired` is v1,
    /// `amount` is v2).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let version = if value.get("maxAmountRequired").is_some() {
            X402Version::V1
        } else if value.get("amount").is_some() {
            X402Version::V2
        } else {
            return Err(serde::de::Error::custom(
                "payment requirements have neither `maxAmountRequired` (v1) nor `amount` (v2)",
            ));
        };
        Self::from_value(value, version).map_err(serde::de::Error::custom)
    }
}

/// A client payment of either version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived per-request message; unboxed variants keep matching simple"
)]
pub enum PaymentPayload {
    V1(PaymentPayloadV1),
    V2(PaymentPayloadV2),
}

impl PaymentPayload {
    pub fn version(&self) -> X402Version {
        match self {
            PaymentPayload::V1(_) => X402Version::V1,
            PaymentPayload::V2(_) => X402Version::V2,
        }
    }

    /// The scheme-specific part (signature and authorization).
    pub fn exact_evm(&self) -> &ExactEvmPayload {
        match self {
            PaymentPayload::V1(p) => &p.payload,
            PaymentPayload::V2(p) => &p.payload,
        }
    }

    /// Scheme named by the payload (v1 top level, v2 `accepted.scheme`).
    pub fn scheme(&self) -> &str {
        match self {
            PaymentPayload::V1(p) => &p.scheme,
            PaymentPayload::V2(p) => &p.accepted.scheme,
        }
    }

    /// Network named by the payload (v1 top level, v2 `accepted.network`).
    pub fn network(&self) -> &str {
        match self {
            PaymentPayload::V1(p) => &p.network,
            PaymentPayload::V2(p) => &p.accepted.network,
        }
    }
}

impl<'de> Deserialize<'de> for PaymentPayload {
    /// Dispatches on `x402Version`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let raw = value
            .get("x402Version")
            .ok_or_else(|| serde::de::Error::missing_field("x402Version"))?;
        let version = X402Version::deserialize(raw).map_err(serde::de::Error::custom)?;
        Ok(match version {
            X402Version::V1 => PaymentPayload::V1(serde_json::from_value(value).map_err(serde::de::Error::custom)?),
            X402Version::V2 => PaymentPayload::V2(serde_json::from_value(value).map_err(serde::de::Error::custom)?),
        })
    }
}

/// Facilitator `POST /verify` and `POST /settle` request body.
///
/// Serialized as `{x402Version, paymentPayload, paymentRequirements}`. On input `x402Version`
/// may be absent (some v2 senders omit it); the payload's own version is then used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    pub x402_version: X402Version,
    pub payment_payload: PaymentPayload,
    pub payment_requirements: PaymentRequirements,
}

impl<'de> Deserialize<'de> for FacilitatorRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut value = Value::deserialize(deserializer)?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| D::Error::custom("facilitator request must be a JSON object"))?;
        let payload_value = object
            .remove("paymentPayload")
            .ok_or_else(|| D::Error::missing_field("paymentPayload"))?;
        let requirements_value = object
            .remove("paymentRequirements")
            .ok_or_else(|| D::Error::missing_field("paymentRequirements"))?;
        let payment_payload: PaymentPayload = serde_json::from_value(payload_value).map_err(D::Error::custom)?;
        let x402_version = match object.get("x402Version") {
            Some(raw) => X402Version::deserialize(raw).map_err(D::Error::custom)?,
            None => payment_payload.version(),
        };
        let payment_requirements =
            PaymentRequirements::from_value(requirements_value, x402_version).map_err(D::Error::custom)?;
        Ok(FacilitatorRequest {
            x402_version,
            payment_payload,
            payment_requirements,
        })
    }
}

/// Facilitator `POST /verify` request.
pub type VerifyRequest = FacilitatorRequest;
/// Facilitator `POST /settle` request.
pub type SettleRequest = FacilitatorRequest;
