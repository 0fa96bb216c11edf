//! Money as integers of the asset's smallest unit ("atomic units"): USDC
//! has 6 decimals, so one dollar is 1,000,000 atomic units. No floats touch
//! money anywhere in the harness.

use crate::error::{BenchError, Result};

/// Decimals of USDC, the asset every benchmark account uses.
pub const USDC_DECIMALS: u32 = 6;
/// [`USDC_DECIMALS`] as the codec takes it.
const USDC_DECIMALS_U8: u8 = USDC_DECIMALS as u8;
/// Atomic units in one dollar.
pub const ATOMIC_PER_DOLLAR: u64 = 10u64.pow(USDC_DECIMALS);
/// Atomic units in one cent.
pub const ATOMIC_PER_CENT: u64 = ATOMIC_PER_DOLLAR / 100;
/// Largest amount the Redis peer can compare exactly: Lua 5.1 numbers are
/// doubles, exact up to 2^53.
pub const LUA_EXACT_ATOMIC_MAX: u64 = 1 << 53;

/// Whole dollars in atomic units.
pub const fn dollars(count: u64) -> u64 {
    count * ATOMIC_PER_DOLLAR
}

/// Cents in atomic units.
pub const fn cents(count: u64) -> u64 {
    count * ATOMIC_PER_CENT
}

/// `10_000` → `"0.01"`, `25_000_000` → `"25"`: the shortest exact decimal.
pub fn to_decimal(atomic: u64) -> String {
    decimal::format_decimal(u128::from(atomic), USDC_DECIMALS_U8, 0)
}

/// Parses a non-negative decimal with at most 6 fractional digits into
/// atomic units: `"25.000000"` → `25_000_000`.
pub fn parse_decimal(text: &str) -> Result<u64> {
    decimal::parse_decimal(text, USDC_DECIMALS_U8)
        .ok()
        .and_then(|units| u64::try_from(units).ok())
        .ok_or_else(|| BenchError::Amount(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_shortest_exact_decimal() {
        assert_eq!(to_decimal(cents(1)), "0.01");
        assert_eq!(to_decimal(dollars(25)), "25");
        assert_eq!(to_decimal(dollars(10) + 5), "10.000005");
        assert_eq!(to_decimal(0), "0");
        assert_eq!(to_decimal(dollars(1_000_000_000)), "1000000000");
    }

    #[test]
    fn parses_what_it_formats() {
        for atomic in [0, 1, 10_000, 25_000_000, 123_456_789, dollars(1_000_000_000)] {
            assert_eq!(parse_decimal(&to_decimal(atomic)).unwrap(), atomic);
        }
        assert_eq!(parse_decimal("25.000000").unwrap(), dollars(25));
        assert_eq!(parse_decimal("0.5").unwrap(), cents(50));
    }

    #[test]
    fn rejects_malformed_amounts() {
        for text in [
            "",
            ".5",
            "-1",
            "1.0000001",
            "1e3",
            "1.2.3",
            "abc",
            "99999999999999999999",
        ] {
            assert!(parse_decimal(text).is_err(), "{text}");
        }
    }
}
