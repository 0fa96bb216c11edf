//! Base64 header and JSON body encoding for x402 messages, with typed errors and size limits.
//!
//! Headers are standard-alphabet base64 of UTF-8 JSON. Encoding always pads; decoding accepts
//! padded or unpadded input and ignores surrounding ASCII whitespace.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::types::{
    FacilitatorRequest, PaymentPayload, PaymentPayloadV1, PaymentPayloadV2, PaymentRequiredV1, PaymentRequiredV2,
    SettlementResponse, SupportedResponse, VerifyResponse, X402Version,
};

/// Largest x402 header value accepted for decoding (bytes of base64 text).
pub const HEADER_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Largest JSON body accepted for decoding (bytes), e.g. a v1 402 body.
pub const JSON_BODY_BYTES_MAX: usize = 256 * 1024;

const ENCODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true),
);
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an x402 header value or body could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("input is {len_bytes} bytes, limit {limit_bytes}")]
    TooLarge { len_bytes: usize, limit_bytes: usize },
    #[error("invalid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("x402Version is {found:?}, expected {expected}")]
    VersionMismatch {
        expected: X402Version,
        /// The raw `x402Version` value, `None` when absent or not an integer.
        found: Option<u64>,
    },
}

/// Why an x402 message could not be encoded (only possible for values holding JSON that
/// cannot be serialized).
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("cannot serialize to JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Base64 (standard, padded) of the JSON encoding of `value`.
pub fn encode_header<T: Serialize + ?Sized>(value: &T) -> Result<String, EncodeError> {
    let json = serde_json::to_vec(value)?;
    Ok(ENCODER.encode(json))
}

/// Decodes a base64 header value into raw JSON bytes (size-checked).
pub fn decode_header_bytes(header_value: &str) -> Result<Vec<u8>, DecodeError> {
    let trimmed = header_value.trim_ascii();
    if trimmed.len() > HEADER_VALUE_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            len_bytes: trimmed.len(),
            limit_bytes: HEADER_VALUE_BYTES_MAX,
        });
    }
    Ok(DECODER.decode(trimmed)?)
}

/// An x402 message that travels as a base64 header or JSON body.
pub trait X402Message: Serialize + DeserializeOwned {
    /// The `x402Version` the message must carry, if it carries one.
    const EXPECTED_VERSION: Option<X402Version>;

    /// Encodes as a header value (base64 JSON).
    fn to_header(&self) -> Result<String, EncodeError> {
        encode_header(self)
    }

    /// Decodes a header value (base64 JSON), checking size and `x402Version`.
    fn from_header(header_value: &str) -> Result<Self, DecodeError> {
        let bytes = decode_header_bytes(header_value)?;
        Self::from_json_slice(&bytes)
    }

    /// Decodes a JSON body, checking size and `x402Version`.
    fn from_json_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > JSON_BODY_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len_bytes: bytes.len(),
                limit_bytes: JSON_BODY_BYTES_MAX,
            });
        }
        let value: Value = serde_json::from_slice(bytes)?;
        if let Some(expected) = Self::EXPECTED_VERSION {
            let found = value.get("x402Version").and_then(Value::as_u64);
            if found != Some(u64::from(expected.as_u8())) {
                return Err(DecodeError::VersionMismatch { expected, found });
            }
        }
        Ok(serde_json::from_value(value)?)
    }

    /// Encodes as a JSON body.
    fn to_json_vec(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(serde_json::to_vec(self)?)
    }
}

impl X402Message for PaymentRequiredV1 {
    const EXPECTED_VERSION: Option<X402Version> = Some(X402Version::V1);
}
impl X402Message for PaymentRequiredV2 {
    const EXPECTED_VERSION: Option<X402Version> = Some(X402Version::V2);
}
impl X402Message for PaymentPayloadV1 {
    const EXPECTED_VERSION: Option<X402Version> = Some(X402Version::V1);
}
impl X402Message for PaymentPayloadV2 {
    const EXPECTED_VERSION: Option<X402Version> = Some(X402Version::V2);
}
impl X402Message for PaymentPayload {
    const EXPECTED_VERSION: Option<X402Version> = None;
}
impl X402Message for SettlementResponse {
    const EXPECTED_VERSION: Option<X402Version> = None;
}
impl X402Message for VerifyResponse {
    const EXPECTED_VERSION: Option<X402Version> = None;
}
impl X402Message for SupportedResponse {
    const EXPECTED_VERSION: Option<X402Version> = None;
}
impl X402Message for FacilitatorRequest {
    const EXPECTED_VERSION: Option<X402Version> = None;
}
