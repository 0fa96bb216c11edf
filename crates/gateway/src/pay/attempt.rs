//! One payment attempt ([`Payment`]): what it carries, what it tells the
//! agent, and the two ways a hold is left (released when nothing was
//! signed, kept pinned when the outcome is unknown).

use alloy_primitives::hex;
use api::VoidRequest;
use x402::{SharedSigner, X402Version, B256};

use super::offer::{summary, Chosen};
use super::request::{Fetch, Session};
use crate::error::{Code, GatewayError};
use crate::ids;
use crate::ledger::Ledger;
use crate::shared::Shared;
use crate::wire::{PaymentInfo, PaymentOutcome};

/// Unix seconds now.
pub(super) fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One payment attempt.
pub(super) struct Payment<'a> {
    pub(super) shared: &'a Shared,
    /// The ledger as the agent (its session token): authorize, read its
    /// receipts.
    pub(super) agent: &'a Ledger,
    /// The ledger as the gateway (its own token): pin, read, capture, void.
    pub(super) gateway: &'a Ledger,
    /// This fetch's upstream client, pinned to the checked addresses.
    pub(super) http: reqwest::Client,
    pub(super) session: &'a Session,
    pub(super) fetch: &'a Fetch,
    pub(super) wallet: x402::Address,
    pub(super) signer: SharedSigner,
    pub(super) nonce: B256,
    pub(super) chosen: Chosen,
}

impl Payment<'_> {
    pub(super) fn version(&self) -> X402Version {
        self.chosen.exact.version
    }

    pub(super) fn info(&self, authorization_id: &str, outcome: PaymentOutcome, valid_before: u64) -> PaymentInfo {
        let amount = self.chosen.exact.amount;
        PaymentInfo {
            outcome,
            valid_before,
            authorization_id: authorization_id.to_string(),
            receipt_id: None,
            transaction_hash: None,
            x402_version: self.version().as_u8(),
            network: self.chosen.exact.network.caip2().to_string(),
            token: self.chosen.exact.asset.to_checksum(None),
            asset: self.chosen.asset.code.clone(),
            amount_atomic: amount.to_string(),
            amount: decimal::format_decimal(amount, self.chosen.asset.decimals, decimal::API_PLACES_MIN),
            pay_to: self.chosen.exact.pay_to.to_checksum(None),
            wallet_address: self.wallet.to_checksum(None),
            nonce: format!("0x{}", hex::encode(self.nonce.as_slice())),
        }
    }

    pub(super) fn with_requirement(&self, e: GatewayError) -> GatewayError {
        let s = summary(&self.chosen.requirement);
        e.with(|b| b.requirement = Some(s))
    }

    /// An error from before any signature left, after the hold was (or
    /// could not be) released.
    pub(super) fn not_signed(&self, e: GatewayError, authorization_id: &str, released: bool) -> GatewayError {
        self.with_requirement(e).with(|b| {
            b.authorization_id = Some(authorization_id.to_string());
            if !released {
                b.message
                    .push_str("; the hold could not be released and awaits reconciliation");
            }
        })
    }

    /// Nothing was signed, or the signature never left: give the hold back.
    /// Never called once a signed payment may have left. False when it could
    /// not be done (the pinned hold then waits for reconciliation).
    pub(super) async fn release(&self, id: &str) -> bool {
        let request = VoidRequest {
            idempotency_key: Some(ids::void_key(self.nonce)),
        };
        match self
            .gateway
            .call("void", |c| {
                let (id, req) = (id.to_string(), request.clone());
                async move { c.void(&id, &req).await }
            })
            .await
        {
            Ok(_) => {
                self.shared.stats.voids.incr();
                tracing::info!(authorization = %id, "x402 hold released");
                true
            }
            Err(f) => {
                self.shared.stats.unsettled.incr();
                tracing::error!(authorization = %id, error = %f, "could not release the hold; it awaits reconciliation");
                false
            }
        }
    }

    /// A signed payment left and no settlement was confirmed: keep the
    /// pinned hold; never guess, never void (the merchant can settle until
    /// `valid_before`).
    pub(super) fn unsettled(
        &self,
        id: &str,
        reference: &str,
        valid_before: u64,
        why: &str,
        upstream_status: Option<u16>,
        error_reason: Option<String>,
    ) -> GatewayError {
        self.shared.stats.unsettled.incr();
        tracing::warn!(
            authorization = %id,
            reference = %reference,
            valid_before,
            why,
            "x402 payment outcome unknown; the hold stays pinned for reconciliation"
        );
        self.with_requirement(GatewayError::new(
            Code::PaymentOutcomeUnknown,
            format!(
                "a signed payment was sent and its outcome is unknown ({why}); the merchant can still settle it \
                 until validBefore {valid_before} (Unix seconds), so the amount stays reserved (the hold is pinned) \
                 until an operator reconciles it; a retry with the same idempotency_key will not pay again"
            ),
        ))
        .with(|b| {
            b.authorization_id = Some(id.to_string());
            b.valid_before = Some(valid_before);
            b.upstream_status = upstream_status;
            b.error_reason = error_reason;
        })
    }
}
