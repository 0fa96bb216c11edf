//! Every error the gateway answers with: a code, one HTTP status per code,
//! a message, and the payment facts that explain it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// The error codes, each with its one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 400: the fetch request is malformed.
    InvalidRequest,
    /// 400: the body is not JSON of the right shape.
    InvalidJson,
    /// 415
    UnsupportedMediaType,
    /// 413
    BodyTooLarge,
    /// 401: no valid session token for the named session.
    Unauthorized,
    /// 403: the session exists but is expired or revoked.
    SessionInactive,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 422: the session has no wallet address, or the gateway has no key
    /// for it.
    WalletUnavailable,
    /// 402: the ledger denied the payment (`reason` says why). Nothing was
    /// signed, no hold was left.
    BudgetDenied,
    /// 402: the price is above the per-payment maximum (the gateway's or
    /// the caller's). Nothing was signed, no hold was taken.
    PaymentAboveMaximum,
    /// 402: no offered requirement can be paid (unknown scheme, network or
    /// asset). Nothing was signed, no hold was taken.
    NoPayableRequirement,
    /// 402: the requirement's `maxTimeoutSeconds` is above the gateway's
    /// bound (a signed payment could land that late). Nothing was signed, no
    /// hold was taken.
    TimeoutAboveMaximum,
    /// 400: the request's `tool` is not the tool the upstream is charged to
    /// (see [`crate::tools`]). Nothing was sent, no hold was taken.
    ToolMismatch,
    /// 403: the upstream is not allowed (not in the allowlist, or it is or
    /// resolves to a loopback, private, link-local ... or our own address).
    /// Nothing was sent, no hold was taken.
    UpstreamNotAllowed,
    /// 502: the upstream answered 402 without usable x402 requirements.
    MalformedPaymentRequired,
    /// 409: this idempotency key already paid (see `receipt_id`).
    AlreadyPaid,
    /// 409: a payment for this idempotency key may be in flight or awaits
    /// reconciliation; nothing new was signed.
    PaymentPending,
    /// 409: an earlier attempt with this idempotency key failed and was
    /// released; use a new key to try again.
    PreviousAttemptFailed,
    /// 409: the idempotency key was used for a different payment.
    IdempotencyConflict,
    /// 504: a signed payment left the gateway and no settlement was
    /// confirmed (no answer, or the merchant refused, failed or answered
    /// without a settlement): the merchant can still settle it until
    /// `valid_before`, so the hold stays pinned for reconciliation and the
    /// budget stays reserved. Not a failure: the money may have moved.
    PaymentOutcomeUnknown,
    /// 502: the upstream could not be reached (before any payment).
    UpstreamUnreachable,
    /// 504: the upstream did not answer in time (before any payment).
    UpstreamTimeout,
    /// 502: the upstream's body is larger than the gateway relays.
    ResponseTooLarge,
    /// 503: the ledger could not be reached or had no leader; nothing was
    /// signed.
    LedgerUnavailable,
    /// 504: the ledger's answer is unknown; nothing was signed; retry with
    /// the same idempotency key.
    LedgerOutcomeUnknown,
    /// 502: the ledger refused a call the gateway made.
    LedgerError,
    /// 502: the wallet's signer failed; nothing was sent, the hold was
    /// voided.
    SignerFailed,
    /// 503: too many requests at once.
    Overloaded,
    /// 504: the request took longer than the gateway's deadline.
    Timeout,
    /// 500
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidJson => "invalid_json",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::BodyTooLarge => "body_too_large",
            Code::Unauthorized => "unauthorized",
            Code::SessionInactive => "session_inactive",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::WalletUnavailable => "wallet_unavailable",
            Code::BudgetDenied => "budget_denied",
            Code::PaymentAboveMaximum => "payment_above_maximum",
            Code::NoPayableRequirement => "no_payable_requirement",
            Code::TimeoutAboveMaximum => "max_timeout_above_maximum",
            Code::ToolMismatch => "tool_mismatch",
            Code::UpstreamNotAllowed => "upstream_not_allowed",
            Code::MalformedPaymentRequired => "malformed_payment_required",
            Code::AlreadyPaid => "already_paid",
            Code::PaymentPending => "payment_pending",
            Code::PreviousAttemptFailed => "previous_attempt_failed",
            Code::IdempotencyConflict => "idempotency_conflict",
            Code::PaymentOutcomeUnknown => "payment_outcome_unknown",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::ResponseTooLarge => "response_too_large",
            Code::LedgerUnavailable => "ledger_unavailable",
            Code::LedgerOutcomeUnknown => "ledger_outcome_unknown",
            Code::LedgerError => "ledger_error",
            Code::SignerFailed => "signer_failed",
            Code::Overloaded => "overloaded",
            Code::Timeout => "timeout",
            Code::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidRequest | Code::InvalidJson | Code::ToolMismatch => StatusCode::BAD_REQUEST,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::SessionInactive | Code::UpstreamNotAllowed => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::WalletUnavailable => StatusCode::UNPROCESSABLE_ENTITY,
            Code::BudgetDenied | Code::PaymentAboveMaximum | Code::NoPayableRequirement | Code::TimeoutAboveMaximum => {
                StatusCode::PAYMENT_REQUIRED
            }
            Code::MalformedPaymentRequired
            | Code::UpstreamUnreachable
            | Code::ResponseTooLarge
            | Code::LedgerError
            | Code::SignerFailed => StatusCode::BAD_GATEWAY,
            Code::AlreadyPaid | Code::PaymentPending | Code::PreviousAttemptFailed | Code::IdempotencyConflict => {
                StatusCode::CONFLICT
            }
            Code::PaymentOutcomeUnknown | Code::UpstreamTimeout | Code::LedgerOutcomeUnknown | Code::Timeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Code::LedgerUnavailable | Code::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the offered requirement was, in errors about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementSummary {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    pub asset: String,
    pub amount_atomic: String,
    pub pay_to: String,
}

/// The error body: `{code, message}` plus whatever of these applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// The ledger's denial reason (`session_cap`, `tool_cap`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the denying level had left (decimal, in the session's asset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    /// The merchant's x402 error reason (`insufficient_funds`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// For a payment that left without a confirmed settlement: the signed
    /// `validBefore` (Unix seconds). Until then the merchant can still
    /// settle it; the hold stays pinned at least that long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirement: Option<RequirementSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayError {
    pub code: Code,
    /// Boxed: errors travel through every `Result` of a fetch.
    pub body: Box<ErrorBody>,
}

pub type GatewayResult<T> = Result<T, GatewayError>;

impl GatewayError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        GatewayError {
            code,
            body: Box::new(ErrorBody {
                code: code.as_str().to_string(),
                message: message.into(),
                ..ErrorBody::default()
            }),
        }
    }

    pub fn with(mut self, edit: impl FnOnce(&mut ErrorBody)) -> Self {
        edit(&mut self.body);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.code, self.body.message)
    }
}

impl std::error::Error for GatewayError {}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.body.code, message = %self.body.message, "fetch failed");
        } else {
            tracing::debug!(code = self.body.code, message = %self.body.message, "fetch refused");
        }
        let retry = matches!(self.code, Code::Overloaded | Code::LedgerUnavailable);
        let mut response = (status, Json(*self.body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name() {
        let all = [
            Code::InvalidRequest,
            Code::InvalidJson,
            Code::UnsupportedMediaType,
            Code::BodyTooLarge,
            Code::Unauthorized,
            Code::SessionInactive,
            Code::NotFound,
            Code::MethodNotAllowed,
            Code::WalletUnavailable,
            Code::BudgetDenied,
            Code::PaymentAboveMaximum,
            Code::NoPayableRequirement,
            Code::TimeoutAboveMaximum,
            Code::ToolMismatch,
            Code::UpstreamNotAllowed,
            Code::MalformedPaymentRequired,
            Code::AlreadyPaid,
            Code::PaymentPending,
            Code::PreviousAttemptFailed,
            Code::IdempotencyConflict,
            Code::PaymentOutcomeUnknown,
            Code::UpstreamUnreachable,
            Code::UpstreamTimeout,
            Code::ResponseTooLarge,
            Code::LedgerUnavailable,
            Code::LedgerOutcomeUnknown,
            Code::LedgerError,
            Code::SignerFailed,
            Code::Overloaded,
            Code::Timeout,
            Code::Internal,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(all.iter().all(|c| !c.status().is_success()));
    }
}
