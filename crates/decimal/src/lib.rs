//! Exact decimal text for money held as integers of an asset's smallest unit
//! ("atomic units", `u128`): with 6 decimals, `"25.5"` is `25_500_000`. The
//! workspace's one codec between the two (ledger, x402, gateway and bench
//! all use it); no floats, no panics, no dependency but `thiserror`.
//!
//! Text is plain ASCII digits, and in a decimal at most one `.` with digits
//! on both sides: no sign, exponent, whitespace, separator or non-ASCII
//! digit. Leading zeros are accepted (`"007.5"`). Every check happens before
//! any arithmetic, so a malformed text is reported as malformed even when its
//! digits would also overflow.

/// The longest text either parser looks at. `u128::MAX` has 39 digits; the
/// slack allows leading zeros while bounding the work done on hostile input.
/// Callers with a stricter limit check it first.
pub const TEXT_BYTES_MAX: usize = 80;

/// The fewest fraction digits spendcap's API writes an amount with
/// (`"25.00"`, `"0.50"`), when the asset has that many: pass it to
/// [`format_decimal`] wherever text must match what the API shows.
pub const API_PLACES_MIN: u8 = 2;

/// Why a text is not an amount. Callers map it to their own errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("amount is empty")]
    Empty,
    #[error("amount is {len_bytes} bytes long, limit {limit_bytes}")]
    TooLong { len_bytes: usize, limit_bytes: usize },
    /// The first character is `-` (`negative`) or `+`.
    #[error("amount has a sign; only unsigned digits are allowed")]
    Signed { negative: bool },
    /// The first character that is neither a digit nor a decimal's one `.`.
    #[error("amount has a character other than a digit (or a decimal's one '.') at byte {index}")]
    NonDigit { index: usize },
    /// `".5"`, `"1."` or `"."`.
    #[error("amount needs digits on both sides of its '.'")]
    EmptyPart,
    #[error("amount has {found} decimal places, at most {allowed} allowed")]
    TooPrecise { found: usize, allowed: u8 },
    #[error("amount does not fit in 128 bits")]
    Overflow,
}

/// Parses a decimal (`"25"`, `"25.5"`, `"0.000001"`) with at most `decimals`
/// fraction digits into atomic units: exact, never rounded. Zero is an
/// amount; callers that need a positive one check it.
pub fn parse_decimal(text: &str, decimals: u8) -> Result<u128, DecimalError> {
    check_unsigned(text)?;
    let (int_part, frac_part) = split_point(text)?;
    let too_precise = DecimalError::TooPrecise {
        found: frac_part.len(),
        allowed: decimals,
    };
    let missing = usize::from(decimals).checked_sub(frac_part.len()).ok_or(too_precise)?;
    let units = digits_value(int_part.bytes().chain(frac_part.bytes()))?;
    if units == 0 {
        return Ok(0);
    }
    let missing = u32::try_from(missing).map_err(|_| DecimalError::Overflow)?;
    let scale = 10u128.checked_pow(missing).ok_or(DecimalError::Overflow)?;
    units.checked_mul(scale).ok_or(DecimalError::Overflow)
}

/// Parses an integer count of atomic units (`"10000"` is 0.01 USDC), the
/// form x402 uses on the wire. A `.` is a [`DecimalError::NonDigit`].
pub fn parse_atomic(text: &str) -> Result<u128, DecimalError> {
    check_unsigned(text)?;
    if let Some(index) = text.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(DecimalError::NonDigit { index });
    }
    digits_value(text.bytes())
}

/// Formats atomic units as a decimal with `decimals` places, trailing zeros
/// trimmed but at least `places_min` fraction digits kept (never more than
/// `decimals`). With [`API_PLACES_MIN`] (the API's form): `25_000_000` at 6
/// decimals is `"25.00"` and `1` is `"0.000001"`; with 0 (the shortest form)
/// they are `"25"` and `"0.000001"`. [`parse_decimal`] reads it back exactly.
pub fn format_decimal(units: u128, decimals: u8, places_min: u8) -> String {
    let digits = units.to_string();
    let decimals = usize::from(decimals);
    if decimals == 0 {
        return digits;
    }
    // At least one integer digit: left-pad with zeros to `decimals + 1`.
    let padded = if digits.len() <= decimals {
        format!("{}{digits}", "0".repeat(decimals + 1 - digits.len()))
    } else {
        digits
    };
    // Every byte is an ASCII digit, so any split lands on a char boundary.
    let split = padded.len().saturating_sub(decimals);
    let (int_part, frac_part) = (padded.get(..split).unwrap_or("0"), padded.get(split..).unwrap_or(""));
    let keep = frac_part
        .trim_end_matches('0')
        .len()
        .max(usize::from(places_min).min(decimals));
    match frac_part.get(..keep) {
        Some(frac) if !frac.is_empty() => format!("{int_part}.{frac}"),
        _ => int_part.to_string(),
    }
}

/// Not empty, not longer than [`TEXT_BYTES_MAX`], no leading sign.
fn check_unsigned(text: &str) -> Result<(), DecimalError> {
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    if text.len() > TEXT_BYTES_MAX {
        return Err(DecimalError::TooLong {
            len_bytes: text.len(),
            limit_bytes: TEXT_BYTES_MAX,
        });
    }
    match text.as_bytes().first() {
        Some(b'-') => Err(DecimalError::Signed { negative: true }),
        Some(b'+') => Err(DecimalError::Signed { negative: false }),
        _ => Ok(()),
    }
}

/// The digits before and after the one optional `.`, both non-empty (the
/// fraction is empty only without a point).
fn split_point(text: &str) -> Result<(&str, &str), DecimalError> {
    let mut point = None;
    for (index, b) in text.bytes().enumerate() {
        match b {
            b'0'..=b'9' => {}
            b'.' if point.is_none() => point = Some(index),
            _ => return Err(DecimalError::NonDigit { index }),
        }
    }
    let (int_part, frac_part) = match point {
        Some(at) => (text.get(..at).unwrap_or(""), text.get(at + 1..).unwrap_or("")),
        None => (text, ""),
    };
    if int_part.is_empty() || (point.is_some() && frac_part.is_empty()) {
        return Err(DecimalError::EmptyPart);
    }
    Ok((int_part, frac_part))
}

/// The integer that ASCII digits spell, if it fits in `u128`.
fn digits_value(digits: impl Iterator<Item = u8>) -> Result<u128, DecimalError> {
    let mut units: u128 = 0;
    for b in digits {
        let digit = b.wrapping_sub(b'0');
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(u128::from(digit)))
            .ok_or(DecimalError::Overflow)?;
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const U128_MAX_TEXT: &str = "340282366920938463463374607431768211455";
    const U128_MAX_PLUS_ONE_TEXT: &str = "340282366920938463463374607431768211456";

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(parse_decimal("25.00", 6), Ok(25_000_000));
        assert_eq!(parse_decimal("25", 6), Ok(25_000_000));
        assert_eq!(parse_decimal("10.5", 6), Ok(10_500_000));
        assert_eq!(parse_decimal("0.000001", 6), Ok(1));
        assert_eq!(parse_decimal("007.5", 2), Ok(750));
        assert_eq!(parse_decimal("3", 0), Ok(3));
        assert_eq!(parse_decimal("0.00", 6), Ok(0));
        assert_eq!(parse_decimal(U128_MAX_TEXT, 0), Ok(u128::MAX));
        assert_eq!(
            parse_decimal("34028236692093846346337460743176821145.5", 1),
            Ok(u128::MAX)
        );
        // Zero fits at any scale.
        assert_eq!(parse_decimal("0", 200), Ok(0));
    }

    #[test]
    fn refuses_what_is_not_a_decimal_with_its_reason() {
        use DecimalError::*;
        let cases: [(&str, u8, DecimalError); 20] = [
            ("", 6, Empty),
            ("-1", 6, Signed { negative: true }),
            ("-0.01", 6, Signed { negative: true }),
            ("-x", 6, Signed { negative: true }),
            ("+1", 6, Signed { negative: false }),
            ("1e3", 6, NonDigit { index: 1 }),
            (" 1", 6, NonDigit { index: 0 }),
            ("1 ", 6, NonDigit { index: 1 }),
            ("1..2", 6, NonDigit { index: 2 }),
            ("1.2.3", 6, NonDigit { index: 3 }),
            ("abc", 6, NonDigit { index: 0 }),
            ("0x10", 6, NonDigit { index: 1 }),
            ("1,5", 6, NonDigit { index: 1 }),
            ("١", 6, NonDigit { index: 0 }),
            ("1.", 6, EmptyPart),
            (".5", 6, EmptyPart),
            (".", 6, EmptyPart),
            ("0.0000001", 6, TooPrecise { found: 7, allowed: 6 }),
            ("1.5", 0, TooPrecise { found: 1, allowed: 0 }),
            (U128_MAX_PLUS_ONE_TEXT, 0, Overflow),
        ];
        for (text, decimals, error) in cases {
            assert_eq!(parse_decimal(text, decimals), Err(error), "{text:?}");
        }
        assert_eq!(parse_decimal(U128_MAX_TEXT, 1), Err(Overflow));
        assert_eq!(parse_decimal(U128_MAX_TEXT, 6), Err(Overflow));
        assert_eq!(parse_decimal("1", 39), Err(Overflow));
        // Malformed wins over overflow and over too many places.
        assert_eq!(
            parse_decimal(&format!("{U128_MAX_PLUS_ONE_TEXT}x"), 0),
            Err(NonDigit { index: 39 })
        );
        assert_eq!(parse_decimal("0.0000001.", 6), Err(NonDigit { index: 9 }));
        let long = "1".repeat(TEXT_BYTES_MAX + 1);
        assert_eq!(
            parse_decimal(&long, 0),
            Err(TooLong {
                len_bytes: TEXT_BYTES_MAX + 1,
                limit_bytes: TEXT_BYTES_MAX
            })
        );
    }

    #[test]
    fn parses_atomic_integers() {
        use DecimalError::*;
        assert_eq!(parse_atomic("0"), Ok(0));
        assert_eq!(parse_atomic("10000"), Ok(10_000));
        assert_eq!(parse_atomic("007"), Ok(7));
        assert_eq!(parse_atomic(U128_MAX_TEXT), Ok(u128::MAX));
        assert_eq!(parse_atomic(""), Err(Empty));
        assert_eq!(parse_atomic("-1"), Err(Signed { negative: true }));
        assert_eq!(parse_atomic("+1"), Err(Signed { negative: false }));
        assert_eq!(parse_atomic("1.5"), Err(NonDigit { index: 1 }));
        assert_eq!(parse_atomic("1.0"), Err(NonDigit { index: 1 }));
        assert_eq!(parse_atomic("1e6"), Err(NonDigit { index: 1 }));
        assert_eq!(parse_atomic("١"), Err(NonDigit { index: 0 }));
        assert_eq!(parse_atomic(U128_MAX_PLUS_ONE_TEXT), Err(Overflow));
        let zeros = format!("{}{U128_MAX_TEXT}", "0".repeat(TEXT_BYTES_MAX - 39));
        assert_eq!(parse_atomic(&zeros), Ok(u128::MAX));
        assert!(matches!(parse_atomic(&format!("0{zeros}")), Err(TooLong { .. })));
    }

    #[test]
    fn formats_in_the_api_form_and_the_shortest_form() {
        // The API's form: at least two places.
        assert_eq!(format_decimal(25_000_000, 6, API_PLACES_MIN), "25.00");
        assert_eq!(format_decimal(10_000_000, 6, API_PLACES_MIN), "10.00");
        assert_eq!(format_decimal(10_500_000, 6, API_PLACES_MIN), "10.50");
        assert_eq!(format_decimal(10_500_001, 6, API_PLACES_MIN), "10.500001");
        assert_eq!(format_decimal(1, 6, API_PLACES_MIN), "0.000001");
        assert_eq!(format_decimal(0, 6, API_PLACES_MIN), "0.00");
        assert_eq!(format_decimal(7, 0, API_PLACES_MIN), "7");
        assert_eq!(format_decimal(7, 1, API_PLACES_MIN), "0.7");
        assert_eq!(format_decimal(10, 1, API_PLACES_MIN), "1.0");
        assert_eq!(format_decimal(123_456_789, 2, API_PLACES_MIN), "1234567.89");
        // The shortest form.
        assert_eq!(format_decimal(10_000, 6, 0), "0.01");
        assert_eq!(format_decimal(25_000_000, 6, 0), "25");
        assert_eq!(format_decimal(10_000_005, 6, 0), "10.000005");
        assert_eq!(format_decimal(0, 6, 0), "0");
        assert_eq!(format_decimal(u128::MAX, 0, 0), U128_MAX_TEXT);
        assert_eq!(
            format_decimal(u128::MAX, 38, 0),
            "3.40282366920938463463374607431768211455"
        );
        assert_eq!(format_decimal(1, 40, 0), format!("0.{}1", "0".repeat(39)));
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(units in any::<u128>(), decimals in 0u8..=40, places_min in any::<u8>()) {
            // At most 42 characters: within TEXT_BYTES_MAX.
            let text = format_decimal(units, decimals, places_min);
            prop_assert_eq!(parse_decimal(&text, decimals), Ok(units), "{}", text);
        }

        /// Digit strings against an independent reference: the standard
        /// library's integer parser over the digits scaled by text.
        #[test]
        fn decimals_match_the_reference(int in "[0-9]{1,40}", frac in proptest::option::of("[0-9]{1,39}"), decimals in 0u8..45) {
            let text = match &frac {
                Some(f) => format!("{int}.{f}"),
                None => int.clone(),
            };
            let frac = frac.unwrap_or_default();
            let result = parse_decimal(&text, decimals);
            if frac.len() > usize::from(decimals) {
                prop_assert_eq!(result, Err(DecimalError::TooPrecise { found: frac.len(), allowed: decimals }));
            } else {
                let zeros = "0".repeat(usize::from(decimals) - frac.len());
                let scaled = format!("{int}{frac}{zeros}");
                match scaled.parse::<u128>() {
                    Ok(v) => prop_assert_eq!(result, Ok(v)),
                    Err(_) => prop_assert_eq!(result, Err(DecimalError::Overflow)),
                }
            }
        }

        #[test]
        fn atomic_digits_match_the_reference(text in "[0-9]{1,80}") {
            match text.parse::<u128>() {
                Ok(v) => prop_assert_eq!(parse_atomic(&text), Ok(v)),
                Err(_) => prop_assert_eq!(parse_atomic(&text), Err(DecimalError::Overflow)),
            }
        }

        /// Any text: a value only for what the grammar allows, otherwise an
        /// error that names what is wrong with it.
        #[test]
        fn any_text_is_refused_with_its_reason(text in prop_oneof![".{0,50}", "[-+]?[0-9.]{0,45}", "[0-9 .,eEx_-]{0,20}"], decimals in 0u8..40) {
            match parse_decimal(&text, decimals) {
                Ok(_) => {
                    prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                    prop_assert!(text.bytes().filter(|b| *b == b'.').count() <= 1);
                }
                Err(DecimalError::Empty) => prop_assert!(text.is_empty()),
                Err(DecimalError::TooLong { len_bytes, .. }) => prop_assert!(len_bytes > TEXT_BYTES_MAX),
                Err(DecimalError::Signed { negative }) => {
                    prop_assert_eq!(text.as_bytes()[0], if negative { b'-' } else { b'+' });
                }
                Err(DecimalError::NonDigit { index }) => {
                    let b = text.as_bytes()[index];
                    prop_assert!(!b.is_ascii_digit());
                    prop_assert!(b != b'.' || text[..index].contains('.'));
                }
                Err(DecimalError::EmptyPart) => prop_assert!(text.starts_with('.') || text.ends_with('.')),
                Err(DecimalError::TooPrecise { found, allowed }) => {
                    prop_assert_eq!(allowed, decimals);
                    prop_assert!(found > usize::from(decimals));
                }
                Err(DecimalError::Overflow) => prop_assert!(text.len() >= 39 || decimals > 0),
            }
        }
    }
}
