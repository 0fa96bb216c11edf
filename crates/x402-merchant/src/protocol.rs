//! Names the merchant shares with its clients and tests: the facilitator's
//! path prefix and the reason code of a reused nonce.

/// Reason code the merchant gives for a reused EIP-3009 nonce: on chain the transfer would
/// revert ("authorization is used"), which x402 facilitators report as this code.
pub const NONCE_REUSED_REASON: &str = "invalid_transaction_state";

/// Path prefix of the facilitator endpoints.
pub const FACILITATOR_PREFIX: &str = "/facilitator";
