//! Counters and settlement records.

use alloy_primitives::{Address, B256};
use x402::X402Version;

/// Counters for test assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerchantStats {
    /// Every 402 response, whether for a missing payment or a rejected one.
    pub payment_required_served: u64,
    /// Paid-route requests that carried a payment header, plus facilitator `/settle` calls.
    pub payment_attempts: u64,
    /// Payments rejected (undecodable, failed verification, nonce reused).
    pub payments_rejected: u64,
    pub settlements_succeeded: u64,
    /// Settlements failed by the [`crate::FailureMode::SettlementFails`] switch.
    pub settlements_failed: u64,
    /// Requests currently or formerly held open by a hang switch.
    pub requests_hung: u64,
    /// Reason code of the most recent rejection or settlement failure.
    pub last_error_reason: Option<String>,
}

/// One settled payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledPayment {
    /// Route path, or `/facilitator/settle`.
    pub route: String,
    pub version: X402Version,
    pub payer: Address,
    pub pay_to: Address,
    /// Atomic units.
    pub value: u128,
    pub nonce: B256,
    /// The signed `validBefore` (Unix seconds).
    pub valid_before: u64,
    /// Deterministic "transaction hash": keccak-256 of the 65 signature bytes.
    pub transaction: B256,
}
