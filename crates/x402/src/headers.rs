//! HTTP header names used by the x402 HTTP transport (v1 and v2).
//!
//! HTTP header names are case-insensitive; these are the spellings the specifications use.

/// v1: client → server, base64 JSON [`crate::PaymentPayloadV1`].
pub const X_PAYMENT: &str = "X-PAYMENT";
/// v1: server → client, base64 JSON [`crate::SettlementResponse`].
pub const X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";

/// v2: server → client on 402, base64 JSON [`crate::PaymentRequiredV2`].
pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// v2: client → server, base64 JSON [`crate::PaymentPayloadV2`].
pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
/// v2: server → client, base64 JSON [`crate::SettlementResponse`].
pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";

/// Name of the header carrying the client's payment for a protocol version.
pub fn payment_header(version: crate::X402Version) -> &'static str {
    match version {
        crate::X402Version::V1 => X_PAYMENT,
        crate::X402Version::V2 => PAYMENT_SIGNATURE,
    }
}

/// Name of the header carrying the settlement response for a protocol version.
pub fn settlement_header(version: crate::X402Version) -> &'static str {
    match version {
        crate::X402Version::V1 => X_PAYMENT_RESPONSE,
        crate::X402Version::V2 => PAYMENT_RESPONSE,
    }
}
