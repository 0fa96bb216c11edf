//! The upstream's answer, as the agent gets it.

use crate::error::{Code, GatewayError, GatewayResult};
use crate::upstream::{self, BodyError, UpstreamResponse};
use crate::wire::{FetchResponse, PaymentInfo};

/// The upstream's answer for the agent.
pub(super) fn relay(response: UpstreamResponse, payment: Option<PaymentInfo>) -> GatewayResult<FetchResponse> {
    let body = match response.body {
        Ok(b) => b,
        Err(e) => {
            let (code, message) = match e {
                BodyError::TooLarge => (
                    Code::ResponseTooLarge,
                    "the upstream's body is larger than the gateway relays".to_string(),
                ),
                BodyError::Failed(m) => (Code::UpstreamUnreachable, format!("reading the upstream's body: {m}")),
            };
            return Err(GatewayError::new(code, message).with(|b| {
                b.upstream_status = Some(response.status.as_u16());
                if let Some(p) = payment {
                    b.authorization_id = Some(p.authorization_id);
                    b.receipt_id = p.receipt_id;
                    b.transaction_hash = p.transaction_hash;
                }
            }));
        }
    };
    let (text, base64) = upstream::relay_body(&body);
    Ok(FetchResponse {
        status: response.status.as_u16(),
        headers: upstream::relay_headers(&response.headers),
        body: text,
        body_base64: base64,
        payment,
    })
}
