//! The ledger's steps of a payment, all on the hold: authorize (step 6),
//! pin (step 7), capture with a receipt (step 9).

use alloy_primitives::hex;
use api::{AuthorizeRequest, CaptureRequest, ReceiptFields};
use x402::ExactEvmPayload;
use x402::SettlementResponse;

use super::attempt::Payment;
use super::relay::relay;
use super::request::{gateway_ledger_error, ledger_error};
use crate::error::{Code, GatewayError, GatewayResult};
use crate::ids;
use crate::receipt::{PaymentReference, RECEIPT_TEXT_BYTES_MAX};
use crate::upstream::UpstreamResponse;
use crate::wire::{FetchResponse, PaymentInfo, PaymentOutcome};

impl Payment<'_> {
    /// Step 4: the ledger decides, before anything is signed.
    pub(super) async fn authorize(&self) -> GatewayResult<String> {
        let request = AuthorizeRequest {
            amount: None,
            amount_atomic: Some(self.chosen.exact.amount.to_string()),
            tool: self.fetch.tool.clone(),
            idempotency_key: Some(ids::authorize_key(self.nonce)),
            hold_seconds: Some(self.shared.config.hold_seconds),
            context: self.fetch.context.clone(),
        };
        let session_id = self.session.id.clone();
        let decision = self
            .agent
            .call("authorize", |c| {
                let (sid, req) = (session_id.clone(), request.clone());
                async move { c.authorize(&sid, &req).await }
            })
            .await
            .map_err(|f| self.with_requirement(ledger_error(f, "authorize", "nothing was signed")))?;
        if decision.decision != "approved" {
            self.shared.stats.denials.incr();
            let reason = decision.reason.clone().unwrap_or_else(|| "denied".into());
            let message = format!(
                "the ledger denied the payment: {}; nothing was signed",
                decision.message.clone().unwrap_or_else(|| reason.clone())
            );
            return Err(self
                .with_requirement(GatewayError::new(Code::BudgetDenied, message))
                .with(|b| {
                    b.reason = Some(reason);
                    b.remaining = decision.remaining.clone();
                    b.upstream_status = Some(402);
                }));
        }
        let id = decision
            .authorization_id
            .clone()
            .ok_or_else(|| GatewayError::new(Code::LedgerError, "an approval without an authorization id"))?;
        if decision.replayed {
            self.check_replayed(&id).await?;
        }
        Ok(id)
    }

    /// The agent's key was seen before: only a live, unpinned hold (an
    /// attempt that died before it pinned, so signed nothing) may go on.
    pub(super) async fn check_replayed(&self, id: &str) -> GatewayResult<()> {
        let auth_id = id.to_string();
        let view = self
            .gateway
            .call("read authorization", |c| {
                let id = auth_id.clone();
                async move { c.get_authorization(&id).await }
            })
            .await
            .map_err(|f| gateway_ledger_error(f, "read authorization", "nothing was signed"))?;
        let with_id = |e: GatewayError| e.with(|b| b.authorization_id = Some(auth_id.clone()));
        match view.status.as_str() {
            "held" if view.settling_since_ms.is_none() => Ok(()),
            "held" => Err(with_id(GatewayError::new(
                Code::PaymentPending,
                "a payment for this idempotency_key may be in flight or awaits reconciliation; nothing new was signed",
            ))),
            "captured" => Err(self.already_paid(id, view.receipt_id).await),
            status => Err(with_id(GatewayError::new(
                Code::PreviousAttemptFailed,
                format!("an earlier attempt with this idempotency_key ended {status}; use a new key to try again"),
            ))),
        }
    }

    pub(super) async fn already_paid(&self, id: &str, receipt_id: Option<String>) -> GatewayError {
        let transaction_hash = match &receipt_id {
            Some(rid) => self
                .agent
                .call("read receipt", |c| {
                    let rid = rid.clone();
                    async move { c.get_receipt(&rid).await }
                })
                .await
                .ok()
                .and_then(|r| r.transaction_hash),
            None => None,
        };
        GatewayError::new(
            Code::AlreadyPaid,
            "this idempotency_key already paid; nothing new was signed",
        )
        .with(|b| {
            b.authorization_id = Some(id.to_string());
            b.receipt_id = receipt_id;
            b.transaction_hash = transaction_hash;
        })
    }

    /// Step 5: pin the hold; the reference names this attempt, so a second
    /// attempt cannot pin (and so cannot sign).
    pub(super) async fn pin(&self, id: &str, reference: &str) -> GatewayResult<()> {
        let result = self
            .gateway
            .call("pin hold", |c| {
                let (id, reference) = (id.to_string(), reference.to_string());
                async move { c.mark_settling(&id, &reference).await }
            })
            .await;
        let with_id = |e: GatewayError| e.with(|b| b.authorization_id = Some(id.to_string()));
        match result {
            Ok(_) => Ok(()),
            Err(f) => match f.code() {
                Some("already_exists") => Err(with_id(GatewayError::new(
                    Code::PaymentPending,
                    "another attempt owns the payment for this idempotency_key; nothing new was signed",
                ))),
                Some("already_captured") => Err(self.already_paid(id, None).await),
                Some("already_voided" | "authorization_expired") => Err(with_id(GatewayError::new(
                    Code::PreviousAttemptFailed,
                    "the hold ended before the payment could be sent; use a new idempotency_key",
                ))),
                _ => {
                    // Nothing was signed; give the hold back (if the pin
                    // did land, the void ends it too).
                    let released = self.release(id).await;
                    let after = if released {
                        "nothing was signed; the hold was released"
                    } else {
                        "nothing was signed; the hold awaits reconciliation"
                    };
                    Err(with_id(gateway_ledger_error(f, "pin hold", after)))
                }
            },
        }
    }

    /// Step 7, success: record the spend with a verifiable receipt.
    pub(super) async fn capture(
        &self,
        id: &str,
        signed: &ExactEvmPayload,
        settlement: SettlementResponse,
        response: UpstreamResponse,
    ) -> GatewayResult<FetchResponse> {
        let auth = &signed.authorization;
        let reference = PaymentReference {
            nonce: auth.nonce,
            pay_to: auth.to,
            valid_after: auth.valid_after,
            valid_before: auth.valid_before,
            token: self.chosen.exact.asset,
            domain_name: self.chosen.exact.domain_name.clone(),
            domain_version: self.chosen.exact.domain_version.clone(),
        };
        let transaction = settlement.transaction.trim().to_string();
        let transaction = (!transaction.is_empty()
            && transaction.len() <= RECEIPT_TEXT_BYTES_MAX
            && !transaction.chars().any(char::is_control))
        .then_some(transaction);
        let request = CaptureRequest {
            amount: None,
            amount_atomic: Some(auth.value.to_string()),
            idempotency_key: Some(ids::capture_key(self.nonce)),
            receipt: Some(ReceiptFields {
                payment_request_id: Some(reference.encode()),
                signature: Some(format!("0x{}", hex::encode(&signed.signature))),
                transaction_hash: transaction.clone(),
                wallet_address: Some(self.wallet.to_checksum(None)),
                network: Some(self.chosen.exact.network.caip2().to_string()),
                resource_url: Some(self.chosen.resource_url.clone()),
            }),
        };
        let captured = self
            .gateway
            .call("capture", |c| {
                let (id, req) = (id.to_string(), request.clone());
                async move { c.capture(&id, &req).await }
            })
            .await;
        let mut info = match captured {
            Ok(c) => {
                self.shared.stats.captures.incr();
                tracing::info!(authorization = %id, receipt = %c.receipt_id, "x402 payment captured");
                PaymentInfo {
                    receipt_id: Some(c.receipt_id),
                    ..self.info(id, PaymentOutcome::Paid, auth.valid_before)
                }
            }
            Err(f) => {
                self.shared.stats.unsettled.incr();
                tracing::error!(
                    authorization = %id,
                    error = %f,
                    "the merchant settled but the capture failed; the hold stays pinned for reconciliation"
                );
                self.info(id, PaymentOutcome::PaidCapturePending, auth.valid_before)
            }
        };
        info.transaction_hash = transaction;
        relay(response, Some(info))
    }
}
