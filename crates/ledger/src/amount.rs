//! Exact money: integers in an asset's smallest unit, and the decimal strings
//! the API speaks (through the workspace's one codec, the `decimal` crate,
//! with the API's limits and messages). No floats anywhere.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most decimals an asset may have (18 covers ETH-style tokens; 30 leaves
/// headroom while 10^30 still fits comfortably in `u128`).
pub const ASSET_DECIMALS_MAX: u8 = 30;

/// The longest decimal string the parser looks at; anything longer cannot be
/// a valid amount of any asset (u128::MAX has 39 digits).
pub const AMOUNT_TEXT_BYTES_MAX: usize = 64;

/// An amount of an asset in its smallest unit (for USDC with 6 decimals,
/// `Amount(1)` is 0.000001 USDC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Amount(pub u128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn units(self) -> u128 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Formats with the asset's decimals, trailing zeros trimmed down to two
    /// places (`25_000_000` with 6 decimals is `"25.00"`, `1` is `"0.000001"`).
    pub fn to_decimal_string(self, decimals: u8) -> String {
        decimal::format_decimal(self.0, decimals, decimal::API_PLACES_MIN)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a decimal string is not an amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount is longer than {AMOUNT_TEXT_BYTES_MAX} characters")]
    TooLong,
    #[error("amount must be a plain decimal number such as \"25.00\" (digits, at most one '.', no sign, exponent or spaces)")]
    Malformed,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount has {found} decimal places but the asset has {allowed}")]
    TooPrecise { found: usize, allowed: u8 },
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount is too large")]
    Overflow,
}

impl From<decimal::DecimalError> for AmountError {
    fn from(e: decimal::DecimalError) -> Self {
        use decimal::DecimalError as D;
        match e {
            D::Empty => AmountError::Empty,
            D::TooLong { .. } => AmountError::TooLong,
            D::Signed { negative: true } => AmountError::Negative,
            D::Signed { negative: false } | D::NonDigit { .. } | D::EmptyPart => AmountError::Malformed,
            D::TooPrecise { found, allowed } => AmountError::TooPrecise { found, allowed },
            D::Overflow => AmountError::Overflow,
        }
    }
}

/// Parses a decimal string (`"25"`, `"25.5"`, `"0.000001"`) into the asset's
/// smallest unit. Rejects signs, exponents, whitespace, more decimals than the
/// asset has, and values that do not fit. Zero is allowed here; callers that
/// need a positive amount use [`parse_positive`].
pub fn parse_decimal(text: &str, decimals: u8) -> Result<Amount, AmountError> {
    check_length(text)?;
    Ok(Amount(decimal::parse_decimal(text, decimals)?))
}

/// The API's own limit, stricter than the codec's.
fn check_length(text: &str) -> Result<(), AmountError> {
    if text.len() > AMOUNT_TEXT_BYTES_MAX {
        return Err(AmountError::TooLong);
    }
    Ok(())
}

/// The places after the point in a decimal string (0 without a point).
fn fraction_places(text: &str) -> usize {
    text.split_once('.').map_or(0, |(_, f)| f.len())
}

/// [`parse_decimal`], and the amount must be greater than zero.
pub fn parse_positive(text: &str, decimals: u8) -> Result<Amount, AmountError> {
    let amount = parse_decimal(text, decimals)?;
    if amount.is_zero() {
        return Err(AmountError::Zero);
    }
    Ok(amount)
}

/// Parses an integer string of smallest units (`"10000"` = 0.01 USDC), the
/// form x402 uses on the wire.
pub fn parse_atomic(text: &str) -> Result<Amount, AmountError> {
    // A point is malformed before anything else (`"-1.0"` too).
    if text.contains('.') {
        return Err(AmountError::Malformed);
    }
    check_length(text)?;
    Ok(Amount(decimal::parse_atomic(text)?))
}

/// An amount as a request states it: a decimal string in the asset's unit, or
/// an integer count of smallest units. The ledger resolves it against the
/// session's asset, so a node need not know the session to forward it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AmountInput {
    Decimal(String),
    Atomic(Amount),
}

impl AmountInput {
    /// Syntax check that needs no asset: what a node can reject before
    /// proposing anything.
    pub fn check_syntax(&self) -> Result<(), AmountError> {
        match self {
            // Checked at the places the text itself has (at most
            // ASSET_DECIMALS_MAX): scaling to the maximum decimals here would
            // refuse large amounts of assets with few decimals (at 30 places,
            // anything above ~340 million overflows u128) that `resolve`
            // accepts. If the amount fits at the session's decimals, it fits
            // at its own, which are no more.
            AmountInput::Decimal(text) => {
                let places = fraction_places(text);
                if places > usize::from(ASSET_DECIMALS_MAX) {
                    return Err(AmountError::TooPrecise {
                        found: places,
                        allowed: ASSET_DECIMALS_MAX,
                    });
                }
                let decimals = u8::try_from(places).unwrap_or(ASSET_DECIMALS_MAX);
                parse_positive(text, decimals).map(|_| ())
            }
            AmountInput::Atomic(a) if a.is_zero() => Err(AmountError::Zero),
            AmountInput::Atomic(_) => Ok(()),
        }
    }

    pub fn resolve(&self, decimals: u8) -> Result<Amount, AmountError> {
        match self {
            AmountInput::Decimal(text) => parse_positive(text, decimals),
            AmountInput::Atomic(a) if a.is_zero() => Err(AmountError::Zero),
            AmountInput::Atomic(a) => Ok(*a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dollars_into_units() {
        assert_eq!(parse_decimal("25.00", 6), Ok(Amount(25_000_000)));
        assert_eq!(parse_decimal("25", 6), Ok(Amount(25_000_000)));
        assert_eq!(parse_decimal("0.000001", 6), Ok(Amount(1)));
        assert_eq!(parse_decimal("007.5", 2), Ok(Amount(750)));
        assert_eq!(parse_decimal("3", 0), Ok(Amount(3)));
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        for bad in [
            "", "-1", "+1", "1e3", " 1", "1 ", "1.", ".5", "1..2", "1.2.3", "abc", "0x10", "1,5", "١",
        ] {
            assert!(parse_decimal(bad, 6).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_decimal("0.0000001", 6),
            Err(AmountError::TooPrecise { found: 7, allowed: 6 })
        );
        assert_eq!(
            parse_decimal("1.5", 0),
            Err(AmountError::TooPrecise { found: 1, allowed: 0 })
        );
        assert_eq!(parse_positive("0.00", 6), Err(AmountError::Zero));
        assert_eq!(parse_decimal("-0.01", 6), Err(AmountError::Negative));
        assert_eq!(
            parse_decimal("340282366920938463463374607431768211456", 0),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            parse_decimal("340282366920938463463374607431768211455", 1),
            Err(AmountError::Overflow)
        );
        assert_eq!(parse_decimal(&"1".repeat(65), 0), Err(AmountError::TooLong));
        assert_eq!(parse_atomic("1.0"), Err(AmountError::Malformed));
    }

    #[test]
    fn formats_with_at_least_two_places() {
        assert_eq!(Amount(25_000_000).to_decimal_string(6), "25.00");
        assert_eq!(Amount(10_500_000).to_decimal_string(6), "10.50");
        assert_eq!(Amount(1).to_decimal_string(6), "0.000001");
        assert_eq!(Amount(0).to_decimal_string(6), "0.00");
        assert_eq!(Amount(7).to_decimal_string(0), "7");
        assert_eq!(Amount(7).to_decimal_string(1), "0.7");
        assert_eq!(Amount(123_456_789).to_decimal_string(2), "1234567.89");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(units in proptest::num::u128::ANY, decimals in 0u8..=ASSET_DECIMALS_MAX) {
            let text = Amount(units).to_decimal_string(decimals);
            // Values near u128::MAX with many decimals still round-trip: the
            // formatted text has at most `decimals` places.
            proptest::prop_assert_eq!(parse_decimal(&text, decimals), Ok(Amount(units)));
        }
    }
}
