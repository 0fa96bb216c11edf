//! x402 error reason codes (facilitator `invalidReason` / `errorReason`).

/// Standard x402 error reason codes. Wire fields keep the raw string (servers may send codes
/// this crate does not know); use [`ErrorReason::parse`] to classify one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    InsufficientFunds,
    InvalidExactEvmPayloadAuthorizationValidAfter,
    InvalidExactEvmPayloadAuthorizationValidBefore,
    InvalidExactEvmPayloadAuthorizationValue,
    InvalidExactEvmPayloadAuthorizationValueMismatch,
    InvalidExactEvmPayloadSignature,
    InvalidExactEvmPayloadRecipientMismatch,
    InvalidNetwork,
    InvalidPayload,
    InvalidPaymentRequirements,
    InvalidScheme,
    UnsupportedScheme,
    InvalidX402Version,
    InvalidTransactionState,
    UnexpectedVerifyError,
    UnexpectedSettleError,
}

impl ErrorReason {
    /// Every known code.
    pub const ALL: [ErrorReason; 16] = [
        ErrorReason::InsufficientFunds,
        ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter,
        ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore,
        ErrorReason::InvalidExactEvmPayloadAuthorizationValue,
        ErrorReason::InvalidExactEvmPayloadAuthorizationValueMismatch,
        ErrorReason::InvalidExactEvmPayloadSignature,
        ErrorReason::InvalidExactEvmPayloadRecipientMismatch,
        ErrorReason::InvalidNetwork,
        ErrorReason::InvalidPayload,
        ErrorReason::InvalidPaymentRequirements,
        ErrorReason::InvalidScheme,
        ErrorReason::UnsupportedScheme,
        ErrorReason::InvalidX402Version,
        ErrorReason::InvalidTransactionState,
        ErrorReason::UnexpectedVerifyError,
        ErrorReason::UnexpectedSettleError,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorReason::InsufficientFunds => "insufficient_funds",
            ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter => {
                "invalid_exact_evm_payload_authorization_valid_after"
            }
            ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore => {
                "invalid_exact_evm_payload_authorization_valid_before"
            }
            ErrorReason::InvalidExactEvmPayloadAuthorizationValue => "invalid_exact_evm_payload_authorization_value",
            ErrorReason::InvalidExactEvmPayloadAuthorizationValueMismatch => {
                "invalid_exact_evm_payload_authorization_value_mismatch"
            }
            ErrorReason::InvalidExactEvmPayloadSignature => "invalid_exact_evm_payload_signature",
            ErrorReason::InvalidExactEvmPayloadRecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            ErrorReason::InvalidNetwork => "invalid_network",
            ErrorReason::InvalidPayload => "invalid_payload",
            ErrorReason::InvalidPaymentRequirements => "invalid_payment_requirements",
            ErrorReason::InvalidScheme => "invalid_scheme",
            ErrorReason::UnsupportedScheme => "unsupported_scheme",
            ErrorReason::InvalidX402Version => "invalid_x402_version",
            ErrorReason::InvalidTransactionState => "invalid_transaction_state",
            ErrorReason::UnexpectedVerifyError => "unexpected_verify_error",
            ErrorReason::UnexpectedSettleError => "unexpected_settle_error",
        }
    }

    /// Classifies a wire code; `None` for codes this crate does not know.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in ErrorReason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate code {r}");
            assert_eq!(ErrorReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(ErrorReason::parse("made_up"), None);
    }
}
