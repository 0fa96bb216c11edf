//! Building answers: JSON responses with headers, 402s with the route's
//! requirements (well-formed or deliberately malformed), 400s.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use x402::codec::X402Message;
use x402::{headers, ErrorReason, PaymentRequiredV1, PaymentRequiredV2, SettlementResponse, X402Version};

use crate::config::RouteConfig;

use crate::shared::Shared;

/// Builds a JSON response with extra headers; 500 if a header cannot be represented (only
/// possible for a bug, since values are base64).
pub(crate) fn respond(status: StatusCode, extra_headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let map = response.headers_mut();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in extra_headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            (Ok(name), Ok(value)) => {
                map.insert(name, value);
            }
            _ => {
                tracing::error!(name, "x402 merchant built an unrepresentable header");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    response
}

pub(crate) fn json_body(value: &impl serde::Serialize) -> Vec<u8> {
    // Serializing our own types and `Value`s cannot fail (string keys only); an empty
    // body is the harmless fallback.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Encodes a header value; a failure is a bug (our own types always serialize), answered 500.
pub(crate) fn encode_header_or_500<T: X402Message>(message: &T) -> Result<String, StatusCode> {
    message.to_header().map_err(|error| {
        tracing::error!(%error, "x402 merchant cannot encode a header");
        StatusCode::INTERNAL_SERVER_ERROR
    })
}

/// 402 with the route's requirements; `error` is the human/reason text, and `settlement`
/// an optional failure settlement header.
pub(crate) fn payment_required(
    shared: &Shared,
    route: &RouteConfig,
    scheme: &str,
    error: String,
    settlement: Option<SettlementResponse>,
) -> Response {
    shared.bump(|s| s.payment_required_served += 1);
    let mut extra_headers = Vec::new();
    if let Some(settlement) = settlement {
        match encode_header_or_500(&settlement) {
            Ok(value) => extra_headers.push((headers::settlement_header(route.version), value)),
            Err(status) => return status.into_response(),
        }
    }
    match route.version {
        X402Version::V1 => {
            let body = PaymentRequiredV1 {
                x402_version: X402Version::V1,
                error: Some(error),
                accepts: vec![shared.requirement_v1(route, scheme)],
            };
            respond(StatusCode::PAYMENT_REQUIRED, extra_headers, json_body(&body))
        }
        X402Version::V2 => {
            let required = PaymentRequiredV2 {
                x402_version: X402Version::V2,
                error: Some(error),
                resource: shared.resource_info(route),
                accepts: vec![shared.requirement_v2(route, scheme)],
                extensions: None,
            };
            match encode_header_or_500(&required) {
                Ok(value) => extra_headers.push((headers::PAYMENT_REQUIRED, value)),
                Err(status) => return status.into_response(),
            }
            respond(StatusCode::PAYMENT_REQUIRED, extra_headers, b"{}".to_vec())
        }
    }
}

pub(crate) fn malformed_payment_required(shared: &Shared, route: &RouteConfig) -> Response {
    shared.bump(|s| s.payment_required_served += 1);
    match route.version {
        X402Version::V1 => {
            let body = json!({
                "x402Version": 1,
                "error": "X-PAYMENT header is required",
                "accepts": [{
                    "scheme": "exact",
                    "network": shared.config.network.v1_name(),
                    "maxAmountRequired": format!("-{}", route.price_atomic),
                    "resource": format!("{}{}", shared.base_url, route.path),
                    "description": route.description,
                    "maxTimeoutSeconds": shared.config.max_timeout_seconds,
                }],
            });
            respond(StatusCode::PAYMENT_REQUIRED, Vec::new(), json_body(&body))
        }
        X402Version::V2 => respond(
            StatusCode::PAYMENT_REQUIRED,
            vec![(headers::PAYMENT_REQUIRED, "%%% not base64 %%%".to_owned())],
            b"{}".to_vec(),
        ),
    }
}

pub(crate) fn bad_request(shared: &Shared, message: String) -> Response {
    let reason = ErrorReason::InvalidPayload.as_str();
    shared.reject(reason);
    respond(
        StatusCode::BAD_REQUEST,
        Vec::new(),
        json_body(&json!({ "error": reason, "message": message })),
    )
}
