//! The merchant's side of a payment: the signature (step 8), and what the
//! merchant's answer says about settlement.

use serde_json::Value;
use x402::codec::X402Message;
use x402::{
    build_payment_v1, build_payment_v2, headers, ExactEvmPayload, PaymentRequiredV2, PaymentRequirements,
    SettlementResponse,
};

use super::attempt::Payment;
use crate::error::{Code, GatewayError, GatewayResult};
use crate::upstream::UpstreamResponse;

/// What the settlement answer means.
pub(super) enum Settled {
    Paid(SettlementResponse),
    /// The merchant said no (a failed settlement, another 402, a 4xx). It
    /// still holds the signature: the hold stays pinned all the same.
    Refused(Option<String>),
    Unknown(String),
    /// 2xx without a settlement statement: deliver, keep the hold pinned.
    Delivered,
}

impl Payment<'_> {
    /// Step 8: the signature, made only now, at `now` (so `validBefore` is
    /// `now + maxTimeoutSeconds`, which `offer::pick` bounded). A signature whose
    /// `validBefore` is not `valid_before` (the one the pin announced) is
    /// never sent.
    pub(super) async fn sign(
        &self,
        now: u64,
        valid_before: u64,
    ) -> GatewayResult<(&'static str, String, ExactEvmPayload)> {
        let failed = |e: x402::BuildError| GatewayError::new(Code::SignerFailed, format!("{e}; nothing was sent"));
        let (header, value, signed) = match &self.chosen.requirement {
            PaymentRequirements::V1(r) => {
                let p = build_payment_v1(r, &self.signer, now, self.nonce)
                    .await
                    .map_err(failed)?;
                let value = p
                    .to_header()
                    .map_err(|e| GatewayError::new(Code::Internal, e.to_string()))?;
                (headers::X_PAYMENT, value, p.payload)
            }
            PaymentRequirements::V2(r) => {
                let p = build_payment_v2(
                    r,
                    self.chosen.resource.clone(),
                    self.chosen.extensions.clone(),
                    &self.signer,
                    now,
                    self.nonce,
                )
                .await
                .map_err(failed)?;
                let value = p
                    .to_header()
                    .map_err(|e| GatewayError::new(Code::Internal, e.to_string()))?;
                (headers::PAYMENT_SIGNATURE, value, p.payload)
            }
        };
        self.shared.stats.signatures.incr();
        if signed.authorization.valid_before != valid_before {
            return Err(GatewayError::new(
                Code::Internal,
                format!(
                    "the signed validBefore {} is not the pinned {valid_before}; nothing was sent",
                    signed.authorization.valid_before
                ),
            ));
        }
        Ok((header, value, signed))
    }

    /// Reads what the merchant said about settlement.
    pub(super) fn settlement(&self, response: &UpstreamResponse) -> Settled {
        let name = headers::settlement_header(self.version());
        let decoded = response.headers.get(name).map(|v| {
            v.to_str()
                .map_err(|e| e.to_string())
                .and_then(|t| SettlementResponse::from_header(t).map_err(|e| e.to_string()))
        });
        match decoded {
            Some(Ok(s)) if s.success => return Settled::Paid(s),
            Some(Ok(s)) => return Settled::Refused(s.error_reason.or(Some("settlement failed".into()))),
            Some(Err(e)) => tracing::warn!(header = name, error = %e, "undecodable settlement header"),
            None => {}
        }
        let status = response.status;
        if status.is_success() {
            Settled::Delivered
        } else if status.is_client_error() {
            Settled::Refused(self.refusal_reason(response))
        } else {
            Settled::Unknown(format!(
                "the merchant answered HTTP {} without a settlement",
                status.as_u16()
            ))
        }
    }

    /// The x402 error text of a refusal (v2 header, else v1 body).
    pub(super) fn refusal_reason(&self, response: &UpstreamResponse) -> Option<String> {
        if let Some(v) = response.headers.get(headers::PAYMENT_REQUIRED) {
            if let Some(e) = v
                .to_str()
                .ok()
                .and_then(|t| PaymentRequiredV2::from_header(t).ok())
                .and_then(|p| p.error)
            {
                return Some(e);
            }
        }
        let body = response.body.as_ref().ok()?;
        let value: Value = serde_json::from_slice(body).ok()?;
        value
            .get("error")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(200).collect())
    }
}
