//! Checked parsing of the decimal strings x402 uses for atomic token amounts and Unix times,
//! through the workspace's one codec (the `decimal` crate), with x402's own error type.
//!
//! Only plain ASCII digits are accepted: no sign, no whitespace, no hex, no exponent, no
//! fraction. Leading zeros are accepted (`"010"` is 10).

use thiserror::Error;

/// Longest decimal string accepted (bytes). `u128::MAX` has 39 digits; the slack allows
/// leading zeros while bounding the work done on hostile input.
pub const DECIMAL_STRING_BYTES_MAX: usize = decimal::TEXT_BYTES_MAX;

/// Why a decimal string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("decimal string is empty")]
    Empty,
    #[error("decimal string has a sign; only unsigned digits are allowed")]
    Signed,
    #[error("decimal string has a non-digit character at byte {index}")]
    NonDigit { index: usize },
    #[error("decimal string is {len_bytes} bytes long, limit {limit_bytes}")]
    TooLong { len_bytes: usize, limit_bytes: usize },
    #[error("decimal value overflows {bits} bits")]
    Overflow { bits: u32 },
}

/// Parses an atomic-unit amount (e.g. `"10000"` = 0.01 USDC) into `u128`.
pub fn parse_atomic_amount(text: &str) -> Result<u128, AmountError> {
    use decimal::DecimalError as D;
    decimal::parse_atomic(text).map_err(|e| match e {
        D::Empty => AmountError::Empty,
        D::TooLong { len_bytes, limit_bytes } => AmountError::TooLong { len_bytes, limit_bytes },
        D::Signed { .. } => AmountError::Signed,
        D::NonDigit { index } => AmountError::NonDigit { index },
        // Only decimal parsing reports these, for text with a point: to an
        // integer parser the point is the first non-digit.
        D::EmptyPart | D::TooPrecise { .. } => AmountError::NonDigit {
            index: text.find('.').unwrap_or(0),
        },
        D::Overflow => AmountError::Overflow { bits: 128 },
    })
}

/// Parses a Unix time in seconds (e.g. `validBefore`) into `u64`.
pub fn parse_unix_seconds(text: &str) -> Result<u64, AmountError> {
    let wide = parse_atomic_amount(text)?;
    u64::try_from(wide).map_err(|_| AmountError::Overflow { bits: 64 })
}

/// serde adapter: `u128` <-> JSON decimal string (numbers are rejected).
pub(crate) mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_atomic_amount(&text).map_err(serde::de::Error::custom)
    }
}

/// serde adapter: `Option<u128>` <-> optional JSON decimal string.
pub(crate) mod opt_u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u128>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.collect_str(v),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u128>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::parse_atomic_amount(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// serde adapter: `u64` Unix seconds <-> JSON decimal string.
pub(crate) mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_unix_seconds(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_digits_and_leading_zeros() {
        assert_eq!(parse_atomic_amount("0"), Ok(0));
        assert_eq!(parse_atomic_amount("10000"), Ok(10_000));
        assert_eq!(parse_atomic_amount("007"), Ok(7));
        assert_eq!(
            parse_atomic_amount("340282366920938463463374607431768211455"),
            Ok(u128::MAX)
        );
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!(parse_atomic_amount(""), Err(AmountError::Empty));
        assert_eq!(parse_atomic_amount("-1"), Err(AmountError::Signed));
        assert_eq!(parse_atomic_amount("+1"), Err(AmountError::Signed));
        assert_eq!(parse_atomic_amount("1.5"), Err(AmountError::NonDigit { index: 1 }));
        assert_eq!(parse_atomic_amount(" 1"), Err(AmountError::NonDigit { index: 0 }));
        assert_eq!(parse_atomic_amount("0x10"), Err(AmountError::NonDigit { index: 1 }));
        assert_eq!(parse_atomic_amount("1e6"), Err(AmountError::NonDigit { index: 1 }));
        assert_eq!(parse_atomic_amount("١"), Err(AmountError::NonDigit { index: 0 }));
        assert_eq!(
            parse_atomic_amount("340282366920938463463374607431768211456"),
            Err(AmountError::Overflow { bits: 128 })
        );
        let long = "0".repeat(DECIMAL_STRING_BYTES_MAX + 1);
        assert!(matches!(parse_atomic_amount(&long), Err(AmountError::TooLong { .. })));
    }

    #[test]
    fn unix_seconds_are_u64() {
        assert_eq!(parse_unix_seconds("1740672154"), Ok(1_740_672_154));
        assert_eq!(
            parse_unix_seconds("18446744073709551616"),
            Err(AmountError::Overflow { bits: 64 })
        );
    }
}
