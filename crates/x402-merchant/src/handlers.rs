//! The request handlers: a paid route, and the facilitator's verify, settle
//! and supported endpoints.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use x402::codec::X402Message;
use x402::exact_evm::EXACT_SCHEME;
use x402::{
    headers, verify, ErrorReason, FacilitatorRequest, PaymentPayload, PaymentPayloadV1, PaymentPayloadV2,
    SettlementResponse, SupportedKind, SupportedResponse, VerifyResponse, X402Version,
};

use crate::config::FailureMode;
use crate::protocol::{FACILITATOR_PREFIX, NONCE_REUSED_REASON};

use crate::respond::{
    bad_request, encode_header_or_500, json_body, malformed_payment_required, payment_required, respond,
};
use crate::shared::{SettleOutcome, Shared};

pub(crate) async fn paid(shared: Arc<Shared>, index: usize, request_headers: HeaderMap) -> Response {
    let Some(route) = shared.config.routes.get(index) else {
        // The router only registers indexes of configured routes.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let failure = shared.failure();
    let scheme = match &failure {
        FailureMode::UnknownScheme { scheme } => scheme.as_str(),
        _ => EXACT_SCHEME,
    };
    let header_name = headers::payment_header(route.version);
    let Some(raw) = request_headers.get(header_name) else {
        if failure == FailureMode::InvalidRequirements {
            return malformed_payment_required(&shared, route);
        }
        let error = format!("{header_name} header is required");
        return payment_required(&shared, route, scheme, error, None);
    };
    shared.bump(|s| s.payment_attempts += 1);
    if failure == FailureMode::InvalidRequirements {
        return malformed_payment_required(&shared, route);
    }
    let Ok(raw) = raw.to_str() else {
        return bad_request(&shared, format!("{header_name} is not visible ASCII"));
    };
    let decoded = match route.version {
        X402Version::V1 => PaymentPayloadV1::from_header(raw).map(PaymentPayload::V1),
        X402Version::V2 => PaymentPayloadV2::from_header(raw).map(PaymentPayload::V2),
    };
    let payload = match decoded {
        Ok(payload) => payload,
        Err(error) => return bad_request(&shared, format!("{header_name}: {error}")),
    };
    if failure == FailureMode::HangBeforeSettle {
        return shared.hang().await;
    }
    let requirements = shared.requirements(route, scheme);
    let verified = match verify(&payload, &requirements, shared.now()) {
        Ok(verified) => verified,
        Err(error) => {
            let reason = error.reason().as_str();
            tracing::info!(%error, reason, route = %route.path, "x402 merchant rejected a payment");
            shared.reject(reason);
            return payment_required(&shared, route, scheme, reason.to_owned(), None);
        }
    };
    if let FailureMode::AnswerAfterPayment { status, settle } = failure {
        let settled = settle
            && matches!(
                shared.settle(&route.path, &verified, &FailureMode::None),
                SettleOutcome::Settled(_)
            );
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        tracing::info!(%status, settled, route = %route.path, "x402 merchant answers without a settlement header");
        return respond(
            status,
            Vec::new(),
            json_body(&json!({ "error": "payment_not_accepted", "message": "try again later" })),
        );
    }
    let network = shared.config.network.wire_name(route.version).to_owned();
    match shared.settle(&route.path, &verified, &failure) {
        SettleOutcome::Settled(record) => {
            if failure == FailureMode::HangAfterSettle {
                return shared.hang().await;
            }
            let settlement = SettlementResponse {
                success: true,
                error_reason: None,
                transaction: record.transaction.to_string(),
                network,
                payer: Some(record.payer.to_checksum(None)),
                amount: match route.version {
                    X402Version::V1 => None,
                    X402Version::V2 => Some(record.value),
                },
                extensions: None,
            };
            match encode_header_or_500(&settlement) {
                Ok(value) => respond(
                    StatusCode::OK,
                    vec![(headers::settlement_header(route.version), value)],
                    json_body(&route.body),
                ),
                Err(status) => status.into_response(),
            }
        }
        SettleOutcome::NonceReused => payment_required(&shared, route, scheme, NONCE_REUSED_REASON.to_owned(), None),
        SettleOutcome::Failed(reason) => {
            let settlement = SettlementResponse {
                success: false,
                error_reason: Some(reason.clone()),
                transaction: String::new(),
                network,
                payer: Some(verified.payer.to_checksum(None)),
                amount: None,
                extensions: None,
            };
            payment_required(&shared, route, scheme, reason, Some(settlement))
        }
        SettleOutcome::LedgerFull => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            Vec::new(),
            json_body(&json!({
                "error": ErrorReason::UnexpectedSettleError.as_str(),
                "message": "settled_payments_max reached",
            })),
        ),
    }
}

/// Decodes a facilitator request body; on failure, the `400` answer to send.
pub(crate) fn facilitator_request(shared: &Shared, body: &[u8]) -> Result<FacilitatorRequest, VerifyResponse> {
    FacilitatorRequest::from_json_slice(body).map_err(|error| {
        let reason = ErrorReason::InvalidPayload.as_str();
        shared.reject(reason);
        tracing::info!(%error, "x402 facilitator got an undecodable request");
        VerifyResponse {
            is_valid: false,
            invalid_reason: Some(reason.to_owned()),
            payer: None,
        }
    })
}

pub(crate) fn facilitator_verify(shared: &Shared, body: &[u8]) -> Response {
    let request = match facilitator_request(shared, body) {
        Ok(request) => request,
        Err(answer) => return respond(StatusCode::BAD_REQUEST, Vec::new(), json_body(&answer)),
    };
    let answer = match verify(&request.payment_payload, &request.payment_requirements, shared.now()) {
        Ok(verified) => {
            let reused = shared.ledger().used_nonces.contains(&(verified.payer, verified.nonce));
            VerifyResponse {
                is_valid: !reused,
                invalid_reason: reused.then(|| NONCE_REUSED_REASON.to_owned()),
                payer: Some(verified.payer.to_checksum(None)),
            }
        }
        Err(error) => VerifyResponse {
            is_valid: false,
            invalid_reason: Some(error.reason().as_str().to_owned()),
            payer: Some(request.payment_payload.exact_evm().authorization.from.to_checksum(None)),
        },
    };
    respond(StatusCode::OK, Vec::new(), json_body(&answer))
}

pub(crate) fn facilitator_settle(shared: &Shared, body: &[u8]) -> Response {
    let request = match facilitator_request(shared, body) {
        Ok(request) => request,
        Err(answer) => return respond(StatusCode::BAD_REQUEST, Vec::new(), json_body(&answer)),
    };
    shared.bump(|s| s.payment_attempts += 1);
    let version = request.x402_version;
    let network = request.payment_payload.network().to_owned();
    let failed = |reason: &str, payer: Option<String>| SettlementResponse {
        success: false,
        error_reason: Some(reason.to_owned()),
        transaction: String::new(),
        network: network.clone(),
        payer,
        amount: None,
        extensions: None,
    };
    let answer = match verify(&request.payment_payload, &request.payment_requirements, shared.now()) {
        Err(error) => {
            let reason = error.reason().as_str();
            shared.reject(reason);
            let payer = request.payment_payload.exact_evm().authorization.from;
            failed(reason, Some(payer.to_checksum(None)))
        }
        Ok(verified) => {
            let payer = Some(verified.payer.to_checksum(None));
            let route = format!("{FACILITATOR_PREFIX}/settle");
            match shared.settle(&route, &verified, &shared.failure()) {
                SettleOutcome::Settled(record) => SettlementResponse {
                    success: true,
                    error_reason: None,
                    transaction: record.transaction.to_string(),
                    network: verified.network.wire_name(version).to_owned(),
                    payer,
                    amount: (version == X402Version::V2).then_some(record.value),
                    extensions: None,
                },
                SettleOutcome::NonceReused => failed(NONCE_REUSED_REASON, payer),
                SettleOutcome::Failed(reason) => failed(&reason, payer),
                SettleOutcome::LedgerFull => failed(ErrorReason::UnexpectedSettleError.as_str(), payer),
            }
        }
    };
    respond(StatusCode::OK, Vec::new(), json_body(&answer))
}

pub(crate) fn facilitator_supported(shared: &Shared) -> Response {
    let network = shared.config.network;
    let kinds = [X402Version::V1, X402Version::V2]
        .into_iter()
        .map(|version| SupportedKind {
            x402_version: version,
            scheme: EXACT_SCHEME.to_owned(),
            network: network.wire_name(version).to_owned(),
            extra: None,
        })
        .collect();
    let answer = SupportedResponse {
        kinds,
        extensions: Vec::new(),
        signers: Default::default(),
    };
    respond(StatusCode::OK, Vec::new(), json_body(&answer))
}
